"""Posting source comments on Jira issues, exactly once. Beside jira/sink.py's IssueWriter (the issues).

- A comment is marked pending in its issue's key-map entry, and the mark saved, before it is posted;
  its body ends with a bracketed reference marker that names it.
- A comment that was pending (a pass died around the post), or that belongs to an issue adopted after
  a state loss, is looked up on the issue first: a comment by the connector's own account whose text
  ends with the marker is the one posted before, and is linked, not posted again.
- Comments of one issue go through one worker in order, so they land in the source's order; a lost
  login or network stops the rest of that issue's comments (still pending, read again next pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from mlconnector.errors import AmbiguousWriteError, ConnectorError, RecordError
from mlconnector.jira import adf
from mlconnector.jira.client import JiraClient
from mlconnector.sync.echo import is_echo
from mlconnector.sync.engine import FATAL, PassContext

Row = dict[str, Any]


class Comment(Protocol):
    """A mapped source comment, as a pair's mapping returns it."""

    @property
    def key(self) -> str: ...  # the queue key: parent key and comment id
    @property
    def parent_key(self) -> str: ...
    @property
    def comment_id(self) -> str: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def ref(self) -> str: ...  # the marker that ends its body
    @property
    def body(self) -> dict[str, Any]: ...


Todo = tuple[Any, Row, dict[str, Any]]  # (mapped comment, source row, its issue's key-map entry)


@dataclass
class CommentWriter:
    """Posts the mapped comments of one pass (see the module docstring for the safety rules).

    Contract: ``write`` returns the queue keys of the comments now on their issue (posted, found posted, or
    linked before); every other comment went to the pass's ``fail`` (queued) or stays pending. A comment
    whose record has no issue yet waits in the queue with ``waiting(comment)`` as its reason.
    """

    ctx: PassContext
    jira: JiraClient
    max_workers: int = 4
    _me: str | None = field(default=None, init=False)

    def my_account(self) -> str:
        """The connector's own Jira account id (read once, only when a comment must be looked up)."""
        if self._me is None:
            self._me = str(self.jira.myself().get("accountId") or "")
        return self._me

    def write(self, kind: str, rows: Iterable[Row], map_comment: Callable[[str, Row], Any],
              row_id: Callable[[Row], str], waiting: Callable[[Any], str]) -> set[str]:
        ctx, state = self.ctx, self.ctx.state
        state.release(can_save=not ctx.dry_run)
        counts = ctx.result.kind(kind)
        todo: list[Todo] = []
        done: set[str] = set()
        was_pending: set[str] = set()
        for row in rows:
            try:
                c = map_comment(kind, row)
            except RecordError as exc:
                ctx.fail(kind, row_id(row), row, exc, what="comment")
                continue
            entry = state.entry(kind, c.parent_key)
            if ctx.dry_run and (entry is None or not entry.get("issue")):
                counts.commented += 1  # would be posted right after its record is created
                ctx.planned(kind, c.parent_key, "comment", comment=c.comment_id, after="its issue is created")
                continue
            if entry is None or not entry.get("issue"):
                ctx.fail(kind, c.key, row, RecordError(waiting(c)), what="comment")
                continue
            posted = (entry.get("comments") or {}).get(c.comment_id)  # read only: a dry run changes nothing
            if posted and posted != "pending":
                done.add(c.key)
                state.dequeue(kind, c.key, what="comment")
                continue
            if posted == "pending" or (not posted and entry.get("adopted")):
                # An earlier pass may have posted it before dying (or, for an issue adopted after a state loss,
                # long ago): look on the issue before posting.
                was_pending.add(c.key)
            todo.append((c, row, entry))
        if ctx.dry_run:
            counts.commented += len(todo)
            for c, _row, entry in todo:
                ctx.planned(kind, c.parent_key, "comment", comment=c.comment_id, issue=entry["issue"])
            return done
        if not todo:
            return done
        for c, _row, entry in todo:
            entry.setdefault("comments", {}).setdefault(c.comment_id, "pending")
        state.dirty = True
        state.save()
        fatal = self._post(kind, todo, was_pending, done)
        state.dirty = True
        state.save()
        if fatal is not None:
            raise fatal
        return done

    def _find_or_post(self, c: Any, issue: str, look: bool) -> tuple[str | None, Exception | None, bool]:
        """(Jira comment id, or the error, and whether the error came from add_comment itself)."""
        try:
            if look:
                for existing in self.jira.comments(issue):
                    # Ours only: written by the connector's account, the whole bracketed marker ending the
                    # footer ("#1" must not match inside "#10", nor a person quoting the marker).
                    author = str((existing.get("author") or {}).get("accountId") or "")
                    if is_echo(author, {self.my_account()}, None, None) and \
                            adf.plain_text(existing.get("body")).rstrip().endswith(f"[{c.ref}]"):
                        return str(existing.get("id")), None, False
        except ConnectorError as exc:
            return None, exc, False  # not known whether an earlier pass posted it: the mark stays
        try:
            return str(self.jira.add_comment(issue, c.body).get("id")), None, False
        except ConnectorError as exc:
            return None, exc, True

    def _post(self, kind: str, todo: list[Todo], was_pending: set[str], done: set[str]) -> Exception | None:
        ctx, state = self.ctx, self.ctx.state
        counts = ctx.result.kind(kind)
        workers = max(1, min(self.max_workers, len(todo)))
        # Comments of one issue go through one worker in order, so they land in the source's order.
        groups: dict[str, list[Todo]] = {}
        for item in sorted(todo, key=lambda t: t[0].ts):
            groups.setdefault(item[2]["issue"], []).append(item)

        def work_group(items: list[Todo]) -> list[tuple[str | None, Exception | None, bool]]:
            out = []
            for c, _row, entry in items:
                res = self._find_or_post(c, entry["issue"], c.key in was_pending)
                out.append(res)
                if isinstance(res[1], FATAL):
                    break
            return out + [(None, None, False)] * (len(items) - len(out))

        fatal: Exception | None = None
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for items, results in zip(groups.values(), pool.map(work_group, list(groups.values())), strict=True):
                for (c, row, entry), (cid, err, refused) in zip(items, results, strict=True):
                    if cid:
                        entry["comments"][c.comment_id] = cid
                        counts.commented += 1
                        done.add(c.key)
                        state.dequeue(kind, c.key, what="comment")
                        ctx.audit.write("commented", kind, c.parent_key, issue=entry["issue"], comment=c.comment_id,
                                        jira_comment=cid)
                    elif err is None:
                        continue  # skipped after a fatal error in its group: still pending, re-read next pass
                    elif isinstance(err, FATAL):
                        fatal = fatal or err
                    else:
                        # The mark goes only when Jira refused this very post of a comment no earlier pass
                        # can have posted; a failed lookup, a lost answer or an earlier pending mark keep it,
                        # so the retry looks on the issue before posting.
                        if refused and c.key not in was_pending and not isinstance(err, AmbiguousWriteError):
                            entry["comments"].pop(c.comment_id, None)
                        ctx.fail(kind, c.key, row, err, what="comment")
        return fatal
