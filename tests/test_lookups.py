"""Creates that can never duplicate: lookups before every create, settle time under search lag, state loss.

The promises (sync/links.py, jira/sink.py): a pass killed after Jira created issues and rerun at once,
while Jira's search still lags, creates nothing twice; a lost, deleted or older state file leads to
adoption of the issues already in Jira, never to second issues; an issue that carries a record's label
but names another record in its key property is a conflict, left alone and queued.
"""

from __future__ import annotations

import json
import shutil
import signal

import pytest
from conftest import Env
from test_crash_safety import (
    BULK,
    _assert_each_comment_once,
    _assert_one_issue_per_record,
    _assert_state_clean,
    _issue_count,
    _kill,
    _start,
    _wait_for,
)

from mlconnector.errors import EXIT_OK, EXIT_RECORDS_FAILED
from mlconnector.jira.sink import KEY_PROPERTY

SYNC = ("sync", "peoplesoft-jira")


def _lagging(env: Env, lag: float) -> None:
    """Make the sandbox's Jira search trail its writes by ``lag`` seconds; the config's settle time follows."""
    env.box.jira.search_lag = lag
    env.box.search_lag = lag
    env.write_config()


def _audit(env: Env) -> list[dict]:
    return [json.loads(x) for x in env.audit_file.read_text().splitlines()]


@pytest.mark.parametrize("lag", [2.0, 5.0])
def test_killed_after_jira_created_then_rerun_at_once_under_search_lag_duplicates_nothing(
        sandbox_env: Env, lag: float) -> None:
    env = sandbox_env
    _lagging(env, lag)
    # Jira creates the issues, then sits on the answer: the client never learns the new keys.
    hang = env.box.jira_server.faults.add(kind="hang_after", path=BULK, method="POST", count=1, delay=30)
    proc = _start(env, *SYNC)
    try:
        # Jira has created every issue of the bulk (not: the first of them; they are made one after another).
        _wait_for(hang.reached.is_set, 20, "Jira to have the created issues", proc)
        created_before_kill = _issue_count(env)
        assert _kill(proc) == -signal.SIGKILL
    finally:
        _kill(proc)
    env.box.jira_server.faults.clear()

    # At once, while the search does not show those issues yet.
    assert env.box.jira_server.requests  # (the sandbox is up)
    rerun = env.cli(*SYNC, "--json")
    assert rerun.returncode == EXIT_OK, rerun.stdout + rerun.stderr
    assert json.loads(rerun.stdout)["queue_size"] == 0
    _assert_one_issue_per_record(env)
    _assert_state_clean(env)
    adopted = [x for x in _audit(env) if x["action"] == "resolved_pending" and x.get("issue")]
    assert len(adopted) == created_before_kill


def test_deleted_state_adopts_every_issue_and_duplicates_nothing(sandbox_env: Env) -> None:
    env = sandbox_env
    first = env.cli(*SYNC, "--json")
    assert first.returncode == EXIT_OK, first.stderr
    issues = _issue_count(env)
    env.state_file.unlink()

    again = env.cli(*SYNC, "--json")
    assert again.returncode == EXIT_OK, again.stdout + again.stderr
    counts = json.loads(again.stdout)["counts"]
    assert sum(c["created"] for c in counts.values()) == 0
    assert sum(c["adopted"] for c in counts.values()) == issues
    assert _issue_count(env) == issues
    _assert_one_issue_per_record(env)
    _assert_each_comment_once(env)  # comments of adopted issues are looked up, not posted again

    writes = env.box.jira.writes
    quiet = env.cli(*SYNC, "--json")
    assert quiet.returncode == EXIT_OK and env.box.jira.writes == writes


