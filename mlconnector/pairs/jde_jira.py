"""`sync jde-jira`, declared: JD Edwards work orders and change orders -> Jira issues; Jira status
changes -> JDE orchestration.

Forward, each enabled source is a windowed flow on the engine (sync/flows.py): JDE is browsed from the
window's start day (jde/source.py; UPMJ has day granularity, so each window re-reads ``overlap_days``
and rows are told apart by (UPMJ, TDAY) and the content hash), mapped here (``map_order``) and written by
jira/sink.py's IssueWriter, which holds the crash-safety rules of issue writes. The watermark moves to
the newest row written, after the save.

Back, the status flow is jde/backflow.py's StatusBackFlow (each change posted exactly once, never an
echo of the connector's own transitions), reading Jira through jira/changes.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import ConfigError, RecordError
from mlconnector.jde.ais import AisClient
from mlconnector.jde.backflow import StatusBackFlow
from mlconnector.jde.config import JdeConfig, SourceSettings
from mlconnector.jde.julian import parse_ais_date, to_datetime
from mlconnector.jde.source import OrderReader
from mlconnector.jira import adf
from mlconnector.jira import target as jira_target
from mlconnector.jira.changes import StatusChangeReader
from mlconnector.jira.client import FieldInfo, JiraClient
from mlconnector.jira.connect import describe, open_jira
from mlconnector.jira.sink import IssueWrite, IssueWriter
from mlconnector.jira.target import IssueTypeName
from mlconnector.mapping import SUMMARY_MAX, _field_value, content_hash
from mlconnector.state import State
from mlconnector.sync import flows
from mlconnector.sync.engine import PassContext, Progress, no_progress
from mlconnector.sync.flows import Flow, FlowPass, PairFlows, StepFlow, WindowedFlow
from mlconnector.sync.keys import encode_key, handle, legacy_handle
from mlconnector.sync.window import WindowRule

__all__ = ["PAIR", "before_replay", "configured", "connect", "make_pass", "reconcile_scope"]

PAIR = "jde-jira"
STATUS_KIND = "jira_status"  # counts and replay items of the back-flow
BACKFLOW_WM = "jde-jira.backflow"
EXTRA = "jde-jira"  # state.extra[EXTRA]: {"posted": {change_id: {...}}, "webhook_events": [...], "webhook": {...}}


def configured(cfg: Config) -> bool:
    return cfg.jde is not None


def _no_jde(cfg: Config) -> ConfigError:
    return ConfigError(f"{cfg.path} has no [jde] section, which sync jde-jira needs. Copy it from "
                       f"README.md ('sync jde-jira'); examples/config.toml has the [jira] part.")


@contextlib.contextmanager
def connect(cfg: Config, secrets: SecretStore, redactor: Redactor, *, refresh_wsdl: bool = False) -> Iterator[Any]:
    """The pair's clients, open for one command: (AIS client, Jira client). The AIS session is logged out at
    the end: tokens are never kept between runs."""
    from mlconnector.audit import GLOBAL

    if cfg.jde is None:
        raise _no_jde(cfg)
    # Secrets are read before any network call, so a missing one is reported first and plainly.
    password = secrets.get("jde.password")
    redactor.add(password, cfg.jde.user)  # also masks the Basic-auth form of the JDE credentials
    GLOBAL.add(password, cfg.jde.user)
    ais = AisClient(cfg.jde, password)
    try:
        jira = open_jira(cfg, secrets)
    except BaseException:
        ais.close()
        raise
    try:
        yield ais, jira
    finally:
        ais.close()
        jira.close()


def before_replay(steps: FlowPass, items: list[dict[str, Any]]) -> None:
    return None  # a queued order is retried as queued (AIS is browsed by day, not by key)


@dataclass
class Target:
    project: str
    issue_type_ids: dict[str, str]  # source name -> issue type id
    fields: dict[str, FieldInfo]  # JDE column alias -> Jira field
    key_field: FieldInfo | None
    labels: list[str]
    me: str  # accountId of the connector's own Jira user


def order_label(src: SourceSettings, order_number: str, order_type: str) -> str:
    """The order's handle on its Jira issue (a label): injective, see sync/keys.py."""
    return handle(src.label, (order_number, order_type))


