"""Purchase orders written through a PO component interface, at most once per source document.

The rules (the same as jira/sink.py, on a target whose lookup is current):
- **Pending before the request.** A create is marked pending in the state, and the state saved, before the
  Create is sent. A kill at any later instant leaves the mark.
- **Look up before every create** by the handle field (``PO_REF``) AND the vendor, through a current read (CI
  Find, then Get of each candidate, keeping exact matches: Find matches prefixes, and ``PO_REF`` is not unique
  in PeopleSoft). One match is adopted; several are a conflict for a person; none proves (the read being
  current) that no create took effect, so the pending mark is dropped.
- **Never resent in the same pass** after a lost answer: the record is queued with the mark left in place, and
  the next pass looks it up first.
- **Changes** go to the same PO with UpdateData where PeopleSoft allows it (status configured as updatable, no
  line removed); otherwise the record is queued for a person with both versions. A second PO, never.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from mlconnector.errors import AmbiguousWriteError, RecordError
from mlconnector.peoplesoft.ci import CIClient, CIError, CIFaultError
from mlconnector.state import State
from mlconnector.sync.engine import PassContext
from mlconnector.sync.links import Settler, mark_pending, pending_since


@dataclass(frozen=True)
class PONames:
    """The PO CI's names the sink needs (header keys, handle, vendor, status, line and distribution keys)."""

    ci: str
    business_unit: str
    po_id: str
    handle: str
    vendor_id: str
    status: str
    lines: str
    line_nbr: str
    distributions: str
    distrib_nbr: str
    updatable_statuses: tuple[str, ...]
    create_only: tuple[str, ...] = ()  # header fields sent on Create only (PO_DT), never compared


@dataclass
class POWrite:
    """One purchase order as it should be: header fields (business unit, handle and vendor included, PO_ID
    not), lines with their distributions, the content hash, and the source row for the queue."""

    key: str
    handle: str
    vendor_id: str
    business_unit: str
    header: dict[str, Any]
    lines: list[dict[str, Any]]
    hash: str
    row: dict[str, Any]
    title: str  # for messages: "Procurify requisition 5001 (vendor 301)"
    extra: dict[str, Any] = field(default_factory=dict)  # saved on the link (e.g. the source line numbers)
    legacy_handle: str = ""  # the handle an earlier version gave this PO: looked up when ``handle`` finds none


class NeedsPerson(RecordError):
    """A change PeopleSoft cannot take automatically; ``raw`` holds both versions for the person."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


def canon(value: Any) -> str:
    """A value as compared between what was sent and what PeopleSoft holds: numbers by value (4.00000000 == 4),
    dates as ISO text."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | int | float) and not isinstance(value, bool):
        d = Decimal(str(value))
        return format(d.normalize(), "f") if d else "0"
    # Text stays text: VENDOR_ID 42 and 0000000042 are different suppliers.
    return str(value).strip()


