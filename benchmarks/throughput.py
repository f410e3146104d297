"""Initial load throughput against a rate-limited, slow Jira sandbox, side by side with a naive script.

    python -m benchmarks.throughput [--records 2000] [--latency 0.05] [--rate 50] [--search-lag 2]
                                    [--create-cost 0.05] [--max-workers 4] [--max-bulk-creates N] [--only-ours]

Prints records/s, requests, 429s received, wall time, peak RSS, the share of the rate limit used, and
the ratio to two serial scripts on an identical sandbox: a naive one (one create request per record) and
the best serial one (bulk creates of 50, one after the other). Comments are left out on every side so they
all do the same work. The sandbox Jira is the honest one by default: its search lags its writes by
``--search-lag`` seconds and each issue created costs it ``--create-cost`` seconds (0 and 0 reproduce the
figures of earlier releases).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import requests

from benchmarks.common import run_cli, workspace
from mlconnector.sandbox.run import JIRA_EMAIL, JIRA_TOKEN, PS_PASSWORD, PS_USER, start_sandbox

ONLY_POS = {"vendors": 50, "requisitions": 0, "purchase_orders": 0, "vouchers": 0}
NO_COMMENTS = ('\n[peoplesoft.records.purchase_orders]\ncomments_query = ""\n'
               '[peoplesoft.records.requisitions]\nenabled = false\n'
               '[peoplesoft.records.vouchers]\nenabled = false\n')


def _load(box, n: int) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    box.ps.bulk_load("purchase_orders", n, now - timedelta(days=30), now - timedelta(minutes=5))


def ours(n: int, latency: float, rate: float, lag: float = 0.0, cost: float = 0.0, workers: int = 4,
         bulk_creates: int | None = None) -> dict:
    with start_sandbox(counts=ONLY_POS, latency=latency, rate_limit=rate, search_lag=lag, create_cost=cost) as box:
        _load(box, n)
        extra = f"max_workers = {workers}\n" + (f"max_bulk_creates = {bulk_creates}\n" if bulk_creates else "")
        work = workspace(box, extra_ps=NO_COMMENTS, extra_jira=extra)
        cfg = work / "config.toml"
        cfg.write_text(cfg.read_text().replace("maxrows = 100\n", "maxrows = 1000\n"))
        box.jira_server.clear_log()
        run = run_cli(box, work)
        log = box.jira_server.requests()
        out = {"seconds": run.seconds, "exit": run.exit_code, "requests": len(log),
               "throttled": sum(1 for r in log if r.status == 429), "rss": run.peak_rss_mb,
               "issues": len(box.jira.all_issues()), "pass_seconds": run.summary.get("seconds", 0.0)}
        # A busy morning: a quarter of the orders changed in PeopleSoft (amount, and half of them status).
        # Each needs its own edit and maybe a transition, so here the rate limit is what binds.
        changed = box.ps.rows("purchase_orders")[: n // 4]
        for i, row in enumerate(changed):
            new = {"PO_AMT": float(row["PO_AMT"]) + 1}
            if i % 2:
                new["PO_STATUS"] = "C" if row["PO_STATUS"] != "C" else "A"
            box.ps.touch("purchase_orders", (row["BUSINESS_UNIT"], row["PO_ID"]), **new)
        box.jira_server.clear_log()
        second = run_cli(box, work)
        log = box.jira_server.requests()
        out.update(changed=len(changed), inc_seconds=second.summary.get("seconds", 0.0), inc_exit=second.exit_code,
                   inc_requests=len(log), inc_throttled=sum(1 for r in log if r.status == 429))
        return out


def naive(n: int, latency: float, rate: float, lag: float = 0.0, cost: float = 0.0, bulk: int = 1) -> dict:
    """What a short script would do: read everything, then POST /issue once per record, in a loop (``bulk`` > 1:
    POST /issue/bulk with that many records at a time, still one request after the other)."""
    with start_sandbox(counts=ONLY_POS, latency=latency, rate_limit=rate, search_lag=lag, create_cost=cost) as box:
        _load(box, n)
        t = time.perf_counter()
        s = requests.Session()
        url = (f"{box.ps_server.url}/PSIGW/RESTListeningConnector/PSFT_EP/ExecuteQuery.v1/PUBLIC/ML_PO_CHANGED/JSON/"
               f"NONFILE?isconnectedquery=N&maxrows=0&json_resp=true&prompt_psqueryname=&prompt_uniquepromptname="
               f"BIND1,BIND2&prompt_fieldvalue=2000-01-01,2100-01-01")
        rows = s.get(url, auth=(PS_USER, PS_PASSWORD), timeout=60).json()["data"]["query"]["rows"]
        throttled = 0
        for i in range(0, len(rows), bulk):
            updates = [{"fields": {"project": {"key": "PROC"}, "issuetype": {"name": "Purchase Order"},
                                   "summary": f"PO {row['A.BUSINESS_UNIT']}/{row['A.PO_ID']}"}}
                       for row in rows[i:i + bulk]]
            path, body = ("/issue", updates[0]) if bulk == 1 else ("/issue/bulk", {"issueUpdates": updates})
            while True:
                r = s.post(f"{box.jira_server.url}/rest/api/3{path}", json=body, auth=(JIRA_EMAIL, JIRA_TOKEN),
                           timeout=60)
                if r.status_code != 429:
                    break
                throttled += 1
                time.sleep(float(r.headers.get("Retry-After", "1")))
        return {"seconds": time.perf_counter() - t, "records": len(rows), "issues": len(box.jira.all_issues()),
                "throttled": throttled, "requests": -(-len(rows) // bulk)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--search-lag", type=float, default=2.0, help="seconds Jira's search trails its writes")
    ap.add_argument("--create-cost", type=float, default=0.05, help="seconds of Jira's work per issue created")
    ap.add_argument("--max-workers", type=int, default=4, help="[jira] max_workers (edits/transitions in flight)")
    ap.add_argument("--max-bulk-creates", type=int, default=None,
                    help="[jira] max_bulk_creates (bulk creates in flight); default: the configuration's default")
    ap.add_argument("--only-ours", action="store_true",
                    help="run ml-connector's passes only (no serial scripts): for comparing two versions")
    a = ap.parse_args()
    lag, cost = a.search_lag, a.create_cost
    o = ours(a.records, a.latency, a.rate, lag, cost, a.max_workers, a.max_bulk_creates)
    if a.only_ours:
        ok = o["inc_requests"] - o["inc_throttled"]
        print(f"ml-connector: initial load {o['seconds']:.2f} s wall ({o['pass_seconds']:.2f} s in the pass), "
              f"{o['requests']} Jira requests ({o['throttled']} x 429), {o['requests'] / o['seconds'] / a.rate:.2f} "
              f"of the limit, {o['issues']} issues, exit {o['exit']}; then {o['changed']} changed: "
              f"{o['inc_seconds']:.2f} s in the pass, {o['inc_requests']} requests ({o['inc_throttled']} x 429), "
              f"{ok / o['inc_seconds'] / a.rate:.2f} of the limit, exit {o['inc_exit']}")
        return
    b = naive(a.records, a.latency, a.rate, lag, cost)
    sb = naive(a.records, a.latency, a.rate, lag, cost, bulk=50)
    rps_ours = a.records / o["seconds"]
    rps_naive = a.records / b["seconds"]
    rps_best = max(rps_naive, a.records / sb["seconds"])
    used = o["requests"] / o["seconds"] / a.rate
    print(f"Initial load of {a.records} purchase orders, sandbox latency {a.latency * 1000:.0f} ms, "
          f"Jira limit {a.rate:g} requests/s, search lag {lag:g} s, {cost * 1000:.0f} ms of Jira's work per issue "
          f"created, [jira] max_workers = {a.max_workers}"
          + (f", max_bulk_creates = {a.max_bulk_creates}" if a.max_bulk_creates else ""))
    print(f"  ml-connector : {o['seconds']:.2f} s wall ({o['pass_seconds']:.2f} s in the pass), {rps_ours:.0f} "
          f"records/s, {o['requests']} Jira requests, {o['throttled']} x 429, peak RSS {o['rss']:.0f} MB, "
          f"{o['issues']} issues, exit {o['exit']}")
    print(f"  naive script : {b['seconds']:.2f} s wall, {rps_naive:.1f} records/s, {b['records']} Jira requests "
          f"+1 read, {b['throttled']} x 429, {b['issues']} issues")
    print(f"  serial bulk  : {sb['seconds']:.2f} s wall, {a.records / sb['seconds']:.1f} records/s, {sb['requests']} "
          f"Jira requests +1 read (POST /issue/bulk of 50, one after the other), {sb['throttled']} x 429, "
          f"{sb['issues']} issues")
    answered = (o["requests"] - o["throttled"]) / o["seconds"] / a.rate
    print(f"  share of the rate limit used by ml-connector: {used:.2f} (Jira requests/s / limit; answered requests "
          f"only, 429s left out: {answered:.2f})")
    print(f"  ratio to the naive script: {rps_ours / rps_naive:.1f}x; to the best serial script: "
          f"{rps_ours / rps_best:.1f}x   (target: >= 0.9 of the limit or >= 5x the best serial script)")
    inc_rate = o["inc_requests"] / o["inc_seconds"] if o["inc_seconds"] else 0.0
    ok = o["inc_requests"] - o["inc_throttled"]
    print(f"Then {o['changed']} changed orders (edits + transitions), rate limit binding:")
    print(f"  {o['inc_seconds']:.2f} s in the pass, {o['inc_requests']} Jira requests ({o['inc_throttled']} x 429), "
          f"{ok / o['inc_seconds']:.1f} answered requests/s = {ok / o['inc_seconds'] / a.rate:.2f} of the limit "
          f"(target >= 0.9; all requests {inc_rate:.1f}/s), exit {o['inc_exit']}")


if __name__ == "__main__":
    main()