# -- the pair's parts and its declared flows ---------------------------------------------------------
@dataclass
class Parts:
    """What one pass of the pair holds: configuration, clients, the Jira target resolved from the
    configuration's names, the issue writer (forward) and the status back-flow."""

    ctx: PassContext
    cfg: Config
    jde: JdeConfig
    ais: AisClient
    jira: JiraClient
    selected: list[str] | None
    target: Target | None = None
    writer: IssueWriter = field(init=False)
    orders: OrderReader = field(init=False)
    back: StatusBackFlow = field(init=False)

    def __post_init__(self) -> None:
        from mlconnector.webhook import spool_path

        self.writer = IssueWriter.for_pass(self.ctx, self.jira, self.cfg.jira, self.project,
                                           lambda kind: self.target.issue_type_ids[kind] if self.target else "")
        self.orders = OrderReader(self.ais, self.jde)
        labels = [s.label for s in self.jde.enabled_sources()]
        self.back = StatusBackFlow(
            self.ctx, self.ais, self.jde, self.ctx.state.extra.setdefault(EXTRA, {}),
            StatusChangeReader(self.jira, self.project, labels), me=lambda: self.target.me if self.target else "",
            kind=STATUS_KIND, watermark=BACKFLOW_WM, spool=spool_path(self.cfg.state_file),
            webhook_url=self.jde.webhook_url if self.cfg.jira.auth == "oauth2" else "")

    @property
    def project(self) -> str:
        return self.jde.project or self.cfg.jira.project


def make_pass(cfg: Config, clients: Any, state: State, audit: Audit, *, dry_run: bool = False,
              progress: Progress = no_progress, kinds: list[str] | None = None,
              now: datetime | None = None) -> FlowPass:
    if cfg.jde is None:
        raise _no_jde(cfg)
    ais, jira = clients
    ctx = PassContext(PAIR, state, audit, dry_run=dry_run, progress=progress, describe=describe,
                      **({"now": now} if now else {}))
    parts = Parts(ctx, cfg, cfg.jde, ais, jira, kinds)
    return FlowPass(ctx, declare(parts), parts)


def declare(p: Parts) -> PairFlows:
    """Each enabled source forward, then the status back-flow; queued orders go back through the forward
    write, queued status changes through the back-flow."""
    jde = p.jde

    def entities() -> list[str]:
        every = [s.name for s in jde.enabled_sources()] + ([STATUS_KIND] if jde.backflow else [])
        return [k for k in every if p.selected is None or k in p.selected]

    return PairFlows(
        setup=lambda: prepare(p), entities=entities, flows=lambda entity: entity_flows(p, entity),
        replay_kinds=lambda: [STATUS_KIND, *jde.sources],
        routes={(STATUS_KIND, "*"): p.back.retry,
                ("*", "*"): lambda item: write_orders(p, jde.sources[item["kind"]], [item["row"]])},
        settle=[lambda: p.writer.resolve_pending(list(jde.sources)), p.back.resolve_pending],
        requests=lambda: {"jde": p.ais.http.requests_made, "jira": p.jira.http.requests_made})


def entity_flows(p: Parts, entity: str) -> list[Flow]:
    if entity == STATUS_KIND:
        return [StepFlow(STATUS_KIND, p.back.run)]
    src = p.jde.sources[entity]
    # UPMJ has no time part: windows overlap by whole days and rows are de-duplicated with TDAY (pitfall 11).
    rule = WindowRule(timedelta(days=p.jde.overlap_days))
    return [WindowedFlow(src.name, f"jde.{src.name}", rule, src.initial_since,
                         read=lambda start, _end: [(p.orders.since(src, start), None)],
                         write=lambda rows: write_orders(p, src, rows))]


