"""Reference tables (vendors; GL accounts and cost centres to come) and the documents that show them.

Two ways to learn what changed in a reference table:

- **Stamped window.** Where the source has a change stamp (a view with LAST_DTTM_UPDATE, an EFFDT), the
  table is read by window like a document kind (window.py).
- **Full read.** Where it has none (PS_VENDOR), the whole table is read when the cadence comes round
  (``FullRead.every``; zero means every pass) and each row is diffed by a content hash against its
  key-map entry: only rows whose content changed are stored. An unchanged table costs its reads and no
  write; a pass between two full reads costs no request at all.

Either way, a reference row that changed marks the documents that show it: its key is added, for each
document kind, to a refresh list kept in the state and saved in the same save as the new reference
entry, so a pass killed after that save still re-maps them on the next pass. A document kind, once its
own window is written, re-maps its dependents from the compact copy of their source inputs kept in their
key-map entries (``SOURCE``; only while the document is open) and writes them through its sink, which
edits only issues whose content hash changed; then its refresh list is cleared. Documents read in their
own window this pass were mapped with the new reference data already, so the re-map finds them
unchanged: each issue is written at most once per pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mlconnector.state import State, iso

SOURCE = "src"  # key-map entry field of a document: its mapped source inputs (open documents only)
REFRESH = "refresh"  # State.extra: document kind -> reference kind -> keys whose dependents await a re-map
FACTS = "v"  # key-map entry field of a reference row: the facts documents show


def ref_field(ref_kind: str) -> str:
    """The key-map entry field of a document naming the row of ``ref_kind`` it shows (``ref.vendors``)."""
    return f"ref.{ref_kind}"


def digest(facts: dict[str, Any]) -> str:
    """The content hash of a reference row's facts (order-independent)."""
    blob = json.dumps(facts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "replace")).hexdigest()[:20]


@dataclass(frozen=True)
class FullRead:
    """When a reference table without a change stamp is read in full: at most once per ``every`` (zero:
    every pass). The time of the last complete read is kept as the watermark ``<name>.full``; it moves only
    after the whole table was diffed, so a read stopped half-way is done again in full."""

    every: timedelta

    @staticmethod
    def mark(name: str) -> str:
        return f"{name}.full"

    def due(self, state: State, name: str, now: datetime, forced: bool = False) -> bool:
        last = state.watermarks.get(self.mark(name))
        return forced or last is None or now - datetime.fromisoformat(last) >= self.every

    def done(self, state: State, name: str, started: datetime) -> None:
        state.watermarks[self.mark(name)] = iso(started)
        state.watermarks_moved = True


class ReferenceStore:
    """The rows of one reference kind in the key map: ``{"v": facts, "hash": digest, "ts": stamp}``.

    ``store`` writes a row only when its content hash changed and, in the same breath (before any save),
    marks the documents of ``dependents`` that may show it; ``facts`` reads a row for mapping.
    """

    def __init__(self, state: State, kind: str, dependents: Iterable[str] = ()) -> None:
        self.state = state
        self.kind = kind
        self.dependents = list(dependents)

    def get(self, key: str) -> dict[str, Any] | None:
        """The facts of a row, or None (also for a row only an earlier version's state holds)."""
        entry = self.state.entry(self.kind, key)
        return entry.get(FACTS) if entry is not None else None

    def older(self, key: str, ts: str) -> bool:
        """Whether the stored row carries a newer (or the same) stamp than ``ts``: then ``ts``'s row is stale."""
        entry = self.state.entry(self.kind, key)
        return entry is not None and bool(entry.get("ts")) and entry["ts"] >= ts

    def store(self, key: str, facts: dict[str, Any], ts: str | None = None) -> bool:
        """Store a row if its content changed, and mark its dependents; True when it changed."""
        h = digest(facts)
        entry = self.state.entry(self.kind, key)
        if entry is not None and entry.get("hash") == h:
            if ts and entry.get("ts") != ts:
                entry["ts"] = ts  # a newer stamp on the same content: no dependent changes
                self.state.dirty = True
            return False
        self.state.set_entry(self.kind, key, {FACTS: facts, "hash": h, **({"ts": ts} if ts else {})})
        marks = self.state.extra.setdefault(REFRESH, {})
        for doc_kind in self.dependents:
            # Appended, not deduplicated here (that would cost a scan per row); readers take a set.
            marks.setdefault(doc_kind, {}).setdefault(self.kind, []).append(key)
        self.state.dirty = True
        return True


def marked(state: State, doc_kind: str) -> dict[str, set[str]]:
    """Reference kind -> keys whose documents of ``doc_kind`` await a re-map."""
    raw = state.extra.get(REFRESH, {}).get(doc_kind, {})
    return {ref_kind: set(keys) for ref_kind, keys in raw.items() if keys} if isinstance(raw, dict) else {}


def clear(state: State, doc_kind: str, seen: dict[str, set[str]]) -> None:
    """Forget the marks of ``doc_kind`` that were handled (``seen``, as ``marked`` returned them); marks
    added since stay."""
    marks = state.extra.get(REFRESH, {})
    lists = marks.get(doc_kind, {})
    for ref_kind, keys in seen.items():
        rest = [k for k in lists.get(ref_kind, []) if k not in keys]
        if rest:
            lists[ref_kind] = rest
        else:
            lists.pop(ref_kind, None)
    if not lists:
        marks.pop(doc_kind, None)
    if not marks:
        state.extra.pop(REFRESH, None)
    state.dirty = True


def dependents(state: State, doc_kind: str, refs: dict[str, set[str]]) -> list[str]:
    """Keys of ``doc_kind`` whose entries show one of the marked reference rows (one key-map scan each)."""
    out: set[str] = set()
    for ref_kind, keys in refs.items():
        out.update(state.find_by(doc_kind, ref_field(ref_kind), keys))
    return sorted(out)
