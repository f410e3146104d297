"""One pass of `sync peoplesoft-jira`: PeopleSoft rows -> mapping -> Jira writes -> state.

Crash safety (issue creates, edits and transitions: see jira/sink.py, shared with other pairs):
- Comments are marked pending before they are posted and carry a reference marker; a pending
  comment is looked up on the issue before it is posted again.
- A kind's watermark moves only after every row of a window was written, found unchanged or
  queued, and only after the state holding those results was saved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import ISSUE_KINDS, KINDS, Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import (
    EXIT_CONFIG,
    AmbiguousWriteError,
    ConfigError,
    ConnectorError,
    RecordError,
    RemoteError,
)
from mlconnector.jira import adf
from mlconnector.jira.client import JiraClient, error_text, resolve_field
from mlconnector.jira.connect import open_jira
from mlconnector.jira.sink import IssueWrite, IssueWriter
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
from mlconnector.sync import reference
from mlconnector.sync.echo import is_echo
from mlconnector.sync.engine import FATAL, PassContext, PassResult, Progress, no_progress, run_pass
from mlconnector.sync.keys import comment_key, decode_key
from mlconnector.sync.reference import SOURCE, FullRead, ReferenceStore, ref_field
from mlconnector.sync.window import WindowRule

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


def make_pass(cfg: Config, clients: Any, state: State, audit: Audit, *, dry_run: bool = False,
              progress: Progress = no_progress, kinds: list[str] | None = None) -> PeopleSoftJiraPass:
    ps, jira, readers = clients
    return PeopleSoftJiraPass(cfg, state, ps, jira, audit, dry_run=dry_run, progress=progress, readers=readers,
                              kinds=kinds)


def before_replay(steps: PeopleSoftJiraPass, items: list[dict[str, Any]]) -> None:
    """Swap queued rows for their current version in PeopleSoft, so a fix made at the source is sent."""
    try:
        steps.refresh_items(items)
    except RemoteError as exc:
        # PeopleSoft could not be re-read: retry with the rows as they were queued.
        steps.audit.write("refresh_failed", error=steps.audit.redactor(exc.message))


def describe(exc: Exception) -> str:
    """A failure's message: Jira's answers are read for their own error texts."""
    return error_text(exc) if isinstance(exc, RemoteError) and exc.system == "Jira" else str(exc)


class _Vendors:
    """Vendor facts for mapping: the key map's vendor rows, then (until the first save migrates them) the
    vendor cache an earlier version kept in the state's header."""

    def __init__(self, store: ReferenceStore, legacy: dict[str, dict[str, Any]]) -> None:
        self.store = store
        self.legacy = legacy

    def get(self, key: str, /) -> dict[str, Any] | None:
        return self.store.get(key) or self.legacy.get(key)


