"""One result of `mlconnector ping` (core: every system's checks return these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    """A named check of one system: ``ok``, what was seen (``detail``) and, when it failed, the ``fix``."""

    system: str
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""
