"""`sync peoplesoft-jira`, declared: PeopleSoft vendors, requisitions, purchase orders and vouchers (and
their comments) -> Jira issues.

The pass is the engine's (sync/flows.py runs the declared flows: windows, the vendor master's full
read and diff, the re-map of documents whose vendor changed, replay routing); issues are written by
jira/sink.py's IssueWriter and comments by jira/comments.py's CommentWriter, which hold the crash-safety
rules. This module says which entities flow in which order, from which reader, through which mapping
(mlconnector/mapping.py) into which sink.

Crash safety, whatever instant a pass is killed at: no issue is ever created twice (a lookup by label
before every create, a pending mark on disk before it: jira/sink.py); no comment is posted twice (a
pending mark, then a marker lookup on the issue: jira/comments.py); nothing is lost (a kind's watermark
moves only after every row of a window was written, found unchanged or queued, and the state holding
those results was saved: sync/flows.py); the state file is always loadable (saved atomically).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import ISSUE_KINDS, KINDS, Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import EXIT_CONFIG, RecordError, RemoteError
from mlconnector.jira import target as jira_target
from mlconnector.jira.client import JiraClient
from mlconnector.jira.comments import CommentWriter
from mlconnector.jira.connect import describe, open_jira
from mlconnector.jira.sink import IssueWrite, IssueWriter
from mlconnector.jira.target import IssueTypeName
from mlconnector.mapping import (
    CLOSED_STATUS,
    STAMP,
    JiraTarget,
    MappedComment,
    map_comment,
    map_record,
    natural_key,
    row_ts,
    row_vendor,
    source_inputs,
    source_row,
    vendor_from_row,
    vendor_key,
)
from mlconnector.peoplesoft.connect import ci_readers, peoplesoft_auth
from mlconnector.peoplesoft.qas import QASClient
from mlconnector.state import State, iso
from mlconnector.sync import flows
from mlconnector.sync.engine import PassContext, Progress, no_progress
from mlconnector.sync.flows import (
    Flow,
    FlowPass,
    FullReadFlow,
    PairFlows,
    QueuedSource,
    ReferenceRow,
    WindowedFlow,
    before_replay,
)
from mlconnector.sync.keys import comment_key, decode_key
from mlconnector.sync.reference import SOURCE, ReferenceStore, ref_field
from mlconnector.sync.window import WindowRule

__all__ = ["PAIR", "before_replay", "configured", "connect", "make_pass", "reconcile_scope"]

PAIR = "peoplesoft-jira"
EPOCH = datetime(1900, 1, 1, tzinfo=UTC)
REFRESH_BATCH = 500  # dependents re-mapped per write batch
RELEASE_EVERY = 5000  # reference rows diffed between two releases of the parsed key-map entries
VENDOR_REF = ref_field("vendors")


def configured(cfg: Config) -> bool:
    return cfg.ps is not None


@contextlib.contextmanager
def connect(cfg: Config, secrets: SecretStore, redactor: Redactor, *, refresh_wsdl: bool = False) -> Iterator[Any]:
    """The pair's clients, open for one command: (PS Query client, Jira client, CI readers by kind)."""
    # Secrets are read before any network call, so a missing one is reported first and plainly.
    ps = QASClient(cfg.peoplesoft, peoplesoft_auth(cfg, secrets))
    jira = open_jira(cfg, secrets)
    # The CI client shares the QAS client's authenticator (one OAuth2 token for both).
    readers, ci = ci_readers(cfg, ps.http.session.auth, refresh_wsdl=refresh_wsdl)
    try:
        yield ps, jira, readers
    finally:
        if ci is not None:
            ci.close()
        ps.close()
        jira.close()


# -- the pair's parts and its declared flows ---------------------------------------------------------
class _Vendors:
    """Vendor facts for mapping: the key map's vendor rows, then (until the first save migrates them) the
    vendor cache an earlier version kept in the state's header."""

    def __init__(self, store: ReferenceStore, legacy: dict[str, dict[str, Any]]) -> None:
        self.store = store
        self.legacy = legacy

    def get(self, key: str, /) -> dict[str, Any] | None:
        return self.store.get(key) or self.legacy.get(key)