def write_orders(p: Parts, src: SourceSettings, rows: list[dict[str, Any]]) -> datetime | None:
    """Map and write one window of rows; return the newest row time read (for the watermark)."""
    mapped = flows.map_rows(p.ctx, src.name, rows, lambda row: map_order(p.jde, p.target, src, row),
                            lambda row: _row_id(src, row))
    p.writer.write(src.name, mapped.values())
    return flows.newest(mapped)


# -- setup -------------------------------------------------------------------------------------------
def prepare(p: Parts) -> Target:
    """Resolve the configuration's names against Jira's metadata; a mismatch is a ConfigError."""
    if p.target is not None:
        return p.target
    jde = p.jde
    sources = {src.name: src for src in jde.enabled_sources()}

    def statuses(name: str) -> list[tuple[str, str]]:
        return [(status, f"jde.status_from_jde.{code} = {status!r}") for code, status in jde.status_from_jde.items()] \
            + [(status, f"jde.status_to_jde has {status!r}, which") for status in jde.status_to_jde]

    r = jira_target.resolve(
        p.jira, p.project, fields={alias: (wanted, f"jde.fields.{alias}") for alias, wanted in jde.fields.items()
                                   if wanted},
        key_field=p.cfg.jira.key_field,
        issue_types={name: IssueTypeName(f"jde.{name}.issue_type", src.issue_type) for name, src in sources.items()},
        missing_project=f"Jira has no project {p.project!r} visible to this user (jde.project, else jira.project). "
                        f"Check the key and the user's Browse permission.", statuses=statuses)
    me = str(p.jira.myself().get("accountId") or "")
    p.target = Target(project=p.project, issue_type_ids=r.issue_type_ids, fields=r.fields, key_field=r.key_field,
                      labels=list(p.cfg.jira.labels), me=me)
    return p.target


# -- mapping -----------------------------------------------------------------------------------------
def map_order(jde: JdeConfig, target: Target | None, src: SourceSettings, row: dict[str, Any]) -> IssueWrite:
    """A JDE order row as its Jira issue should be."""
    assert target is not None
    t = target
    c = src.columns

    def cell(logical: str) -> Any:
        alias = c.get(logical, "")
        v = row.get(alias) if alias else None
        return v.strip() if isinstance(v, str) else v

    number = cell("order_number")
    if number in (None, "", 0):
        raise RecordError(f"{src.title} row has no {c['order_number']} (order number), so it cannot be matched "
                          f"to an issue. Check [jde.{src.name}.columns] order_number.")
    number = str(int(number)) if isinstance(number, float) and number.is_integer() else str(number)
    otype = str(cell("order_type") or (src.order_types[0] if src.order_types else ""))
    key = encode_key((number, otype))
    shown = f"{number} ({otype})" if otype else number
    try:
        updated = parse_ais_date(cell("updated_date"))
        if updated is None:
            raise ValueError("blank")
        ts = to_datetime(updated, cell("updated_time") or 0, jde.server_utc_offset).astimezone(UTC)
    except (ValueError, TypeError):
        raise RecordError(f"{src.title} {shown}: {c['updated_date']}/{c.get('updated_time')} = "
                          f"{cell('updated_date')!r}/{cell('updated_time')!r} is not a date and time.") from None
    try:
        due = parse_ais_date(cell("requested_date"))
    except (ValueError, TypeError):
        raise RecordError(f"{src.title} {shown}: {c['requested_date']} = {cell('requested_date')!r} is not a "
                          f"date.") from None
    status = str(cell("status") or "")
    description = str(cell("description") or "")
    prio_code = str(cell("priority") or "")
    assigned = cell("assigned_to")
    assigned_s = str(int(assigned)) if isinstance(assigned, float) and assigned.is_integer() else \
        str(assigned or "")
    branch, reason = str(cell("branch") or ""), str(cell("reason") or "")

    headline = adf.clean(description).replace("\n", " ").strip() or f"status {status}"
    summary = f"{src.title} {shown}: {headline}"
    if len(summary) > SUMMARY_MAX:
        summary = summary[: SUMMARY_MAX - 1] + "…"
    body = adf.doc(
        adf.heading(f"{src.title} {shown}"),
        adf.paragraph(adf.truncate(description)) if description else None,
        adf.facts([("Order number", number), ("Order type", otype), ("Branch/plant", branch),
                   ("Requested date", due.isoformat() if due else ""), ("Priority code", prio_code),
                   ("Assigned to (address number)", assigned_s if assigned_s not in ("", "0") else ""),
                   ("Reason", reason)]),
        adf.paragraph("Synced from JD Edwards by ml-connector. JD Edwards is the source of truth for these "
                      "fields; the Jira status flows back to the work order."),
    )
    fields: dict[str, Any] = {"summary": summary, "description": body}
    if due:
        fields["duedate"] = due.isoformat()
    priority = jde.priority_map.get(prio_code, jde.default_priority)
    if priority:
        fields["priority"] = {"name": priority}
    account = jde.assignee_map.get(assigned_s)
    if account:
        fields["assignee"] = {"accountId": account}
    for alias, f in t.fields.items():
        value = row.get(alias)
        value = value.strip() if isinstance(value, str) else value
        if value in (None, ""):
            continue
        if f.type == "date":
            try:
                d = parse_ais_date(value)
            except (ValueError, TypeError):
                raise RecordError(f"{src.title} {shown}: {alias} = {value!r} is not a date.") from None
            if d:
                fields[f.id] = d.isoformat()
        elif f.type == "number":
            try:
                fields[f.id] = float(value)
            except (TypeError, ValueError):
                raise RecordError(f"{src.title} {shown}: {alias} = {value!r} is not a number.") from None
        else:
            fields[f.id] = _field_value(f, value)
    if t.key_field is not None:
        fields[t.key_field.id] = _field_value(t.key_field, f"JDE-{otype}-{number}" if otype else f"JDE-{number}")
    label = order_label(src, number, otype)
    create = {"project": {"key": t.project}, "issuetype": {"id": t.issue_type_ids[src.name]}, **fields,
              "labels": sorted({*t.labels, src.label, label})}
    return IssueWrite(kind=src.name, key=key, ts=ts,
                      status_code=status, target_status=jde.status_from_jde.get(status),
                       create_fields=create, edit_fields=fields, hash=content_hash(fields, ""), label=label,
                      legacy_label=legacy_handle(src.label, (number, otype)))


