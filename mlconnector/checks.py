"""One result of `mlconnector ping` (core: every system's checks return these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    """A named check of one system: ``ok``, what was seen (``detail``) and, when it failed, the ``fix``.

    ``warning`` marks a failed check that does not stop anything (a crosswalk gap: records wait for it);
    `ping` shows it but exits 0 for it, and the first pass's checks do not stop on it."""

    system: str
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""
    warning: bool = False

    @property
    def blocking(self) -> bool:
        return not self.ok and not self.warning
