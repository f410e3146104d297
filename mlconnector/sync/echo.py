"""Two-way flows: telling our own writes from people's changes, the rule when both sides changed, and the
order flows run in.

- **Echo**: a change read back from a target is the connector's own when its actor is one of the
  connector's accounts, or when its content hash equals what the connector last wrote there. Either
  alone can fail (a shared service account; a person restoring the very value we wrote), so both count.
- **Conflict**: both sides changed since the link's last sync. Each flow declares its rule: the system
  of record wins (``owner`` names it), the ``newest`` change wins, or ``manual`` queues both versions for
  a person (``replay show`` prints them).
- **Order**: reference data (vendors, accounts) before the documents that use them: flows run in an
  order that respects every flow's ``after``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from mlconnector.errors import ConfigError

CONFLICT_RULES = ("owner", "newest", "manual")


def is_echo(actor: str, own_actors: Iterable[str], content_hash: str | None, last_written: str | None) -> bool:
    """True when a change read from a system is the connector's own write coming back."""
    if actor and actor in set(own_actors):
        return True
    return content_hash is not None and content_hash == last_written


@dataclass(frozen=True)
class Side:
    """One side's version of a linked record: its system, when it last changed, and its content hash."""

    system: str
    changed_at: datetime | None
    hash: str


def changed_since_sync(side: Side, synced_hash: str | None) -> bool:
    return synced_hash is None or side.hash != synced_hash


def resolve_conflict(rule: str, owner: str, a: Side, b: Side) -> str | None:
    """Which side's version wins when both changed: its system name, or None for ``manual`` (a person decides).
    ``newest`` falls back to the owner when either time is unknown or they are equal."""
    if rule not in CONFLICT_RULES:
        raise ConfigError(f"conflict rule {rule!r} is not one of: {', '.join(CONFLICT_RULES)}.")
    if rule == "manual":
        return None
    if rule == "newest" and a.changed_at and b.changed_at and a.changed_at != b.changed_at:
        return a.system if a.changed_at > b.changed_at else b.system
    return owner


@dataclass(frozen=True)
class FlowOrder:
    """A flow's name and the flows that must run before it."""

    name: str
    after: tuple[str, ...] = ()


def ordered(flows: Sequence[FlowOrder]) -> list[str]:
    """The flows' names in an order where each runs after those it names (declaration order otherwise).
    A cycle or an unknown name is a configuration error, not a silent guess."""
    names = [f.name for f in flows]
    deps = {f.name: set(f.after) for f in flows}
    for f in flows:
        unknown = set(f.after) - set(names)
        if unknown:
            raise ConfigError(f"flow {f.name} runs after {sorted(unknown)[0]!r}, which is not a flow of this pair.")
    out: list[str] = []
    while len(out) < len(names):
        ready = [n for n in names if n not in out and deps[n] <= set(out)]
        if not ready:
            stuck = [n for n in names if n not in out]
            raise ConfigError(f"flows {', '.join(stuck)} wait for each other: their 'after' lists form a cycle.")
        out.append(ready[0])
    return out