@dataclass
class Parts:
    """What one pass of the pair holds: its configuration, clients, the Jira target resolved from the
    configuration's names, and its sinks (IssueWriter for issues, CommentWriter for comments)."""

    ctx: PassContext
    cfg: Config
    ps: QASClient
    jira: JiraClient
    readers: dict[str, Any]  # per-kind source readers with read_window(query, start, end); QAS otherwise
    selected: list[str] | None
    target: JiraTarget | None = None
    writer: IssueWriter = field(init=False)
    comments: CommentWriter = field(init=False)
    vendors: ReferenceStore = field(init=False)
    vendor_facts: _Vendors = field(init=False)

    def __post_init__(self) -> None:
        self.writer = IssueWriter.for_pass(self.ctx, self.jira, self.cfg.jira, self.cfg.jira.project,
                                           lambda kind: self.target.issue_type_ids[kind] if self.target else "")
        self.comments = CommentWriter(self.ctx, self.jira, max_workers=self.cfg.jira.max_workers)
        self.vendors = ReferenceStore(self.ctx.state, "vendors", self.kinds())
        self.vendor_facts = _Vendors(self.vendors, self.ctx.state.vendors)

    def kinds(self) -> list[str]:
        """The issue kinds this configuration syncs."""
        return [k for k in ISSUE_KINDS if self.cfg.peoplesoft.records[k].enabled]

    def reader(self, kind: str) -> Any:
        return self.readers.get(kind, self.ps)


def make_pass(cfg: Config, clients: Any, state: State, audit: Audit, *, dry_run: bool = False,
              progress: Progress = no_progress, kinds: list[str] | None = None,
              now: datetime | None = None) -> FlowPass:
    ps, jira, readers = clients
    ctx = PassContext(PAIR, state, audit, dry_run=dry_run, progress=progress, describe=describe,
                      **({"now": now} if now else {}))
    parts = Parts(ctx, cfg, ps, jira, readers or {}, kinds)
    return FlowPass(ctx, declare(parts), parts)


def declare(p: Parts) -> PairFlows:
    """Vendors first (documents show them), then each issue kind: its window, the re-map of its documents
    whose vendor changed, its comments."""
    cfg, ctx = p.cfg, p.ctx

    def entities() -> list[str]:
        return [k for k in (p.selected or ["vendors", *ISSUE_KINDS]) if cfg.peoplesoft.records[k].enabled]

    def blocked(entity: str) -> str | None:
        # Without fresh vendor master data the issues would carry stale or missing vendor details, and their
        # watermarks would move past them: leave them for the next pass.
        if entity != "vendors" and any(e["kind"] == "vendors" for e in ctx.result.errors):
            return "vendors could not be read"
        return None

    return PairFlows(
        setup=lambda: prepare(p), entities=entities, flows=lambda entity: entity_flows(p, entity),
        replay_kinds=lambda: ["vendors", *ISSUE_KINDS],
        routes={("vendors", "*"): lambda item: flows.replay_reference_row(
                    ctx, p.vendors, item, lambda row: vendor_row(cfg, row, cfg.peoplesoft.records["vendors"].read
                                                                 == "stamped")),
                ("*", "comment"): lambda item: write_comments(p, item["kind"], [item["row"]]),
                ("*", "*"): lambda item: write_records(p, item["kind"], [item["row"]])},
        settle=[lambda: p.writer.resolve_pending(ISSUE_KINDS)], blocked=blocked,
        refresh=lambda kind, what: queued_source(p, kind, what),
        overlap=timedelta(minutes=cfg.peoplesoft.overlap_minutes),
        requests=lambda: {"peoplesoft": p.ps.http.requests_made, "jira": p.jira.http.requests_made})


