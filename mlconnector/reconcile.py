"""`mlconnector reconcile <pair>`: prove that both sides agree, record by record. Read-only.

Every source record in scope is read through the pair's own readers and mapped as a pass maps it (the
pair lends its readers, mapping and target through ``reconcile_scope(steps)``, see ``Scope``) and compared
with the record the target holds for it, as ``sync --plan`` compares them. Nothing is written anywhere: no
state save, no audit line, no target write; the run lock is not taken.

Memory stays bounded by a page, not by the data: the source is read page by page, each page's target records
are read in one batch by their ids (Jira: ``key in (...)``; a PO component interface: a Get per linked PO),
and the sweep for orphaned target records streams the target's own listing, checking each record against the
key map (which the state keeps as bytes, not as parsed entries). A record found in step is counted and its
amounts summed, and its line goes to a temporary file (for --csv), not to memory; what is kept per record read
is a 64-bit digest of its key with its time stamp (``KeysRead``: for the newest-row rule and the "deleted at
source" sweep). The findings kept in memory are the differences.

Classes (one per source record, plus one per unmatched target record):
- ``in_step``: the linked target record shows what a pass would write.
- ``missing``: no link and no target record carrying the record's handle, or a link to a target record that is
  gone; also a row a pass could not map (it would be queued), with the mapping error as the reason.
- ``drifted``: the target record differs; ``fields`` names the fields that differ (``status`` included) and
  ``changed`` says which side changed since the last sync where the link knows ("source": the record's
  content is not what was last written; "target": the record is as last written, so the target was edited).
- ``orphaned``: a target record carrying one of our handles that no link, no record in scope and no queued or
  pending record accounts for (including a second record for a source record linked to another one).
- ``waiting``: the record is in the replay queue (with its reason).
- ``pending``: a create whose outcome is not settled yet (the next pass settles it).
- ``deleted``: a link whose source record no longer exists (the source was read in full and did not return
  it). A pass never deletes on the target, so the target record stays; the report names it so a person can
  cancel or close it. Explained: it does not make the exit code non-zero by itself (it is not a failure of
  the sync), but it is listed and counted, and its target amount is in the money totals.

Comments (peoplesoft-jira): each PeopleSoft comment of a record in scope is compared with the Jira comment the
link says it was posted as; they are reported under the entity ``<kind>.comments`` (missing: never posted or
deleted in Jira; drifted: the text differs; waiting / pending as for records).

Exit code 0 when every record is in step, waiting, pending or deleted at source; EXIT_NOT_IN_STEP otherwise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from mlconnector.config import Config
from mlconnector.errors import EXIT_NOT_IN_STEP, EXIT_OK, ConfigError, RecordError, RemoteError
from mlconnector.jira.sink import KEY_PROPERTY, _comparable, jql_quote
from mlconnector.reconcile_types import Accounted, Current, Finding, Scope, TargetSide
from mlconnector.state import State, iso
from mlconnector.sync.keys import decode_key, display_key, encode_key

CLASSES = ("in_step", "missing", "drifted", "orphaned", "waiting", "pending", "deleted")
# Classes that do not make the exit code non-zero: in step, explained by the queue, or deleted at the source
# (a pass never deletes on the target: a person's decision, reported but not a failure of the sync).
EXPLAINED = frozenset({"in_step", "waiting", "pending", "deleted"})
BATCH = 100  # target records read per request (Jira's page; key in (...) clauses stay short)


@dataclass
class Report:
    """The outcome of one reconcile: findings, counts per entity and class, money per financial entity.

    ``to_dict`` is --json (records listed are those not in step); ``to_csv`` has a row per finding.

    Memory does not grow with the records in step: their findings are counted (and their amounts summed) at
    once and written to a temporary file, not kept; ``findings`` reads them back from it (one at a time) after
    the findings kept in memory, which are the records not in step (the differences a person reads)."""

    pair: str
    since: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    money: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    plan: list[dict[str, Any]] | None = None  # --fix: the pass's plan for the missing and drifted records
    differ: list[Finding] = field(default_factory=list)  # every finding not in step, in the order found
    _spool: Any = field(default=None, repr=False)  # the in-step findings, one JSON line each
    _skip: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)  # spooled lines taken back

    @property
    def findings(self) -> list[Finding]:
        """Every finding: those not in step, then those in step (read back from the spool)."""
        return [*self.differ, *self._in_step()]

    def _in_step(self) -> Iterator[Finding]:
        if self._spool is None:
            return
        import json

        self._spool.flush()
        self._spool.seek(0)
        skip = dict(self._skip)
        for line in self._spool:
            d = json.loads(line)
            name = (d["kind"], d["key"])
            if skip.get(name):
                skip[name] -= 1
                continue
            yield Finding(d["kind"], d["key"], "in_step", issue=d.get("issue", ""), reason=d.get("reason", ""),
                          source_amount=d.get("source_amount"), target_amount=d.get("target_amount"),
                          target_credit=d.get("target_credit"))
        self._spool.seek(0, io.SEEK_END)

    @property
    def totals(self) -> dict[str, int]:
        return {c: sum(k.get(c, 0) for k in self.counts.values()) for c in CLASSES}

    @property
    def exit_code(self) -> int:
        return EXIT_OK if all(f.cls in EXPLAINED for f in self.differ) else EXIT_NOT_IN_STEP

    def add(self, f: Finding) -> None:
        if f.cls == "in_step":
            import json
            import tempfile

            if self._spool is None:
                # Open for the report's life (closed when it is collected); on disk, not in memory.
                self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
            line = {"kind": f.kind, "key": f.key, "issue": f.issue, "reason": f.reason,
                    "source_amount": f.source_amount, "target_amount": f.target_amount,
                    "target_credit": f.target_credit}
            self._spool.seek(0, io.SEEK_END)  # (a reader may have left it elsewhere)
            self._spool.write(json.dumps({k: v for k, v in line.items() if v is not None}, ensure_ascii=False)
                              + "\n")
        else:
            self.differ.append(f)
        self._count(f, 1)

    def retract(self, kind: str, key: str, in_step: tuple[float | None, float | None] | None = None) -> None:
        """Take back the findings of a record read again in a later page (its newer row is compared instead).
        ``in_step``: the amounts (source, target) of its earlier finding when that one was in step (not kept)."""
        for i in range(len(self.differ) - 1, -1, -1):
            f = self.differ[i]
            if f.kind == kind and f.key == key and f.cls != "orphaned":
                del self.differ[i]
                self._count(f, -1)
        if in_step is not None:
            self._skip[(kind, key)] = self._skip.get((kind, key), 0) + 1
            self._count(Finding(kind, key, "in_step", source_amount=in_step[0], target_amount=in_step[1]), -1)

    def _count(self, f: Finding, sign: int) -> None:
        counts = self.counts.setdefault(f.kind, dict.fromkeys(CLASSES, 0))
        counts[f.cls] += sign
        money = self.money.get(f.kind)
        if money is not None:
            for side in ("source", "target"):
                value = getattr(f, f"{side}_amount")
                if value is not None:
                    d = Decimal(str(value)) * sign
                    money[side] += d
                    money["by_class"].setdefault(f.cls, {"source": Decimal(0), "target": Decimal(0)})[side] += d
            if f.target_credit is not None:  # a journal: its credits beside its debits (the target amount)
                d = Decimal(str(f.target_credit)) * sign
                money["target_credits"] = money.get("target_credits", Decimal(0)) + d
                money["target_debits"] = money.get("target_debits", Decimal(0)) + Decimal(str(f.target_amount or 0)) \
                    * sign
                if f.target_amount is not None and Decimal(str(f.target_amount)) != Decimal(str(f.target_credit)):
                    money["unbalanced"] = money.get("unbalanced", 0) + sign

    def money_dict(self) -> dict[str, dict[str, Any]]:
        """Money per financial entity, as strings with two decimals (exact sums, no float drift). Journals also
        carry their debits and credits on the target (each balanced, and the debits against the source)."""
        out: dict[str, dict[str, Any]] = {}
        for kind, m in self.money.items():
            q = Decimal("0.01")
            out[kind] = {"what": m["what"], "source": str(m["source"].quantize(q)),
                         "target": str(m["target"].quantize(q)),
                         "difference": str((m["source"] - m["target"]).quantize(q)),
                         "by_class": {c: {s: str(v.quantize(q)) for s, v in sides.items()}
                                      for c, sides in m["by_class"].items()}}
            if "target_credits" in m:
                out[kind].update(target_debits=str(m["target_debits"].quantize(q)),
                                 target_credits=str(m["target_credits"].quantize(q)),
                                 target_balance=str((m["target_debits"] - m["target_credits"]).quantize(q)),
                                 unbalanced=m.get("unbalanced", 0))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"pair": self.pair, "status": "in_step" if self.exit_code == EXIT_OK else "differences",
                "exit_code": self.exit_code, "since": self.since, "totals": self.totals, "counts": self.counts,
                "money": self.money_dict(), "records": [f.to_dict() for f in self.differ],
                "requests": self.requests, **({"fix_plan": self.plan} if self.plan is not None else {})}

    def to_csv(self) -> str:
        buf = io.StringIO()
        self.write_csv(buf)
        return buf.getvalue()

    def write_csv(self, out: Any) -> None:
        """Every finding as a CSV row, written as it goes (no second copy of the report in memory)."""
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["kind", "key", "class", "issue", "fields", "changed", "reason", "source_amount",
                    "target_amount"])
        for f in _chain(self.differ, self._in_step()):
            w.writerow([f.kind, f.key, f.cls, f.issue, " ".join(f.fields), f.changed,
                        f.reason, "" if f.source_amount is None else f.source_amount,
                        "" if f.target_amount is None else f.target_amount])


def _chain(*parts: Iterable[Finding]) -> Iterator[Finding]:
    for part in parts:
        yield from part


class KeysRead:
    """The keys of one entity read from the source, in little memory: a 64-bit digest of each key (odds of a
    collision among a million keys: about 3 in 10^8) with its row's time stamp, and, for a record found in
    step, its two amounts (needed only if the record is read again in a later page). ``key in keys`` works
    as for a set of keys."""

    def __init__(self) -> None:
        self._d: dict[int, Any] = {}

    @staticmethod
    def _h(key: str) -> int:
        import hashlib

        return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._h(key) in self._d

    def __len__(self) -> int:
        return len(self._d)

    def note(self, key: str, ts: datetime | None, in_step: tuple[float | None, float | None] | None) -> None:
        stamp = ts.timestamp() if ts is not None else None
        self._d[self._h(key)] = stamp if in_step is None else (stamp, *in_step)

    def stamp(self, key: str) -> float | None:
        v = self._d.get(self._h(key))
        return v[0] if isinstance(v, tuple) else v

    def in_step(self, key: str) -> tuple[float | None, float | None] | None:
        v = self._d.get(self._h(key))
        return (v[1], v[2]) if isinstance(v, tuple) else None


def reconcile(pair: str, cfg: Config, *, since: datetime | None = None, entity: str | None = None,
              fix: bool = False) -> Report:
    """Compare both sides of ``pair`` (see the module's docstring); read-only. With ``fix``, the missing and
    drifted records are also handed to the pair's pass in planning mode, and its plan is reported: what the
    next pass would do for each of them (it writes nothing either)."""
    from mlconnector.registry import PAIRS
    from mlconnector.runner import session

    spec = PAIRS[pair]
    if not hasattr(spec.load(), "reconcile_scope"):
        raise ConfigError(f"reconcile does not cover {pair} yet; it covers: {', '.join(reconcilable())}.")
    # No lock, no audit file, a planning pass: nothing here can write (see runner.session).
    with session(cfg, pair, lock=False) as (mod, clients, state, audit):
        steps = mod.make_pass(cfg, clients, state, audit, dry_run=True)
        steps.prepare()
        scope: Scope = mod.reconcile_scope(steps)
        if entity is not None and entity not in scope.kinds:
            raise ConfigError(f"--entity {entity!r} is not an entity reconcile compares for {pair}; use one of: "
                              f"{', '.join(scope.kinds)}.")
        report = Report(pair, plan=[] if fix else None)
        target = scope.target or JiraSide(steps.jira, steps.writer.project, state, scope)
        now = getattr(steps, "now", None) or steps.ctx.now
        for kind in [entity] if entity else scope.kinds:
            start = since or scope.initial_since(kind)
            report.since[kind] = iso(start)
            _reconcile_kind(report, steps, state, scope, target, kind, start, now, fix=fix)
            if scope.comment_rows is not None and scope.map_comment is not None:
                _reconcile_comments(report, steps.jira, state, scope, kind, start, now)
        report.requests = steps.requests()
        return report


def reconcilable() -> list[str]:
    """The pairs whose module offers ``reconcile_scope``."""
    from mlconnector.registry import PAIRS

    return [name for name, spec in PAIRS.items() if hasattr(spec.load(), "reconcile_scope")]


LINKS = ("issue", "po", "voucher", "journal", "id")  # where a link entry names its target record


def _linked(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and any(entry.get(k) for k in LINKS) and not entry.get("pending")  # type: ignore[union-attr]


def _ref(entry: dict[str, Any] | None) -> str:
    """The target record a link names, as the target sides name it (an issue key, CI keys joined by "/", an id)."""
    for name in LINKS:
        value = (entry or {}).get(name)
        if isinstance(value, dict) and value:
            return "/".join(str(v) for v in value.values())
        if value and not isinstance(value, dict):
            return str(value)
    return ""


def _reconcile_kind(report: Report, steps: Any, state: State, scope: Scope, target: TargetSide, kind: str,
                    start: datetime, now: datetime, *, fix: bool = False) -> None:
    if kind in scope.money:
        report.money[kind] = {"what": scope.money[kind], "source": Decimal(0), "target": Decimal(0), "by_class": {}}
    report.counts.setdefault(kind, dict.fromkeys(CLASSES, 0))
    queued = {i["key"]: i for i in state.replay if i["kind"] == kind and i.get("what", "record") == "record"}
    pending = set(state.pending(kind))
    accounted = Accounted(keys=set(queued) | pending)
    for key in accounted.keys:
        entry = state.entry(kind, key) or {}
        for name in ("label", "handle"):
            if entry.get(name):
                accounted.handles.add(str(entry[name]))

    # 1. The source, page by page, each page compared with its target records read in one batch. A key read
    # again in a later page (changed while it was read) is compared again with its newer row, as a pass would.
    seen = KeysRead()  # the keys read, with their rows' time stamps (the newest row of a key wins)
    unmappable: dict[str, str] = {}
    fix_rows: dict[str, dict[str, Any]] = {}  # --fix only: rows of the missing and drifted records
    for rows in _source_chunks(scope.rows(kind, start, now)):
        page: dict[str, tuple[Any, dict[str, Any], float | None]] = {}
        for row in rows:
            try:
                rec = scope.map(kind, row)
                if rec is None:
                    key = scope.row_key(kind, row)
                    page[key] = (None, row, None)
                    continue
                amount = _source_amount(scope, kind, rec, row)
            except RecordError as exc:
                unmappable[scope.row_key(kind, row)] = exc.message
                continue
            ts = getattr(rec, "ts", None)
            prev = page.get(rec.key)
            if prev is not None and prev[0] is not None and ts is not None and ts < prev[0].ts:
                continue
            if rec.key in seen:
                before = seen.stamp(rec.key)
                if ts is not None and before is not None and ts.timestamp() < before:
                    continue
                report.retract(kind, rec.key, seen.in_step(rec.key))
            page[rec.key] = (rec, row, amount)
        in_step = _compare_page(report, state, scope, target, kind, page, queued, pending, accounted,
                                fix_rows if fix else None)
        for key, (rec, _row, _amount) in page.items():
            seen.note(key, getattr(rec, "ts", None), in_step.get(key))
            unmappable.pop(key, None)
        state.release(can_save=False)

    # Rows a pass could not map: queued (waiting) or not yet (missing, with the reason a pass would give).
    for key, message in unmappable.items():
        item = queued.get(key)
        report.add(Finding(kind, key, "waiting" if item else "missing",
                           reason=str(item.get("error")) if item else f"cannot be mapped: {message}"))

    def read(key: str) -> bool:
        return key in seen or key in unmappable

    # Queued and pending records outside the rows read (older than --since, or no longer returned).
    for key, item in queued.items():
        if not read(key):
            entry = state.entry(kind, key) or {}
            report.add(Finding(kind, key, "waiting", issue=_ref(entry), reason=str(item.get("error") or "")))
    for key in pending:
        if not read(key) and key not in queued:
            report.add(Finding(kind, key, "pending", reason="a create whose outcome is not settled yet; the next "
                               "pass settles it"))

    # 2. Links whose source record is gone: only when the read covered everything the source still has.
    if scope.full_read is not None and scope.full_read(kind, start):
        _deleted_at_source(report, state, target, kind, lambda key: read(key) or key in queued or key in pending)

    if fix:
        _plan_fixes(report, steps, scope, kind, fix_rows)

    # 3. Target records of the entity that nothing accounts for (a streamed sweep).
    for f in target.orphans(kind, seen, accounted):
        report.add(f)


def _source_chunks(pages: Iterable[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """The source's pages cut to BATCH rows: a source page can be large (a PS Query window is one answer, up to
    max_maxrows rows), and its rows are mapped and compared BATCH at a time, so the mapped records and target
    reads held at once stay bounded by BATCH whatever the page size."""
    for rows in pages:
        for i in range(0, len(rows), BATCH):
            yield rows[i:i + BATCH]


def _source_amount(scope: Scope, kind: str, rec: Any, row: dict[str, Any]) -> float | None:
    if kind not in scope.money:
        return None
    if scope.mapped_amount is not None:
        return scope.mapped_amount(kind, rec)
    return scope.amount(kind, rec.key, row)


def _compare_page(report: Report, state: State, scope: Scope, target: TargetSide, kind: str,
                  page: dict[str, tuple[Any, dict[str, Any], float | None]], queued: dict[str, dict[str, Any]],
                  pending: set[str], accounted: Accounted, fix_rows: dict[str, dict[str, Any]] | None,
                  ) -> dict[str, tuple[float | None, float | None]]:
    """Compare one page; returns the amounts of the records found in step (their findings are not kept)."""
    in_step: dict[str, tuple[float | None, float | None]] = {}
    name = _name(target, kind)
    entries = {key: state.entry(kind, key) for key in page}
    ask = [(key, rec, entries[key]) for key, (rec, _row, _a) in page.items()
           if key not in pending and not (entries[key] or {}).get("pending")
           and (key not in queued or _linked(entries[key])) and (rec is not None or _linked(entries[key]))]
    currents = target.current(kind, ask) if ask else {}
    for key, (rec, row, amount) in page.items():
        entry = entries[key] or {}
        cur = currents.get(key)
        target_amount = target.amount(kind, cur.record) if cur is not None else None
        credit = _credit(target, kind, cur.record if cur is not None else None)
        handle = getattr(rec, "label", None) or getattr(rec, "handle", None)
        if handle and (key in queued or key in pending or entry.get("pending")):
            accounted.handles.add(str(handle))  # its target record may be half-written: not an orphan
        if key in queued:
            report.add(Finding(kind, key, "waiting", issue=cur.ref if cur else _ref(entry),
                               reason=str(queued[key].get("error") or ""), source_amount=amount,
                               target_amount=target_amount, target_credit=credit))
            if cur is not None:
                accounted.refs.add(cur.ref)
            continue
        if entry.get("pending") or key in pending:
            report.add(Finding(kind, key, "pending", reason="a create whose outcome is not settled yet; the next pass "
                               "settles it", source_amount=amount))
            continue
        if rec is None:
            if _linked(entry):  # a pass has nothing to write for it any more, but it was written
                accounted.refs.add(cur.ref if cur else _ref(entry))
                report.add(Finding(kind, key, "drifted", issue=cur.ref if cur else _ref(entry),
                                   reason=f"the source no longer has anything to write for it, but {name} "
                                   "still holds it; a person decides (cancel or close it)",
                                   target_amount=target_amount, target_credit=credit))
            continue
        if cur is None:
            report.add(Finding(kind, key, "missing", source_amount=amount, reason=f"not in {name}"))
        elif cur.record is None:
            report.add(Finding(kind, key, "missing", issue=cur.ref, source_amount=amount, reason=cur.reason))
        else:
            if not (_linked(entry) and _ref(entry) == cur.ref):
                # Found by its handle (or moved): the sweep would not tell it from an orphan. A linked record
                # needs no note (the sweep recognises its link), so this set stays as small as the differences.
                accounted.refs.add(cur.ref)
            differ = [scope.field_names.get(f, f) for f in target.differences(kind, rec, cur.record)]
            if not differ:
                report.add(Finding(kind, key, "in_step", issue=cur.ref, reason=cur.note, source_amount=amount,
                                   target_amount=target_amount, target_credit=credit))
                in_step[key] = (amount, target_amount)
                continue
            changed = scope.changed(kind, entry, rec) if scope.changed else _changed(entry, rec)
            report.add(Finding(kind, key, "drifted", issue=cur.ref, fields=differ, changed=changed,
                               reason=cur.note, source_amount=amount, target_amount=target_amount,
                               target_credit=credit))
        if fix_rows is not None:
            fix_rows[key] = row
    return in_step


def _name(target: TargetSide, kind: str) -> str:
    """The system holding ``kind``'s target records (a target side may span two systems, one per entity)."""
    name_for = getattr(target, "name_for", None)
    return str(name_for(kind)) if name_for is not None else target.name


