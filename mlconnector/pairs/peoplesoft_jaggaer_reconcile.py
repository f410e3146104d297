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

And the flows PeopleSoft -> JAGGAER (no money):

- ``suppliers``: each PeopleSoft vendor a pass sends (the vendor master, read in full) against the JAGGAER
  company profile its link names (read by its id; an unlinked one looked up by extCode): the fields we write.
  Orphans: profiles carrying an extCode that no PeopleSoft vendor read and no link accounts for.
- ``requisitions``: each PeopleSoft requisition in the configured statuses, mapped by the pass's
  ``requisition_body``, against the JAGGAER requisition carrying its handle (the external requisition number).
  JAGGAER requisitions are not updated through the API, so a drifted one is mended by hand.

Not compared by this version: ``jaggaer_suppliers`` (JAGGAER-only suppliers created in PeopleSoft); and
documents received only through the cXML spool (po_transport / invoice_transport = "cxml"): they are read from
the REST lists, which that setup may not license.
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
    pos, invoices, suppliers, reqs = pair.POS, pair.INVOICES, pair.SUPPLIERS, pair.REQS
    kinds = [suppliers, reqs, pos] + ([invoices] if steps.vouchers is not None else [])
    refs = JaggaerSide(steps, pair)

    def text(value: Any) -> str:
        return "" if value is None else str(value).strip()

    def po_number(po: dict[str, Any]) -> str:
        return text(pick(po, s.po_source.number))

    def inv_id(inv: dict[str, Any]) -> str:
        return text(pick(inv, s.invoice_source.id))

    def rows(kind: str, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        if kind in (suppliers, reqs):
            yield from refs.rows(kind, start, end)
            return
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
        if kind in (suppliers, reqs):
            return refs.map(kind, row)
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
        if kind in (suppliers, reqs):
            return refs.row_key(kind, row)
        return one_key(po_number(row) if kind == pos else inv_id(row))

    def plan(kind: str, rows: list[dict[str, Any]]) -> None:  # the pass is a planning pass: it writes nothing
        for row in rows:
            if kind == suppliers:
                steps._supplier(row)
            elif kind == reqs:
                steps._requisition(row["header"], row["lines"])
            else:
                (steps._purchase_order if kind == pos else steps._invoice)(row)

    prefix = s.po_handle_prefix
    po_side = PrefixPOSide(steps, business_units=sorted(set(s.business_units)), handle_prefix=prefix,
                           section=pair.SECTION, noun="JAGGAER PO",
                           named=lambda handle: one_key(handle.removeprefix(prefix)))
    sides: dict[str, Any] = {suppliers: refs, reqs: refs, pos: po_side}
    if steps.vouchers is not None:
        sides[invoices] = VoucherSide(steps.vouchers, pair.SECTION)

    def mapped_amount(kind: str, rec: Any) -> float | None:
        return po_side.po_amount(rec.lines) if kind == pos else rec.amount

    return Scope(kinds=kinds, initial_since=lambda _k: jcfg.initial_since, rows=rows, map=map_row, row_key=row_key,
                 money={k: MONEY[k] for k in kinds if k in MONEY}, mapped_amount=mapped_amount, plan=plan,
                 target=Sides(sides), full_read=lambda k, start: k == suppliers or start <= jcfg.initial_since)


class JaggaerSide:
    """JAGGAER as the target of the flows from PeopleSoft: company profiles (``suppliers``) and requisitions
    (``requisitions``), read through the pair's client by id or by their handle (see the module's docstring).
    It also reads and maps their PeopleSoft side (``rows``, ``map``), as the pass does."""

    name = "JAGGAER"

    def __init__(self, steps: Any, pair: Any) -> None:
        self.steps, self.pair, self.s, self.jcfg = steps, pair, steps.s, steps.jcfg

    @staticmethod
    def _text(value: Any) -> str:
        return "" if value is None else str(value).strip()

    def rows(self, kind: str, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        s, t = self.s, self._text
        if kind == self.pair.SUPPLIERS:
            for rows in self.steps.qas.read_all(s.vendor_query):
                yield [r for r in rows if t(r.get("SETID")) in ("", s.vendor_setid)]
            return
        headers: dict[str, dict[str, Any]] = {}
        for rows, _ in self.steps.qas.read_window(s.requisition_query, start, end):
            for row in rows:
                key = encode_key((t(row.get("BUSINESS_UNIT")), t(row.get("REQ_ID"))))
                if key not in headers or t(row.get("LAST_DTTM_UPDATE")) >= t(headers[key].get("LAST_DTTM_UPDATE")):
                    headers[key] = row
        lines = self.steps._requisition_lines(headers, start, end)
        items = [{"header": row, "lines": lines.get(key, [])} for key, row in sorted(headers.items())]
        for i in range(0, len(items), PAGE):
            yield items[i:i + PAGE]

    def row_key(self, kind: str, row: dict[str, Any]) -> str:
        t = self._text
        if kind == self.pair.SUPPLIERS:
            return encode_key((self.s.vendor_setid, t(row.get("VENDOR_ID"))))
        h = row.get("header") or {}
        return encode_key((t(h.get("BUSINESS_UNIT")), t(h.get("REQ_ID"))))

    def map(self, kind: str, row: dict[str, Any]) -> Doc | None:
        from mlconnector.errors import RecordError
        from mlconnector.sync.keys import handle

        pair, s, t = self.pair, self.s, self._text
        key = self.row_key(kind, row)
        entry = self.steps.state.entry(kind, key) or {}
        linked = bool(entry.get("id")) and not entry.get("pending")
        if kind == pair.SUPPLIERS:
            info = pair.supplier_info(s, row)
            if not linked and info["status"] != "ACTIVE":
                return None  # an inactive vendor never used in JAGGAER is not sent
            return Doc(key=key, write=info, record=pair.profile_facts(s, info), hash=pair.digest(info),
                       handle=t(row.get("VENDOR_ID")))
        header, lines = row["header"], row["lines"]
        if t(header.get("REQ_STATUS")) not in s.requisition_statuses:
            return None
        h = handle(s.requisition_handle_prefix, (t(header.get("BUSINESS_UNIT")), t(header.get("REQ_ID"))))
        if s.requisition_lines_query and not lines and not linked:
            raise RecordError(f"PeopleSoft requisition {key}: {s.requisition_lines_query} returned no lines for "
                              "it, so a pass does not send it (see the pass's failure for the fix).")
        body = pair.requisition_body(s, self.steps.xref, header, lines, h)
        return Doc(key=key, write=body, record=body, hash=pair.digest(body), handle=h)

    def _find(self, kind: str, field_name: str, value: str) -> list[dict[str, Any]]:
        ep = self.jcfg.suppliers if kind == self.pair.SUPPLIERS else self.jcfg.requisitions
        return self.steps.jaggaer.find(ep, field_name, value)

    def _id_of(self, kind: str, rec: dict[str, Any]) -> str:
        from mlconnector.jaggaer.client import pick

        return self._text(pick(rec, self.s.supplier.id) if kind == self.pair.SUPPLIERS else rec.get("requisitionId"))

    def current(self, kind: str, items: list[tuple[str, Any, dict[str, Any] | None]]) -> dict[str, Any]:
        from mlconnector.reconcile_types import Current

        s, out = self.s, {}
        sup = kind == self.pair.SUPPLIERS
        what = "company profile" if sup else "requisition"
        for key, d, entry in items:
            rid = self._text((entry or {}).get("id"))
            by_handle = s.supplier.key if sup else s.requisition_handle_field
            h = d.handle if d is not None else self._text((entry or {}).get("handle"))
            if rid:
                # Read by its handle (the list filters on it), keeping the linked id: current, one request.
                found = [r for r in (self._find(kind, by_handle, h) if h else []) if self._id_of(kind, r) == rid]
                out[key] = Current(rid, found[0] if found else None, reason="" if found else
                                   f"the linked {what} {rid} is no longer in JAGGAER under {by_handle} {h!r} "
                                   f"(deleted, or its {by_handle} was changed by a person)")
                continue
            if d is None:
                continue
            found = self._find(kind, by_handle, h)
            if found:
                out[key] = Current(self._id_of(kind, found[0]), found[0], note=(
                    f"not linked in the state: found by {by_handle} {h!r} (the next pass adopts it)" if len(found) == 1
                    else f"{len(found)} JAGGAER records carry {by_handle} {h!r}: a person decides which is ours"))
        return out

    def differences(self, kind: str, d: Doc, record: dict[str, Any]) -> list[str]:
        from mlconnector.pairs.ps_docs_reconcile import canon

        if kind == self.pair.SUPPLIERS:
            have = self.pair.profile_facts(self.s, record)
            return [k for k, v in d.record.items() if canon(have.get(k)) != canon(v)]
        out = [k for k in ("businessUnit", "description", "requester", "currency", "supplier")
               if k in d.record and canon(record.get(k)) != canon(d.record[k])]
        have = {canon(ln.get("lineNumber")): ln for ln in record.get("lines") or [] if isinstance(ln, dict)}
        want = {canon(ln.get("lineNumber")): ln for ln in d.record.get("lines") or []}
        for nbr in sorted(set(have) ^ set(want)):
            out.append(f"line {nbr} ({'not on the requisition' if nbr in have else 'not in JAGGAER'})")
        for nbr, ln in sorted(want.items()):
            got = have.get(nbr)
            if got is not None:
                out += [f"line {nbr} {k}" for k in ("description", "quantity", "unitOfMeasure", "accountCode")
                        if canon(got.get(k)) != canon(ln.get(k))]
                if canon((got.get("unitPrice") or {}).get("money")) != canon(ln["unitPrice"]["money"]):
                    out.append(f"line {nbr} unitPrice")
        return out

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        return None

    def orphans(self, kind: str, seen: Any, accounted: Any) -> Iterator[Any]:
        from mlconnector.jaggaer.client import pick
        from mlconnector.reconcile_types import Finding

        s, state, t = self.s, self.steps.state, self._text
        sup = kind == self.pair.SUPPLIERS
        linked = {t(e.get("id")) for _k, e in state.keymap.items(kind) if e.get("id")}
        state.release(can_save=False)
        ep = self.jcfg.suppliers if sup else self.jcfg.requisitions
        prefix = f"{s.requisition_handle_prefix}-"
        for page in self.steps.jaggaer.changed(ep, self.jcfg.initial_since):
            for rec in page:
                rid = self._id_of(kind, rec)
                h = t(pick(rec, s.supplier.key) if sup else rec.get(s.requisition_handle_field))
                if not h or rid in linked or rid in accounted.refs or h in accounted.handles:
                    continue
                if not sup and not h.startswith(prefix):
                    continue
                named = encode_key((s.vendor_setid, h)) if sup else ""
                if named and (named in seen or named in accounted.keys):
                    continue  # its vendor was read: compared (or explained) there
                if sup and t((state.entry(self.pair.JSUPPLIERS, rid) or {}).get("vendor")) == h:
                    continue  # a JAGGAER-side link (e.g. a JAGGAER-only supplier given a PeopleSoft vendor)
                what = (f"JAGGAER company profile {rid} carries {s.supplier.key} {h!r}, which names no PeopleSoft "
                        f"vendor read and no link" if sup else
                        f"JAGGAER requisition {rid} carries {s.requisition_handle_field} {h!r} but no link and no "
                        f"PeopleSoft requisition in scope names it")
                yield Finding(kind, named, "orphaned", issue=rid, reason=what)
