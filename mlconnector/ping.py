"""`mlconnector ping`: check every configured system end to end, with a fix hint per failed check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from mlconnector.config import ISSUE_KINDS, Config
from mlconnector.credentials import SecretStore, required_secrets
from mlconnector.errors import AuthError, ConnectorError, UnreachableError


@dataclass
class Check:
    system: str
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


def run_ping(cfg: Config, *, refresh_wsdl: bool = False) -> list[Check]:
    checks: list[Check] = []
    store = SecretStore(cfg.instance)
    for name in required_secrets(cfg):
        try:
            store.get(name)
            checks.append(Check(name.split(".")[0].replace("peoplesoft", "PeopleSoft").replace("jira", "Jira"),
                                f"secret {name}", True, store.where(name)))
        except ConnectorError as exc:
            checks.append(Check("PeopleSoft" if name.startswith("peoplesoft") else "Jira", f"secret {name}", False,
                                "not set", exc.message))
    if not all(c.ok for c in checks):
        return checks
    from mlconnector.jira.client import JiraClient
    from mlconnector.peoplesoft.qas import QASClient
    from mlconnector.runner import jira_auth, peoplesoft_auth

    if cfg.ps is not None:
        ps = QASClient(cfg.ps, peoplesoft_auth(cfg, store))
        try:
            checks += _peoplesoft(cfg, ps)
        finally:
            ps.close()
        if any(rs.enabled and rs.transport == "ci" for rs in cfg.ps.records.values()):
            checks += _peoplesoft_ci(cfg, peoplesoft_auth(cfg, store), refresh_wsdl)
    if cfg.jde is not None:
        from mlconnector.jde.ping import jde_checks  # the JD Edwards pair's own checks

        checks += jde_checks(cfg, store)
    jira = JiraClient(cfg.jira.api_base, jira_auth(cfg, store), cfg.jira.http)
    try:
        checks += _jira(cfg, jira)
    finally:
        jira.close()
    return checks


def _tls_trust(system: str, url: str, verify: bool | str) -> list[Check]:
    """Which CA source vouched for the server (a configured ca_bundle, the environment, certifi)."""
    from mlconnector.http import ca_source

    if not url.lower().startswith("https://"):
        return []
    # Informational: verify_tls = false is the admin's documented choice, so it does not fail ping.
    return [Check(system, "TLS trust", True, ca_source(verify))]


def _peoplesoft(cfg: Config, ps: object) -> list[Check]:
    from mlconnector.peoplesoft.qas import QASClient
    from mlconnector.state import utcnow

    assert isinstance(ps, QASClient)
    out: list[Check] = []
    try:
        resp = ps.http.request("GET", "/PSIGW/RESTListeningConnector", allow=tuple(range(300, 600)))
        out.append(Check("PeopleSoft", "reachable", True,
                         f"{cfg.peoplesoft.base_url} answered HTTP {resp.status_code}"))
        out += _tls_trust("PeopleSoft", cfg.peoplesoft.base_url, cfg.peoplesoft.http.verify)
    except UnreachableError as exc:
        return [Check("PeopleSoft", "reachable", False, exc.message,
                      "Check host/port/base_url in [peoplesoft], DNS, firewall, and ca_bundle for internal CAs.")]
    queries: list[str] = []
    for kind, rs in cfg.peoplesoft.records.items():
        if rs.enabled:
            if rs.transport != "ci":  # kinds read through a CI are checked by _peoplesoft_ci
                queries.append(rs.query)
            if rs.comments_query and kind in ISSUE_KINDS:
                queries.append(rs.comments_query)
    now = utcnow()
    window = ps.prompt_values(now - timedelta(days=1), now)
    for q in queries:
        try:
            result = ps.execute(q, window, 1)
            out.append(Check("PeopleSoft", f"query {q}", True, f"runnable on node {cfg.peoplesoft.node} "
                                                                f"({result.numrows} row(s) in the last day)"))
        except AuthError as exc:
            out.append(Check("PeopleSoft", "authentication", False, exc.message,
                             "Fix the user or secret, then ping again."))
            return out
        except ConnectorError as exc:
            out.append(Check("PeopleSoft", f"query {q}", False, exc.message,
                             "See README 'Troubleshooting PeopleSoft' (service operation, routing, permission list)."))
    return out


def _peoplesoft_ci(cfg: Config, auth: object, refresh_wsdl: bool = False) -> list[Check]:
    """Per configured CI service: WSDL reachable, Find and Get present, a harmless Find allowed."""
    from mlconnector.peoplesoft.ci import METHOD_NAMES, CIClient
    from mlconnector.state import utcnow

    client = CIClient(cfg.peoplesoft, auth, refresh=refresh_wsdl)
    out: list[Check] = []
    fix = "Do the admin action the message names, then ping again (add --refresh-wsdl after a WSDL change)."
    try:
        for kind, rs in cfg.peoplesoft.records.items():
            if not (rs.enabled and rs.transport == "ci"):
                continue
            name = f"CI_{rs.ci}"
            try:
                svc = client.service(rs.ci)
            except AuthError as exc:
                out.append(Check("PeopleSoft", f"WSDL {name}", False, exc.message, "Fix the user or secret."))
                return out
            except ConnectorError as exc:
                out.append(Check("PeopleSoft", f"WSDL {name}", False, exc.message, fix))
                continue
            out.append(Check("PeopleSoft", f"WSDL {name}", True,
                             f"{'from the cache' if svc.from_cache else 'fetched'} ({kind}); binding "
                             f"{svc.binding.rsplit('}', 1)[-1]}"))
            missing = [METHOD_NAMES[m] for m in ("F", "G") if m not in svc.operations]
            out.append(Check("PeopleSoft", f"operations {name}", not missing,
                             ", ".join(svc.operations[m] for m in sorted(svc.operations)) if not missing
                             else f"missing {', '.join(missing)} (has: {', '.join(svc.all_operations) or 'none'})",
                             f"Ask the PeopleSoft admin to include the {' and '.join(missing)} method(s) in {name}."))
            if missing:
                continue
            now = utcnow()
            if svc.date_range:
                probe = {svc.date_range[0]: now - timedelta(days=1), svc.date_range[1]: now}
            else:  # Find only reads; a prefix no key has keeps the answer small
                probe = {(svc.keys or svc.inputs["F"])[0]: "~~NONE~~"}
            try:
                found = client.find(rs.ci, probe)
                out.append(Check("PeopleSoft", f"find {name}", True, f"{svc.operations['F']} allowed "
                                                                     f"({len(found)} match(es))"))
            except AuthError as exc:
                out.append(Check("PeopleSoft", f"find {name}", False, exc.message, "Fix the user or secret."))
                return out
            except ConnectorError as exc:
                out.append(Check("PeopleSoft", f"find {name}", False, exc.message, fix))
    finally:
        client.close()
    return out


def _jira(cfg: Config, jira: object) -> list[Check]:
    from mlconnector.jira.client import JiraClient, resolve_field

    assert isinstance(jira, JiraClient)
    j = cfg.jira
    out: list[Check] = []
    try:
        me = jira.myself()
        out.append(Check("Jira", "authentication", True, f"as {me.get('displayName') or me.get('emailAddress')}"))
        out += _tls_trust("Jira", jira.http.base_url, j.http.verify)
    except ConnectorError as exc:
        fix = "Check site/api_base in [jira]." if isinstance(exc, UnreachableError) else \
            "Check jira.email and the API token (mlconnector secrets set jira.api_token)."
        out.append(Check("Jira", "authentication", False, exc.message, fix))
        return out
    try:
        project = jira.project(j.project)
        if project is None:
            out.append(Check("Jira", f"project {j.project}", False, "not found or not visible",
                             "Fix jira.project or grant the user Browse projects."))
            return out
        out.append(Check("Jira", f"project {j.project}", True, str(project.get("name", ""))))
        types = {str(t.get("name")) for t in project.get("issueTypes", [])}
        kinds = [k for k in ISSUE_KINDS if cfg.ps is not None and cfg.ps.records[k].enabled]
        for kind in kinds:
            name = j.issue_types[kind]
            out.append(Check("Jira", f"issue type {name}", name in types, "" if name in types else
                             f"project has: {', '.join(sorted(types))}",
                             f"Add {name!r} to the project's issue type scheme or fix jira.issue_types.{kind}."))
        fields = jira.fields()
        wanted = dict(j.fields) if cfg.ps is not None else {}
        if j.key_field:
            wanted["key_field"] = j.key_field
        for logical, name in wanted.items():
            key = "jira.key_field" if logical == "key_field" else f"jira.fields.{logical}"
            try:
                f = resolve_field(fields, name, key)
                out.append(Check("Jira", f"field {name}", True, f.id))
            except ConnectorError as exc:
                out.append(Check("Jira", f"field {name}", False, exc.message,
                                 f"Create the field in Jira, or set {key} to its id (or \"\" to leave it out)."))
        statuses = jira.project_statuses(j.project)
        for kind in kinds:
            known = statuses.get(j.issue_types[kind], set())
            for code, status in sorted(j.status_map.get(kind, {}).items()):
                ok = status in known
                out.append(Check("Jira", f"status {status} ({kind} {code})", ok, "" if ok else
                                 f"{j.issue_types[kind]} has: {', '.join(sorted(known))}",
                                 f"Add the status to the workflow or fix jira.status_map.{kind}.{code}."))
    except ConnectorError as exc:
        out.append(Check("Jira", "metadata", False, exc.message, "See the message."))
    return out
