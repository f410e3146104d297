"""Bad inputs a cron user meets: each ends with the documented exit code, one paragraph naming the cause
and the fix (on stderr, or in --json "error"), never a traceback, and nothing lost."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from conftest import Env
from filelock import FileLock

from mlconnector.mapping import record_label
from mlconnector.sandbox.jira_sim import JiraSim
from mlconnector.sandbox.run import JIRA_EMAIL, JIRA_TOKEN

SYNC = ("sync", "peoplesoft-jira")
NO_KEYRING = "keyring.backends.fail.Keyring"


def error_message(proc: subprocess.CompletedProcess[str], code: int, *, as_json: bool = False) -> str:
    """Assert a clean failure with exit ``code`` and return its message (one paragraph)."""
    assert "Traceback" not in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\n{proc.stdout}\n{proc.stderr}"
    if as_json:
        out = json.loads(proc.stdout)
        assert out["status"] == "error" and out["exit_code"] == code
        message = out["error"]
    else:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, proc.stderr
        message = errors[0].removeprefix("Error: ")
    assert message.strip() and "\n" not in message.strip(), message
    return message


def no_requests(env: Env) -> None:
    """Configuration problems are found before any network call."""
    assert env.box.ps_server.requests() == []
    assert env.box.jira_server.requests() == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- configuration file problems ------------------------------------------------------------------
CONFIG_CASES = {
    # id: (edit of the config text, words the message must contain)
    "broken-toml": (lambda t: t + "\n[peoplesoft.records\n", ["not valid TOML", "line"]),
    "unknown-key": (lambda t: t.replace('node = "PSFT_EP"', 'node = "PSFT_EP"\nhots = "ps.example.com"'),
                    ["peoplesoft.hots", "spelling", "host"]),
    "wrong-type": (lambda t: t.replace("maxrows = 100", 'maxrows = "many"'),
                   ["peoplesoft.maxrows", "whole number", "'many'"]),
    "secret-in-file": (lambda t: t.replace('node = "PSFT_EP"', 'node = "PSFT_EP"\npassword = "hunter2-in-file"'),
                       ["peoplesoft.password", "mlconnector secrets set peoplesoft.password"]),
    "missing-jira": (lambda t: t[:t.index("[jira]")], ["[jira] section is missing", "project"]),
    "bad-url": (lambda t: t.replace('base_url = "http://', 'base_url = "htp//'),
                ["peoplesoft.base_url", "not a URL", "https://host:port"]),
    "missing-ca-bundle": (lambda t: t.replace('node = "PSFT_EP"',
                                              'node = "PSFT_EP"\nca_bundle = "/nonexistent/corp-ca.pem"'),
                          ["peoplesoft.ca_bundle", "/nonexistent/corp-ca.pem", "no such file", "PEM"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_problem_is_named_with_its_fix(sandbox_env: Env, case: str) -> None:
    env = sandbox_env
    as_json = case in ("wrong-type", "secret-in-file")  # --json puts the same message in "error"
    edit, words = CONFIG_CASES[case]
    env.config.write_text(edit(env.config.read_text()))
    proc = env.cli(*SYNC, *(["--json"] if as_json else []))
    message = error_message(proc, 2, as_json=as_json)
    for w in words:
        assert w in message, message
    assert "hunter2-in-file" not in proc.stdout + proc.stderr
    assert not env.state_file.exists()
    no_requests(env)


def test_missing_config_file(sandbox_env: Env) -> None:
    env = sandbox_env
    env.config.unlink()
    message = error_message(env.cli(*SYNC), 2)
    assert str(env.config) in message and "No configuration file" in message
    assert "--config" in message and "MLCONNECTOR_CONFIG" in message and "examples/config.toml" in message
    no_requests(env)


def test_missing_secret_names_command_and_env_var(sandbox_env: Env) -> None:
    env = sandbox_env
    e = {k: v for k, v in env.env.items() if k != "MLCONNECTOR_PEOPLESOFT_PASSWORD"}
    e["PYTHON_KEYRING_BACKEND"] = NO_KEYRING
    for args in (SYNC, ("ping",)):
        proc = env.cli(*args, env=e)
        if args == SYNC:
            message = error_message(proc, 2)
            no_requests(env)
        else:  # ping reports it as a failed check
            assert proc.returncode == 3 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
            message = proc.stdout
        assert "mlconnector secrets set peoplesoft.password" in message
        assert "MLCONNECTOR_PEOPLESOFT_PASSWORD" in message
    assert not env.state_file.exists()


# -- remote problems: exit 3, nothing written, the next good pass catches up ------------------------
def test_wrong_password(sandbox_env: Env) -> None:
    env = sandbox_env
    e = {**env.env, "MLCONNECTOR_PEOPLESOFT_PASSWORD": "wrong-password-42"}
    proc = env.cli(*SYNC, env=e)
    message = error_message(proc, 3)
    assert "credentials" in message and "ML_CONNECTOR" in message
    assert "mlconnector secrets set peoplesoft.password" in message
    assert "wrong-password-42" not in proc.stdout + proc.stderr
    assert env.box.jira.all_issues() == []
    # No watermark moved, so the next good pass reads everything (see the inactive-service test).
    assert not env.state_file.exists() or json.loads(env.state_file.read_text())["watermarks"] == {}


def test_unreachable_host(sandbox_env: Env) -> None:
    env = sandbox_env
    port = closed_port()
    env.config.write_text(env.config.read_text().replace(env.box.ps_server.url, f"http://127.0.0.1:{port}"))
    message = error_message(env.cli(*SYNC), 3)
    assert "cannot reach" in message.lower() and f"127.0.0.1:{port}" in message
    assert "[peoplesoft]" in message or "port" in message.lower()
    assert env.box.jira.all_issues() == []


def test_wrong_node(sandbox_env: Env) -> None:
    env = sandbox_env
    env.config.write_text(env.config.read_text().replace('node = "PSFT_EP"', 'node = "WRONG"'))
    message = error_message(env.cli(*SYNC), 3)
    assert "node WRONG" in message and "Default Local" in message
    assert env.box.jira.all_issues() == []


def test_inactive_service_operation_then_catch_up(sandbox_env: Env) -> None:
    env = sandbox_env
    env.box.ps.deactivate("ML_PO_CHANGED")
    message = error_message(env.cli(*SYNC), 3)
    assert "ML_PO_CHANGED" in message and "activate" in message and "routing" in message
    assert "QAS_EXECUTEQRY_REST_GET" in message
    env.box.ps.activate("ML_PO_CHANGED")
    assert env.cli(*SYNC).returncode == 0
    by_label = env.issues_by_label()
    assert set(by_label) == env.source_labels()
    assert all(len(keys) == 1 for keys in by_label.values())


def test_user_denied_query(sandbox_env: Env) -> None:
    env = sandbox_env
    env.box.ps.deny("ML_CONNECTOR", "ML_PO_CHANGED")
    message = error_message(env.cli(*SYNC, "--json"), 3, as_json=True)
    assert "ML_CONNECTOR" in message and "ML_PO_CHANGED" in message and "permission list" in message
    assert "purchase_orders" not in json.loads(env.state_file.read_text())["watermarks"]


# -- Jira metadata that does not match the configuration: exit 2 before any write ------------------
JIRA_CASES = {
    "unknown-field": ('[jira.fields]\namount = "No Such Field"\n', ["jira.fields.amount", "No Such Field",
                                                                     "Create the field"]),
    "unknown-issue-type": ('[jira.issue_types]\npurchase_orders = "Purchase Ordr"\n',
                           ["jira.issue_types.purchase_orders", "Purchase Ordr", "Purchase Order"]),
    "unknown-status": ('[jira.status_map.purchase_orders]\nA = "Aproved"\n',
                       ["jira.status_map.purchase_orders.A", "Aproved", "Approved"]),
}


@pytest.mark.parametrize("case", list(JIRA_CASES))
def test_jira_metadata_mismatch(sandbox_env: Env, case: str) -> None:
    env = sandbox_env
    extra, words = JIRA_CASES[case]
    env.write_config(extra_jira=extra)
    message = error_message(env.cli(*SYNC), 2)
    for w in words:
        assert w in message, message
    assert env.box.jira.writes == 0
    assert "ML_PO_CHANGED" not in env.box.ps.calls  # stopped before reading records


def test_unknown_jira_project(sandbox_env: Env) -> None:
    env = sandbox_env
    env.config.write_text(env.config.read_text().replace('project = "PROC"', 'project = "NOPE"'))
    message = error_message(env.cli(*SYNC), 2)
    assert "jira.project" in message and "NOPE" in message and "Browse" in message
    assert env.box.jira.writes == 0


def test_duplicate_jira_field_names_lists_both_ids(sandbox_env: Env) -> None:
    env = sandbox_env
    sim = JiraSim(email=JIRA_EMAIL, api_token=JIRA_TOKEN, duplicate_field_name="Amount")
    env.box.jira = sim
    env.box.jira_server.app = sim
    message = error_message(env.cli(*SYNC), 2)
    assert "jira.fields.amount" in message
    assert "customfield_10051" in message and "customfield_10059" in message
    assert "id" in message
    assert sim.writes == 0


# -- malformed PeopleSoft rows: exit 1, queued with a precise message, everything else synced --------
def test_malformed_rows_are_queued_and_the_rest_synced(sandbox_env: Env) -> None:
    env = sandbox_env
    ps = env.box.ps
    pos = ps.rows("purchase_orders")
    bad_amt = (pos[0]["BUSINESS_UNIT"], pos[0]["PO_ID"])
    bad_due = (pos[1]["BUSINESS_UNIT"], pos[1]["PO_ID"])
    ps.corrupt("purchase_orders", bad_amt, "PO_AMT", "abc")
    ps.corrupt("purchase_orders", bad_due, "DUE_DT", "2024-13-45")
    blank = {**{k: v for k, v in pos[2].items() if k != "LAST_DTTM_UPDATE"}, "PO_ID": ""}
    ps.add_raw("purchase_orders", blank)

    proc = env.cli(*SYNC, "--json")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    records = [f for f in summary["failures"] if f["what"] == "record"]
    assert len(records) == 3 and all(f["kind"] == "purchase_orders" for f in records), summary["failures"]
    # Comments of a failed record wait for it (queued, not lost); no other kind failed.
    assert all(f["kind"] == "purchase_orders" for f in summary["failures"])

    queue = json.loads(env.cli("replay", "list", "--json").stdout)
    errors = {i["key"]: i["error"] for i in queue if i.get("what", "record") == "record"}
    assert len(errors) == 3 and len(queue) == len(summary["failures"])
    amt_key, due_key = "|".join(bad_amt), "|".join(bad_due)
    assert "PO_AMT" in errors[amt_key] and "'abc'" in errors[amt_key]
    assert "DUE_DT" in errors[due_key] and "2024-13-45" in errors[due_key]
    [blank_key] = [k for k in errors if k not in (amt_key, due_key)]
    assert "PO_ID" in errors[blank_key] and "blank" in errors[blank_key]

    bad_labels = {record_label("purchase_orders", amt_key), record_label("purchase_orders", due_key)}
    good = {lbl for lbl in env.source_labels() if not lbl.endswith("-")} - bad_labels
    assert set(env.issues_by_label()) == good

    # Nothing lost: once the rows are fixed in PeopleSoft, the next pass creates their issues.
    ps.touch("purchase_orders", bad_amt, PO_AMT=100.0)
    ps.touch("purchase_orders", bad_due, DUE_DT="2030-01-31")
    second = env.cli(*SYNC, "--json")
    assert second.returncode == 1  # the blank-key row still fails
    assert set(env.issues_by_label()) == good | bad_labels
    third = env.cli(*SYNC)
    assert "Traceback" not in third.stdout + third.stderr
    [issue] = env.box.jira.find_by_label(record_label("purchase_orders", due_key))
    waiting = [k for k in errors if k.startswith(due_key + "#")] + [
        f["key"] for f in summary["failures"] if f["what"] == "comment"]
    assert all(any(f"#{k.rsplit('#', 1)[1]}]" in c["text"] for c in issue["comments"]) for k in waiting)
    left = json.loads(env.cli("replay", "list", "--json").stdout)
    assert [i["key"] for i in left] == [blank_key]  # the fixed rows and their comments left the queue
    # The pass that synced the fixed rows must not also report them as failed with their old values.
    stale = [f for f in json.loads(second.stdout)["failures"] if f["key"].split("#")[0] in (amt_key, due_key)]
    assert stale == [], stale


# -- command-line usage ---------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "words"), [
    ((*SYNC, "--since", "2024-02-30"), ["--since", "'2024-02-30'", "YYYY-MM-DD"]),
    ((*SYNC, "--kind", "invoices"), ["--kind", "'invoices'", "purchase_orders", "vouchers"]),
], ids=["bad-since", "bad-kind"])
def test_usage_errors(sandbox_env: Env, args: tuple[str, ...], words: list[str]) -> None:
    env = sandbox_env
    message = error_message(env.cli(*args), 2)
    for w in words:
        assert w in message, message
    assert not env.state_file.exists()
    no_requests(env)


def test_jde_jira_without_jde_setup_is_explained(sandbox_env: Env) -> None:
    """This config only has PeopleSoft: `sync jde-jira` says what is missing (or that it is not available)."""
    env = sandbox_env
    message = error_message(env.cli("sync", "jde-jira"), 2)
    assert "not implemented" in message or ("[jde]" in message and "examples/config.toml" in message), message
    assert not env.state_file.exists()
    no_requests(env)


@pytest.mark.parametrize("args", [("frobnicate",), ("sync", "sap-jira")])
def test_unknown_command_is_a_usage_error(sandbox_env: Env, args: tuple[str, ...]) -> None:
    proc = sandbox_env.cli(*args, config=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Usage:" in proc.stderr and "No such command" in proc.stderr and args[-1] in proc.stderr


# -- state and lock -------------------------------------------------------------------------------
def test_corrupt_state_stops_and_keeps_the_file(sandbox_env: Env) -> None:
    env = sandbox_env
    env.state_file.write_text('{"schema": 1, "watermarks": {', encoding="utf-8")
    before = env.state_file.read_bytes()
    message = error_message(env.cli(*SYNC), 5)
    assert str(env.state_file) in message and "corrupt" in message and "adopted" in message
    assert env.state_file.read_bytes() == before
    assert env.box.jira.writes == 0


def test_following_the_corrupt_state_advice_duplicates_nothing(sandbox_env: Env) -> None:
    # The advice is to move the file aside and run again: that must adopt, not create every issue again.
    env = sandbox_env
    assert env.cli(*SYNC).returncode == 0
    issues = len(env.box.jira.all_issues())
    env.state_file.write_text('{"schema": 1, "watermarks": {', encoding="utf-8")
    assert "move it aside" in error_message(env.cli(*SYNC), 5)
    env.state_file.rename(env.state_file.with_name("state.json.corrupt"))
    assert env.cli(*SYNC).returncode == 0
    assert len(env.box.jira.all_issues()) == issues


def test_locked_by_another_run(sandbox_env: Env) -> None:
    env = sandbox_env
    with FileLock(str(env.state_file.with_name(env.state_file.name + ".lock"))):
        message = error_message(env.cli(*SYNC), 4)
    assert "lock" in message and "did nothing" in message
    assert env.box.jira.writes == 0
    assert not env.state_file.exists()