def _row_id(src: SourceSettings, row: dict[str, Any]) -> str:
    def key(r: dict[str, Any]) -> str:
        number = r.get(src.alias("order_number"))
        if number in (None, ""):
            raise RecordError("no order number")
        return encode_key((str(number), str(r.get(src.alias("order_type")) or "")))

    return flows.row_id(row, key)


# -- reconcile (mlconnector/reconcile.py) ------------------------------------------------------------
def reconcile_scope(steps: FlowPass) -> Any:
    """What `reconcile jde-jira` reads and maps: each enabled source's orders through this pass's own browse
    and mapping (no money: work and change orders carry no amount the issues show). Statuses are compared
    as the forward flow maps them; a status changed in Jira and not posted back to JD Edwards yet shows as
    drifted (changed on the target side) until a pass posts it."""
    from mlconnector.reconcile_types import Scope

    target = steps.prepare()
    sources = {s.name: s for s in steps.jde.enabled_sources()}

    def rows(kind: str, start: datetime, _end: datetime) -> Iterator[list[dict[str, Any]]]:
        yield steps.orders.since(sources[kind], start)

    def plan(kind: str, rows: list[dict[str, Any]]) -> None:  # the pass is a planning pass: it writes nothing
        write_orders(steps.parts, sources[kind], rows)

    return Scope(kinds=list(sources), initial_since=lambda kind: sources[kind].initial_since, rows=rows,
                 map=lambda kind, row: map_order(steps.jde, target, sources[kind], row),
                 row_key=lambda kind, row: _row_id(sources[kind], row), kind_label=lambda kind: sources[kind].label,
                 field_names={f.id: alias for alias, f in target.fields.items()},
                 plan=plan, full_read=lambda kind, start: start <= sources[kind].initial_since)
