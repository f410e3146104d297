"""Supplier invoices written as PeopleSoft vouchers through a voucher component interface, at most once each.

Use (from a pair's pass)::

    writer = VoucherWriter(ctx, ci, VoucherNames(ci=settings.voucher_ci), po_kind="purchase_orders",
                           grace_seconds=settings.pending_grace_seconds)
    writer.resolve_pending("invoices")                      # once per pass, before writing
    posted = writer.write("invoices", VoucherWrite(...))    # Posted (voucher keys) or None (failed/waiting)

The handle is the supplier + INVOICE_ID (the supplier's invoice number: what PeopleSoft's duplicate-invoice
check compares). Rules, beyond the shared ones of doc_sink.py (pending mark before the Create, a current lookup
before every create, never resent in the same pass after a lost answer, a grace period before an absence is
trusted):

- **The duplicate-invoice error means "already there"**: the voucher is looked up (Find by supplier and
  INVOICE_ID, Get, exact match), linked and counted adopted, neither failed nor queued.
- Where a business unit has the duplicate check switched off, the lookup before every create is the only
  guard, and it holds: the lookup runs before every Create, whatever the state says.
- **A voucher matched to a PO waits** (as a missing reference: retried every pass) until that PO is linked,
  rather than being posted unmatched.
- The content (amounts, lines) is checked before any call: lines add up to the gross amount, INVOICE_ID fits
  its 30 characters. A voucher already in PeopleSoft is never changed by the connector: an invoice that
  changes afterwards waits for a person with both versions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from mlconnector.errors import AmbiguousWriteError, RecordError
from mlconnector.peoplesoft.ci import CIClient, CIError, CIFaultError
from mlconnector.peoplesoft.doc_sink import DocumentWriter, NeedsPerson, Posted, canon, ib_text
from mlconnector.sync.engine import PassContext
from mlconnector.sync.xref import MissingReference

INVOICE_ID_MAX = 30


@dataclass(frozen=True)
class VoucherNames:
    """The voucher CI's name and field names. Defaults are the delivered record's names (reference §5); the CI
    name is configuration since the reference marks a delivered ``VCHR_EXPRESS`` CI unverified.
    ``duplicate_messages`` (lower-case text) and ``duplicate_ids`` (``"set,number"``) recognise PeopleSoft's
    duplicate-invoice error in a CI fault."""

    ci: str = "VCHR_EXPRESS"
    business_unit: str = "BUSINESS_UNIT"
    voucher_id: str = "VOUCHER_ID"
    invoice_id: str = "INVOICE_ID"
    invoice_dt: str = "INVOICE_DT"
    vendor_setid: str = "VENDOR_SETID"
    vendor_id: str = "VENDOR_ID"
    gross_amt: str = "GROSS_AMT"
    currency: str = "TXN_CURRENCY_CD"
    po_business_unit: str = "PO_BUSINESS_UNIT"
    po_id: str = "PO_ID"
    lines: str = "VOUCHER_LINE"
    line_nbr: str = "VOUCHER_LINE_NUM"
    line_descr: str = "DESCR"
    line_amount: str = "MERCHANDISE_AMT"
    po_line_nbr: str = "LINE_NBR"
    distributions: str = "DISTRIB_LINE"
    distrib_nbr: str = "DISTRIB_LINE_NUM"
    account: str = "ACCOUNT"
    deptid: str = "DEPTID"
    distrib_amount: str = "MERCHANDISE_AMT"
    duplicate_messages: tuple[str, ...] = ("duplicate invoice",)
    duplicate_ids: tuple[str, ...] = ()


@dataclass
class VoucherLine:
    """One invoice line: its amount, the ACCOUNT and DEPTID it is charged to (one distribution), a description,
    the PO line it matches (optional) and any other line fields by CI name (``fields``)."""

    amount: Decimal | str | int
    account: str
    deptid: str
    description: str = ""
    po_line: int | str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class VoucherWrite:
    """One voucher as it should be.

    ``key`` is the source invoice's state key; ``title`` names it in messages ("JAGGAER invoice INV-7 of
    supplier 42"). ``po_key`` is the state key (under the writer's ``po_kind``) of the PO the invoice is matched
    to: the voucher waits until that link exists. Or give the PeopleSoft PO directly as ``po`` (business unit,
    PO_ID). ``header`` holds other header fields by CI name (a reference field, say). ``row`` is the source row
    kept in the queue. Amounts are Decimal (or text); the lines must add up to ``gross_amount``."""

    key: str
    business_unit: str
    vendor_setid: str
    vendor_id: str
    invoice_id: str
    invoice_date: date | str
    gross_amount: Decimal | str | int
    currency: str
    lines: list[VoucherLine]
    title: str
    row: dict[str, Any] = field(default_factory=dict)
    po_key: str | None = None
    po: tuple[str, str] | None = None
    header: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # saved on the link


class POWaiting(MissingReference):
    """The invoice's purchase order has no PeopleSoft PO linked yet: the voucher waits (every pass retries)."""

    def __init__(self, po_key: str, po_kind: str, what: str) -> None:
        self.table, self.value, self.config_key = "purchase order", po_key, po_kind
        RecordError.__init__(self, f"{what} waits for its purchase order {po_key!r}, which is not in PeopleSoft "
                                   f"yet (not linked under {po_kind!r}). The voucher is not posted unmatched: it is "
                                   f"posted on the first pass after the purchase order is.")


