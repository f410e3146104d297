"""The part every once-only PeopleSoft document writer shares (vouchers, journals): exact lookup through a CI
Find + Get, the pending mark saved before a Create, settling pending creates, and the record of what was
posted. The rules are the POWriter's (po_sink.py):

- **Pending before the request**: the link is marked pending and the state saved before the Create leaves.
- **Look up before every create** through a current read (CI Find, then Get of each candidate, keeping exact
  matches: Find matches prefixes). None found proves nothing was created, so a pending mark is dropped.
- **Never resent in the same pass** after a lost answer: the record is queued with its mark, and the next pass
  looks it up first; a mark younger than ``grace_seconds`` is not looked up at all (the first Create may still
  be running in the application server).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mlconnector.errors import RecordError
from mlconnector.peoplesoft.ci import CIClient, CIError, CIFaultError, parse_ib_message
from mlconnector.peoplesoft.po_sink import NeedsPerson, canon
from mlconnector.state import State
from mlconnector.sync.engine import PassContext
from mlconnector.sync.links import Settler, mark_pending, pending_since

__all__ = ["NeedsPerson", "Posted", "DocumentWriter", "canon", "ib_text", "key_text"]


@dataclass(frozen=True)
class Posted:
    """What a writer's ``write`` gives back for a document that is in PeopleSoft: its business unit, its
    PeopleSoft id (VOUCHER_ID, JOURNAL_ID), all its CI keys, and what this call did (``created``, ``adopted``
    or ``unchanged``). ``write`` returns None instead when the document failed or waits (then it is queued)."""

    business_unit: str
    id: str
    keys: dict[str, str] = field(default_factory=dict)
    action: str = "unchanged"


def key_text(value: Any) -> str:
    """A key value as the state keeps it (dates as ISO text)."""
    if isinstance(value, datetime | date):
        return value.isoformat()[:10]
    return "" if value is None else str(value)


def ib_text(exc: CIError) -> str:
    """PeopleSoft's own message (DefaultMessage) of a CI fault, else the client's sentence."""
    ib = parse_ib_message(exc.raw) if exc.raw else None
    return ib.default_message if ib is not None and ib.default_message else exc.message


class DocumentWriter(ABC):
    """Shared machinery of a writer posting each source document at most once through one CI. A subclass sets
    ``link`` (the state entry field holding the document's CI keys) and ``noun``, and implements
    ``lookup_entry`` (the exact lookup from what a link entry saved)."""

    link = "document"
    noun = "document"

    def __init__(self, ctx: PassContext, ci: CIClient, ci_name: str, *, grace_seconds: float = 0.0) -> None:
        self.ctx = ctx
        self.ci = ci
        self.ci_name = ci_name
        self.state: State = ctx.state
        self.settler = Settler(0.0, current=True)  # a CI Find/Get is current: an absence is proof at once
        self.grace = grace_seconds
        self.lost: set[tuple[str, str]] = set()  # (kind, key) whose Create lost its answer in this pass

    # -- lookup ----------------------------------------------------------------------------------
    def get_keys(self) -> list[str]:
        """The CI's Get keys (from its WSDL, or [peoplesoft.records.<kind>].get_keys)."""
        return list(self.ci.service(self.ci_name).keys)

    def find_exact(self, given: Mapping[str, Any], match: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every record Find returns for ``given`` whose Get record equals ``match`` on every field (Find matches
        prefixes, so candidates are checked on the full record)."""
        keys = self.get_keys()
        out = []
        for row in self.ci.find(self.ci_name, given):
            if any(row.get(k) in (None, "") for k in keys if k in row):
                continue
            # A Find row that shows another value (a prefix match) needs no Get.
            if any(name in row and canon(row[name]) != canon(want) for name, want in match.items()):
                continue
            try:
                record = self.ci.get(self.ci_name, {k: key_text(row.get(k)) for k in keys if k in row})
            except CIFaultError as exc:
                if (exc.message_set, exc.message_id) == ("91", "50"):
                    continue  # deleted between Find and Get
                raise
            if all(canon(record.get(name)) == canon(want) for name, want in match.items()):
                out.append(record)
        return out

    def keys_of(self, record: Mapping[str, Any]) -> dict[str, str]:
        return {k: key_text(record.get(k)) for k in self.get_keys()}

    @abstractmethod
    def lookup_entry(self, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The exact lookup of a document from what its link entry saved."""

    def _changed(self, kind: str, w: Any, entry: dict[str, Any], record: dict[str, Any],
                 digest: str) -> Posted | None:
        """A linked document whose source changed: read it back; the same content only renews the link's hash,
        anything else (or a document gone from PeopleSoft) goes to a person. The connector never changes one."""
        keys = dict(entry[self.link])
        try:
            current = self.ci.get(self.ci_name, keys)
        except CIFaultError as exc:
            if (exc.message_set, exc.message_id) == ("91", "50"):
                self.ctx.fail(kind, w.key, w.row, NeedsPerson(
                    f"{w.title} changed, but its {self.noun} {'/'.join(keys.values())} is no longer in PeopleSoft. "
                    f"Nothing was created: a person decides. To have it made again, run `mlconnector state unlink <id>`"
                    f" then `mlconnector replay retry <id>` (ids from `mlconnector replay list`); the retry looks the "
                    f"record's handle up first and adopts a {self.noun} re-entered by hand with it.",
                    json.dumps({"wanted": record}, default=canon)))
                return None
            self.ctx.fail(kind, w.key, w.row, exc)
            return None
        except CIError as exc:
            self.ctx.fail(kind, w.key, w.row, exc)
            return None
        if self._differs(current, record):
            self._needs_person(kind, w, keys, current, record, "changed")
            return None
        entry["hash"] = digest
        self.state.dirty = True
        self.ctx.result.kind(kind).unchanged += 1
        self.done(kind, w.key)
        return self.posted(keys, "unchanged")

    @abstractmethod
    def _differs(self, current: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        """Whether the document PeopleSoft holds differs from the one the source asks for."""

    @abstractmethod
    def _needs_person(self, kind: str, w: Any, keys: Mapping[str, str], current: dict[str, Any],
                      record: dict[str, Any], how: str) -> None:
        """Queue ``w`` for a person with both versions."""

    def posted(self, keys: Mapping[str, str], action: str) -> Posted:
        values = list(keys.values())
        return Posted(values[0] if values else "", values[1] if len(values) > 1 else "", dict(keys), action)

    # -- pending marks ---------------------------------------------------------------------------
    def young(self, entry: Mapping[str, Any]) -> float:
        """Seconds left before a pending mark's absence may be trusted (0 when it may)."""
        since = pending_since(dict(entry))
        if self.grace <= 0 or since is None:
            return 0.0
        return max(0.0, self.grace - (self.ctx.now - since).total_seconds())

    def resolve_pending(self, kind: str) -> None:
        """Settle creates left pending by an earlier pass (lost answer, kill): adopt what PeopleSoft holds, or
        drop the mark when a current lookup proves nothing was created. Call once per pass, before writing."""
        marks: dict[str, datetime | None] = {}
        entries: dict[str, dict[str, Any]] = {}
        for key in self.state.pending(kind):
            entry = self.state.entry(kind, key)
            if entry is None or self.young(entry):
                continue
            entries[key] = entry
            marks[key] = pending_since(entry)

        unknown: set[str] = set()

        def lookup(keys: Sequence[str]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k in keys:
                try:
                    out[k] = self.lookup_entry(entries[k])
                except CIError as exc:
                    # Cannot tell: the mark stays, and the write path looks the document up again (and reports).
                    unknown.add(k)
                    self.ctx.audit.write("pending_unknown", kind, k, error=exc.message, raw=exc.raw)
            return {k: v for k, v in out.items() if v}

        found = self.settler.settle(marks, lookup)
        for key, entry in entries.items():
            if key in unknown:
                continue
            records = found.get(key, [])
            if len(records) == 1:
                entry[self.link] = self.keys_of(records[0])
                entry.pop("pending", None)
                entry.pop("pending_at", None)
                entry["adopted"] = True
                entry["just_adopted"] = True  # the write of this pass counts it adopted, not unchanged
                self.ctx.audit.write("adopted", kind, key, **{self.link: entry[self.link]},
                                     why="pending create found by its handle")
            elif not records:
                self.state.drop_entry(kind, key)
                self.ctx.audit.write("pending_cleared", kind, key, why="not in PeopleSoft (current lookup)")
            else:
                continue  # several: the write path reports the conflict for a person
            self.state.dirty = True
        if entries and not self.ctx.dry_run:
            self.state.save()

    def wait_if_young(self, kind: str, key: str, row: dict[str, Any], title: str, handle: str) -> bool:
        """True (and the record queued) while an earlier Create of it may still be running in PeopleSoft, or
        lost its answer in this very pass (never resent in the same pass, whatever the grace period)."""
        if (kind, key) in self.lost:
            self.ctx.fail(kind, key, row, RecordError(
                f"{title}: its {self.noun} Create lost its answer earlier in this pass; nothing is sent again "
                f"before the next pass has looked the {self.noun} up by {handle}."))
            return True
        entry = self.state.entry(kind, key)
        left = self.young(entry) if entry is not None and entry.get("pending") else 0.0
        if left:
            self.ctx.fail(kind, key, row, RecordError(
                f"{title}: an earlier Create of its {self.noun} lost its answer {self.grace - left:.0f} s ago and may "
                f"still be running in PeopleSoft. Nothing is sent until {self.grace:.0f} s have passed "
                f"(pending_grace_seconds); then the {self.noun} is looked up by {handle} first."))
        return bool(left)

    # -- create ----------------------------------------------------------------------------------
    def create_marked(self, kind: str, key: str, entry: dict[str, Any], record: Mapping[str, Any],
                      ) -> dict[str, Any]:
        """Save ``entry`` with a pending mark, then send the Create; return the keys PeopleSoft assigned.
        Every exception propagates with the mark in place; the caller decides what an answer means."""
        self.state.set_entry(kind, key, mark_pending(entry))
        self.state.save()  # the mark is on disk before the request leaves
        return self.ci.create(self.ci_name, record)

    def link_created(self, kind: str, key: str, entry: dict[str, Any], keys: Mapping[str, Any]) -> dict[str, str]:
        entry = self.state.entry(kind, key) or entry
        entry[self.link] = {k: key_text(keys.get(k)) for k in self.get_keys()}
        entry.pop("pending", None)
        entry.pop("pending_at", None)
        self.state.dirty = True
        return entry[self.link]

    def adopt(self, kind: str, key: str, entry: dict[str, Any], record: Mapping[str, Any], why: str) -> dict[str, str]:
        entry.pop("pending", None)
        entry.pop("pending_at", None)
        entry[self.link] = self.keys_of(record)
        entry["adopted"] = True
        self.state.set_entry(kind, key, entry)
        self.ctx.audit.write("adopted", kind, key, **{self.link: entry[self.link]}, why=why)
        return entry[self.link]

    def unchanged(self, kind: str, key: str, entry: dict[str, Any]) -> Posted:
        """A linked document equal to what is wanted: counted unchanged (adopted when this pass's settling of a
        pending create found it), dequeued."""
        counts = self.ctx.result.kind(kind)
        adopted = bool(entry.pop("just_adopted", None))
        if adopted:
            counts.adopted += 1
            self.state.dirty = True
        else:
            counts.unchanged += 1
        self.done(kind, key)
        return self.posted(entry[self.link], "adopted" if adopted else "unchanged")

    def done(self, kind: str, key: str) -> None:
        if not self.ctx.dry_run:
            self.state.dequeue(kind, key)
            self.state.save()


