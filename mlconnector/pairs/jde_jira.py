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

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import AmbiguousWriteError, ConfigError, RecordError, RemoteError
from mlconnector.jde.ais import AisClient, Condition
from mlconnector.jde.config import JdeConfig, SourceSettings
from mlconnector.jde.julian import date_literal, parse_ais_date, to_datetime
from mlconnector.jira import adf
from mlconnector.jira.client import FieldInfo, JiraClient, resolve_field
from mlconnector.jira.connect import open_jira
from mlconnector.jira.sink import IssueWrite, IssueWriter
from mlconnector.jira.sink import jql_quote as _q
from mlconnector.mapping import SUMMARY_MAX, _field_value, content_hash
from mlconnector.pairs.peoplesoft_jira import describe
from mlconnector.state import State, iso, utcnow
from mlconnector.sync.echo import is_echo
from mlconnector.sync.engine import FATAL, PassContext, PassResult, Progress, no_progress, run_pass
from mlconnector.sync.keys import decode_key, encode_key, handle, legacy_handle
from mlconnector.sync.window import WindowRule

log = logging.getLogger("mlconnector.jde")

PAIR = "jde-jira"


def configured(cfg: Config) -> bool:
    return cfg.jde is not None


@contextlib.contextmanager
def connect(cfg: Config, secrets: SecretStore, redactor: Redactor, *, refresh_wsdl: bool = False) -> Iterator[Any]:
    """The pair's clients, open for one command: (AIS client, Jira client). The AIS session is logged out at
    the end: tokens are never kept between runs."""
    from mlconnector.audit import GLOBAL

    if cfg.jde is None:
        raise ConfigError(f"{cfg.path} has no [jde] section, which sync jde-jira needs. Copy it from "
                          f"README.md ('sync jde-jira'); examples/config.toml has the [jira] part.")
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


def make_pass(cfg: Config, clients: Any, state: State, audit: Audit, *, dry_run: bool = False,
              progress: Progress = no_progress, kinds: list[str] | None = None) -> JdeJiraPass:
    ais, jira = clients
    return JdeJiraPass(cfg, state, ais, jira, audit, dry_run=dry_run, progress=progress, kinds=kinds)


def before_replay(steps: JdeJiraPass, items: list[dict[str, Any]]) -> None:
    return None
STATUS_KIND = "jira_status"  # counts and replay items of the back-flow
BACKFLOW_WM = "jde-jira.backflow"
EXTRA = "jde-jira"  # state.extra[EXTRA]: {"posted": {change_id: {...}}, "webhook_events": [...], "webhook": {...}}
JIRA_TS_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Target:
    project: str
    issue_type_ids: dict[str, str]  # source name -> issue type id
    fields: dict[str, FieldInfo]  # JDE column alias -> Jira field
    key_field: FieldInfo | None
    labels: list[str]
    me: str  # accountId of the connector's own Jira user


def parse_jira_ts(value: str) -> datetime:
    for fmt in JIRA_TS_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    return datetime.fromisoformat(value)


def order_label(src: SourceSettings, order_number: str, order_type: str) -> str:
    """The order's handle on its Jira issue (a label): injective, see sync/keys.py."""
    return handle(src.label, (order_number, order_type))


