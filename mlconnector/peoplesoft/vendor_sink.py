"""Suppliers written into PeopleSoft through the ``VNDR_ID`` component interface, at most once per source vendor.

A reusable piece for every pair that registers vendors of another system in PeopleSoft (Procurify now,
JAGGAER suppliers later). The caller builds a ``VendorWrite`` (the source vendor's key, the handle PeopleSoft
will carry, the fields to create it with) and calls ``VendorWriter.write``, which answers the PeopleSoft
``VENDOR_ID`` of the counterpart, or None when the vendor could not be settled this pass (counted, audited and
queued through the pass context; the documents that need it wait).

The rules are those of po_sink.py:
- **Look up before every create**: by ``VENDOR_ID`` when the source names it (a known key: Get), else by the
  handle field (Find, which matches prefixes, then Get of each candidate keeping exact matches). One match is
  adopted; several are a conflict for a person; none proves (the CI read being current) no create took effect.
- **Pending before the request**: the link is marked pending and the state saved before the Create leaves.
- **A lost answer** is not resent in the pass; the mark stays, and the next write looks the vendor up first
  (after ``grace_seconds``, while the application server may still be committing it).

Names: PeopleSoft's NAME1 holds 40 characters. ``split_name`` splits a longer name losslessly into NAME1 +
NAME2 (at a word boundary where possible) and ``join_name`` rebuilds it; a name that does not fit both is
refused, never cut.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlconnector.errors import AmbiguousWriteError, RecordError
from mlconnector.state import State
from mlconnector.sync.links import mark_pending, pending_since

if TYPE_CHECKING:  # the configuration imports VendorNames: keep zeep out of its import
    from mlconnector.peoplesoft.ci import CIClient
    from mlconnector.sync.engine import PassContext

NAME_MAX = 40  # PS_VENDOR.NAME1 and NAME2 are CHAR(40)


def join_name(name1: str, name2: str, limit: int = NAME_MAX) -> str:
    """The full name a NAME1 + NAME2 pair written by ``split_name`` stands for. A NAME1 shorter than ``limit``
    was cut at a space (put back); a full NAME1 was cut inside a word (nothing between them)."""
    name1, name2 = (name1 or "").strip(), (name2 or "").strip()
    if not name2:
        return name1
    return f"{name1} {name2}" if len(name1) < limit else name1 + name2


def split_name(name: str, limit: int = NAME_MAX) -> tuple[str, str]:
    """``name`` as (NAME1, NAME2) with ``join_name(*split_name(name)) == name``. Splits at the last space that
    leaves NAME1 shorter than ``limit``, else inside a word at ``limit``. Raises ValueError (with the reason)
    when the name cannot be kept whole in the two fields."""
    name = name.strip()
    if len(name) <= limit:
        return name, ""
    candidates: list[tuple[str, str]] = []
    cut = name.rfind(" ", 0, limit)
    if cut > 0:
        candidates.append((name[:cut], name[cut + 1:]))
    candidates.append((name[:limit], name[limit:]))
    for n1, n2 in candidates:
        if (n1 == n1.strip() and n2 == n2.strip() and n2 and len(n2) <= limit
                and join_name(n1, n2, limit) == name):
            return n1, n2
    raise ValueError(f"the name is {len(name)} characters and cannot be kept whole in NAME1 + NAME2 "
                     f"({limit} + {limit})")


@dataclass(frozen=True)
class VendorNames:
    """The supplier CI's names (defaults: the delivered ``VNDR_ID`` component on PS_VENDOR / VENDOR_ADDR)."""

    ci: str = "VNDR_ID"
    setid: str = "SETID"
    vendor_id: str = "VENDOR_ID"
    handle: str = "VENDOR_NAME_SHORT"  # carries the source system's vendor key; searchable by Find
    name1: str = "NAME1"
    name2: str = "NAME2"
    status: str = "VENDOR_STATUS"
    addresses: str = "VENDOR_ADDR"
    address_seq: str = "ADDRESS_SEQ_NUM"
    address1: str = "ADDRESS1"
    address2: str = "ADDRESS2"
    city: str = "CITY"
    state: str = "STATE"
    postal: str = "POSTAL"
    country: str = "COUNTRY"


