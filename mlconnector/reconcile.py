"""`mlconnector reconcile <pair>`: prove that both sides agree, record by record. Read-only.

Every source record in scope is read through the pair's own readers and mapped as a pass maps it (the
pair lends its readers and mapping through ``reconcile_scope(steps)``, see ``Scope``); the issues of the
pair are read back from Jira in one paged search per entity (by the label every issue of that entity
carries) and compared field by field with what a pass would write, as ``sync --plan`` compares them.
Nothing is written anywhere: no state save, no audit line, no Jira write; the run lock is not taken.

Classes (one per source record, plus one per unmatched target issue):
- ``in_step``: the linked issue shows what a pass would write.
- ``missing``: no link and no issue carrying the record's label, or a link to an issue that is gone; also a
  row a pass could not map (it would be queued), with the mapping error as the reason.
- ``drifted``: the issue differs; ``fields`` names the fields that differ (``status`` included) and
  ``changed`` says which side changed since the last sync where the link knows ("source": the record's
  content is not what was last written; "target": the record is as last written, so the issue was edited).
- ``orphaned``: an issue carrying the entity's label that no link, no record in scope and no queued or
  pending record accounts for (including a second issue for a record linked to another one).
- ``waiting``: the record is in the replay queue (with its reason).
- ``pending``: a create whose outcome is not settled yet (the next pass settles it).

Exit code 0 when every record is in step, waiting or pending; EXIT_NOT_IN_STEP otherwise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from mlconnector.config import Config
from mlconnector.errors import EXIT_NOT_IN_STEP, EXIT_OK, ConfigError, RecordError
from mlconnector.jira.sink import KEY_PROPERTY, IssueWrite, _comparable, jql_quote
from mlconnector.state import iso
from mlconnector.sync.keys import decode_key, display_key, encode_key

CLASSES = ("in_step", "missing", "drifted", "orphaned", "waiting", "pending")
EXPLAINED = frozenset({"in_step", "waiting", "pending"})  # classes that do not make the exit code non-zero


@dataclass
class Scope:
    """What a pair lends reconcile: its entities, readers and mapping (the same ones its pass uses).

    ``rows(kind, start, end)`` yields batches of source rows changed in [start, end]; ``map(kind, row)``
    returns the record as its issue should be (raising RecordError for a row a pass would queue);
    ``row_key(kind, row)`` names a row even when it cannot be mapped; ``kind_label(kind)`` is the label every
    issue of the entity carries; ``money`` names the financial entities and what their amount is, read by
    ``amount(kind, key, row)`` on the source and from field ``amount_field`` on the target; ``field_names``
    gives a differing field its configured name (``amount``) instead of its id (``customfield_10051``);
    ``plan(kind, rows)`` runs the pass's write path on rows in planning mode (--fix).
    """

    kinds: list[str]
    initial_since: Callable[[str], datetime]
    rows: Callable[[str, datetime, datetime], Iterator[list[dict[str, Any]]]]
    map: Callable[[str, dict[str, Any]], IssueWrite]
    row_key: Callable[[str, dict[str, Any]], str]
    kind_label: Callable[[str], str]
    money: dict[str, str] = field(default_factory=dict)
    amount: Callable[[str, str, dict[str, Any]], float | None] = lambda kind, key, row: None
    amount_field: str | None = None
    field_names: dict[str, str] = field(default_factory=dict)  # Jira field id -> the name the report shows
    # --fix: hand these rows of one entity to the pass's own write path in planning mode (nothing is written;
    # the pass notes on its context what it would do, see PassContext.planned).
    plan: Callable[[str, list[dict[str, Any]]], None] | None = None


@dataclass
class Finding:
    """One line of the report: a source record (or an unmatched target issue) and its class."""

    kind: str
    key: str  # the record's encoded key ("" for an orphaned issue that names no record)
    cls: str
    issue: str = ""
    fields: list[str] = field(default_factory=list)
    changed: str = ""  # drifted: "source", "target", "both" or "" (unknown)
    reason: str = ""
    fix: str = ""  # --fix: what the next pass would do for it ("" when not asked)
    source_amount: float | None = None
    target_amount: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class"] = d.pop("cls")
        return {k: v for k, v in d.items() if v not in (None, "", [])}


@dataclass
class Report:
    """The outcome of one reconcile: findings, counts per entity and class, money per financial entity.

    ``to_dict`` is --json (records listed are those not in step); ``to_csv`` has a row per finding."""

    pair: str
    since: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    money: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    plan: list[dict[str, Any]] | None = None  # --fix: the pass's plan for the missing and drifted records

    @property
    def totals(self) -> dict[str, int]:
        return {c: sum(k.get(c, 0) for k in self.counts.values()) for c in CLASSES}

    @property
    def exit_code(self) -> int:
        return EXIT_OK if all(f.cls in EXPLAINED for f in self.findings) else EXIT_NOT_IN_STEP

    def add(self, f: Finding) -> None:
        self.findings.append(f)
        counts = self.counts.setdefault(f.kind, dict.fromkeys(CLASSES, 0))
        counts[f.cls] += 1
        money = self.money.get(f.kind)
        if money is not None:
            for side in ("source", "target"):
                value = getattr(f, f"{side}_amount")
                if value is not None:
                    money[side] += Decimal(str(value))
                    money["by_class"].setdefault(f.cls, {"source": Decimal(0), "target": Decimal(0)})[side] += \
                        Decimal(str(value))

    def money_dict(self) -> dict[str, dict[str, Any]]:
        """Money per financial entity, as strings with two decimals (exact sums, no float drift)."""
        out: dict[str, dict[str, Any]] = {}
        for kind, m in self.money.items():
            q = Decimal("0.01")
            out[kind] = {"what": m["what"], "source": str(m["source"].quantize(q)),
                         "target": str(m["target"].quantize(q)),
                         "difference": str((m["source"] - m["target"]).quantize(q)),
                         "by_class": {c: {s: str(v.quantize(q)) for s, v in sides.items()}
                                      for c, sides in m["by_class"].items()}}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"pair": self.pair, "status": "in_step" if self.exit_code == EXIT_OK else "differences",
                "exit_code": self.exit_code, "since": self.since, "totals": self.totals, "counts": self.counts,
                "money": self.money_dict(), "records": [f.to_dict() for f in self.findings if f.cls != "in_step"],
                "requests": self.requests, **({"fix_plan": self.plan} if self.plan is not None else {})}

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["kind", "key", "class", "issue", "fields", "changed", "reason", "source_amount",
                    "target_amount"])
        for f in self.findings:
            w.writerow([f.kind, f.key, f.cls, f.issue, " ".join(f.fields), f.changed,
                        f.reason, "" if f.source_amount is None else f.source_amount,
                        "" if f.target_amount is None else f.target_amount])
        return buf.getvalue()


@dataclass
class _Wanted:
    """A source record mapped, reduced to what the comparison needs (the mapped record itself is let go)."""

    key: str
    label: str
    fields: dict[str, Any]  # field id -> comparable value
    target_status: str | None
    status_code: str
    hash: str
    amount: float | None
    ts: datetime


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
        for kind in [entity] if entity else scope.kinds:
            start = since or scope.initial_since(kind)
            report.since[kind] = iso(start)
            _reconcile_kind(report, steps, scope, kind, start, fix=fix)
        report.requests = steps.requests()
        return report


def reconcilable() -> list[str]:
    """The pairs whose module offers ``reconcile_scope``."""
    from mlconnector.registry import PAIRS

    return [name for name, spec in PAIRS.items() if hasattr(spec.load(), "reconcile_scope")]


def _reconcile_kind(report: Report, steps: Any, scope: Scope, kind: str, start: datetime, *,
                    fix: bool = False) -> None:
    state, jira = steps.state, steps.jira
    if kind in scope.money:
        report.money[kind] = {"what": scope.money[kind], "source": Decimal(0), "target": Decimal(0), "by_class": {}}
    report.counts.setdefault(kind, dict.fromkeys(CLASSES, 0))
    queued = {i["key"]: i for i in state.replay if i["kind"] == kind and i.get("what", "record") == "record"}
    pending = set(state.pending(kind))

    # 1. The source, mapped as a pass maps it (the newest row of a key wins, as in a pass).
    wanted: dict[str, _Wanted] = {}
    source_rows: dict[str, dict[str, Any]] = {}  # --fix only: the rows, for the pass's plan
    unmappable: dict[str, str] = {}
    for rows in scope.rows(kind, start, steps.now):
        for row in rows:
            try:
                rec = scope.map(kind, row)
                amount = scope.amount(kind, rec.key, row) if kind in scope.money else None
            except RecordError as exc:
                unmappable[scope.row_key(kind, row)] = exc.message
                continue
            prev = wanted.get(rec.key)
            if prev is not None and rec.ts < prev.ts:
                continue
            if fix:
                source_rows[rec.key] = row
            wanted[rec.key] = _Wanted(rec.key, rec.label, {f: _comparable(v) for f, v in rec.edit_fields.items()},
                                      rec.target_status, rec.status_code, rec.hash, amount, rec.ts)
        state.release(can_save=False)

    # 2. The target: every issue of the entity, by the label they all carry (one paged search).
    names = sorted({f for w in wanted.values() for f in w.fields} | {"status", "labels"})
    if scope.amount_field:
        names = sorted({*names, scope.amount_field})
    project = steps.writer.project
    jql = f"project = {jql_quote(project)} AND labels in ({jql_quote(scope.kind_label(kind))}) ORDER BY key"
    issues: dict[str, dict[str, Any]] = {}
    by_label: dict[str, list[str]] = {}
    for issue in jira.search(jql, names, properties=[KEY_PROPERTY]):
        issues[str(issue["key"])] = issue
        for lab in (issue.get("fields") or {}).get("labels") or []:
            by_label.setdefault(lab, []).append(str(issue["key"]))

    links: dict[str, str] = {}  # issue key -> record key, over every link of the entity (in scope or not)
    for key, entry in state.keymap.items(kind):
        if entry.get("issue"):
            links[str(entry["issue"])] = key
    explained_labels: set[str] = set()
    matched: set[str] = set()

    # 3. Each record in scope against its issue.
    for key, w in wanted.items():
        entry = state.entry(kind, key) or {}
        if key in queued:
            issue_key = str(entry.get("issue") or "")
            report.add(Finding(kind, key, "waiting", issue=issue_key, reason=str(queued[key].get("error") or ""),
                               source_amount=w.amount, target_amount=_amount(issues.get(issue_key), scope)))
            explained_labels.add(w.label)
            matched.add(issue_key)
            continue
        if entry.get("pending") or key in pending:
            report.add(Finding(kind, key, "pending", reason="a create whose outcome is not settled yet; the next pass "
                               "settles it", source_amount=w.amount))
            explained_labels.add(w.label)
            continue
        issue_key = str(entry.get("issue") or "")
        issue: dict[str, Any] | None = None
        note = ""
        if issue_key:
            issue = issues.get(issue_key)
            if issue is None:  # not labelled any more, or gone: ask for it by key
                issue = jira.get_issue(issue_key, ",".join(names))
                if issue is None:
                    report.add(Finding(kind, key, "missing", issue=issue_key, source_amount=w.amount,
                                       reason=f"the linked issue {issue_key} no longer exists in Jira"))
                    continue
                issue_key = str(issue.get("key") or issue_key)  # an issue moved to another key
        else:
            found = [k for k in by_label.get(w.label, []) if _names(issues[k], kind, key)]
            if found:
                issue_key, issue = found[0], issues[found[0]]
                note = "not linked in the state: found by its label (the next pass adopts it)"
        if issue is None:
            report.add(Finding(kind, key, "missing", source_amount=w.amount, reason="no issue in Jira"))
            continue
        matched.add(issue_key)
        differ = [scope.field_names.get(f, f) for f in _differences(w, issue)]
        target_amount = _amount(issue, scope)
        if not differ:
            report.add(Finding(kind, key, "in_step", issue=issue_key, reason=note, source_amount=w.amount,
                               target_amount=target_amount))
            continue
        report.add(Finding(kind, key, "drifted", issue=issue_key, fields=differ, changed=_changed(entry, w),
                           reason=note, source_amount=w.amount, target_amount=target_amount))

    # Rows a pass could not map: queued (waiting) or not yet (missing, with the reason a pass would give).
    for key, message in unmappable.items():
        if key in wanted:
            continue
        item = queued.get(key)
        report.add(Finding(kind, key, "waiting" if item else "missing",
                           reason=str(item.get("error")) if item else f"cannot be mapped: {message}"))

    # Queued and pending records outside the rows read (older than --since, or no longer returned).
    read = set(wanted) | set(unmappable)
    for key, item in queued.items():
        if key not in read:
            entry = state.entry(kind, key) or {}
            report.add(Finding(kind, key, "waiting", issue=str(entry.get("issue") or ""),
                               reason=str(item.get("error") or "")))
            if entry.get("label"):
                explained_labels.add(str(entry["label"]))
    for key in pending:
        if key not in read and key not in queued:
            entry = state.entry(kind, key) or {}
            report.add(Finding(kind, key, "pending", reason="a create whose outcome is not settled yet; the next "
                               "pass settles it"))
            if entry.get("label"):
                explained_labels.add(str(entry["label"]))

    if fix:
        _plan_fixes(report, steps, scope, kind, source_rows)

    # 4. Issues of the entity that nothing accounts for.
    for issue_key, issue in issues.items():
        if issue_key in matched or issue_key in links:
            continue
        labels = set((issue.get("fields") or {}).get("labels") or [])
        if labels & explained_labels:
            continue
        named = _named_key(issue, kind)
        if named and named in wanted:
            reason = f"a second issue for {display_key(named)}, which is linked to another issue"
        elif named and state.entry(kind, named):
            reason = f"names {display_key(named)}, which is linked to {state.entry(kind, named).get('issue')}"
        elif named:
            reason = f"names {display_key(named)}: no such record in scope and no link"
        else:
            reason = "carries the entity's label but names no record (no link, no source record)"
        report.add(Finding(kind, named or "", "orphaned", issue=issue_key, reason=reason,
                           target_amount=_amount(issue, scope)))
    # Orphaned issues count on the target side of the money totals as well: they are in Jira.


def _plan_fixes(report: Report, steps: Any, scope: Scope, kind: str, rows: dict[str, dict[str, Any]]) -> None:
    """What the next pass would do for this entity's missing and drifted records: its own write path in
    planning mode. A record it would leave alone (an issue edited in Jira, a link to a deleted issue, while
    the record has not changed at the source) is named as such: only a person can mend it."""
    todo = [f for f in report.findings if f.kind == kind and f.cls in ("missing", "drifted") and f.key in rows]
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


def _differences(w: _Wanted, issue: dict[str, Any]) -> list[str]:
    fields = issue.get("fields") or {}
    out = sorted(f for f, v in w.fields.items() if _comparable(fields.get(f)) != v)
    if w.target_status:
        current = str((fields.get("status") or {}).get("name") or "")
        if current.lower() != w.target_status.lower():
            out.append("status")
    return out


def _changed(entry: dict[str, Any], w: _Wanted) -> str:
    """Which side changed since the last sync, where the link knows (its hash and status of the last write)."""
    if not entry.get("hash"):
        return ""
    source = entry.get("hash") != w.hash or (entry.get("status") is not None and entry.get("status") != w.status_code)
    return "source" if source else "target"


def _amount(issue: dict[str, Any] | None, scope: Scope) -> float | None:
    if issue is None or not scope.amount_field:
        return None
    value = (issue.get("fields") or {}).get(scope.amount_field)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


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
                     f"difference {m['difference']}")
    for f in report.findings:
        if f.cls == "in_step":
            continue
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
    differ = sum(1 for f in report.findings if f.cls not in EXPLAINED)
    lines.append(f"RECONCILE: {differ} record(s) differ (exit {report.exit_code})." if differ else
                 "RECONCILE: both sides agree" + (" (the rest is explained by the replay queue)."
                                                  if report.totals["waiting"] or report.totals["pending"] else "."))
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
