"""Source documents (project costs, change orders) written as PeopleSoft GL journals through a journal component
interface: one balanced journal per document, created once.

Use (from a pair's pass)::

    writer = JournalWriter(ctx, ci, JournalNames(ci=settings.journal_ci, reference=settings.reference_field),
                           grace_seconds=settings.pending_grace_seconds)
    writer.resolve_pending("direct_costs")                          # once per pass, before writing
    journal = build_journal(key=..., business_unit="US001", reference="procore-dc-1234", journal_date=...,
                            ledger="ACTUALS", currency="USD", debits=[JournalLine("640000", Decimal("10.00"), ...)],
                            offset=JournalLine("200000", Decimal(0)), title="Procore direct cost 1234")
    posted = writer.write("direct_costs", journal)                # Posted (posted.id = JOURNAL_ID) or None

The reference field (default ``DESCR254``, configurable) names the source document and is the handle: the
journal is looked up by it (CI Find, then Get, exact match) before every create. Rules, beyond the shared ones
of doc_sink.py (pending mark before the Create, never resent in the same pass after a lost answer, a grace
period before an absence is trusted):

- **Balanced or not sent**: amounts are Decimal; a journal whose lines do not sum to zero, has fewer than two
  lines or an amount that is not a number is refused before any call (``build_journal`` raises
  ``UnbalancedJournal``; ``write`` fails the record without sending).
- A journal in PeopleSoft is never changed by the connector: a source document that changes after its journal
  was created waits for a person (reverse and re-enter), with both versions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from mlconnector.errors import AmbiguousWriteError, RecordError
from mlconnector.peoplesoft.ci import CIClient, CIError, CIFaultError
from mlconnector.peoplesoft.doc_sink import DocumentWriter, NeedsPerson, Posted, canon, ib_text
from mlconnector.sync.engine import PassContext

REFERENCE_MAX = 254


@dataclass(frozen=True)
class JournalNames:
    """The journal CI's name and field names. No delivered journal CI is named in the reference, so the CI name
    (default ``JOURNAL_ENTRY``) and the reference field that carries the handle (default ``DESCR254``) are
    configuration; the other defaults are the ledger records' field names."""

    ci: str = "JOURNAL_ENTRY"
    business_unit: str = "BUSINESS_UNIT"
    journal_id: str = "JOURNAL_ID"
    journal_date: str = "JOURNAL_DATE"
    ledger: str = "LEDGER"
    reference: str = "DESCR254"
    lines: str = "JRNL_LN"
    line_nbr: str = "JOURNAL_LINE"
    account: str = "ACCOUNT"
    deptid: str = "DEPTID"
    project_id: str = "PROJECT_ID"
    currency: str = "CURRENCY_CD"
    amount: str = "MONETARY_AMOUNT"
    line_descr: str = "LINE_DESCR"


@dataclass
class JournalLine:
    """One journal line: ACCOUNT, signed amount (debit positive, credit negative), DEPTID, PROJECT_ID, a
    description, and any other line fields by CI name (``fields``)."""

    account: str
    amount: Decimal | str | int
    deptid: str = ""
    project_id: str = ""
    description: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class JournalWrite:
    """One journal as it should be: ``key`` is the source document's state key, ``reference`` its handle (the
    text put in the reference field; unique per document, e.g. ``procore-dc-1234``), ``lines`` balanced.
    ``header`` holds other header fields by CI name (LEDGER_GROUP, SOURCE...); ``row`` is the source row kept
    in the queue; ``title`` names the document in messages."""

    key: str
    business_unit: str
    reference: str
    journal_date: date | str
    ledger: str
    currency: str
    lines: list[JournalLine]
    title: str
    row: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # saved on the link


class UnbalancedJournal(RecordError):
    """A journal that cannot be right (does not balance, too few lines, an amount that is no number): nothing is
    sent for it."""


def _amount(value: Any, what: str) -> Decimal:
    if isinstance(value, float):
        value = repr(value)  # a float's shortest text, never its binary expansion
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise UnbalancedJournal(f"{what} is not an amount: {value!r}. Nothing was sent.") from None
    if not d.is_finite():
        raise UnbalancedJournal(f"{what} is not an amount: {value!r}. Nothing was sent.")
    return d


def check_balanced(lines: Sequence[JournalLine], title: str) -> None:
    """UnbalancedJournal unless the lines are at least two, all amounts are numbers and they sum to zero."""
    if len(lines) < 2:
        raise UnbalancedJournal(f"{title}: a journal needs a debit and a credit line; it has {len(lines)}. Nothing "
                                f"was sent.")
    total = sum((_amount(ln.amount, f"{title}: the amount of account {ln.account}") for ln in lines), Decimal(0))
    if total != 0:
        raise UnbalancedJournal(f"{title}: the journal does not balance (debits minus credits = {total}). Nothing "
                                f"was sent; check the cost lines and the offset account.")