def _credit(target: TargetSide, kind: str, record: dict[str, Any] | None) -> float | None:
    """A journal's credits (the target side's ``credit``, when it has one): summed beside its debits."""
    credit = getattr(target, "credit", None)
    return credit(kind, record) if credit is not None and record is not None else None


def _deleted_at_source(report: Report, state: State, target: TargetSide, kind: str,
                       read: Callable[[str], bool]) -> None:
    """Links whose source record the full read did not return: deleted (or moved out of the source query)."""
    name = _name(target, kind)
    batch: list[tuple[str, Any, dict[str, Any] | None]] = []

    def flush() -> None:
        currents = target.current(kind, batch)
        for key, _rec, entry in batch:
            cur = currents.get(key)
            gone = cur is None or cur.record is None
            report.add(Finding(
                kind, key, "deleted", issue=cur.ref if cur else _ref(entry),
                target_amount=None if gone else target.amount(kind, cur.record),  # type: ignore[union-attr]
                target_credit=None if gone else _credit(target, kind, cur.record),  # type: ignore[union-attr]
                reason=(f"no longer in the source; its {name} record is gone too" if gone else
                        f"no longer in the source (deleted, or outside the source query); a pass never deletes in "
                        f"{name}, so {cur.ref if cur else _ref(entry)} stays: cancel or close it by hand "
                        f"if that is right")))
        batch.clear()
        state.release(can_save=False)

    for key, entry in state.keymap.items(kind):
        if read(key) or not _linked(entry):
            continue
        batch.append((key, None, entry))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()


