"""The one pass loop, written once for every pair: prepare -> settle pending writes -> per entity
(read windows -> map -> look up -> write -> save -> advance) -> auto-replay -> save.

A pair supplies its steps (``PassSteps``), usually by declaring its flows (sync/flows.py's ``PairFlows``,
run by ``FlowPass``, which holds the window, full-read, re-map and replay mechanics); the engine owns what
must not drift between pairs: how a failure is counted, redacted, audited and queued; which queued items a
pass retries on its own and when; how one entity's read failure spares the others; how a lost login or
network stops the pass with everything finished so far saved; and the result's exit code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from mlconnector.audit import Audit
from mlconnector.errors import EXIT_OK, EXIT_RECORDS_FAILED, AuthError, ConnectorError, RemoteError, UnreachableError
from mlconnector.state import State, iso, utcnow
from mlconnector.sync.xref import MissingReference

# A lost login or network stops the whole pass (every later request would fail the same way).
FATAL = (AuthError, UnreachableError)
class PassDeadline(ConnectorError):
    """The pass's own deadline came (``pass_deadline_minutes``): not a failure; the pass stops cleanly."""

    exit_code = EXIT_OK


# Queued items are retried automatically by this many passes, then left to `replay retry`.
AUTO_REPLAY_ATTEMPTS = 3

Progress = Callable[..., None]


def no_progress(*_: Any, **__: Any) -> None:
    return None


@dataclass
class Counts:
    """What a pass did to one entity (one row of the summary)."""

    read: int = 0
    remapped: int = 0  # mapped again from the state because reference data they show changed (not re-read)
    created: int = 0
    adopted: int = 0  # found on the target by handle (no link in the state) and linked, not created
    updated: int = 0
    unchanged: int = 0
    transitioned: int = 0
    commented: int = 0
    posted: int = 0  # changes written back to the source system (two-way pairs)
    failed: int = 0
    queued: int = 0
    replayed: int = 0


@dataclass
class PassResult:
    """The outcome of one pass or replay: counts per entity, failures, exit code. ``to_dict`` is --json."""

    pair: str
    dry_run: bool = False
    counts: dict[str, Counts] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)  # whole entities that could not be read or written
    fatal: str | None = None
    exit_code: int = EXIT_OK
    queue_size: int = 0
    seconds: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    # --plan / --dry-run: what the pass would do, per record (create, adopt, update with the fields that
    # differ, transition with its path, comment, post, wait, fail, conflict); empty on a real pass.
    plan: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None  # the pass deadline came: what finished is saved, the next pass goes on

    def kind(self, kind: str) -> Counts:
        return self.counts.setdefault(kind, Counts())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = {0: "ok", 1: "records_failed"}.get(self.exit_code, "error")
        if self.fatal:
            d["error"] = self.fatal  # same key as a pass that could not start
        return d


@dataclass
class PassContext:
    """What every step of one pass shares: the state, the audit trail, the result, the clock."""

    pair: str
    state: State
    audit: Audit
    dry_run: bool = False
    progress: Progress = no_progress
    now: datetime = field(default_factory=utcnow)
    result: PassResult = field(init=False)
    describe: Callable[[Exception], str] = str  # the message of a failure (a system may phrase its errors)
    deadline: float | None = None  # time.monotonic() after which the pass stops between two batches

    def __post_init__(self) -> None:
        self.result = PassResult(pair=self.pair, dry_run=self.dry_run)

    def check_deadline(self) -> None:
        """Stop the pass cleanly (between two batches, never inside a write) once its deadline has come."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise PassDeadline("The pass reached its deadline (pass_deadline_minutes) and stopped between two "
                               "batches; everything finished is saved and the next pass goes on from there.")

    def planned(self, kind: str, key: str, action: str, **detail: Any) -> None:
        """Note what a planning pass (--plan) would do to one record; nothing on a real pass."""
        if self.dry_run:
            self.result.plan.append({"kind": kind, "key": key, "action": action,
                                     **{k: v for k, v in detail.items() if v not in (None, "", [], {})}})

    def fail(self, kind: str, key: str, row: dict[str, Any], exc: Exception, *, what: str = "record") -> None:
        """Count, redact, audit and queue one failed record (or comment, or back-flow change)."""
        counts = self.result.kind(kind)
        counts.failed += 1
        # Remote answers can echo credentials (a proxy page quoting the Authorization header, say).
        redact = self.audit.redactor
        message = redact(self.describe(exc))
        raw = redact(getattr(exc, "raw", "") or "")
        self.result.failures.append({"kind": kind, "key": key, "what": what, "error": message})
        self.audit.write("failed", kind, key, what=what, error=message, raw=raw)
        if self.dry_run:
            self.planned(kind, key, "wait" if isinstance(exc, MissingReference) else "fail", what=what,
                         reason=message)
            return
        item = self.state.enqueue(kind, key, row, message, raw, what=what)
        # A record waiting for a reference mapping is retried by every pass until the mapping exists.
        item["waits"] = isinstance(exc, MissingReference)
        counts.queued += 1

    def kind_error(self, kind: str, exc: RemoteError) -> None:
        """One entity could not be read or written as a whole: report it; its watermark stays."""
        message = self.audit.redactor(exc.message)
        self.audit.write("kind_failed", kind, error=message, raw=self.audit.redactor(exc.raw or ""))
        self.result.errors.append({"kind": kind, "error": message})
        if self.result.fatal is None:
            self.result.fatal = message
            self.result.exit_code = exc.exit_code

    def auto_replay_items(self, kinds: Iterable[str]) -> list[dict[str, Any]]:
        """The queued items of these entities a pass retries on its own: fewer than AUTO_REPLAY_ATTEMPTS tries
        (or waiting for a reference mapping: every pass), none that failed during this pass (a pass does not
        try one item twice)."""
        wanted, started = set(kinds), iso(self.now)
        return [i for i in self.state.replay if i["kind"] in wanted and i.get("last_failed", "") < started
                and (i.get("waits") or i.get("attempts", 0) < AUTO_REPLAY_ATTEMPTS)]

    def replay(self, items: Iterable[dict[str, Any]], retry: Callable[[dict[str, Any]], None]) -> tuple[int, int]:
        """Retry queued items through the pair's normal write path; return (succeeded, still failing)."""
        ok = bad = 0
        for item in list(items):
            kind, what = item["kind"], item.get("what", "record")
            before = len(self.result.failures)
            retry(item)
            if len(self.result.failures) == before and self.state.find_replay(item["id"]) is None:
                ok += 1
                self.result.kind(kind).replayed += 1
                self.audit.write("replayed", kind, item["key"], what=what)
            else:
                bad += 1
        return ok, bad