def _amount(value: Any, what: str) -> Decimal:
    if isinstance(value, float):
        value = repr(value)  # a float's shortest text, never its binary expansion
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise RecordError(f"{what} is not an amount: {value!r}.") from None
    if not d.is_finite():
        raise RecordError(f"{what} is not an amount: {value!r}.")
    return d


class VoucherWriter(DocumentWriter):
    """Writes ``VoucherWrite``s for one pass through the voucher CI, counting and queueing through ``ctx``
    (see the module docstring for the rules and a usage example)."""

    link = "voucher"
    noun = "voucher"

    def __init__(self, ctx: PassContext, ci: CIClient, names: VoucherNames | None = None, *,
                 po_kind: str = "purchase_orders", grace_seconds: float = 0.0) -> None:
        self.n = names or VoucherNames()
        super().__init__(ctx, ci, self.n.ci, grace_seconds=grace_seconds)
        self.po_kind = po_kind

    # -- lookup ----------------------------------------------------------------------------------
    def lookup(self, business_unit: str, vendor_setid: str, vendor_id: str, invoice_id: str,
               ) -> list[dict[str, Any]]:
        """Every voucher of this business unit (any, when empty) whose supplier and INVOICE_ID equal these."""
        n = self.n
        match = {n.vendor_id: vendor_id, n.invoice_id: invoice_id}
        if vendor_setid:
            match[n.vendor_setid] = vendor_setid
        if business_unit:
            match[n.business_unit] = business_unit
        return self.find_exact({n.business_unit: business_unit, n.vendor_id: vendor_id, n.invoice_id: invoice_id},
                               match)

    def lookup_entry(self, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.lookup(entry.get("business_unit", ""), entry.get("vendor_setid", ""), entry.get("vendor", ""),
                           entry.get("invoice", ""))

    # -- building --------------------------------------------------------------------------------
    def record(self, w: VoucherWrite, po: tuple[str, str] | None) -> dict[str, Any]:
        """The Create request of ``w`` (VOUCHER_ID ``NEXT``); RecordError when it cannot be right."""
        n = self.n
        invoice = str(w.invoice_id).strip()
        if not invoice:
            raise RecordError(f"{w.title} has no invoice number; a voucher needs INVOICE_ID.")
        if len(invoice) > INVOICE_ID_MAX:
            raise RecordError(f"{w.title}: invoice number {invoice!r} is longer than PeopleSoft's {INVOICE_ID_MAX} "
                              f"characters (INVOICE_ID); the duplicate-invoice check would not see it whole, so it "
                              f"is not posted. Shorten it at the source, or post it by hand.")
        gross = _amount(w.gross_amount, f"{w.title}: the gross amount")
        if not w.lines:
            raise RecordError(f"{w.title} has no lines; a voucher needs at least one.")
        lines = []
        total = Decimal(0)
        for i, line in enumerate(w.lines, 1):
            amount = _amount(line.amount, f"{w.title}: line {i}'s amount")
            total += amount
            row: dict[str, Any] = {n.line_nbr: i, n.line_amount: amount, **line.fields}
            if line.description:
                row[n.line_descr] = line.description[:30]
            if line.po_line is not None and po is not None:
                row[n.po_line_nbr] = line.po_line
            row[n.distributions] = [{n.distrib_nbr: 1, n.account: line.account, n.deptid: line.deptid,
                                     n.distrib_amount: amount}]
            lines.append(row)
        if total != gross:
            raise RecordError(f"{w.title}: its lines add up to {total}, not to its gross amount {gross}. Nothing was "
                              f"sent; correct the invoice at the source.")
        invoice_dt = w.invoice_date.isoformat() if isinstance(w.invoice_date, date) else str(w.invoice_date)
        rec: dict[str, Any] = {
            **w.header, n.business_unit: w.business_unit, n.voucher_id: "NEXT", n.invoice_id: invoice,
            n.invoice_dt: invoice_dt, n.vendor_setid: w.vendor_setid, n.vendor_id: w.vendor_id, n.gross_amt: gross,
            n.currency: w.currency, n.lines: lines}
        if po is not None:
            rec[n.po_business_unit], rec[n.po_id] = po
        return rec

    def content_hash(self, w: VoucherWrite, po: tuple[str, str] | None) -> str:
        blob = json.dumps(self.record(w, po), default=canon, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def resolve_po(self, w: VoucherWrite) -> tuple[str, str] | None:
        """The PeopleSoft PO (business unit, PO_ID) of ``w``; POWaiting while its PO is not linked."""
        if w.po is not None:
            return w.po
        if not w.po_key:
            return None
        entry = self.state.entry(self.po_kind, w.po_key)
        keys = list((entry or {}).get("po", {}).values()) if entry and not entry.get("pending") else []
        if len(keys) < 2:
            raise POWaiting(w.po_key, self.po_kind, w.title)
        return str(keys[0]), str(keys[1])

    # -- writes ----------------------------------------------------------------------------------
    def write(self, kind: str, w: VoucherWrite) -> Posted | None:
        """Create, adopt or leave one voucher; failures are counted and queued (never raised, except a lost
        login or network, which stops the pass). Returns the voucher (``Posted``) or None."""
        counts = self.ctx.result.kind(kind)
        handle = f"supplier {w.vendor_id} and INVOICE_ID {w.invoice_id!r}"
        if self.wait_if_young(kind, w.key, w.row, w.title, handle):
            return None
        try:
            po = self.resolve_po(w)
            record = self.record(w, po)
        except RecordError as exc:
            self.ctx.fail(kind, w.key, w.row, exc)
            return None
        digest = self.content_hash(w, po)
        entry = self.state.entry(kind, w.key)
        if entry is not None and entry.get(self.link) and not entry.get("pending"):
            if entry.get("hash") == digest:
                return self.unchanged(kind, w.key, entry)
            return self._changed(kind, w, entry, record, digest)
        try:
            found = self.lookup(w.business_unit, w.vendor_setid, w.vendor_id, w.invoice_id)
        except CIError as exc:
            self.ctx.fail(kind, w.key, w.row, exc)
            return None
        base = {"business_unit": w.business_unit, "vendor_setid": w.vendor_setid, "vendor": w.vendor_id,
                "invoice": str(w.invoice_id).strip(), **w.extra}
        if len(found) > 1:
            self._several(kind, w, found, record)
            return None
        if found:
            if self.ctx.dry_run:
                counts.adopted += 1
                self.ctx.planned(kind, w.key, "adopt", voucher=self.keys_of(found[0]), handle=handle)
                return None
            return self._adopt(kind, w, {**base, "hash": digest}, found[0], record, "found by supplier and INVOICE_ID")
        if self.ctx.dry_run:
            counts.created += 1
            self.ctx.planned(kind, w.key, "create", handle=handle, lines=len(w.lines))
            return None
        entry = {**base, "hash": digest}
        try:
            keys = self.create_marked(kind, w.key, entry, record)  # a lost login or network propagates
        except AmbiguousWriteError as exc:
            self.lost.add((kind, w.key))
            self.ctx.fail(kind, w.key, w.row, AmbiguousWriteError(
                f"{w.title}: PeopleSoft's answer to the voucher Create was lost ({exc.message}). It was not sent "
                f"again; the next pass looks the voucher up by {handle} before anything is created.",
                system=exc.system, raw=exc.raw, retryable=True))
            return None
        except CIError as exc:
            # A fault, or HTTP 200 with notification 0: PeopleSoft answered, so nothing of this Create was saved.
            if self.is_duplicate(exc):
                return self._duplicate(kind, w, entry, record, exc)
            self.state.drop_entry(kind, w.key)
            self.ctx.fail(kind, w.key, w.row, self._refused(w, exc) if isinstance(exc, CIFaultError) else exc)
            return None
        linked = self.link_created(kind, w.key, entry, keys)
        counts.created += 1
        self.ctx.audit.write("created", kind, w.key, voucher=linked, vendor=w.vendor_id, invoice=w.invoice_id,
                             po=list(po) if po else None, lines=len(w.lines))
        self.done(kind, w.key)
        return self.posted(linked, "created")

    def is_duplicate(self, exc: CIError) -> bool:
        """True when a CI fault (or a notification 0) is PeopleSoft's duplicate-invoice error (VoucherNames says
        how to tell)."""
        if f"{exc.message_set},{exc.message_id}" in self.n.duplicate_ids:
            return True
        text = f"{ib_text(exc)} {exc.message}".lower()
        return any(m.lower() in text for m in self.n.duplicate_messages)

    def _duplicate(self, kind: str, w: VoucherWrite, entry: dict[str, Any], record: dict[str, Any],
                   exc: CIError) -> Posted | None:
        """The Create met the duplicate-invoice check: the voucher is already there. Find it and link it."""
        try:
            found = self.lookup(w.business_unit, w.vendor_setid, w.vendor_id, w.invoice_id)
            elsewhere = [] if found else self.lookup("", w.vendor_setid, w.vendor_id, w.invoice_id)
        except CIError as err:
            # The mark stays: the next pass looks the voucher up before anything is sent.
            self.ctx.fail(kind, w.key, w.row, err)
            return None
        if len(found) == 1:
            self.ctx.audit.write("duplicate_invoice", kind, w.key, error=ib_text(exc), raw=exc.raw)
            return self._adopt(kind, w, entry, found[0], record, "PeopleSoft's duplicate-invoice check")
        self.state.drop_entry(kind, w.key)  # PeopleSoft refused the Create: nothing of ours was saved
        if len(found) > 1:
            self._several(kind, w, found, record)
            return None
        where = ", ".join("/".join(self.keys_of(r).values()) for r in elsewhere)
        self.ctx.fail(kind, w.key, w.row, NeedsPerson(
            f"{w.title}: PeopleSoft refused the voucher as a duplicate invoice ({ib_text(exc)}), but no voucher of "
            f"business unit {w.business_unit} carries supplier {w.vendor_id} and invoice {w.invoice_id!r}"
            f"{' (found in: ' + where + ')' if where else ''}. Nothing was created: a person must decide whether "
            f"the invoice is already paid, then run `mlconnector replay drop` (or correct it and `replay retry`).",
            json.dumps({"fault": exc.raw, "elsewhere": where}, default=str)))
        return None

    def _adopt(self, kind: str, w: VoucherWrite, entry: dict[str, Any], current: dict[str, Any],
               record: dict[str, Any], why: str) -> Posted | None:
        counts = self.ctx.result.kind(kind)
        linked = self.adopt(kind, w.key, entry, current, why)
        if self._differs(current, record):
            entry["hash"] = ""  # compared again on every pass until a person makes them equal
            self.state.dirty = True
            self._needs_person(kind, w, linked, current, record, "adopted")
            self.state.save()
            return None
        counts.adopted += 1
        self.done(kind, w.key)
        return self.posted(linked, "adopted")

    def _needs_person(self, kind: str, w: VoucherWrite, keys: Mapping[str, str], current: dict[str, Any],
                      record: dict[str, Any], how: str) -> None:
        vid = "/".join(keys.values())
        what = ("is already in PeopleSoft as voucher " + vid if how == "adopted"
                else f"changed after its voucher {vid} was entered")
        self.ctx.fail(kind, w.key, w.row, NeedsPerson(
            f"{w.title} {what}, and the voucher differs from the invoice (gross amount, date, currency or lines). "
            f"The connector never changes a voucher and never enters a second one: a person must correct the "
            f"voucher in PeopleSoft (both versions are in the audit trail); the next pass that finds them equal "
            f"clears this item.", json.dumps({"voucher": current, "wanted": record}, default=canon)))

    def _several(self, kind: str, w: VoucherWrite, found: list[dict[str, Any]], record: dict[str, Any]) -> None:
        ids = ", ".join("/".join(self.keys_of(r).values()) for r in found)
        self.ctx.fail(kind, w.key, w.row, NeedsPerson(
            f"{w.title}: {len(found)} vouchers in PeopleSoft carry supplier {w.vendor_id} and invoice "
            f"{w.invoice_id!r} ({ids}). Nothing was created: a person must check for a double payment and delete "
            f"the extra voucher(s), then run `mlconnector replay retry`.",
            json.dumps({"vouchers": ids.split(", "), "wanted": record}, default=canon)))

    def _refused(self, w: VoucherWrite, exc: CIFaultError) -> CIFaultError:
        """PeopleSoft's validation refused the voucher: one plain sentence; the raw fault stays for the audit."""
        return CIFaultError(
            f"{w.title} was not entered: PeopleSoft refused the voucher ({ib_text(exc)}); correct what it names "
            f"(at the source or in the crosswalk) and the next pass posts it.", operation=exc.operation,
            raw=exc.raw, status=exc.status, message_set=exc.message_set, message_id=exc.message_id)

    def _differs(self, current: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        """True when PeopleSoft's voucher differs from the wanted one in the fields that make it the invoice."""
        n = self.n
        for name in (n.gross_amt, n.invoice_dt, n.currency, n.vendor_id):
            if canon(current.get(name)) != canon(record.get(name)):
                return True
        have = current.get(n.lines) or []
        have = have if isinstance(have, list) else [have]
        want = record.get(n.lines) or []
        return sorted(canon(r.get(n.line_amount)) for r in have if isinstance(r, dict)) != sorted(
            canon(r.get(n.line_amount)) for r in want)


def voucher_checks(client: CIClient, names: VoucherNames, business_unit: str, section: str) -> list[Any]:
    """`ping` checks of the voucher CI: WSDL, the Find/Get/Create operations, the Find fields the lookup before
    every create needs, and one harmless Find. ``section`` names the pair's config section for the fix."""
    from mlconnector.peoplesoft.ping_ci import writer_ci_checks

    return writer_ci_checks(client, names.ci, "voucher", [names.business_unit, names.vendor_id, names.invoice_id],
                            {names.business_unit: business_unit, names.vendor_id: "~~PING~~",
                             names.invoice_id: "~~PING~~"}, section, "voucher_ci")