def _plan_fixes(report: Report, steps: Any, scope: Scope, kind: str, rows: dict[str, dict[str, Any]]) -> None:
    """What the next pass would do for this entity's missing and drifted records: its own write path in
    planning mode. A record it would leave alone (a target record edited by hand, a link to a deleted record,
    while the record has not changed at the source) is named as such: only a person can mend it."""
    todo = [f for f in report.differ if f.kind == kind and f.cls in ("missing", "drifted") and f.key in rows]
    if scope.plan is None or not todo or report.plan is None:
        return
    plan = steps.ctx.result.plan
    before = len(plan)
    scope.plan(kind, [rows[f.key] for f in todo])
    new = [p for p in plan[before:] if p.get("kind") == kind]
    report.plan.extend(new)
    actions: dict[str, list[str]] = {}
    for p in new:
        actions.setdefault(str(p.get("key")), []).append(str(p.get("action")))
    for f in todo:
        f.fix = ", ".join(actions.get(f.key, [])) or "none: a pass takes it as in step until the record changes " \
            "at the source; mend it by hand"


def _changed(entry: dict[str, Any], rec: Any) -> str:
    """Which side changed since the last sync, where the link knows (its hash and status of the last write)."""
    if not entry.get("hash"):
        return ""
    status = getattr(rec, "status_code", None)
    source = entry.get("hash") != rec.hash or (entry.get("status") is not None and status is not None
                                               and entry.get("status") != status)
    return "source" if source else "target"


