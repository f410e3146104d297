"""Links between a source record and its target record, and the rules that keep creates single.

A link is the key-map entry of a record: the target id once known, the handle, the content hash and
status last written, and while a create is in flight a pending mark with the time it was set. These
helpers hold the rules every sink follows, whatever the target:

- **Look up before every create.** A record with no link is searched on the target by its handle first;
  a lost, old or copied state file then yields adoption, never a second record.
- **Adopt only what is ours.** A target record found by handle is adopted when the full key it carries
  (where the target can hold one) equals the record's; otherwise it is a conflict for a person.
- **Settle before trusting an absence.** Where the target's lookup may lag its writes (Jira's search),
  a pending create counts as absent only when the lookup was issued at least ``settle_seconds`` after
  the pending mark. Until then the pass waits out the remainder (bounded by ``settle_seconds``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mlconnector.state import iso, utcnow

PENDING_AT = "pending_at"


def mark_pending(entry: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Set (or renew) the pending mark of a link: the create may take effect from this moment on."""
    entry["pending"] = True
    entry[PENDING_AT] = iso(now or utcnow())
    return entry


def pending_since(entry: dict[str, Any]) -> datetime | None:
    """When the pending mark was set; None for a mark without a time (written by an earlier version)."""
    raw = entry.get(PENDING_AT)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


@dataclass
class Settler:
    """Decides when an absence in a lagging lookup proves that a pending create never happened.

    ``current`` is True for targets whose lookup is guaranteed current (a PeopleSoft CI Find, a Procore
    filter): there an absence is proof at once. ``settle_seconds`` bounds how long a pass waits.
    """

    settle_seconds: float
    current: bool = False
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    waited: float = field(default=0.0)

    def unsettled(self, marks: dict[str, datetime | None], searched_at: datetime) -> dict[str, float]:
        """Keys whose absence in a lookup issued at ``searched_at`` proves nothing yet -> seconds to wait.
        A mark without a time is taken as set just before the lookup (the safe reading)."""
        if self.current or self.settle_seconds <= 0:
            return {}
        out: dict[str, float] = {}
        for key, since in marks.items():
            due = (since or searched_at) + timedelta(seconds=self.settle_seconds)
            if searched_at < due:
                out[key] = min(self.settle_seconds, (due - searched_at).total_seconds())
        return out

    def settle(self, marks: dict[str, datetime | None],
               lookup: Callable[[Sequence[str]], dict[str, Any]]) -> dict[str, Any]:
        """Look the marked keys up until every absence is proof: key -> what the lookup found (absent keys
        are left out). At most one wait, of at most ``settle_seconds``."""
        if not marks:
            return {}
        searched_at = self.clock()
        found = dict(lookup(list(marks)))
        waiting = {k: s for k, s in self.unsettled({k: v for k, v in marks.items() if k not in found},
                                                   searched_at).items()}
        if waiting:
            pause = max(waiting.values())
            self.sleep(pause)
            self.waited += pause
            found.update(lookup(list(waiting)))
        return found


def conflicts_with(carried: Any, kind: str, parts: Iterable[str]) -> bool:
    """True when a target record's key property names another record than (kind, parts). A record that
    carries no key property (made by an earlier version, or by hand with our handle) does not conflict:
    its handle alone is injective."""
    if not isinstance(carried, dict):
        return False
    return carried.get("entity") != kind or carried.get("key") != list(parts)
