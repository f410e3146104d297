"""`sync jde-jira` end to end against the AIS and Jira simulators on 127.0.0.1: the real CLI for the
promises users rely on, the in-process runner where a test needs many passes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import sandbox_environ
from jira_openapi import load_checker

from mlconnector import config as config_mod
from mlconnector.errors import EXIT_OK, EXIT_RECORDS_FAILED, EXIT_UNREACHABLE
from mlconnector.runner import sync_jde_jira
from mlconnector.sandbox.jde_sim import JdeSandbox, start_jde_sandbox
from mlconnector.state import State

ORCH = r"/jderest/v3/orchestrator/"


@dataclass
class JdeEnv:
    box: JdeSandbox
    dir: Path
    checker: Any

    @property
    def config(self) -> Path:
        return self.dir / "jde.toml"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}
        env.update(self.box.env())
        # A headless cron host: secrets come from the environment and no keyring backend is probed.
        env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
        return env

    def write_config(self, extra_jde: str = "", page_size: int = 5) -> None:
        text = self.box.config_text(self.state_file, extra_jde=extra_jde)
        self.config.write_text(text.replace("max_page_size = 5\n", f"max_page_size = {page_size}\n"),
                               encoding="utf-8")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlconnector", *args, "--config", str(self.config)],
                              capture_output=True, text=True, env=self.env, timeout=120, stdin=subprocess.DEVNULL)

    def sync(self) -> Any:
        """One pass in-process (the same runner the CLI calls)."""
        return sync_jde_jira(config_mod.load(self.config))

    def issue_for(self, order: int, dcto: str = "WO") -> dict[str, Any]:
        prefix = "jde-wo" if dcto == "WO" else "jde-eco"
        [issue] = self.box.jira.find_by_label(f"{prefix}-{order}-{dcto}")
        return issue

    def labels_per_order(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for issue in self.box.jira.all_issues():
            for label in issue["fields"]["labels"]:
                if label.count("-") == 3 and label.startswith("jde-"):
                    out.setdefault(label, []).append(issue["key"])
        return out

    def source_labels(self) -> set[str]:
        return {f"{'jde-wo' if r['DCTO'] == 'WO' else 'jde-eco'}-{r['DOCO']}-{r['DCTO']}" for r in self.box.jde.rows()}


@pytest.fixture
def jde_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JdeEnv]:
    checker = load_checker()
    validator = checker.fresh() if checker is not None else None
    box = start_jde_sandbox(request_validator=validator)
    sandbox_environ(monkeypatch, box.env())
    env = JdeEnv(box, tmp_path, validator)
    env.write_config()
    try:
        yield env
    finally:
        box.stop()


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def _jira_non_get(env: JdeEnv) -> int:
    return sum(n for k, n in env.box.jira.calls.items() if not k.startswith("GET") and "search/jql" not in k)


def _assert_one_issue_per_order(env: JdeEnv) -> None:
    by_label = env.labels_per_order()
    assert {k: v for k, v in by_label.items() if len(v) != 1} == {}
    assert set(by_label) == env.source_labels()


# -- forward flow -----------------------------------------------------------------------------------
def test_work_orders_become_issues_and_second_pass_writes_nothing(jde_env: JdeEnv) -> None:
    env = jde_env
    first = env.cli("sync", "jde-jira", "--json")
    assert first.returncode == EXIT_OK, first.stderr
    out = _json(first)
    assert out["counts"]["work_orders"]["created"] == 12
    assert out["counts"]["change_orders"]["created"] == 4
    _assert_one_issue_per_order(env)

    wo = next(r for r in env.box.jde.rows(order_type="WO") if r["ANP"] == 6001)
    issue = env.issue_for(wo["DOCO"])
    f = issue["fields"]
    assert f["summary"] == f"Work order {wo['DOCO']} (WO): {wo['DL01']}"
    assert f["issuetype"] == "Work Order"
    assert f["status"] == {"10": "To Do", "40": "In Progress", "45": "In Progress"}[wo["SRST"]]
    assert f["assignee"] == "user-floor-1"  # ANP 6001 via [jde.assignee_map]
    assert f["priority"] == {"1": "Highest", "2": "High", "3": "Medium", "4": "Low"}[wo["PRTS"]]
    from mlconnector.jde.julian import julian_to_date

    assert f["duedate"] == julian_to_date(wo["DRQJ"]).isoformat()  # requested date -> due date
    assert f["customfield_10050"] == f"JDE-WO-{wo['DOCO']}"  # ERP Key
    eco = env.box.jde.rows(order_type="EN")[0]
    assert env.issue_for(eco["DOCO"], "EN")["fields"]["issuetype"] == "Change Order"

    writes, non_get, calls = env.box.jira.writes, _jira_non_get(env), len(env.box.jde.calls)
    second = env.cli("sync", "jde-jira", "--json")
    assert second.returncode == EXIT_OK, second.stderr
    assert env.box.jira.writes == writes and _jira_non_get(env) == non_get
    assert len(env.box.jde.calls) == calls == 0  # nothing posted back either: no one changed a status
    assert env.box.jde.logins == env.box.jde.logouts == 2  # one AIS session per pass, closed at the end
    if env.checker is not None:
        assert env.checker.violations == []


def test_changed_work_order_updates_its_issue(jde_env: JdeEnv) -> None:
    env = jde_env
    assert env.sync().exit_code == EXIT_OK
    wo = env.box.jde.rows(order_type="WO")[0]
    env.box.jde.touch(wo["DOCO"], DL01="Rebuild pump, new seals", SRST="90")
    result = env.sync()
    c = result.counts["work_orders"]
    assert (c.updated, c.transitioned, c.created) == (1, 1, 0)
    issue = env.issue_for(wo["DOCO"])
    assert issue["fields"]["summary"].endswith("Rebuild pump, new seals")
    assert issue["fields"]["status"] == "Done"
    # The connector's own transition is not an ERP change: nothing goes back to JDE.
    assert env.sync().counts["jira_status"].posted == 0
    assert env.box.jde.calls == []


def test_paging_over_several_pages_reads_every_row(jde_env: JdeEnv) -> None:
    env = jde_env
    env.box.jde.add_orders(23)  # 39 orders at max_page_size = 5: eight pages in one window
    result = env.sync()
    assert result.exit_code == EXIT_OK
    assert result.counts["work_orders"].read == 35 and result.counts["work_orders"].created == 35
    _assert_one_issue_per_order(env)
    assert env.box.jde_server.requests("POST", r"/dataservice/next$").__len__() >= 6


def test_token_expiry_mid_pass_is_survived(jde_env: JdeEnv) -> None:
    env = jde_env
    # The AIS session dies after the second data request, in the middle of paging work orders.
    env.box.jde.expire_tokens_after_requests = 2
    result = env.sync()
    assert result.exit_code == EXIT_OK, result.failures
    _assert_one_issue_per_order(env)
    assert [r.status for r in env.box.jde_server.requests(path="/dataservice")].count(444) == 1
    assert env.box.jde.logins == 2  # exactly one re-login


def test_expired_result_set_restarts_the_window_not_the_pass(jde_env: JdeEnv) -> None:
    env = jde_env
    env.box.jde.expire_result_sets_next = 1
    result = env.sync()
    assert result.exit_code == EXIT_OK
    _assert_one_issue_per_order(env)
    assert 500 in [r.status for r in env.box.jde_server.requests(path=r"/dataservice/next$")]


# -- back-flow --------------------------------------------------------------------------------------
def test_blocked_in_jira_posts_one_on_hold_call_and_rerun_posts_none(jde_env: JdeEnv) -> None:
    env = jde_env
    assert env.sync().exit_code == EXIT_OK
    wo = env.box.jde.rows(order_type="WO")[0]
    issue = env.issue_for(wo["DOCO"])
    env.box.jira.transition_as_user(issue["key"], "Blocked")

    out = env.cli("sync", "jde-jira", "--json")
    assert out.returncode == EXIT_OK, out.stderr
    assert _json(out)["counts"]["jira_status"]["posted"] == 1
    [call] = env.box.jde.calls
    assert call.name == "ML_JIRA_STATUS_UPDATE"
    assert call.inputs["OrderNumber"] == str(wo["DOCO"]) and call.inputs["OrderType"] == "WO"
    assert call.inputs["NewStatus"] == "HD" and call.inputs["JiraStatus"] == "Blocked"  # blocked -> on hold
    assert env.box.jde.order(wo["DOCO"])["SRST"] == "HD"

    rerun = env.cli("sync", "jde-jira", "--json")
    assert rerun.returncode == EXIT_OK
    assert _json(rerun)["counts"]["jira_status"]["posted"] == 0
    assert env.sync().counts["jira_status"].posted == 0
    assert len(env.box.jde.calls) == 1
    assert env.issue_for(wo["DOCO"])["fields"]["status"] == "Blocked"  # JDE's HD maps back to Blocked: no flip


def test_each_status_change_is_posted_once_in_order_and_unmapped_ones_are_skipped(jde_env: JdeEnv) -> None:
    env = jde_env
    assert env.sync().exit_code == EXIT_OK
    wo = env.box.jde.rows(order_type="WO")[1]
    key = env.issue_for(wo["DOCO"])["key"]
    for status in ("Approved", "Blocked", "Done"):  # Approved has no JDE code in the default map
        env.box.jira.transition_as_user(key, status)
    result = env.sync()
    assert result.counts["jira_status"].posted == 2
    assert [c.inputs["NewStatus"] for c in env.box.jde.calls_for(wo["DOCO"])] == ["HD", "90"]
    assert env.sync().counts["jira_status"].posted == 0


def test_failed_orchestration_is_queued_and_posted_once_later(jde_env: JdeEnv) -> None:
    env = jde_env
    assert env.sync().exit_code == EXIT_OK
    wo = env.box.jde.rows(order_type="WO")[2]
    env.box.jira.transition_as_user(env.issue_for(wo["DOCO"])["key"], "Blocked")
    env.box.jde.error_orchestration_next = 1  # HTTP 200 with jde__status ERROR: not a success
    failed = env.sync()
    assert failed.exit_code == EXIT_RECORDS_FAILED
    assert failed.queue_size == 1 and "Status code is not valid" in failed.failures[0]["error"]
    ok = env.sync()
    assert ok.exit_code == EXIT_OK and ok.queue_size == 0
    assert ok.counts["jira_status"].posted == 1 and ok.counts["jira_status"].replayed == 1
    assert [c.inputs["NewStatus"] for c in env.box.jde.calls_for(wo["DOCO"])] == ["HD", "HD"]  # 1 failed + 1 ok
    assert env.box.jde.order(wo["DOCO"])["SRST"] == "HD"
    assert env.sync().counts["jira_status"].posted == 0


# -- kill and rerun -----------------------------------------------------------------------------------
def _start(env: JdeEnv) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mlconnector", "sync", "jde-jira", "--config", str(env.config)],
                            env=env.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for(cond: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not cond():
        assert proc.poll() is None, f"the pass exited with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_killed_after_orchestration_took_effect_rerun_posts_nothing_twice(jde_env: JdeEnv) -> None:
    env = jde_env
    assert env.sync().exit_code == EXIT_OK
    a, b = env.box.jde.rows(order_type="WO")[:2]
    env.box.jira.transition_as_user(env.issue_for(a["DOCO"])["key"], "Blocked")
    env.box.jira.transition_as_user(env.issue_for(b["DOCO"])["key"], "Done")
    # JDE applies the first call, then sits on the answer: the pass never learns it succeeded.
    env.box.jde_server.faults.add(kind="hang_after", path=ORCH, method="POST", count=1, delay=30)
    proc = _start(env)
    try:
        _wait_for(lambda: len(env.box.jde.calls) == 1, "the first orchestration call", proc)
    finally:
        _kill(proc)
    env.box.jde_server.faults.clear()
    first = env.box.jde.calls[0].inputs["OrderNumber"]

    rerun = env.cli("sync", "jde-jira", "--json")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert _json(rerun)["queue_size"] == 0
    # Nothing posted twice, nothing lost: one call per change.
    assert sorted(c.inputs["OrderNumber"] for c in env.box.jde.calls) == sorted([str(a["DOCO"]), str(b["DOCO"])])
    assert env.box.jde.order(a["DOCO"])["SRST"] == "HD" and env.box.jde.order(b["DOCO"])["SRST"] == "90"
    audit = [json.loads(x) for x in (env.dir / "state.audit.jsonl").read_text().splitlines()]
    assert [x["action"] for x in audit if x["kind"] == "jira_status" and str(first) in x.get("order", "")] \
        == ["resolved_pending"]
    posted = State.load(env.state_file).extra["jde-jira"]["posted"]
    assert {p["state"] for p in posted.values()} == {"done"}
    assert env.sync().exit_code == EXIT_OK and len(env.box.jde.calls) == 2


def test_killed_during_issue_create_rerun_creates_no_duplicates(jde_env: JdeEnv) -> None:
    env = jde_env
    hang = env.box.jira_server.faults.add(kind="hang_after", path=r"/rest/api/3/issue/bulk$", method="POST",
                                          count=1, delay=30)
    proc = _start(env)
    try:
        # The whole bulk created (not only its first issue): a rerun must not race the killed pass's create.
        _wait_for(hang.reached.is_set, "Jira to have created issues", proc)
    finally:
        _kill(proc)
    env.box.jira_server.faults.clear()
    state = State.load(env.state_file)
    assert sum(len(state.pending(k)) for k in state.kinds()) > 0  # pending marks were saved before the create
    rerun = env.cli("sync", "jde-jira", "--json")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    _assert_one_issue_per_order(env)
    state = State.load(env.state_file)
    assert all(not state.pending(k) for k in state.kinds())


# -- configuration and CLI --------------------------------------------------------------------------
def test_dry_run_writes_nothing_anywhere(jde_env: JdeEnv) -> None:
    env = jde_env
    out = env.cli("sync", "jde-jira", "--dry-run", "--json")
    assert out.returncode == EXIT_OK, out.stderr
    assert _json(out)["counts"]["work_orders"]["created"] == 12
    assert env.box.jira.all_issues() == [] and env.box.jde.calls == [] and not env.state_file.exists()


def test_password_in_config_is_refused_with_the_command_that_stores_it(jde_env: JdeEnv) -> None:
    env = jde_env
    env.write_config(extra_jde='password = "hunter2"\n')
    out = env.cli("sync", "jde-jira")
    assert out.returncode == 2
    assert "mlconnector secrets set jde.password" in out.stderr


def test_missing_jde_password_is_named(jde_env: JdeEnv) -> None:
    env = jde_env
    no_secret = {k: v for k, v in env.env.items() if k != "MLCONNECTOR_JDE_PASSWORD"}
    proc = subprocess.run([sys.executable, "-m", "mlconnector", "sync", "jde-jira", "--config", str(env.config)],
                          capture_output=True, text=True, env=no_secret, timeout=60)
    assert proc.returncode == 2
    assert "jde.password" in proc.stderr and "MLCONNECTOR_JDE_PASSWORD" in proc.stderr


def test_ping_checks_login_tables_and_orchestration(jde_env: JdeEnv) -> None:
    env = jde_env
    env.box.jde.orchestrations = ("SOMETHING_ELSE",)
    out = env.cli("ping", "--json")
    checks = {c["name"]: c for c in _json(out)["checks"] if c["system"] == "JD Edwards"}
    assert checks["login"]["ok"] and checks["table F4801 (work_orders)"]["ok"]
    assert not checks["orchestration ML_JIRA_STATUS_UPDATE"]["ok"]
    assert out.returncode == 3


def test_basic_auth_mode_sends_credentials_per_request_and_never_drops_rows(jde_env: JdeEnv) -> None:
    env = jde_env
    env.write_config(extra_jde='auth = "basic"\n', page_size=50)
    result = env.sync()
    assert result.exit_code == EXIT_OK
    _assert_one_issue_per_order(env)
    assert env.box.jde.logins == 0  # stateless: no token request at all
    # More changed rows than one page and no next-page links in Basic mode: the window fails loudly
    # and keeps its watermark instead of skipping rows.
    env.box.jde.add_orders(60)
    env.write_config(extra_jde='auth = "basic"\n', page_size=20)
    short = env.sync()
    # As for every pair: an entity that cannot be read in full is a remote error (exit 3), its watermark stays.
    assert short.exit_code == EXIT_UNREACHABLE
    assert "next-page" in short.errors[0]["error"]
    env.write_config(extra_jde='auth = "basic"\n', page_size=500)
    assert env.sync().exit_code == EXIT_OK
    _assert_one_issue_per_order(env)


def test_replay_retry_posts_a_queued_status_change_for_a_jde_only_config(jde_env: JdeEnv) -> None:
    env = jde_env
    assert env.sync().exit_code == EXIT_OK
    wo = env.box.jde.rows(order_type="WO")[3]
    env.box.jira.transition_as_user(env.issue_for(wo["DOCO"])["key"], "Blocked")
    env.box.jde.error_orchestration_next = 1
    assert env.sync().exit_code == EXIT_RECORDS_FAILED
    queued = _json(env.cli("replay", "list", "--json"))
    assert len(queued) == 1
    retried = env.cli("replay", "retry", "--all", "--json")
    assert retried.returncode == 0, retried.stderr
    assert _json(retried)["succeeded"] == 1
    assert _json(env.cli("replay", "list", "--json")) == []
    assert [c.inputs["NewStatus"] for c in env.box.jde.calls_for(wo["DOCO"])] == ["HD", "HD"]  # 1 failed + 1 ok
    assert env.sync().counts["jira_status"].posted == 0
