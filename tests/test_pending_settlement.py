"""Settling what a killed or cut-off pass left pending, beyond the review's reproductions (test_review_flows.py):
the JDE status recorded in a pending status post, a failed Jira post of a comment, the queue names of comment rows
that cannot be mapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_review_flows import _backflow, _change, _comment_ctx, _FakeJira, _row, _write

from mlconnector.errors import AmbiguousWriteError, RemoteError
from mlconnector.jde.backflow import JDE_BEFORE
from mlconnector.pairs.peoplesoft_jira import _row_id
from mlconnector.state import State
from mlconnector.sync.keys import comment_key


def _lost_answer_post(tmp_path: Path) -> tuple[Any, Any, Any]:
    """A status post JDE applied (HD) whose answer was lost: pending, queued, JDE's former status recorded."""
    ctx, back, ais = _backflow(tmp_path, jde_status="40")
    applied = ais.orchestrate

    def lost(name: str, inputs: dict[str, str], fmt: str) -> dict[str, Any]:
        applied(name, inputs, fmt)
        raise AmbiguousWriteError("AIS did not answer", system="JD Edwards")

    ais.orchestrate = lost
    assert back.post(_change(1)) is False
    ais.orchestrate = applied
    mark = State.load(ctx.state.path).extra["jde-jira"]["posted"]["10003:1"]
    assert mark["state"] == "pending" and mark[JDE_BEFORE] == "40"
    return ctx, back, ais


def test_a_pending_post_is_sent_again_only_while_jde_shows_the_status_it_had(tmp_path: Path) -> None:
    # JDE never got the call (still 40): sent again, once.
    ctx, back, ais = _lost_answer_post(tmp_path)
    ais.status, ais.calls = "40", []
    back.resolve_pending()
    assert len(ais.calls) == 1 and back.book["posted"]["10003:1"]["state"] == "done"
    assert ctx.state.replay == []


def test_a_pending_post_jde_moved_on_from_is_settled_as_superseded_even_after_the_key_map_followed(
        tmp_path: Path) -> None:
    # The call took effect, then a planner closed the order (90) and a forward read put 90 in the key map: the
    # mark's recorded status (40), not the key map, tells that JDE moved on; nothing is posted, the queue item
    # goes, and the audit says why.
    ctx, back, ais = _lost_answer_post(tmp_path)
    ais.status, ais.calls = "90", []
    ctx.state.entry("work_orders", "5001|WO")["status"] = "90"
    lines: list[tuple[Any, ...]] = []
    ctx.audit.write = lambda action, *a, **kw: lines.append((action, *a, kw))  # type: ignore[method-assign]
    [item] = ctx.state.replay
    assert ctx.replay([item], back.retry) == (1, 0)
    assert ais.calls == [] and ais.status == "90" and ctx.state.replay == []
    settled = State.load(ctx.state.path).extra["jde-jira"]["posted"]["10003:1"]
    assert settled["state"] == "skipped" and "90" in settled["note"]
    assert [x[0] for x in lines if x[0] == "superseded"] == ["superseded"]


def test_a_status_check_that_fails_in_replay_keeps_the_change_pending_and_queued(tmp_path: Path) -> None:
    ctx, back, ais = _lost_answer_post(tmp_path)
    ais.calls = []
    ais.fail_browse.append(RemoteError("AIS answered 500", system="JD Edwards", status=500))
    [item] = ctx.state.replay
    assert ctx.replay([item], back.retry) == (0, 1)
    assert ais.calls == [] and back.book["posted"]["10003:1"]["state"] == "pending"
    assert [i["attempts"] for i in ctx.state.replay] == [2]
    assert ctx.replay(list(ctx.state.replay), back.retry) == (1, 0)  # JDE answers again: HD shown, settled
    assert ais.calls == [] and back.book["posted"]["10003:1"]["state"] == "done"


def test_a_comment_jira_refuses_loses_its_mark_unless_it_was_pending(tmp_path: Path) -> None:
    ctx = _comment_ctx(tmp_path)
    jira = _FakeJira()
    jira.fail_post.append(RemoteError("Jira answered 400", system="Jira", status=400))
    _write(ctx, jira, [_row("R1", "1")])  # never posted: nothing to look up later
    assert "1" not in ctx.state.entry("requisitions", "R1")["comments"]
    ctx.state.entry("requisitions", "R2")["comments"] = {"5": "pending"}
    jira.fail_post.append(RemoteError("Jira answered 400", system="Jira", status=400))
    _write(ctx, jira, [_row("R2", "5")])  # an earlier pass may have posted it: still looked up next time
    assert ctx.state.entry("requisitions", "R2")["comments"]["5"] == "pending"
    assert sorted(i["key"] for i in ctx.state.replay) == ["R1|1", "R2|5"]


def test_comment_rows_that_cannot_be_mapped_have_distinct_stable_queue_names() -> None:
    row = {"BUSINESS_UNIT": "US001", "PO_ID": "PO1", "COMMENT_ID": " 7 ", "COMMENTS": "x"}
    assert _row_id(row, "purchase_orders") == comment_key("US001|PO1", "7")
    no_id = [{"BUSINESS_UNIT": "US001", "PO_ID": "PO1", "COMMENTS": text} for text in ("a", "b")]
    names = [_row_id(r, "purchase_orders", comment=True) for r in no_id]
    assert names[0] != names[1] and all(n.startswith("invalid-row-") for n in names)
    assert names[0] == _row_id(dict(no_id[0]), "purchase_orders", comment=True)
    assert _row_id({"BUSINESS_UNIT": "US001", "PO_ID": "PO1"}, "purchase_orders") == "US001|PO1"
