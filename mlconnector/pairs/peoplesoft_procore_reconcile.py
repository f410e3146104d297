"""`reconcile peoplesoft-procore`: the money flows both ways, record by record.

- ``purchase_orders`` (PeopleSoft -> Procore): each PeopleSoft project PO (its distribution rows, read with the
  pass's PS Query) mapped by the pass's ``map_po`` against the purchase order contract its link names (read by
  id with its line items; an unlinked one looked up by its ``origin_id``). Compared: vendor, number, title and
  each of our line items (cost code, description, quantity, unit cost, amount). Money: the PO amount, the sum
  of the distribution amounts against the sum of the contract's line item amounts. Orphans: contracts of the
  projects in scope whose ``origin_id`` is one of our PO handles but that no link accounts for.
- ``commitments`` (Procore -> PeopleSoft): each approved commitment (not one we made) mapped by the pass's
  ``map_commitment`` against the PeopleSoft PO its link names (a Get through the PO component interface; an
  unlinked one looked up by PO_REF and vendor). Money: the PO amount on both sides.
- ``direct_costs`` and ``change_orders`` (Procore -> PeopleSoft journals, when offset_account is set): each
  approved document mapped through the pass's own ``post_cost`` (its journal is caught before the writer, so
  nothing is written) against the journal its link names (a Get; an unlinked one looked up by its reference).
  Money: the Procore amount (the sum of its cost lines) against the journal's debits, with the journal's
  credits beside them (a balanced journal has debits = credits; ``unbalanced`` counts those that do not).

Which side changed (drifted): for ``purchase_orders`` the link keeps the PeopleSoft content hash of the last
write (``ps_hash``): a PO whose content differs from it changed in PeopleSoft, else the contract was edited in
Procore. Webhook deliveries are not read: the lists by ``updated_at`` (change orders: in full) are.

And the reference data (no money): ``vendors`` (the PeopleSoft vendor master, read in full, against the Procore
company vendor carrying its ``origin_id``; which side changed: the vendor's facts against those last pushed)
and ``cost_codes`` (each configured GL account on each project in scope, against the project's cost code carrying
its ``origin_id``). Each is read once per company or project (its directory is listed whole); orphans: Procore
vendors and cost codes carrying one of our ``origin_id`` handles that no PeopleSoft record or link accounts for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from mlconnector.errors import RecordError, RemoteError
from mlconnector.pairs.ps_docs_reconcile import Doc, JournalSide, PrefixPOSide, Sides, one_key
from mlconnector.peoplesoft.po_sink import canon
from mlconnector.sync.keys import encode_key

PAGE = 100  # records compared per page
MONEY = {"purchase_orders": "PO amount (PeopleSoft distributions vs Procore line items)",
         "commitments": "PO amount (Procore line items vs PeopleSoft distributions)",
         "direct_costs": "Procore amount vs journal debits (credits beside them)",
         "change_orders": "Procore amount vs journal debits (credits beside them)"}


class _Caught(Exception):
    """A record the pass's own code failed (it would be queued): carries its sentence."""