def _chunks(items: list[Any], size: int = BATCH) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# -- Jira as the target ------------------------------------------------------------------------------
class JiraSide:
    """The pair's Jira issues as reconcile's target (peoplesoft-jira, jde-jira): linked issues read by key in
    batches (``key in (...)``), unlinked records looked up by their label, orphans swept by the entity's label
    with the ``mlconnector.key`` property naming each issue's record."""

    name = "Jira"

    def __init__(self, jira: Any, project: str, state: State, scope: Scope) -> None:
        self.jira, self.project, self.state, self.scope = jira, project, state, scope
        self.names: list[str] = ["status", "labels"]  # fields read: those a pass writes (set per page)

    def _fields(self, recs: list[Any]) -> list[str]:
        names = {f for rec in recs if rec is not None for f in rec.edit_fields} | {"status", "labels"}
        if self.scope.amount_field:
            names.add(self.scope.amount_field)
        return sorted(names)

    def current(self, kind: str, items: list[tuple[str, Any, dict[str, Any] | None]]) -> dict[str, Current]:
        names = self._fields([rec for _k, rec, _e in items])
        out: dict[str, Current] = {}
        linked = {str(e["issue"]): key for key, _rec, e in items if e and e.get("issue")}
        found: dict[str, dict[str, Any]] = {}
        for part in _chunks(sorted(linked)):
            jql = f"key in ({', '.join(jql_quote(k) for k in part)})"
            try:
                for issue in self.jira.search(jql, names, properties=[KEY_PROPERTY]):
                    found[str(issue["key"])] = issue
            except RemoteError as exc:
                # Jira refuses the whole search when one key in it does not exist (deleted): this batch is
                # read issue by issue instead (below), which tells the gone ones apart.
                if exc.status != 400:
                    raise
        for issue_key, key in linked.items():
            issue = found.get(issue_key)
            if issue is None:  # moved to another key, not yet indexed, or gone: ask for it by key
                issue = self.jira.get_issue(issue_key, ",".join(names))
            if issue is None:
                out[key] = Current(issue_key, None, reason=f"the linked issue {issue_key} no longer exists in Jira")
            else:
                out[key] = Current(str(issue.get("key") or issue_key), issue)
        unlinked = {rec.label: key for key, rec, e in items if rec is not None and not (e and e.get("issue"))}
        for part in _chunks(sorted(unlinked), 50):
            jql = (f"project = {jql_quote(self.project)} AND labels in ({', '.join(jql_quote(x) for x in part)}) "
                   f"ORDER BY key")
            for issue in self.jira.search(jql, names, properties=[KEY_PROPERTY]):
                for lab in (issue.get("fields") or {}).get("labels") or []:
                    key = unlinked.get(lab)
                    if key is not None and key not in out and _names(issue, kind, key):
                        out[key] = Current(str(issue["key"]), issue, note="not linked in the state: found by its "
                                           "label (the next pass adopts it)")
        return out

    def differences(self, kind: str, rec: Any, record: dict[str, Any]) -> list[str]:
        fields = record.get("fields") or {}
        out = sorted(f for f, v in rec.edit_fields.items() if _comparable(fields.get(f)) != _comparable(v))
        if rec.target_status:
            current = str((fields.get("status") or {}).get("name") or "")
            if current.lower() != rec.target_status.lower():
                out.append("status")
        return out

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        if record is None or not self.scope.amount_field:
            return None
        value = (record.get("fields") or {}).get(self.scope.amount_field)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def orphans(self, kind: str, seen: Container[str], accounted: Accounted) -> Iterator[Finding]:
        jql = f"project = {jql_quote(self.project)} AND labels in ({jql_quote(self.scope.kind_label(kind))}) " \
              f"ORDER BY key"
        names = ["labels", *([self.scope.amount_field] if self.scope.amount_field else [])]
        unnamed: dict[str, dict[str, Any]] = {}  # issues no property ties to their link: checked in one scan
        for n, issue in enumerate(self.jira.search(jql, names, properties=[KEY_PROPERTY]), 1):
            if n % BATCH == 0:
                # Each entry looked up below stays parsed in the state until released: without this, the sweep
                # held every linked record's entry at once (about 2 KB a record).
                self.state.release(can_save=False)
            issue_key = str(issue["key"])
            if issue_key in accounted.refs:
                continue
            named = _named_key(issue, kind)
            entry = self.state.entry(kind, named) if named else None
            if entry is not None and str(entry.get("issue") or "") == issue_key:
                continue
            if set((issue.get("fields") or {}).get("labels") or []) & accounted.handles or named in accounted.keys:
                continue
            unnamed[issue_key] = {"labels": (issue.get("fields") or {}).get("labels"), "named": named,
                                  "amount": self.amount(kind, issue)}
        if not unnamed:
            return
        linked = self.state.find_issues([kind], set(unnamed))  # one scan of the key map, for the few left
        self.state.release(can_save=False)
        for issue_key, info in unnamed.items():
            if issue_key in linked:
                continue
            named = info["named"]
            entry = self.state.entry(kind, named) if named else None
            if named and named in seen:
                reason = f"a second issue for {display_key(named)}, which is linked to another issue"
            elif named and entry:
                reason = f"names {display_key(named)}, which is linked to {entry.get('issue')}"
            elif named:
                reason = f"names {display_key(named)}: no such record in scope and no link"
            else:
                reason = "carries the entity's label but names no record (no link, no source record)"
            yield Finding(kind, named or "", "orphaned", issue=issue_key, reason=reason, target_amount=info["amount"])