@dataclass
class VendorWrite:
    """One supplier as it should exist in PeopleSoft.

    ``key``: the source vendor's key (the link's key); ``handle``: the value of ``VendorNames.handle`` that lets
    it be found again without the state; ``vendor_id``: the VENDOR_ID when the source names it (else "" and
    PeopleSoft assigns one: ``NEXT``); ``fields``: everything else sent on Create (NAME1/NAME2, defaults,
    address rows); ``facts``: what the pair records as last written (echo suppression of the back-flow)."""

    key: str
    handle: str
    vendor_id: str
    setid: str
    fields: dict[str, Any]
    title: str
    row: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)


class VendorWriter:
    """Creates or adopts ``VendorWrite``s for one pass; links live under ``kind`` in the state."""

    def __init__(self, ctx: PassContext, ci: CIClient, names: VendorNames | None = None, *, kind: str = "vendors",
                 grace_seconds: float = 0.0) -> None:
        self.ctx = ctx
        self.ci = ci
        self.n = names or VendorNames()
        self.kind = kind
        self.state: State = ctx.state
        self.grace = grace_seconds

    def linked(self, key: str) -> str | None:
        """The VENDOR_ID a source vendor is linked to (no pending create), or None."""
        entry = self.state.entry(self.kind, key)
        if entry and entry.get("vendor") and not entry.get("pending"):
            return str(entry["vendor"].get(self.n.vendor_id, ""))
        return None

    def lookup(self, w: VendorWrite) -> list[dict[str, Any]]:
        """Every supplier of ``w.setid`` that is ``w``'s counterpart (Get records), through a current read."""
        from mlconnector.peoplesoft.ci import CIFaultError
        from mlconnector.peoplesoft.po_sink import canon

        n = self.n
        if w.vendor_id:
            try:
                return [self.ci.get(n.ci, {n.setid: w.setid, n.vendor_id: w.vendor_id})]
            except CIFaultError as exc:
                if (exc.message_set, exc.message_id) == ("91", "50"):
                    return []
                raise
        out = []
        for row in self.ci.find(n.ci, {n.setid: w.setid, n.handle: w.handle}):
            if row.get(n.vendor_id) in (None, ""):
                continue
            if n.handle in row and canon(row[n.handle]) != canon(w.handle):
                continue  # a prefix match: another vendor's handle
            try:
                record = self.ci.get(n.ci, {n.setid: row.get(n.setid, w.setid), n.vendor_id: row[n.vendor_id]})
            except CIFaultError as exc:
                if (exc.message_set, exc.message_id) == ("91", "50"):
                    continue
                raise
            if canon(record.get(n.handle)) == canon(w.handle) and canon(record.get(n.setid)) == canon(w.setid):
                out.append(record)
        return out

    def write(self, w: VendorWrite) -> str | None:
        """The VENDOR_ID of ``w``'s counterpart: linked, adopted or created now; None when it must wait (the
        failure is counted and queued). A lost login or network propagates."""
        from mlconnector.peoplesoft.ci import CIError
        from mlconnector.peoplesoft.po_sink import NeedsPerson

        known = self.linked(w.key)
        if known:
            return known
        counts = self.ctx.result.kind(self.kind)
        entry = self.state.entry(self.kind, w.key)
        if entry is not None and entry.get("pending") and self.grace > 0:
            since = pending_since(entry)
            age = (self.ctx.now - since).total_seconds() if since else 0.0
            if age < self.grace:
                self.ctx.fail(self.kind, w.key, w.row, RecordError(
                    f"{w.title}: an earlier Create of its PeopleSoft supplier lost its answer {age:.0f} s ago and may "
                    f"still be running. Nothing is sent until {self.grace:.0f} s have passed (pending_grace_seconds); "
                    f"then it is looked up by {self.n.handle} {w.handle!r} first."))
                return None
        try:
            records = self.lookup(w)
        except CIError as exc:
            self.ctx.fail(self.kind, w.key, w.row, exc)
            return None
        if len(records) > 1:
            ids = ", ".join(str(r.get(self.n.vendor_id)) for r in records)
            self.ctx.fail(self.kind, w.key, w.row, NeedsPerson(
                f"{w.title}: {len(records)} PeopleSoft suppliers in SetID {w.setid} carry {self.n.handle} "
                f"{w.handle!r} ({ids}). Nothing was created: a person must keep one (clear the field on the others), "
                f"then run `mlconnector replay retry`.", json.dumps({"suppliers": ids.split(", ")})))
            return None
        if records:
            vid = str(records[0].get(self.n.vendor_id))
            if self.ctx.dry_run:
                counts.adopted += 1
                self.ctx.planned(self.kind, w.key, "adopt", vendor=vid)
                return vid
            self._link(w, vid, adopted=True)
            counts.adopted += 1
            self.ctx.audit.write("adopted", self.kind, w.key, vendor=vid, why="found by handle")
            return vid
        if self.ctx.dry_run:
            counts.created += 1
            self.ctx.planned(self.kind, w.key, "create", handle=w.handle, name=w.fields.get(self.n.name1))
            return None
        return self._create(w)

    def _create(self, w: VendorWrite) -> str | None:
        from mlconnector.peoplesoft.ci import CIError

        n = self.n
        entry = mark_pending({"handle": w.handle, "setid": w.setid, "want": w.vendor_id, "facts": w.facts})
        self.state.set_entry(self.kind, w.key, entry)
        self.state.save()  # the mark is on disk before the request leaves
        record = {n.setid: w.setid, n.vendor_id: w.vendor_id or "NEXT", n.handle: w.handle, **w.fields}
        try:
            keys = self.ci.create(n.ci, record)
        except AmbiguousWriteError as exc:
            self.ctx.fail(self.kind, w.key, w.row, AmbiguousWriteError(
                f"{w.title}: PeopleSoft's answer to the supplier Create was lost ({exc.message}). It was not sent "
                f"again; the next pass looks the supplier up by {n.handle} {w.handle!r} before anything is created.",
                system=exc.system, raw=exc.raw, retryable=True))
            return None
        except CIError as exc:
            self.state.drop_entry(self.kind, w.key)  # PeopleSoft answered: nothing was saved
            self.ctx.fail(self.kind, w.key, w.row, exc)
            return None
        vid = str(keys.get(n.vendor_id) or w.vendor_id)
        self._link(w, vid, adopted=False)
        self.ctx.result.kind(self.kind).created += 1
        self.ctx.audit.write("created", self.kind, w.key, vendor=vid, handle=w.handle)
        self.state.save()
        return vid

    def _link(self, w: VendorWrite, vendor_id: str, *, adopted: bool) -> None:
        entry = self.state.entry(self.kind, w.key) or {}
        entry.update({"vendor": {self.n.setid: w.setid, self.n.vendor_id: vendor_id}, "handle": w.handle,
                      "setid": w.setid, "facts": w.facts})
        if adopted:
            entry["adopted"] = True
            entry.pop("facts", None)  # not what we wrote: the first read is the baseline
        entry.pop("pending", None)
        entry.pop("pending_at", None)
        self.state.set_entry(self.kind, w.key, entry)
        self.state.dequeue(self.kind, w.key)
        self.state.dirty = True


def vendor_facts(names: VendorNames, record: Mapping[str, Any]) -> dict[str, Any]:
    """What a supplier record shows another system: full name, status and first address (for content hashes)."""
    from mlconnector.peoplesoft.po_sink import canon

    n = names
    rows = record.get(n.addresses) or []
    rows = rows if isinstance(rows, list) else [rows]
    addr = next((r for r in rows if isinstance(r, dict)), {})
    return {"name": join_name(str(record.get(n.name1) or ""), str(record.get(n.name2) or "")),
            "status": canon(record.get(n.status)),
            "address": {k: canon(addr.get(getattr(n, k))) for k in ("address1", "address2", "city", "state",
                                                                   "postal", "country")}}
