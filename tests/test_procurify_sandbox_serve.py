"""`mlconnector sandbox serve` also serves Procurify with its purchasing CIs, and the configuration it writes
syncs `procurify-peoplesoft` as it stands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def test_sandbox_serve_writes_a_procurify_config_that_syncs(tmp_path: Path) -> None:
    cfg = tmp_path / "sandbox.toml"
    proc = subprocess.Popen([sys.executable, "-m", "mlconnector", "sandbox", "serve", "--write-config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Press Ctrl-C"):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "".join(lines)  # the server exited before describing itself
            lines.append(line)
        assert any(line.startswith("Procurify simulator:") for line in lines), "".join(lines)
        secrets = dict(line.strip().removeprefix("export ").split("=", 1) for line in lines if "export " in line)
        assert "MLCONNECTOR_PROCURIFY_CLIENT_SECRET" in secrets
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")} | secrets
        env["MLCONNECTOR_CACHE_DIR"] = str(tmp_path / "cache")
        path = tmp_path / "sandbox-procurify.toml"
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace('instance = "', f'state_file = "{tmp_path / "p.json"}"\ninstance = "'),
                        encoding="utf-8")
        run = subprocess.run([sys.executable, "-m", "mlconnector", "sync", "procurify-peoplesoft", "--config",
                              str(path), "--json"], env=env, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        assert run.returncode == 0, run.stdout + run.stderr
        assert json.loads(run.stdout)["counts"]["requisitions"]["created"] == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