def _rows(record: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    rows = record.get(name) or []
    return [r for r in (rows if isinstance(rows, list) else [rows]) if isinstance(r, dict)]


class POWriter:
    """Writes ``POWrite``s for one pass through ``ci``, counting and queueing through ``ctx``."""

    def __init__(self, ctx: PassContext, ci: CIClient, names: PONames, *, grace_seconds: float = 0.0) -> None:
        self.ctx = ctx
        self.ci = ci
        self.n = names
        self.state: State = ctx.state
        self.settler = Settler(0.0, current=True)  # a CI Find/Get is current: an absence is proof at once
        # ...of what is committed. A Create whose answer was lost may still be running in the application server
        # (PeopleCode, a slow commit) after the client gave up: a mark younger than this is not looked up, and
        # its record waits, so an absence is only trusted once no earlier request can still land.
        self.grace = grace_seconds

    def _young(self, entry: Mapping[str, Any]) -> float:
        """Seconds left before a pending mark's absence may be trusted (0 when it may)."""
        since = pending_since(entry)
        if self.grace <= 0 or since is None:
            return 0.0
        return max(0.0, self.grace - (self.ctx.now - since).total_seconds())

    # -- lookup ----------------------------------------------------------------------------------
    def lookup(self, business_unit: str, handle: str, vendor_id: str) -> list[dict[str, Any]]:
        """Every PO of this business unit whose handle AND vendor equal these exactly (Get records)."""
        n = self.n
        found = self.ci.find(n.ci, {n.business_unit: business_unit, n.handle: handle, n.vendor_id: vendor_id})
        out = []
        for row in found:
            if row.get(n.po_id) in (None, ""):
                continue
            # Find rows that name another handle or vendor (a prefix match) need no Get.
            if any(name in row and canon(row[name]) != canon(want)
                   for name, want in ((n.handle, handle), (n.vendor_id, vendor_id), (n.business_unit, business_unit))):
                continue
            try:
                record = self.ci.get(n.ci, {n.business_unit: row.get(n.business_unit, business_unit),
                                            n.po_id: row[n.po_id]})
            except CIFaultError as exc:
                if (exc.message_set, exc.message_id) == ("91", "50"):
                    continue  # deleted between Find and Get
                raise
            if (canon(record.get(n.handle)) == canon(handle) and canon(record.get(n.vendor_id)) == canon(vendor_id)
                    and canon(record.get(n.business_unit)) == canon(business_unit)):
                out.append(record)
        return out

    def owner(self, kind: str, po: Mapping[str, Any], key: str) -> str | None:
        """The key of another link that already holds this PO (None: no other). A PO belongs to one source
        record: adopting it for a second one would replace the first one's lines."""
        want = {k: canon(v) for k, v in po.items()}
        for other, e in self.state.keymap.items(kind):
            held = e.get("po")
            if other != key and isinstance(held, dict) and {k: canon(v) for k, v in held.items()} == want:
                return other
        return None

    def keys_of(self, record: Mapping[str, Any]) -> dict[str, str]:
        n = self.n
        return {n.business_unit: str(record.get(n.business_unit, "")), n.po_id: str(record[n.po_id])}

    # -- pending creates -------------------------------------------------------------------------
    def resolve_pending(self, kind: str) -> None:
        """Settle creates left pending by an earlier pass (lost answer, kill): adopt what PeopleSoft holds, or
        drop the mark when a current lookup proves nothing was created."""
        marks: dict[str, datetime | None] = {}
        entries: dict[str, dict[str, Any]] = {}
        for key in self.state.pending(kind):
            entry = self.state.entry(kind, key)
            if entry is None or self._young(entry):
                continue
            entries[key] = entry
            marks[key] = pending_since(entry)

        unknown: dict[str, CIError] = {}

        def lookup(keys: Sequence[str]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k in keys:
                e = entries[k]
                try:
                    out[k] = self.lookup(e.get("business_unit", ""), e.get("handle", ""), e.get("vendor", ""))
                except CIError as exc:
                    # An error is not an absence: the mark stays, and the other keys are still settled.
                    unknown[k] = exc
            return {k: v for k, v in out.items() if v}

        found = self.settler.settle(marks, lookup)
        for key, exc in unknown.items():
            queued = next((i for i in self.state.replay if i["kind"] == kind and i["key"] == key
                           and i.get("what", "record") == "record"), None)
            err = RecordError(
                f"Could not look up the purchase order of {key} in PeopleSoft ({exc.message}). Its earlier create "
                f"may have gone through, so nothing is created until a lookup answers; it is looked up again on the "
                f"next pass. If this repeats, check the PeopleSoft user's access to the purchase order component "
                f"interface and its search keys (business unit, PO reference, vendor).")
            err.raw = exc.raw  # type: ignore[attr-defined]
            self.ctx.fail(kind, key, (queued or {}).get("row") or {}, err)
        for key, entry in entries.items():
            if key in unknown:
                continue
            records = found.get(key, [])
            if len(records) == 1 and self.owner(kind, self.keys_of(records[0]), key) is not None:
                continue  # another record's PO: the write path reports the conflict for a person
            if len(records) == 1:
                entry["po"] = self.keys_of(records[0])
                entry.pop("pending", None)
                entry.pop("pending_at", None)
                entry["adopted"] = True
                self.ctx.audit.write("adopted", kind, key, po=entry["po"], why="pending create found by handle")
            elif not records:
                if entry.get("po"):
                    entry.pop("pending", None)
                    entry.pop("pending_at", None)
                else:
                    self.state.drop_entry(kind, key)
                self.ctx.audit.write("pending_cleared", kind, key, why="not in PeopleSoft (current lookup)")
            else:
                continue  # several: the write path reports the conflict for a person
            self.state.dirty = True
        if entries and not self.ctx.dry_run:
            self.state.save()

    # -- writes ----------------------------------------------------------------------------------
    def write(self, kind: str, w: POWrite) -> None:
        """Create, adopt, update or leave one PO; failures are counted and queued (never raised, except a lost
        login or network, which stops the pass)."""
        counts = self.ctx.result.kind(kind)
        entry = self.state.entry(kind, w.key)
        left = self._young(entry) if entry is not None and entry.get("pending") else 0.0
        if left:
            self.ctx.fail(kind, w.key, w.row, RecordError(
                f"{w.title}: an earlier Create of its PO lost its answer {self.grace - left:.0f} s ago and may still "
                f"be running in PeopleSoft. Nothing is sent until {self.grace:.0f} s have passed "
                f"(pending_grace_seconds); then the PO is looked up by {self.n.handle} {w.handle!r} and vendor "
                f"{w.vendor_id} first."))
            return
        if entry is not None and entry.get("po") and not entry.get("pending"):
            if entry.get("hash") == w.hash:
                counts.unchanged += 1
                self._done(kind, w, entry)
                return
            self._change(kind, w, entry)
            return
        try:
            records = self.lookup(w.business_unit, w.handle, w.vendor_id)
            if not records and w.legacy_handle:
                # A PO an earlier version created under its old handle is this record's unless another link holds
                # it (then it is that record's, and this one was never created: the old handle did not tell them
                # apart).
                records = [r for r in self.lookup(w.business_unit, w.legacy_handle, w.vendor_id)
                           if self.owner(kind, self.keys_of(r), w.key) is None]
                if records:
                    w = replace(w, handle=w.legacy_handle, header={**w.header, self.n.handle: w.legacy_handle})
        except CIError as exc:
            self.ctx.fail(kind, w.key, w.row, exc)
            return
        if len(records) > 1:
            ids = ", ".join(str(r.get(self.n.po_id)) for r in records)
            self.ctx.fail(kind, w.key, w.row, NeedsPerson(
                f"{w.title}: {len(records)} purchase orders in PeopleSoft business unit {w.business_unit} carry "
                f"{self.n.handle} {w.handle!r} for vendor {w.vendor_id} ({ids}). Nothing was created or changed: a "
                f"person must decide which one is the order (cancel the others), then run `mlconnector replay retry`.",
                json.dumps({"purchase_orders": ids.split(", "), "wanted": self._version(w)}, default=str)))
            return
        held = self.owner(kind, self.keys_of(records[0]), w.key) if records else None
        if held is not None:
            self.ctx.fail(kind, w.key, w.row, NeedsPerson(
                f"{w.title}: purchase order {'/'.join(self.keys_of(records[0]).values())} carries {self.n.handle} "
                f"{w.handle!r} for vendor {w.vendor_id}, but it is linked to another source record ({held}). Nothing "
                f"was created or changed: a person must decide which record the order belongs to (fix the PO's "
                f"{self.n.handle} in PeopleSoft), then run `mlconnector replay retry`.",
                json.dumps({"purchase_order": self.keys_of(records[0]), "linked_to": held,
                            "wanted": self._version(w)}, default=str)))
            return
        if records:
            current = records[0]
            entry = {"po": self.keys_of(current), "handle": w.handle, "vendor": w.vendor_id,
                     "business_unit": w.business_unit, "adopted": True, **w.extra}
            if self.ctx.dry_run:
                counts.adopted += 1
                self.ctx.planned(kind, w.key, "adopt", po=entry["po"], handle=w.handle)
                return
            self.state.set_entry(kind, w.key, entry)
            self.ctx.audit.write("adopted", kind, w.key, po=entry["po"], why="found by handle and vendor")
            if self._differs(current, w):
                entry["hash"] = ""
                self._change(kind, w, entry, current=current)
            else:
                entry["hash"] = w.hash
                counts.adopted += 1
                self._done(kind, w, entry)
            return
        self._create(kind, w)

    def _create(self, kind: str, w: POWrite) -> None:
        counts = self.ctx.result.kind(kind)
        if self.ctx.dry_run:
            counts.created += 1
            self.ctx.planned(kind, w.key, "create", handle=w.handle, vendor=w.vendor_id, lines=len(w.lines))
            return
        n = self.n
        entry = mark_pending({"handle": w.handle, "vendor": w.vendor_id, "business_unit": w.business_unit,
                              "hash": w.hash, **w.extra})
        self.state.set_entry(kind, w.key, entry)
        self.state.save()  # the mark is on disk before the request leaves
        record = {**w.header, n.po_id: "NEXT", n.lines: w.lines}
        try:
            keys = self.ci.create(n.ci, record)  # a lost login or network propagates: the mark stays
        except AmbiguousWriteError as exc:
            # Maybe saved: the mark stays; the next pass looks the PO up before anything is sent again.
            self.ctx.fail(kind, w.key, w.row, AmbiguousWriteError(
                f"{w.title}: PeopleSoft's answer to the PO Create was lost ({exc.message}). It was not sent again; "
                f"the next pass looks the PO up by {n.handle} {w.handle!r} and vendor {w.vendor_id} before "
                f"anything is created.", system=exc.system, raw=exc.raw, retryable=True))
            return
        except CIError as exc:
            self.state.drop_entry(kind, w.key)  # PeopleSoft answered: nothing was saved
            self.ctx.fail(kind, w.key, w.row, exc)
            return
        entry = self.state.entry(kind, w.key) or entry
        entry["po"] = {n.business_unit: str(keys.get(n.business_unit, w.business_unit)), n.po_id: str(keys[n.po_id])}
        entry.pop("pending", None)
        entry.pop("pending_at", None)
        self.state.dirty = True
        counts.created += 1
        self.ctx.audit.write("created", kind, w.key, po=entry["po"], handle=w.handle, vendor=w.vendor_id,
                             lines=len(w.lines))
        # Not saved here: the next create's pending save (or the pass's end) writes this link. A kill before then
        # leaves the pending mark on disk, and the next pass adopts the PO by handle instead of creating it.
        self._done(kind, w, entry)

    def _change(self, kind: str, w: POWrite, entry: dict[str, Any], current: dict[str, Any] | None = None) -> None:
        counts = self.ctx.result.kind(kind)
        n = self.n
        keys = dict(entry["po"])
        try:
            if current is None:
                current = self.ci.get(n.ci, keys)
        except CIFaultError as exc:
            if (exc.message_set, exc.message_id) == ("91", "50"):
                self.ctx.fail(kind, w.key, w.row, NeedsPerson(
                    f"{w.title} changed, but its purchase order {'/'.join(keys.values())} is no longer in PeopleSoft. "
                    f"Nothing was created: a person decides. To have it made again, run `mlconnector state unlink <id>`"
                    f" then `mlconnector replay retry <id>` (ids from `mlconnector replay list`); the retry looks the "
                    f"record's handle up first and adopts a purchase order re-entered by hand with it.",
                    json.dumps({"wanted": self._version(w)}, default=str)))
                return
            self.ctx.fail(kind, w.key, w.row, exc)
            return
        except CIError as exc:
            self.ctx.fail(kind, w.key, w.row, exc)
            return
        if not self._differs(current, w):
            entry["hash"] = w.hash
            entry.update(w.extra)
            self.state.dirty = True
            counts.unchanged += 1
            self._done(kind, w, entry)
            return
        status = canon(current.get(n.status))
        wanted_lines = {canon(ln.get(n.line_nbr)) for ln in w.lines}
        removed = sorted(canon(r.get(n.line_nbr)) for r in _rows(current, n.lines)
                         if canon(r.get(n.line_nbr)) not in wanted_lines)
        why = ""
        if status not in n.updatable_statuses:
            why = (f"its purchase order {'/'.join(keys.values())} has status {status!r}, which is not one of "
                   f"updatable_statuses ({', '.join(n.updatable_statuses)}): PeopleSoft needs a change order")
        elif removed:
            why = (f"line(s) {', '.join(removed)} of purchase order {'/'.join(keys.values())} are no longer on the "
                   f"requisition, and a component interface update does not delete lines")
        if why:
            both = {"purchase_order": self._current_version(current), "wanted": self._version(w)}
            self.ctx.fail(kind, w.key, w.row, NeedsPerson(
                f"{w.title} changed, but {why}. Nothing was changed in PeopleSoft and no second PO was created: a "
                f"person must apply the change in PeopleSoft (both versions are in the audit trail); the next pass "
                f"that finds the PO equal to the requisition clears this item.", json.dumps(both, default=str)))
            return
        if self.ctx.dry_run:
            counts.updated += 1
            self.ctx.planned(kind, w.key, "update", po=keys, handle=w.handle)
            return
        changes = {k: v for k, v in w.header.items() if k not in (n.business_unit, *n.create_only)}
        changes[n.lines] = w.lines
        try:
            self.ci.update(n.ci, keys, changes)
        except CIError as exc:
            self.ctx.fail(kind, w.key, w.row, exc)
            return
        entry["hash"] = w.hash
        entry.update(w.extra)
        self.state.dirty = True
        counts.updated += 1
        self.ctx.audit.write("updated", kind, w.key, po=keys, lines=len(w.lines))
        self._done(kind, w, entry)

    def _done(self, kind: str, w: POWrite, entry: dict[str, Any]) -> None:
        if not self.ctx.dry_run:
            self.state.dequeue(kind, w.key)

    # -- comparing -------------------------------------------------------------------------------
    def _differs(self, current: Mapping[str, Any], w: POWrite) -> bool:
        """True when PeopleSoft's PO differs from ``w`` in any field ``w`` sets (create-only fields aside)."""
        n = self.n
        for k, v in w.header.items():
            if k not in n.create_only and canon(current.get(k)) != canon(v):
                return True
        have = {canon(r.get(n.line_nbr)): r for r in _rows(current, n.lines)}
        if set(have) != {canon(ln.get(n.line_nbr)) for ln in w.lines}:
            return True
        for line in w.lines:
            cur = have[canon(line.get(n.line_nbr))]
            for k, v in line.items():
                if k == n.distributions:
                    dists = {canon(d.get(n.distrib_nbr)): d for d in _rows(cur, n.distributions)}
                    if set(dists) != {canon(d.get(n.distrib_nbr)) for d in v}:
                        return True
                    if any(canon(dists[canon(d.get(n.distrib_nbr))].get(dk)) != canon(dv)
                           for d in v for dk, dv in d.items()):
                        return True
                elif canon(cur.get(k)) != canon(v):
                    return True
        return False

    def _version(self, w: POWrite) -> dict[str, Any]:
        return {"header": {k: canon(v) for k, v in w.header.items()},
                "lines": json.loads(json.dumps(w.lines, default=canon))}

    def _current_version(self, current: Mapping[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(current, default=canon))
