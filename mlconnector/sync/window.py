"""The one window rule: where a pass starts reading an entity, and when its watermark may move.

- A window starts at the watermark less the overlap (sources stamp rows at minute or day granularity,
  and a row committed late can carry an older stamp), at ``initial_since`` on a first pass, or at
  ``--since``. Rows read twice are told apart by the key map's timestamp and content hash.
- A watermark moves only after the rows it covers were written, found unchanged or queued, and after
  the state holding those results is on disk. It never moves backwards, and a ``--since`` later than
  the watermark leaves it where it is (rows between the two were skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mlconnector.state import State, iso


@dataclass(frozen=True)
class WindowRule:
    """Overlap and watermark bookkeeping for one entity's windows (see the module docstring)."""

    overlap: timedelta

    def start(self, state: State, name: str, initial: datetime, since: datetime | None) -> datetime:
        if since is not None:
            return since
        wm = state.watermarks.get(name)
        return datetime.fromisoformat(wm) - self.overlap if wm else initial

    @staticmethod
    def advance(state: State, name: str, until: datetime, since: datetime | None) -> bool:
        """Move the watermark to ``until`` after saving the results it covers; True when it moved. The moved
        watermark itself is saved with the next save (losing it costs a re-read, never a record)."""
        if state.dirty:
            state.save()
        old = state.watermarks.get(name)
        if since is not None and old is not None and since > datetime.fromisoformat(old):
            return False
        if old is None or until > datetime.fromisoformat(old):
            state.watermarks[name] = iso(until)
            return True
        return False
