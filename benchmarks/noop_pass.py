"""Passes over a large source: the initial load, then a pass that finds nothing new (most cron runs).

    python -m benchmarks.noop_pass [--rows 1000 100000] [--search-lag 2] [--create-cost 0.05]

For each source size prints: initial-load wall time and peak RSS, then for the no-change pass its
wall time, the HTTP requests it made (PeopleSoft + Jira) and its peak RSS. Targets: a constant number
of requests whatever the row count, under 1 s after start-up, and peak RSS of the 100,000-row pass
within 1.5x that of the 1,000-row pass. The sandbox Jira's search lags its writes (``--search-lag``) and
each issue created costs it ``--create-cost`` seconds (0 and 0 reproduce the figures of earlier releases;
the cost only slows the initial load: 100,000 rows at 0.05 s take about 20 minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from benchmarks.common import run_cli, workspace
from mlconnector.sandbox.run import start_sandbox

SOURCE = {"vendors": 50, "requisitions": 0, "purchase_orders": 0, "vouchers": 0}
PO_ONLY = ('\n[peoplesoft.records.purchase_orders]\ncomments_query = ""\n'
           '[peoplesoft.records.requisitions]\nenabled = false\n'
           '[peoplesoft.records.vouchers]\nenabled = false\n')


def startup_seconds() -> float:
    """Interpreter + import + argument parsing of a CLI that does nothing (`--version`)."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlconnector", "--version"], capture_output=True, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def measure(rows: int, lag: float = 0.0, cost: float = 0.0) -> dict:
    with start_sandbox(counts=SOURCE, search_lag=lag, create_cost=cost) as box:
        now = datetime.now(UTC)
        # A year of purchase orders, none in the last day: the overlap window of the next pass is quiet.
        box.ps.bulk_load("purchase_orders", rows, now - timedelta(days=365), now - timedelta(days=1))
        work = workspace(box, extra_ps=PO_ONLY)
        cfg = work / "config.toml"
        since = (now - timedelta(days=400)).date().isoformat()
        text = cfg.read_text().replace("maxrows = 100\n", "maxrows = 1000\n")
        cfg.write_text("\n".join(f'initial_since = "{since}"' if line.startswith("initial_since") else line
                                 for line in text.splitlines()) + "\n")
        first = run_cli(box, work)
        box.ps_server.clear_log()
        box.jira_server.clear_log()
        second = run_cli(box, work)
        return {"rows": rows, "first_s": first.seconds, "first_rss": first.peak_rss_mb, "first_exit": first.exit_code,
                "issues": len(box.jira.all_issues()), "second_s": second.seconds,
                "second_pass_s": second.summary.get("seconds", 0.0), "second_rss": second.peak_rss_mb,
                "ps_requests": len(box.ps_server.requests()), "jira_requests": len(box.jira_server.requests()),
                "state_mb": (work / "state.json").stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--search-lag", type=float, default=2.0, help="seconds Jira's search trails its writes")
    ap.add_argument("--create-cost", type=float, default=0.05, help="seconds of Jira's work per issue created")
    a = ap.parse_args()
    start = startup_seconds()
    print(f"Sandbox Jira: search lag {a.search_lag:g} s, {a.create_cost * 1000:.0f} ms of work per issue created")
    print(f"CLI start-up (python -m mlconnector --version, best of 3): {start:.2f} s")
    results = [measure(n, a.search_lag, a.create_cost) for n in a.rows]
    for r in results:
        print(f"{r['rows']:>7} rows: initial load {r['first_s']:.1f} s, peak RSS {r['first_rss']:.0f} MB, "
              f"{r['issues']} issues, exit {r['first_exit']}; state file {r['state_mb']:.1f} MB")
        print(f"          no-change pass: {r['second_s']:.2f} s wall ({r['second_pass_s']:.2f} s inside the pass, "
              f"{max(0.0, r['second_s'] - start):.2f} s after start-up), {r['ps_requests']} PeopleSoft + "
              f"{r['jira_requests']} Jira requests, peak RSS {r['second_rss']:.0f} MB")
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        print(f"Requests of the no-change pass: {lo['ps_requests'] + lo['jira_requests']} at {lo['rows']} rows vs "
              f"{hi['ps_requests'] + hi['jira_requests']} at {hi['rows']} rows (target: equal)")
        print(f"Peak RSS ratio, no-change pass {hi['rows']} / {lo['rows']} rows: "
              f"{hi['second_rss'] / lo['second_rss']:.2f} (target <= 1.5); initial load: "
              f"{hi['first_rss'] / lo['first_rss']:.2f}")


if __name__ == "__main__":
    main()
