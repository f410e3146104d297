"""`reconcile procurify-peoplesoft`: each Procurify requisition group against its PeopleSoft purchase order.

The source side is the pass's own: the order items Procurify changed since the start of the scope, merged with
what the link (and a queued copy) knows of their requisition, grouped by requisition (and vendor) and mapped
by ``map_group`` with the pass's crosswalks. Procurify lists order items by modified day, not by requisition,
so a requisition's items may be anywhere in the listing: the items read are held (as a pass holds them) and
the groups are handed to reconcile a page at a time.

The target side is PeopleSoft through the PO component interface, read as the PO sink reads it: a linked PO
by its keys (a Get: current, with its lines and distributions), an unlinked group by its handle and vendor
(Find, then a Get of each exact match). The sweep for orphans is one Find of the business unit's POs whose
handle starts with ``handle_prefix``: as complete as the component interface's Find answers (PeopleSoft caps
a Find at the component's maximum search rows).

Money: the PO amount is the sum of the distribution amounts (``po_fields.amount``), on both sides.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from mlconnector.errors import EXIT_CONFIG, RemoteError
from mlconnector.peoplesoft.ci import CIFaultError
from mlconnector.peoplesoft.po_sink import POWrite, canon
from mlconnector.sync.keys import encode_key

PAGE = 100  # groups compared per page (one PeopleSoft Get each)
MONEY = "PO amount (sum of the distribution amounts)"


def reconcile_scope(steps: Any) -> Any:
    """What `reconcile procurify-peoplesoft` reads, maps and compares, through this pass's own reader,
    grouping, mapping and PO lookup (see the module's docstring)."""
    from mlconnector.reconcile_types import Scope

    # The pair's own module (grouping, mapping), reached through its pass: that module re-exports this function,
    # so importing it here would make the two modules import each other.
    pair = sys.modules[type(steps).__module__]

    s = steps.s
    kind = pair.KIND

    def rows(_kind: str, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        read: list[dict[str, Any]] = []
        for page in steps.procurify.order_items(start, end):
            read += page
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for it in pair.newest(s, read).values():
            groups.setdefault(pair.group_key(s, it), []).append(it)
        del read
        batch: list[dict[str, Any]] = []
        for key, fresh in sorted(groups.items()):
            _entry, known = steps._known(encode_key(key))
            batch.append({"group": list(key), "items": list(pair.newest(s, known, fresh).values())})
            if len(batch) >= PAGE:
                yield batch
                batch = []
        if batch:
            yield batch

    def map_row(_kind: str, row: dict[str, Any]) -> POWrite | None:
        key = tuple(str(p) for p in row["group"])
        entry = steps.state.entry(kind, encode_key(key)) or {}
        return pair.map_group(s, steps.xref, key, row["items"], dict(entry.get("lines") or {}), steps.ctx.now.date(),
                              entry.get("handle"))

    def plan(_kind: str, rows: list[dict[str, Any]]) -> None:  # the pass is a planning pass: it writes nothing
        for row in rows:
            steps.process(tuple(str(p) for p in row["group"]), row["items"])

    side = POSide(steps)
    return Scope(kinds=[kind], initial_since=lambda _k: steps.pcfg.initial_since, rows=rows, map=map_row,
                 row_key=lambda _k, row: encode_key(tuple(str(p) for p in row.get("group") or ())),
                 money={kind: MONEY}, mapped_amount=lambda _k, w: side.po_amount(w.lines),
                 plan=plan, target=side,
                 full_read=lambda _k, start: start <= steps.pcfg.initial_since)


class POSide:
    """PeopleSoft purchase orders as reconcile's target (see the module's docstring): current reads through the
    PO component interface, field-by-field comparison of header, lines and distributions, the PO amount."""

    name = "PeopleSoft"
    section = "procurify_peoplesoft"  # named in the fix of a refused read

    def __init__(self, steps: Any) -> None:
        self.steps = steps
        self.ci, self.n, self.p, self.s = steps.ci, steps.names, steps.s.po, steps.s

    def _ref(self, keys: dict[str, Any]) -> str:
        return "/".join(str(v) for v in keys.values())

    def current(self, kind: str, items: list[tuple[str, Any, dict[str, Any] | None]]) -> dict[str, Any]:
        from mlconnector.reconcile_types import Current

        out: dict[str, Any] = {}
        for key, w, entry in items:
            if entry and isinstance(entry.get("po"), dict):
                keys = dict(entry["po"])
                ref = self._ref(keys)
                try:
                    out[key] = Current(ref, self.ci.get(self.n.ci, keys))
                except CIFaultError as exc:
                    if (exc.message_set, exc.message_id) != ("91", "50"):
                        raise _read_error(exc, self.section) from None
                    out[key] = Current(ref, None, reason=f"the linked purchase order {ref} no longer exists in "
                                       "PeopleSoft")
                continue
            if w is None:
                continue
            try:
                found = self.steps.writer.lookup(w.business_unit, w.handle, w.vendor_id)
                if not found and w.legacy_handle:
                    found = self.steps.writer.lookup(w.business_unit, w.legacy_handle, w.vendor_id)
            except CIFaultError as exc:
                raise _read_error(exc, self.section) from None
            if found:
                rec = found[0]
                note = (f"not linked in the state: found by {self.n.handle} {w.handle!r} and vendor {w.vendor_id} "
                        "(the next pass adopts it)") if len(found) == 1 else (
                        f"{len(found)} purchase orders carry {self.n.handle} {w.handle!r} for vendor {w.vendor_id}: "
                        "a person must decide which one is the order (the pass writes none)")
                out[key] = Current(self._ref({self.n.business_unit: rec.get(self.n.business_unit, ""),
                                              self.n.po_id: rec.get(self.n.po_id, "")}), rec, note=note)
        return out

    def differences(self, kind: str, w: POWrite, record: dict[str, Any]) -> list[str]:
        n = self.n
        out = [k for k, v in w.header.items() if k not in n.create_only and canon(record.get(k)) != canon(v)]
        have = {canon(r.get(n.line_nbr)): r for r in _rows(record, n.lines)}
        want = {canon(ln.get(n.line_nbr)): ln for ln in w.lines}
        extra, lacking = sorted(set(have) - set(want)), sorted(set(want) - set(have))
        if extra:
            out.append(f"{n.lines} {', '.join(extra)} (not on the requisition)")
        if lacking:
            out.append(f"{n.lines} {', '.join(lacking)} (not on the PO)")
        for nbr, line in sorted(want.items()):
            cur = have.get(nbr)
            if cur is None:
                continue
            for k, v in line.items():
                if k != n.distributions:
                    if canon(cur.get(k)) != canon(v):
                        out.append(f"line {nbr} {k}")
                    continue
                dists = {canon(d.get(n.distrib_nbr)): d for d in _rows(cur, n.distributions)}
                for d in v:
                    got = dists.get(canon(d.get(n.distrib_nbr)))
                    for dk, dv in d.items():
                        if got is None or canon(got.get(dk)) != canon(dv):
                            out.append(f"line {nbr} {dk}")
                if set(dists) != {canon(d.get(n.distrib_nbr)) for d in v}:
                    out.append(f"line {nbr} {n.distributions}")
        return list(dict.fromkeys(out))

    def po_amount(self, lines: list[dict[str, Any]]) -> float:
        total = Decimal(0)
        for line in lines:
            for d in _rows(line, self.n.distributions):
                value = d.get(self.p.amount)
                if value not in (None, ""):
                    total += Decimal(str(value))
        return float(total)

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        return None if record is None else self.po_amount(_rows(record, self.n.lines))

    def unaccounted(self, rows: list[dict[str, Any]], business_unit: str, prefix: str, linked: set[str],
                    accounted: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(ref, handle, PO) for each PO of a Find's ``rows`` that carries one of our handles (``prefix``) and that
        no link, record in scope, queued or pending record accounts for, read again (current) with a Get."""
        n = self.n
        for row in rows:
            if row.get(n.po_id) in (None, ""):
                continue
            keys = {n.business_unit: row.get(n.business_unit, business_unit), n.po_id: row[n.po_id]}
            ref, handle = self._ref(keys), canon(row.get(n.handle))
            if ref in linked or ref in accounted.refs or not handle.startswith(prefix) or handle in accounted.handles:
                continue
            try:
                record = self.ci.get(n.ci, keys)
            except CIFaultError:
                continue  # deleted since the Find
            if canon(record.get(n.handle)) == handle:
                yield ref, handle, record

    def orphans(self, kind: str, seen: Any, accounted: Any) -> Iterator[Any]:
        from mlconnector.reconcile_types import Finding

        n, s, state = self.n, self.s, self.steps.state
        linked = {self._ref(e["po"]) for _k, e in state.keymap.items(kind) if isinstance(e.get("po"), dict)}
        state.release(can_save=False)
        try:
            rows = self.ci.find(n.ci, {n.business_unit: s.business_unit, n.handle: s.handle_prefix})
        except CIFaultError as exc:
            raise _read_error(exc, self.section) from None
        for ref, handle, record in self.unaccounted(rows, s.business_unit, s.handle_prefix, linked, accounted):
            req = handle.removeprefix(s.handle_prefix)
            named = encode_key((req,)) if s.group_by == "requisition" else ""
            if named and named in seen:
                reason = (f"a second purchase order for Procurify requisition {req} ({n.handle} {handle!r}), which "
                          "is linked to another one")
            else:
                reason = (f"carries {n.handle} {handle!r} (vendor {canon(record.get(n.vendor_id))}) but no link and "
                          f"no Procurify requisition in scope names it")
            yield Finding(kind, named, "orphaned", issue=ref, reason=reason, target_amount=self.amount(kind, record))


def _rows(record: Any, name: str) -> list[dict[str, Any]]:
    rows = record.get(name) or []
    return [r for r in (rows if isinstance(rows, list) else [rows]) if isinstance(r, dict)]


def _read_error(exc: CIFaultError, section: str = "procurify_peoplesoft") -> RemoteError:
    return RemoteError(f"PeopleSoft refused a read of the PO component interface: {exc.message} Reconcile only "
                       f"reads (Find and Get); ask the PeopleSoft admin for Find and Get on it, or check "
                       f"po_ci in [{section}].", system="PeopleSoft", exit_code=EXIT_CONFIG)
