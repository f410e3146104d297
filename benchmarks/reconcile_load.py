"""`reconcile peoplesoft-jira` over 10,000 and 100,000 linked purchase orders: time, calls per side, peak memory.

    python -m benchmarks.reconcile_load [--records 10000 100000] [--edited 10]

How the linked state is built (a real initial pass at 100,000 records takes far longer than the reconcile it
sets up): the sandbox PeopleSoft is bulk-loaded with the purchase orders; each row is then read and mapped
through the pair's own reconcile scope (the same readers and mapping a pass uses), its issue is created inside
the Jira simulator directly (the create a pass sends: fields, labels, the ``mlconnector.key`` property, then
the mapped status), and its link is written to the state as the issue writer writes it. Comments,
requisitions and vouchers are left out. ``--edited`` issues are then edited in Jira, as a person would, so the
report has differences to find.

The reconcile then runs as the CLI runs it, in a child process (``mlconnector reconcile peoplesoft-jira
--entity purchase_orders --json``), and the script prints its wall time, the requests it made to each side,
its peak RSS (VmHWM) and what it found; the classes must be in step but for the edited ones, which checks the
state was built right.

Memory: a record in step is counted, not kept (its CSV line goes to a temporary file); per record read
reconcile keeps a 64-bit digest of its key with its time stamp (about 130 bytes), and the orphan sweep lets go
of the key-map entries it looks up as it goes. What still grows with the data on the sandbox is the PS Query
page (the sandbox's prompts are dates, so a day's rows come in one answer: thousands at 100,000 records) and the
state file itself, which a pass reads too. Figures (sandbox, 2 shared cores): 10,000 records 71 MB, 100,000
records 119 MB (before: 81 MB and 265 MB, about 2 KB per record).

Requests are linear in the records: per 100 purchase orders one ``key in (...)`` search and one page of the
orphan sweep on Jira, and the QAS pages of the window on PeopleSoft. The wall time at 100,000 on the sandbox
is dominated by the Jira simulator, which evaluates every JQL search against all its issues (no index): run
it on an idle machine, and expect minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import workspace
from mlconnector import config as config_mod
from mlconnector.jira.sink import KEY_PROPERTY
from mlconnector.sandbox.run import Sandbox, start_sandbox
from mlconnector.state import iso
from mlconnector.sync.keys import decode_key

ONLY_POS = {"vendors": 50, "requisitions": 0, "purchase_orders": 0, "vouchers": 0}
NO_COMMENTS = ('\n[peoplesoft.records.purchase_orders]\ncomments_query = ""\n'
               '[peoplesoft.records.requisitions]\nenabled = false\n'
               '[peoplesoft.records.vouchers]\nenabled = false\n')
KIND = "purchase_orders"


def build(box: Sandbox, cfg_path: Any, edited: int) -> float:
    """Issues and links for every purchase order, as an initial pass leaves them; returns the seconds taken."""
    from mlconnector.runner import session

    t = time.perf_counter()
    cfg = config_mod.load(cfg_path)
    jira = box.jira
    done = 0
    with session(cfg, "peoplesoft-jira", lock=False) as (mod, clients, state, audit):
        steps = mod.make_pass(cfg, clients, state, audit, dry_run=True)
        steps.prepare()
        scope = mod.reconcile_scope(steps)
        for rows in scope.rows(KIND, scope.initial_since(KIND), steps.now):
            for row in rows:
                rec = scope.map(KIND, row)
                with jira._lock:  # the create a pass sends, without the HTTP round trip
                    key = jira._create_one(None, {"fields": rec.create_fields, "properties": [
                        {"key": KEY_PROPERTY, "value": {"entity": KIND, "key": list(decode_key(rec.key))}}]},
                        "connector")["key"]
                if rec.target_status:
                    jira.transition_as_user(key, rec.target_status, account_id="connector")
                state.set_entry(KIND, rec.key, {"issue": key, "hash": rec.hash, "ts": iso(rec.ts),
                                                "status": rec.status_code, "label": rec.label})
                done += 1
            state.release(can_save=False)
        state.save()
    for issue in jira.all_issues()[:edited]:
        jira.edit_as_user(issue["key"], {"summary": "Edited in Jira by a person"})
    print(f"  built {done} issues and links in {time.perf_counter() - t:.1f} s", flush=True)
    return time.perf_counter() - t


def reconcile_child(box: Sandbox, cfg_path: Any) -> tuple[float, int, dict[str, Any], float]:
    env = {**os.environ, **box.env()}
    code = ("import sys, runpy; sys.argv = ['mlconnector'] + sys.argv[1:];\n"
            "try:\n    runpy.run_module('mlconnector', run_name='__main__')\n"
            "finally:\n    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
            "    print('PEAK_RSS_KB', hwm[0] if hwm else 0, file=sys.stderr)")
    cmd = [sys.executable, "-c", code, "reconcile", "peoplesoft-jira", "--config", str(cfg_path),
           "--entity", KIND, "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    rss = next((int(ln.split()[1]) / 1024 for ln in proc.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")), 0.0)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {"error": proc.stderr[-2000:]}
    return seconds, proc.returncode, report, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--edited", type=int, default=10)
    a = ap.parse_args()
    print(f"{'records':>8} {'seconds':>8} {'exit':>4} {'peoplesoft':>10} {'jira':>6} {'peak RSS MB':>11}  classes")
    for n in a.records:
        with start_sandbox(counts=ONLY_POS) as box:
            now = datetime.now(UTC)
            box.ps.bulk_load(KIND, n, now - timedelta(days=30), now - timedelta(minutes=5))
            work = workspace(box, extra_ps=NO_COMMENTS)
            cfg = work / "config.toml"
            os.environ.update(box.env())  # the sandbox's secrets, for the in-process build
            build(box, cfg, a.edited)
            seconds, code, report, rss = reconcile_child(box, cfg)
            if "error" in report or "totals" not in report:
                print(f"{n:>8} failed: {report}")
                continue
            totals = {c: v for c, v in report["totals"].items() if v}
            req = report.get("requests", {})
            print(f"{n:>8} {seconds:>8.1f} {code:>4} {req.get('peoplesoft', 0):>10} {req.get('jira', 0):>6} "
                  f"{rss:>11.0f}  {totals}", flush=True)
            assert totals == {"in_step": n - a.edited, **({"drifted": a.edited} if a.edited else {})}, totals


if __name__ == "__main__":
    main()
