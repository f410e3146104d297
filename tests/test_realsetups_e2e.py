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


def _failed(proc) -> dict[str, dict]:
    assert proc.stdout.strip(), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"] if not c["ok"]}


def test_ping_lists_every_peoplesoft_jira_problem_at_once(sandbox_env: Env) -> None:
    from mlconnector.sandbox.jira_sim import PRIORITIES, Workflow
    from mlconnector.sandbox.jira_sim import WorkflowTransition as T

    env = sandbox_env
    box = env.box
    box.jira.priorities = [p for p in PRIORITIES if p[1] != "Highest"]  # a site without "Highest"
    # Vendor invoices: Approved is in the workflow, but no transition leads into it.
    box.jira.workflows["10003"] = Workflow("Invoice Flow", "10000", (
        T("21", "Submit", ("10000",), "10001"), T("61", "Deny", ("10001",), "10005"),
        T("71", "Complete", ("10001", "10002"), "10006")))
    box.soap.nonempty_find_keys = {"VENDOR_CI": {"SETID"}}
    env.write_config(extra_ps='[peoplesoft.records.vendors]\ntransport = "ci"\nci = "VENDOR_CI"\n'
                              '[peoplesoft.records.purchase_orders]\ntransport = "ci"\nci = "PO_EXPRESS_CI"\n'
                              'get_keys = ["BUSINESS_UNIT", "PO_ID", "RECEIVER_ID"]\n',
                     extra_jira='[jira.fields]\nvendor = "Supplier"\n[jira.status_map.purchase_orders]\nC = "Closed"\n')
    proc = env.cli("ping", "--json", env={**env.env, "MLCONNECTOR_CACHE_DIR": str(env.dir / "cache")})
    assert proc.returncode == 3
    failed = _failed(proc)
    assert "jira.priority_by_amount" in failed["priority Highest (Purchase Order)"]["fix"]
    assert "not a status" in failed["status Closed (Purchase Order)"]["detail"]
    assert "jira.status_map.purchase_orders.C" in failed["status Closed (Purchase Order)"]["fix"]
    assert "cannot be reached" in failed["status Approved (Vendor Invoice)"]["detail"]
    assert "jira.fields.vendor" in failed["field Supplier"]["fix"]
    assert "RECEIVER_ID" in failed["keys CI_PO_EXPRESS_CI"]["detail"]
    assert "find_keys.SETID" in failed["find CI_VENDOR_CI"]["fix"]
    assert all(c["fix"] for c in failed.values())
    assert box.jira.writes == 0  # ping only reads
    print(env.cli("ping", env={**env.env, "MLCONNECTOR_CACHE_DIR": str(env.dir / "cache")}).stdout)


def test_ping_lists_every_jde_jira_problem_at_once(tmp_path, monkeypatch) -> None:
    import os
    import subprocess
    import sys

    from mlconnector.sandbox.jde_sim import start_jde_sandbox
    from mlconnector.sandbox.jira_sim import PRIORITIES

    with start_jde_sandbox() as box:
        box.jira.priorities = [p for p in PRIORITIES if p[1] != "Lowest"]
        cfg = tmp_path / "config.toml"
        cfg.write_text(box.config_text(tmp_path / "state.json", extra_jde=(
            '[jde.orchestration]\nname = "ORCH_NOPE"\n[jde.status_from_jde]\n90 = "Closed"\n40 = "In Progress"\n'
            '[jde.work_orders.columns]\ndescription = "DL99"\n')), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}
        env.update(box.env())
        proc = subprocess.run([sys.executable, "-m", "mlconnector", "ping", "--json", "--config", str(cfg)],
                              capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 3
        failed = _failed(proc)
        assert "DL99" in failed["table F4801 (work_orders)"]["detail"]
        assert "jde.orchestration.name" in failed["orchestration ORCH_NOPE"]["fix"]
        assert "jde.status_from_jde.90" in failed["status Closed (Work Order)"]["fix"]
        assert "jde.priority_map.5" in failed["priority Lowest (Work Order)"]["fix"]
        print(subprocess.run([sys.executable, "-m", "mlconnector", "ping", "--config", str(cfg)],
                             capture_output=True, text=True, env=env, timeout=120).stdout)


def test_the_first_pass_checks_everything_first_and_lists_every_problem(sandbox_env) -> None:  # noqa: ANN001
    """A misconfigured first pass stops before writing, with one message listing what ping would list."""
    env = sandbox_env
    text = env.config.read_text().replace("preflight = false\n", "")
    env.write_config(extra_jira='default_priority = "Urgent"\n[jira.status_map.purchase_orders]\nA = "Signed Off"\n')
    env.config.write_text(env.config.read_text().replace("preflight = false\n", ""))
    first = env.cli("sync", "peoplesoft-jira")
    assert first.returncode == 2, first.stdout + first.stderr
    assert "first pass" in first.stderr and "Urgent" in first.stderr and "Signed Off" in first.stderr
    assert "Traceback" not in first.stderr
    assert env.box.jira.writes == 0 and not env.state_file.exists()

    env.config.write_text(text)  # fixed: the first pass checks again, then syncs
    assert env.cli("sync", "peoplesoft-jira").returncode == 0
    assert env.box.jira.writes > 0
