"""Helpers shared by the benchmark scripts: a sandbox-backed workspace and a CLI runner that measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlconnector.sandbox.run import Sandbox


@dataclass
class Run:
    seconds: float
    exit_code: int
    summary: dict[str, Any]
    peak_rss_mb: float


def workspace(box: Sandbox, extra_ps: str = "", extra_jira: str = "") -> Path:
    d = Path(tempfile.mkdtemp(prefix="mlconnector-bench-"))
    (d / "config.toml").write_text(box.config_text(d / "state.json", extra_ps=extra_ps, extra_jira=extra_jira,
                                                   fast_retries=False), encoding="utf-8")
    return d


def run_cli(box: Sandbox, workdir: Path, *args: str) -> Run:
    """One `mlconnector sync peoplesoft-jira` pass in a child process; its own peak RSS."""
    env = {**os.environ, **box.env()}
    # VmHWM, not getrusage: on Linux ru_maxrss survives exec and so includes this (big) parent's pages.
    code = ("import sys, runpy; sys.argv = ['mlconnector'] + sys.argv[1:];\n"
            "try:\n    runpy.run_module('mlconnector', run_name='__main__')\n"
            "finally:\n    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
            "    print('PEAK_RSS_KB', hwm[0] if hwm else 0, file=sys.stderr)")
    cmd = [sys.executable, "-c", code, "sync", "peoplesoft-jira", "--config", str(workdir / "config.toml"),
           "--json", *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    rss = 0.0
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK_RSS_KB"):
            rss = int(line.split()[1]) / 1024
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        summary = {"error": proc.stderr[-2000:]}
    return Run(seconds, proc.returncode, summary, rss)


