"""`state export` / `state import` (moving an installation) and `state rebuild <pair>` (a lost state)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Env

from mlconnector.errors import EXIT_CONFIG, EXIT_OK, EXIT_STATE
from mlconnector.registry import PAIRS
from mlconnector.sandbox.run import JIRA_TOKEN, PS_PASSWORD
from mlconnector.state import State, run_lock

SYNC = ("sync", "peoplesoft-jira")
WRITES = ("created", "adopted", "updated", "transitioned", "commented", "posted", "failed", "queued")


def _comments(env: Env) -> int:
    return sum(len(issue.comments) for issue in env.box.jira._issues.values())


def _snapshot(state: State) -> dict[str, object]:
    return {"watermarks": state.watermarks, "sites": state.sites, "replay": state.replay,
            "keys": {k: state.entries(k) for k in state.kinds()}}


@pytest.fixture
def synced(sandbox_env: Env) -> Iterator[Env]:
    first = sandbox_env.cli(*SYNC)
    assert first.returncode == EXIT_OK, first.stderr
    yield sandbox_env


# -- export / import ------------------------------------------------------------------------------
def test_export_then_import_on_a_new_host_carries_everything_on(synced: Env, tmp_path: Path) -> None:
    env = synced
    before = _snapshot(State.load(env.state_file))
    out = tmp_path / "moved" / "acme-state.json"
    exported = env.cli("state", "export", "-o", str(out), "--audit")
    assert exported.returncode == EXIT_OK, exported.stderr
    assert "link(s)" in exported.stdout and f"state import {out}" in exported.stdout
    if os.name == "posix":
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["format"] == "mlconnector-state-export" and doc["audit_lines"]
    text = out.read_text(encoding="utf-8")
    assert PS_PASSWORD not in text and JIRA_TOKEN not in text  # no secret is ever exported

    # The new host: same sites, nothing there yet.
    audit_lines = env.audit_file.read_text(encoding="utf-8").splitlines()
    env.state_file.unlink()
    env.audit_file.unlink()
    imported = env.cli("state", "import", str(out), "--json")
    assert imported.returncode == EXIT_OK, imported.stderr
    info = json.loads(imported.stdout)
    assert info["links"]["purchase_orders"] == len(env.box.ps.keys("purchase_orders"))
    assert _snapshot(State.load(env.state_file)) == before
    trail = env.audit_file.read_text(encoding="utf-8").splitlines()
    assert trail[:len(audit_lines)] == audit_lines and json.loads(trail[-1])["action"] == "state_imported"

    writes = env.box.jira.writes
    again = json.loads(env.cli(*SYNC, "--json").stdout)
    assert again["exit_code"] == EXIT_OK
    assert not any(c[w] for c in again["counts"].values() for w in WRITES) and env.box.jira.writes == writes


def test_export_to_stdout_and_import_from_stdin(synced: Env) -> None:
    env = synced
    exported = env.cli("state", "export")
    assert exported.returncode == EXIT_OK and exported.stderr == ""
    assert json.loads(exported.stdout)["state"]["keys"]["vouchers"]
    env.state_file.unlink()
    proc = subprocess.run([sys.executable, "-m", "mlconnector", "state", "import", "-", "--config", str(env.config)],
                          input=exported.stdout, capture_output=True, text=True, env=env.env, timeout=60)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "Imported into" in proc.stdout
    assert State.load(env.state_file).keymap.count("vouchers") == len(env.box.ps.keys("vouchers"))


def test_import_refuses_to_overwrite_a_state_unless_replace(synced: Env, tmp_path: Path) -> None:
    env = synced
    out = tmp_path / "x.json"
    assert env.cli("state", "export", "-o", str(out)).returncode == EXIT_OK
    env.cli("state", "forget", "vouchers")
    held = env.state_file.read_bytes()
    refused = env.cli("state", "import", str(out))
    assert refused.returncode == EXIT_STATE and "--replace" in refused.stderr and "Traceback" not in refused.stderr
    assert env.state_file.read_bytes() == held
    replaced = env.cli("state", "import", str(out), "--replace")
    assert replaced.returncode == EXIT_OK, replaced.stderr
    assert "vouchers" in State.load(env.state_file).watermarks


def test_import_takes_the_run_lock(synced: Env, tmp_path: Path) -> None:
    env = synced
    out = tmp_path / "x.json"
    assert env.cli("state", "export", "-o", str(out)).returncode == EXIT_OK
    env.state_file.unlink()
    with run_lock(env.state_file):
        busy = env.cli("state", "import", str(out))
    assert busy.returncode == 4 and "lock" in busy.stderr
    assert not env.state_file.exists()


@pytest.mark.parametrize(("content", "says"), [
    ("not json at all", "not a state export"),
    ('{"hello": 1}', "neither a state export nor a state file"),
    ('{"format": "mlconnector-state-export", "format_version": 99, "state": {}}', "newer ml-connector"),
    ('{"format": "mlconnector-state-export", "format_version": 1, "state": {"schema": 7}}', "newer ml-connector"),
    ('{"format": "mlconnector-state-export", "format_version": 1, "state": {"schema": 1, "keys": [1]}}',
     "unexpected layout"),
])
def test_a_bad_file_is_refused_with_one_paragraph_and_nothing_changes(sandbox_env: Env, tmp_path: Path,
                                                                     content: str, says: str) -> None:
    env = sandbox_env
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    proc = env.cli("state", "import", str(bad))
    assert proc.returncode in (EXIT_CONFIG, EXIT_STATE), proc.stderr
    assert says in proc.stderr and "Nothing was changed" in proc.stderr and "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "mlconnector-import-" not in proc.stderr  # names the file, not a temp copy
    assert not env.state_file.exists()


def test_import_refuses_a_state_of_other_sites_unless_rebind(synced: Env, tmp_path: Path) -> None:
    env = synced
    out = tmp_path / "x.json"
    assert env.cli("state", "export", "-o", str(out)).returncode == EXIT_OK
    doc = json.loads(out.read_text(encoding="utf-8"))
    doc["state"]["sites"]["jira"] = "https://other.example.com project PROC"
    out.write_text(json.dumps(doc), encoding="utf-8")
    env.state_file.unlink()
    refused = env.cli("state", "import", str(out))
    assert refused.returncode == EXIT_STATE and "other.example.com" in refused.stderr and "--rebind" in refused.stderr
    assert not env.state_file.exists()
    rebound = env.cli("state", "import", str(out), "--rebind")
    assert rebound.returncode == EXIT_OK, rebound.stderr
    assert State.load(env.state_file).sites == env.load_config().sites()


def test_export_without_a_state_says_so(sandbox_env: Env) -> None:
    proc = sandbox_env.cli("state", "export")
    assert proc.returncode == EXIT_CONFIG and "no state to export" in proc.stderr and proc.stdout == ""


# -- rebuild --------------------------------------------------------------------------------------
def test_rebuild_after_a_lost_state_adopts_everything_and_creates_nothing(synced: Env) -> None:
    env = synced
    issues, comments = len(env.box.jira.all_issues()), _comments(env)
    env.state_file.unlink()  # the state is lost; the issues are still in Jira

    plan = env.cli("state", "rebuild", "peoplesoft-jira")
    assert plan.returncode == EXIT_OK, plan.stderr
    n_po = len(env.box.ps.keys("purchase_orders"))
    assert f"purchase_orders: read {n_po}, adopt {n_po}, create 0" in plan.stdout
    assert "Nothing was written" in plan.stdout and "state rebuild peoplesoft-jira --yes" in plan.stdout
    assert not env.state_file.exists()

    planned = json.loads(env.cli("state", "rebuild", "peoplesoft-jira", "--json").stdout)
    assert planned["dry_run"] and not any(c["created"] for c in planned["counts"].values())
    assert not env.state_file.exists()

    done = env.cli("state", "rebuild", "peoplesoft-jira", "--yes")
    assert done.returncode == EXIT_OK, done.stderr
    assert f"purchase_orders: read {n_po}, adopt {n_po}, create 0" in done.stdout
    assert len(env.box.jira.all_issues()) == issues and _comments(env) == comments  # nothing duplicated
    assert State.load(env.state_file).keymap.count("purchase_orders") == n_po

    writes = env.box.jira.writes
    again = json.loads(env.cli(*SYNC, "--json").stdout)
    assert not any(c[w] for c in again["counts"].values() for w in WRITES) and env.box.jira.writes == writes


def test_rebuild_forgets_only_its_pairs_watermarks_under_the_lock(synced: Env) -> None:
    env = synced
    state = State.load(env.state_file)
    state.watermarks["jde.work_orders"] = "2026-01-01T00:00:00+00:00"  # another pair's, kept
    state.save()
    with run_lock(env.state_file):
        busy = env.cli("state", "rebuild", "peoplesoft-jira", "--yes")
    assert busy.returncode == 4 and "Traceback" not in busy.stderr
    assert "purchase_orders" in State.load(env.state_file).watermarks  # nothing was forgotten
    done = json.loads(env.cli("state", "rebuild", "peoplesoft-jira", "--yes", "--json").stdout)
    assert "purchase_orders.comments" in done["forgotten_watermarks"]
    assert "jde.work_orders" not in done["forgotten_watermarks"]
    assert State.load(env.state_file).watermarks["jde.work_orders"] == "2026-01-01T00:00:00+00:00"


def test_rebuild_of_an_unknown_or_unconfigured_pair_is_a_usage_error(sandbox_env: Env) -> None:
    unknown = sandbox_env.cli("state", "rebuild", "sap-jira")
    assert unknown.returncode == EXIT_CONFIG and "peoplesoft-jira" in unknown.stderr
    other = sandbox_env.cli("state", "rebuild", "jde-jira")
    assert other.returncode == EXIT_CONFIG and "[jde]" in other.stderr and "Traceback" not in other.stderr


def test_every_watermark_a_pass_keeps_belongs_to_its_pair(synced: Env) -> None:
    names = State.load(synced.state_file).watermarks
    assert names and all(PAIRS["peoplesoft-jira"].owns_watermark(n) for n in names)
    assert not any(PAIRS["jde-jira"].owns_watermark(n) for n in names)
    assert all(PAIRS["jde-jira"].owns_watermark(n) for n in ("jde.work_orders", "jde.change_orders"))
    # The back-flow cursor over Jira's changes is kept: forgetting it would skip the changes made since.
    assert not PAIRS["jde-jira"].owns_watermark("jde-jira.backflow")


def test_rebuild_of_jde_jira_adopts_every_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlconnector.sandbox.jde_sim import start_jde_sandbox

    box = start_jde_sandbox()
    try:
        for k in list(os.environ):
            if k.startswith("MLCONNECTOR_"):
                monkeypatch.delenv(k)
        state_file, config = tmp_path / "state.json", tmp_path / "jde.toml"
        config.write_text(box.config_text(state_file), encoding="utf-8")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}, **box.env(),
               "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "mlconnector", *args, "--config", str(config)],
                                  capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)

        assert cli("sync", "jde-jira").returncode == EXIT_OK
        backflow = State.load(state_file).watermarks["jde-jira.backflow"]
        issues = len(box.jira.all_issues())
        state = State.load(state_file)
        state.keymap = type(state.keymap)()  # the links are lost, the back-flow cursor is not
        state.save()
        plan = json.loads(cli("state", "rebuild", "jde-jira", "--json").stdout)
        assert sum(c["adopted"] for c in plan["counts"].values()) == issues
        assert not any(c["created"] for c in plan["counts"].values())
        done = cli("state", "rebuild", "jde-jira", "--yes")
        assert done.returncode == EXIT_OK, done.stderr
        assert "create 0" in done.stdout and len(box.jira.all_issues()) == issues
        assert State.load(state_file).watermarks["jde-jira.backflow"] >= backflow
        again = json.loads(cli("sync", "jde-jira", "--json").stdout)
        assert not any(c[w] for c in again["counts"].values() for w in WRITES)
    finally:
        box.stop()


def test_rebuild_of_procurify_peoplesoft_adopts_every_purchase_order(tmp_path: Path) -> None:
    from mlconnector.sandbox.procurify_run import start_procurify_sandbox

    box = start_procurify_sandbox(requisitions=4)
    try:
        state_file, config = tmp_path / "state.json", tmp_path / "procurify.toml"
        config.write_text(box.config_text(state_file), encoding="utf-8")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}, **box.env(),
               "MLCONNECTOR_CACHE_DIR": str(tmp_path / "cache"),
               "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "mlconnector", *args, "--config", str(config)],
                                  capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)

        first = cli("sync", "procurify-peoplesoft")
        assert first.returncode == EXIT_OK, first.stderr
        pos = len(box.purchasing.pos)
        state_file.unlink()
        plan = cli("state", "rebuild", "procurify-peoplesoft")
        assert plan.returncode == EXIT_OK, plan.stderr
        assert f"adopt {pos}, create 0" in plan.stdout, plan.stdout
        done = cli("state", "rebuild", "procurify-peoplesoft", "--yes")
        assert done.returncode == EXIT_OK, done.stderr
        assert len(box.purchasing.pos) == pos
        calls = dict(box.purchasing.calls)
        again = json.loads(cli("sync", "procurify-peoplesoft", "--json").stdout)
        assert not any(c[w] for c in again["counts"].values() for w in WRITES)
        assert box.purchasing.calls.get("CI_PO_EXPRESS_C", 0) == calls.get("CI_PO_EXPRESS_C", 0)
        assert box.purchasing.calls.get("CI_PO_EXPRESS_UD", 0) == calls.get("CI_PO_EXPRESS_UD", 0)
    finally:
        box.stop()
