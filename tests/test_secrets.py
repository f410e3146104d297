"""Secrets: stored in the OS keyring (a file-backed fake here), overridable by the environment, and
never printed, logged, audited or saved, in any output of any command."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Env

from mlconnector.sandbox.run import JIRA_EMAIL, JIRA_TOKEN, PS_PASSWORD, PS_USER

TESTS = Path(__file__).parent
SYNC = ("sync", "peoplesoft-jira")


def keyring_env(env: Env, keyring_file: Path, backend: str = "fake_keyring.FileKeyring",
                **extra: str) -> dict[str, str]:
    """The test environment without secret variables, with the keyring backend chosen explicitly."""
    e = {k: v for k, v in env.env.items() if not k.startswith("MLCONNECTOR_")}
    e["PYTHON_KEYRING_BACKEND"] = backend
    e["FAKE_KEYRING_FILE"] = str(keyring_file)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), e.get("PYTHONPATH", "")) if p)
    e.update(extra)
    return e


def run(env: Env, *args: str, environ: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlconnector", *args, "--config", str(env.config)],
                          input=stdin, capture_output=True, text=True, env=environ, timeout=120)


def clean(proc: subprocess.CompletedProcess[str], *secrets: str) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    for s in secrets:
        assert s not in out
    return out


def set_secret(env: Env, environ: dict[str, str], name: str, value: str) -> subprocess.CompletedProcess[str]:
    return run(env, "secrets", "set", name, "--stdin", environ=environ, stdin=value + "\n")


def sources(env: Env, environ: dict[str, str]) -> dict[str, str]:
    proc = run(env, "secrets", "list", "--json", environ=environ)
    assert proc.returncode == 0, proc.stderr
    clean(proc, PS_PASSWORD, JIRA_TOKEN)
    return {r["name"]: r["source"] for r in json.loads(proc.stdout)}


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


def test_set_list_delete_in_keyring(sandbox_env: Env, keyring_file: Path) -> None:
    env = sandbox_env
    e = keyring_env(env, keyring_file, MLCONNECTOR_JIRA_API_TOKEN=JIRA_TOKEN)

    proc = set_secret(env, e, "peoplesoft.password", PS_PASSWORD)
    assert proc.returncode == 0, proc.stderr
    assert "Stored peoplesoft.password" in clean(proc, PS_PASSWORD)
    stored = json.loads(keyring_file.read_text())
    assert stored == {"mlconnector": {"sandbox/peoplesoft.password": PS_PASSWORD}}

    listed = sources(env, e)
    assert listed["peoplesoft.password"] == "keyring"
    assert listed["jira.api_token"] == "environment"
    assert listed["jira.client_secret"] == "missing"
    plain = run(env, "secrets", "list", environ=e)
    assert plain.returncode == 0
    assert "MLCONNECTOR_PEOPLESOFT_PASSWORD" in clean(plain, PS_PASSWORD, JIRA_TOKEN)

    deleted = run(env, "secrets", "delete", "peoplesoft.password", environ=e)
    assert deleted.returncode == 0 and "Deleted peoplesoft.password" in clean(deleted, PS_PASSWORD)
    assert json.loads(keyring_file.read_text()) == {"mlconnector": {}}
    assert sources(env, e)["peoplesoft.password"] == "missing"


def test_unknown_secret_name_and_empty_value(sandbox_env: Env, keyring_file: Path) -> None:
    env = sandbox_env
    e = keyring_env(env, keyring_file)
    proc = set_secret(env, e, "peoplesoft.pasword", "whatever-value")
    assert proc.returncode == 2
    assert "Unknown secret 'peoplesoft.pasword'" in clean(proc, "whatever-value")
    assert "peoplesoft.password" in proc.stderr
    empty = set_secret(env, e, "peoplesoft.password", "")
    assert empty.returncode == 2 and "nothing was stored" in clean(empty)
    assert not keyring_file.exists()


def test_sync_reads_secrets_from_keyring_and_environment_overrides(sandbox_env: Env, keyring_file: Path) -> None:
    env = sandbox_env
    e = keyring_env(env, keyring_file)
    assert set_secret(env, e, "peoplesoft.password", PS_PASSWORD).returncode == 0
    assert set_secret(env, e, "jira.api_token", JIRA_TOKEN).returncode == 0

    proc = run(env, *SYNC, "--json", environ=e)  # no MLCONNECTOR_* variable at all
    assert proc.returncode == 0, proc.stderr
    clean(proc, PS_PASSWORD, JIRA_TOKEN)
    assert set(env.issues_by_label()) == env.source_labels()

    # The environment wins over the keyring: a wrong value there is what gets used.
    wrong = {**e, "MLCONNECTOR_PEOPLESOFT_PASSWORD": "env-wins-wrong"}
    assert sources(env, wrong)["peoplesoft.password"] == "environment"
    ping = run(env, "ping", "--json", environ=wrong)
    assert ping.returncode == 3
    clean(ping, PS_PASSWORD, JIRA_TOKEN, "env-wins-wrong")
    failed = [c for c in json.loads(ping.stdout)["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["authentication"] and failed[0]["system"] == "PeopleSoft"


def test_no_keyring_backend_says_use_the_environment(sandbox_env: Env, keyring_file: Path) -> None:
    env = sandbox_env
    e = keyring_env(env, keyring_file, backend="keyring.backends.fail.Keyring")
    proc = set_secret(env, e, "peoplesoft.password", PS_PASSWORD)
    assert proc.returncode == 2
    out = clean(proc, PS_PASSWORD)
    assert "No OS keyring" in out and "MLCONNECTOR_PEOPLESOFT_PASSWORD" in out
    listed = run(env, "secrets", "list", environ=e)
    assert listed.returncode == 0
    clean(listed)


def b64(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_no_secret_leaks_anywhere(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    wrong = "wrong-ps-password-77"
    needles = {PS_PASSWORD, JIRA_TOKEN, wrong, b64(PS_USER, PS_PASSWORD), b64(JIRA_EMAIL, JIRA_TOKEN),
               b64(PS_USER, wrong)}
    outputs: list[tuple[str, subprocess.CompletedProcess[str]]] = []

    def cli(label: str, *args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = env.cli(*args, env=environ)
        outputs.append((label, proc))
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        return proc

    assert cli("first pass", *SYNC, "--verbose").returncode == 0

    # New records whose bulk create fails once: they are queued with the remote answer.
    vendor = box.ps.rows("vendors")[0]
    for n in (1, 2):
        box.ps.add("purchase_orders", {"BUSINESS_UNIT": "US001", "PO_ID": f"900000000{n}", "PO_STATUS": "A",
                                       "PO_DT": "2024-05-01", "BUYER_ID": "BUYER1", "VENDOR_SETID": "SHARE",
                                       "VENDOR_ID": vendor["VENDOR_ID"], "PO_AMT": 100.0 * n,
                                       "CURRENCY_CD": "USD", "DUE_DT": "2024-06-01", "DESCR254": "Leak probe"})
    box.jira_server.faults.add(kind="status", status=400, path="/rest/api/3/issue/bulk", count=1,
                               body='{"errorMessages":["bad"],"errors":{}}')
    faulted = cli("fault pass", *SYNC, "--verbose", "--json")
    assert faulted.returncode == 1, faulted.stdout + faulted.stderr

    queue = json.loads(cli("replay list", "replay", "list", "--json").stdout)
    assert queue, "the fault pass queued nothing"
    cli("replay show", "replay", "show", queue[0]["id"])
    cli("replay show json", "replay", "show", queue[0]["id"], "--json")

    bad_env = {**env.env, "MLCONNECTOR_PEOPLESOFT_PASSWORD": wrong}
    assert cli("wrong password", *SYNC, "--verbose", environ=bad_env).returncode == 3
    assert cli("wrong password json", *SYNC, "--json", environ=bad_env).returncode == 3
    assert cli("ping", "ping", "--json", "--verbose").returncode == 0
    cli("secrets list", "secrets", "list")

    texts = [(f"{label} stdout", p.stdout) for label, p in outputs] + [(f"{label} stderr", p.stderr)
                                                                       for label, p in outputs]
    texts += [("state file", env.state_file.read_text(encoding="utf-8")),
              ("audit file", env.audit_file.read_text(encoding="utf-8"))]
    assert any("DEBUG" in t for _, t in texts), "--verbose logged nothing to scan"
    leaks = [(where, n) for where, text in texts for n in needles if n in text]
    assert leaks == [], leaks


def test_secret_echoed_by_a_remote_error_page_is_masked(sandbox_env: Env) -> None:
    """A proxy or gateway error page that echoes the request's Authorization header must not carry the
    credentials into the cron mail, the state file, the audit trail or `replay show`."""
    env = sandbox_env
    jira_b64, ps_b64 = b64(JIRA_EMAIL, JIRA_TOKEN), b64(PS_USER, PS_PASSWORD)
    env.box.jira_server.faults.add(kind="status", status=400, path="/rest/api/3/issue/bulk", count=1, body=json.dumps(
        {"errorMessages": [f"proxy: bad request (Authorization: Basic {jira_b64})"], "errors": {}}))
    queued = env.cli(*SYNC, "--kind", "requisitions")
    assert queued.returncode == 1, queued.stderr
    item = json.loads(env.cli("replay", "list", "--json").stdout)[0]
    show = env.cli("replay", "show", item["id"])
    state_with_queue = env.state_file.read_text(encoding="utf-8")
    env.box.ps_server.faults.add(kind="body", status=500, count=None,
                                 body=f"<html>Gateway error. Request headers: Authorization: Basic {ps_b64}</html>")
    fatal = env.cli(*SYNC)
    assert fatal.returncode == 3
    texts = {"sync stdout": queued.stdout, "sync stderr": queued.stderr, "replay show": show.stdout,
             "fatal stderr": fatal.stderr,
             "state file": state_with_queue, "audit file": env.audit_file.read_text(encoding="utf-8")}
    leaks = sorted(where for where, text in texts.items() for n in (jira_b64, ps_b64) if n in text)
    assert leaks == [], leaks
