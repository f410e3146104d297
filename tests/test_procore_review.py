"""Review findings on `sync peoplesoft-procore` and the PeopleSoft PO sink: a refused line sync must not turn
into a conflict Procore wins, a commitment deleted in Procore is made again once (a re-coded PO is reported
plainly), and one failing lookup of a pending PO create neither stops the pass nor clears its mark."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import sandbox_environ

from mlconnector.audit import Audit, Redactor
from mlconnector.peoplesoft.ci import CIError
from mlconnector.peoplesoft.po_sink import PONames, POWriter
from mlconnector.state import State
from mlconnector.sync.engine import PassContext
from mlconnector.sync.links import mark_pending


@pytest.fixture
def procore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from mlconnector.sandbox.procore_run import start_procore_sandbox

    box = start_procore_sandbox(vendors=2)
    sandbox_environ(monkeypatch, box.env(), tmp_path / "cache")
    (tmp_path / "config.toml").write_text(box.config_text(tmp_path / "state.json"), encoding="utf-8")
    try:
        yield box
    finally:
        box.stop()


def procore_sync(tmp: Path) -> Any:
    from mlconnector import config as config_mod
    from mlconnector import runner

    return runner.sync("peoplesoft-procore", config_mod.load(tmp / "config.toml"))


def _vendor(box: Any) -> str:
    return [r["VENDOR_ID"] for r in box.ps.rows("vendors") if r["VENDOR_STATUS"] == "A"][0]


def test_a_refused_line_sync_turns_into_a_conflict_that_procore_wins_and_the_lines_are_never_sent(
        procore: Any, tmp_path: Path) -> None:
    """Lines refused once, then accepted: the next pass resends the PO (no Procore-side version was ever
    confirmed), even with system_of_record = "procore", and the commitment gets its line."""
    from mlconnector.sync.keys import handle

    (tmp_path / "config.toml").write_text(procore.config_text(
        tmp_path / "state.json", extra_pair='pending_grace_seconds = 0\nsystem_of_record = "procore"'),
        encoding="utf-8")
    procore.add_po("0000000501", _vendor(procore),
                   [{"descr": "Rebar", "qty": 10, "price": "25.50", "account": "640000"}])
    line_origin = handle("psft-pol", ("US001", "0000000501", "1", "1"))
    procore.procore.refuse[line_origin] = "cost code is locked"
    r = procore_sync(tmp_path)
    assert any("refused line" in f["error"] for f in r.failures), r.failures
    del procore.procore.refuse[line_origin]  # the cost code is unlocked
    procore_sync(tmp_path)
    procore_sync(tmp_path)
    (contract,) = procore.procore.contracts.values()
    assert [li["amount"] for li in procore.procore.lines_of(contract["id"])] == ["255.00"]


def test_replay_drop_after_a_deleted_commitment_does_not_let_the_next_pass_create_it_again(
        procore: Any, tmp_path: Path) -> None:
    """A commitment deleted in Procore: the PO's next change makes it again, once, and the pass after that
    writes nothing more."""
    procore.add_po("0000000501", _vendor(procore),
                   [{"descr": "Rebar", "qty": 10, "price": "25.50", "account": "640000"}])
    assert procore_sync(tmp_path).exit_code == 0
    procore.procore.contracts.clear()  # a person deleted the commitment in Procore
    procore.change_po(("US001", "0000000501"), qty=12)
    r = procore_sync(tmp_path)
    assert r.failures == [], r.failures
    (contract,) = procore.procore.contracts.values()
    assert [li["amount"] for li in procore.procore.lines_of(contract["id"])] == ["306.00"]
    procore.change_po(("US001", "0000000501"), qty=13)
    procore.purchasing.pos[("US001", "0000000501")]["LAST_DTTM_UPDATE"] = datetime.now(UTC).isoformat()
    r = procore_sync(tmp_path)
    assert r.failures == [], r.failures
    (again,) = procore.procore.contracts.values()
    assert again["id"] == contract["id"]
    assert [li["amount"] for li in procore.procore.lines_of(again["id"])] == ["331.50"]
    assert "replay drop" not in (tmp_path / "state.json").read_text(encoding="utf-8")


def test_a_po_recoded_to_another_project_is_reported_plainly_and_not_duplicated(
        procore: Any, tmp_path: Path) -> None:
    """Procore cannot move a commitment between projects: the re-coded PO fails with a message naming both
    projects and the fix; no second commitment is made."""
    procore.add_po("0000000501", _vendor(procore),
                   [{"descr": "Rebar", "qty": 10, "price": "25.50", "account": "640000"}])
    assert procore_sync(tmp_path).exit_code == 0
    po = procore.purchasing.pos[("US001", "0000000501")]
    po["PO_LINE"][0]["PO_LINE_DISTRIB"][0].update(PROJECT_ID="PRJ-BRIDGE", DEPTID="OPS")
    procore.change_po(("US001", "0000000501"), qty=12)
    r = procore_sync(tmp_path)
    (failure,) = r.failures
    assert "562949953425001" in failure["error"] and "562949953425002" in failure["error"], failure
    assert "cannot move" in failure["error"] and "replay retry" in failure["error"]
    assert len(procore.procore.contracts) == 1


# -- POWriter.resolve_pending: one failing lookup -------------------------------------------------
NAMES = PONames(ci="CI_PO", business_unit="BUSINESS_UNIT", po_id="PO_ID", handle="PO_REF", vendor_id="VENDOR_ID",
                status="PO_STATUS", lines="PO_LINE", line_nbr="LINE_NBR", distributions="PO_DISTRIB",
                distrib_nbr="DISTRIB_LINE_NUM", updatable_statuses=("O",))


class _FlakyCI:
    """A CI whose Find fails for one handle and finds nothing for the others."""

    def __init__(self, failing: str) -> None:
        self.failing = failing

    def find(self, ci: str, keys: dict[str, Any]) -> list[dict[str, Any]]:
        if keys["PO_REF"] == self.failing:
            raise CIError("The PeopleSoft server answered HTTP 500 to Find.", operation="Find", raw="<fault/>")
        return []

    def get(self, ci: str, keys: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - Find finds nothing
        raise AssertionError("no Get expected")


def test_one_failing_lookup_of_a_pending_po_create_keeps_its_mark_and_settles_the_others(tmp_path: Path) -> None:
    state = State(path=tmp_path / "s.json")
    audit = Audit(tmp_path / "a.jsonl", Redactor(), "t")
    ctx = PassContext("t", state, audit)
    for key, ref in (("A", "ML-A"), ("B", "ML-B")):
        state.set_entry("purchase_orders", key, mark_pending(
            {"business_unit": "US001", "handle": ref, "vendor": "V1"}, datetime(2020, 1, 1, tzinfo=UTC)))
    state.enqueue("purchase_orders", "A", {"group": ["A"]}, "answer lost")
    writer = POWriter(ctx, _FlakyCI("ML-A"), NAMES)  # type: ignore[arg-type]
    writer.resolve_pending("purchase_orders")
    audit.close()
    assert (state.entry("purchase_orders", "A") or {}).get("pending") is True  # an error is not an absence
    assert state.entry("purchase_orders", "B") is None  # proven absent: the mark is cleared
    (failure,) = ctx.result.failures
    assert failure["key"] == "A" and "Could not look up" in failure["error"] and "Traceback" not in failure["error"]
    (item,) = state.replay
    assert item["row"] == {"group": ["A"]}  # the queued source row is kept for the retry


# -- `mlconnector state unlink`: the command the "no longer in PeopleSoft" messages name -------------------
def test_state_unlink_forgets_one_queued_records_link_and_keeps_the_item(procore: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlconnector", *args, "--config", str(tmp_path / "config.toml")],
                              capture_output=True, text=True, env=dict(os.environ), timeout=120,
                              stdin=subprocess.DEVNULL)

    procore.add_po("0000000501", _vendor(procore),
                   [{"descr": "Rebar", "qty": 10, "price": "25.50", "account": "640000"}])
    assert procore_sync(tmp_path).exit_code == 0
    state = State.load(tmp_path / "state.json")
    (key,) = state.entries("purchase_orders")
    item = state.enqueue("purchase_orders", key, {"rows": []}, "its document is no longer there")
    state.save()
    done = cli("state", "unlink", item["id"])
    assert done.returncode == 0, done.stderr
    after = State.load(tmp_path / "state.json")
    assert after.entry("purchase_orders", key) is None and [i["id"] for i in after.replay] == [item["id"]]
    again = cli("state", "unlink", item["id"])
    assert again.returncode != 0 and "no link" in again.stderr and "Traceback" not in again.stderr
    unknown = cli("state", "unlink", "nope")
    assert unknown.returncode != 0 and "replay list" in unknown.stderr and "Traceback" not in unknown.stderr