def entity_flows(p: Parts, entity: str) -> list[Flow]:
    cfg, ctx = p.cfg, p.ctx
    rule = WindowRule(timedelta(minutes=cfg.peoplesoft.overlap_minutes))
    rs = cfg.peoplesoft.records[entity]
    if entity == "vendors":
        # Marks only for kinds that have documents yet (a first pass has none: nothing can show a vendor).
        p.vendors.dependents = [k for k in p.kinds() if next(ctx.state.keymap.items(k), None) is not None]
        if rs.read == "full":
            return [FullReadFlow("vendors", timedelta(hours=rs.full_read_every_hours),
                                 read_all=lambda: vendor_master(p, rs.query),
                                 row=lambda row: diff_vendor(p, row, stamped=False),
                                 explain=lambda exc: _full_read_failed(rs.query, exc), release_every=RELEASE_EVERY)]
        return [WindowedFlow("vendors", "vendors", rule, rs.initial_since, count=False,
                             read=lambda start, end: p.reader("vendors").read_window(rs.query, start, end),
                             write=lambda rows: stamped_vendors(p, rs.query, rows))]
    out: list[Flow] = [WindowedFlow(
        entity, entity, rule, rs.initial_since,
        # Hops owed by one window's creates run on while the next window is read, looked up and created.
        read=lambda start, end: p.writer.overlapping(p.reader(entity).read_window(rs.query, start, end)),
        write=lambda rows: write_records(p, entity, rows),
        # After the window: documents it wrote already show the new vendor data and are found unchanged.
        after=lambda: flows.refresh_dependents(ctx, entity, lambda key, inputs, ts: source_row(entity, key, inputs, ts),
                                               lambda rows: write_records(p, entity, rows), REFRESH_BATCH))]
    if rs.comments_query:
        query = rs.comments_query
        out.append(WindowedFlow(entity, f"{entity}.comments", rule, rs.initial_since, count=False,
                                read=lambda start, end: p.ps.read_window(query, start, end),
                                write=lambda rows: write_comments(p, entity, rows)))
    return out


def queued_source(p: Parts, kind: str, what: str) -> QueuedSource | None:
    """Where a queued row of ``kind`` is read again before a replay: its kind's query (or comments query)."""
    rs = p.cfg.peoplesoft.records[kind]
    query = rs.query if what == "record" else rs.comments_query
    if not query:
        return None
    reader = p.reader(kind) if what == "record" else p.ps

    def key(row: dict[str, Any]) -> str:
        k = natural_key(kind, row)
        return comment_key(k, str(row.get("COMMENT_ID"))) if what == "comment" else k

    return QueuedSource(read=lambda start, end: reader.read_window(query, start, end), key=key,
                        ts=lambda row, k: row_ts(kind, row, k))


# -- setup -------------------------------------------------------------------------------------------
def prepare(p: Parts) -> JiraTarget:
    """Resolve names in the configuration against Jira's metadata; any mismatch is a ConfigError."""
    if p.target is not None:
        return p.target
    # The vendor cache an earlier version kept in the state's header moves into the key map (once).
    flows.adopt_legacy_rows(p.ctx, "vendors", p.ctx.state.vendors)
    j = p.cfg.jira
    r = jira_target.resolve(
        p.jira, j.project, fields={name: (wanted, f"jira.fields.{name}") for name, wanted in j.fields.items()},
        key_field=j.key_field,
        issue_types={k: IssueTypeName(f"jira.issue_types.{k}", j.issue_types[k]) for k in p.kinds()},
        missing_project=f"jira.project = {j.project!r}: Jira has no such project visible to this user. Check the "
                        f"key (it is the prefix of the issue keys) and the user's Browse permission.",
        statuses=lambda kind: [(status, f"jira.status_map.{kind}.{code} = {status!r}")
                               for code, status in j.status_map.get(kind, {}).items()],
        type_hint=" Add it to the project's scheme or change the name.")
    p.target = JiraTarget(project=j.project, issue_type_ids=r.issue_type_ids, fields=r.fields,
                          key_field=r.key_field, labels=j.labels, status_map=j.status_map,
                          priority_by_amount=j.priority_by_amount, default_priority=j.default_priority)
    return p.target