def test_state_restored_from_an_older_copy_duplicates_nothing_and_catches_up(sandbox_env: Env) -> None:
    env = sandbox_env
    assert env.cli(*SYNC).returncode == EXIT_OK
    backup = env.dir / "state-backup.json"
    shutil.copy(env.state_file, backup)

    ps = env.box.ps
    bu = ps.keys("purchase_orders")[0][0]
    ps.add("purchase_orders", {"BUSINESS_UNIT": bu, "PO_ID": "9000000001", "PO_STATUS": "A", "PO_AMT": "10.00",
                               "CURRENCY_CD": "USD", "DESCR254": "Ordered after the backup"})
    changed = ps.keys("purchase_orders")[1]
    ps.touch("purchase_orders", changed, DESCR254="Changed after the backup")
    assert env.cli(*SYNC).returncode == EXIT_OK
    issues = _issue_count(env)

    shutil.copy(backup, env.state_file)  # the restore: the new PO's link and the change are unknown to it
    ps.touch("purchase_orders", changed, DESCR254="Changed once more after the restore")
    restored = env.cli(*SYNC, "--json")
    assert restored.returncode == EXIT_OK, restored.stdout + restored.stderr
    assert _issue_count(env) == issues
    _assert_one_issue_per_record(env)
    [issue] = env.box.jira.find_by_label(f"psft-po-{changed[0]}-{changed[1]}")
    assert "Changed once more after the restore" in json.dumps(issue["fields"]["summary"])


def test_an_issue_carrying_our_label_for_another_record_is_left_alone_and_queued(sandbox_env: Env) -> None:
    env = sandbox_env
    assert env.cli(*SYNC).returncode == EXIT_OK
    bu, po = env.box.ps.keys("purchase_orders")[0]
    [issue] = env.box.jira.find_by_label(f"psft-po-{bu}-{po}")
    # As if the label had been copied by hand onto an issue that names another record.
    env.box.jira._find(issue["key"]).properties[KEY_PROPERTY] = {"entity": "purchase_orders",
                                                                  "key": [bu, "SOMETHING-ELSE"]}
    before = env.box.jira.issue(issue["key"])
    env.state_file.unlink()

    run = env.cli(*SYNC, "--json")
    assert run.returncode == EXIT_RECORDS_FAILED, run.stdout + run.stderr
    failures = json.loads(run.stdout)["failures"]
    [conflict] = [f for f in failures if f["key"] == f"{bu}|{po}" and f["what"] == "record"]
    assert issue["key"] in conflict["error"] and KEY_PROPERTY in conflict["error"]
    assert len(env.box.jira.find_by_label(f"psft-po-{bu}-{po}")) == 1  # no second issue
    assert env.box.jira.issue(issue["key"])["fields"] == before["fields"]  # and that one untouched
    queue = json.loads(env.cli("replay", "list", "--json").stdout)
    assert any(i["key"] == f"{bu}|{po}" for i in queue)


