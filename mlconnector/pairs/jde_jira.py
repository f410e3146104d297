"""One pass of `sync jde-jira`: JDE work orders and change orders -> Jira issues; Jira status -> JDE.

Forward (JDE -> Jira), with the same crash-safety rules as the PeopleSoft pair:
- before a create, the key-map entry is saved as pending with the label that names the order; the next
  pass resolves a pending entry by one label search, so a pass killed between the create and the save
  never creates the issue twice;
- edits and transitions are idempotent (edit only on a content-hash change; a transition checks the
  current status first);
- a source's watermark moves only after every row of its window was written, found unchanged or queued,
  and the state holding those results was saved. UPMJ has day granularity, so each window re-reads
  ``overlap_days`` and rows are de-duplicated on (UPMJ, TDAY) and the content hash.

Back (Jira -> JDE):
- issues updated since the back-flow watermark (minus an overlap) are read with /search/jql
  (``updated >= <epoch ms>``) plus any issues named by queued webhook events; their changelog decides
  whether the status really changed;
- changes authored by the connector's own account (GET /myself) are ignored, so the connector's own
  transitions never echo back to JDE; a change whose JDE code is already the order's status is not sent;
- each change is recorded by its changelog history id: marked pending and saved before the
  orchestration call, done after it. A pending mark left by a killed pass is settled by reading the
  order's status in JDE before anything is posted again; a failed call is queued for replay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlconnector.audit import Audit
from mlconnector.config import Config
from mlconnector.errors import (
    EXIT_OK,
    EXIT_RECORDS_FAILED,
    AmbiguousWriteError,
    ConfigError,
    RecordError,
    RemoteError,
)
from mlconnector.jde.ais import AisClient, Condition
from mlconnector.jde.config import JdeConfig, SourceSettings
from mlconnector.jde.julian import date_literal, parse_ais_date, to_datetime
from mlconnector.jira import adf
from mlconnector.jira.client import FieldInfo, JiraClient, error_text, resolve_field
from mlconnector.mapping import LABEL_SAFE, SUMMARY_MAX, _field_value, content_hash
from mlconnector.pairs.issues import FATAL, IssueWriter
from mlconnector.pairs.issues import jql_quote as _q
from mlconnector.pairs.peoplesoft_jira import Counts, PassResult, Progress, _noop
from mlconnector.state import State, iso, utcnow

log = logging.getLogger("mlconnector.jde")

PAIR = "jde-jira"
STATUS_KIND = "jira_status"  # counts and replay items of the back-flow
BACKFLOW_WM = "jde-jira.backflow"
EXTRA = "jde-jira"  # state.extra[EXTRA]: {"posted": {change_id: {...}}, "webhook_events": [...], "webhook": {...}}
JIRA_TS_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")


@dataclass
class JdeCounts(Counts):
    posted: int = 0  # status changes posted to the JDE orchestration


@dataclass
class JdePassResult(PassResult):
    pair: str = PAIR

    def kind(self, kind: str) -> JdeCounts:  # type: ignore[override]
        c = self.counts.setdefault(kind, JdeCounts())
        assert isinstance(c, JdeCounts)
        return c


@dataclass
class Target:
    project: str
    issue_type_ids: dict[str, str]  # source name -> issue type id
    fields: dict[str, FieldInfo]  # JDE column alias -> Jira field
    key_field: FieldInfo | None
    labels: list[str]
    me: str  # accountId of the connector's own Jira user


@dataclass
class MappedOrder:
    source: str
    key: str  # "DOCO|DCTO"
    order_number: str
    order_type: str
    ts: datetime
    status_code: str
    target_status: str | None
    create_fields: dict[str, Any]
    edit_fields: dict[str, Any]
    hash: str
    label: str


def parse_jira_ts(value: str) -> datetime:
    for fmt in JIRA_TS_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    return datetime.fromisoformat(value)


def order_label(src: SourceSettings, order_number: str, order_type: str) -> str:
    return LABEL_SAFE.sub("_", f"{src.label}-{order_number}-{order_type}")[:255]


class JdeJiraPass:
    def __init__(self, cfg: Config, state: State, ais: AisClient, jira: JiraClient, audit: Audit, *,
                 dry_run: bool = False, progress: Progress = _noop, now: datetime | None = None) -> None:
        if cfg.jde is None:
            raise ConfigError(f"{cfg.path} has no [jde] section, which sync jde-jira needs. Copy it from "
                              f"README.md ('sync jde-jira'); examples/config.toml has the [jira] part.")
        self.cfg = cfg
        self.jde: JdeConfig = cfg.jde
        self.state = state
        self.ais = ais
        self.jira = jira
        self.audit = audit
        self.dry_run = dry_run
        self.progress = progress
        self.now = now or utcnow()
        self.result = JdePassResult(dry_run=dry_run)
        self.target: Target | None = None
        self.book: dict[str, Any] = state.extra.setdefault(EXTRA, {})
        self.book.setdefault("posted", {})
        self.book.setdefault("webhook_events", [])
        self.writer = IssueWriter(
            jira, state, audit, counts=self.result.kind, fail=self._fail, project=self.project,
            issue_type_id=lambda kind: self.target.issue_type_ids[kind] if self.target else "",
            bulk_size=cfg.jira.bulk_size, max_workers=cfg.jira.max_workers, dry_run=dry_run)

    # -- setup -----------------------------------------------------------------------------------
    @property
    def project(self) -> str:
        return self.jde.project or self.cfg.jira.project

    def prepare(self) -> Target:
        """Resolve the configuration's names against Jira's metadata; a mismatch is a ConfigError."""
        all_fields = self.jira.fields()
        fields = {alias: resolve_field(all_fields, wanted, f"jde.fields.{alias}")
                  for alias, wanted in self.jde.fields.items() if wanted}
        key_field = resolve_field(all_fields, self.cfg.jira.key_field, "jira.key_field") \
            if self.cfg.jira.key_field else None
        project = self.jira.project(self.project)
        if project is None:
            raise ConfigError(f"Jira has no project {self.project!r} visible to this user (jde.project, else "
                              f"jira.project). Check the key and the user's Browse permission.")
        types = {str(t.get("name")): str(t.get("id")) for t in project.get("issueTypes", [])}
        ids: dict[str, str] = {}
        for src in self.jde.enabled_sources():
            if src.issue_type not in types:
                raise ConfigError(f"jde.{src.name}.issue_type = {src.issue_type!r} is not an issue type of project "
                                  f"{self.project} (it has: {', '.join(sorted(types))}).")
            ids[src.name] = types[src.issue_type]
        statuses = self.jira.project_statuses(self.project)
        for src in self.jde.enabled_sources():
            known = statuses.get(src.issue_type, set())
            for code, status in self.jde.status_from_jde.items():
                if known and status not in known:
                    raise ConfigError(f"jde.status_from_jde.{code} = {status!r} is not a status of issue type "
                                      f"{src.issue_type!r} in {self.project} (it has: {', '.join(sorted(known))}).")
            for status in self.jde.status_to_jde:
                if known and status not in known:
                    raise ConfigError(f"jde.status_to_jde has {status!r}, which is not a status of issue type "
                                      f"{src.issue_type!r} in {self.project} (it has: {', '.join(sorted(known))}).")
        me = str(self.jira.myself().get("accountId") or "")
        self.target = Target(project=self.project, issue_type_ids=ids, fields=fields, key_field=key_field,
                             labels=list(self.cfg.jira.labels), me=me)
        return self.target

    # -- the pass --------------------------------------------------------------------------------
    def run(self, since: datetime | None = None) -> JdePassResult:
        started = time.monotonic()
        try:
            if self.target is None:
                self.prepare()
            self.writer.resolve_pending(list(self.jde.sources))
            self.resolve_pending_posts()
            if not self.dry_run:
                self.auto_replay()
            for src in self.jde.enabled_sources():
                self.progress("kind", kind=src.name)
                try:
                    self.sync_source(src, since)
                except FATAL:
                    raise
                except RemoteError as exc:
                    # The window could not be read completely: its watermark stays, the next run reads it
                    # again, and the other source still gets its turn.
                    self.result.kind(src.name).failed += 1
                    self.result.failures.append({"kind": src.name, "key": "(window)", "what": "read",
                                                 "error": exc.message})
                    self.audit.write("read_failed", src.name, error=exc.message, raw=exc.raw)
            if self.jde.backflow:
                self.progress("kind", kind=STATUS_KIND)
                self.backflow()
        except FATAL as exc:
            self.result.fatal = self.audit.redactor(exc.message)
            self.result.exit_code = exc.exit_code
            self.audit.write("pass_aborted", error=exc.message)
        finally:
            if not self.dry_run and self.state.dirty:
                self.state.save()
            self.result.seconds = round(time.monotonic() - started, 3)
            self.result.queue_size = len(self.state.replay)
            self.result.requests = {"jde": self.ais.http.requests_made, "jira": self.jira.http.requests_made}
        if self.result.fatal is None:
            failed = any(c.failed for c in self.result.counts.values())
            self.result.exit_code = EXIT_RECORDS_FAILED if failed else EXIT_OK
        return self.result

    # -- forward: JDE -> Jira --------------------------------------------------------------------
    def _columns(self, src: SourceSettings) -> list[str]:
        cols = [c for c in src.columns.values() if c]
        cols += [alias for alias in self.jde.fields if alias]
        return list(dict.fromkeys(cols))

    def _conditions(self, src: SourceSettings, start: date) -> list[Condition]:
        conds = [Condition(src.control_id("updated_date"), "GREATER_EQUAL",
                           [date_literal(start, self.ais.date_pattern())])]
        if src.order_types and src.alias("order_type"):
            op = "EQUAL" if len(src.order_types) == 1 else "LIST"
            conds.append(Condition(src.control_id("order_type"), op, list(src.order_types)))
        return conds

    def _window_start(self, src: SourceSettings, since: datetime | None) -> date:
        if since is not None:
            return since.astimezone(self.jde.server_utc_offset).date()
        wm = self.state.watermarks.get(f"jde.{src.name}")
        if wm is None:
            return src.initial_since.astimezone(self.jde.server_utc_offset).date()
        # UPMJ has no time part: overlap by whole days and de-duplicate with TDAY (pitfall 11).
        return datetime.fromisoformat(wm).astimezone(self.jde.server_utc_offset).date() - timedelta(
            days=self.jde.overlap_days)

    def sync_source(self, src: SourceSettings, since: datetime | None) -> None:
        start = self._window_start(src, since)
        order_by = [c for c in (src.alias("updated_date"), src.alias("updated_time")) if c]
        rows = self.ais.browse(src.table, self._columns(src), self._conditions(src, start), order_by)
        self.result.kind(src.name).read += len(rows)
        self.progress("read", kind=src.name, n=len(rows))
        newest = self.process_rows(src, rows)
        if newest is not None:
            self._advance(f"jde.{src.name}", newest, since)

    def _advance(self, wm_name: str, until: datetime, since: datetime | None) -> None:
        if self.dry_run:
            return
        old = self.state.watermarks.get(wm_name)
        if since is not None and old is not None and since > datetime.fromisoformat(old):
            return  # a --since later than the watermark skipped rows: keep the watermark where it was
        if old is None or until > datetime.fromisoformat(old):
            self.state.watermarks[wm_name] = iso(until)
            self.state.dirty = True
        self.state.save()

    def map_order(self, src: SourceSettings, row: dict[str, Any]) -> MappedOrder:
        assert self.target is not None
        t = self.target
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
        key = f"{number}|{otype}"
        shown = f"{number} ({otype})" if otype else number
        try:
            updated = parse_ais_date(cell("updated_date"))
            if updated is None:
                raise ValueError("blank")
            ts = to_datetime(updated, cell("updated_time") or 0, self.jde.server_utc_offset).astimezone(UTC)
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
        priority = self.jde.priority_map.get(prio_code, self.jde.default_priority)
        if priority:
            fields["priority"] = {"name": priority}
        account = self.jde.assignee_map.get(assigned_s)
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
        return MappedOrder(source=src.name, key=key, order_number=number, order_type=otype, ts=ts,
                           status_code=status, target_status=self.jde.status_from_jde.get(status),
                           create_fields=create, edit_fields=fields, hash=content_hash(fields, ""), label=label)

    def process_rows(self, src: SourceSettings, rows: list[dict[str, Any]]) -> datetime | None:
        """Map and write one window of rows; return the newest row time read (for the watermark)."""
        kind = src.name
        mapped: dict[str, tuple[MappedOrder, dict[str, Any]]] = {}
        newest: datetime | None = None
        for row in rows:
            try:
                rec = self.map_order(src, row)
            except RecordError as exc:
                self._fail(kind, _row_id(src, row), row, exc)
                continue
            newest = rec.ts if newest is None or rec.ts > newest else newest
            prev = mapped.get(rec.key)
            if prev is None or rec.ts >= prev[0].ts:
                mapped[rec.key] = (rec, row)
        self.writer.write(kind, mapped.values())
        return newest

    # -- back: Jira status -> JDE orchestration --------------------------------------------------
    def _issue_index(self, issues: set[str]) -> dict[str, tuple[SourceSettings, str, dict[str, Any]]]:
        """Jira issue key -> (source, order key, entry) for those of ``issues`` this connector created."""
        sources = {s.name: s for s in self.jde.sources.values()}
        found = self.state.find_issues(list(sources), issues)
        return {issue: (sources[kind], key, entry) for issue, (kind, key, entry) in found.items()}

    def _code_for(self, jira_status: str) -> str | None:
        for name, code in self.jde.status_to_jde.items():
            if name.lower() == jira_status.lower():
                return code
        return None

    def backflow(self) -> None:
        assert self.target is not None
        counts = self.result.kind(STATUS_KIND)
        posted: dict[str, dict[str, Any]] = self.book["posted"]
        self._take_webhook_events()
        overlap = timedelta(minutes=self.jde.backflow_overlap_minutes)
        wm = self.state.watermarks.get(BACKFLOW_WM)
        start = (datetime.fromisoformat(wm) if wm else self.now) - overlap
        start_ms = int(start.timestamp() * 1000)
        labels = [s.label for s in self.jde.enabled_sources()]
        jql = (f"project = {_q(self.project)} AND labels in ({', '.join(_q(x) for x in labels)}) "
               f"AND updated >= {start_ms} ORDER BY updated ASC, key ASC")
        histories: dict[str, list[dict[str, Any]]] = {}
        newest_ms: int | None = None
        # expand=changelog returns each issue's latest 100 histories inline; longer ones are paged below.
        current: dict[str, str] = {}  # issue -> its status now
        for issue in self.jira.search(jql, ["labels", "status", "updated"], expand="changelog"):
            key = str(issue.get("key"))
            current[key] = str(((issue.get("fields") or {}).get("status") or {}).get("name") or "")
            upd = (issue.get("fields") or {}).get("updated")
            if upd:
                ms = int(parse_jira_ts(str(upd)).timestamp() * 1000)
                newest_ms = ms if newest_ms is None or ms > newest_ms else newest_ms
            cl = issue.get("changelog") or {}
            hs = cl.get("histories")
            if hs is None or int(cl.get("total", 0)) > len(hs):
                hs = list(self.jira.changelog(key))
            histories[key] = hs
        signalled: dict[str, set[str]] = {}
        for ev in self.book["webhook_events"]:
            signalled.setdefault(str(ev.get("issue")), set()).add(str(ev.get("changelog_id") or ""))
        index = self._issue_index(set(histories) | set(signalled))
        for key in signalled:
            if key not in histories and key in index:
                histories[key] = list(self.jira.changelog(key))
                fields = (self.jira.get_issue(key, "status") or {}).get("fields") or {}
                current[key] = str((fields.get("status") or {}).get("name") or "")
        changes: list[dict[str, Any]] = []
        for key, hs in histories.items():
            if key not in index:
                continue
            src, okey, entry = index[key]
            for h in hs:
                hid = str(h.get("id"))
                created_ms = int(parse_jira_ts(str(h.get("created"))).timestamp() * 1000)
                if created_ms < start_ms and hid not in signalled.get(key, set()):
                    continue
                author = str((h.get("author") or {}).get("accountId") or "")
                for item in h.get("items") or []:
                    if (item.get("fieldId") or item.get("field")) != "status":
                        continue
                    frm, to = str(item.get("fromString") or ""), str(item.get("toString") or "")
                    if frm == to:
                        continue  # the changelog says nothing really changed
                    cid = f"{entry.get('id') or key}:{hid}"
                    if cid in posted:
                        continue
                    if author and author == self.target.me:
                        continue  # written by the connector itself (forward flow): never echo it back
                    code = self._code_for(to)
                    order_number, order_type = okey.split("|", 1)
                    change = {"change_id": cid, "issue": key, "source": src.name, "order": okey,
                              "order_number": order_number, "order_type": order_type, "from": frm, "to": to,
                              "code": code, "author": author, "created_ms": created_ms}
                    # A change older than the window came only by a webhook event (late or replayed):
                    # posted only while it is still the issue's status, never to move JDE back.
                    superseded = created_ms < start_ms and current.get(key, "").lower() != to.lower()
                    if code is None or entry.get("status") == code or superseded:
                        note = ("no JDE status mapped" if code is None else "JDE already has this status"
                                if not superseded else f"no longer the issue's status (now {current.get(key)})")
                        if not self.dry_run:
                            posted[cid] = {**change, "state": "skipped", "note": note}
                            self.state.dirty = True
                        counts.unchanged += 1
                        self.audit.write("skipped", STATUS_KIND, cid, issue=key, to=to, note=note)
                        continue
                    changes.append(change)
        counts.read += len(changes)
        self._keep_webhook_registered()
        for change in sorted(changes, key=lambda c: (c["created_ms"], c["change_id"])):
            self.post_change(change)
        if not self.dry_run:
            if newest_ms is not None:
                new_wm = datetime.fromtimestamp(newest_ms / 1000, UTC)
                if wm is None or new_wm > datetime.fromisoformat(wm):
                    self.state.watermarks[BACKFLOW_WM] = iso(new_wm)
            elif wm is None:
                self.state.watermarks[BACKFLOW_WM] = iso(self.now)
            self.book["webhook_events"] = []
            self._prune(start_ms)
            self.state.dirty = True
            self.state.save()

    def _keep_webhook_registered(self) -> None:
        """OAuth apps only: register the dynamic webhook, refresh it at 25 days (it expires at 30)."""
        if self.dry_run or not self.jde.webhook_url or self.cfg.jira.auth != "oauth2":
            return
        from mlconnector.webhook import ensure_dynamic_webhook

        try:
            done = ensure_dynamic_webhook(self.jira.http, self.book, self.jde.webhook_url,
                                          f"project = {_q(self.project)}", self.now)
        except FATAL:
            raise
        except RemoteError as exc:  # polling is the safety net: a webhook problem never fails the pass
            log.warning("Jira webhook registration failed: %s", exc.message)
            self.audit.write("webhook_failed", error=exc.message)
            return
        if done != "ok":
            self.audit.write(f"webhook_{done}", note=self.jde.webhook_url)
            self.state.dirty = True

    def _prune(self, start_ms: int) -> None:
        """Forget settled changes older than any window will look at again (keeps the state small)."""
        horizon = start_ms - int(timedelta(days=2).total_seconds() * 1000)
        posted = self.book["posted"]
        for cid in [c for c, p in posted.items() if p.get("state") in ("done", "skipped")
                    and int(p.get("created_ms", 0)) < horizon]:
            del posted[cid]

    def _inputs(self, change: dict[str, Any]) -> dict[str, str]:
        names = self.jde.orchestration.inputs
        values = {"order_number": change["order_number"], "order_type": change["order_type"],
                  "status_code": change["code"], "jira_status": change["to"], "jira_key": change["issue"],
                  "change_id": change["change_id"]}
        return {names[k]: str(v) for k, v in values.items() if names.get(k)}

    def post_change(self, change: dict[str, Any]) -> bool:
        """Call the orchestration for one status change, exactly once; True when JDE has it."""
        counts = self.result.kind(STATUS_KIND)
        cid = change["change_id"]
        posted = self.book["posted"]
        if self.dry_run:
            counts.posted += 1
            return True
        posted[cid] = {**change, "state": "pending"}
        self.state.dirty = True
        self.state.save()  # the mark is on disk before JDE can act, so a killed pass never posts it twice
        name = self.jde.orchestration.name
        try:
            self.ais.orchestrate(name, self._inputs(change), self.jde.orchestration.input_format)
        except FATAL:
            raise  # the pending mark stays; the next pass checks JDE before posting again
        except AmbiguousWriteError as exc:
            self._fail(STATUS_KIND, cid, change, exc)  # stays pending: verified against JDE before a retry
            return False
        except RemoteError as exc:
            posted[cid]["state"] = "failed"
            self._fail(STATUS_KIND, cid, change, exc)
            return False
        self._mark_done(change, "posted")
        counts.posted += 1
        return True

    def _mark_done(self, change: dict[str, Any], action: str) -> None:
        cid = change["change_id"]
        self.book["posted"][cid] = {**change, "state": "done", "at": iso(utcnow())}
        entry = self.state.entry(change["source"], change["order"])
        if entry is not None:
            # JDE now holds this code: the forward flow must not move the issue back when it reads the row.
            entry["status"] = change["code"]
        self.state.dequeue(STATUS_KIND, cid, what="status")
        self.audit.write(action, STATUS_KIND, cid, issue=change["issue"], order=change["order"], to=change["to"],
                         code=change["code"])
        self.state.dirty = True
        self.state.save()

    def _jde_status(self, change: dict[str, Any]) -> str | None:
        src = self.jde.sources[change["source"]]
        conds = [Condition(src.control_id("order_number"), "EQUAL", [change["order_number"]])]
        if src.alias("order_type") and change["order_type"]:
            conds.append(Condition(src.control_id("order_type"), "EQUAL", [change["order_type"]]))
        rows = self.ais.browse(src.table, [src.alias("order_number"), src.alias("status")], conds, page_size=5)
        return str(rows[0].get(src.alias("status")) or "").strip() if rows else None

    def resolve_pending_posts(self) -> None:
        """Settle posts a killed or cut-off pass left pending: done if JDE already shows the status."""
        pending = [p for p in self.book["posted"].values() if p.get("state") == "pending"]
        for change in pending:
            try:
                current = self._jde_status(change)
            except FATAL:
                raise
            except RemoteError as exc:  # cannot tell yet: keep the mark, look again next pass
                self.audit.write("resolve_failed", STATUS_KIND, change["change_id"], error=exc.message)
                continue
            if self.dry_run:
                continue
            if current == change["code"]:
                self._mark_done(change, "resolved_pending")
            else:
                self.audit.write("resolved_pending", STATUS_KIND, change["change_id"], issue=change["issue"],
                                 note="JDE does not show the status; posting again")
                self.post_change({k: v for k, v in change.items() if k not in ("state", "at", "note")})

    def _take_webhook_events(self) -> None:
        """Move events queued by `mlconnector webhook serve` into the state (they name issues to check)."""
        from mlconnector.webhook import drain_events, spool_path

        if self.dry_run:
            return

        def commit(events: list[dict[str, Any]]) -> None:
            self.book["webhook_events"] = self.book["webhook_events"] + events
            self.state.dirty = True
            self.state.save()

        drain_events(spool_path(self.cfg.state_file), commit)

    # -- failures and replay ---------------------------------------------------------------------
    def _fail(self, kind: str, key: str, row: dict[str, Any], exc: Exception) -> None:
        counts = self.result.kind(kind)
        counts.failed += 1
        # Remote answers can echo credentials (a proxy page quoting the Authorization header, say).
        redact = self.audit.redactor
        message = redact(error_text(exc) if isinstance(exc, RemoteError) and exc.system == "Jira" else str(exc))
        raw = redact(getattr(exc, "raw", "") or "")
        what = "status" if kind == STATUS_KIND else "record"
        self.result.failures.append({"kind": kind, "key": key, "what": what, "error": message})
        self.audit.write("failed", kind, key, what=what, error=message, raw=raw)
        if self.dry_run:
            return
        self.state.enqueue(kind, key, row, message, raw, what=what)
        counts.queued += 1

    def auto_replay(self) -> None:
        # Every pass retries every queued item of this pair: `replay retry` drives the PeopleSoft pair only.
        items = [i for i in self.state.replay
                 if i["kind"] == STATUS_KIND or i["kind"] in self.jde.sources]
        if items:
            self.replay(items)

    def replay(self, items: Iterable[dict[str, Any]]) -> tuple[int, int]:
        ok = bad = 0
        for item in list(items):
            kind = item["kind"]
            before = len(self.result.failures)
            if kind == STATUS_KIND:
                change = {k: v for k, v in item["row"].items() if k not in ("state", "at", "note")}
                state = self.book["posted"].get(change["change_id"], {}).get("state")
                if state == "done":
                    self.state.dequeue(kind, item["key"], what="status")
                elif state == "pending":
                    if self._jde_status(change) == change["code"]:
                        self._mark_done(change, "resolved_pending")
                    else:
                        self.post_change(change)
                else:
                    self.post_change(change)
            else:
                src = self.jde.sources[kind]
                self.process_rows(src, [item["row"]])
            if len(self.result.failures) == before and self.state.find_replay(item["id"]) is None:
                ok += 1
                self.result.kind(kind).replayed += 1
                self.audit.write("replayed", kind, item["key"])
            else:
                bad += 1
        return ok, bad


def _row_id(src: SourceSettings, row: dict[str, Any]) -> str:
    import hashlib
    import json

    number = row.get(src.alias("order_number"))
    if number not in (None, ""):
        return f"{number}|{row.get(src.alias('order_type')) or ''}"
    blob = json.dumps(row, sort_keys=True, default=str)
    return "invalid-row-" + hashlib.sha256(blob.encode()).hexdigest()[:10]
