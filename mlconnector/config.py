"""Configuration: one TOML file per customer instance, validated before any network call.

Every problem is reported with the key that holds it and what to write instead. Secrets never live
here (see credentials.py); a key that looks like one is refused with the command that stores it.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlconnector.errors import ConfigError
from mlconnector.http import HttpSettings
from mlconnector.sections import HTTP_KEYS as HTTP_KEYS
from mlconnector.sections import SECRET_LOOKING_KEYS as SECRET_LOOKING_KEYS
from mlconnector.sections import RootSection as _RootSection
from mlconnector.sections import Section as _Section
from mlconnector.sections import http_settings as _http_settings
from mlconnector.sections import parse_since as _parse_since
from mlconnector.sections import str_list as _str_list
from mlconnector.sections import url as _url

APP_NAME = "mlconnector"
CONFIG_ENV = "MLCONNECTOR_CONFIG"

# PeopleSoft record kinds this pair knows: natural key columns, default PS Query names, default
# columns for each logical field. Customers' queries may name columns differently ([U] in the
# reference), so every column is overridable in [peoplesoft.records.<kind>.columns].
KINDS: dict[str, dict[str, Any]] = {
    "vendors": {
        "keys": ("SETID", "VENDOR_ID"),
        "query": "ML_VENDOR_CHANGED",
        # Reference data: PS_VENDOR has no change stamp, so by default the whole table is read on a cadence
        # and diffed by content hash (read = "full"); a view with a stamp can be read by window instead.
        "read": "full",
        "full_query": "ML_VENDOR_ALL",
        "comments_query": None,
        "columns": {"name": "NAME1", "address1": "ADDRESS1", "city": "CITY", "state": "STATE",
                    "postal": "POSTAL", "country": "COUNTRY", "terms": "PYMNT_TERMS_CD",
                    "status": "VENDOR_STATUS"},
        "label": "psft-vendor",
        "title": "Vendor",
    },
    "requisitions": {
        "keys": ("BUSINESS_UNIT", "REQ_ID"),
        "query": "ML_REQ_CHANGED",
        "comments_query": "ML_REQ_COMMENTS",
        "columns": {"status": "REQ_STATUS", "description": "DESCR254", "amount": "AMOUNT",
                    "currency": "CURRENCY_CD", "date": "REQ_DT", "requester": "REQUESTOR_ID",
                    "vendor_setid": "VENDOR_SETID", "vendor_id": "VENDOR_ID", "due_date": "",
                    "invoice_number": ""},
        "label": "psft-req",
        "title": "Requisition",
    },
    "purchase_orders": {
        "keys": ("BUSINESS_UNIT", "PO_ID"),
        "query": "ML_PO_CHANGED",
        "comments_query": "ML_PO_COMMENTS",
        "columns": {"status": "PO_STATUS", "description": "DESCR254", "amount": "PO_AMT",
                    "currency": "CURRENCY_CD", "date": "PO_DT", "requester": "BUYER_ID",
                    "vendor_setid": "VENDOR_SETID", "vendor_id": "VENDOR_ID", "due_date": "DUE_DT",
                    "invoice_number": ""},
        "label": "psft-po",
        "title": "Purchase order",
    },
    "vouchers": {
        "keys": ("BUSINESS_UNIT", "VOUCHER_ID"),
        "query": "ML_VOUCHER_CHANGED",
        "comments_query": "ML_VOUCHER_COMMENTS",
        "columns": {"status": "APPR_STATUS", "description": "", "amount": "GROSS_AMT",
                    "currency": "TXN_CURRENCY_CD", "date": "INVOICE_DT", "requester": "",
                    "vendor_setid": "VENDOR_SETID", "vendor_id": "VENDOR_ID", "due_date": "DUE_DT",
                    "invoice_number": "INVOICE_ID"},
        "label": "psft-voucher",
        "title": "Vendor invoice",
    },
}
ISSUE_KINDS = ("requisitions", "purchase_orders", "vouchers")

DEFAULT_ISSUE_TYPES = {"requisitions": "Purchase Requisition", "purchase_orders": "Purchase Order",
                       "vouchers": "Vendor Invoice"}
DEFAULT_STATUS_MAP: dict[str, dict[str, str]] = {
    "requisitions": {"P": "Pending Approval", "A": "Approved", "D": "Denied", "C": "Done",
                     "X": "Cancelled"},
    "purchase_orders": {"I": "To Do", "PA": "Pending Approval", "A": "Approved", "D": "In Progress",
                        "DA": "Denied", "C": "Done", "X": "Cancelled"},
    "vouchers": {"P": "Pending Approval", "A": "Approved", "D": "Denied"},
}
# Logical Jira fields the mapping fills; each maps to a Jira field name or id in [jira.fields].
LOGICAL_FIELDS = ("amount", "vendor", "invoice_number", "approval_status", "vendor_details",
                  "currency", "requester", "order_date")

@dataclass
class RecordSettings:
    kind: str
    enabled: bool
    query: str
    comments_query: str | None
    columns: dict[str, str]
    initial_since: datetime
    transport: str = "qas"  # "qas" (PS Query over REST) | "ci" (Component Interface over SOAP)
    ci: str = ""  # component interface name when transport is "ci" (service CI_<ci>)
    find_keys: dict[str, str] = field(default_factory=dict)  # CI Find key -> value sent ("" any, "%" wildcard)
    get_keys: list[str] = field(default_factory=list)  # CI Get keys; [] = the Get request's required elements
    read: str = "stamped"  # "stamped": windows on LAST_DTTM_UPDATE | "full": the whole table, diffed by hash
    full_read_every_hours: float = 1.0  # read = "full": how often (0 = every pass)


@dataclass
class PeopleSoftConfig:
    base_url: str
    node: str
    auth: str  # "basic" | "oauth2"
    user: str
    token_url: str
    client_id: str
    scope: str
    http: HttpSettings
    owner_type: str
    maxrows: int
    max_maxrows: int
    overlap_minutes: float
    prompt_format: str  # "date" | "datetime"
    prompt_names: tuple[str, str]
    db_utc_offset: str | None  # "+hh:mm"; None = unknown, widen date windows by a day each side
    records: dict[str, RecordSettings]
    wsdl_max_age_hours: float = 24.0  # cached CI WSDLs older than this are fetched again


@dataclass
class JiraConfig:
    site: str
    api_base: str  # where /rest/api/3 lives (site for basic auth, api.atlassian.com/ex/jira/{cloudid} for 3LO)
    auth: str  # "basic" | "oauth2"
    email: str
    client_id: str
    auth_url: str
    token_url: str
    redirect_port: int
    project: str
    issue_types: dict[str, str]
    fields: dict[str, str]  # logical name -> Jira field name or id
    key_field: str  # Jira field (name or id) holding the natural key; "" = use a label
    labels: list[str]
    status_map: dict[str, dict[str, str]]
    priority_by_amount: list[tuple[float, str]]
    default_priority: str
    http: HttpSettings
    max_workers: int
    bulk_size: int
    # Jira's search lags its writes: a create left unanswered counts as absent only when a search issued
    # this long after it finds nothing (see sync/links.py).
    settle_seconds: float = 15.0
    # Bulk creates in flight at once. Each is one request but seconds of Jira's work (its per-issue cost):
    # several at once keep the edits and transitions of the issues just created flowing at the rate limit.
    max_bulk_creates: int = 16


@dataclass
class Config:
    path: Path
    instance: str
    state_file: Path
    audit_file: Path
    ps: PeopleSoftConfig | None
    jira: JiraConfig  # None when no configured pair needs Jira (a [procurify] + [peoplesoft] configuration)
    jde: Any = None  # parsed by mlconnector.jde.config when a [jde] section is present
    sections: dict[str, Any] = field(default_factory=dict)  # other sections parsed by their system (registry)
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    # Where versions before 0.2 kept the default state file: <instance>-<digest of the config's path>.json,
    # the instance then defaulting to the file's stem (so both names are candidates once an instance is set).
    legacy_state_files: tuple[Path, ...] = ()
    preflight: bool = True  # the first pass (no watermark yet) runs ping's checks before writing
    pass_deadline_minutes: float = 0.0  # stop a pass cleanly between two batches after this long (0 = never)

    def sites(self) -> dict[str, str]:
        """The sites a state file of this configuration describes (see State.bind_sites)."""
        out: dict[str, str] = {}
        if self.jira is not None:
            jde_project = getattr(self.jde, "project", "") if self.jde is not None else ""
            projects = [self.jira.project] + ([jde_project] if jde_project and jde_project != self.jira.project
                                              else [])
            out["jira"] = f"{_site(self.jira.api_base)} project {', '.join(projects)}"
        out.update({name: sec.site() for name, sec in self.sections.items() if hasattr(sec, "site")})
        if self.ps is not None:
            out["peoplesoft"] = f"{_site(self.ps.base_url)} node {self.ps.node}"
        if self.jde is not None:
            out["jde"] = f"{_site(self.jde.base_url)} environment {self.jde.environment}"
        return out

    @property
    def peoplesoft(self) -> PeopleSoftConfig:
        if self.ps is None:
            raise ConfigError(f"{self.path} has no [peoplesoft] section, which this command needs. Copy it from "
                              f"examples/config.toml and fill in your host, port and node.")
        return self.ps


def _site(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}{parts.path.rstrip('/')}"


def default_config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME)) / "config.toml"


def default_state_dir() -> Path:
    from platformdirs import user_state_dir

    return Path(user_state_dir(APP_NAME))


def _peoplesoft(root: _Section) -> PeopleSoftConfig:
    known = HTTP_KEYS | {"base_url", "host", "port", "scheme", "node", "auth", "user", "token_url",
                         "client_id", "scope", "owner_type", "maxrows", "max_maxrows", "overlap_minutes",
                         "prompt_format", "prompt_names", "db_utc_offset", "records", "initial_since",
                         "wsdl_max_age_hours"}
    s = root.table("peoplesoft", known)
    if "base_url" in s.data:
        base_url = _url(s, "base_url")
    else:
        host = s.str("host")
        scheme = s.str("scheme", "https", choices=("http", "https"))
        port = s.num("port", 443 if scheme == "https" else 80, minimum=1, integer=True)
        base_url = f"{scheme}://{host}:{port}"
    auth = s.str("auth", "basic", choices=("basic", "oauth2"))
    user = s.str("user", "") if auth == "oauth2" else s.str("user")
    token_url = client_id = scope = ""
    if auth == "oauth2":
        token_url = _url(s, "token_url")
        client_id = s.str("client_id")
        scope = s.str("scope", "")
    prompt_names = s.data.get("prompt_names", ["BIND1", "BIND2"])
    if (not isinstance(prompt_names, list) or len(prompt_names) != 2
            or not all(isinstance(p, str) and p for p in prompt_names)):
        raise ConfigError(f"{s.key('prompt_names')} must be two prompt names, like [\"BIND1\", \"BIND2\"].")
    offset = s.data.get("db_utc_offset")
    if offset is not None:
        try:
            datetime.strptime(offset.replace(":", ""), "%z")
        except (ValueError, AttributeError):
            raise ConfigError(f"{s.key('db_utc_offset')} = {offset!r}; write it like \"-06:00\".") from None
    default_since = s.str("initial_since", "2000-01-01")
    records_section = s.table("records", set(KINDS))
    records: dict[str, RecordSettings] = {}
    for kind, spec in KINDS.items():
        r = records_section.table(kind, {"enabled", "query", "comments_query", "columns", "initial_since",
                                         "transport", "ci", "find_keys", "get_keys", "read", "full_read_every_hours"})
        read = r.str("read", spec.get("read", "stamped"), choices=("stamped", "full"))
        if read == "full" and "full_query" not in spec:
            raise ConfigError(f"{r.key('read')} = \"full\" is for reference tables (vendors) only: a document is "
                              f"read by the window of its change stamp. Remove the key or write \"stamped\".")
        cols = dict(spec["columns"])
        col_section = r.table("columns", set(cols))
        for k, v in col_section.data.items():
            if not isinstance(v, str):
                raise ConfigError(f"{col_section.key(k)} must be a column name in quotes, got {v!r}.")
            cols[k] = v.split(".", 1)[1] if "." in v else v
        cq = r.data.get("comments_query", spec["comments_query"])
        if cq is not None and not isinstance(cq, str):
            raise ConfigError(f"{r.key('comments_query')} must be a query name in quotes, or \"\" for none.")
        transport = r.str("transport", "qas", choices=("qas", "ci"))
        ci = r.str("ci", "").strip()
        if transport == "ci" and not ci:
            raise ConfigError(f"{r.key('ci')} is missing: with transport = \"ci\" name the component interface to "
                              f"read, like ci = \"PO_EXPRESS_CI\" (the service is CI_<name>).")
        records[kind] = RecordSettings(
            kind=kind,
            enabled=r.bool("enabled", True),
            query=r.str("query", spec["full_query"] if read == "full" else spec["query"]),
            comments_query=cq or None,
            columns=cols,
            initial_since=_parse_since(r, "initial_since", "1900-01-01" if kind == "vendors" else default_since),
            transport=transport,
            ci=ci,
            find_keys=r.str_map("find_keys"),
            get_keys=_str_list(r, "get_keys"),
            read=read,
            full_read_every_hours=r.num("full_read_every_hours", 1.0, minimum=0),
        )
    return PeopleSoftConfig(
        base_url=base_url,
        node=s.str("node"),
        auth=auth,
        user=user,
        token_url=token_url,
        client_id=client_id,
        scope=scope,
        http=_http_settings(s),
        owner_type=s.str("owner_type", "PUBLIC", choices=("PUBLIC", "PRIVATE")),
        maxrows=s.num("maxrows", 1000, minimum=2, integer=True),
        max_maxrows=s.num("max_maxrows", 20000, minimum=2, integer=True),
        overlap_minutes=s.num("overlap_minutes", 60, minimum=0),
        prompt_format=s.str("prompt_format", "date", choices=("date", "datetime")),
        prompt_names=(prompt_names[0], prompt_names[1]),
        db_utc_offset=offset,
        records=records,
        wsdl_max_age_hours=s.num("wsdl_max_age_hours", 24.0, minimum=0),
    )


def _jira(root: _Section) -> JiraConfig:
    known = HTTP_KEYS | {"site", "api_base", "auth", "email", "client_id", "auth_url", "token_url",
                         "redirect_port", "project", "issue_types", "fields", "key_field", "labels",
                         "status_map", "priority_by_amount", "default_priority", "max_workers", "bulk_size",
                         "cloud_id", "settle_seconds", "max_bulk_creates"}
    s = root.table("jira", known)
    if not s.data:
        raise ConfigError("The [jira] section is missing. Copy it from examples/config.toml and fill in your "
                          "site URL and project key.")
    site = _url(s, "site")
    auth = s.str("auth", "basic", choices=("basic", "oauth2"))
    email = s.str("email") if auth == "basic" else s.str("email", "")
    client_id = auth_url = token_url = ""
    if auth == "oauth2":
        client_id = s.str("client_id")
        auth_url = s.str("auth_url", "https://auth.atlassian.com/authorize")
        token_url = s.str("token_url", "https://auth.atlassian.com/oauth/token")
        if "api_base" in s.data:
            api_base = _url(s, "api_base")
        else:
            cloud_id = s.str("cloud_id")
            api_base = f"https://api.atlassian.com/ex/jira/{cloud_id}"
    else:
        api_base = _url(s, "api_base") if "api_base" in s.data else site
    issue_types = dict(DEFAULT_ISSUE_TYPES)
    it = s.table("issue_types", set(ISSUE_KINDS))
    issue_types.update(s.str_map("issue_types") if it.data else {})
    fields = {"amount": "Amount", "vendor": "Vendor", "invoice_number": "Invoice Number",
              "approval_status": "Approval Status", "vendor_details": "Vendor Details", "currency": "Currency",
              "requester": "Requester", "order_date": "Order Date"}
    f = s.table("fields", set(LOGICAL_FIELDS))
    for k, v in f.data.items():
        if not isinstance(v, str):
            raise ConfigError(f"{f.key(k)} must be a Jira field name or id in quotes, or \"\" to leave it out.")
        fields[k] = v
    fields = {k: v for k, v in fields.items() if v}
    sm = s.table("status_map", set(ISSUE_KINDS))
    status_map = {k: dict(v) for k, v in DEFAULT_STATUS_MAP.items()}
    for kind in sm.data:
        status_map[kind] = sm.str_map(kind)
    labels = s.data.get("labels", ["erp-sync"])
    if not isinstance(labels, list) or not all(isinstance(x, str) and x and " " not in x for x in labels):
        raise ConfigError(f"{s.key('labels')} must be a list of labels without spaces, like [\"erp-sync\"].")
    pba = s.data.get("priority_by_amount", [[100000, "Highest"], [25000, "High"]])
    try:
        rules = sorted(((float(a), str(p)) for a, p in pba), reverse=True)
    except (TypeError, ValueError):
        raise ConfigError(f"{s.key('priority_by_amount')} must be a list of [amount, \"Priority\"] pairs, "
                          f"like [[100000, \"Highest\"], [25000, \"High\"]].") from None
    return JiraConfig(
        site=site,
        api_base=api_base,
        auth=auth,
        email=email,
        client_id=client_id,
        auth_url=auth_url,
        token_url=token_url,
        redirect_port=s.num("redirect_port", 8765, minimum=0, integer=True),
        project=s.str("project"),
        issue_types=issue_types,
        fields=fields,
        key_field=s.str("key_field", "ERP Key"),
        labels=labels,
        status_map=status_map,
        priority_by_amount=rules,
        default_priority=s.str("default_priority", "Medium"),
        http=_http_settings(s),
        max_workers=s.num("max_workers", 4, minimum=1, integer=True),
        bulk_size=min(50, s.num("bulk_size", 50, minimum=1, integer=True)),
        settle_seconds=s.num("settle_seconds", 15.0, minimum=0),
        max_bulk_creates=s.num("max_bulk_creates", 16, minimum=1, integer=True),
    )


def load(path: Path | str | None = None) -> Config:
    p = Path(path).expanduser() if path else default_config_path()
    if not p.exists():
        raise ConfigError(
            f"No configuration file at {p}. Create one from examples/config.toml, then pass it with "
            f"--config PATH or set {CONFIG_ENV}."
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the configuration file {p}: {exc}. Check its permissions "
                          f"and that it is UTF-8 text.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The configuration file {p} is not valid TOML: {exc}. Fix that line "
                          f"(strings need quotes, tables need [brackets]).") from None
    return from_dict(data, p)


def from_dict(data: dict[str, Any], path: Path) -> Config:
    from mlconnector.registry import SECTIONS, section_parser

    unknown = sorted(set(data) - {"instance", "state_file", "audit_file", "peoplesoft", "jira", "jde", "preflight",
                                  "pass_deadline_minutes"}
                     - set(SECTIONS))
    if unknown:
        raise ConfigError(f"Unknown top-level key {unknown[0]!r} in the configuration. Known: instance, "
                          f"preflight, pass_deadline_minutes, "
                          f"state_file, audit_file, [peoplesoft], [jira], [jde]. Check the spelling and the section "
                          f"headers.")
    if "peoplesoft" not in data and "jde" not in data:
        raise ConfigError("The configuration has neither a [peoplesoft] nor a [jde] section, so there is nothing to "
                          "sync. Copy the section you need from examples/config.toml.")
    instance = data.get("instance") or path.stem
    if not isinstance(instance, str):
        raise ConfigError("instance must be a name in quotes.")
    root_sec = _RootSection(data)
    ps = _peoplesoft(root_sec) if "peoplesoft" in data else None
    # Jira is optional only for a configuration whose pairs do not use it (Procurify -> PeopleSoft).
    jira = _jira(root_sec) if "jira" in data or not {"procurify", "jaggaer", "procore"} & set(data) else None
    jde = None
    if "jde" in data:
        jde = section_parser("jde")(_Section(data["jde"], "jde"))  # the JD Edwards pair's own settings
    # Other systems' and pairs' sections, each parsed by its own package.
    sections = {name: section_parser(name)(_Section(data[name], name)) for name in SECTIONS
                if name != "jde" and name in data}
    resolved = str(path.resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
    state_file = data.get("state_file")
    if state_file is not None and not isinstance(state_file, str):
        raise ConfigError("state_file must be a path in quotes.")
    # The default follows the instance name, not the file's path: a configuration moved to another folder
    # keeps its state (earlier versions added a digest of the path; runner.adopt_legacy_state moves that file).
    sp = Path(state_file).expanduser() if state_file else default_state_dir() / f"{instance}.json"
    legacy = () if state_file else tuple(dict.fromkeys(
        default_state_dir() / f"{name}-{digest}.json" for name in (instance, path.stem)))
    if not sp.is_absolute():
        sp = path.resolve().parent / sp
    audit_file = data.get("audit_file")
    if audit_file is not None and not isinstance(audit_file, str):
        raise ConfigError("audit_file must be a path in quotes.")
    ap = Path(audit_file).expanduser() if audit_file else sp.with_suffix(".audit.jsonl")
    if not ap.is_absolute():
        ap = path.resolve().parent / ap
    return Config(path=path, instance=instance, state_file=sp, audit_file=ap, ps=ps, jira=jira, jde=jde, raw=data,
                  sections=sections, legacy_state_files=legacy, preflight=root_sec.bool("preflight", True),
                  pass_deadline_minutes=root_sec.num("pass_deadline_minutes", 0.0, minimum=0))
