"""`mlconnector ping` for the [jde] section: AIS health, login, each table with every column a pass reads,
the orchestration. The Jira side (project, issue types, fields, statuses and their reachability,
priorities of the [jde] mapping) is checked with the other pairs' in mlconnector/ping.py."""

from __future__ import annotations

from typing import Any

from mlconnector.checks import Check
from mlconnector.errors import AuthError, ConnectorError, UnreachableError

SYSTEM = "JD Edwards"


def jde_checks(cfg: Any, store: Any) -> list[Check]:
    from mlconnector.jde.ais import AisClient

    jde = cfg.jde
    out: list[Check] = []
    try:
        password = store.get("jde.password")
    except ConnectorError as exc:
        return [Check(SYSTEM, "secret jde.password", False, "not set", exc.message)]
    ais = AisClient(jde, password)
    try:
        try:
            info = ais.default_config()
            out.append(Check(SYSTEM, "AIS server", True, f"{jde.base_url} AIS {info.get('aisVersion', '?')}, "
                                                        f"default environment {info.get('defaultEnvironment', '?')}"))
        except UnreachableError as exc:
            return [Check(SYSTEM, "AIS server", False, exc.message,
                          "Check jde.base_url (the AIS server, not the HTML server), DNS, firewall, ca_bundle.")]
        except ConnectorError as exc:
            out.append(Check(SYSTEM, "AIS server", False, exc.message,
                             "GET /jderest/v2/defaultconfig failed: AIS may not reach its JAS server."))
        if jde.auth == "token":
            try:
                ais.login()
                fmt = ais.user_info.get("simpleDateFormat") or "?"
                out.append(Check(SYSTEM, "login", True, f"token for {jde.user} in {jde.environment or 'default'} "
                                                        f"environment (date format {fmt})"))
            except ConnectorError as exc:
                out.append(Check(SYSTEM, "login", False, exc.message,
                                 "Fix jde.user / jde.environment / jde.role or the password, then ping again."))
                return out
        for src in jde.enabled_sources():
            # Every column the pass requests (mapped columns and the aliases of [jde.fields]): a wrong alias
            # fails here, not in the first pass.
            cols = list(dict.fromkeys([c for c in src.columns.values() if c] + [a for a in jde.fields if a]))
            try:
                rows = ais.browse(src.table, cols, [], page_size=1, first_page_only=True)
                out.append(Check(SYSTEM, f"table {src.table} ({src.name})", True,
                                 f"readable ({len(rows)} sample row(s))"))
            except AuthError as exc:
                out.append(Check(SYSTEM, f"table {src.table} ({src.name})", False, exc.message,
                                 "Grant the user data access to the table (security workbench)."))
            except ConnectorError as exc:
                out.append(Check(SYSTEM, f"table {src.table} ({src.name})", False, exc.message,
                                 f"Check jde.{src.name}.table and its columns."))
        name = jde.orchestration.name
        try:
            names = ais.discover()
            # Orchestration names can carry trailing spaces (reference 6.1): compare trimmed.
            found = any(n.strip() == name.strip() for n in names)
            out.append(Check(SYSTEM, f"orchestration {name}", found, "callable by this user" if found else
                             f"not among the {len(names)} orchestration(s) this user may call",
                             "Create or share the orchestration in Orchestrator Studio, or fix "
                             "jde.orchestration.name."))
        except ConnectorError as exc:
            out.append(Check(SYSTEM, f"orchestration {name}", False, exc.message,
                             "GET /jderest/discover failed; check the user's orchestration permissions."))
    finally:
        ais.close()
    return out
