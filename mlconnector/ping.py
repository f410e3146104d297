"""`mlconnector ping`: check every configured system end to end, with a fix hint per failed check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mlconnector.checks import Check
from mlconnector.config import ISSUE_KINDS, Config
from mlconnector.credentials import SecretStore, required_secrets
from mlconnector.errors import AuthError, ConnectorError, UnreachableError


def run_ping(cfg: Config, *, refresh_wsdl: bool = False) -> list[Check]:
    checks: list[Check] = []
    store = SecretStore(cfg.instance)
    for name in required_secrets(cfg):
        try:
            store.get(name)
            checks.append(Check(name.split(".")[0].replace("peoplesoft", "PeopleSoft").replace("jira", "Jira")
                                .replace("procurify", "Procurify").replace("jaggaer", "JAGGAER")
                                .replace("procore", "Procore"),
                                f"secret {name}", True, store.where(name)))
        except ConnectorError as exc:
            system = {"peoplesoft": "PeopleSoft", "procurify": "Procurify", "jaggaer": "JAGGAER",
                      "procore": "Procore"}.get(name.split(".")[0], "Jira")
            checks.append(Check(system, f"secret {name}", False,
                                "not set", exc.message))
    if not all(c.ok for c in checks):
        return checks
    from mlconnector.jira.client import JiraClient
    from mlconnector.jira.connect import jira_auth
    from mlconnector.peoplesoft.connect import peoplesoft_auth
    from mlconnector.peoplesoft.qas import QASClient

    if cfg.ps is not None and cfg.jira is not None:  # PS Query and CI readers serve the PeopleSoft -> Jira pair
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
    if "procurify" in cfg.sections:
        from mlconnector.pairs.procurify_peoplesoft import configured, ping_checks
        from mlconnector.procurify.ping import procurify_checks

        checks += procurify_checks(cfg.sections["procurify"], cfg.instance, store.get("procurify.client_secret"))
        if configured(cfg) and all(c.ok for c in checks):
            checks += ping_checks(cfg, store)
    if "jaggaer" in cfg.sections:
        from mlconnector.jaggaer.ping import jaggaer_checks
        from mlconnector.pairs import peoplesoft_jaggaer

        checks += jaggaer_checks(cfg.sections["jaggaer"], cfg.instance, store.get("jaggaer.client_secret"))
        if peoplesoft_jaggaer.configured(cfg) and all(c.ok for c in checks):
            checks += peoplesoft_jaggaer.ping_checks(cfg, store)
    if "procore" in cfg.sections:
        from mlconnector.pairs.peoplesoft_procore import ping_checks as procore_pair_checks
        from mlconnector.pairs.peoplesoft_procore import ping_projects
        from mlconnector.procore.ping import procore_checks

        checks += procore_checks(cfg.sections["procore"], cfg.instance, store.get("procore.client_secret"),
                                 ping_projects(cfg))
        if all(c.ok or c.warning for c in checks):
            checks += procore_pair_checks(cfg, store)
    if cfg.jira is None:
        return checks
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
    queries: list[tuple[str, bool]] = []  # (query, read in full: takes no prompts)
    for kind, rs in cfg.peoplesoft.records.items():
        if rs.enabled:
            if rs.transport != "ci":  # kinds read through a CI are checked by _peoplesoft_ci
                queries.append((rs.query, rs.read == "full"))
            if rs.comments_query and kind in ISSUE_KINDS:
                queries.append((rs.comments_query, False))
    now = utcnow()
    window = ps.prompt_values(now - timedelta(days=1), now)
    for q, full in queries:
        try:
            result = ps.execute(q, None if full else window, 1)
            out.append(Check("PeopleSoft", f"query {q}", True, f"runnable on node {cfg.peoplesoft.node} " + (
                "(read in full, no prompts)" if full else f"({result.numrows} row(s) in the last day)")))
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
            problems = svc.key_problems()
            for problem in problems:
                out.append(Check("PeopleSoft", f"keys {name}", False, problem,
                                 f"Set {svc.config_key}.find_keys / get_keys as the message says, then ping again."))
            if not problems:
                sent = ", ".join(f"{k}={v!r}" for k, v in svc.find_request({}).items())
                out.append(Check("PeopleSoft", f"keys {name}", True, f"Find sends {sent or 'no keys'}; Get by "
                                                                     f"{', '.join(svc.keys)}"))
            now = utcnow()
            if svc.date_range:
                probe = {svc.date_range[0]: now - timedelta(days=1), svc.date_range[1]: now}
            else:
                # The pass's own Find (every other key empty or as configured); a prefix no record has on the
                # last free key keeps the answer small.
                free = [k for k in svc.inputs["F"] if k not in svc.find_values] or svc.inputs["F"]
                probe = {free[-1]: "~~NONE~~"}
            try:
                found = client.find(rs.ci, probe)
                out.append(Check("PeopleSoft", f"find {name}", True, f"{svc.operations['F']} allowed "
                                                                     f"({len(found)} match(es))"))
            except AuthError as exc:
                out.append(Check("PeopleSoft", f"find {name}", False, exc.message, "Fix the user or secret."))
                return out
            except ConnectorError as exc:
                keyed = [k for k in svc.inputs.get("F", []) if k in exc.message]
                out.append(Check("PeopleSoft", f"find {name}", False, exc.message,
                                 f"Set {svc.config_key}.find_keys.{keyed[0]} to a value, a prefix or \"%\", then "
                                 f"ping again." if keyed else fix))
    finally:
        client.close()
    return out


@dataclass
class _TypeTarget:
    """What a pair will write to one issue type: mapped statuses and priorities, with their config keys."""

    name: str
    config_key: str
    statuses: list[tuple[str, str]]  # (status name, config key)
    priorities: list[tuple[str, str]]  # (priority name, config key)


@dataclass
class _Target:
    pair: str
    project: str
    project_key: str  # config key naming the project
    types: list[_TypeTarget]
    fields: list[tuple[str, str]]  # (field name or id, config key)


def _targets(cfg: Config) -> list[_Target]:
    j = cfg.jira
    out: list[_Target] = []
    if cfg.ps is not None:
        prios = [(name, "jira.priority_by_amount") for _, name in j.priority_by_amount]
        if j.default_priority:
            prios.append((j.default_priority, "jira.default_priority"))
        types = [_TypeTarget(j.issue_types[k], f"jira.issue_types.{k}",
                             [(st, f"jira.status_map.{k}.{code}") for code, st in
                              sorted(j.status_map.get(k, {}).items())],
                             prios) for k in ISSUE_KINDS if cfg.ps.records[k].enabled]
        fields = [(name, f"jira.fields.{logical}") for logical, name in j.fields.items() if name]
        out.append(_Target("peoplesoft-jira", j.project, "jira.project", types, fields))
    if cfg.jde is not None:
        jde = cfg.jde
        statuses = [(st, f"jde.status_from_jde.{code}") for code, st in sorted(jde.status_from_jde.items())]
        statuses += [(st, f"jde.status_to_jde.{st!r}") for st in jde.status_to_jde]
        prios = [(name, f"jde.priority_map.{code}") for code, name in sorted(jde.priority_map.items())]
        if jde.default_priority:
            prios.append((jde.default_priority, "jde.default_priority"))
        types = [_TypeTarget(src.issue_type, f"jde.{src.name}.issue_type", statuses, prios)
                 for src in jde.enabled_sources()]
        fields = [(name, f"jde.fields.{alias}") for alias, name in jde.fields.items() if name]
        out.append(_Target("jde-jira", jde.project or j.project, "jde.project (else jira.project)", types, fields))
    if j.key_field:
        for t in out:
            t.fields.append((j.key_field, "jira.key_field"))
    return out


def _jira(cfg: Config, jira: object) -> list[Check]:
    """Jira: login, then for each pair every value the pass will write: project, issue types, fields,
    statuses (present and reachable from the issue type's start status), priorities. Every problem is
    listed; nothing stops at the first."""
    from mlconnector.jira.client import JiraClient

    assert isinstance(jira, JiraClient)
    out: list[Check] = []
    try:
        me = jira.myself()
        out.append(Check("Jira", "authentication", True, f"as {me.get('displayName') or me.get('emailAddress')}"))
        out += _tls_trust("Jira", jira.http.base_url, cfg.jira.http.verify)
    except ConnectorError as exc:
        fix = "Check site/api_base in [jira]." if isinstance(exc, UnreachableError) else \
            "Check jira.email and the API token (mlconnector secrets set jira.api_token)."
        out.append(Check("Jira", "authentication", False, exc.message, fix))
        return out
    all_fields: list[Any] | None = None
    seen: set[tuple[str, ...]] = set()

    def add(check: Check) -> None:
        ident = (check.name, str(check.ok), check.detail)
        if ident not in seen:  # two pairs writing to one project share their checks
            seen.add(ident)
            out.append(check)

    for target in _targets(cfg):
        try:
            if all_fields is None:
                all_fields = jira.fields()
            for check in _jira_target(jira, target, all_fields):
                add(check)
        except AuthError:
            raise
        except ConnectorError as exc:
            out.append(Check("Jira", f"metadata ({target.pair})", False, exc.message, "See the message."))
    return out


def _jira_target(jira: Any, t: _Target, all_fields: list[Any]) -> list[Check]:
    from mlconnector.jira.client import resolve_field

    out: list[Check] = []
    project = jira.project(t.project)
    if project is None:
        return [Check("Jira", f"project {t.project}", False, "not found or not visible",
                      f"Fix {t.project_key} or grant the user Browse projects.")]
    out.append(Check("Jira", f"project {t.project}", True, str(project.get("name", ""))))
    for name, key in t.fields:
        try:
            f = resolve_field(all_fields, name, key)
            out.append(Check("Jira", f"field {name}", True, f.id))
        except ConnectorError as exc:
            out.append(Check("Jira", f"field {name}", False, exc.message,
                             f"Create the field in Jira, or set {key} to its id (or \"\" to leave it out)."))
    types = {str(it.get("name")): str(it.get("id")) for it in project.get("issueTypes", [])}
    statuses = jira.project_statuses(t.project)
    for tt in t.types:
        if tt.name not in types:
            out.append(Check("Jira", f"issue type {tt.name}", False, f"project {t.project} has: "
                                                                     f"{', '.join(sorted(types))}",
                             f"Add {tt.name!r} to the project's issue type scheme or fix {tt.config_key}."))
            continue
        out.append(Check("Jira", f"issue type {tt.name}", True, f"id {types[tt.name]} in {t.project}"))
        type_id = types[tt.name]
        known = statuses.get(tt.name, set())
        graph = jira.workflow_graph(t.project, type_id, str(project.get("id", "")))
        reach = graph.reachable(graph.initial) if graph is not None and graph.initial else None
        for status, key in dict.fromkeys(tt.statuses):
            if status not in known:
                out.append(Check("Jira", f"status {status} ({tt.name})", False,
                                 f"not a status of {tt.name} in {t.project} (it has: {', '.join(sorted(known))})",
                                 f"Add the status to the workflow of {tt.name} or fix {key}."))
            elif reach is not None and graph is not None and status.lower() not in reach:
                out.append(Check("Jira", f"status {status} ({tt.name})", False,
                                 f"cannot be reached from the start status {graph.initial} in workflow "
                                 f"{graph.name!r}: no chain of transitions leads there",
                                 f"Add a transition into {status} to workflow {graph.name!r} (Settings > Issues > "
                                 f"Workflows), or fix {key}."))
            else:
                how = (f"reachable from {graph.initial}" if reach is not None and graph is not None else
                       "exists (reachability not checked: reading workflows needs the Administer Jira permission; "
                       "paths are found hop by hop at run time)")
                out.append(Check("Jira", f"status {status} ({tt.name})", True, how))
        if tt.priorities:
            meta = {str(f.get("fieldId") or f.get("key")): f for f in jira.create_fields_meta(t.project, type_id)}
            allowed = [str(v.get("name")) for v in (meta.get("priority") or {}).get("allowedValues") or []]
            for name, key in dict.fromkeys(tt.priorities):
                ok = name in allowed
                detail = (f"offered for {tt.name}" if ok else
                          f"not offered when creating a {tt.name} in {t.project} (offered: "
                          f"{', '.join(allowed) or 'no priority field on the create screen'})")
                out.append(Check("Jira", f"priority {name} ({tt.name})", ok, detail,
                                 f"Add {name!r} to the project's priority scheme (Settings > Issues > Priority "
                                 f"schemes) or fix {key}."))
    return out