class JdeJiraPass:
    def __init__(self, cfg: Config, state: State, ais: AisClient, jira: JiraClient, audit: Audit, *,
                 dry_run: bool = False, progress: Progress = no_progress, now: datetime | None = None,
                 kinds: list[str] | None = None) -> None:
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
        self.ctx = PassContext(PAIR, state, audit, dry_run=dry_run, progress=progress, describe=describe,
                               **({"now": now} if now else {}))
        self.result = self.ctx.result
        self.now = self.ctx.now
        # UPMJ has no time part: windows overlap by whole days and rows are de-duplicated with TDAY (pitfall 11).
        self.window = WindowRule(timedelta(days=self.jde.overlap_days))
        self.selected = kinds
        self.target: Target | None = None
        self.book: dict[str, Any] = state.extra.setdefault(EXTRA, {})
        self.book.setdefault("posted", {})
        self.book.setdefault("webhook_events", [])
        self.writer = IssueWriter.for_pass(self.ctx, jira, cfg.jira, self.project,
                                           lambda kind: self.target.issue_type_ids[kind] if self.target else "")

    # -- setup -----------------------------------------------------------------------------------
    @property
    def project(self) -> str:
        return self.jde.project or self.cfg.jira.project

    def prepare(self) -> Target:
        """Resolve the configuration's names against Jira's metadata; a mismatch is a ConfigError."""
        if self.target is not None:
            return self.target
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

    # -- the engine's steps ----------------------------------------------------------------------
    def run(self, since: datetime | None = None) -> PassResult:
        return run_pass(self, since)

    def resolve_pending(self) -> None:
        self.writer.resolve_pending(list(self.jde.sources))
        self.resolve_pending_posts()

    def entities(self) -> list[str]:
        every = [s.name for s in self.jde.enabled_sources()] + ([STATUS_KIND] if self.jde.backflow else [])
        return [k for k in every if self.selected is None or k in self.selected]

    def blocked(self, entity: str) -> str | None:
        return None

    def sync_entity(self, entity: str, since: datetime | None) -> None:
        if entity == STATUS_KIND:
            self.backflow()
        else:
            self.sync_source(self.jde.sources[entity], since)

    def replay_kinds(self) -> list[str]:
        return [STATUS_KIND, *self.jde.sources]

    def retry(self, item: dict[str, Any]) -> None:
        kind = item["kind"]
        if kind != STATUS_KIND:
            self.process_rows(self.jde.sources[kind], [item["row"]])
            return
        change = {k: v for k, v in item["row"].items() if k not in ("state", "at", "note")}
        state = self.book["posted"].get(change["change_id"], {}).get("state")
        if state == "done":
            self.state.dequeue(kind, item["key"], what="status")
        elif state == "pending" and self._jde_status(change) == change["code"]:
            self._mark_done(change, "resolved_pending")
        else:
            self.post_change(change)

    def requests(self) -> dict[str, int]:
        return {"jde": self.ais.http.requests_made, "jira": self.jira.http.requests_made}

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
        start = self.window.start(self.state, f"jde.{src.name}", src.initial_since, since)
        return start.astimezone(self.jde.server_utc_offset).date()

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
        if not self.dry_run and self.window.advance(self.state, wm_name, until, since):
            self.state.watermarks_moved = True

    def map_order(self, src: SourceSettings, row: dict[str, Any]) -> IssueWrite:
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
        key = encode_key((number, otype))
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
        return IssueWrite(kind=src.name, key=key, ts=ts,
                          status_code=status, target_status=self.jde.status_from_jde.get(status),
                           create_fields=create, edit_fields=fields, hash=content_hash(fields, ""), label=label,
                          legacy_label=legacy_handle(src.label, (number, otype)))

    def process_rows(self, src: SourceSettings, rows: list[dict[str, Any]]) -> datetime | None:
        """Map and write one window of rows; return the newest row time read (for the watermark)."""
        kind = src.name
        mapped: dict[str, tuple[IssueWrite, dict[str, Any]]] = {}
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
                    if is_echo(author, {self.target.me}, None, None):
                        continue  # written by the connector itself (forward flow): never echo it back
                    code = self._code_for(to)
                    order_number, order_type = decode_key(okey)
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
            self.ctx.planned(STATUS_KIND, change["order"], "post", issue=change["issue"],
                             status=f"{change['to']} -> JDE {change['code']}")
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

    # -- failures ------------------------------------------------------------------------------
    def _fail(self, kind: str, key: str, row: dict[str, Any], exc: Exception) -> None:
        self.ctx.fail(kind, key, row, exc, what="status" if kind == STATUS_KIND else "record")


def _row_id(src: SourceSettings, row: dict[str, Any]) -> str:
    import hashlib
    import json

    number = row.get(src.alias("order_number"))
    if number not in (None, ""):
        return encode_key((str(number), str(row.get(src.alias("order_type")) or "")))
    blob = json.dumps(row, sort_keys=True, default=str)
    return "invalid-row-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


# -- reconcile (mlconnector/reconcile.py) ------------------------------------------------------------
def reconcile_scope(steps: JdeJiraPass) -> Any:
    """What `reconcile jde-jira` reads and maps: each enabled source's orders through this pass's own browse
    and mapping (no money: work and change orders carry no amount the issues show). Statuses are compared
    as the forward flow maps them; a status changed in Jira and not posted back to JD Edwards yet shows as
    drifted (changed on the target side) until a pass posts it."""
    from mlconnector.reconcile_types import Scope

    target = steps.prepare()
    sources = {s.name: s for s in steps.jde.enabled_sources()}

    def rows(kind: str, start: datetime, _end: datetime) -> Iterator[list[dict[str, Any]]]:
        src = sources[kind]
        day = start.astimezone(steps.jde.server_utc_offset).date()
        order_by = [c for c in (src.alias("updated_date"), src.alias("updated_time")) if c]
        yield steps.ais.browse(src.table, steps._columns(src), steps._conditions(src, day), order_by)

    def plan(kind: str, rows: list[dict[str, Any]]) -> None:  # the pass is a planning pass: it writes nothing
        steps.process_rows(sources[kind], rows)

    return Scope(kinds=list(sources), initial_since=lambda kind: sources[kind].initial_since, rows=rows,
                 map=lambda kind, row: steps.map_order(sources[kind], row),
                 row_key=lambda kind, row: _row_id(sources[kind], row), kind_label=lambda kind: sources[kind].label,
                 field_names={f.id: alias for alias, f in target.fields.items()},
                 plan=plan, full_read=lambda kind, start: start <= sources[kind].initial_since)