def build_journal(*, key: str, business_unit: str, reference: str, journal_date: date | str, ledger: str,
                  currency: str, debits: Sequence[JournalLine], offset: JournalLine, title: str,
                  row: dict[str, Any] | None = None, header: dict[str, Any] | None = None) -> JournalWrite:
    """A journal of ``debits`` plus one credit on ``offset``'s account (its amount is computed: minus the sum of
    the debits, in Decimal). Raises UnbalancedJournal (nothing sent) when it cannot balance."""
    total = sum((_amount(d.amount, f"{title}: the amount of account {d.account}") for d in debits), Decimal(0))
    credit = JournalLine(offset.account, -total, offset.deptid, offset.project_id, offset.description,
                         dict(offset.fields))
    w = JournalWrite(key=key, business_unit=business_unit, reference=reference, journal_date=journal_date,
                     ledger=ledger, currency=currency, lines=[*debits, credit], title=title, row=dict(row or {}),
                     header=dict(header or {}))
    check_balanced(w.lines, title)
    return w


class JournalWriter(DocumentWriter):
    """Writes ``JournalWrite``s for one pass through the journal CI, counting and queueing through ``ctx`` (see
    the module docstring for the rules and a usage example). ``write`` returns the journal (``Posted``: its
    ``id`` is the JOURNAL_ID, e.g. for Procore's ``origin_id``) or None when it failed or waits."""

    link = "journal"
    noun = "journal"

    def __init__(self, ctx: PassContext, ci: CIClient, names: JournalNames | None = None, *,
                 grace_seconds: float = 0.0) -> None:
        self.n = names or JournalNames()
        super().__init__(ctx, ci, self.n.ci, grace_seconds=grace_seconds)

    # -- lookup ----------------------------------------------------------------------------------
    def lookup(self, business_unit: str, reference: str) -> list[dict[str, Any]]:
        """Every journal of this business unit whose reference field equals ``reference`` exactly."""
        n = self.n
        return self.find_exact({n.business_unit: business_unit, n.reference: reference},
                               {n.business_unit: business_unit, n.reference: reference})

    def lookup_entry(self, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.lookup(entry.get("business_unit", ""), entry.get("reference", ""))

    # -- building --------------------------------------------------------------------------------
    def record(self, w: JournalWrite) -> dict[str, Any]:
        """The Create request of ``w`` (JOURNAL_ID ``NEXT``); UnbalancedJournal/RecordError when it cannot be
        right."""
        n = self.n
        check_balanced(w.lines, w.title)
        reference = str(w.reference).strip()
        if not reference or len(reference) > REFERENCE_MAX:
            raise RecordError(f"{w.title}: its reference {reference!r} must be 1 to {REFERENCE_MAX} characters "
                              f"({n.reference}); it is the handle the journal is found by.")
        lines = []
        for i, ln in enumerate(w.lines, 1):
            row: dict[str, Any] = {n.line_nbr: i, n.account: ln.account, n.deptid: ln.deptid,
                                   n.project_id: ln.project_id, n.currency: w.currency,
                                   n.amount: _amount(ln.amount, f"{w.title}: line {i}"), **ln.fields}
            if ln.description:
                row[n.line_descr] = ln.description[:30]
            lines.append(row)
        jdate = w.journal_date.isoformat() if isinstance(w.journal_date, date) else str(w.journal_date)
        return {**w.header, n.business_unit: w.business_unit, n.journal_id: "NEXT", n.journal_date: jdate,
                n.ledger: w.ledger, n.reference: reference, n.lines: lines}

    # -- writes ----------------------------------------------------------------------------------
    def write(self, kind: str, w: JournalWrite) -> Posted | None:
        """Create, adopt or leave one journal; failures are counted and queued (never raised, except a lost
        login or network, which stops the pass)."""
        counts = self.ctx.result.kind(kind)
        handle = f"{self.n.reference} {w.reference!r}"
        if self.wait_if_young(kind, w.key, w.row, w.title, handle):
            return None
        try:
            record = self.record(w)  # refused here, before any call, when it does not balance
        except RecordError as exc:
            self.ctx.fail(kind, w.key, w.row, exc)
            return None
        digest = hashlib.sha256(json.dumps(record, default=canon, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        entry = self.state.entry(kind, w.key)
        if entry is not None and entry.get(self.link) and not entry.get("pending"):
            if entry.get("hash") == digest:
                return self.unchanged(kind, w.key, entry)
            return self._changed(kind, w, entry, record, digest)
        try:
            found = self.lookup(w.business_unit, record[self.n.reference])
        except CIError as exc:
            self.ctx.fail(kind, w.key, w.row, exc)
            return None
        base = {"business_unit": w.business_unit, "reference": record[self.n.reference], "hash": digest, **w.extra}
        if len(found) > 1:
            ids = ", ".join("/".join(self.keys_of(r).values()) for r in found)
            self.ctx.fail(kind, w.key, w.row, NeedsPerson(
                f"{w.title}: {len(found)} journals in PeopleSoft business unit {w.business_unit} carry {handle} "
                f"({ids}). Nothing was created: a person must delete or reverse the extra journal(s), then run "
                f"`mlconnector replay retry`.", json.dumps({"journals": ids.split(", "), "wanted": record},
                                                           default=canon)))
            return None
        if found:
            if self.ctx.dry_run:
                counts.adopted += 1
                self.ctx.planned(kind, w.key, "adopt", journal=self.keys_of(found[0]), handle=handle)
                return None
            linked = self.adopt(kind, w.key, dict(base), found[0], f"found by {self.n.reference}")
            if self._differs(found[0], record):
                entry = self.state.entry(kind, w.key) or {}
                entry["hash"] = ""
                self.state.dirty = True
                self._needs_person(kind, w, linked, found[0], record, "adopted")
                self.state.save()
                return None
            counts.adopted += 1
            self.done(kind, w.key)
            return self.posted(linked, "adopted")
        if self.ctx.dry_run:
            counts.created += 1
            self.ctx.planned(kind, w.key, "create", handle=handle, lines=len(w.lines))
            return None
        entry = dict(base)
        try:
            keys = self.create_marked(kind, w.key, entry, record)  # a lost login or network propagates
        except AmbiguousWriteError as exc:
            self.lost.add((kind, w.key))
            self.ctx.fail(kind, w.key, w.row, AmbiguousWriteError(
                f"{w.title}: PeopleSoft's answer to the journal Create was lost ({exc.message}). It was not sent "
                f"again; the next pass looks the journal up by {handle} before anything is created.",
                system=exc.system, raw=exc.raw, retryable=True))
            return None
        except CIFaultError as exc:
            self.state.drop_entry(kind, w.key)  # PeopleSoft answered: nothing was saved
            self.ctx.fail(kind, w.key, w.row, CIFaultError(
                f"{w.title} was not posted: PeopleSoft refused the journal ({ib_text(exc)}); correct what it names "
                f"(the account crosswalk or the project) and the next pass posts it.", operation=exc.operation,
                raw=exc.raw, status=exc.status, message_set=exc.message_set, message_id=exc.message_id))
            return None
        except CIError as exc:
            self.state.drop_entry(kind, w.key)
            self.ctx.fail(kind, w.key, w.row, exc)
            return None
        linked = self.link_created(kind, w.key, entry, keys)
        counts.created += 1
        self.ctx.audit.write("created", kind, w.key, journal=linked, reference=record[self.n.reference],
                             lines=len(w.lines))
        self.done(kind, w.key)
        return self.posted(linked, "created")

    def _needs_person(self, kind: str, w: JournalWrite, keys: Mapping[str, str], current: dict[str, Any],
                      record: dict[str, Any], how: str) -> None:
        jid = "/".join(keys.values())
        what = (f"is already in PeopleSoft as journal {jid}" if how == "adopted"
                else f"changed after its journal {jid} was created")
        self.ctx.fail(kind, w.key, w.row, NeedsPerson(
            f"{w.title} {what}, and the journal differs from the document (date, ledger or lines). The connector "
            f"never changes a journal and never creates a second one: a person must reverse and re-enter it in "
            f"PeopleSoft (both versions are in the audit trail); the next pass that finds them equal clears this "
            f"item.", json.dumps({"journal": current, "wanted": record}, default=canon)))

    def _differs(self, current: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        n = self.n
        for name in (n.journal_date, n.ledger):
            if canon(current.get(name)) != canon(record.get(name)):
                return True

        def lines(rec: Mapping[str, Any]) -> list[tuple[str, ...]]:
            rows = rec.get(n.lines) or []
            rows = rows if isinstance(rows, list) else [rows]
            return sorted(tuple(canon(r.get(f)) for f in (n.account, n.deptid, n.project_id, n.amount))
                          for r in rows if isinstance(r, dict))

        return lines(current) != lines(record)


def journal_checks(client: CIClient, names: JournalNames, business_unit: str, section: str) -> list[Any]:
    """`ping` checks of the journal CI: WSDL, the Find/Get/Create operations, the Find fields of the lookup by
    reference, and one harmless Find. ``section`` names the pair's config section for the fix."""
    from mlconnector.peoplesoft.ping_ci import writer_ci_checks

    return writer_ci_checks(client, names.ci, "journal", [names.business_unit, names.reference],
                            {names.business_unit: business_unit, names.reference: "~~PING~~"}, section, "journal_ci")
