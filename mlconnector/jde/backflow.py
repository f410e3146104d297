"""Status changes made in the target (Jira) -> JD Edwards orchestration calls, each exactly once.

- Issues updated since the back-flow watermark (less an overlap) are read with their changelogs, plus any
  issues named by queued webhook events; the changelog decides whether the status really changed.
- Changes authored by the connector's own account are ignored, so the connector's own transitions never
  echo back to JDE; a change whose JDE code is already the order's status is not sent; a change older
  than the window (it came only by a webhook event) is sent only while it is still the issue's status.
- Each change is recorded by its changelog history id: marked pending and saved before the
  orchestration call, done after it. The pending mark also records the order's JDE status as the
  connector knew it when the call was sent. A pending mark left by a killed pass is settled by reading the
  order's status in JDE before anything is posted again: done if JDE shows the change's code, posted again
  only while JDE still shows the recorded status, else settled as superseded (someone moved the order on
  in JDE since; a second call would undo their change). A failed call is queued for replay.

The target side is read through a ``ChangeSource`` (jira/changes.py's StatusChangeReader), so this module
knows JDE only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from mlconnector.errors import AmbiguousWriteError, RemoteError
from mlconnector.jde.ais import AisClient
from mlconnector.jde.config import JdeConfig, SourceSettings
from mlconnector.jde.source import OrderReader
from mlconnector.state import iso, utcnow
from mlconnector.sync.echo import is_echo
from mlconnector.sync.engine import FATAL, PassContext
from mlconnector.sync.keys import decode_key

Change = dict[str, Any]


class ChangeSource(Protocol):
    """Where the back-flow reads status changes (see jira/changes.py)."""

    def updated_since(self, start_ms: int) -> Any: ...  # .histories, .current, .newest_ms
    def read_issue(self, into: Any, key: str) -> None: ...
    def status_changes(self, issue: str, histories: list[dict[str, Any]]) -> Iterable[Any]: ...
    def keep_webhook_registered(self, ctx: PassContext, book: dict[str, Any], url: str) -> None: ...


@dataclass
class StatusBackFlow:
    """The back-flow of one pass (see the module docstring). ``book`` is its part of the state
    (``{"posted": {change_id: change}, "webhook_events": [...], "webhook": {...}}``); ``kind`` names its
    counts and queue items, ``watermark`` its cursor over the target's changes."""

    ctx: PassContext
    ais: AisClient
    jde: JdeConfig
    book: dict[str, Any]
    changes: ChangeSource
    me: Callable[[], str]  # the connector's own account on the target
    kind: str
    watermark: str
    spool: Path | None = None  # where `mlconnector webhook serve` queues events (None: no webhook events)
    webhook_url: str = ""  # register the target's dynamic webhook to this URL (empty: do not)

    def __post_init__(self) -> None:
        self.book.setdefault("posted", {})
        self.book.setdefault("webhook_events", [])
        self.orders = OrderReader(self.ais, self.jde)

    # -- reading -------------------------------------------------------------------------------------
    def _issue_index(self, issues: set[str]) -> dict[str, tuple[SourceSettings, str, dict[str, Any]]]:
        """Target issue -> (source, order key, entry) for those of ``issues`` this connector created."""
        sources = {s.name: s for s in self.jde.sources.values()}
        found = self.ctx.state.find_issues(list(sources), issues)
        return {issue: (sources[kind], key, entry) for issue, (kind, key, entry) in found.items()}

    def code_for(self, status: str) -> str | None:
        for name, code in self.jde.status_to_jde.items():
            if name.lower() == status.lower():
                return code
        return None

    def run(self, _since: datetime | None = None) -> None:
        ctx, state = self.ctx, self.ctx.state
        counts = ctx.result.kind(self.kind)
        posted: dict[str, Change] = self.book["posted"]
        self._take_webhook_events()
        overlap = timedelta(minutes=self.jde.backflow_overlap_minutes)
        wm = state.watermarks.get(self.watermark)
        start = (datetime.fromisoformat(wm) if wm else ctx.now) - overlap
        start_ms = int(start.timestamp() * 1000)
        read = self.changes.updated_since(start_ms)
        signalled: dict[str, set[str]] = {}
        for ev in self.book["webhook_events"]:
            signalled.setdefault(str(ev.get("issue")), set()).add(str(ev.get("changelog_id") or ""))
        index = self._issue_index(set(read.histories) | set(signalled))
        for key in signalled:
            if key not in read.histories and key in index:
                self.changes.read_issue(read, key)
        todo: list[Change] = []
        for key, hs in read.histories.items():
            if key not in index:
                continue
            src, okey, entry = index[key]
            for sc in self.changes.status_changes(key, hs):
                if sc.created_ms < start_ms and sc.history_id not in signalled.get(key, set()):
                    continue
                cid = f"{entry.get('id') or key}:{sc.history_id}"
                if cid in posted:
                    continue
                if is_echo(sc.author, {self.me()}, None, None):
                    continue  # written by the connector itself (forward flow): never echo it back
                code = self.code_for(sc.to_status)
                order_number, order_type = decode_key(okey)
                change = {"change_id": cid, "issue": key, "source": src.name, "order": okey,
                          "order_number": order_number, "order_type": order_type, "from": sc.from_status,
                          "to": sc.to_status, "code": code, "author": sc.author, "created_ms": sc.created_ms}
                # A change older than the window came only by a webhook event (late or replayed):
                # posted only while it is still the issue's status, never to move JDE back.
                now_status = read.current.get(key, "")
                superseded = sc.created_ms < start_ms and now_status.lower() != sc.to_status.lower()
                if code is None or entry.get("status") == code or superseded:
                    note = ("no JDE status mapped" if code is None else "JDE already has this status"
                            if not superseded else f"no longer the issue's status (now {read.current.get(key)})")
                    if not ctx.dry_run:
                        posted[cid] = {**change, "state": "skipped", "note": note}
                        state.dirty = True
                    counts.unchanged += 1
                    ctx.audit.write("skipped", self.kind, cid, issue=key, to=sc.to_status, note=note)
                    continue
                todo.append(change)
        counts.read += len(todo)
        if not ctx.dry_run and self.webhook_url:
            self.changes.keep_webhook_registered(ctx, self.book, self.webhook_url)
        for change in sorted(todo, key=lambda c: (c["created_ms"], c["change_id"])):
            self.post(change)
        if not ctx.dry_run:
            if read.newest_ms is not None:
                new_wm = datetime.fromtimestamp(read.newest_ms / 1000, UTC)
                if wm is None or new_wm > datetime.fromisoformat(wm):
                    state.watermarks[self.watermark] = iso(new_wm)
            elif wm is None:
                state.watermarks[self.watermark] = iso(ctx.now)
            self.book["webhook_events"] = []
            self._prune(start_ms)
            state.dirty = True
            state.save()

    def _prune(self, start_ms: int) -> None:
        """Forget settled changes older than any window will look at again (keeps the state small)."""
        horizon = start_ms - int(timedelta(days=2).total_seconds() * 1000)
        posted = self.book["posted"]
        for cid in [c for c, p in posted.items() if p.get("state") in ("done", "skipped")
                    and int(p.get("created_ms", 0)) < horizon]:
            del posted[cid]

    def _take_webhook_events(self) -> None:
        """Move events queued by `mlconnector webhook serve` into the state (they name issues to check)."""
        from mlconnector.webhook import drain_events

        if self.ctx.dry_run or self.spool is None:
            return

        def commit(events: list[dict[str, Any]]) -> None:
            self.book["webhook_events"] = self.book["webhook_events"] + events
            self.ctx.state.dirty = True
            self.ctx.state.save()

        drain_events(self.spool, commit)

    # -- writing -------------------------------------------------------------------------------------
    def _inputs(self, change: Change) -> dict[str, str]:
        names = self.jde.orchestration.inputs
        values = {"order_number": change["order_number"], "order_type": change["order_type"],
                  "status_code": change["code"], "jira_status": change["to"], "jira_key": change["issue"],
                  "change_id": change["change_id"]}
        return {names[k]: str(v) for k, v in values.items() if names.get(k)}

    def post(self, change: Change, jde_status: str | None = None) -> bool:
        """Call the orchestration for one status change, exactly once; True when JDE has it. ``jde_status``:
        the order's JDE status just read (default: as the connector last knew it), recorded in the mark."""
        ctx, state = self.ctx, self.ctx.state
        counts = ctx.result.kind(self.kind)
        cid = change["change_id"]
        posted = self.book["posted"]
        if ctx.dry_run:
            counts.posted += 1
            ctx.planned(self.kind, change["order"], "post", issue=change["issue"],
                        status=f"{change['to']} -> JDE {change['code']}")
            return True
        # The status JDE had when the call went out: a pending mark is posted again only while JDE still
        # shows it (see settle_pending).
        before = jde_status if jde_status is not None else self._known_status(change)
        posted[cid] = {**change, "state": "pending", JDE_BEFORE: before}
        state.dirty = True
        state.save()  # the mark is on disk before JDE can act, so a killed pass never posts it twice
        name = self.jde.orchestration.name
        try:
            self.ais.orchestrate(name, self._inputs(change), self.jde.orchestration.input_format)
        except FATAL:
            raise  # the pending mark stays; the next pass checks JDE before posting again
        except AmbiguousWriteError as exc:
            self._fail(cid, change, exc)  # stays pending: verified against JDE before a retry
            return False
        except RemoteError as exc:
            posted[cid]["state"] = "failed"
            self._fail(cid, change, exc)
            return False
        self._mark_done(change, "posted")
        counts.posted += 1
        return True

    def _fail(self, cid: str, change: Change, exc: Exception) -> None:
        self.ctx.fail(self.kind, cid, change, exc, what="status")

    def _mark_done(self, change: Change, action: str) -> None:
        state = self.ctx.state
        cid = change["change_id"]
        self.book["posted"][cid] = {**change, "state": "done", "at": iso(utcnow())}
        entry = state.entry(change["source"], change["order"])
        if entry is not None:
            # JDE now holds this code: the forward flow must not move the issue back when it reads the row.
            entry["status"] = change["code"]
        state.dequeue(self.kind, cid, what="status")
        self.ctx.audit.write(action, self.kind, cid, issue=change["issue"], order=change["order"], to=change["to"],
                             code=change["code"])
        state.dirty = True
        state.save()

    def _jde_status(self, change: Change) -> str | None:
        return self.orders.status(self.jde.sources[change["source"]], change["order_number"], change["order_type"])

    def resolve_pending(self) -> None:
        """Settle posts a killed or cut-off pass left pending (see ``settle_pending``)."""
        pending = [p for p in self.book["posted"].values() if p.get("state") == "pending"]
        for mark in pending:
            try:
                current = self._jde_status(mark)
            except FATAL:
                raise
            except RemoteError as exc:  # cannot tell yet: keep the mark, look again next pass
                self.ctx.audit.write("resolve_failed", self.kind, mark["change_id"], error=exc.message)
                continue
            if self.ctx.dry_run:
                continue
            self.settle_pending(_plain(mark), mark, current)

    def settle_pending(self, change: Change, mark: Change, current: str | None) -> None:
        """Settle one pending change against ``current``, the order's JDE status read now: done when JDE shows
        its code; posted again when JDE still shows the status recorded in the mark (a mark written before
        that status was recorded: while JDE shows the status the connector last knew); otherwise superseded
        and not posted: someone moved the order on in JDE (after the call took effect, or before it), and a
        call now would undo their change."""
        cid = change["change_id"]
        if current == change["code"]:
            self._mark_done(change, "resolved_pending")
            return
        before = mark.get(JDE_BEFORE) if JDE_BEFORE in mark else self._known_status(change)
        if before is None or current is None or current == before:
            self.ctx.audit.write("resolved_pending", self.kind, cid, issue=change["issue"],
                                 note="JDE does not show the status; posting again")
            self.post(change, current)
            return
        note = (f"JDE moved the order from {before} to {current} since the change was sent; "
                "not posted again")
        self.book["posted"][cid] = {**change, "state": "skipped", "note": note, "at": iso(utcnow())}
        self.ctx.state.dequeue(self.kind, cid, what="status")
        self.ctx.result.kind(self.kind).unchanged += 1
        self.ctx.audit.write("superseded", self.kind, cid, issue=change["issue"], order=change["order"],
                             to=change["to"], code=change["code"], jde_status=current, note=note)
        self.ctx.state.dirty = True
        self.ctx.state.save()

    def _known_status(self, change: Change) -> str | None:
        """The order's JDE status as the connector last knew it (for a pending mark written before the mark
        recorded it)."""
        entry = self.ctx.state.entry(change["source"], change["order"]) or {}
        return entry.get("status")

    def retry(self, item: dict[str, Any]) -> None:
        """Replay of a queued change: dequeued if settled, settled against JDE if pending, else posted. A JDE
        status check that fails re-queues this change only (the replay goes on with the others)."""
        change = _plain(item["row"])
        mark = self.book["posted"].get(change["change_id"], {})
        state = mark.get("state")
        if state in ("done", "skipped"):
            self.ctx.state.dequeue(self.kind, item["key"], what="status")
        elif state == "pending":
            try:
                current = self._jde_status(change)
            except FATAL:
                raise
            except RemoteError as exc:  # cannot tell yet: stays pending and queued, checked again later
                self.ctx.audit.write("resolve_failed", self.kind, change["change_id"], error=exc.message)
                self._fail(change["change_id"], change, exc)
                return
            self.settle_pending(change, mark, current)
        else:
            self.post(change)


JDE_BEFORE = "jde_before"  # in a pending mark: the order's JDE status when the call was sent


def _plain(change: Change) -> Change:
    """The change itself, without what its mark adds (state, time, note, the recorded JDE status)."""
    return {k: v for k, v in change.items() if k not in ("state", "at", "note", JDE_BEFORE)}
