"""The [jde] section: AIS server, login, sources (work orders, change orders), status maps, Jira mapping.

Everything the AIS reference marks [U] (unverified: site-specific) is a setting with a default that
matches Oracle's demo data: order types, status codes, the hold code, date literal format, the
orchestration's name and input names, the change-order source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from mlconnector.errors import ConfigError
from mlconnector.http import HttpSettings
from mlconnector.sections import HTTP_KEYS
from mlconnector.sections import Section as _Section
from mlconnector.sections import http_settings as _http_settings
from mlconnector.sections import parse_since as _parse_since
from mlconnector.sections import url as _url

SOURCES = ("work_orders", "change_orders")

# Logical column -> F4801 alias. Every one can be renamed per source in [jde.<source>.columns].
DEFAULT_COLUMNS: dict[str, str] = {
    "order_number": "DOCO", "order_type": "DCTO", "description": "DL01", "status": "SRST", "priority": "PRTS",
    "requested_date": "DRQJ", "assigned_to": "ANP", "branch": "MMCU", "reason": "REAS",
    "updated_date": "UPMJ", "updated_time": "TDAY",
}
DEFAULT_SOURCES: dict[str, dict[str, Any]] = {
    "work_orders": {"table": "F4801", "order_types": ["WO"], "label": "jde-wo", "title": "Work order",
                    "issue_type": "Work Order"},
    # ECOs live in F4801 with order type EN (reference 5.3). Sites that mean the Change Management
    # module (system 53) point `table` and `columns` at F5301B or a view instead.
    "change_orders": {"table": "F4801", "order_types": ["EN"], "label": "jde-eco", "title": "Change order",
                      "issue_type": "Change Order"},
}
# Oracle demo codes (UDC 00/SS). F4801 has no hold column: "HD" is this connector's default for the
# site-chosen hold code and must be agreed with the customer (reference 5.2).
DEFAULT_STATUS_FROM_JDE = {"10": "To Do", "20": "To Do", "30": "To Do", "40": "In Progress", "45": "In Progress",
                           "80": "In Progress", "HD": "Blocked", "90": "Done", "91": "Cancelled", "95": "Done",
                           "99": "Done"}
DEFAULT_STATUS_TO_JDE = {"In Progress": "45", "Blocked": "HD", "Done": "90", "Cancelled": "91"}
DEFAULT_PRIORITY_MAP = {"1": "Highest", "2": "High", "3": "Medium", "4": "Low", "5": "Lowest"}
DEFAULT_INPUTS = {"order_number": "OrderNumber", "order_type": "OrderType", "status_code": "NewStatus",
                  "jira_status": "JiraStatus", "jira_key": "JiraKey", "change_id": "JiraChangeId"}


@dataclass
class SourceSettings:
    name: str
    enabled: bool
    table: str
    order_types: list[str]
    columns: dict[str, str]
    label: str  # label prefix on the Jira issues of this source
    title: str
    issue_type: str
    initial_since: datetime

    def alias(self, logical: str) -> str:
        return self.columns.get(logical, "")

    def control_id(self, logical: str) -> str:
        return f"{self.table}.{self.columns[logical]}"


@dataclass
class OrchestrationSettings:
    name: str
    input_format: str  # "generic" (flat JSON) | "standard" ({"inputs": [{name, value}]})
    inputs: dict[str, str]  # logical -> orchestration input name ("" = not sent)


@dataclass
class JdeConfig:
    base_url: str
    environment: str
    role: str
    device_name: str
    auth: str  # "token" | "basic"
    user: str
    token_lifetime: timedelta
    http: HttpSettings
    max_page_size: int
    overlap_days: int
    date_literal_format: str  # Java pattern ("MM/dd/yyyy") or "auto" (the user's simpleDateFormat)
    server_utc_offset: timezone  # UPMJ/TDAY carry no zone (reference 4)
    result_set_restarts: int
    sources: dict[str, SourceSettings]
    orchestration: OrchestrationSettings
    status_to_jde: dict[str, str]  # Jira status name -> JDE status code
    status_from_jde: dict[str, str]  # JDE status code -> Jira status name
    priority_map: dict[str, str]
    default_priority: str
    assignee_map: dict[str, str]  # JDE address number -> Jira accountId
    project: str  # "" = [jira].project
    fields: dict[str, str]  # JDE column alias -> Jira field name or id (per-customer custom fields)
    backflow: bool
    backflow_overlap_minutes: float
    webhook_url: str  # "" = no dynamic webhook registration
    extra: dict[str, Any] = field(default_factory=dict)

    def required_secrets(self) -> list[str]:
        # Token and Basic modes both send the service account's password (once or per request).
        return ["jde.password"]

    def enabled_sources(self) -> list[SourceSettings]:
        return [s for s in self.sources.values() if s.enabled]


def _str_list(s: _Section, name: str, default: list[str]) -> list[str]:
    v = s.data.get(name, default)
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise ConfigError(f"{s.key(name)} must be a list of strings, like [\"WO\"].")
    return [x.strip() for x in v]


def _offset(s: _Section, name: str) -> timezone:
    raw = s.data.get(name, "+00:00")
    try:
        parsed = datetime.strptime(str(raw).replace(":", ""), "%z").tzinfo
    except ValueError:
        parsed = None
    if not isinstance(parsed, timezone):
        raise ConfigError(f"{s.key(name)} = {raw!r}; write the AIS server's UTC offset like \"-06:00\".")
    return parsed


def _source(root: _Section, name: str) -> SourceSettings:
    spec = DEFAULT_SOURCES[name]
    s = root.table(name, {"enabled", "table", "order_types", "columns", "issue_type", "initial_since", "label"})
    cols = dict(DEFAULT_COLUMNS)
    c = s.table("columns", set(DEFAULT_COLUMNS))
    for k, v in c.data.items():
        if not isinstance(v, str):
            raise ConfigError(f"{c.key(k)} must be a column alias in quotes (\"DOCO\"), or \"\" for none.")
        cols[k] = v.split(".", 1)[1] if "." in v else v  # accept "F4801.DOCO" as well as "DOCO"
    for required in ("order_number", "status", "updated_date"):
        if not cols.get(required):
            raise ConfigError(f"{c.key(required)} cannot be empty: the pass needs it to find changed orders.")
    table = s.str("table", spec["table"]).strip()
    if not table:
        raise ConfigError(f"{s.key('table')} cannot be empty; the default is \"F4801\".")
    return SourceSettings(
        name=name,
        enabled=s.bool("enabled", True),
        table=table,
        order_types=_str_list(s, "order_types", spec["order_types"]),
        columns=cols,
        label=s.str("label", spec["label"]),
        title=spec["title"],
        issue_type=s.str("issue_type", spec["issue_type"]),
        initial_since=_parse_since(s, "initial_since", "2000-01-01"),
    )


def parse_jde(section: _Section) -> JdeConfig:
    known = HTTP_KEYS | {"base_url", "environment", "role", "device_name", "auth", "user", "token_lifetime_minutes",
                         "max_page_size", "overlap_days", "date_literal_format", "server_utc_offset",
                         "result_set_restarts", "work_orders", "change_orders", "orchestration", "status_to_jde",
                         "status_from_jde", "priority_map", "default_priority", "assignee_map", "project", "fields",
                         "backflow", "backflow_overlap_minutes", "webhook_url"}
    s = _Section(section.data, section.prefix, known)
    sources = {name: _source(s, name) for name in SOURCES}
    if not any(src.enabled for src in sources.values()):
        raise ConfigError("Both [jde.work_orders] and [jde.change_orders] are disabled, so there is nothing to "
                          "sync. Set enabled = true on at least one.")
    o = s.table("orchestration", {"name", "input_format", "inputs"})
    inputs = dict(DEFAULT_INPUTS)
    oi = o.table("inputs", set(DEFAULT_INPUTS))
    for k, v in oi.data.items():
        if not isinstance(v, str):
            raise ConfigError(f"{oi.key(k)} must be the orchestration input name in quotes, or \"\" to omit it.")
        inputs[k] = v
    for required in ("order_number", "status_code"):
        if not inputs[required]:
            raise ConfigError(f"{oi.key(required)} cannot be empty: the orchestration needs it to update the order.")
    orch_name = o.str("name", "ML_JIRA_STATUS_UPDATE")
    if not orch_name.strip():
        raise ConfigError(f"{o.key('name')} cannot be empty; write the orchestration's name as in Orchestrator Studio.")
    status_to = dict(DEFAULT_STATUS_TO_JDE) if "status_to_jde" not in s.data else s.str_map("status_to_jde")
    status_from = dict(DEFAULT_STATUS_FROM_JDE) if "status_from_jde" not in s.data else s.str_map("status_from_jde")
    for jira_status, code in status_to.items():
        if not code.strip():
            raise ConfigError(f"jde.status_to_jde.{jira_status!r} is empty; write the JDE status code (UDC 00/SS).")
    auth = s.str("auth", "token", choices=("token", "basic"))
    date_fmt = s.str("date_literal_format", "auto")
    if date_fmt != "auto" and not all(p in date_fmt for p in ("yy", "MM", "dd")):
        raise ConfigError(f"jde.date_literal_format = {date_fmt!r}: write a Java date pattern like \"MM/dd/yyyy\", "
                          f"or \"auto\" to use the AIS user's own format.")
    assignees = s.str_map("assignee_map")
    webhook_url = s.str("webhook_url", "")
    if webhook_url:
        webhook_url = _url(s, "webhook_url")
    return JdeConfig(
        base_url=_url(s, "base_url"),
        environment=s.str("environment", ""),
        role=s.str("role", ""),
        device_name=s.str("device_name", "ml-connector"),
        auth=auth,
        user=s.str("user"),
        token_lifetime=timedelta(minutes=s.num("token_lifetime_minutes", 25, minimum=1)),
        http=_http_settings(s),
        max_page_size=s.num("max_page_size", 500, minimum=1, integer=True),
        overlap_days=s.num("overlap_days", 1, minimum=0, integer=True),
        date_literal_format=date_fmt,
        server_utc_offset=_offset(s, "server_utc_offset"),
        result_set_restarts=s.num("result_set_restarts", 3, minimum=0, integer=True),
        sources=sources,
        orchestration=OrchestrationSettings(name=orch_name,
                                            input_format=o.str("input_format", "generic",
                                                               choices=("generic", "standard")),
                                            inputs=inputs),
        status_to_jde=status_to,
        status_from_jde=status_from,
        priority_map=dict(DEFAULT_PRIORITY_MAP) if "priority_map" not in s.data else s.str_map("priority_map"),
        default_priority=s.str("default_priority", "Medium"),
        assignee_map={k.strip(): v for k, v in assignees.items()},
        project=s.str("project", ""),
        fields=s.str_map("fields"),
        backflow=s.bool("backflow", True),
        backflow_overlap_minutes=s.num("backflow_overlap_minutes", 10, minimum=0),
        webhook_url=webhook_url,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