class PeopleSoftJiraPass:
    """The steps of `sync peoplesoft-jira` for the engine (sync/engine.py): vendors are read (in full on their
    cadence, or by window where the source has a stamp) and diffed into the key map, then each issue kind and
    its comments are read, mapped and written through the Jira issue writer, and the open documents of the
    vendors that changed are re-mapped from the state and written where their content changed."""

    def __init__(self, cfg: Config, state: State, ps: QASClient, jira: JiraClient, audit: Audit, *,
                 dry_run: bool = False, progress: Progress = no_progress, now: datetime | None = None,
                 readers: dict[str, Any] | None = None, kinds: list[str] | None = None) -> None:
        self.cfg = cfg
        # Per-kind source readers with read_window(query, start, end); QAS unless configured otherwise.
        self.readers = readers or {}
        self.state = state
        self.ps = ps
        self.jira = jira
        self.audit = audit
        self.dry_run = dry_run
        self.progress = progress
        self.ctx = PassContext(PAIR, state, audit, dry_run=dry_run, progress=progress, describe=describe,
                               **({"now": now} if now else {}))
        self.result = self.ctx.result
        self.now = self.ctx.now
        self.window = WindowRule(timedelta(minutes=cfg.peoplesoft.overlap_minutes))
        self.selected = kinds
        self._me: str | None = None
        self.target: JiraTarget | None = None
        self.writer = IssueWriter.for_pass(self.ctx, jira, cfg.jira, cfg.jira.project,
                                           lambda kind: self.target.issue_type_ids[kind] if self.target else "")
        self.vendors = ReferenceStore(state, "vendors", self._kinds())
        self.vendor_facts = _Vendors(self.vendors, state.vendors)

    # -- setup -----------------------------------------------------------------------------------
    def prepare(self) -> JiraTarget:
        """Resolve names in the configuration against Jira's metadata; any mismatch is a ConfigError."""
        if self.target is not None:
            return self.target
        self._migrate_vendor_cache()
        j = self.cfg.jira
        all_fields = self.jira.fields()
        fields = {name: resolve_field(all_fields, wanted, f"jira.fields.{name}") for name, wanted in j.fields.items()}
        key_field = resolve_field(all_fields, j.key_field, "jira.key_field") if j.key_field else None
        project = self.jira.project(j.project)
        if project is None:
            raise ConfigError(f"jira.project = {j.project!r}: Jira has no such project visible to this user. Check "
                              f"the key (it is the prefix of the issue keys) and the user's Browse permission.")
        types = {str(t.get("name")): str(t.get("id")) for t in project.get("issueTypes", [])}
        ids: dict[str, str] = {}
        for kind in self._kinds():
            name = j.issue_types[kind]
            if name not in types:
                raise ConfigError(f"jira.issue_types.{kind} = {name!r} is not an issue type of project {j.project} "
                                  f"(it has: {', '.join(sorted(types))}). Add it to the project's scheme or change "
                                  f"the name.")
            ids[kind] = types[name]
        statuses = self.jira.project_statuses(j.project)
        for kind in self._kinds():
            known = statuses.get(j.issue_types[kind], set())
            for code, status in j.status_map.get(kind, {}).items():
                if known and status not in known:
                    raise ConfigError(
                        f"jira.status_map.{kind}.{code} = {status!r} is not a status of issue type "
                        f"{j.issue_types[kind]!r} in {j.project} (it has: {', '.join(sorted(known))}).")
        self.target = JiraTarget(project=j.project, issue_type_ids=ids, fields=fields, key_field=key_field,
                                 labels=j.labels, status_map=j.status_map, priority_by_amount=j.priority_by_amount,
                                 default_priority=j.default_priority)
        return self.target

    def _kinds(self) -> list[str]:
        return [k for k in ISSUE_KINDS if self.cfg.peoplesoft.records[k].enabled]

    # -- the engine's steps ----------------------------------------------------------------------
    def run(self, kinds: list[str] | None = None, since: datetime | None = None) -> PassResult:
        if kinds is not None:
            self.selected = kinds
        return run_pass(self, since)

    def resolve_pending(self) -> None:
        self.writer.resolve_pending(ISSUE_KINDS)

    def entities(self) -> list[str]:
        return [k for k in (self.selected or ["vendors", *ISSUE_KINDS]) if self.cfg.peoplesoft.records[k].enabled]

    def blocked(self, entity: str) -> str | None:
        # Without fresh vendor master data the issues would carry stale or missing vendor details, and their
        # watermarks would move past them: leave them for the next pass.
        if entity != "vendors" and any(e["kind"] == "vendors" for e in self.result.errors):
            return "vendors could not be read"
        return None

    def sync_entity(self, entity: str, since: datetime | None) -> None:
        if entity == "vendors":
            self.sync_vendors(since)
        else:
            self.sync_kind(entity, since)
            self.sync_comments(entity, since)

    def replay_kinds(self) -> list[str]:
        return ["vendors", *ISSUE_KINDS]

    def retry(self, item: dict[str, Any]) -> None:
        kind, what = item["kind"], item.get("what", "record")
        if kind == "vendors":
            self._replay_vendor(item)
        elif what == "comment":
            self.process_comments(kind, [item["row"]])
        else:
            self.process_rows(kind, [item["row"]])

    def requests(self) -> dict[str, int]:
        return {"peoplesoft": self.ps.http.requests_made, "jira": self.jira.http.requests_made}

    def _window(self, wm_name: str, initial: datetime, since: datetime | None) -> tuple[datetime, datetime]:
        return self.window.start(self.state, wm_name, initial, since), self.now

    def _advance(self, wm_name: str, until: datetime, since: datetime | None) -> None:
        if not self.dry_run and self.window.advance(self.state, wm_name, until, since):
            self.state.watermarks_moved = True

    def reader(self, kind: str) -> Any:
        return self.readers.get(kind, self.ps)

    # -- vendors ---------------------------------------------------------------------------------
    def sync_vendors(self, since: datetime | None) -> None:
        """Read the vendor master (in full on its cadence, or by window) and store the rows whose content
        changed; their open documents are marked for a re-map by the issue kinds that follow."""
        rs = self.cfg.peoplesoft.records["vendors"]
        # Marks only for kinds that have documents yet (a first pass has none: nothing can show a vendor).
        self.vendors.dependents = [k for k in self._kinds() if next(self.state.keymap.items(k), None) is not None]
        if rs.read == "full":
            self._read_vendors_in_full(rs, since)
            return
        start, end = self._window("vendors", rs.initial_since, since)
        for rows, until in self.reader("vendors").read_window(rs.query, start, end):
            if rows and not any(STAMP in row for row in rows):
                raise RemoteError(
                    f"Vendor query {rs.query} returns no {STAMP} column, so it cannot be read by window "
                    f"([peoplesoft.records.vendors] read = \"stamped\"). PS_VENDOR has no change stamp: set "
                    f"read = \"full\" (the default) with a query that takes no prompts, like ML_VENDOR_ALL, "
                    f"so the vendor master is read in full every full_read_every_hours and diffed; or add the "
                    f"stamp to the query's view.", system="PeopleSoft", exit_code=EXIT_CONFIG)
            for row in rows:
                self._vendor_row(row, stamped=True)
            self._advance("vendors", until, since)

    def _read_vendors_in_full(self, rs: Any, since: datetime | None) -> None:
        rule = FullRead(timedelta(hours=rs.full_read_every_hours))
        if not rule.due(self.state, "vendors", self.now, forced=since is not None):
            return  # between two full reads: no request at all
        reader = self.reader("vendors")
        if hasattr(reader, "read_all"):
            batches: Any = reader.read_all(rs.query)
        else:  # a CI reader: a Find of everything, then a Get per vendor (rows without a stamp are kept)
            batches = (rows for rows, _ in reader.read_window(rs.query, EPOCH, self.now))
        seen = 0
        try:
            for rows in batches:
                for row in rows:
                    self._vendor_row(row, stamped=False)
                    seen += 1
                    if seen % RELEASE_EVERY == 0:
                        self.state.release(can_save=not self.dry_run)  # memory stays flat over 50,000 rows
        except RemoteError as exc:
            if exc.exit_code == EXIT_CONFIG:
                raise
            raise RemoteError(f"{exc.message} (The vendor master is read in full: [peoplesoft.records.vendors] "
                              f"read = \"full\" sends no prompts, so query {rs.query} must take none; set "
                              f"read = \"stamped\" for a query that has BIND1/BIND2 date prompts.)",
                              system=exc.system, status=exc.status, raw=exc.raw) from None
        if not self.dry_run:
            rule.done(self.state, "vendors", self.now)

    def _vendor_row(self, row: dict[str, Any], *, stamped: bool) -> None:
        counts = self.result.kind("vendors")
        counts.read += 1
        try:
            key = natural_key("vendors", row)
            ts = iso(row_ts("vendors", row, key)) if stamped else None
        except RecordError as exc:
            self._fail("vendors", _row_id(row), row, exc)
            return
        vk = vendor_key(*decode_key(key))
        assert vk is not None
        if ts is not None and self.vendors.older(vk, ts):
            counts.unchanged += 1
            return
        facts = vendor_from_row(row, self.cfg.peoplesoft.records["vendors"].columns)
        if self.dry_run:
            entry = self.state.entry("vendors", vk)
            changed = entry is None or entry.get("hash") != reference.digest(facts)
        else:
            changed = self.vendors.store(vk, facts, ts)
            self.state.dequeue("vendors", key)
        if changed:
            counts.updated += 1
        else:
            counts.unchanged += 1

    def _migrate_vendor_cache(self) -> None:
        """Move the vendor cache an earlier version kept in the state's header into the key map (once)."""
        legacy = self.state.vendors
        if not legacy or self.dry_run:
            return
        for vk, cached in legacy.items():
            facts = {k: v for k, v in cached.items() if k != "ts"}
            ReferenceStore(self.state, "vendors").store(vk, facts, cached.get("ts") or None)
        legacy.clear()
        self.state.dirty = True

    # -- records ---------------------------------------------------------------------------------
    def sync_kind(self, kind: str, since: datetime | None) -> None:
        rs = self.cfg.peoplesoft.records[kind]
        start, end = self._window(kind, rs.initial_since, since)
        for rows, until in self.writer.overlapping(self.reader(kind).read_window(rs.query, start, end)):
            self.result.kind(kind).read += len(rows)
            self.progress("read", kind=kind, n=len(rows))
            self.process_rows(kind, rows)
            self._advance(kind, until, since)
        # After the window: documents it wrote already show the new vendor data and are found unchanged.
        self.refresh_dependents(kind)

    def process_rows(self, kind: str, rows: list[dict[str, Any]]) -> set[str]:
        """Map and write a batch of rows of one kind; return the keys that were fully handled."""
        assert self.target is not None
        mapped: dict[str, tuple[IssueWrite, dict[str, Any]]] = {}
        for row in rows:
            try:
                rec = map_record(self.cfg, self.target, kind, row, self.vendor_facts)
            except RecordError as exc:
                self._fail(kind, _row_id(row, kind), row, exc)
                continue
            prev = mapped.get(rec.key)
            if prev is None or rec.ts >= prev[0].ts:
                mapped[rec.key] = (rec, row)
        done = self.writer.write(kind, mapped.values())
        self._remember_sources(kind, mapped, done)
        return done

    def _remember_sources(self, kind: str, mapped: dict[str, tuple[IssueWrite, dict[str, Any]]],
                          done: set[str]) -> None:
        """Keep, in the key-map entry of each open document just written, the inputs its mapping needs and the
        vendor it shows, so a vendor change re-maps it without reading PeopleSoft (sync/reference.py). A closed
        document drops them: it no longer follows its vendor."""
        if self.dry_run:
            return
        cols = self.cfg.peoplesoft.records[kind].columns
        closed = CLOSED_STATUS.get(kind, frozenset())
        for key in done:
            rec, row = mapped[key]
            entry = self.state.entry(kind, key)
            if entry is None or not entry.get("issue") or entry.get("ts") != iso(rec.ts):
                continue  # not written (or an older version than the one written): its entry stays as it is
            keep = rec.status_code not in closed
            wanted = {SOURCE: source_inputs(row, cols) if keep else None,
                      VENDOR_REF: row_vendor(row, cols) if keep else None}
            for name, value in wanted.items():
                if value is None and name in entry:
                    del entry[name]
                    self.state.dirty = True
                elif value is not None and entry.get(name) != value:
                    entry[name] = value
                    self.state.dirty = True

    def refresh_dependents(self, kind: str) -> None:
        """Re-map, from their key-map entries, the open documents of ``kind`` whose vendor changed, and write
        those whose content changed; then forget the marks handled. A pass stopped before the marks are
        cleared leaves them on disk: the next pass does the re-map again (edits only where content differs)."""
        refs = reference.marked(self.state, kind)
        if not refs:
            return
        keys = reference.dependents(self.state, kind, refs)
        counts = self.result.kind(kind)
        for i in range(0, len(keys), REFRESH_BATCH):
            rows = []
            for key in keys[i:i + REFRESH_BATCH]:
                entry = self.state.entry(kind, key)
                if entry is None or not isinstance(entry.get(SOURCE), dict) or not entry.get("ts"):
                    continue
                rows.append(source_row(kind, key, entry[SOURCE], entry["ts"]))
            counts.remapped += len(rows)
            self.progress("read", kind=kind, n=len(rows))
            self.process_rows(kind, rows)
        if not self.dry_run:
            reference.clear(self.state, kind, refs)
            self.state.save()

    # -- comments --------------------------------------------------------------------------------
    def sync_comments(self, kind: str, since: datetime | None) -> None:
        rs = self.cfg.peoplesoft.records[kind]
        if not rs.comments_query:
            return
        wm_name = f"{kind}.comments"
        start, end = self._window(wm_name, rs.initial_since, since)
        for rows, until in self.ps.read_window(rs.comments_query, start, end):
            self.process_comments(kind, rows)
            self._advance(wm_name, until, since)

    def process_comments(self, kind: str, rows: list[dict[str, Any]]) -> set[str]:
        self.state.release(can_save=not self.dry_run)
        counts = self.result.kind(kind)
        todo: list[tuple[MappedComment, dict[str, Any], dict[str, Any]]] = []
        done: set[str] = set()
        was_pending: set[str] = set()
        for row in rows:
            try:
                c = map_comment(kind, row)
            except RecordError as exc:
                self._fail(kind, _row_id(row, kind), row, exc, what="comment")
                continue
            ckey = c.key
            entry = self.state.entry(kind, c.parent_key)
            if self.dry_run and (entry is None or not entry.get("issue")):
                counts.commented += 1  # would be posted right after its record is created
                self.ctx.planned(kind, c.parent_key, "comment", comment=c.comment_id, after="its issue is created")
                continue
            if entry is None or not entry.get("issue"):
                self._fail(kind, ckey, row, RecordError(
                    f"Comment {c.comment_id} waits for {KINDS[kind]['title'].lower()} {c.parent_key} to reach Jira "
                    f"(it is not synced yet); it is posted once the record is."), what="comment")
                continue
            posted = (entry.get("comments") or {}).get(c.comment_id)  # read only: a dry run changes nothing
            if posted and posted != "pending":
                done.add(ckey)
                self.state.dequeue(kind, ckey, what="comment")
                continue
            if posted == "pending" or (not posted and entry.get("adopted")):
                # An earlier pass may have posted it before dying (or, for an issue adopted after a state loss,
                # long ago): look on the issue before posting.
                was_pending.add(ckey)
            todo.append((c, row, entry))
        if self.dry_run:
            counts.commented += len(todo)
            for c, _row, entry in todo:
                self.ctx.planned(kind, c.parent_key, "comment", comment=c.comment_id, issue=entry["issue"])
            return done
        if not todo:
            return done
        for c, _row, entry in todo:
            entry.setdefault("comments", {}).setdefault(c.comment_id, "pending")
        self.state.dirty = True
        self.state.save()

        def work(item: tuple[MappedComment, dict[str, Any], dict[str, Any]]) -> tuple[str | None, Exception | None]:
            c, _row, entry = item
            try:
                if c.key in was_pending:
                    for existing in self.jira.comments(entry["issue"]):
                        # Ours only: written by the connector's account, the whole bracketed marker ending the
                        # footer ("#1" must not match inside "#10", nor a person quoting the marker).
                        author = str((existing.get("author") or {}).get("accountId") or "")
                        if is_echo(author, {self._my_account()}, None, None) and \
                                adf.plain_text(existing.get("body")).rstrip().endswith(f"[{c.ref}]"):
                            return str(existing.get("id")), None
                return str(self.jira.add_comment(entry["issue"], c.body).get("id")), None
            except ConnectorError as exc:
                return None, exc

        fatal: Exception | None = None
        workers = max(1, min(self.cfg.jira.max_workers, len(todo)))
        # Comments of one issue go through one worker in order, so they land in PeopleSoft's order.
        groups: dict[str, list[tuple[MappedComment, dict[str, Any], dict[str, Any]]]] = {}
        for item in sorted(todo, key=lambda t: t[0].ts):
            groups.setdefault(item[2]["issue"], []).append(item)

        def work_group(items: list[tuple[MappedComment, dict[str, Any], dict[str, Any]]]) -> list[
                tuple[str | None, Exception | None]]:
            out = []
            for it in items:
                res = work(it)
                out.append(res)
                if isinstance(res[1], FATAL):
                    break
            return out + [(None, None)] * (len(items) - len(out))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for items, results in zip(groups.values(), pool.map(work_group, list(groups.values())), strict=True):
                for (c, row, entry), (cid, err) in zip(items, results, strict=True):
                    ckey = c.key
                    if cid:
                        entry["comments"][c.comment_id] = cid
                        counts.commented += 1
                        done.add(ckey)
                        self.state.dequeue(kind, ckey, what="comment")
                        self.audit.write("commented", kind, c.parent_key, issue=entry["issue"], comment=c.comment_id,
                                         jira_comment=cid)
                    elif err is None:
                        continue  # skipped after a fatal error in its group: still pending, re-read next pass
                    elif isinstance(err, FATAL):
                        fatal = fatal or err
                    else:
                        if not isinstance(err, AmbiguousWriteError):
                            entry["comments"].pop(c.comment_id, None)
                        self._fail(kind, ckey, row, err, what="comment")
        self.state.dirty = True
        self.state.save()
        if fatal is not None:
            raise fatal
        return done

    def _my_account(self) -> str:
        """The connector's own Jira account id (read once, only when a comment must be looked up)."""
        if self._me is None:
            self._me = str(self.jira.myself().get("accountId") or "")
        return self._me

    # -- failures and replay ---------------------------------------------------------------------
    def _fail(self, kind: str, key: str, row: dict[str, Any], exc: Exception, *, what: str = "record") -> None:
        self.ctx.fail(kind, key, row, exc, what=what)

    def refresh_items(self, items: list[dict[str, Any]]) -> int:
        """Swap queued rows for their current version in PeopleSoft, so a fix made at the source is what a
        replay sends. Reads each kind's window from the oldest queued row (less the overlap) to now.
        Returns how many rows were replaced."""
        overlap = timedelta(minutes=self.cfg.peoplesoft.overlap_minutes)
        groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for item in items:
            groups.setdefault((item["kind"], item.get("what", "record")), {})[item["key"]] = item
        replaced = 0
        for (kind, what), wanted in groups.items():
            rs = self.cfg.peoplesoft.records[kind]
            query = rs.query if what == "record" else rs.comments_query
            stamps = []
            for item in wanted.values():
                try:
                    stamps.append(row_ts(kind, item["row"], item["key"]))
                except RecordError:
                    continue
            if not query or not stamps:
                continue
            reader = self.reader(kind) if what == "record" else self.ps
            best: dict[str, tuple[datetime, dict[str, Any]]] = {}
            for rows, _ in reader.read_window(query, min(stamps) - overlap, self.now):
                for row in rows:
                    try:
                        key = natural_key(kind, row)
                        if what == "comment":
                            key = comment_key(key, str(row.get("COMMENT_ID")))
                        ts = row_ts(kind, row, key)
                    except RecordError:
                        continue
                    if key in wanted and (key not in best or ts >= best[key][0]):
                        best[key] = (ts, row)
            for key, (_, row) in best.items():
                if row != wanted[key]["row"]:
                    wanted[key]["row"] = row
                    replaced += 1
        return replaced

    def _replay_vendor(self, item: dict[str, Any]) -> None:
        rs = self.cfg.peoplesoft.records["vendors"]
        row = item["row"]
        try:
            key = natural_key("vendors", row)
            ts = iso(row_ts("vendors", row, key)) if rs.read == "stamped" else None
        except RecordError as exc:
            self._fail("vendors", item["key"], row, exc)
            return
        vk = vendor_key(*decode_key(key))
        assert vk is not None
        if ts is None or not self.vendors.older(vk, ts):
            self.vendors.store(vk, vendor_from_row(row, rs.columns), ts)
        self.state.dequeue("vendors", item["key"])


