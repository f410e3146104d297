"""Cold vs warm WSDL cache for PeopleSoft CI services: prints figures, asserts nothing.

    python -m benchmarks.ci_wsdl_cache [--latency 0.02]

Every record kind is read through a Component Interface (SOAP). Two `sync peoplesoft-jira` passes
run as child processes, as cron runs them: the first with an empty WSDL cache, the second with the
cache it filled. For each it prints the wall time of the pass, the WSDL/XSD GETs the PeopleSoft
gateway saw and the SOAP calls; then the time to load the four CI services alone (in this process,
fresh client each time) from the network and from the cache. ``--latency`` adds a delay to every
sandbox request, to look more like a real network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from benchmarks.common import run_cli, workspace
from mlconnector import config as config_mod
from mlconnector.peoplesoft.ci import CACHE_ENV, CIClient
from mlconnector.sandbox.run import PS_PASSWORD, PS_USER, start_sandbox

CIS = {"vendors": "VENDOR_CI", "requisitions": "REQ_CI", "purchase_orders": "PO_EXPRESS_CI", "vouchers": "VOUCHER_CI"}
COUNTS = {"vendors": 20, "requisitions": 30, "purchase_orders": 60, "vouchers": 40}
WSDL_GETS = r"\.(wsdl|xsd)$"


def main() -> None:
    ap = argparse.ArgumentParser(description="Cold vs warm WSDL cache for PeopleSoft CI services.")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to each sandbox request")
    args = ap.parse_args()
    box = start_sandbox(latency=args.latency, counts=COUNTS)
    extra = "".join(f'\n[peoplesoft.records.{kind}]\ntransport = "ci"\nci = "{ci}"\n' for kind, ci in CIS.items())
    work = workspace(box, extra_ps=extra)
    cache = work / "cache"
    os.environ[CACHE_ENV] = str(cache)  # run_cli passes os.environ on to the child
    server = box.ps_server
    try:
        print(f"{sum(COUNTS.values())} records, all kinds through CIs; sandbox latency {args.latency * 1000:.0f} ms "
              f"per request")
        print(f"{'pass':<6} {'wall s':>8} {'WSDL/XSD GETs':>14} {'SOAP calls':>11} {'exit':>5}")
        for label in ("cold", "warm"):
            server.clear_log()
            soap_before = sum(box.soap.calls.values())
            run = run_cli(box, work)
            gets = len(server.requests("GET", WSDL_GETS))
            print(f"{label:<6} {run.seconds:>8.3f} {gets:>14d} {sum(box.soap.calls.values()) - soap_before:>11d} "
                  f"{run.exit_code:>5d}")

        cfg = config_mod.load(work / "config.toml").peoplesoft
        print(f"\n{'load 4 CI services':<20} {'wall s':>8} {'WSDL/XSD GETs':>14}")
        for label in ("network", "cache"):
            if label == "network":
                shutil.rmtree(cache, ignore_errors=True)
            server.clear_log()
            t0 = time.perf_counter()
            client = CIClient(cfg, (PS_USER, PS_PASSWORD))
            for ci in CIS.values():
                client.service(ci)
            seconds = time.perf_counter() - t0
            client.close()
            print(f"{label:<20} {seconds:>8.3f} {len(server.requests('GET', WSDL_GETS)):>14d}")
    finally:
        box.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