@contextlib.contextmanager
def _catching(steps: Any) -> Iterator[dict[str, Any]]:
    """Run a piece of the pass with its journal writer and failure path replaced: the JournalWrite it would post
    is caught (nothing is written), and a failure raises instead of being noted in the plan."""
    caught: dict[str, Any] = {}

    class Catch:
        def write(self, _kind: str, w: Any) -> None:
            caught["write"] = w

    def fail(_kind: str, _key: str, _row: Any, exc: Exception, **_kw: Any) -> None:
        raise _Caught(getattr(exc, "message", None) or str(exc))

    journals, ctx_fail = steps.journals, steps.ctx.fail
    steps.journals, steps.ctx.fail = Catch(), fail
    try:
        yield caught
    finally:
        steps.journals, steps.ctx.fail = journals, ctx_fail


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def reconcile_scope(steps: Any) -> Any:
    """What `reconcile peoplesoft-procore` reads, maps and compares, through this pass's own readers, mapping and
    lookups (see the module's docstring)."""
    from mlconnector.reconcile_types import Scope

    pair = sys.modules[type(steps).__module__]  # the pair's module, which re-exports this function
    s, pcfg, procore = steps.s, steps.pcfg, steps.procore
    pos, commitments, costs = pair.POS, pair.COMMITMENTS, pair.COST_KINDS
    kinds = [pair.VENDORS, pair.COST_CODES, pos, commitments] + (list(costs) if steps.journals is not None else [])
    refs = ReferenceSide(steps, pair)
    c = s.po_columns

    def rng(start: datetime, end: datetime) -> str:
        return f"{pair._z(start)}...{pair._z(end)}"

    def paged(items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for row in items:
            batch.append(row)
            if len(batch) >= PAGE:
                yield batch
                batch = []
        if batch:
            yield batch

    def project_rows(kind: str, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        for project in sorted(s.projects):
            try:
                if kind == commitments:
                    found = procore.all(pcfg.commitments_path, {"project_id": int(project),
                                                                "filters[updated_at]": rng(start, end)})
                elif kind == pair.DIRECT_COSTS:
                    found = procore.all(pcfg.direct_costs_path.format(project_id=project),
                                        {"filters[updated_at]": rng(start, end)})
                else:  # change orders: no updated_at filter (read whole, as the pass reads them)
                    found = procore.all(pcfg.change_orders_path.format(project_id=project))
            except RemoteError as exc:
                if kind == pair.CHANGE_ORDERS and exc.status in (403, 404):
                    continue  # a project without commitment change orders (3-tier): the pass skips it too
                raise
            for doc in sorted(found, key=lambda d: pair._num(d.get("id"))):
                yield {"project": project, "doc": doc}

    def po_rows(start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        # A PO's distribution rows may span query pages: grouped over the whole read (the newest row per line).
        groups: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        for rows, _until in steps.qas.read_window(s.po_query, start, end):
            for r in rows:
                key = (_text(r.get(c.business_unit)), _text(r.get(c.po_id)))
                dist = (_text(r.get(c.line_nbr)), _text(r.get(c.distrib_nbr)))
                old = groups.setdefault(key, {}).get(dist)
                if old is None or _text(r.get("LAST_DTTM_UPDATE")) >= _text(old.get("LAST_DTTM_UPDATE")):
                    groups[key][dist] = r
        for key, dists in sorted(groups.items()):
            yield {"po": list(key), "rows": list(dists.values())}

    def rows(kind: str, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        if kind in (pair.VENDORS, pair.COST_CODES):
            yield from paged(refs.rows(kind))
            return
        yield from paged(po_rows(start, end) if kind == pos else project_rows(kind, start, end))

    def row_key(kind: str, row: dict[str, Any]) -> str:
        if kind in (pair.VENDORS, pair.COST_CODES):
            return str(row["key"])
        if kind == pos:
            return encode_key(tuple(row.get("po") or ()))
        return one_key(_text((row.get("doc") or {}).get("id")))

    def map_po(row: dict[str, Any]) -> Any:
        key = tuple(row["po"])
        rws = row["rows"]
        if steps._echo(key, rws):  # made by the commitments flow (a planning pass notes nothing)
            return None
        if _text(rws[0].get(c.status)) not in s.po_statuses and steps.state.entry(pos, encode_key(key)) is None:
            return None
        vlink = steps.state.entry(pair.VENDOR_LINKS, encode_key((_text(rws[0].get(c.vendor_setid)),
                                                                 _text(rws[0].get(c.vendor_id)))))
        return pair.map_po(s, steps.xref, key, rws, vlink.get("id") if vlink else None, steps.cost_code)

    def map_commitment(row: dict[str, Any]) -> Any:
        project, doc = row["project"], row["doc"]
        if _text(doc.get("origin_id")).startswith(pair.PO_HANDLE):
            return None  # made from a PeopleSoft PO by this pair: compared under purchase_orders
        if _text(doc.get("status")) not in s.approved_statuses:
            return None
        cid = _text(doc.get("id"))
        entry = steps.state.entry(commitments, one_key(cid)) or {}
        lines = procore.all(f"{pcfg.commitments_path}/{cid}/line_items", {"project_id": int(project)})
        return pair.map_commitment(s, steps.xref, project, doc, lines, dict(entry.get("lines") or {}),
                                   steps.account_of, steps.ctx.now.date())

    def map_cost(kind: str, row: dict[str, Any]) -> Doc | None:
        with _catching(steps) as caught:
            try:
                steps.post_cost(kind, row["project"], row["doc"], None, [], forced=True)
            except _Caught as exc:
                raise RecordError(str(exc)) from None
        w = caught.get("write")
        if w is None:
            return None  # a pass would not post it (not approved)
        record = journals.record(w)
        digest = hashlib.sha256(json.dumps(record, default=canon, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        debits = sum((Decimal(str(ln.amount)) for ln in w.lines[:-1]), Decimal(0))  # the cost lines; last: offset
        return Doc(key=w.key, write=w, record=record, hash=digest, handle=w.reference, amount=float(debits))

    def map_row(kind: str, row: dict[str, Any]) -> Any:
        if kind in (pair.VENDORS, pair.COST_CODES):
            return refs.map(kind, row)
        if kind == pos:
            return map_po(row)
        if kind == commitments:
            return map_commitment(row)
        return map_cost(kind, row)

    def mapped_amount(kind: str, rec: Any) -> float | None:
        if kind == pos:
            return float(sum((Decimal(ln["amount"]) for ln in rec.lines), Decimal(0)))
        if kind == commitments:
            return po_side.po_amount(rec.lines)
        return rec.amount  # type: ignore[no-any-return]

    def plan(kind: str, rows: list[dict[str, Any]]) -> None:  # the pass is a planning pass: it writes nothing
        if kind == pair.VENDORS:
            steps.push_vendors([str(r["key"]) for r in rows])
            return
        if kind == pair.COST_CODES:
            for row in rows:
                steps.push_cost_codes(row["project"], [row["account"]])
            return
        for row in rows:
            if kind == pos:
                steps.write_pos({tuple(row["po"]): row["rows"]})
            elif kind == commitments:
                steps.process_commitment(row["project"], row["doc"], None, forced=True)
            else:
                steps.post_cost(kind, row["project"], row["doc"], None, [], forced=True)

    def changed(kind: str, entry: dict[str, Any], rec: Any) -> str:
        if kind in (pair.VENDORS, pair.COST_CODES):
            return refs.changed(kind, rec)
        if kind == pos:
            if not entry.get("ps_hash"):
                return ""
            return "source" if entry["ps_hash"] != rec.ps_hash else "target"
        if not entry.get("hash"):
            return ""
        return "source" if entry["hash"] != rec.hash else "target"

    prefix = s.handle_prefix
    po_side = PrefixPOSide(steps, business_units=[s.business_unit], handle_prefix=prefix, section=pair.SECTION,
                           noun="Procore commitment",
                           named=lambda h: one_key(h.removeprefix(prefix)) if s.commitment_handle == "id" else "")
    sides: dict[str, Any] = {pair.VENDORS: refs, pair.COST_CODES: refs, pos: ContractSide(steps, pair),
                             commitments: po_side}
    journals = steps.journals
    if journals is not None:
        jrefs = {pair.DIRECT_COSTS: f"{s.reference_prefix}dc-", pair.CHANGE_ORDERS: f"{s.reference_prefix}cco-"}
        side = JournalSide(journals, pair.SECTION, business_units=[s.journal_business_unit or s.business_unit],
                           prefixes=jrefs, named=lambda kind, ref: one_key(ref.removeprefix(jrefs[kind])))
        sides.update(dict.fromkeys(costs, side))
    initial = s.initial_since
    return Scope(kinds=kinds, initial_since=lambda _k: initial, rows=rows, map=map_row, row_key=row_key,
                 money={k: MONEY[k] for k in kinds if k in MONEY}, mapped_amount=mapped_amount, plan=plan,
                 target=Sides(sides),
                 full_read=lambda kind, start: kind in (pair.CHANGE_ORDERS, pair.VENDORS, pair.COST_CODES)
                 or start <= initial, changed=changed)


class ReferenceSide:
    """Procore's company vendors and project cost codes as the target of the reference flows. It also reads and
    maps their PeopleSoft side (the vendor master; the configured accounts), as the pass does. The link of a
    vendor is kept under ``procore_vendors`` (the ``vendors`` entries are the vendor master's facts)."""

    name = "Procore"

    def __init__(self, steps: Any, pair: Any) -> None:
        self.steps, self.pair, self.s, self.pcfg = steps, pair, steps.s, steps.pcfg
        self._dir: dict[str, dict[str, dict[str, Any]]] = {}  # company / project -> origin_id -> record

    def rows(self, kind: str) -> Iterator[dict[str, Any]]:
        from mlconnector.mapping import vendor_from_row

        if kind == self.pair.COST_CODES:
            for project in sorted(self.s.projects):
                for account, name in sorted(self.s.accounts.items()):
                    yield {"key": encode_key((project, account)), "project": project, "account": account,
                           "name": name}
            return
        rs = self.steps.cfg.peoplesoft.records[self.pair.VENDORS]
        reader = self.steps.qas
        batches: Any = reader.read_all(rs.query) if rs.read == "full" else (
            rows for rows, _ in reader.read_window(rs.query, rs.initial_since, self.steps.ctx.now))
        for rows in batches:
            for row in rows:
                setid, vid = _text(row.get("SETID")), _text(row.get("VENDOR_ID"))
                if vid:
                    yield {"key": encode_key((setid, vid)), "facts": vendor_from_row(row, rs.columns)}

    def map(self, kind: str, row: dict[str, Any]) -> Doc:
        from mlconnector.sync import reference

        if kind == self.pair.COST_CODES:
            item = self.pair.cost_code_update(row["project"], row["account"], row["name"])
            return Doc(key=row["key"], write=item, record=item, handle=item["origin_id"],
                       hash=reference.digest({"code": row["account"], "name": row["name"]}),
                       extra={"project": row["project"]})
        item = self.pair.vendor_update(self.s, row["key"], row["facts"])
        return Doc(key=row["key"], write=item, record=item, hash=reference.digest(row["facts"]),
                   handle=item["origin_id"])

    def changed(self, kind: str, d: Doc) -> str:
        link = self.steps.state.entry(self.pair.VENDOR_LINKS if kind == self.pair.VENDORS else kind, d.key) or {}
        if not link.get("hash"):
            return ""
        return "source" if link["hash"] != d.hash else "target"

    def _directory(self, kind: str, project: str = "") -> dict[str, dict[str, Any]]:
        """Every vendor of the company, or cost code of a project, by origin_id (one listing each per run)."""
        name = f"{kind}|{project}"
        if name not in self._dir:
            procore = self.steps.procore
            try:
                if kind == self.pair.VENDORS:
                    found = procore.all(self.pcfg.vendors_path, {"company_id": self.pcfg.company_id})
                else:
                    found = procore.all(self.pcfg.cost_codes_path, {"project_id": int(project)})
            except RemoteError as exc:
                if exc.status not in (403, 404):
                    raise
                found = []  # a project this login cannot see: its cost codes read as missing
            self._dir[name] = {_text(r.get("origin_id")): r for r in found if _text(r.get("origin_id"))}
        return self._dir[name]

    def current(self, kind: str, items: list[tuple[str, Any, dict[str, Any] | None]]) -> dict[str, Any]:
        from mlconnector.reconcile_types import Current

        out: dict[str, Any] = {}
        for key, d, _entry in items:
            if d is None:
                continue
            link = self.steps.state.entry(self.pair.VENDOR_LINKS if kind == self.pair.VENDORS else kind, key) or {}
            found = self._directory(kind, d.extra.get("project", "")).get(d.handle)
            if found is not None:
                out[key] = Current(_text(found.get("id")), found, note="" if link.get("id") else
                                   f"not linked in the state: found by origin_id {d.handle!r}")
            elif link.get("id"):
                out[key] = Current(_text(link["id"]), None, reason=f"the linked record {link['id']} (origin_id "
                                   f"{d.handle!r}) is no longer in Procore")
        return out

    def differences(self, kind: str, d: Doc, record: dict[str, Any]) -> list[str]:
        canon = self.pair.canon
        return [k for k, v in d.record.items() if k != "origin_id" and canon(record.get(k)) != canon(v)]

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        return None

    def orphans(self, kind: str, seen: Any, accounted: Any) -> Iterator[Any]:
        from mlconnector.reconcile_types import Finding

        vendors = kind == self.pair.VENDORS
        prefix = f"{self.pair.VENDOR_HANDLE if vendors else self.pair.ACCOUNT_HANDLE}-"
        wanted: dict[str, str] = {}  # origin_id -> key of every record a pass sends (the few configured ones)
        if not vendors:
            for row in self.rows(kind):
                wanted[self.pair.cost_code_update(row["project"], row["account"], row["name"])["origin_id"]] = \
                    row["key"]
        for project in ([""] if vendors else sorted(self.s.projects)):
            for origin, rec in self._directory(kind, project).items():
                if not origin.startswith(prefix) or origin in accounted.handles or _text(rec.get("id")) in \
                        accounted.refs:
                    continue
                if vendors:
                    parts = origin.removeprefix(prefix)
                    named = encode_key(tuple(parts.split("-", 1))) if "--" not in parts and "-" in parts else ""
                    if named and (named in seen or named in accounted.keys):
                        continue
                elif origin in wanted:
                    continue
                else:
                    named = ""
                what = "vendor" if vendors else f"cost code of project {project}"
                yield Finding(kind, named, "orphaned", issue=_text(rec.get("id")), reason=(
                    f"Procore {what} {rec.get('id')} carries origin_id {origin!r}, which names no PeopleSoft "
                    f"{'vendor read' if vendors else 'account in [peoplesoft_procore.accounts]'} and no link"))


class ContractSide:
    """Procore purchase order contracts made from PeopleSoft POs, as reconcile's target: a linked contract read
    by id (with its line items), an unlinked one looked up by its ``origin_id`` in its project; the orphan sweep
    lists each project's contracts and keeps those whose ``origin_id`` is one of our PO handles."""

    name = "Procore"

    def __init__(self, steps: Any, pair: Any) -> None:
        self.steps, self.pair, self.procore, self.path = steps, pair, steps.procore, steps.pcfg.commitments_path

    def _read(self, project: str, cid: Any) -> dict[str, Any] | None:
        try:
            contract = self.procore.get_json(f"{self.path}/{cid}", {"project_id": int(project)})
            lines = self.procore.all(f"{self.path}/{cid}/line_items", {"project_id": int(project)})
        except RemoteError as exc:
            if exc.status == 404:
                return None
            raise
        return {"contract": contract, "lines": lines}

    def current(self, kind: str, items: list[tuple[str, Any, dict[str, Any] | None]]) -> dict[str, Any]:
        from mlconnector.reconcile_types import Current

        out: dict[str, Any] = {}
        for key, w, entry in items:
            if entry and entry.get("id"):
                project = _text(entry.get("project") or (w.project if w is not None else ""))
                record = self._read(project, entry["id"])
                out[key] = Current(str(entry["id"]), record, reason="" if record else
                                   f"the linked commitment {entry['id']} no longer exists in Procore project {project}")
                continue
            if w is None:
                continue
            origin = w.header["origin_id"]
            found = [x for x in self.procore.all(self.path, {"project_id": int(w.project),
                                                             "filters[origin_id]": origin})
                     if _text(x.get("origin_id")) == origin]
            if found:
                record = self._read(w.project, found[0]["id"])
                if record is not None:
                    out[key] = Current(str(found[0]["id"]), record, note=(
                        f"not linked in the state: found by origin_id {origin!r} (the next pass adopts it)"
                        if len(found) == 1 else f"{len(found)} commitments carry origin_id {origin!r}"))
        return out

    def _ours(self, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {_text(ln.get("origin_id")): ln for ln in record.get("lines") or []
                if _text(ln.get("origin_id")).startswith(self.pair.LINE_HANDLE)}

    def differences(self, kind: str, w: Any, record: dict[str, Any]) -> list[str]:
        canon = self.pair.canon  # numbers by value: Procore answers "10.00" for the "10.0000" we send
        contract = record.get("contract") or {}
        out = [k for k in ("vendor_id", "number", "title") if canon(contract.get(k)) != canon(w.header.get(k))]
        have, want = self._ours(record), {ln["origin_id"]: ln for ln in w.lines}
        for origin in sorted(set(have) ^ set(want)):
            out.append(f"line {origin} ({'not on the PO' if origin in have else 'not on the commitment'})")
        for origin, ln in sorted(want.items()):
            if origin in have:
                out += [f"line {origin} {k}" for k in ("cost_code_id", "description", "quantity", "unit_cost",
                                                        "amount") if canon(have[origin].get(k)) != canon(ln.get(k))]
        return out

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None:
        if record is None:
            return None
        return float(sum((Decimal(_text(ln.get("amount")) or "0") for ln in record.get("lines") or []), Decimal(0)))

    def orphans(self, kind: str, seen: Any, accounted: Any) -> Iterator[Any]:
        from mlconnector.reconcile_types import Finding

        state, handle_prefix = self.steps.state, f"{self.pair.PO_HANDLE}-"
        linked = {_text(e.get("id")) for _k, e in state.keymap.items(kind) if e.get("id")}
        state.release(can_save=False)
        for project in sorted(self.steps.s.projects):
            try:
                found = self.procore.all(self.path, {"project_id": int(project)})
            except RemoteError as exc:
                if exc.status in (403, 404):
                    continue
                raise
            for contract in found:
                cid, origin = _text(contract.get("id")), _text(contract.get("origin_id"))
                if not origin.startswith(handle_prefix) or cid in linked or cid in accounted.refs:
                    continue
                parts = origin.removeprefix(handle_prefix)
                named = encode_key(tuple(parts.split("-", 1))) if "--" not in parts and "-" in parts else ""
                if named and (named in accounted.keys or origin in accounted.handles):
                    continue
                record = self._read(project, cid)
                reason = (f"a second commitment for PeopleSoft PO {parts} (origin_id {origin!r}), which is linked to "
                          f"another one" if named and named in seen else
                          f"carries origin_id {origin!r} but no link and no PeopleSoft PO in scope names it")
                yield Finding(kind, named, "orphaned", issue=cid, reason=reason,
                              target_amount=self.amount(kind, record))