# -- mapping and writing ----------------------------------------------------------------------------
def vendor_row(cfg: Config, row: dict[str, Any], stamped: bool) -> ReferenceRow:
    """A vendor master row as a reference row: keyed by vendor key, with its stamp when read by window."""
    key = natural_key("vendors", row)
    ts = iso(row_ts("vendors", row, key)) if stamped else None
    vk = vendor_key(*decode_key(key))
    assert vk is not None
    return ReferenceRow(key, vk, ts, vendor_from_row(row, cfg.peoplesoft.records["vendors"].columns))


def diff_vendor(p: Parts, row: dict[str, Any], *, stamped: bool) -> None:
    flows.diff_reference_row(p.ctx, p.vendors, row, lambda r: vendor_row(p.cfg, r, stamped), _row_id)


def vendor_master(p: Parts, query: str) -> Any:
    """The vendor master in full: QAS runs the query without prompts; a CI reader Finds everything, then
    Gets each vendor (rows without a stamp are kept)."""
    reader = p.reader("vendors")
    if hasattr(reader, "read_all"):
        return reader.read_all(query)
    return (rows for rows, _ in reader.read_window(query, EPOCH, p.ctx.now))


def stamped_vendors(p: Parts, query: str, rows: list[dict[str, Any]]) -> None:
    if rows and not any(STAMP in row for row in rows):
        raise RemoteError(
            f"Vendor query {query} returns no {STAMP} column, so it cannot be read by window "
            f"([peoplesoft.records.vendors] read = \"stamped\"). PS_VENDOR has no change stamp: set "
            f"read = \"full\" (the default) with a query that takes no prompts, like ML_VENDOR_ALL, "
            f"so the vendor master is read in full every full_read_every_hours and diffed; or add the "
            f"stamp to the query's view.", system="PeopleSoft", exit_code=EXIT_CONFIG)
    for row in rows:
        diff_vendor(p, row, stamped=True)


def _full_read_failed(query: str, exc: RemoteError) -> RemoteError:
    if exc.exit_code == EXIT_CONFIG:
        return exc
    return RemoteError(f"{exc.message} (The vendor master is read in full: [peoplesoft.records.vendors] "
                       f"read = \"full\" sends no prompts, so query {query} must take none; set "
                       f"read = \"stamped\" for a query that has BIND1/BIND2 date prompts.)",
                       system=exc.system, status=exc.status, raw=exc.raw)


def follows(cfg: Config, kind: str, rec: IssueWrite, row: dict[str, Any]) -> dict[str, Any]:
    """What an open document keeps in its key-map entry to be re-mapped when its vendor changes: its
    mapping's source inputs and the vendor it shows. A closed document drops them: it no longer follows
    its vendor."""
    cols = cfg.peoplesoft.records[kind].columns
    keep = rec.status_code not in CLOSED_STATUS.get(kind, frozenset())
    return {SOURCE: source_inputs(row, cols) if keep else None, VENDOR_REF: row_vendor(row, cols) if keep else None}


def write_records(p: Parts, kind: str, rows: list[dict[str, Any]]) -> set[str]:
    """Map and write a batch of rows of one kind; return the keys that were fully handled."""
    assert p.target is not None
    target = p.target
    mapped = flows.map_rows(p.ctx, kind, rows, lambda row: map_record(p.cfg, target, kind, row, p.vendor_facts),
                            lambda row: _row_id(row, kind))
    done = p.writer.write(kind, mapped.values())
    flows.keep_inputs(p.ctx, kind, mapped, done, lambda rec, row: follows(p.cfg, kind, rec, row))
    return done


def waiting(kind: str, c: MappedComment) -> str:
    return (f"Comment {c.comment_id} waits for {KINDS[kind]['title'].lower()} {c.parent_key} to reach Jira "
            f"(it is not synced yet); it is posted once the record is.")


def write_comments(p: Parts, kind: str, rows: list[dict[str, Any]]) -> set[str]:
    return p.comments.write(kind, rows, map_comment, lambda row: _row_id(row, kind, comment=True),
                            lambda c: waiting(kind, c))


