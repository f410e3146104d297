"""The chaos harness (benchmarks/chaos.py) in its reduced form: every scenario, few trials, small data.

The full run (python -m benchmarks.chaos) takes minutes; this keeps its machinery honest in CI and
asserts the promise it measures: nothing lost, nothing duplicated, no secret leaked, no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_chaos_run_loses_duplicates_and_leaks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.chaos", "--quick", "--trials", "2", "--records", "150",
                           "--seed", "1234", "--json-out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
    # The timeout only guards against a hang: under heavy load (load average 20+ on 2 cores) the reduced run
    # took over 300 s, so it is set far above a normal run (about a minute) rather than near it.
    closing = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert closing == "lost 0, duplicated 0, leaked 0, tracebacks 0", proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert {r["pair"] for r in doc["kill"]} == {"peoplesoft-jira", "jde-jira"}
    assert all(r["exactly_one_worked"] for r in doc["overlap"]), doc["overlap"]
    assert doc["secrets"]["leaks"] == 0 and doc["secrets"]["outputs_scanned"] > 20
    assert doc["problems"] == [], doc["problems"]
    # The pairs with chaos modules of their own run inside this harness too, and their figures count.
    for name in ("jaggaer", "procore"):
        assert doc[name]["exit"] == 0 and doc[name]["trials"] == 1, doc[name]
        assert doc[name]["duplicated"] == doc[name]["lost"] == doc[name]["tracebacks"] == 0, doc[name]
    # State deleted, restored from an older copy, config moved, another site: for a PeopleSoft-writing pair too.
    row = doc["state_loss_pswrite"]
    assert row["exit"] == 0 and row["trials"] == 4 and row["failed"] == 0, row
    assert row["duplicated"] == row["lost"] == row["tracebacks"] == 0, row
