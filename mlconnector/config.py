"""Configuration: one TOML file per customer instance, validated before any network call.

Every problem is reported with the key that holds it and what to write instead. Secrets never live
here (see credentials.py); a key that looks like one is refused with the command that stores it.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlconnector.errors import ConfigError
from mlconnector.http import HttpSettings

APP_NAME = "mlconnector"
CONFIG_ENV = "MLCONNECTOR_CONFIG"

# PeopleSoft record kinds this pair knows: natural key columns, default PS Query names, default
# columns for each logical field. Customers' queries may name columns differently ([U] in the
# reference), so every column is overridable in [peoplesoft.records.<kind>.columns].
KINDS: dict[str, dict[str, Any]] = {
    "vendors": {
        "keys": ("SETID", "VENDOR_ID"),
        "query": "ML_VENDOR_CHANGED",
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
SECRET_LOOKING_KEYS = {"password", "api_token", "token", "client_secret", "secret", "refresh_token",
                       "access_token", "passwd", "pwd"}


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


@dataclass
class Config:
    path: Path
    instance: str
    state_file: Path
    audit_file: Path
    ps: PeopleSoftConfig | None
    jira: JiraConfig
    jde: Any = None  # parsed by mlconnector.jde.config when a [jde] section is present
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def peoplesoft(self) -> PeopleSoftConfig:
        if self.ps is None:
            raise ConfigError(f"{self.path} has no [peoplesoft] section, which this command needs. Copy it from "
                              f"examples/config.toml and fill in your host, port and node.")
        return self.ps


def default_config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME)) / "config.toml"


def default_state_dir() -> Path:
    from platformdirs import user_state_dir

    return Path(user_state_dir(APP_NAME))


class _Section:
    """Typed reads from one TOML table, with errors that name the full key."""

    def __init__(self, data: dict[str, Any], prefix: str, known: set[str] | None = None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"[{prefix}] must be a table (a section with keys), not {type(data).__name__}.")
        self.data = data
        self.prefix = prefix
        self.known = known
        for k in data:
            if k.lower() in SECRET_LOOKING_KEYS:
                raise ConfigError(
                    f"{prefix}.{k} looks like a secret, and secrets never go in the configuration file. "
                    f"Delete the line and store it with: mlconnector secrets set {prefix.split('.')[0]}.{k}"
                )
        if known is not None:
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(
                    f"Unknown key {prefix}.{unknown[0]} in the configuration. Known keys in [{prefix}]: "
                    f"{', '.join(sorted(known))}. Check the spelling."
                )

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def str(self, name: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str:
        v = self.data.get(name, default)
        if v is None:
            raise ConfigError(f"{self.key(name)} is missing. Add it to the [{self.prefix}] section.")
        if not isinstance(v, str):
            raise ConfigError(f"{self.key(name)} must be a string in quotes, got {v!r}.")
        if choices and v not in choices:
            raise ConfigError(f"{self.key(name)} = {v!r} is not allowed; use one of: {', '.join(choices)}.")
        return v

    def num(self, name: str, default: float, *, minimum: float = 0, integer: bool = False) -> Any:
        v = self.data.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
            kind = "a whole number" if integer else "a number"
            raise ConfigError(f"{self.key(name)} must be {kind}, got {v!r}.")
        if v < minimum:
            raise ConfigError(f"{self.key(name)} must be at least {minimum}, got {v!r}.")
        return v

    def bool(self, name: str, default: bool) -> bool:
        v = self.data.get(name, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self.key(name)} must be true or false (no quotes), got {v!r}.")
        return v

    def table(self, name: str, known: set[str] | None = None) -> _Section:
        return _Section(self.data.get(name, {}), self.key(name), known)

    def str_map(self, name: str) -> dict[str, str]:
        t = self.table(name)
        out = {}
        for k, v in t.data.items():
            if not isinstance(v, str):
                raise ConfigError(f"{t.key(k)} must be a string in quotes, got {v!r}.")
            out[str(k)] = v
        return out


def _http_settings(s: _Section) -> HttpSettings:
    verify: bool | str = s.bool("verify_tls", True)
    ca = s.data.get("ca_bundle")
    if ca is not None:
        if not isinstance(ca, str) or not ca:
            raise ConfigError(f"{s.key('ca_bundle')} must be the path of a PEM file, in quotes.")
        p = Path(ca).expanduser()
        if not p.is_file():
            raise ConfigError(f"{s.key('ca_bundle')} = {ca!r}: no such file. Point it at the PEM file "
                              f"of the CA that signed the server's certificate.")
        verify = str(p) if verify else False
    return HttpSettings(
        connect_timeout=s.num("connect_timeout", 10.0, minimum=0.1),
        read_timeout=s.num("read_timeout", 120.0, minimum=0.1),
        max_attempts=s.num("max_attempts", 5, minimum=1, integer=True),
        backoff_initial=s.num("backoff_initial", 0.5, minimum=0),
        backoff_max=s.num("backoff_max", 30.0, minimum=0),
        max_retry_after=s.num("max_retry_after", 120.0, minimum=0),
        verify=verify,
        request_deadline=s.num("request_deadline", 300.0, minimum=1),
        max_response_bytes=s.num("max_response_mb", 256, minimum=1, integer=True) * 1024 * 1024,
    )


def _url(s: _Section, name: str) -> str:
    v = s.str(name).rstrip("/")
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{s.key(name)} = {v!r} is not a URL; write it like \"https://host:port\".")
    return v


def _parse_since(s: _Section, name: str, default: str) -> datetime:
    v = s.str(name, default)
    try:
        d = datetime.fromisoformat(v)
    except ValueError:
        raise ConfigError(f"{s.key(name)} = {v!r} is not a date; write it as \"YYYY-MM-DD\".") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


HTTP_KEYS = {"verify_tls", "ca_bundle", "connect_timeout", "read_timeout", "max_attempts",
             "backoff_initial", "backoff_max", "max_retry_after", "request_deadline", "max_response_mb"}


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
                                         "transport", "ci"})
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
            query=r.str("query", spec["query"]),
            comments_query=cq or None,
            columns=cols,
            initial_since=_parse_since(r, "initial_since", "1900-01-01" if kind == "vendors" else default_since),
            transport=transport,
            ci=ci,
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
                         "cloud_id"}
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
    unknown = sorted(set(data) - {"instance", "state_file", "audit_file", "peoplesoft", "jira", "jde"})
    if unknown:
        raise ConfigError(f"Unknown top-level key {unknown[0]!r} in the configuration. Known: instance, "
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
    jira = _jira(root_sec)
    jde = None
    if "jde" in data:
        from mlconnector.jde.config import parse_jde  # the JD Edwards pair's own settings

        jde = parse_jde(_Section(data["jde"], "jde"))
    resolved = str(path.resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
    state_file = data.get("state_file")
    if state_file is not None and not isinstance(state_file, str):
        raise ConfigError("state_file must be a path in quotes.")
    sp = Path(state_file).expanduser() if state_file else default_state_dir() / f"{instance}-{digest}.json"
    if not sp.is_absolute():
        sp = path.resolve().parent / sp
    audit_file = data.get("audit_file")
    if audit_file is not None and not isinstance(audit_file, str):
        raise ConfigError("audit_file must be a path in quotes.")
    ap = Path(audit_file).expanduser() if audit_file else sp.with_suffix(".audit.jsonl")
    if not ap.is_absolute():
        ap = path.resolve().parent / ap
    return Config(path=path, instance=instance, state_file=sp, audit_file=ap, ps=ps, jira=jira, jde=jde, raw=data)


class _RootSection(_Section):
    """The file's top level: sections are named without a leading dot."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.prefix = ""
        self.known = None

    def key(self, name: str) -> str:
        return name
