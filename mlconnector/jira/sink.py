"""Writing mapped ERP records to Jira issues, idempotently. Shared by every pair that creates issues.

Crash safety lives here (the rules are in sync/links.py):
- Every create is preceded by a lookup of the record's handle (its label; one JQL search per 50
  labels): a lost, old or copied state file leads to adoption, never to a second issue. An issue found
  by label is adopted only when its ``mlconnector.key`` property (written at create) names the same
  record; otherwise the record is queued as a conflict and the issue is left alone.
- Before a create, the key-map entry is saved as pending, with the label and the time of the mark. A
  pending entry is resolved at the start of the next pass by a label search; because Jira's search
  lags its writes, an absence counts only when the search was issued ``settle_seconds`` after the
  mark (the pass waits out the rest), so a pass killed between the create and the save, and rerun at
  once, never creates the issue twice.
- After a create whose answer was lost (reset, timeout, 5xx), issues Jira already shows are adopted
  and the rest stay pending (the mark renewed) and queued: Jira may still be working on the request,
  so nothing is sent again in the same pass.
- Edits and transitions are idempotent in effect (an edit sets the same fields; a transition checks
  the current status when its answer was lost), so repeating them after a crash is harmless.
- The hops an issue still needs after its create (its status is several steps from the start status)
  are owed: recorded on disk (state.extra, with the issue and the status wanted) before ``write``
  returns, so a window's watermark may move while they still run in the background. Inside
  ``overlapping`` the next window is read and created meanwhile; a later write of the same key waits
  for them first; the window loop ends (and ``finish``, ``resolve_pending``) only once all are done. A
  pass killed with hops owed leaves them on disk: the next pass's ``resolve_pending`` finishes them
  from the issue's current status (a GET of the issue, never a lagging search), so each is taken once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlconnector.audit import Audit
from mlconnector.errors import AmbiguousWriteError, ConnectorError, RecordError, RemoteError
from mlconnector.jira.adf import plain_text
from mlconnector.jira.client import JiraClient
from mlconnector.state import State, iso, utcnow
from mlconnector.sync.engine import FATAL, Counts, PassContext
from mlconnector.sync.keys import decode_key, display_key
from mlconnector.sync.links import Settler, conflicts_with, mark_pending, pending_since

LABELS_PER_SEARCH = 50
RAMP = 2  # issues in the first bulk create of a page; each next one is this many bigger, up to bulk_size
PROBES = 3  # records created one at a time to learn the start status and its transitions, at most
KEY_PROPERTY = "mlconnector.key"  # issue property naming the record in full: {"entity": kind, "key": [parts]}
# state.extra[OWED]: {kind: {key: {"issue": issue key, "to": Jira status wanted, "code": source status code}}},
# the hops still owed to issues created by a pass (see the module docstring).
OWED = "jira.owed_hops"
# Owed hops in flight at most; past it, write() waits for some before creating more (memory stays bounded).
OWED_IN_FLIGHT = 4000


@dataclass(frozen=True)
class IssueWrite:
    """One record as its Jira issue should be: what pairs' mapping functions return and the writer writes.

    ``key`` is the record's encoded key (sync/keys.py) and ``label`` its handle; ``create_fields`` holds a
    ``summary`` that starts with the record's title and shown key (``Purchase order US001/PO 7: ...``);
    ``hash`` covers
    ``edit_fields``, so an unchanged record costs no request; ``target_status`` is the Jira status the
    source status ``status_code`` maps to (None: leave the status alone).
    """

    kind: str
    key: str
    ts: datetime
    status_code: str
    target_status: str | None
    create_fields: dict[str, Any]
    edit_fields: dict[str, Any]
    hash: str
    label: str
    # The label an earlier version gave this record, where it differs from ``label`` (keys that do not
    # sanitise losslessly): searched too before a create, and adopted only when the summary names the record.
    legacy_label: str = ""


Item = tuple[IssueWrite, dict[str, Any]]  # (mapped record, source row)
Job = tuple[IssueWrite, dict[str, Any], dict[str, Any]]  # (mapped record, source row, key-map entry)
Fail = Callable[[str, str, dict[str, Any], Exception], None]
Prepared = tuple[IssueWrite, dict[str, Any], dict[str, Any], bool]  # (record, row, create payload, lands in status)


def jql_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class IssueWriter:
    """Writes the mapped records of one pass to Jira issues (see the module docstring for the safety rules).

    Contract: ``write`` returns the keys whose issue now matches the record (created or adopted, edited,
    in its mapped status) or, inside ``overlapping``, whose remaining hops are owed on disk; every other
    record went to ``fail`` (queued) or stays pending for the next pass. No issue is created without a
    label lookup first and a pending mark on disk; at most ``max_bulk_creates`` bulk creates and
    ``max_workers`` edits/transitions (plus ``max_workers`` owed hops) are in flight at once. No owed hop
    outlives ``overlapping``, ``drain``, ``finish`` or ``resolve_pending``; a write of a key waits for its
    owed hops before it looks at the key.
    """

    jira: JiraClient
    state: State
    audit: Audit
    counts: Callable[[str], Counts]  # kind -> the pass's counters for that kind
    fail: Fail  # the pass's failure handler: counts, redacts, queues for replay
    project: str
    issue_type_id: Callable[[str], str]
    bulk_size: int = 50
    max_workers: int = 4  # edits and transitions in flight (and label searches)
    max_bulk_creates: int = 16  # bulk creates in flight, beside them
    dry_run: bool = False
    settle_seconds: float = 15.0
    plan: Callable[..., None] = lambda *a, **k: None  # the pass's planner (PassContext.planned)
    check_deadline: Callable[[], None] = lambda: None  # raises PassDeadline between two batches
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    # issue type id -> (start status, {target status lower: transition id}), learned once per pass
    _start: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    # created this pass and not yet in their mapped status -> the status they were created in
    _fresh: dict[tuple[str, str], str] = field(default_factory=dict)
    _hop_to: dict[str, str] = field(default_factory=dict)  # transition id carried by a create -> its status
    # Chunks in flight renew their pending marks and save from their worker threads: one at a time.
    _save_lock: threading.Lock = field(default_factory=threading.Lock)
    # Group commit of renewed marks (see _durable): one saver at a time; renewals counted, and how many
    # of them the last finished save covered.
    _disk_lock: threading.Lock = field(default_factory=threading.Lock)
    _renewed: int = 0
    _saved: int = 0
    # Owed hops (see the module docstring): True inside overlapping(), where they may outlive write().
    overlap: bool = False
    _hop_pool: ThreadPoolExecutor | None = None
    _owed: dict[Future[Any], tuple[str, IssueWrite, dict[str, Any], str]] = field(default_factory=dict)
    _owed_keys: dict[tuple[str, str], Future[Any]] = field(default_factory=dict)
    _owed_fatal: Exception | None = None

    def __post_init__(self) -> None:
        # Bulk creates, edits and transitions, and owed hops in flight at once, each on its own connection.
        allow = getattr(self.jira, "allow_connections", None)
        if allow is not None:
            allow(self.max_bulk_creates + 2 * self.max_workers + 1)

    @classmethod
    def for_pass(cls, ctx: PassContext, jira: JiraClient, settings: Any, project: str,
                 issue_type_id: Callable[[str], str]) -> IssueWriter:
        """The writer of one pass: counts and failures go to the pass's context; ``settings`` is [jira]."""
        return cls(jira, ctx.state, ctx.audit, counts=ctx.result.kind, fail=ctx.fail, project=project,
                   issue_type_id=issue_type_id, bulk_size=settings.bulk_size, max_workers=settings.max_workers,
                   max_bulk_creates=settings.max_bulk_creates,
                   dry_run=ctx.dry_run, settle_seconds=settings.settle_seconds, plan=ctx.planned,
                   check_deadline=ctx.check_deadline)

    # -- entry point -------------------------------------------------------------------------------
    def write(self, kind: str, items: Iterable[Item]) -> set[str]:
        """Create, update or transition the issues of these records; return the keys fully handled."""
        items = list(items)
        # A key whose hops are still owed is looked at only once they are done (or failed, and queued).
        self._settle_owed(kind, {rec.key for rec, _ in items})
        # Entries of earlier batches are on disk and nobody holds them any more: memory stays flat.
        self.state.release(can_save=not self.dry_run)
        self.check_deadline()  # between two batches: the previous one is saved, this one not started
        counts = self.counts(kind)
        creates: list[Item] = []
        jobs: list[Job] = []
        done: set[str] = set()
        for rec, row in sorted(items, key=lambda p: p[0].ts):
            self.audit.write("read", kind, rec.key, ts=iso(rec.ts))
            entry = self.state.entry(kind, rec.key)
            if entry is None or not entry.get("issue"):
                creates.append((rec, row))
                continue
            if entry.get("ts") and iso(rec.ts) < entry["ts"]:
                # An older version than the one already written (a replayed row, an overlap): skip it.
                counts.unchanged += 1
                done.add(rec.key)
                self.state.dequeue(kind, rec.key)
                continue
            if entry.get("hash") == rec.hash and not self._needs_transition(entry, rec):
                counts.unchanged += 1
                if not self.dry_run and (entry.get("ts") != iso(rec.ts) or entry.get("status") != rec.status_code):
                    entry["ts"], entry["status"] = iso(rec.ts), rec.status_code
                    self.state.dirty = True
                done.add(rec.key)
                self.state.dequeue(kind, rec.key)
                continue
            jobs.append((rec, row, entry))
        creates = self._adopt_existing(kind, creates, jobs, done)
        if self.dry_run:
            counts.created += len(creates)
            for rec, _row in creates:
                self.plan(kind, rec.key, "create", label=rec.label, status=rec.target_status)
            for rec, _row, entry in jobs:
                counts.updated += entry.get("hash") != rec.hash
                counts.transitioned += self._needs_transition(entry, rec)
                self.plan(kind, rec.key, "update", **self._planned_change(kind, rec, entry))
            return done
        return done | self.write_all(kind, creates, jobs)

    def _planned_change(self, kind: str, rec: IssueWrite, entry: dict[str, Any]) -> dict[str, Any]:
        """For --plan: the issue's fields that differ from the mapped ones, and the transition path (a read)."""
        out: dict[str, Any] = {"issue": entry["issue"]}
        wanted = rec.edit_fields if entry.get("hash") != rec.hash else {}
        issue = self.jira.get_issue(entry["issue"], ",".join(["status", *wanted])) or {}
        fields = issue.get("fields") or {}
        out["fields"] = sorted(f for f, v in wanted.items() if _comparable(fields.get(f)) != _comparable(v))
        if self._needs_transition(entry, rec) and rec.target_status:
            current = str((fields.get("status") or {}).get("name") or "")
            if current.lower() != rec.target_status.lower():
                graph = self.jira.workflow_graph(self.project, self.issue_type_id(kind)) or \
                    self.jira.graph(self.project, self.issue_type_id(kind))
                hops = graph.path(current, rec.target_status) if current else None
                out["transition"] = " -> ".join([current, *[e.to for e in hops]]) if hops else \
                    f"{current or '?'} -> {rec.target_status} (path found when the pass runs)"
        return out

    @staticmethod
    def _needs_transition(entry: dict[str, Any], rec: IssueWrite) -> bool:
        return entry.get("status") != rec.status_code and rec.target_status is not None

    # -- creates, edits and transitions: one pipeline ----------------------------------------------
    def write_all(self, kind: str, creates: list[Item], jobs: list[Job]) -> set[str]:
        """Create issues for ``creates`` (bulk, pending marks first) and run the edits and transitions of
        ``jobs``; return the keys fully handled. Failures are queued; a fatal error is raised once the requests
        in flight have answered (the pending marks stay; the next pass resolves them).

        Pipelined: up to ``max_bulk_creates`` bulk creates are in flight while up to ``max_workers`` edits
        and transitions run beside them, and the remaining hops of a chunk's issues start as soon as its bulk
        create has answered rather than after every create. A bulk create is slow (Jira's work per issue) but
        one request; the hops are quick but one request each, so the rate limit binds only when both run at
        once. Answers are applied on this thread, under the save lock: chunks in flight renew and save their
        pending marks from their own threads."""
        done: set[str] = set()
        if not creates and not jobs:
            return done
        moving = [entry for rec, _row, entry in jobs if self._needs_transition(entry, rec)]
        if any(entry.get("status") is not None for entry in moving):
            # Until Jira answers, the status is unknown. Left as it was, a pass killed after Jira moved the
            # issue would keep the old status on disk; were the source to return to it, nothing would move
            # the issue back. Unknown (None) makes the next pass look at Jira's status first.
            for entry in moving:
                entry["status"] = None
            self.state.dirty = True
        now = self.clock()
        for rec, _ in creates:
            self.state.set_entry(kind, rec.key, mark_pending({"label": rec.label, "hash": rec.hash,
                                                              "ts": iso(rec.ts), "status": None}, now))
        if self.state.dirty:
            self.state.save()  # the pending marks must be on disk before Jira can act on any create
        type_id = self.issue_type_id(kind)
        fatal: Exception | None = None
        futures: dict[Future[Any], tuple[str, Any]] = {}
        owed: list[str] = []  # keys created by this call whose remaining hops are owed
        with ThreadPoolExecutor(max_workers=self.max_bulk_creates) as create_pool, \
                ThreadPoolExecutor(max_workers=self.max_workers) as job_pool:

            def start_jobs(batch: list[Job]) -> None:
                for job in batch:
                    futures[job_pool.submit(self._work, kind, type_id, job)] = ("job", job)

            def finish_chunk(items: list[Prepared], outcome: Any) -> list[Job]:
                """Apply a chunk's answer; return its issues that still owe hops (see ``owe``)."""
                nonlocal fatal
                created, err = self._chunk_outcome(kind, items, outcome)
                fatal = fatal or err
                follow: list[Job] = []
                for rec, row, _, _ in items:
                    entry = self.state.entry(kind, rec.key)
                    if rec.key not in created or entry is None:
                        continue
                    if entry.get("status") == rec.status_code or not rec.target_status:
                        # Created in its mapped status already: nothing left to send for it.
                        entry["status"] = rec.status_code
                        done.add(rec.key)
                        self.state.dequeue(kind, rec.key)
                    else:
                        follow.append((rec, row, entry))
                return follow if fatal is None else []

            def owe(batch: list[Job]) -> None:
                for rec, row, entry in batch:
                    self._owe(kind, type_id, rec, row, entry)
                    owed.append(rec.key)

            try:
                start_jobs(jobs)  # edits and transitions of issues that exist need no create to wait for
                rest = creates
                tries = 0
                while rest and type_id not in self._start and tries < PROBES and fatal is None and \
                        any(rec.target_status for rec, _ in rest):
                    # Transition ids are per workflow: learn them from one issue created first (a bulk create of
                    # one, answered in moments), then every later create carries its transition and lands in
                    # the mapped status, or one hop nearer it, in the same request.
                    tries += 1
                    items = self._prepare(kind, rest[:1])
                    rest = rest[1:]
                    # The workflow's definition (for targets several hops away) is read while Jira creates the
                    # first issue, not after; done before that issue is looked at (both learn the graph).
                    definition = create_pool.submit(self.jira.workflow_graph, self.project, type_id)
                    outcome = self._send(kind, items)
                    wait([definition])  # a failed read is tried again, and its error met, where it is needed
                    with self._save_lock:
                        follow = finish_chunk(items, outcome)  # owed once the status is read
                        first = self.state.entry(kind, items[0][0].key)
                        if fatal is None and first is not None and first.get("issue") and not first.get("pending"):
                            # Read before its own transition is sent: the status it was created in.
                            self._start[type_id] = self.jira.current_transitions(first["issue"])
                            self._fresh[(kind, items[0][0].key)] = self._start[type_id][0]  # no second look
                        owe(follow)
                if fatal is None:
                    for items in self._chunks(self._prepare(kind, rest)):
                        futures[create_pool.submit(self._send, kind, items)] = ("create", items)
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    with self._save_lock:
                        for fut in finished:
                            what, items = futures.pop(fut)
                            if fut.cancelled():
                                continue  # after a fatal error: never sent; a create's pending mark stays
                            if what == "create":
                                owe(finish_chunk(items, fut.result()))
                            else:
                                fatal = self._apply_job(kind, items, fut.result(), done) or fatal
                        self._harvest_owed()
                        fatal = fatal or self._take_owed_fatal()
                        if fatal is not None:
                            for other in [*futures, *self._owed]:
                                other.cancel()  # the system refuses this user or this pass: send no more
            finally:
                for fut in futures:
                    fut.cancel()  # when this loop stopped early: what was never sent stays pending, unsent
                with self._save_lock:
                    # Saved with the owed hops' records: the caller may move the watermark past these keys.
                    self.state.save()
        if fatal is not None:
            self.drain(cancel=True)  # the hops not sent stay owed on disk
            raise fatal
        if not self.overlap:
            self._settle_owed(kind, set(owed))
        for key in owed:
            entry = self.state.entry(kind, key)
            if self.overlap and self._is_owed(kind, key) or entry is not None and entry.get("status") is not None:
                done.add(key)  # owed on disk, or moved to its mapped status (a failure was queued instead)
        return done

    # -- owed hops ----------------------------------------------------------------------------------
    def overlapping(self, windows: Iterable[Any]) -> Iterator[Any]:
        """Yield one entity's windows (as read) while the hops owed by one window's creates may still run
        during the next window's read, lookups and creates; every owed hop is done, and saved, before the
        loop ends. Left by an exception (a fatal error, the pass deadline), the hops not yet sent are not
        sent: they stay owed on disk and the next pass finishes them."""
        if self.dry_run:
            yield from windows
            return
        self.overlap = True
        try:
            yield from windows
        except GeneratorExit:
            self.overlap = False
            self.drain(cancel=True)
            raise
        except BaseException:
            # The read failed: the owed hops of the windows already written are still worth finishing.
            self.overlap = False
            self.drain(quiet=True)
            raise
        self.overlap = False
        self.drain()

    def drain(self, *, cancel: bool = False, quiet: bool = False) -> None:
        """Wait for every owed hop in flight and record the outcomes (saved). ``cancel``: send no more (those
        not sent stay owed on disk). A fatal error one of them met is raised unless ``cancel`` or ``quiet``."""
        if cancel:
            for fut in list(self._owed):
                fut.cancel()
        self._wait_owed(set(self._owed))
        if self.state.dirty and not self.dry_run:
            self.state.save()
        err = self._take_owed_fatal()
        if err is not None and not (cancel or quiet):
            raise err

    def finish(self) -> None:
        """End of the pass: drain the owed hops and stop their threads."""
        try:
            self.drain()
        finally:
            if self._hop_pool is not None:
                self._hop_pool.shutdown(wait=True, cancel_futures=True)
                self._hop_pool = None

    def _owe(self, kind: str, type_id: str, rec: IssueWrite, row: dict[str, Any], entry: dict[str, Any]) -> None:
        """Record, for the next save, that this issue still owes its hops to ``rec.target_status``; send them
        in the background (called under the save lock)."""
        assert rec.target_status is not None
        book = self.state.extra.setdefault(OWED, {}).setdefault(kind, {})
        book[rec.key] = {"issue": entry["issue"], "to": rec.target_status, "code": rec.status_code}
        self.state.dirty = True
        if self._hop_pool is None:
            self._hop_pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="jira-hops")
        # A copy: the key map's live entries are released between batches, the hops outlive the batch.
        fut = self._hop_pool.submit(self._work, kind, type_id, (rec, row, dict(entry)))
        self._owed[fut] = (kind, rec, row, str(entry["issue"]))
        self._owed_keys[(kind, rec.key)] = fut

    def _is_owed(self, kind: str, key: str) -> bool:
        return key in (self.state.extra.get(OWED) or {}).get(kind, {})

    def _settle_owed(self, kind: str, keys: set[str]) -> None:
        """Record the owed hops that have finished; wait for those of ``keys`` and of other kinds than
        ``kind`` (an entity's hops end with it); keep at most OWED_IN_FLIGHT in flight. Raises a fatal error
        a hop met."""
        if not self._owed:
            return
        wanted = {f for (k, key), f in self._owed_keys.items() if k != kind or key in keys}
        self._wait_owed(wanted)
        while len(self._owed) > OWED_IN_FLIGHT:
            self._wait_owed(set(list(self._owed)[:len(self._owed) - OWED_IN_FLIGHT]))
        with self._save_lock:
            self._harvest_owed()
        err = self._take_owed_fatal()
        if err is not None:
            raise err

    def _wait_owed(self, futures: set[Future[Any]]) -> None:
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            futures -= finished
            with self._save_lock:
                self._harvest_owed()

    def _harvest_owed(self) -> None:
        """Record the outcome of every owed hop that has finished (on the pass's thread, under the save lock)."""
        for fut in [f for f in self._owed if f.done()]:
            kind, rec, row, issue = self._owed.pop(fut)
            if self._owed_keys.get((kind, rec.key)) is fut:
                del self._owed_keys[(kind, rec.key)]
            if fut.cancelled():
                continue  # never sent: stays owed on disk
            entry = self.state.entry(kind, rec.key)
            if entry is None or entry.get("issue") != issue:
                self._forget_owed(kind, rec.key)
                continue
            err = self._apply_job(kind, (rec, row, entry), fut.result(), set())
            if err is not None:
                # The system refuses this user or this pass: send no more; what was not sent stays owed.
                self._owed_fatal = self._owed_fatal or err
                for other in self._owed:
                    other.cancel()

    def _forget_owed(self, kind: str, key: str) -> None:
        owed = self.state.extra.get(OWED) or {}
        if key in owed.get(kind, {}):
            del owed[kind][key]
            if not owed[kind]:
                del owed[kind]
            if not owed:
                self.state.extra.pop(OWED, None)
            self.state.dirty = True

    def _take_owed_fatal(self) -> Exception | None:
        err, self._owed_fatal = self._owed_fatal, None
        return err

    def _finish_owed(self, kind: str) -> None:
        """At the start of a pass: take the hops an earlier pass owed and did not send (it was killed, or met
        a fatal error), from each issue's current status (a GET of the issue, current, unlike a search)."""
        book: dict[str, dict[str, Any]] = {}
        for key, mark in list((self.state.extra.get(OWED) or {}).get(kind, {}).items()):
            entry = self.state.entry(kind, key)
            if entry is not None and entry.get("issue") == mark.get("issue") and entry.get("status") is None:
                book[key] = mark
            else:
                self._forget_owed(kind, key)  # the record was written since (or its link dropped): not owed
        if not book:
            if self.state.dirty:
                self.state.save()
            return
        counts = self.counts(kind)

        def one(mark: dict[str, Any]) -> tuple[bool, Exception | None]:
            try:
                return self.jira.transition_to(str(mark["issue"]), str(mark["to"])), None
            except ConnectorError as exc:
                return False, exc

        with ThreadPoolExecutor(max_workers=max(1, min(self.max_workers, len(book)))) as pool:
            results = list(pool.map(one, book.values()))
        fatal: Exception | None = None
        for (key, mark), (moved, err) in zip(book.items(), results, strict=True):
            entry = self.state.entry(kind, key)
            if isinstance(err, FATAL):
                fatal = fatal or err
                continue  # still owed
            if err is not None:
                # Kept owed (the source row that a queued item needs is not in the state): tried again next
                # pass, and by any write of the record meanwhile.
                counts.failed += 1
                self.audit.write("failed", kind, key, issue=mark["issue"], error=self.audit.redactor(err.message))
                continue
            self._forget_owed(kind, key)
            if entry is None:
                continue
            entry["status"] = mark["code"]
            self.state.dirty = True
            if moved:
                counts.transitioned += 1
                self.audit.write("transitioned", kind, key, issue=mark["issue"], to=mark["to"],
                                 note="owed by an earlier pass")
        if self.state.dirty:
            self.state.save()
        if fatal is not None:
            raise fatal

    def _payload(self, kind: str, rec: IssueWrite) -> tuple[dict[str, Any], bool]:
        """The create request, and whether the issue will be in its mapped status once created."""
        payload: dict[str, Any] = {
            "fields": rec.create_fields,
            # The record's full key, so that an issue found by its label can be told apart from one that only
            # carries the same label (copied by hand, or another configuration's).
            "properties": [{"key": KEY_PROPERTY, "value": {"entity": kind, "key": list(decode_key(rec.key))}}],
        }
        start = self._start.get(self.issue_type_id(kind))
        if start is None or not rec.target_status:
            return payload, False
        if rec.target_status.lower() == start[0].lower():
            return payload, True  # the start status is the mapped one: nothing to move
        tid = start[1].get(rec.target_status.lower())
        if tid:
            payload["transition"] = {"id": tid}
            return payload, True
        # Several hops away: the create carries the first hop of the workflow's shortest path (when this user
        # may read its definition); run_jobs takes the rest without looking first.
        graph = self.jira.workflow_graph(self.project, self.issue_type_id(kind))
        path = graph.path(start[0], rec.target_status) if graph is not None and graph.complete else None
        first = start[1].get(path[0].to.lower()) if path else None
        if path and first:
            payload["transition"] = {"id": first}
            self._hop_to[first] = path[0].to
        return payload, False

    def _chunks(self, prepared: list[Prepared]) -> list[list[Prepared]]:
        """The bulk creates to send. When some issues will need hops after their create, the first chunks are
        small, growing to ``bulk_size``: Jira works through a bulk create one issue after the other, so a
        small chunk answers soon and the hops of its issues keep the rate limit busy while the big chunks are
        still being created (a few more requests per page). Otherwise every chunk is ``bulk_size``."""
        # With owed hops queued (an earlier window's) the hops already keep the limit busy: no ramp, fewer creates.
        ramp = len(self._owed) < 2 * self.bulk_size and \
            any(not in_status and rec.target_status for rec, _, _, in_status in prepared)
        out: list[list[Prepared]] = []
        i = 0
        while i < len(prepared):
            size = min(self.bulk_size, RAMP * (len(out) + 1)) if ramp else self.bulk_size
            out.append(prepared[i:i + size])
            i += size
        return out

    def _prepare(self, kind: str, chunk: list[Item]) -> list[Prepared]:
        return [(rec, row, *self._payload(kind, rec)) for rec, row in chunk]

    def _send(self, kind: str, items: list[Prepared]) -> Any:
        """One bulk create (run on a worker thread): Jira's answer, or the ConnectorError raised."""
        def renew_marks() -> None:
            # The creates take effect when this attempt goes out (after other chunks, a 429 wait, a retry),
            # not when the pass marked them: the settle time of a rerun counts from here. On disk first.
            with self._save_lock:
                now = self.clock()
                for rec, _, _, _ in items:
                    entry = self.state.entry(kind, rec.key)
                    if entry is not None and entry.get("pending"):
                        mark_pending(entry, now)
                self.state.dirty = True
                self._renewed += 1
                mine = self._renewed
            self._durable(mine)

        try:
            return self.jira.bulk_create([payload for _, _, payload, _ in items], before_send=renew_marks)
        except ConnectorError as exc:
            return exc

    def _durable(self, renewal: int) -> None:
        """Return once a save that began after renewal number ``renewal`` has finished (group commit).

        Chunks sent together renew their marks together: rather than one save of the whole state each, one
        thread saves for every renewal made while the previous save was being written, and the others
        return as soon as that save is done. Each chunk's marks are still on disk before its request goes
        out; between its mark and its request there are at most two saves."""
        with self._disk_lock:
            if self._saved >= renewal:
                return  # a save that began after this renewal has finished
            with self._save_lock:
                covered = self._renewed
                self.state.save()
            self._saved = covered

    def _chunk_outcome(self, kind: str, items: list[Prepared], outcome: Any) -> tuple[set[str], Exception | None]:
        """Apply a bulk create's answer: (the keys that now have an issue, the fatal error if it was one)."""
        if isinstance(outcome, AmbiguousWriteError):
            return self._after_ambiguous(kind, items, outcome), None
        if isinstance(outcome, FATAL):
            return set(), outcome
        if isinstance(outcome, ConnectorError):
            for rec, row, _, _ in items:
                self.state.drop_entry(kind, rec.key)
                self.fail(kind, rec.key, row, outcome)
            return set(), None
        return self._apply_created(kind, items, *outcome), None

    def _apply_created(self, kind: str, items: list[Prepared],
                       ok: dict[int, dict[str, Any]], errors: dict[int, RemoteError]) -> set[str]:
        counts = self.counts(kind)
        created: set[str] = set()
        for idx, (rec, row, payload, in_status) in enumerate(items):
            if idx not in ok:
                self.state.drop_entry(kind, rec.key)
                self.fail(kind, rec.key, row, errors.get(idx) or RemoteError("Jira did not create the issue",
                                                                              system="Jira"))
                continue
            issue = ok[idx]
            if not in_status:
                start = self._start.get(self.issue_type_id(kind))
                hop = (payload.get("transition") or {}).get("id")
                self._fresh[(kind, rec.key)] = self._hop_to.get(hop, "") if hop else (start[0] if start else "")
            self.state.set_entry(kind, rec.key, {"issue": issue["key"], "hash": rec.hash, "ts": iso(rec.ts),
                                                 "status": rec.status_code if in_status else None})
            counts.created += 1
            created.add(rec.key)
            self.audit.write("created", kind, rec.key, issue=issue["key"])
            if "transition" in payload and in_status:
                counts.transitioned += 1
                self.audit.write("transitioned", kind, rec.key, issue=issue["key"], to=rec.target_status)
        return created

    def _after_ambiguous(self, kind: str, items: list[Prepared],
                         exc: AmbiguousWriteError) -> set[str]:
        """A bulk create may or may not have happened: adopt what Jira already shows, never resend now.

        After a timeout Jira may still be working on the request, so a search that finds nothing proves
        nothing yet. The rest keep their pending marks and are queued; the next pass looks again
        (resolve_pending) before anything is created.
        """
        found = self.adopt_by_label(kind, [rec for rec, _, _, _ in items])
        now = self.clock()
        for rec, row, _, _ in items:
            if rec.key not in found:
                entry = self.state.entry(kind, rec.key)
                if entry is not None and entry.get("pending"):
                    # Jira may act on the request until now: the settle time counts from here.
                    mark_pending(entry, now)
                    self.state.dirty = True
                self.fail(kind, rec.key, row, exc)
        return found

    # -- finding issues by label -------------------------------------------------------------------
    def search_labels(self, labels: list[str]) -> dict[str, list[dict[str, Any]]]:
        """label -> the issues carrying it, oldest first, for the labels Jira knows (one search per 50 labels).
        The search may lag Jira's writes: an absence here proves nothing on its own (see sync/links.py)."""
        found: dict[str, list[dict[str, Any]]] = {}
        parts = [labels[i:i + LABELS_PER_SEARCH] for i in range(0, len(labels), LABELS_PER_SEARCH)]

        def one(part: list[str]) -> list[dict[str, Any]]:
            jql = f"project = {jql_quote(self.project)} AND labels in ({', '.join(jql_quote(x) for x in part)})"
            return list(self.jira.search(jql, ["labels", "summary"], properties=[KEY_PROPERTY]))

        # The searches of a page of records run side by side (each is one request, answered in latency):
        # the creates they clear wait for all of them. With no owed hops in flight (a pass's first page), the
        # bulk creates' slots are idle until these answer: the searches use them too.
        width = self.max_workers if self._owed else max(self.max_workers, self.max_bulk_creates)
        if len(parts) > 1:
            with ThreadPoolExecutor(max_workers=max(1, min(width, len(parts)))) as pool:
                answers = list(pool.map(one, parts))
        else:
            answers = [one(p) for p in parts]
        for part, issues in zip(parts, answers, strict=True):
            wanted = set(part)
            for issue in issues:
                for lab in (issue.get("fields") or {}).get("labels", []):
                    if lab in wanted and all(x.get("id") != issue.get("id") for x in found.get(lab, [])):
                        found.setdefault(lab, []).append(issue)
        for issues in found.values():
            issues.sort(key=lambda x: (len(str(x.get("id"))), str(x.get("id"))))
        return found

    def lookup(self, kind: str, labels: dict[str, str], recs: dict[str, IssueWrite] | None = None,
               ) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        """Find the issues of these records (key -> label): (key -> the issue to adopt, key -> issue keys that
        carry the label but name another record). Where two issues of ours carry one label (made by an
        earlier version), the oldest is adopted and the others are reported in the audit trail.

        An issue whose ``mlconnector.key`` property names the record is ours; one whose property names another
        record is not. An issue without the property was made by an earlier version, whose labels were not
        injective (``PO 7`` and ``PO_7`` shared one): with the records at hand (``recs``) it is ours only when
        its summary starts with the record's title and shown key (``Purchase order US001/PO 7``). The label
        an earlier version gave a record (``legacy_label``) is searched as well."""
        recs = recs or {}
        legacy = {k: r.legacy_label for k, r in recs.items() if r.legacy_label and r.legacy_label != labels.get(k)}
        found = self.search_labels(sorted({*labels.values(), *legacy.values()}))
        ours: dict[str, dict[str, Any]] = {}
        foreign: dict[str, list[str]] = {}
        for key, label in labels.items():
            parts = decode_key(key)
            rec = recs.get(key)
            lead = _lead(rec.create_fields.get("summary")) if rec is not None else None

            def is_mine(issue: dict[str, Any], parts: tuple[str, ...] = parts, lead: str | None = lead) -> bool:
                carried = (issue.get("properties") or {}).get(KEY_PROPERTY)
                if carried is not None:
                    return not conflicts_with(carried, kind, parts)
                return lead is None or _summary_lead(issue) == lead

            candidates = found.get(label, [])
            mine = [i for i in candidates if is_mine(i)]
            if not mine and key in legacy:
                mine = [i for i in found.get(legacy[key], []) if is_mine(i)]
            if mine:
                ours[key] = mine[0]
                if len(mine) > 1:
                    self.audit.write("duplicate_issues", kind, key, issue=mine[0]["key"],
                                     others=[str(i.get("key")) for i in mine[1:]])
            elif candidates:
                foreign[key] = [str(i.get("key")) for i in candidates]
        return ours, foreign

    def _conflict(self, kind: str, rec: IssueWrite, row: dict[str, Any], issues: list[str]) -> None:
        self.fail(kind, rec.key, row, RecordError(
            f"Jira issue {', '.join(issues)} carries the label {rec.label} of {display_key(rec.key)} but its "
            f"'{KEY_PROPERTY}' property names another record, so it was neither adopted nor changed, and no "
            f"issue was created. Remove the label from that issue (it was copied by hand, or another "
            f"configuration writes to project {self.project}), then run 'mlconnector replay retry'."))

    def _adopt_existing(self, kind: str, creates: list[Item], jobs: list[Job], done: set[str]) -> list[Item]:
        """Look the records about to be created up by label; adopt the issues found (their edits and transitions
        join ``jobs``), queue conflicts, and return the records still to be created."""
        if not creates:
            return creates
        by_key = {rec.key: (rec, row) for rec, row in creates}
        labels = {rec.key: rec.label for rec, _ in creates}
        recs = {rec.key: rec for rec, _ in creates}
        marks = {rec.key: pending_since(e) for rec, _ in creates
                 if (e := self.state.entry(kind, rec.key)) is not None and e.get("pending")}
        settler = Settler(self.settle_seconds, clock=self.clock, sleep=self.sleep)
        searched_at = self.clock()
        ours, foreign = self.lookup(kind, labels, recs)
        waiting = settler.unsettled({k: v for k, v in marks.items() if k not in ours and k not in foreign},
                                    searched_at)
        if waiting and not self.dry_run:
            self.sleep(max(waiting.values()))
            more, more_foreign = self.lookup(kind, {k: labels[k] for k in waiting}, recs)
            ours.update(more)
            foreign.update(more_foreign)
        rest: list[Item] = []
        for key, (rec, row) in by_key.items():
            if key in foreign:
                if self.dry_run:
                    self.plan(kind, key, "conflict", issues=foreign[key], label=rec.label)
                else:
                    self._conflict(kind, rec, row, foreign[key])
                continue
            issue = ours.get(key)
            if issue is None:
                rest.append((rec, row))
                continue
            self.counts(kind).adopted += 1
            if self.dry_run:
                self.plan(kind, key, "adopt", issue=issue["key"], label=rec.label)
                done.add(key)
                continue
            old = self.state.entry(kind, key) or {}
            # Content unknown unless this very record's create was in flight: an edit makes it current.
            entry = {"issue": issue["key"], "hash": old.get("hash") if old.get("pending") else None,
                     "ts": old.get("ts"), "status": None, "adopted": True}
            self.state.set_entry(kind, key, entry)
            self.audit.write("adopted", kind, key, issue=issue["key"], label=rec.label)
            jobs.append((rec, row, self.state.entry(kind, key) or entry))
        return rest

    def adopt_by_label(self, kind: str, recs: list[IssueWrite]) -> set[str]:
        """Record in the key map the issues that already carry these records' labels (after an unanswered
        create: the content is what was just sent)."""
        ours, _ = self.lookup(kind, {r.key: r.label for r in recs}, {r.key: r for r in recs})
        adopted: set[str] = set()
        for rec in recs:
            issue = ours.get(rec.key)
            if issue is None:
                continue
            entry = self.state.entry(kind, rec.key) or {}
            # status None: the issue may be anywhere in the workflow; the next job checks before moving it.
            self.state.set_entry(kind, rec.key, {"issue": issue["key"], "hash": entry.get("hash", rec.hash),
                                                 "ts": entry.get("ts", iso(rec.ts)), "status": None})
            adopted.add(rec.key)
            self.counts(kind).created += 1
            self.audit.write("created", kind, rec.key, issue=issue["key"], note="found after an unanswered create")
        return adopted

    def resolve_pending(self, kinds: Iterable[str]) -> None:
        """Settle creates left pending by an earlier pass: adopt the issue if Jira has it, else forget the mark
        (the record is still below its watermark, or in the replay queue, so it is created later). Jira's
        search lags: an absence counts only once the mark is ``settle_seconds`` old (the pass waits). Then the
        hops an earlier pass owed are taken (see ``_finish_owed``)."""
        kinds = list(kinds)
        self.drain()
        for kind in kinds:
            keys = self.state.pending(kind)
            if not keys:
                continue
            entries = {k: e for k in keys if (e := self.state.entry(kind, k)) is not None and e.get("pending")}
            labels = {k: e["label"] for k, e in entries.items() if e.get("label")}
            if self.dry_run:
                continue
            settler = Settler(self.settle_seconds, clock=self.clock, sleep=self.sleep)

            def find(ks: Any, labels: dict[str, str] = labels, kind: str = kind) -> dict[str, Any]:
                return self.lookup(kind, {k: labels[k] for k in ks})[0]

            found = settler.settle({k: pending_since(entries[k]) for k in labels}, find)
            for key, entry in entries.items():
                issue = found.get(key)
                if issue is not None:
                    self.state.set_entry(kind, key, {"issue": issue["key"], "hash": entry.get("hash"),
                                                     "ts": entry.get("ts"), "status": None})
                    self.audit.write("resolved_pending", kind, key, issue=issue["key"])
                else:
                    self.state.drop_entry(kind, key)
                    self.audit.write("resolved_pending", kind, key, note="no issue in Jira; will be created")
            self.state.dirty = True
        if self.state.dirty and not self.dry_run:
            self.state.save()
        if not self.dry_run:
            for kind in kinds:
                self._finish_owed(kind)

    # -- updates and transitions -------------------------------------------------------------------
    def _work(self, kind: str, type_id: str, job: Job) -> tuple[bool, bool, Exception | None]:
        """The edit and transition of one issue (run on a worker thread; touches no state)."""
        rec, _row, entry = job
        start = self._start.get(type_id)
        edited = transitioned = False
        try:
            if entry.get("hash") != rec.hash:
                self.jira.edit_issue(entry["issue"], rec.edit_fields)
                edited = True
            if self._needs_transition(entry, rec):
                at = self._fresh.get((kind, rec.key)) if start is not None else None
                tid = start[1].get(rec.target_status.lower()) if start and at == start[0] else None
                if at and rec.target_status.lower() == at.lower():
                    pass  # created moments ago, already in the mapped status
                elif at and tid:
                    # Created moments ago in the start status: the transition id is already known.
                    transitioned = self.jira.transition_to(entry["issue"], rec.target_status, known_id=tid)
                elif at:
                    # Created moments ago in a known status: the rest of the path, one request per hop.
                    transitioned = self.jira.transition_from(entry["issue"], at, rec.target_status, self.project,
                                                             type_id)
                else:
                    transitioned = self.jira.transition_to(entry["issue"], rec.target_status)
            return edited, transitioned, None
        except ConnectorError as exc:
            return edited, transitioned, exc

    def _apply_job(self, kind: str, job: Job, result: tuple[bool, bool, Exception | None],
                   done: set[str]) -> Exception | None:
        """Record what a job did (on the pass's thread); return its error if that error is fatal."""
        rec, row, entry = job
        edited, transitioned, err = result
        # Where the create left the issue is known no more once a hop was tried: a later version of the record
        # (the next window, a replay) starts from the issue's current status.
        self._fresh.pop((kind, rec.key), None)
        counts = self.counts(kind)
        self.state.dirty = True
        if edited:
            entry["hash"] = rec.hash
            counts.updated += 1
            self.audit.write("updated", kind, rec.key, issue=entry["issue"])
        if transitioned:
            counts.transitioned += 1
            self.audit.write("transitioned", kind, rec.key, issue=entry["issue"], to=rec.target_status)
        if err is None:
            entry["status"] = rec.status_code
            entry["ts"] = iso(rec.ts)
            done.add(rec.key)
            self.state.dequeue(kind, rec.key)
        elif isinstance(err, FATAL):
            return err
        else:
            self.fail(kind, rec.key, row, err)
        # Hops an earlier pass owed this issue are this job's now: done, or queued with the record's row.
        self._forget_owed(kind, rec.key)
        return None


def _comparable(value: Any) -> Any:
    """A field value as Jira returns it and as we send it, reduced to what a person would compare."""
    if isinstance(value, dict):
        if value.get("type") == "doc":
            return plain_text(value).strip()
        for k in ("value", "name", "accountId", "key", "id"):
            if k in value:
                return str(value[k])
    if isinstance(value, list):
        return sorted(str(_comparable(v)) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _lead(summary: Any) -> str:
    """The part of a summary that names the record: "Purchase order US001/PO 7" of "Purchase order US001/PO 7: ..."."""
    return str(summary or "").split(": ", 1)[0]


def _summary_lead(issue: dict[str, Any]) -> str:
    return _lead((issue.get("fields") or {}).get("summary"))