def _row_id(row: dict[str, Any], kind: str = "vendors", *, comment: bool | None = None) -> str:
    """A stable name for a row whose key is unusable, so its queue entry is not duplicated. A comment row
    (``comment``; by default: a row with a COMMENT_ID column) is named by its own comment key, as the comment
    writer and the replay refresh name it, so two comments of one record never share a queue item; a digest
    of the row when its record key or COMMENT_ID is blank."""
    if comment is None:
        comment = "COMMENT_ID" in row

    def key(r: dict[str, Any]) -> str:
        parent = natural_key(kind, r)
        if not comment:
            return parent
        cid = r.get("COMMENT_ID")
        cid = cid.strip() if isinstance(cid, str) else cid
        if cid in (None, ""):
            raise RecordError("comment row without COMMENT_ID")  # named by a digest of the row instead
        return comment_key(parent, str(cid))

    return flows.row_id(row, key)


# -- reconcile (mlconnector/reconcile.py) ------------------------------------------------------------
MONEY = {"purchase_orders": "PO amount (PO_AMT)", "vouchers": "voucher gross (GROSS_AMT)"}


def reconcile_scope(steps: FlowPass) -> Any:
    """What `reconcile peoplesoft-jira` reads and maps, through this pass's own readers and mapping. The vendor
    master is read afresh (in full), so an issue showing vendor facts that changed in PeopleSoft since they were
    last synced counts as drifted; where vendors are not read, the facts the key map holds are used."""
    from mlconnector.mapping import record_amount
    from mlconnector.reconcile_types import Scope

    cfg, target = steps.cfg, steps.prepare()
    vendors = _fresh_vendors(steps)

    class Facts:
        def get(self, key: str, /) -> dict[str, Any] | None:
            return vendors.get(key) or steps.vendor_facts.get(key)

    facts = Facts()

    def rows(kind: str, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        for batch, _until in steps.reader(kind).read_window(cfg.peoplesoft.records[kind].query, start, end):
            yield batch

    def comment_rows(kind: str, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        query = cfg.peoplesoft.records[kind].comments_query
        if not query:
            return
        for batch, _until in steps.ps.read_window(query, start, end):
            yield batch

    amount = target.fields.get("amount")

    def plan(kind: str, rows: list[dict[str, Any]]) -> None:  # the pass is a planning pass: it writes nothing
        write_records(steps.parts, kind, rows)

    return Scope(kinds=steps.kinds(), initial_since=lambda kind: cfg.peoplesoft.records[kind].initial_since,
                 rows=rows, map=lambda kind, row: map_record(cfg, target, kind, row, facts),
                 row_key=lambda kind, row: _row_id(row, kind), kind_label=lambda kind: str(KINDS[kind]["label"]),
                 money={k: v for k, v in MONEY.items() if k in steps.kinds()},
                 amount=lambda kind, key, row: record_amount(cfg, kind, key, row),
                 amount_field=amount.id if amount is not None and amount.type == "number" else None,
                 field_names={f.id: name for name, f in target.fields.items()},
                 plan=plan, comment_rows=comment_rows, map_comment=map_comment,
                 # Read from the entity's initial_since, the query returns every record PeopleSoft still has: a
                 # linked record it does not return was deleted (or left the query's scope).
                 full_read=lambda kind, start: start <= cfg.peoplesoft.records[kind].initial_since)


def _fresh_vendors(steps: FlowPass) -> dict[str, dict[str, Any]]:
    """The vendor master as PeopleSoft has it now (vendor key -> facts); empty when vendors are not read."""
    rs = steps.cfg.peoplesoft.records["vendors"]
    if not rs.enabled:
        return {}
    reader = steps.reader("vendors")
    if rs.read == "full" and hasattr(reader, "read_all"):
        batches: Any = reader.read_all(rs.query)
    else:
        batches = (rows for rows, _ in reader.read_window(rs.query, EPOCH, steps.now))
    out: dict[str, dict[str, Any]] = {}
    for rows in batches:
        for row in rows:
            try:
                vk = vendor_key(*decode_key(natural_key("vendors", row)))
            except RecordError:
                continue
            if vk is not None:
                out[vk] = vendor_from_row(row, rs.columns)
    return out
