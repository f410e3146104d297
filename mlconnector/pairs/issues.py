"""Writing mapped ERP records to Jira issues, idempotently. Shared by every pair that creates issues.

Crash safety lives here:
- Before a create, the key-map entry is saved as pending, with the label that names the record; a
  pending entry is resolved at the start of the next pass by one JQL search per 50 labels, so a pass
  killed between the create and the save never creates the issue twice.
- After a create whose answer was lost (reset, timeout, 5xx), issues Jira already shows are adopted
  and the rest stay pending and queued: Jira may still be working on the request, so nothing is sent
  again in the same pass.
- Edits and transitions are idempotent in effect (an edit sets the same fields; a transition checks
  the current status when its answer was lost), so repeating them after a crash is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from mlconnector.audit import Audit
from mlconnector.errors import AmbiguousWriteError, AuthError, ConnectorError, RemoteError, UnreachableError
from mlconnector.jira.client import JiraClient
from mlconnector.state import State, iso

FATAL = (AuthError, UnreachableError)
LABELS_PER_SEARCH = 50


class MappedIssue(Protocol):
    key: str
    ts: datetime
    hash: str
    label: str
    status_code: str
    target_status: str | None
    create_fields: dict[str, Any]
    edit_fields: dict[str, Any]


Item = tuple[Any, dict[str, Any]]  # (mapped record, source row)
Job = tuple[Any, dict[str, Any], dict[str, Any]]  # (mapped record, source row, key-map entry)
Fail = Callable[[str, str, dict[str, Any], Exception], None]


def jql_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class IssueWriter:
    jira: JiraClient
    state: State
    audit: Audit
    counts: Callable[[str], Any]  # kind -> the pass's counters for that kind
    fail: Fail  # the pass's failure handler: counts, redacts, queues for replay
    project: str
    issue_type_id: Callable[[str], str]
    bulk_size: int = 50
    max_workers: int = 4
    dry_run: bool = False
    # issue type id -> (start status, {target status lower: transition id}), learned once per pass
    _start: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    _fresh: set[tuple[str, str]] = field(default_factory=set)  # created this pass, still in the start status

    # -- entry point -------------------------------------------------------------------------------
    def write(self, kind: str, items: Iterable[Item]) -> set[str]:
        """Create, update or transition the issues of these records; return the keys fully handled."""
        # Entries of earlier batches are on disk and nobody holds them any more: memory stays flat.
        self.state.release(can_save=not self.dry_run)
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
        if self.dry_run:
            counts.created += len(creates)
            for rec, _row, entry in jobs:
                counts.updated += entry.get("hash") != rec.hash
                counts.transitioned += self._needs_transition(entry, rec)
            return done
        created = self.create_all(kind, creates)
        for rec, row in creates:
            entry = self.state.entry(kind, rec.key)
            if rec.key not in created or entry is None:
                continue
            if entry.get("status") == rec.status_code or not rec.target_status:
                # Created in its mapped status already: nothing left to send for it.
                entry["status"] = rec.status_code
                done.add(rec.key)
                self.state.dequeue(kind, rec.key)
            else:
                jobs.append((rec, row, entry))
        return done | self.run_jobs(kind, jobs)

    @staticmethod
    def _needs_transition(entry: dict[str, Any], rec: Any) -> bool:
        return entry.get("status") != rec.status_code and rec.target_status is not None

    # -- creates (bulk, several chunks in flight) --------------------------------------------------
    def create_all(self, kind: str, creates: list[Item]) -> set[str]:
        """Create issues for these records; return the keys that now have one. Failures are queued."""
        if not creates:
            return set()
        for rec, _ in creates:
            self.state.set_entry(kind, rec.key, {"pending": True, "label": rec.label, "hash": rec.hash,
                                                 "ts": iso(rec.ts), "status": None})
        self.state.save()  # the pending marks must be on disk before Jira can act on any create
        chunks = [creates[i:i + self.bulk_size] for i in range(0, len(creates), self.bulk_size)]
        created: set[str] = set()
        type_id = self.issue_type_id(kind)
        try:
            if type_id not in self._start and any(rec.target_status for rec, _ in creates):
                # Transition ids are per workflow: learn them from the first issue created, then later
                # creates carry their transition and land in the right status in one request.
                created |= self._send_chunks(kind, chunks[:1])
                first = next((self.state.entry(kind, rec.key) for rec, _ in chunks[0] if rec.key in created), None)
                if first is not None:
                    self._start[type_id] = self.jira.current_transitions(first["issue"])
                chunks = chunks[1:]
            created |= self._send_chunks(kind, chunks)
        finally:
            self.state.save()
        return created

    def _payload(self, kind: str, rec: Any) -> tuple[dict[str, Any], bool]:
        """The create request, and whether the issue will be in its mapped status once created."""
        payload: dict[str, Any] = {"fields": rec.create_fields}
        start = self._start.get(self.issue_type_id(kind))
        if start is None or not rec.target_status:
            return payload, False
        if rec.target_status.lower() == start[0].lower():
            return payload, True  # the start status is the mapped one: nothing to move
        tid = start[1].get(rec.target_status.lower())
        if tid:
            payload["transition"] = {"id": tid}
            return payload, True
        return payload, False

    def _send_chunks(self, kind: str, chunks: list[list[Item]]) -> set[str]:
        if not chunks:
            return set()
        prepared = [[(rec, row, *self._payload(kind, rec)) for rec, row in chunk] for chunk in chunks]

        def send(items: list[tuple[Any, dict[str, Any], dict[str, Any], bool]]) -> Any:
            try:
                return self.jira.bulk_create([payload for _, _, payload, _ in items])
            except ConnectorError as exc:
                return exc

        created: set[str] = set()
        fatal: Exception | None = None
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_workers, len(prepared)))) as pool:
            outcomes = list(pool.map(send, prepared))
        for items, outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, AmbiguousWriteError):
                created |= self._after_ambiguous(kind, items, outcome)
            elif isinstance(outcome, FATAL):
                fatal = fatal or outcome
            elif isinstance(outcome, ConnectorError):
                for rec, row, _, _ in items:
                    self.state.drop_entry(kind, rec.key)
                    self.fail(kind, rec.key, row, outcome)
            else:
                created |= self._apply_created(kind, items, *outcome)
        if fatal is not None:
            raise fatal  # the pending marks stay; the next pass resolves them
        return created

    def _apply_created(self, kind: str, items: list[tuple[Any, dict[str, Any], dict[str, Any], bool]],
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
                self._fresh.add((kind, rec.key))
            self.state.set_entry(kind, rec.key, {"issue": issue["key"], "hash": rec.hash, "ts": iso(rec.ts),
                                                 "status": rec.status_code if in_status else None})
            counts.created += 1
            created.add(rec.key)
            self.audit.write("created", kind, rec.key, issue=issue["key"])
            if "transition" in payload:
                counts.transitioned += 1
                self.audit.write("transitioned", kind, rec.key, issue=issue["key"], to=rec.target_status)
        return created

    def _after_ambiguous(self, kind: str, items: list[tuple[Any, dict[str, Any], dict[str, Any], bool]],
                         exc: AmbiguousWriteError) -> set[str]:
        """A bulk create may or may not have happened: adopt what Jira already shows, never resend now.

        After a timeout Jira may still be working on the request, so a search that finds nothing proves
        nothing yet. The rest keep their pending marks and are queued; the next pass looks again
        (resolve_pending) before anything is created.
        """
        found = self.adopt_by_label(kind, [rec for rec, _, _, _ in items])
        for rec, row, _, _ in items:
            if rec.key not in found:
                self.fail(kind, rec.key, row, exc)
        return found

    # -- finding issues by label -------------------------------------------------------------------
    def search_labels(self, labels: list[str]) -> dict[str, dict[str, Any]]:
        """label -> issue carrying it, for the labels Jira knows (one search per 50 labels)."""
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(labels), LABELS_PER_SEARCH):
            part = labels[i:i + LABELS_PER_SEARCH]
            wanted = set(part)
            jql = f"project = {jql_quote(self.project)} AND labels in ({', '.join(jql_quote(x) for x in part)})"
            for issue in self.jira.search(jql, ["labels"]):
                for lab in (issue.get("fields") or {}).get("labels", []):
                    if lab in wanted and lab not in found:
                        found[lab] = issue
        return found

    def adopt_by_label(self, kind: str, recs: list[Any]) -> set[str]:
        """Record in the key map the issues that already carry these records' labels."""
        found = self.search_labels([r.label for r in recs])
        adopted: set[str] = set()
        for rec in recs:
            issue = found.get(rec.label)
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
        (the record is still below its watermark, or in the replay queue, so it is created later)."""
        for kind in kinds:
            keys = self.state.pending(kind)
            if not keys:
                continue
            entries = {k: e for k in keys if (e := self.state.entry(kind, k)) is not None and e.get("pending")}
            found = self.search_labels([e["label"] for e in entries.values() if e.get("label")])
            if self.dry_run:
                continue
            for key, entry in entries.items():
                issue = found.get(entry.get("label", ""))
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

    # -- updates and transitions (bounded concurrency) ----------------------------------------------
    def run_jobs(self, kind: str, jobs: list[Job]) -> set[str]:
        if not jobs:
            return set()
        counts = self.counts(kind)
        done: set[str] = set()
        start = self._start.get(self.issue_type_id(kind))
        moving = [entry for rec, _row, entry in jobs if self._needs_transition(entry, rec)]
        if any(entry.get("status") is not None for entry in moving):
            # Until Jira answers, the status is unknown. Left as it was, a pass killed after Jira moved the
            # issue would keep the old status on disk; were the source to return to it, nothing would move
            # the issue back. Unknown (None) makes the next pass look at Jira's status first.
            for entry in moving:
                entry["status"] = None
            self.state.dirty = True
            self.state.save()

        def work(job: Job) -> tuple[bool, bool, Exception | None]:
            rec, _row, entry = job
            edited = transitioned = False
            try:
                if entry.get("hash") != rec.hash:
                    self.jira.edit_issue(entry["issue"], rec.edit_fields)
                    edited = True
                if self._needs_transition(entry, rec):
                    fresh = (kind, rec.key) in self._fresh and start is not None
                    tid = start[1].get(rec.target_status.lower()) if start else None
                    if fresh and start and rec.target_status.lower() == start[0].lower():
                        pass  # created moments ago, already in the mapped start status
                    elif fresh and tid:
                        # Created moments ago in the start status: the transition id is already known.
                        transitioned = self.jira.transition_to(entry["issue"], rec.target_status, known_id=tid)
                    else:
                        transitioned = self.jira.transition_to(entry["issue"], rec.target_status)
                return edited, transitioned, None
            except ConnectorError as exc:
                return edited, transitioned, exc

        fatal: Exception | None = None
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_workers, len(jobs)))) as pool:
            for (rec, row, entry), (edited, transitioned, err) in zip(jobs, pool.map(work, jobs), strict=True):
                # Results are applied here, on one thread, so the state needs no lock.
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
                    fatal = fatal or err
                else:
                    self.fail(kind, rec.key, row, err)
                self.state.dirty = True
        if fatal is not None:
            self.state.save()
            raise fatal
        return done
