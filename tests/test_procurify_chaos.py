"""A quick run of the procurify-peoplesoft chaos scenario (benchmarks/chaos_procurify.py): passes SIGKILLed at
random instants, lost and held CI answers, an immediate rerun each time; then nothing is lost or posted twice,
no supplier is created twice, no secret is written anywhere, no run printed a traceback.

The seed is fixed; kills land where the scheduler puts them, but the promise holds wherever they land."""

from __future__ import annotations

from pathlib import Path

from benchmarks.chaos import Harness, quiet_sandbox_resets
from benchmarks.chaos_procurify import problems, scenario


def test_kills_and_lost_ci_answers_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    quiet_sandbox_resets()
    row = scenario(Harness(tmp_path, seed=5), trials=4, quick=True)
    assert (row["lost"], row["duplicate_pos"], row["duplicate_vendors"]) == (0, 0, 0), row
    assert row["leaked"] == [] and row["tracebacks"] == [], row
    assert problems(row) == [], row
    assert row["pos"] == row["groups"]
