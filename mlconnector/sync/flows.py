"""Flows declared as data, and the functions that run them: the mechanics every pair shares.

A pair declares, per entity of a pass, the flows that carry it (``WindowedFlow``: a source read by
window; ``FullReadFlow``: a reference table read in full on a cadence; ``StepFlow``: a step of its
own, like a back-flow) and how queued items are retried (``routes``, by kind and what). ``FlowPass``
turns such a declaration into the engine's ``PassSteps``; the engine's ``run_pass`` and
``run_replay`` drive it. The rules here are written once for every pair:

- **Windows.** A window starts where window.py's rule says (watermark less the overlap,
  ``initial_since`` or ``--since``); each batch is counted, mapped and written, the state is saved,
  and only then does the watermark move. A dry run moves nothing.
- **Reference data.** A full read is skipped between two cadence points (no request at all), releases
  the parsed key-map entries every ``release_every`` rows, and marks its time only after the whole
  table was diffed. Rows are diffed into the key map by content hash; a changed row marks the
  documents that show it (reference.py), which are re-mapped from the state after their own window.
- **Mapping a batch.** A row that cannot be mapped is queued with its reason; of two versions of one
  record in a batch the newer is written.
- **Replay.** A queued item goes back through the flow that failed it (``routes``); before
  `replay retry`, queued rows are swapped for their current version at the source, so a fix made
  there is what is sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from mlconnector.errors import RecordError, RemoteError
from mlconnector.state import iso
from mlconnector.sync import reference
from mlconnector.sync.engine import PassContext, PassResult, run_pass
from mlconnector.sync.reference import SOURCE, FullRead, ReferenceStore
from mlconnector.sync.window import WindowRule

Row = dict[str, Any]
Item = dict[str, Any]  # a replay-queue item
# A batch of rows and how far the read it came from reaches (None: as far as the batch's newest record).
Batch = tuple[list[Row], datetime | None]


class Mapped(Protocol):
    """What a pair's mapping function returns, as far as the engine looks: the record's key and stamp."""

    @property
    def key(self) -> str: ...
    @property
    def ts(self) -> datetime: ...


# -- declarations ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowedFlow:
    """One source read by window into one entity.

    ``read(start, end)`` yields batches ``(rows, until)``; ``write(rows)`` maps and writes one batch and may
    return the newest record time it saw, which is where the watermark moves when the batch's ``until`` is
    None (a source whose reads are not bounded by the window's end, like a JDE browse). ``count`` says
    whether the rows count as the entity's reads (not for comments, counted as they are posted). ``after``
    runs once the whole window is written (the re-map of documents whose reference data changed).
    """

    entity: str
    watermark: str
    rule: WindowRule
    initial_since: datetime
    read: Callable[[datetime, datetime], Iterable[Batch]]
    write: Callable[[list[Row]], Any]
    after: Callable[[], None] | None = None
    count: bool = True


@dataclass(frozen=True)
class FullReadFlow:
    """A reference table without a change stamp, read in full at most once per ``every`` (zero: every
    pass; ``--since`` forces it). ``read_all()`` yields batches of rows, ``row(row)`` diffs one into the key
    map (see ``diff_reference_row``); ``explain`` may rephrase a read failure for the admin."""

    entity: str
    every: timedelta
    read_all: Callable[[], Iterable[list[Row]]]
    row: Callable[[Row], None]
    explain: Callable[[RemoteError], RemoteError] | None = None
    release_every: int = 5000  # rows diffed between two releases of the parsed key-map entries


@dataclass(frozen=True)
class StepFlow:
    """A step of the pair's own (a back-flow into the source, say): ``run(since)``."""

    entity: str
    run: Callable[[datetime | None], None]


Flow = WindowedFlow | FullReadFlow | StepFlow


@dataclass(frozen=True)
class ReferenceRow:
    """One reference row, parsed by the pair's mapping: the key its queue item has, the key it is stored
    under, its stamp (None when read in full) and the facts documents show."""

    queue_key: str
    key: str
    ts: str | None
    facts: dict[str, Any]


@dataclass(frozen=True)
class QueuedSource:
    """Where queued rows of one (kind, what) are read again before a replay: ``read(start, end)`` yields
    batches like a window read; ``key(row)`` is the queue key of a row and ``ts(row, key)`` its stamp (both
    raise RecordError for a row that cannot be keyed)."""

    read: Callable[[datetime, datetime], Iterable[tuple[list[Row], Any]]]
    key: Callable[[Row], str]
    ts: Callable[[Row, str], datetime]


@dataclass
class PairFlows:
    """A pair's pass, declared. ``setup`` resolves the configuration against the target (names to ids) and
    returns what mapping needs; ``entities`` are the pass's entities in order (reference data first);
    ``flows(entity)`` the flows that carry one; ``settle`` the steps that settle writes a killed pass left
    pending, run before anything is written; ``routes`` the retry of a queued item by (kind, what), "*"
    matching any; ``refresh`` where queued rows are read again before a replay (None: as queued);
    ``blocked(entity)`` why an entity must wait this pass; ``requests`` the request counters per system."""

    setup: Callable[[], Any]
    entities: Callable[[], list[str]]
    flows: Callable[[str], list[Flow]]
    replay_kinds: Callable[[], list[str]]
    routes: Mapping[tuple[str, str], Callable[[Item], None]]
    requests: Callable[[], dict[str, int]]
    settle: list[Callable[[], None]] = field(default_factory=list)
    blocked: Callable[[str], str | None] = lambda _entity: None
    refresh: Callable[[str, str], QueuedSource | None] | None = None
    overlap: timedelta = timedelta(0)  # read before the oldest queued row's stamp when refreshing


# -- the pass ----------------------------------------------------------------------------------------
class FlowPass:
    """The engine's ``PassSteps`` for a declared pair: runs each entity's flows in order and routes queued
    items. ``parts`` is the pair's own bundle (its clients, writers and configuration); its attributes are
    readable on the pass itself (``steps.jira``, ``steps.writer``), which is what reconcile and the CLI use."""

    def __init__(self, ctx: PassContext, decl: PairFlows, parts: Any) -> None:
        self.ctx = ctx
        self.decl = decl
        self.parts = parts
        self.result = ctx.result
        self.now = ctx.now
        self._target: Any = None

    def __getattr__(self, name: str) -> Any:
        if name in ("parts", "decl", "ctx"):  # not set yet (during construction): no delegation loop
            raise AttributeError(name)
        return getattr(self.parts, name)

    # the engine's steps
    def run(self, since: datetime | None = None) -> PassResult:
        return run_pass(self, since)

    def prepare(self) -> Any:
        if self._target is None:
            self._target = self.decl.setup()
        return self._target

    def resolve_pending(self) -> None:
        for step in self.decl.settle:
            step()

    def entities(self) -> list[str]:
        return self.decl.entities()

    def blocked(self, entity: str) -> str | None:
        return self.decl.blocked(entity)

    def sync_entity(self, entity: str, since: datetime | None) -> None:
        for flow in self.decl.flows(entity):
            run_flow(self.ctx, flow, since)

    def replay_kinds(self) -> list[str]:
        return self.decl.replay_kinds()

    def retry(self, item: Item) -> None:
        route(self.decl.routes, item)(item)

    def requests(self) -> dict[str, int]:
        return self.decl.requests()

    def refresh_items(self, items: list[Item]) -> int:
        """Swap queued rows for their current version at the source; how many were replaced."""
        if self.decl.refresh is None:
            return 0
        return refresh_queued(items, self.decl.refresh, self.decl.overlap, self.now)


def before_replay(steps: FlowPass, items: list[Item]) -> None:
    """Run before `replay retry`: queued rows are read again at the source, so a fix made there is sent. A
    source that cannot be read leaves the rows as they were queued."""
    try:
        steps.refresh_items(items)
    except RemoteError as exc:
        steps.ctx.audit.write("refresh_failed", error=steps.ctx.audit.redactor(exc.message))


def route(routes: Mapping[tuple[str, str], Callable[[Item], None]], item: Item) -> Callable[[Item], None]:
    """The retry of a queued item: the most specific of (kind, what), (kind, "*"), ("*", what), ("*", "*")."""
    kind, what = item["kind"], item.get("what", "record")
    for k in ((kind, what), (kind, "*"), ("*", what), ("*", "*")):
        if k in routes:
            return routes[k]
    raise KeyError(f"no replay route for {kind} ({what})")


def run_flow(ctx: PassContext, flow: Flow, since: datetime | None) -> None:
    if isinstance(flow, WindowedFlow):
        run_windowed(ctx, flow, since)
    elif isinstance(flow, FullReadFlow):
        run_full_read(ctx, flow, since)
    else:
        flow.run(since)


# -- windows -----------------------------------------------------------------------------------------
def advance(ctx: PassContext, rule: WindowRule, name: str, until: datetime, since: datetime | None) -> None:
    """Move a watermark after saving what it covers (never on a dry run)."""
    if not ctx.dry_run and rule.advance(ctx.state, name, until, since):
        ctx.state.watermarks_moved = True


def run_windowed(ctx: PassContext, flow: WindowedFlow, since: datetime | None) -> None:
    """Read the flow's window batch by batch: count, map and write, save, then advance."""
    start = flow.rule.start(ctx.state, flow.watermark, flow.initial_since, since)
    for rows, until in flow.read(start, ctx.now):
        if flow.count:
            ctx.result.kind(flow.entity).read += len(rows)
            ctx.progress("read", kind=flow.entity, n=len(rows))
        newest = flow.write(rows)
        mark = until if until is not None else newest if isinstance(newest, datetime) else None
        if mark is not None:
            advance(ctx, flow.rule, flow.watermark, mark, since)
    if flow.after is not None:
        flow.after()


def map_rows(ctx: PassContext, kind: str, rows: Iterable[Row], map_row: Callable[[Row], Mapped],
             row_id: Callable[[Row], str]) -> dict[str, tuple[Any, Row]]:
    """Map a batch: key -> (record, row), the newest version of each record; a row that cannot be mapped
    is queued under ``row_id(row)`` with its reason."""
    mapped: dict[str, tuple[Any, Row]] = {}
    for row in rows:
        try:
            rec = map_row(row)
        except RecordError as exc:
            ctx.fail(kind, row_id(row), row, exc)
            continue
        prev = mapped.get(rec.key)
        if prev is None or rec.ts >= prev[0].ts:
            mapped[rec.key] = (rec, row)
    return mapped


def newest(mapped: Mapping[str, tuple[Any, Row]]) -> datetime | None:
    """The newest record time of a mapped batch (where a window without its own end advances to)."""
    return max((rec.ts for rec, _row in mapped.values()), default=None)


def row_id(row: Row, key: Callable[[Row], str]) -> str:
    """A stable name for a row: its key, or for a row whose key is unusable a digest of the row, so its
    queue item is not duplicated."""
    try:
        return key(row)
    except RecordError:
        blob = json.dumps(row, sort_keys=True, default=str)
        return "invalid-row-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


# -- reference data ----------------------------------------------------------------------------------
def run_full_read(ctx: PassContext, flow: FullReadFlow, since: datetime | None) -> None:
    """Read a reference table in full when its cadence comes round, diffing each row."""
    rule = FullRead(flow.every)
    if not rule.due(ctx.state, flow.entity, ctx.now, forced=since is not None):
        return  # between two full reads: no request at all
    seen = 0
    try:
        for rows in flow.read_all():
            for row in rows:
                flow.row(row)
                seen += 1
                if seen % flow.release_every == 0:
                    ctx.state.release(can_save=not ctx.dry_run)  # memory stays flat over 50,000 rows
    except RemoteError as exc:
        if flow.explain is None:
            raise
        raise flow.explain(exc) from None
    if not ctx.dry_run:
        rule.done(ctx.state, flow.entity, ctx.now)


def diff_reference_row(ctx: PassContext, store: ReferenceStore, row: Row, parse: Callable[[Row], ReferenceRow],
                       row_id: Callable[[Row], str]) -> None:
    """Diff one reference row into the key map: stored (and its documents marked) only when its content
    changed; a row older than the stored one is skipped; a row that cannot be parsed is queued."""
    kind = store.kind
    counts = ctx.result.kind(kind)
    counts.read += 1
    try:
        ref = parse(row)
    except RecordError as exc:
        ctx.fail(kind, row_id(row), row, exc)
        return
    if ref.ts is not None and store.older(ref.key, ref.ts):
        counts.unchanged += 1
        return
    if ctx.dry_run:
        entry = ctx.state.entry(kind, ref.key)
        changed = entry is None or entry.get("hash") != reference.digest(ref.facts)
    else:
        changed = store.store(ref.key, ref.facts, ref.ts)
        ctx.state.dequeue(kind, ref.queue_key)
    if changed:
        counts.updated += 1
    else:
        counts.unchanged += 1


def replay_reference_row(ctx: PassContext, store: ReferenceStore, item: Item,
                         parse: Callable[[Row], ReferenceRow]) -> None:
    """Retry a queued reference row: stored unless a newer version is already there, then dequeued."""
    row = item["row"]
    try:
        ref = parse(row)
    except RecordError as exc:
        ctx.fail(store.kind, item["key"], row, exc)
        return
    if ref.ts is None or not store.older(ref.key, ref.ts):
        store.store(ref.key, ref.facts, ref.ts)
    ctx.state.dequeue(store.kind, item["key"])


def adopt_legacy_rows(ctx: PassContext, kind: str, legacy: dict[str, dict[str, Any]]) -> None:
    """Move reference rows an earlier version kept outside the key map (``{key: {**facts, "ts": stamp}}``)
    into it, once; the legacy copy is emptied."""
    if not legacy or ctx.dry_run:
        return
    store = ReferenceStore(ctx.state, kind)
    for key, cached in legacy.items():
        store.store(key, {k: v for k, v in cached.items() if k != "ts"}, cached.get("ts") or None)
    legacy.clear()
    ctx.state.dirty = True


def keep_inputs(ctx: PassContext, kind: str, mapped: Mapping[str, tuple[Any, Row]], done: Iterable[str],
                inputs: Callable[[Any, Row], dict[str, Any]], linked: str = "issue") -> None:
    """Keep, in the key-map entry of each document just written, the fields ``inputs(record, row)`` names
    (its mapped source inputs, the reference rows it shows; None drops a field), so a reference change
    re-maps it without reading the source again. Only entries that hold the version just written (and a
    target id under ``linked``) change."""
    if ctx.dry_run:
        return
    state = ctx.state
    for key in done:
        rec, row = mapped[key]
        entry = state.entry(kind, key)
        if entry is None or not entry.get(linked) or entry.get("ts") != iso(rec.ts):
            continue  # not written (or an older version than the one written): its entry stays as it is
        for name, value in inputs(rec, row).items():
            if value is None and name in entry:
                del entry[name]
                state.dirty = True
            elif value is not None and entry.get(name) != value:
                entry[name] = value
                state.dirty = True


def refresh_dependents(ctx: PassContext, kind: str, source_row: Callable[[str, dict[str, Any], str], Row],
                       write: Callable[[list[Row]], Any], batch: int = 500) -> None:
    """Re-map, from their key-map entries, the open documents of ``kind`` whose reference rows changed and
    write them (the sink edits only where content differs); then forget the marks handled. A pass stopped
    before the marks are cleared leaves them on disk: the next pass does the re-map again."""
    state = ctx.state
    refs = reference.marked(state, kind)
    if not refs:
        return
    keys = reference.dependents(state, kind, refs)
    counts = ctx.result.kind(kind)
    for i in range(0, len(keys), batch):
        rows = []
        for key in keys[i:i + batch]:
            entry = state.entry(kind, key)
            if entry is None or not isinstance(entry.get(SOURCE), dict) or not entry.get("ts"):
                continue
            rows.append(source_row(key, entry[SOURCE], entry["ts"]))
        counts.remapped += len(rows)
        ctx.progress("read", kind=kind, n=len(rows))
        write(rows)
    if not ctx.dry_run:
        reference.clear(state, kind, refs)
        state.save()


# -- replay --------------------------------------------------------------------------------------------
def refresh_queued(items: list[Item], source: Callable[[str, str], QueuedSource | None], overlap: timedelta,
                   now: datetime) -> int:
    """Swap queued rows for their current version at the source: for each (kind, what), the window from the
    oldest queued row (less ``overlap``) to now is read once. Returns how many rows were replaced."""
    groups: dict[tuple[str, str], dict[str, Item]] = {}
    for item in items:
        groups.setdefault((item["kind"], item.get("what", "record")), {})[item["key"]] = item
    replaced = 0
    for (kind, what), wanted in groups.items():
        src = source(kind, what)
        if src is None:
            continue
        stamps = []
        for item in wanted.values():
            try:
                stamps.append(src.ts(item["row"], item["key"]))
            except RecordError:
                continue
        if not stamps:
            continue
        best: dict[str, tuple[datetime, Row]] = {}
        for rows, _ in src.read(min(stamps) - overlap, now):
            for row in rows:
                try:
                    key = src.key(row)
                    ts = src.ts(row, key)
                except RecordError:
                    continue
                if key in wanted and (key not in best or ts >= best[key][0]):
                    best[key] = (ts, row)
        for key, (_, row) in best.items():
            if row != wanted[key]["row"]:
                wanted[key]["row"] = row
                replaced += 1
    return replaced
