"""Reading status changes from Jira, for flows that carry them back to a source system.

Issues updated since a moment are found by one JQL search (``updated >= <epoch ms>``) with the changelog
expanded; Jira returns each issue's latest 100 histories inline, so a longer changelog is paged. Issues
named by webhook events are read one by one (changelog and current status). The dynamic webhook of an
OAuth app is kept registered (refreshed before its 30-day expiry); polling is the safety net, so a
webhook problem never fails a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlconnector.errors import RemoteError
from mlconnector.jira.client import JiraClient
from mlconnector.jira.sink import jql_quote
from mlconnector.sync.engine import FATAL, PassContext

log = logging.getLogger("mlconnector.jira")

JIRA_TS_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")


def parse_jira_ts(value: str) -> datetime:
    for fmt in JIRA_TS_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    return datetime.fromisoformat(value)


def epoch_ms(value: str) -> int:
    """A Jira timestamp as milliseconds since the epoch."""
    return int(parse_jira_ts(value).timestamp() * 1000)


@dataclass(frozen=True)
class StatusChange:
    """One status change in an issue's changelog: the history it belongs to and what moved."""

    issue: str
    history_id: str
    created_ms: int
    author: str  # accountId of whoever made the change
    from_status: str
    to_status: str


@dataclass
class IssueHistories:
    """The changelogs read this pass: issue -> histories, issue -> its status now, newest ``updated`` seen."""

    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    current: dict[str, str] = field(default_factory=dict)
    newest_ms: int | None = None


def status_changes(issue: str, histories: list[dict[str, Any]]) -> Iterator[StatusChange]:
    """The real status changes of an issue's histories (a history whose from and to are equal says nothing
    changed)."""
    for h in histories:
        created_ms = epoch_ms(str(h.get("created")))
        author = str((h.get("author") or {}).get("accountId") or "")
        for item in h.get("items") or []:
            if (item.get("fieldId") or item.get("field")) != "status":
                continue
            frm, to = str(item.get("fromString") or ""), str(item.get("toString") or "")
            if frm != to:
                yield StatusChange(issue, str(h.get("id")), created_ms, author, frm, to)


@dataclass
class StatusChangeReader:
    """Reads the status changes of a project's issues that carry one of ``labels`` (see module docstring)."""

    jira: JiraClient
    project: str
    labels: list[str]

    def updated_since(self, start_ms: int) -> IssueHistories:
        jql = (f"project = {jql_quote(self.project)} AND labels in ({', '.join(jql_quote(x) for x in self.labels)}) "
               f"AND updated >= {start_ms} ORDER BY updated ASC, key ASC")
        out = IssueHistories()
        # expand=changelog returns each issue's latest 100 histories inline; longer ones are paged below.
        for issue in self.jira.search(jql, ["labels", "status", "updated"], expand="changelog"):
            key = str(issue.get("key"))
            out.current[key] = str(((issue.get("fields") or {}).get("status") or {}).get("name") or "")
            upd = (issue.get("fields") or {}).get("updated")
            if upd:
                ms = epoch_ms(str(upd))
                out.newest_ms = ms if out.newest_ms is None or ms > out.newest_ms else out.newest_ms
            cl = issue.get("changelog") or {}
            hs = cl.get("histories")
            if hs is None or int(cl.get("total", 0)) > len(hs):
                hs = list(self.jira.changelog(key))
            out.histories[key] = hs
        return out

    @staticmethod
    def status_changes(issue: str, histories: list[dict[str, Any]]) -> Iterator[StatusChange]:
        return status_changes(issue, histories)

    def read_issue(self, into: IssueHistories, key: str) -> None:
        """Add one issue's whole changelog and current status (an issue a webhook event named)."""
        into.histories[key] = list(self.jira.changelog(key))
        fields = (self.jira.get_issue(key, "status") or {}).get("fields") or {}
        into.current[key] = str((fields.get("status") or {}).get("name") or "")

    def keep_webhook_registered(self, ctx: PassContext, book: dict[str, Any], url: str) -> None:
        """Register the project's dynamic webhook, refresh it at 25 days (it expires at 30); the
        registration is kept in ``book``. OAuth apps only: the caller decides."""
        from mlconnector.webhook import ensure_dynamic_webhook

        try:
            done = ensure_dynamic_webhook(self.jira.http, book, url, f"project = {jql_quote(self.project)}", ctx.now)
        except FATAL:
            raise
        except RemoteError as exc:  # polling is the safety net: a webhook problem never fails the pass
            log.warning("Jira webhook registration failed: %s", exc.message)
            ctx.audit.write("webhook_failed", error=exc.message)
            return
        if done != "ok":
            ctx.audit.write(f"webhook_{done}", note=url)
            ctx.state.dirty = True
