"""Real setups through the CLI: a pass killed between two workflow hops, ping listing every problem at once."""

from __future__ import annotations

import json
import signal

from conftest import Env
from test_crash_safety import _kill, _start, _wait_for

from mlconnector.errors import EXIT_OK
from mlconnector.mapping import record_label


def test_a_pass_killed_between_two_hops_finishes_the_walk_on_the_next_pass(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    row = next(r for r in box.ps.rows("purchase_orders") if r["PO_STATUS"] == "PA")
    key = (row["BUSINESS_UNIT"], row["PO_ID"])
    label = record_label("purchase_orders", "|".join(key))
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK

    def issue() -> dict:
        return next(i for i in box.jira.all_issues() if label in i["fields"].get("labels", []))

    assert issue()["fields"]["status"] == "Pending Approval"
    box.ps.touch("purchase_orders", key, PO_STATUS="C")  # Done: Pending Approval -> Approved -> Done
    box.jira_server.faults.add(kind="hang_after", path=r"/issue/PROC-\d+/transitions$", method="POST", count=1,
                               delay=30)
    proc = _start(env, "sync", "peoplesoft-jira")
    try:
        _wait_for(lambda: issue()["fields"]["status"] == "Approved", 20, "the first hop", proc)
        assert _kill(proc) == -signal.SIGKILL
    finally:
        _kill(proc)
    box.jira_server.faults.clear()
    box.jira_server.clear_log()
    rerun = env.cli("sync", "peoplesoft-jira", "--json")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert issue()["fields"]["status"] == "Done"
    moves = [i["toString"] for h in issue()["changelog"] for i in h["items"] if i["fieldId"] == "status"]
    assert moves == ["Pending Approval", "Approved", "Done"]
    assert len(box.jira_server.requests("POST", r"/transitions$")) == 1  # only the hop still missing
    assert json.loads(rerun.stdout)["counts"]["purchase_orders"]["transitioned"] == 1
