"""Product bugs found by the chaos harness (benchmarks/chaos.py), each reduced to a minimal reproduction.

Each test names the harness scenario that found it; each failed before its fix.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Env
from test_crash_safety import BULK, _kill, _start, _wait_for

from mlconnector.errors import EXIT_OK
from mlconnector.sandbox.run import settle_for, start_sandbox

PO_ONLY = {"vendors": 10, "requisitions": 0, "purchase_orders": 0, "vouchers": 0}
NO_COMMENTS = ('\n[peoplesoft.records.purchase_orders]\ncomments_query = ""\n'
               '[peoplesoft.records.requisitions]\nenabled = false\n'
               '[peoplesoft.records.vouchers]\nenabled = false\n')
LAG, COST = 5.0, 0.01  # Jira's search lag; Jira's work per issue created (0.5 s per bulk of 50)


@pytest.fixture
def lagging_env(tmp_path: Path) -> Iterator[Env]:
    box = start_sandbox(counts=PO_ONLY, search_lag=LAG, create_cost=COST)
    now = datetime.now(UTC)
    box.ps.bulk_load("purchase_orders", 100, now - timedelta(days=3), now - timedelta(minutes=5))
    env = Env(box, tmp_path, tmp_path / "config.toml", None)
    env.write_config(extra_ps=NO_COMMENTS)
    env.config.write_text(env.config.read_text().replace("maxrows = 100\n", "maxrows = 1000\n"))
    try:
        yield env
    finally:
        box.stop()




def test_a_chunk_sent_after_a_slow_first_chunk_is_not_created_twice_by_a_rerun_at_once(lagging_env: Env) -> None:
    """Scenario 6 (full run, seed in the report; lag 2 s, trials with more than 50 new records). Reduced: 100
    new POs = 2 chunks of 50; the first is sent alone (it teaches the transition ids) and Jira is slow to start on
    it (5 s, within read_timeout); Jira creates the second and holds its answer; the pass is killed and rerun
    at once. settle_seconds (sandbox.accounts.settle_for) covers the search lag plus one bulk's work. Fixed by
    renewing a chunk's pending marks (on disk) right before each attempt to send it goes out."""
    env = lagging_env
    settle = settle_for(LAG, COST)
    faults = env.box.jira_server.faults
    # The first chunk: Jira starts on it late (well within read_timeout, 10 s), so the second leaves late too.
    faults.add(kind="delay", path=BULK, method="POST", count=1, delay=settle - LAG + 1.5)
    faults.add(kind="hang_after", path=BULK, method="POST", count=None, delay=60)  # second: created, no answer
    proc = _start(env, "sync", "peoplesoft-jira")
    try:
        # The first chunk is one issue (it teaches the transition ids) and the hops of issues already created
        # are writes too: wait for the issues themselves.
        _wait_for(lambda: len(env.box.jira.all_issues()) >= 100, 60, "Jira to have performed every bulk create",
                  proc)
        assert _kill(proc) == -signal.SIGKILL
    finally:
        _kill(proc)
    faults.clear()
    assert len(env.box.jira.all_issues()) == 100

    rerun = env.cli("sync", "peoplesoft-jira", "--json")  # at once: the second chunk is not searchable yet
    assert rerun.returncode == EXIT_OK, rerun.stdout + rerun.stderr
    counts = json.loads(rerun.stdout)["counts"]
    by_label = env.issues_by_label()
    duplicated = {label: keys for label, keys in by_label.items() if len(keys) > 1}
    assert duplicated == {}, f"{len(duplicated)} records have two issues; created {counts}"
