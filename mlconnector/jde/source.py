"""Reading JD Edwards orders through AIS data browsing: the forward flow's source, and the order status
the back-flow checks before it posts again.

UPMJ (date updated) has day granularity and no time part: a window is read from the day its start falls
on in the server's time zone, ordered by UPMJ and TDAY, so rows of the overlap are read again and told
apart downstream by (UPMJ, TDAY) and the content hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from mlconnector.jde.ais import AisClient, Condition
from mlconnector.jde.config import JdeConfig, SourceSettings
from mlconnector.jde.julian import date_literal


@dataclass
class OrderReader:
    """Browses one configured source table (work orders, change orders) of JDE."""

    ais: AisClient
    jde: JdeConfig

    def columns(self, src: SourceSettings) -> list[str]:
        cols = [c for c in src.columns.values() if c]
        cols += [alias for alias in self.jde.fields if alias]
        return list(dict.fromkeys(cols))

    def conditions(self, src: SourceSettings, start: date) -> list[Condition]:
        conds = [Condition(src.control_id("updated_date"), "GREATER_EQUAL",
                           [date_literal(start, self.ais.date_pattern())])]
        if src.order_types and src.alias("order_type"):
            op = "EQUAL" if len(src.order_types) == 1 else "LIST"
            conds.append(Condition(src.control_id("order_type"), op, list(src.order_types)))
        return conds

    def since(self, src: SourceSettings, start: datetime) -> list[dict[str, Any]]:
        """Every row updated on or after the day ``start`` falls on (server time), oldest first."""
        day = start.astimezone(self.jde.server_utc_offset).date()
        order_by = [c for c in (src.alias("updated_date"), src.alias("updated_time")) if c]
        return self.ais.browse(src.table, self.columns(src), self.conditions(src, day), order_by)

    def status(self, src: SourceSettings, order_number: str, order_type: str) -> str | None:
        """The order's status code in JDE now (None: no such order)."""
        conds = [Condition(src.control_id("order_number"), "EQUAL", [order_number])]
        if src.alias("order_type") and order_type:
            conds.append(Condition(src.control_id("order_type"), "EQUAL", [order_type]))
        rows = self.ais.browse(src.table, [src.alias("order_number"), src.alias("status")], conds, page_size=5)
        return str(rows[0].get(src.alias("status")) or "").strip() if rows else None
