"""The command line itself: version, help, entry points, a light start-up, and `ping`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Env

import mlconnector

COMMANDS = ("sync", "ping", "replay", "secrets", "demo")


def py(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_version_comes_from_the_package(sandbox_env: Env) -> None:
    proc = sandbox_env.cli("--version", config=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"mlconnector {mlconnector.__version__}"


@pytest.mark.parametrize("how", ["module", "script"])
def test_help_lists_the_commands(how: str) -> None:
    if how == "module":
        proc = py("-m", "mlconnector", "--help")
    else:
        script = Path(sys.executable).with_name("mlconnector")
        exe = str(script) if script.exists() else shutil.which("mlconnector")
        assert exe, "the mlconnector console script is not installed"
        proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for command in COMMANDS:
        assert command in proc.stdout, f"{command} missing from --help:\n{proc.stdout}"


def test_help_does_not_import_heavy_modules() -> None:
    proc = py("-X", "importtime", "-m", "mlconnector", "--help")
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "typer" in imported  # the measurement itself works
    assert imported.isdisjoint({"requests", "zeep", "tenacity"}), imported & {"requests", "zeep", "tenacity"}


def test_ping_all_ok_then_names_the_failed_query(sandbox_env: Env) -> None:
    env = sandbox_env
    ok = env.cli("ping", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True
    names = {c["name"] for c in report["checks"]}
    assert all(c["ok"] for c in report["checks"]), [c for c in report["checks"] if not c["ok"]]
    assert {"reachable", "query ML_PO_CHANGED", "authentication", "project PROC"} <= names
    assert env.box.jira.writes == 0  # ping only reads

    env.box.ps.deactivate("ML_PO_CHANGED")
    bad = env.cli("ping", "--json")
    assert bad.returncode == 3
    assert "Traceback" not in bad.stdout + bad.stderr
    checks = json.loads(bad.stdout)["checks"]
    failed = [c for c in checks if not c["ok"]]
    assert [c["name"] for c in failed] == ["query ML_PO_CHANGED"]
    assert "routing" in failed[0]["detail"] and "activate" in failed[0]["detail"]
    assert failed[0]["fix"]
    # The other queries still ran: one inactive service does not hide the state of the rest.
    assert {"query ML_VOUCHER_CHANGED", "project PROC"} <= {c["name"] for c in checks if c["ok"]}

    text = env.cli("ping")
    assert text.returncode == 3
    line = next(ln for ln in text.stdout.splitlines() if "ML_PO_CHANGED" in ln)
    assert line.startswith("FAILED") and "Fix:" in line


def test_readme_exit_code_table_matches_the_code() -> None:
    import re
    from pathlib import Path

    from mlconnector.errors import EXIT_CODES

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| ([^|]+) \|", table, re.MULTILINE)}
    assert sorted(rows) == sorted(EXIT_CODES)


def test_short_help_version_and_exit_codes_in_help() -> None:
    import subprocess
    import sys

    from mlconnector.errors import EXIT_CODES

    run = [sys.executable, "-m", "mlconnector"]
    helped = subprocess.run([*run, "-h"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "Usage:" in helped.stdout
    flat = " ".join(helped.stdout.split())
    assert all(f"{code} =" in flat for code in EXIT_CODES)
    version = subprocess.run([*run, "-V"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("mlconnector ")


def test_the_quick_start_demo_runs_every_pair_and_passes() -> None:
    """The README's first Quick start line: real passes of each pair against the sandbox."""
    import json
    import subprocess
    import sys

    from mlconnector.registry import PAIRS

    proc = subprocess.run([sys.executable, "-m", "mlconnector", "demo", "--json"], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ok"] is True
    assert {p["pair"] for p in out["passes"]} == set(PAIRS)


def test_sandbox_serve_describes_every_pair_and_both_configs_sync(tmp_path) -> None:  # noqa: ANN001
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "sandbox.toml"
    proc = subprocess.Popen([sys.executable, "-m", "mlconnector", "sandbox", "serve", "--write-config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any(line.startswith("Press Ctrl-C") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]
        secrets = dict(line.strip().removeprefix("export ").split("=", 1) for line in lines if "export " in line)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")} | secrets
        for pair, path in (("peoplesoft-jira", cfg), ("jde-jira", tmp_path / "sandbox-jde.toml"),
                           ("procurify-peoplesoft", tmp_path / "sandbox-procurify.toml"),
                           ("peoplesoft-jaggaer", tmp_path / "sandbox-jaggaer.toml"),
                           ("peoplesoft-procore", tmp_path / "sandbox-procore.toml")):
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace('instance = "', f'state_file = "{tmp_path / pair}.json"\ninstance = "'),
                            encoding="utf-8")
            run = subprocess.run([sys.executable, "-m", "mlconnector", "sync", pair, "--config", str(path)],
                                 env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert run.returncode == 0, run.stdout + run.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_sandbox_serve_stops_on_ctrl_c_even_when_started_with_sigint_ignored() -> None:
    """A background job or a test runner's worker starts children with SIGINT ignored; Ctrl-C (or a TERM from a
    supervisor) must still stop the simulators."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mlconnector", "sandbox", "serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # noqa: PLW1509
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl-C" not in (proc.stdout.readline() or ""):  # type: ignore[union-attr]
            assert time.monotonic() < deadline and proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
