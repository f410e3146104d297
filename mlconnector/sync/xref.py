"""Reference-data crosswalks: vendor, GL account, cost centre, unit, status, ... between two systems.

A crosswalk table maps a value on one side to its counterpart on the other. Entries come from the
configuration (fixed tables an admin writes) and from reference flows (a vendor created in PeopleSoft
for a Procurify vendor is learned, and kept in the state). Configured entries win over learned ones.

A document whose reference has no mapping is never posted with a guess: ``need`` raises
``MissingReference``, which names the value and the config key to add it under. The engine queues such
a record as *waiting* and retries it on every pass (no attempt cap), so it is posted on the first pass
after the mapping appears.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlconnector.errors import RecordError
from mlconnector.state import State

EXTRA_KEY = "xref"  # state.extra["xref"][table][value] = counterpart (learned entries)


class MissingReference(RecordError):
    """A record refers to a value its target has no counterpart for yet: it waits, it is not a failure of
    the record itself. ``table`` and ``value`` name what is missing; ``config_key`` where to add it."""

    def __init__(self, table: str, value: str, config_key: str, what: str = "") -> None:
        self.table, self.value, self.config_key = table, value, config_key
        super().__init__(f"{what or 'This record'} waits for a mapping of {table} {value!r}, which has no "
                         f"counterpart yet. Add it under [{config_key}] (or let the reference flow create it); "
                         f"the record is posted on the first pass after the mapping exists. Nothing was guessed.")


class Crosswalk:
    """Configured tables plus entries learned into the state; see the module docstring."""

    def __init__(self, state: State, configured: Mapping[str, Mapping[str, str]], config_keys: Mapping[str, str]):
        self.state = state
        self.configured = {t: dict(v) for t, v in configured.items()}
        self.config_keys = dict(config_keys)  # table -> the config section that holds its entries

    def _learned(self, table: str) -> dict[str, Any]:
        return self.state.extra.setdefault(EXTRA_KEY, {}).setdefault(table, {})

    def get(self, table: str, value: str) -> str | None:
        hit = self.configured.get(table, {}).get(value)
        if hit is not None:
            return hit
        learned = self.state.extra.get(EXTRA_KEY, {}).get(table, {}).get(value)
        return str(learned) if learned is not None else None

    def need(self, table: str, value: str, what: str = "") -> str:
        """The counterpart of ``value``, or MissingReference (the record waits)."""
        hit = self.get(table, value)
        if hit is None:
            raise MissingReference(table, value, self.config_keys.get(table, f"xref.{table}"), what)
        return hit

    def learn(self, table: str, value: str, counterpart: str) -> None:
        """Record a pair made by a reference flow (configured entries still win)."""
        learned = self._learned(table)
        if learned.get(value) != counterpart:
            learned[value] = counterpart
            self.state.dirty = True