class PassSteps(Protocol):
    """A pair's side of a pass. ``sync_entity`` reads its windows, maps, writes and advances; a RemoteError
    it raises spares the other entities; an AuthError or UnreachableError stops the pass."""

    ctx: PassContext

    def prepare(self) -> None: ...
    def resolve_pending(self) -> None: ...
    def entities(self) -> list[str]: ...
    def blocked(self, entity: str) -> str | None: ...  # why this entity must wait this pass, or None
    def sync_entity(self, entity: str, since: datetime | None) -> None: ...
    def replay_kinds(self) -> list[str]: ...
    def retry(self, item: dict[str, Any]) -> None: ...
    def requests(self) -> dict[str, int]: ...


def run_pass(steps: PassSteps, since: datetime | None = None) -> PassResult:
    """One pass of a pair. Everything finished is saved whatever stops it."""
    ctx = steps.ctx
    started = time.monotonic()
    try:
        steps.prepare()
        steps.resolve_pending()
        for entity in steps.entities():
            ctx.check_deadline()
            ctx.progress("kind", kind=entity)
            reason = steps.blocked(entity)
            if reason:
                ctx.result.errors.append({"kind": entity, "error": f"skipped: {reason}"})
                continue
            try:
                steps.sync_entity(entity, since)
            except FATAL:
                raise
            except RemoteError as exc:
                ctx.kind_error(entity, exc)
        if not ctx.dry_run:
            # After the fresh read: a row fixed at the source has already replaced its queued copy.
            items = ctx.auto_replay_items(steps.replay_kinds())
            if items:
                ctx.check_deadline()
                ctx.replay(items, steps.retry)
    except PassDeadline as exc:
        ctx.result.stopped = exc.message
        ctx.audit.write("pass_stopped", error=exc.message)
    except FATAL as exc:
        ctx.result.fatal = ctx.audit.redactor(exc.message)
        ctx.result.exit_code = exc.exit_code
        ctx.audit.write("pass_aborted", error=exc.message)
    finally:
        finish(steps, started)
    return ctx.result


def run_replay(steps: PassSteps, items: list[dict[str, Any]], before: Callable[[], None] | None = None,
               ) -> tuple[PassResult, int, int]:
    """``replay retry``: the named queued items through the same path as a pass; (result, ok, still failing)."""
    ctx = steps.ctx
    started = time.monotonic()
    ok, bad = 0, len(items)
    try:
        steps.prepare()
        # As at the start of a pass: a create left pending (say, answered after the timeout) is looked up
        # before anything is created again.
        steps.resolve_pending()
        if before is not None:
            before()
        ok, bad = ctx.replay(items, steps.retry)
    except FATAL as exc:
        ctx.result.fatal = ctx.audit.redactor(exc.message)
        ctx.result.exit_code = exc.exit_code
    finally:
        finish(steps, started)
    if ctx.result.fatal is None:
        ctx.result.exit_code = EXIT_RECORDS_FAILED if bad else EXIT_OK
    return ctx.result, ok, bad


def finish(steps: PassSteps, started: float) -> None:
    ctx = steps.ctx
    if not ctx.dry_run and (ctx.state.dirty or ctx.state.watermarks_moved):
        ctx.state.save()
    ctx.result.seconds = round(time.monotonic() - started, 3)
    ctx.result.queue_size = len(ctx.state.replay)
    ctx.result.requests = steps.requests()
    if ctx.result.fatal is None:
        failed = any(c.failed for c in ctx.result.counts.values())
        ctx.result.exit_code = EXIT_RECORDS_FAILED if failed else EXIT_OK
