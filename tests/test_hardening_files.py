"""Issue 14, findings 12, 15 and 18: private files, the crash report, a usage error for --port."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mlconnector.errors import EXIT_CONFIG

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX modes (Windows uses the profile's ACLs)")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# -- 15: 0600 files in 0700 directories --------------------------------------------------------------
@posix_only
def test_audit_spool_lock_state_and_wsdl_cache_are_private(tmp_path: Path) -> None:
    from mlconnector.audit import Audit, Redactor
    from mlconnector.peoplesoft.ci import WsdlCache
    from mlconnector.state import State, run_lock
    from mlconnector.webhook import append_event, drain_events, spool_path

    old = os.umask(0o022)  # what cron jobs usually run with
    try:
        base = tmp_path / "fresh" / "dir"
        state_file = base / "state.json"
        with run_lock(state_file):
            State(path=state_file).save()
        audit = Audit(base / "audit" / "trail.jsonl", Redactor(), "peoplesoft-jira")
        audit.write("failed", "po", "US001|1", raw="<faultstring>...</faultstring>")
        audit.close()
        spool = spool_path(state_file)
        append_event(spool, {"issue": "PROC-1"})
        drain_events(spool, lambda events: None)
        cache = WsdlCache(base / "cache", "https://ps.example.com/CI_X.1.wsdl", 3600)
        cache.add("https://ps.example.com/CI_X.1.wsdl", b"<definitions/>")
        cache.commit()
    finally:
        os.umask(old)
    files = [state_file, state_file.with_name("state.json.lock"), base / "audit" / "trail.jsonl", spool,
             spool.with_name(spool.name + ".lock"), *cache.dir.iterdir()]
    assert {str(f): oct(_mode(f)) for f in files} == {str(f): "0o600" for f in files}
    dirs = [tmp_path / "fresh", base, base / "audit", base / "cache", cache.dir]
    assert {str(d): oct(_mode(d)) for d in dirs} == {str(d): "0o700" for d in dirs}


# -- 12: the crash report --------------------------------------------------------------------------
@posix_only
def test_crash_report_is_unique_private_redacted_and_follows_no_symlink(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from mlconnector import cli
    from mlconnector.audit import GLOBAL

    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    (tmp_path / "mlconnector-crash.txt").symlink_to(victim)  # planted by another local user
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    GLOBAL.add("hunter2-secret")

    def boom() -> None:
        raise RuntimeError("failed while holding hunter2-secret")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 70
    assert victim.read_text(encoding="utf-8") == "precious"
    err = capsys.readouterr().err
    reports = [p for p in tmp_path.iterdir() if p.name.startswith("mlconnector-crash-")]
    assert len(reports) == 1 and str(reports[0]) in err
    text = reports[0].read_text(encoding="utf-8")
    assert "RuntimeError" in text and "hunter2-secret" not in text
    assert _mode(reports[0]) == 0o600


# -- 18: a port out of range is a usage error ------------------------------------------------------
@pytest.mark.parametrize("port", ["99999", "-1"])
def test_webhook_serve_port_out_of_range_is_a_usage_error(port: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mlconnector", "webhook", "serve", "--port", port,
                           "--config", str(tmp_path / "none.toml")], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "--port" in proc.stderr and "Internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_webhook_serve_on_a_port_in_use_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from mlconnector.errors import ConfigError
    from mlconnector.webhook import serve

    class Cfg:
        instance = "t"
        state_file = tmp_path / "state.json"

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        monkeypatch.setenv("MLCONNECTOR_JIRA_WEBHOOK_SECRET", "s3cret-hook")
        with pytest.raises(ConfigError, match="--port"):
            serve(Cfg(), host="127.0.0.1", port=port, path="/jira/webhook", echo=lambda s: None)
