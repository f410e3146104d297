"""Crash safety of the real CLI: SIGKILL at bad moments, concurrent runs, unreadable state files.

A cron pass can die at any instant (OOM killer, reboot, a timeout wrapper). The promises checked
here are the ones in the docstring of mlconnector/pairs/peoplesoft_jira.py: no issue is ever
created twice, no comment is posted twice, nothing is lost, and the state file is always loadable.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from conftest import Env

from mlconnector.errors import EXIT_LOCKED, EXIT_OK, EXIT_STATE
from mlconnector.state import State

BULK = r"/rest/api/3/issue/bulk$"
PARENT_KIND = {"po_comments": ("purchase_orders", "psft-po", "PO_ID"),
               "req_comments": ("requisitions", "psft-req", "REQ_ID"),
               "voucher_comments": ("vouchers", "psft-voucher", "VOUCHER_ID")}


# -- helpers ----------------------------------------------------------------------------------------
def _start(env: Env, *args: str) -> subprocess.Popen[bytes]:
    """Start `python -m mlconnector ARGS --config <config>` without waiting, as Env.cli would run it.

    Its output goes to <dir>/last-run.out, for the message of a failing assertion."""
    cmd = [sys.executable, "-m", "mlconnector", *args, "--config", str(env.config)]
    with (env.dir / "last-run.out").open("wb") as out:
        return subprocess.Popen(cmd, env=env.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _output(env: Env) -> str:
    return (env.dir / "last-run.out").read_text(errors="replace")


def _wait_for(cond: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
              ) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the pass exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def _kill(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=10)


def _issue_count(env: Env) -> int:
    return len(env.box.jira.all_issues())


def _assert_one_issue_per_record(env: Env) -> None:
    by_label = env.issues_by_label()
    dupes = {label: keys for label, keys in by_label.items() if len(keys) != 1}
    assert dupes == {}, f"duplicate issues: {dupes}"
    assert set(by_label) == env.source_labels()


def _assert_state_clean(env: Env) -> State:
    state = State.load(env.state_file)
    pending = {kind: state.pending(kind) for kind in state.kinds() if state.pending(kind)}
    assert pending == {}, f"creates still marked pending: {pending}"
    return state


def _assert_each_comment_once(env: Env) -> None:
    """Every PeopleSoft comment row is in its issue exactly once (found by its reference marker)."""
    issues = {label: issue for issue in env.box.jira.all_issues() for label in issue["fields"].get("labels", [])}
    checked = 0
    for ckind, (_parent, label_prefix, id_col) in PARENT_KIND.items():
        short = label_prefix[len("psft-"):]
        for row in env.box.ps.rows(ckind):
            bu, pid, cid = row["BUSINESS_UNIT"], row[id_col], row["COMMENT_ID"]
            issue = issues[f"{label_prefix}-{bu}-{pid}"]
            ref = f"psft:{short}:{bu}/{pid}#{cid}"
            hits = [c["text"] for c in issue["comments"] if ref in c["text"]]
            assert len(hits) == 1, f"{ref} appears {len(hits)} times in {issue['key']}"
            assert row["COMMENTS"].strip().splitlines()[0] in hits[0]
            checked += 1
    assert checked > 0


# -- 1. killed between the create and the state save ------------------------------------------------
def test_kill_after_bulk_create_before_answer_creates_no_duplicates(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    # Jira creates the issues, then sits on the answer: the client never learns the new keys.
    hang = box.jira_server.faults.add(kind="hang_after", path=BULK, method="POST", count=1, delay=30)
    proc = _start(env, "sync", "peoplesoft-jira")
    try:
        # Jira has created every issue of the bulk (not: the first of them; they are made one after another).
        _wait_for(hang.reached.is_set, 20, "Jira to have the created issues", proc)
        created_before_kill = _issue_count(env)
        assert _kill(proc) == -signal.SIGKILL
    finally:
        _kill(proc)
    box.jira_server.faults.clear()

    # The pending marks were on disk before the create was sent.
    state = State.load(env.state_file)
    assert sum(len(state.pending(k)) for k in state.kinds()) >= created_before_kill

    rerun = env.cli("sync", "peoplesoft-jira", "--json")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["queue_size"] == 0
    _assert_one_issue_per_record(env)
    _assert_state_clean(env)
    audit = [json.loads(x) for x in env.audit_file.read_text().splitlines()]
    adopted = [x for x in audit if x["action"] == "resolved_pending" and x.get("issue")]
    assert len(adopted) == created_before_kill


# -- 1b. killed after Jira moved an issue, before the state save ------------------------------------
def test_kill_after_a_transition_then_the_source_moves_back_still_moves_the_issue_back(sandbox_env: Env) -> None:
    from mlconnector.mapping import record_label

    env = sandbox_env
    box = env.box
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    row = next(r for r in box.ps.rows("purchase_orders") if r["PO_STATUS"] == "A")
    key = (row["BUSINESS_UNIT"], row["PO_ID"])
    label = record_label("purchase_orders", "|".join(key))

    def jira_status() -> str:
        issue = next(i for i in box.jira.all_issues() if label in i["fields"].get("labels", []))
        return str(issue["fields"]["status"])

    assert jira_status() == "Approved"
    box.ps.touch("purchase_orders", key, PO_STATUS="PA")
    # Jira moves the issue, then sits on the answer: the pass dies before it can record the move.
    box.jira_server.faults.add(kind="hang_after", path=r"/issue/PROC-\d+/transitions$", method="POST", count=1,
                               delay=30)
    proc = _start(env, "sync", "peoplesoft-jira")
    try:
        _wait_for(lambda: jira_status() == "Pending Approval", 20, "Jira to move the issue", proc)
        assert _kill(proc) == -signal.SIGKILL
    finally:
        _kill(proc)
    box.jira_server.faults.clear()
    # The buyer undoes the change: PeopleSoft is back where the last saved state said it was.
    box.ps.touch("purchase_orders", key, PO_STATUS="A")
    rerun = env.cli("sync", "peoplesoft-jira", "--json")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert jira_status() == "Approved"


# -- 2. killed at random instants -----------------------------------------------------------------
def _make_work(env: Env, rng: random.Random, trial: int) -> None:
    ps = env.box.ps
    for kind, status_col, statuses in (("purchase_orders", "PO_STATUS", ("A", "PA", "D", "C")),
                                       ("requisitions", "REQ_STATUS", ("P", "A", "C")),
                                       ("vouchers", "APPR_STATUS", ("P", "A", "D"))):
        keys = ps.keys(kind)
        for key in rng.sample(keys, 2):
            ps.touch(kind, key, **{status_col: rng.choice(statuses)})
        ps.add_comment(kind, rng.choice(keys), f"Trial {trial} note on {kind} ({rng.random():.6f}).", "KILLTEST")
    po = rng.choice(ps.keys("purchase_orders"))
    ps.touch("purchase_orders", po, DESCR254=f"Changed in trial {trial}")


def test_killed_at_random_instants_never_duplicates_or_loses(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    box.jira_server.latency = 0.01  # widens the windows between a write and the state save
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    trials: list[tuple[float, int]] = []
    for trial in range(6):
        if trial:
            _make_work(env, rng, trial)
        before = len(box.jira_server.log)
        # On a busy machine every pass may finish before its random instant: the last trial then kills the pass
        # while Jira holds the answer to an edit it has made (synchronised on the request, not on a clock).
        sure = trial == 5 and all(rc != -signal.SIGKILL for _, rc in trials)
        hold = box.jira_server.faults.add(kind="hang_after", path=r"/rest/api/3/issue/[^/]+$", method="PUT",
                                          count=1, delay=30) if sure else None
        proc = _start(env, "sync", "peoplesoft-jira")
        try:
            if hold is not None:
                _wait_for(lambda h=hold: h.count == 0, 30, "Jira to hold the answer to an edit", proc)
                delay = -1.0
            else:
                # Count from the first request so the kill lands inside the pass, not in interpreter start-up.
                _wait_for(lambda b=before, p=proc: len(box.jira_server.log) > b or p.poll() is not None, 20,
                          "the pass to start talking to Jira")
                delay = rng.uniform(0.05, 1.0)
                time.sleep(delay)
            rc = _kill(proc)
        finally:
            _kill(proc)
            box.jira_server.faults.clear()
        trials.append((round(delay, 3), rc))
        assert rc in (EXIT_OK, -signal.SIGKILL), f"seed {seed}: trial {trial} exited {rc} ({trials}): {_output(env)}"
        State.load(env.state_file)  # never half a file
    assert any(rc == -signal.SIGKILL for _, rc in trials), f"seed {seed}: no pass was killed ({trials})"

    box.jira_server.latency = 0.0
    first = env.cli("sync", "peoplesoft-jira", "--json")
    assert first.returncode == EXIT_OK, f"seed {seed} {trials}: {first.stdout} {first.stderr}"
    writes = box.jira.writes
    last = env.cli("sync", "peoplesoft-jira", "--json")
    assert last.returncode == EXIT_OK, f"seed {seed} {trials}: {last.stdout} {last.stderr}"
    assert box.jira.writes == writes, f"seed {seed} {trials}: the settling pass wrote again"
    assert json.loads(last.stdout)["queue_size"] == 0

    _assert_one_issue_per_record(env)
    _assert_each_comment_once(env)
    state = _assert_state_clean(env)
    assert state.replay == []
    # Jira reflects the latest PeopleSoft status of every PO after all the kills.
    status_names = {"A": "Approved", "PA": "Pending Approval"}
    for row in box.ps.rows("purchase_orders"):
        want = status_names.get(row["PO_STATUS"])
        if want:
            [issue] = box.jira.find_by_label(f"psft-po-{row['BUSINESS_UNIT']}-{row['PO_ID']}")
            assert issue["fields"]["status"] == want, f"seed {seed}: {issue['key']}"


# -- 3. a second concurrent run ---------------------------------------------------------------------
def test_second_concurrent_run_exits_with_lock_code_promptly(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    hang = box.jira_server.faults.add(kind="hang_after", path=BULK, method="POST", count=1, delay=30)
    first = _start(env, "sync", "peoplesoft-jira")
    try:
        # Inside its run, its bulk create done (Jira counts the write once the last issue is made): any write
        # from now on would be the locked run's.
        _wait_for(hang.reached.is_set, 20, "the first pass to be inside its run", first)
        writes = box.jira.writes
        started = time.monotonic()
        second = env.cli("sync", "peoplesoft-jira", timeout=30)
        took = time.monotonic() - started
        assert second.returncode == EXIT_LOCKED, second.stderr
        assert took < 10, f"the locked run took {took:.1f} s to give up"
        assert "lock" in second.stderr.lower() and "Another ml-connector run" in second.stderr
        assert "Traceback" not in second.stderr
        assert box.jira.writes == writes  # the locked run did nothing
        assert first.poll() is None  # and did not disturb the first one
    finally:
        _kill(first)
    box.jira_server.faults.clear()

    later = env.cli("sync", "peoplesoft-jira")
    assert later.returncode == EXIT_OK, later.stderr
    _assert_one_issue_per_record(env)
    _assert_state_clean(env)


# -- 4. unreadable state files --------------------------------------------------------------------
def _assert_refused(env: Env, content: bytes, wording: str) -> None:
    env.state_file.write_bytes(content)
    out = env.cli("sync", "peoplesoft-jira")
    assert out.returncode == EXIT_STATE, out.stderr
    assert str(env.state_file) in out.stderr
    assert wording in out.stderr
    assert "Traceback" not in out.stderr
    assert env.state_file.read_bytes() == content, "the state file was changed"
    assert env.box.jira.all_issues() == [] and env.box.jira.writes == 0


def test_corrupt_state_file_stops_the_pass_and_is_left_alone(sandbox_env: Env) -> None:
    _assert_refused(sandbox_env, b'{"schema": 1, "keys": {\x00garbage \xff\xfe', "corrupt")


def test_state_file_from_newer_version_stops_the_pass_and_is_left_alone(sandbox_env: Env) -> None:
    content = json.dumps({"schema": 99, "keys": {}, "watermarks": {}}).encode()
    _assert_refused(sandbox_env, content, "newer ml-connector")
