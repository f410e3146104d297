"""The shapes reconcile (mlconnector/reconcile.py) and the pairs that lend it their scope share: what a pair
lends (``Scope``, ``TargetSide``), what a target read returns (``Current``) and a line of the report
(``Finding``). Pure data: the pairs' reconcile modules import these without importing reconcile itself (which
opens sessions through the runner), so no pair module and the runner import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass
class Current:
    """The target's record for a source record: ``ref`` names it (an issue key, a PO id); ``record`` is what
    the target holds (None: the linked record is gone, ``reason`` says so); ``note`` explains how it was found
    (e.g. by its handle, with no link)."""

    ref: str
    record: dict[str, Any] | None
    note: str = ""
    reason: str = ""


class TargetSide(Protocol):
    """What reconcile asks of a target system: current reads in batches, a field-by-field comparison, the
    amount a record carries, and a streamed sweep for target records no source record accounts for.

    ``current(kind, items)`` takes (key, mapped record or None, key-map entry or None) and returns the target
    record of each key it found (linked ones by their id; unlinked ones by their handle), and a ``Current``
    with ``record`` None for a linked record that is gone. ``orphans(kind, seen, accounted)`` (``seen``: the keys
    read from the source, ``key in seen``) yields a
    ``Finding`` per target record of the entity that carries one of our handles but that no link and no
    source, queued or pending record accounts for. Optional: ``name_for(kind)`` names the target system of an
    entity when the side spans two systems; ``credit(kind, record)`` gives a journal's credits (its ``amount`` is
    then its debits), summed beside them in the money totals."""

    name: str

    def current(self, kind: str, items: list[tuple[str, Any, dict[str, Any] | None]]) -> dict[str, Current]: ...

    def differences(self, kind: str, rec: Any, record: dict[str, Any]) -> list[str]: ...

    def amount(self, kind: str, record: dict[str, Any] | None) -> float | None: ...

    def orphans(self, kind: str, seen: Container[str], accounted: Accounted) -> Iterator[Finding]: ...


@dataclass
class Accounted:
    """What explains a target record that no link names: the refs matched by handle in this run, and the
    keys and handles of queued or pending records (their target record may be half-written)."""

    refs: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    handles: set[str] = field(default_factory=set)


@dataclass
class Scope:
    """What a pair lends reconcile: its entities, readers and mapping (the same ones its pass uses).

    ``rows(kind, start, end)`` yields pages of source rows changed in [start, end]; ``map(kind, row)``
    returns the record as the target should hold it (raising RecordError for a row a pass would queue; None
    for a row a pass would not write); ``row_key(kind, row)`` names a row even when it cannot be mapped;
    ``kind_label(kind)`` is the label every Jira issue of the entity carries; ``money`` names the financial
    entities and what their amount is, read by ``amount(kind, key, row)`` (or ``mapped_amount(kind, rec)``)
    on the source and from field ``amount_field`` on the target; ``field_names`` gives a differing field its
    configured name (``amount``) instead of its id (``customfield_10051``); ``plan(kind, rows)`` runs the
    pass's write path on rows in planning mode (--fix). ``target`` is the target side (None: the pair's Jira
    issues). ``comment_rows`` / ``map_comment`` (optional) read and map the source's comments of an entity.
    ``full_read(kind, start)`` says whether a read from ``start`` returns every record the source still has
    (then a linked record it did not return was deleted at the source).
    """

    kinds: list[str]
    initial_since: Callable[[str], datetime]
    rows: Callable[[str, datetime, datetime], Iterator[list[dict[str, Any]]]]
    map: Callable[[str, dict[str, Any]], Any]
    row_key: Callable[[str, dict[str, Any]], str]
    kind_label: Callable[[str], str] = lambda kind: ""
    money: dict[str, str] = field(default_factory=dict)
    amount: Callable[[str, str, dict[str, Any]], float | None] = lambda kind, key, row: None
    mapped_amount: Callable[[str, Any], float | None] | None = None
    amount_field: str | None = None
    field_names: dict[str, str] = field(default_factory=dict)  # target field id -> the name the report shows
    # --fix: hand these rows of one entity to the pass's own write path in planning mode (nothing is written;
    # the pass notes on its context what it would do, see PassContext.planned).
    plan: Callable[[str, list[dict[str, Any]]], None] | None = None
    target: TargetSide | None = None
    comment_rows: Callable[[str, datetime, datetime], Iterator[list[dict[str, Any]]]] | None = None
    map_comment: Callable[[str, dict[str, Any]], Any] | None = None
    full_read: Callable[[str, datetime], bool] | None = None
    # Which side changed since the last sync, for links that keep no single ``hash`` (e.g. a hash per side):
    # (kind, link entry, mapped record) -> "source", "target" or "" (unknown). None: the link's ``hash``.
    changed: Callable[[str, dict[str, Any], Any], str] | None = None


@dataclass(slots=True)
class Finding:
    """One line of the report: a source record (or an unmatched target record) and its class."""

    kind: str
    key: str  # the record's encoded key ("" for an orphaned record that names no source record)
    cls: str
    issue: str = ""  # the target record: a Jira issue key, a PO id
    fields: list[str] = field(default_factory=list)
    changed: str = ""  # drifted: "source", "target", "both" or "" (unknown)
    reason: str = ""
    fix: str = ""  # --fix: what the next pass would do for it ("" when not asked)
    source_amount: float | None = None
    target_amount: float | None = None  # a journal: its debits
    target_credit: float | None = None  # a journal: its credits (None for any other record)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class"] = d.pop("cls")
        return {k: v for k, v in d.items() if v not in (None, "", [])}