def _row_id(row: dict[str, Any], kind: str = "vendors") -> str:
    """A stable name for a row whose key is unusable, so its queue entry is not duplicated."""
    import hashlib
    import json

    try:
        return natural_key(kind, row)
    except RecordError:
        blob = json.dumps(row, sort_keys=True, default=str)
        return "invalid-row-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


# -- reconcile (mlconnector/reconcile.py) ------------------------------------------------------------
MONEY = {"purchase_orders": "PO amount (PO_AMT)", "vouchers": "voucher gross (GROSS_AMT)"}


def reconcile_scope(steps: PeopleSoftJiraPass) -> Any:
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
        steps.process_rows(kind, rows)

    return Scope(kinds=steps._kinds(), initial_since=lambda kind: cfg.peoplesoft.records[kind].initial_since,
                 rows=rows, map=lambda kind, row: map_record(cfg, target, kind, row, facts),
                 row_key=lambda kind, row: _row_id(row, kind), kind_label=lambda kind: str(KINDS[kind]["label"]),
                 money={k: v for k, v in MONEY.items() if k in steps._kinds()},
                 amount=lambda kind, key, row: record_amount(cfg, kind, key, row),
                 amount_field=amount.id if amount is not None and amount.type == "number" else None,
                 field_names={f.id: name for name, f in target.fields.items()},
                 plan=plan, comment_rows=comment_rows, map_comment=map_comment,
                 # Read from the entity's initial_since, the query returns every record PeopleSoft still has: a
                 # linked record it does not return was deleted (or left the query's scope).
                 full_read=lambda kind, start: start <= cfg.peoplesoft.records[kind].initial_since)


def _fresh_vendors(steps: PeopleSoftJiraPass) -> dict[str, dict[str, Any]]:
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
