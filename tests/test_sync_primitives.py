"""The engine's primitives for two-way flows and reference data (sync/echo.py, sync/xref.py, sync/engine.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlconnector.audit import Audit, Redactor
from mlconnector.errors import ConfigError, RecordError
from mlconnector.state import State
from mlconnector.sync.echo import FlowOrder, Side, is_echo, ordered, resolve_conflict
from mlconnector.sync.engine import AUTO_REPLAY_ATTEMPTS, PassContext
from mlconnector.sync.links import Settler
from mlconnector.sync.xref import Crosswalk, MissingReference

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_own_writes_are_echoes_by_actor_or_by_content() -> None:
    assert is_echo("svc-mlconnector", {"svc-mlconnector"}, "h2", "h1")
    assert is_echo("jsmith", {"svc-mlconnector"}, "h1", "h1")  # a person's change that restores our value
    assert not is_echo("jsmith", {"svc-mlconnector"}, "h2", "h1")
    assert not is_echo("", (), None, None)


def test_conflict_rules() -> None:
    ps, pc = Side("peoplesoft", T0, "a"), Side("procore", T0 + timedelta(minutes=5), "b")
    assert resolve_conflict("owner", "peoplesoft", ps, pc) == "peoplesoft"
    assert resolve_conflict("newest", "peoplesoft", ps, pc) == "procore"
    assert resolve_conflict("newest", "peoplesoft", ps, Side("procore", None, "b")) == "peoplesoft"
    assert resolve_conflict("manual", "peoplesoft", ps, pc) is None
    with pytest.raises(ConfigError):
        resolve_conflict("loudest", "peoplesoft", ps, pc)


def test_reference_flows_run_before_the_documents_that_use_them() -> None:
    flows = [FlowOrder("purchase_orders", ("vendors", "accounts")), FlowOrder("vouchers", ("purchase_orders",)),
             FlowOrder("vendors"), FlowOrder("accounts")]
    assert ordered(flows) == ["vendors", "accounts", "purchase_orders", "vouchers"]
    with pytest.raises(ConfigError, match="cycle"):
        ordered([FlowOrder("a", ("b",)), FlowOrder("b", ("a",))])
    with pytest.raises(ConfigError, match="not a flow"):
        ordered([FlowOrder("a", ("ghost",))])


def test_a_record_without_a_mapping_waits_and_is_retried_every_pass_until_it_exists(tmp_path: Path) -> None:
    state = State(path=tmp_path / "state.json")
    xref = Crosswalk(state, {"account": {"6100-OPS": "640000/OPS"}}, {"account": "procurify.accounts"})
    assert xref.need("account", "6100-OPS") == "640000/OPS"
    with pytest.raises(MissingReference) as missing:
        xref.need("account", "6200-IT", what="Requisition 1042")
    assert "6200-IT" in str(missing.value) and "[procurify.accounts]" in str(missing.value)

    audit = Audit(tmp_path / "audit.jsonl", Redactor(), "test")
    first = PassContext("test", state, audit)
    first.fail("purchase_orders", "1042", {"ACCOUNT": "6200-IT"}, missing.value)
    first.fail("purchase_orders", "1043", {}, RecordError("bad amount"))
    for item in state.replay:  # both already failed more often than the cap allows
        item["attempts"] = AUTO_REPLAY_ATTEMPTS
    later = PassContext("test", state, audit, now=first.now + timedelta(hours=1))
    assert [i["key"] for i in later.auto_replay_items(["purchase_orders"])] == ["1042"]

    xref.learn("account", "6200-IT", "650000/IT")  # the reference flow (or the admin) supplies it
    assert xref.need("account", "6200-IT") == "650000/IT"
    audit.close()


def test_a_lagging_lookup_waits_out_the_settle_time_once_then_trusts_the_absence() -> None:
    now = [T0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += timedelta(seconds=s)

    settler = Settler(10.0, clock=lambda: now[0], sleep=sleep)
    lookups: list[list[str]] = []

    def lookup(keys: list[str]) -> dict[str, str]:
        lookups.append(list(keys))
        return {"b": "PROC-2"} if now[0] >= T0 + timedelta(seconds=4) else {}

    marks = {"a": T0 - timedelta(seconds=30), "b": T0 - timedelta(seconds=6), "c": None}
    found = settler.settle(marks, lookup)
    assert found == {"b": "PROC-2"}  # b became visible once its create had settled
    assert slept == [10.0]  # c (a mark without a time) needs the whole settle time; one wait for all
    assert lookups == [["a", "b", "c"], ["b", "c"]]  # a's absence was already proof
    assert Settler(10.0, current=True).unsettled({"x": T0}, T0) == {}  # a current lookup never waits
