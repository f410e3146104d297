"""`reconcile peoplesoft-jaggaer`: the money flows, JAGGAER -> PeopleSoft, record by record.

- ``purchase_orders``: each JAGGAER PO (its newest revision, read from the REST list as a pass reads it) mapped
  by the pass's ``map_po`` against the PeopleSoft PO its link names (a Get through the PO component interface;
  an unlinked one looked up by PO_REF ``<po_handle_prefix><number>`` and vendor, as before a create). Money: the
  PO amount, the sum of the distribution amounts, on both sides. Orphans: POs whose PO_REF starts with the
  prefix in a mapped business unit that no link or JAGGAER PO in scope accounts for.
- ``invoices``: each JAGGAER invoice mapped by the pass's ``map_invoice`` to the voucher its writer would
  create, against the voucher its link names (a Get through the voucher component interface; an unlinked one
  looked up by supplier and INVOICE_ID). Money: the invoice total against the voucher's gross. No orphan sweep
  (a voucher carries no handle of ours; see ps_docs_reconcile.VoucherSide).

A document a pass would not write (a status or invoice type outside the configured ones) is not compared; if it
was written, it is reported drifted (a person decides). A document a pass would hold (an unmapped value, an
invoice whose PO is not in PeopleSoft yet) is missing with the reason, or waiting when it is in the queue.

Not compared by this version: the reference flows (suppliers both ways, requisitions to JAGGAER), which carry no
money; and documents received only through the cXML spool (po_transport / invoice_transport = "cxml"): they are
read from the REST lists, which that setup may not license.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from mlconnector.jaggaer.client import pick
from mlconnector.pairs.ps_docs_reconcile import Doc, PrefixPOSide, Sides, VoucherSide, one_key
from mlconnector.sync.keys import encode_key

PAGE = 100  # documents compared per page (one PeopleSoft Get each)
MONEY = {"purchase_orders": "PO amount (sum of the distribution amounts)",
         "invoices": "voucher gross (invoice total vs GROSS_AMT)"}


def reconcile_scope(steps: Any) -> Any:
    """What `reconcile peoplesoft-jaggaer` reads, maps and compares, through this pass's own readers, mapping and
    lookups (see the module's docstring)."""
    from mlconnector.reconcile_types import Scope

    # The pair's own module, reached through its pass (it re-exports this function: no import cycle).
    pair = sys.modules[type(steps).__module__]
    s, jcfg = steps.s, steps.jcfg
    pos, invoices = pair.POS, pair.INVOICES
    kinds = [pos] + ([invoices] if steps.vouchers is not None else [])

    def text(value: Any) -> str:
        return "" if value is None else str(value).strip()

    def po_number(po: dict[str, Any]) -> str:
        return text(pick(po, s.po_source.number))

    def inv_id(inv: dict[str, Any]) -> str:
        return text(pick(inv, s.invoice_source.id))

    def rows(kind: str, start: datetime, _end: datetime) -> Iterator[list[dict[str, Any]]]:
        # The newest version of each document, as a pass keeps it (a revision read twice counts once).
        newest: dict[str, dict[str, Any]] = {}
        if kind == pos:
            for page in steps.jaggaer.changed(jcfg.purchase_orders, start):
                for po in page:
                    number = po_number(po)
                    if number and (number not in newest or steps._stamp(po) >= steps._stamp(newest[number])):
                        newest[number] = po
        else:
            mod = s.invoice_source.modified
            for page in steps.jaggaer.changed(jcfg.invoices, start):
                for inv in page:
                    i = inv_id(inv)
                    if i and (i not in newest or text(pick(inv, mod)) >= text(pick(newest[i], mod))):
                        newest[i] = inv
        batch: list[dict[str, Any]] = []
        for _k, row in sorted(newest.items()):
            batch.append(row)
            if len(batch) >= PAGE:
                yield batch
                batch = []
        if batch:
            yield batch

    def map_row(kind: str, row: dict[str, Any]) -> Any:
        if kind == pos:
            if text(pick(row, s.po_source.status)) not in s.po_statuses:
                return None  # a pass does not write it
            entry = steps.state.entry(pos, encode_key((po_number(row),))) or {}
            return pair.map_po(s, steps.xref, row, steps.ctx.now.date(), text(entry.get("handle")) or None)
        src = s.invoice_source
        if text(pick(row, src.status)) not in s.invoice_statuses or \
                text(pick(row, src.invoice_type)) not in s.invoice_types:
            return None
        w = pair.map_invoice(s, steps.xref, steps.state, row)
        writer = steps.vouchers
        po = writer.resolve_po(w)
        return Doc(key=w.key, write=w, record=writer.record(w, po), hash=writer.content_hash(w, po),
                   handle=f"supplier {w.vendor_id} and INVOICE_ID {w.invoice_id!r}",
                   amount=float(Decimal(str(w.gross_amount))))

    def row_key(kind: str, row: dict[str, Any]) -> str:
        return one_key(po_number(row) if kind == pos else inv_id(row))

    def plan(kind: str, rows: list[dict[str, Any]]) -> None:  # the pass is a planning pass: it writes nothing
        for row in rows:
            (steps._purchase_order if kind == pos else steps._invoice)(row)

    prefix = s.po_handle_prefix
    po_side = PrefixPOSide(steps, business_units=sorted(set(s.business_units)), handle_prefix=prefix,
                           section=pair.SECTION, noun="JAGGAER PO",
                           named=lambda handle: one_key(handle.removeprefix(prefix)))
    sides: dict[str, Any] = {pos: po_side}
    if steps.vouchers is not None:
        sides[invoices] = VoucherSide(steps.vouchers, pair.SECTION)

    def mapped_amount(kind: str, rec: Any) -> float | None:
        return po_side.po_amount(rec.lines) if kind == pos else rec.amount

    return Scope(kinds=kinds, initial_since=lambda _k: jcfg.initial_since, rows=rows, map=map_row, row_key=row_key,
                 money={k: MONEY[k] for k in kinds}, mapped_amount=mapped_amount, plan=plan, target=Sides(sides),
                 full_read=lambda _k, start: start <= jcfg.initial_since)
