"""`sync <pair> --plan`: reads both sides, writes nothing anywhere, and says per record what would happen."""

from __future__ import annotations

import json

from conftest import Env

from mlconnector.errors import EXIT_OK

SYNC = ("sync", "peoplesoft-jira")


def test_a_plan_writes_nothing_and_names_every_action(sandbox_env: Env) -> None:
    env = sandbox_env
    first = env.cli(*SYNC, "--plan", "--json")
    assert first.returncode == EXIT_OK, first.stderr
    plan = json.loads(first.stdout)["plan"]
    creates = [p for p in plan if p["action"] == "create"]
    assert len(creates) == len(env.source_labels())
    assert env.box.jira.writes == 0 and not env.state_file.exists() and not env.audit_file.exists()

    assert env.cli(*SYNC).returncode == EXIT_OK
    ps = env.box.ps
    po = next(r for r in ps.rows("purchase_orders") if r["PO_STATUS"] == "PA")
    key = (po["BUSINESS_UNIT"], po["PO_ID"])
    ps.touch("purchase_orders", key, PO_STATUS="A", PO_AMT=float(po["PO_AMT"]) + 100)
    ps.add_comment("purchase_orders", key, "Approved; dispatch today.", "MGARCIA")
    writes, state_before, audit_before = env.box.jira.writes, env.state_file.read_bytes(), env.audit_file.read_bytes()

    planned = env.cli(*SYNC, "--plan")
    assert planned.returncode == EXIT_OK, planned.stderr
    assert env.box.jira.writes == writes
    assert env.state_file.read_bytes() == state_before and env.audit_file.read_bytes() == audit_before
    lines = planned.stdout.splitlines()
    [update] = [ln for ln in lines if ln.startswith(f"update purchase_orders {key[0]}|{key[1]}")]
    assert "fields" in update and "customfield_" in update  # the amount (and approval status) fields differ
    assert "transition Pending Approval -> " in update and update.rstrip(")").endswith("Approved")
    assert any(ln.startswith(f"comment purchase_orders {key[0]}|{key[1]}") for ln in lines)
    assert lines[-1].startswith("PLAN: ") and "nothing was written" in lines[-1]

    real = json.loads(env.cli(*SYNC, "--json").stdout)["counts"]["purchase_orders"]
    assert real["updated"] == 1 and real["transitioned"] == 1 and real["commented"] == 1