# -- the state follows the installation, and only its own sites -----------------------------------
def _default_state_config(env: Env, folder) -> tuple:
    """A config without state_file (the default location), in ``folder``; XDG_STATE_HOME in the run's env."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line for line in env.box.config_text(None).splitlines() if not line.startswith("state_file"))
    cfg = folder / "acme.toml"
    cfg.write_text(text.replace('instance = "sandbox"', 'instance = "acme"'), encoding="utf-8")
    run_env = {**env.env, "XDG_STATE_HOME": str(env.dir / "xdg-state")}
    return cfg, run_env


def _run(env: Env, cfg, run_env, *args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mlconnector", *args, "--config", str(cfg)], capture_output=True,
                          text=True, env=run_env, timeout=120, stdin=subprocess.DEVNULL)


def test_a_config_moved_to_another_folder_keeps_its_state(sandbox_env: Env) -> None:
    env = sandbox_env
    cfg, run_env = _default_state_config(env, env.dir / "etc-a")
    assert _run(env, cfg, run_env, *SYNC).returncode == EXIT_OK
    moved = env.dir / "etc-b" / "acme.toml"
    moved.parent.mkdir()
    cfg.rename(moved)
    writes, issues = env.box.jira.writes, _issue_count(env)
    again = _run(env, moved, run_env, *SYNC, "--json")
    assert again.returncode == EXIT_OK, again.stdout + again.stderr
    assert env.box.jira.writes == writes and _issue_count(env) == issues  # found its state: nothing to do
    assert (env.dir / "xdg-state" / "mlconnector" / "acme.json").exists()


def test_a_state_file_at_the_path_earlier_versions_used_is_moved_and_kept(sandbox_env: Env) -> None:
    import hashlib

    env = sandbox_env
    cfg, run_env = _default_state_config(env, env.dir / "etc")
    assert _run(env, cfg, run_env, *SYNC).returncode == EXIT_OK
    state_dir = env.dir / "xdg-state" / "mlconnector"
    digest = hashlib.sha256(str(cfg.resolve()).encode()).hexdigest()[:8]
    (state_dir / "acme.json").rename(state_dir / f"acme-{digest}.json")  # as an earlier version left it
    (state_dir / "acme.audit.jsonl").rename(state_dir / f"acme-{digest}.audit.jsonl")
    writes = env.box.jira.writes
    assert _run(env, cfg, run_env, *SYNC).returncode == EXIT_OK
    assert env.box.jira.writes == writes
    assert (state_dir / "acme.json").exists() and not (state_dir / f"acme-{digest}.json").exists()
    assert (state_dir / "acme.audit.jsonl").exists()


def test_a_state_of_other_sites_is_refused_until_rebound_on_purpose(sandbox_env: Env) -> None:
    env = sandbox_env
    assert env.cli(*SYNC).returncode == EXIT_OK
    before = env.state_file.read_bytes()
    # The same state file, a configuration that names another Jira site (here: another name for the sandbox).
    text = env.config.read_text().replace(f'site = "{env.box.jira_server.url}"',
                                          f'site = "{env.box.jira_server.url.replace("127.0.0.1", "localhost")}"')
    env.config.write_text(text)
    refused = env.cli(*SYNC)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "belongs to other sites" in refused.stderr and "state rebind" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert env.state_file.read_bytes() == before

    rebound = env.cli("state", "rebind")
    assert rebound.returncode == 0 and "localhost" in rebound.stdout
    writes = env.box.jira.writes
    assert env.cli(*SYNC).returncode == EXIT_OK
    assert env.box.jira.writes == writes


def test_a_pending_comment_is_not_mistaken_for_one_whose_marker_extends_it(sandbox_env: Env) -> None:
    # Comment "#1" left pending must not be found inside the marker of "#10": it would never reach Jira.
    from mlconnector.state import State

    env = sandbox_env
    assert env.cli(*SYNC).returncode == EXIT_OK
    bu, po = env.box.ps.keys("purchase_orders")[0]
    row = env.box.ps.add_comment("purchase_orders", (bu, po), "Receiving dock changed to bay 4.")
    cid = str(row["COMMENT_ID"])
    [issue] = env.box.jira.find_by_label(f"psft-po-{bu}-{po}")
    env.box.jira.comment_as_user(issue["key"], f"An older note. [psft:po:{bu}/{po}#{cid}0]")
    state = State.load(env.state_file)
    state.entry("purchase_orders", f"{bu}|{po}").setdefault("comments", {})[cid] = "pending"
    state.dirty = True
    state.save()

    assert env.cli(*SYNC).returncode == EXIT_OK
    texts = [c["text"] for c in env.box.jira.issue(issue["key"])["comments"]]
    assert sum(f"[psft:po:{bu}/{po}#{cid}]" in t for t in texts) == 1, texts


def test_a_pass_deadline_stops_cleanly_and_the_next_pass_goes_on(sandbox_env: Env) -> None:
    env = sandbox_env
    env.box.jira_server.latency = 0.05  # the pass's set-up alone outlasts the deadline below
    env.config.write_text("pass_deadline_minutes = 0.001\n" + env.config.read_text())
    stopped = env.cli(*SYNC, "--json")
    assert stopped.returncode == EXIT_OK, stopped.stdout + stopped.stderr
    out = json.loads(stopped.stdout)
    assert "deadline" in (out["stopped"] or "") and out["fatal"] is None
    env.box.jira_server.latency = 0.0
    env.config.write_text(env.config.read_text().replace("pass_deadline_minutes = 0.001\n", ""))
    assert env.cli(*SYNC).returncode == EXIT_OK
    _assert_one_issue_per_record(env)
    _assert_state_clean(env)
