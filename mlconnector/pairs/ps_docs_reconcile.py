"""PeopleSoft documents as reconcile's target, shared by the pairs that post them (peoplesoft-jaggaer,
peoplesoft-procore): purchase orders through the PO component interface (``PrefixPOSide``, the PO sink's
lookup), vouchers and journals written once through their document writers (``VoucherSide``, ``JournalSide``:
a linked document read by its CI keys with a Get, an unlinked one looked up exactly as its writer looks it up
before a create), and ``Sides``, which lends reconcile one target per entity.

A document's wanted content is the Create request its writer would send (``VoucherWriter.record``,
``JournalWriter.record``): the comparison is field by field against the record PeopleSoft holds now.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mlconnector.errors import EXIT_CONFIG, RemoteError
from mlconnector.pairs.procurify_peoplesoft_reconcile import POSide
from mlconnector.peoplesoft.ci import CIError, CIFaultError
from mlconnector.peoplesoft.po_sink import canon
from mlconnector.sync.keys import encode_key


@dataclass
class Doc:
    """A source document mapped as its pass maps it: ``write`` (VoucherWrite, JournalWrite, ...), ``record``
    (the Create request its writer would send), ``hash`` (what the link saves of the last write), ``handle``
    (what the target is looked up by) and ``amount`` (the source's money figure)."""

    key: str
    write: Any
    record: dict[str, Any]
    hash: str
    handle: str
    amount: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_error(exc: CIError, what: str, section: str, key: str) -> RemoteError:
    """A refused read, as one paragraph: reconcile only reads (Find and Get)."""
    return RemoteError(f"PeopleSoft refused a read of the {what} component interface: {exc.message} Reconcile only "
                       f"reads (Find and Get); ask the PeopleSoft admin for Find and Get on it, or check {key} in "
                       f"[{section}].", system="PeopleSoft", exit_code=EXIT_CONFIG)


def _rows(record: Any, name: str) -> list[dict[str, Any]]:
    rows = record.get(name) or [] if isinstance(record, Mapping) else []
    return [r for r in (rows if isinstance(rows, list) else [rows]) if isinstance(r, dict)]


def _gone(exc: CIFaultError) -> bool:
    return (exc.message_set, exc.message_id) == ("91", "50")


class PrefixPOSide(POSide):
    """Purchase orders whose PO_REF is ``handle_prefix`` + the source document's number (JAGGAER POs, Procore
    commitments) as reconcile's target. The orphan sweep is one Find per PeopleSoft business unit of the POs whose
    PO_REF starts with the prefix; a PO that no link, no source record in scope and no queued or pending record
    accounts for is orphaned. ``named(ref)`` gives the state key a PO_REF names ("" when it names none)."""

    def __init__(self, steps: Any, *, business_units: list[str], handle_prefix: str, section: str, noun: str,
                 named: Callable[[str], str]) -> None:
        super().__init__(steps)
        self.business_units, self.prefix, self.noun, self.named = business_units, handle_prefix, noun, named
        self.section = section

    def orphans(self, kind: str, seen: Any, accounted: Any) -> Iterator[Any]:
        from mlconnector.reconcile_types import Finding

        n, state = self.n, self.steps.state
        if not self.prefix:
            return  # no prefix: PO_REF is the bare number, which does not tell our POs from a person's
        linked = {self._ref(e["po"]) for _k, e in state.keymap.items(kind) if isinstance(e.get("po"), dict)}
        state.release(can_save=False)
        for bu in self.business_units:
            try:
                rows = self.ci.find(n.ci, {n.business_unit: bu, n.handle: self.prefix})
            except CIError as exc:
                raise read_error(exc, "PO", self.section, "po_ci") from None
            for ref, handle, record in self.unaccounted(rows, bu, self.prefix, linked, accounted):
                named = self.named(handle)
                if named and named in accounted.keys:
                    continue  # queued or pending: its PO may be half-written
                number = handle.removeprefix(self.prefix)
                reason = (f"a second purchase order for {self.noun} {number} ({n.handle} {handle!r}), which is "
                          f"linked to another one" if named and named in seen else
                          f"carries {n.handle} {handle!r} (vendor {canon(record.get(n.vendor_id))}) but no link and "
                          f"no {self.noun} in scope names it")
                yield Finding(kind, named, "orphaned", issue=ref, reason=reason,
                              target_amount=self.amount(kind, record))


class DocSide(ABC):
    """A document written once through a DocumentWriter (``writer``), as reconcile's target. Subclasses say
    how an unlinked document is looked up (``lookup``), which fields differ (``differences``) and its amount."""

    name = "PeopleSoft"
    what = "document"
    config_key = "ci"

    def __init__(self, writer: Any, section: str) -> None:
        self.writer, self.ci, self.n, self.section = writer, writer.ci, writer.n, section

    def _ref(self, keys: Mapping[str, Any]) -> str:
        return "/".join(str(v) for v in keys.values())

    @abstractmethod
    def lookup(self, d: Doc) -> list[dict[str, Any]]:
        """The subclass's part (see the class docstring)."""

    def current(self, kind: str, items: list[tuple[str, Any, dict[str, Any] | None]]) -> dict[str, Any]:
        from mlconnector.reconcile_types import Current

        out: dict[str, Any] = {}
        for key, d, entry in items:
            linked = (entry or {}).get(self.writer.link)
            if isinstance(linked, dict) and linked:
                ref = self._ref(linked)
                try:
                    out[key] = Current(ref, self.ci.get(self.writer.ci_name, dict(linked)))
                except CIFaultError as exc:
                    if not _gone(exc):
                        raise read_error(exc, self.what, self.section, self.config_key) from None
                    out[key] = Current(ref, None, reason=f"the linked {self.what} {ref} no longer exists in "
                                       "PeopleSoft")
                except CIError as exc:
                    raise read_error(exc, self.what, self.section, self.config_key) from None
                continue
            if d is None:
                continue
            try:
                found = self.lookup(d)
            except CIError as exc:
                raise read_error(exc, self.what, self.section, self.config_key) from None
            if found:
                rec = found[0]
                note = (f"not linked in the state: found by {d.handle} (the next pass adopts it)" if len(found) == 1
                        else f"{len(found)} {self.what}s carry {d.handle}: a person must decide which one is the "
                        f"document (the pass writes none)")
                out[key] = Current(self._ref(self.writer.keys_of(rec)), rec, note=note)
        return out

    @abstractmethod
    def differences(self, kind: str, d: Doc, record: dict[str, Any]) -> list[str]:
        """The subclass's part (see the class docstring)."""

    @abstractmethod
    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        """The subclass's part (see the class docstring)."""

    def orphans(self, kind: str, seen: Any, accounted: Any) -> Iterator[Any]:
        return iter(())


def _differ(want: Mapping[str, Any], have: Mapping[str, Any], names: tuple[str, ...], prefix: str = "") -> list[str]:
    return [f"{prefix}{k}" for k in names if k in want and canon(have.get(k)) != canon(want.get(k))]


class VoucherSide(DocSide):
    """Vouchers (VoucherWriter): an unlinked voucher is looked up by supplier and INVOICE_ID, as before a
    create. The amount is the voucher's gross. No orphan sweep: a voucher carries no handle of ours (INVOICE_ID
    is the supplier's own invoice number), so a voucher keyed by a person cannot be told from one we lost."""

    what = "voucher"
    config_key = "voucher_ci"

    def lookup(self, d: Doc) -> list[dict[str, Any]]:
        w = d.write
        return self.writer.lookup(w.business_unit, w.vendor_setid, w.vendor_id, w.invoice_id)

    def differences(self, kind: str, d: Doc, record: dict[str, Any]) -> list[str]:
        n, want = self.n, d.record
        out = _differ(want, record, (n.invoice_id, n.invoice_dt, n.vendor_setid, n.vendor_id, n.gross_amt,
                                     n.currency, n.po_business_unit, n.po_id))
        have = {canon(r.get(n.line_nbr)): r for r in _rows(record, n.lines)}
        wanted = {canon(r.get(n.line_nbr)): r for r in _rows(want, n.lines)}
        for nbr in sorted(set(have) ^ set(wanted)):
            out.append(f"{n.lines} {nbr} ({'not on the invoice' if nbr in have else 'not on the voucher'})")
        for nbr, line in sorted(wanted.items()):
            cur = have.get(nbr)
            if cur is None:
                continue
            out += _differ(line, cur, (n.line_amount, n.po_line_nbr), f"line {nbr} ")
            dists = _rows(cur, n.distributions)
            for dw in _rows(line, n.distributions):
                got = next((x for x in dists if canon(x.get(n.distrib_nbr)) == canon(dw.get(n.distrib_nbr))), {})
                out += _differ(dw, got, (n.account, n.deptid, n.distrib_amount), f"line {nbr} ")
        return list(dict.fromkeys(out))

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        if record is None or record.get(self.n.gross_amt) in (None, ""):
            return None
        return float(Decimal(str(record[self.n.gross_amt])))


class JournalSide(DocSide):
    """Journals (JournalWriter): an unlinked journal is looked up by business unit and its reference field, as
    before a create. ``amount`` is its debits and ``credit`` its credits (a balanced journal has them equal).
    The orphan sweep is one Find per business unit of the journals whose reference starts with a prefix of
    ``prefixes`` (kind -> reference prefix); ``named(kind, reference)`` is the state key it names."""

    what = "journal"
    config_key = "journal_ci"

    def __init__(self, writer: Any, section: str, *, business_units: list[str], prefixes: dict[str, str],
                 named: Callable[[str, str], str]) -> None:
        super().__init__(writer, section)
        self.business_units, self.prefixes, self.named = business_units, prefixes, named

    def lookup(self, d: Doc) -> list[dict[str, Any]]:
        return self.writer.lookup(d.write.business_unit, d.handle)

    def differences(self, kind: str, d: Doc, record: dict[str, Any]) -> list[str]:
        n, want = self.n, d.record
        out = _differ(want, record, (n.business_unit, n.journal_date, n.ledger, n.reference))
        have = {canon(r.get(n.line_nbr)): r for r in _rows(record, n.lines)}
        wanted = {canon(r.get(n.line_nbr)): r for r in _rows(want, n.lines)}
        for nbr in sorted(set(have) ^ set(wanted)):
            out.append(f"{n.lines} {nbr} ({'not on the document' if nbr in have else 'not in the journal'})")
        for nbr, line in sorted(wanted.items()):
            if nbr in have:
                out += _differ(line, have[nbr], (n.account, n.deptid, n.project_id, n.currency, n.amount),
                               f"line {nbr} ")
        return list(dict.fromkeys(out))

    def _sums(self, record: Mapping[str, Any]) -> tuple[Decimal, Decimal]:
        debit = credit = Decimal(0)
        for r in _rows(record, self.n.lines):
            value = r.get(self.n.amount)
            if value in (None, ""):
                continue
            a = Decimal(str(value))
            if a >= 0:
                debit += a
            else:
                credit -= a
        return debit, credit

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        return None if record is None else float(self._sums(record)[0])

    def credit(self, kind: str, record: dict[str, Any] | None) -> float | None:
        return None if record is None else float(self._sums(record)[1])

    def orphans(self, kind: str, seen: Any, accounted: Any) -> Iterator[Any]:
        from mlconnector.reconcile_types import Finding

        prefix, n, state = self.prefixes.get(kind, ""), self.n, self.writer.state
        if not prefix:
            return
        linked = {self._ref(e["journal"]) for _k, e in state.keymap.items(kind) if isinstance(e.get("journal"), dict)}
        state.release(can_save=False)
        for bu in self.business_units:
            try:
                rows = self.ci.find(self.writer.ci_name, {n.business_unit: bu, n.reference: prefix})
            except CIError as exc:
                raise read_error(exc, self.what, self.section, self.config_key) from None
            for row in rows:
                keys = self.writer.keys_of(row)
                if any(v in (None, "") for v in keys.values()):
                    continue
                ref = self._ref(keys)
                if ref in linked or ref in accounted.refs:
                    continue
                try:
                    record = self.ci.get(self.writer.ci_name, keys)
                except CIFaultError:
                    continue  # deleted since the Find
                reference = canon(record.get(n.reference))
                if not reference.startswith(prefix) or reference in accounted.handles:
                    continue
                named = self.named(kind, reference)
                if named and named in accounted.keys:
                    continue
                reason = (f"a second journal for the same document ({n.reference} {reference!r}), which is linked "
                          f"to another one" if named and named in seen else
                          f"carries {n.reference} {reference!r} but no link and no document in scope names it")
                yield Finding(kind, named, "orphaned", issue=ref, reason=reason,
                              target_amount=self.amount(kind, record), target_credit=self.credit(kind, record))


class Sides:
    """One target per entity (``sides``: kind -> side), lent to reconcile as one."""

    def __init__(self, sides: dict[str, Any], name: str = "PeopleSoft") -> None:
        self.sides, self.name = sides, name

    def name_for(self, kind: str) -> str:
        return str(self.sides[kind].name)

    def current(self, kind: str, items: list[tuple[str, Any, dict[str, Any] | None]]) -> dict[str, Any]:
        return self.sides[kind].current(kind, items)  # type: ignore[no-any-return]

    def differences(self, kind: str, rec: Any, record: dict[str, Any]) -> list[str]:
        return self.sides[kind].differences(kind, rec, record)  # type: ignore[no-any-return]

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        return self.sides[kind].amount(kind, record)  # type: ignore[no-any-return]

    def credit(self, kind: str, record: dict[str, Any] | None) -> float | None:
        side = self.sides[kind]
        return side.credit(kind, record) if hasattr(side, "credit") else None

    def orphans(self, kind: str, seen: Any, accounted: Any) -> Iterator[Any]:
        return self.sides[kind].orphans(kind, seen, accounted)  # type: ignore[no-any-return]


def one_key(value: str) -> str:
    """The state key of a document named by one id."""
    return encode_key((value,)) if value else ""

