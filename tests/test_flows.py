"""The declared flows' rules that every pair relies on (sync/flows.py), and the Jira name resolution both
Jira pairs share (jira/target.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlconnector.audit import Audit, Redactor
from mlconnector.errors import ConfigError, RecordError
from mlconnector.jira.client import FieldInfo
from mlconnector.jira.target import IssueTypeName, resolve
from mlconnector.state import State, iso
from mlconnector.sync import flows
from mlconnector.sync.engine import PassContext
from mlconnector.sync.window import WindowRule

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ctx(tmp_path: Path, *, dry_run: bool = False) -> PassContext:
    state = State.load(tmp_path / "state.json")
    return PassContext("test", state, Audit(None, Redactor(), "test"), dry_run=dry_run, now=T0 + timedelta(days=1))


class _Rec:
    def __init__(self, key: str, ts: datetime) -> None:
        self.key, self.ts = key, ts


def test_a_watermark_moves_only_after_the_batch_is_written_and_saved(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    seen: list[tuple[str, bool]] = []

    def write(rows: list[dict[str, Any]]) -> None:
        # While a batch is written its watermark has not moved, and nothing of it is on disk yet.
        seen.append((rows[0]["k"], "w" in ctx.state.watermarks))
        ctx.state.dirty = True

    flow = flows.WindowedFlow("things", "w", WindowRule(timedelta(0)), T0,
                              read=lambda s, e: [([{"k": "a"}], T0 + timedelta(hours=1)),
                                                 ([{"k": "b"}], T0 + timedelta(hours=2))], write=write)
    flows.run_windowed(ctx, flow, None)
    assert seen == [("a", False), ("b", True)]
    assert ctx.state.watermarks["w"] == iso(T0 + timedelta(hours=2))
    assert ctx.result.kind("things").read == 2
    assert State.load(tmp_path / "state.json").watermarks.get("w") == iso(T0 + timedelta(hours=1))


def test_an_unbounded_read_advances_to_the_newest_record_and_a_dry_run_moves_nothing(tmp_path: Path) -> None:
    def mapped(ctx: PassContext) -> Any:
        def write(rows: list[dict[str, Any]]) -> datetime | None:
            return flows.newest(flows.map_rows(ctx, "things", rows, lambda r: _rec(r), lambda r: str(r.get("k"))))
        return write

    def _rec(row: dict[str, Any]) -> _Rec:
        if "ts" not in row:
            raise RecordError("no stamp")
        return _Rec(row["k"], row["ts"])

    rows = [{"k": "a", "ts": T0 + timedelta(hours=3)}, {"k": "a", "ts": T0 + timedelta(hours=1)}, {"k": "bad"}]
    ctx = _ctx(tmp_path)
    flows.run_windowed(ctx, flows.WindowedFlow("things", "w", WindowRule(timedelta(0)), T0,
                                               read=lambda s, e: [(rows, None)], write=mapped(ctx)), None)
    assert ctx.state.watermarks["w"] == iso(T0 + timedelta(hours=3))
    assert [i["key"] for i in ctx.state.replay] == ["bad"]  # the unmappable row waits with its reason

    dry = _ctx(tmp_path / "dry", dry_run=True)
    flows.run_windowed(dry, flows.WindowedFlow("things", "w", WindowRule(timedelta(0)), T0,
                                               read=lambda s, e: [(rows, None)], write=mapped(dry)), None)
    assert "w" not in dry.state.watermarks


def test_replay_routes_to_the_most_specific_declaration() -> None:
    calls: list[str] = []
    routes = {("vendors", "*"): lambda i: calls.append("vendor"), ("*", "comment"): lambda i: calls.append("comment"),
              ("*", "*"): lambda i: calls.append("record")}
    for item in ({"kind": "vendors"}, {"kind": "vouchers", "what": "comment"}, {"kind": "vouchers"},
                 {"kind": "vendors", "what": "comment"}):
        flows.route(routes, item)(item)
    assert calls == ["vendor", "comment", "record", "vendor"]


def test_queued_rows_are_swapped_for_their_newest_version_at_the_source() -> None:
    items = [{"kind": "k", "key": "a", "row": {"k": "a", "ts": T0, "v": 1}},
             {"kind": "k", "key": "b", "row": {"k": "b", "ts": T0, "v": 1}}]
    starts: list[datetime] = []

    def read(start: datetime, end: datetime) -> Any:
        starts.append(start)
        yield [{"k": "a", "ts": T0 + timedelta(hours=1), "v": 2}, {"k": "a", "ts": T0 + timedelta(hours=2), "v": 3},
               {"nokey": 1}], end

    def key(row: dict[str, Any]) -> str:
        if "k" not in row:
            raise RecordError("no key")
        return str(row["k"])

    src = flows.QueuedSource(read=read, key=key, ts=lambda row, k: row["ts"])
    assert flows.refresh_queued(items, lambda kind, what: src, timedelta(minutes=5), T0 + timedelta(days=1)) == 1
    assert items[0]["row"]["v"] == 3 and items[1]["row"]["v"] == 1
    assert starts == [T0 - timedelta(minutes=5)]


class _Jira:
    def fields(self) -> list[FieldInfo]:
        return [FieldInfo("customfield_1", "ERP Key", "string", "")]

    def project(self, key: str) -> dict[str, Any] | None:
        return {"issueTypes": [{"name": "Task", "id": "10"}]} if key == "OPS" else None

    def project_statuses(self, key: str) -> dict[str, set[str]]:
        return {"Task": {"To Do", "Done"}}


def test_jira_names_resolve_or_name_the_config_key_to_fix() -> None:
    jira: Any = _Jira()

    def go(project: str = "OPS", type_name: str = "Task", status: str = "Done") -> Any:
        return resolve(jira, project, fields={}, key_field="ERP Key",
                       issue_types={"orders": IssueTypeName("x.issue_type", type_name)},
                       missing_project="no project OPS2", statuses=lambda e: [(status, f"x.status = {status!r}")],
                       type_hint=" Add it.")

    r = go()
    assert r.issue_type_ids == {"orders": "10"} and r.key_field is not None and r.key_field.id == "customfield_1"
    with pytest.raises(ConfigError, match="no project OPS2"):
        go(project="OPS2")
    with pytest.raises(ConfigError, match=r"x.issue_type = 'Bug' is not an issue type of project OPS .* Add it\."):
        go(type_name="Bug")
    with pytest.raises(ConfigError, match=r"x.status = 'Shipped' is not a status of issue type 'Task' in OPS"):
        go(status="Shipped")