def _named_key(issue: dict[str, Any], kind: str) -> str | None:
    """The record an issue's ``mlconnector.key`` property names, when it names one of this entity."""
    carried = (issue.get("properties") or {}).get(KEY_PROPERTY)
    if isinstance(carried, dict) and carried.get("entity") == kind and isinstance(carried.get("key"), list):
        return encode_key([str(p) for p in carried["key"]])
    return None


def _names(issue: dict[str, Any], kind: str, key: str) -> bool:
    """An issue found by a record's label is the record's unless its property names another record."""
    carried = (issue.get("properties") or {}).get(KEY_PROPERTY)
    if carried is None:
        return True
    named = _named_key(issue, kind)
    return named is not None and decode_key(named) == decode_key(key)


# -- comments (a source's comments posted as Jira comments) -------------------------------------------
def _reconcile_comments(report: Report, jira: Any, state: State, scope: Scope, kind: str, start: datetime,
                        now: datetime) -> None:
    """Each source comment of ``kind`` against the Jira comment its link says it was posted as."""
    from mlconnector.jira import adf

    assert scope.comment_rows is not None and scope.map_comment is not None
    name = f"{kind}.comments"
    report.counts.setdefault(name, dict.fromkeys(CLASSES, 0))
    queued = {i["key"]: i for i in state.replay if i["kind"] == kind and i.get("what") == "comment"}
    for rows in scope.comment_rows(kind, start, now):
        page: dict[str, Any] = {}
        for row in rows:
            try:
                c = scope.map_comment(kind, row)
            except RecordError as exc:
                key = scope.row_key(kind, row)
                item = queued.get(key)
                report.add(Finding(name, key, "waiting" if item else "missing",
                                   reason=str(item.get("error")) if item else f"cannot be posted: {exc.message}"))
                continue
            if c.key not in page or c.ts >= page[c.key].ts:
                page[c.key] = c
        on_issue: dict[str, dict[str, str] | None] = {}  # issue key -> {Jira comment id: its text}, one read per issue
        for ckey, c in page.items():
            entry = state.entry(kind, c.parent_key) or {}
            issue = str(entry.get("issue") or "")
            posted = (entry.get("comments") or {}).get(c.comment_id)
            if ckey in queued:
                report.add(Finding(name, ckey, "waiting", issue=issue, reason=str(queued[ckey].get("error") or "")))
                continue
            if posted == "pending":
                report.add(Finding(name, ckey, "pending", issue=issue, reason="posted by a pass that stopped before "
                                   "it saw the answer; the next pass looks for it on the issue first"))
                continue
            if not issue or not posted:
                report.add(Finding(name, ckey, "missing", issue=issue, reason="not posted to Jira" +
                                   ("" if issue else " (its record has no issue)")))
                continue
            if issue not in on_issue:
                try:
                    on_issue[issue] = {str(x.get("id")): adf.plain_text(x.get("body")).strip()
                                       for x in jira.comments(issue)}
                except RemoteError as exc:
                    if exc.status != 404:
                        raise
                    on_issue[issue] = None  # the issue is gone (its record is reported missing)
            texts = on_issue[issue]
            if texts is None:
                report.add(Finding(name, ckey, "missing", issue=issue, reason=f"its issue {issue} no longer exists "
                                   "in Jira"))
                continue
            text = texts.get(str(posted))
            if text is None:
                report.add(Finding(name, ckey, "missing", issue=issue, reason=f"Jira comment {posted} on {issue} no "
                                   "longer exists (deleted in Jira); a pass does not post it again: post it by hand"))
            elif text != adf.plain_text(c.body).strip():
                report.add(Finding(name, ckey, "drifted", issue=issue, fields=["body"],
                                   reason=f"Jira comment {posted} differs from the PeopleSoft comment (edited on "
                                   "either side; a pass posts a comment once and does not edit it)"))
            else:
                report.add(Finding(name, ckey, "in_step", issue=issue))
        state.release(can_save=False)


# -- output ----------------------------------------------------------------------------------------------
def text_lines(report: Report) -> list[str]:
    """The report as plain text (cron, a pipe): counts per entity, money, then every record not in step."""
    width = max([len("entity"), *(len(k) for k in report.counts)])
    lines = [f"reconcile {report.pair} (read-only; nothing was written)",
             f"{'entity':<{width}}  " + "  ".join(f"{c:>8}" for c in CLASSES)]
    for kind, counts in report.counts.items():
        lines.append(f"{kind:<{width}}  " + "  ".join(f"{counts[c]:>8}" for c in CLASSES))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{report.totals[c]:>8}" for c in CLASSES))
    for kind, m in report.money_dict().items():
        lines.append(f"money {kind}, {m['what']}: source {m['source']}, target {m['target']}, "
                     f"difference {m['difference']}" + (
                         f"; journals: debits {m['target_debits']}, credits {m['target_credits']}, balance "
                         f"{m['target_balance']} ({m['unbalanced']} unbalanced)" if "target_credits" in m else ""))
    for f in report.differ:
        detail = [f"issue {f.issue}" if f.issue else "", f"fields {', '.join(f.fields)}" if f.fields else "",
                  f"changed on the {f.changed} side" if f.changed else "", f.reason,
                  f"next pass: {f.fix}" if f.fix else ""]
        shown = "; ".join(d for d in detail if d)
        lines.append(f"{f.cls} {f.kind} {f.key or '-'}" + (f" ({shown})" if shown else ""))
    if report.plan is not None:
        from mlconnector.report import plan_lines

        planned = plan_lines(report.plan)
        lines += [f"fix plan: {line}" for line in planned]
        lines.append(f"FIX PLAN: {len(planned)} action(s) a normal pass would take; nothing was written. Run "
                     f"'mlconnector sync {report.pair}' to take them." if planned else
                     "FIX PLAN: a normal pass would take no action for these records; nothing was written.")
    differ = sum(1 for f in report.differ if f.cls not in EXPLAINED)
    lines.append(f"RECONCILE: {differ} record(s) differ (exit {report.exit_code})." if differ else
                 "RECONCILE: both sides agree" + (" (the rest is explained by the replay queue)."
                                                  if report.totals["waiting"] or report.totals["pending"] else ".")
                 + (f" {report.totals['deleted']} record(s) were deleted at the source; their target records stay "
                    f"(a pass never deletes): see above." if report.totals["deleted"] else ""))
    return lines


def print_report(report: Report, *, as_json: bool, tty: bool, echo: Callable[[str], None]) -> None:
    """--json, a rich table on a terminal, plain text otherwise."""
    import json

    if as_json:
        echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    lines = text_lines(report)
    if not tty:
        for line in lines:
            echo(line)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"reconcile {report.pair} (read-only)")
    table.add_column("entity")
    for c in CLASSES:
        table.add_column(c, justify="right")
    for kind, counts in report.counts.items():
        table.add_row(kind, *[str(counts[c]) for c in CLASSES])
    table.add_row("total", *[str(report.totals[c]) for c in CLASSES], style="bold")
    console = Console()
    console.print(table)
    rest = lines[len(report.counts) + 3:]
    for line in rest:
        console.print(line, markup=False, highlight=False)
