"""Initial load of `sync peoplesoft-procore`: 2,000 PeopleSoft vendors and 500 project POs into Procore, against
a script that writes one record per call, side by side: Procore calls, wall seconds, and the share of an
hourly rate limit each uses.

    python -m benchmarks.procore_load [--vendors 2000] [--pos 500] [--hourly-limit 3600]

Both run against the same loopback Procore simulator setup (sync actions, both rate-limit windows, the
limits read from headers). The pair batches vendors and commitment headers up to 1,000 per sync action and
writes each commitment's line items in one call; the one-call-per-record script sends every vendor, cost code,
commitment and line item in a call of its own (the shape of a hand-written integration over the same API).
A second pass of the pair (nothing changed) shows the steady-state cost.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.procore.client import ProcoreClient, ProcoreToken, token_cache_for
from mlconnector.sandbox.procore_run import ACCOUNTS, PROJECTS, ProcoreBox, start_procore_sandbox


def _seed(box: ProcoreBox, pos: int) -> None:
    active = [r["VENDOR_ID"] for r in box.ps.rows("vendors") if r["VENDOR_STATUS"] == "A"]
    accounts = sorted(ACCOUNTS)
    projects = list(PROJECTS.values())
    for n in range(pos):
        project, dept = projects[n % len(projects)]
        box.add_po(f"{n + 1:010d}", active[n % len(active)], [
            {"descr": f"Material lot {n}", "qty": 1 + n % 7, "price": "12.50", "account": accounts[n % 3]},
            {"descr": f"Equipment {n}", "qty": 2, "price": "310.00", "account": accounts[(n + 1) % 3]}],
            project=project, deptid=dept)


def _calls(box: ProcoreBox) -> int:
    return sum(box.procore.calls.values())


def pair_load(vendors: int, pos: int, hourly: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlc-procore-bench-") as tmp, \
            start_procore_sandbox(vendors=vendors, hourly_limit=hourly, spike_limit=10_000) as box:
        os.environ.update(box.env())
        os.environ["MLCONNECTOR_CACHE_DIR"] = str(Path(tmp) / "cache")
        _seed(box, pos)
        cfg_path = Path(tmp) / "c.toml"
        # Every seeded PO carries the same stamp second, so the PO query's window cannot be split: one big page.
        cfg_path.write_text(box.config_text(Path(tmp) / "state.json")
                            .replace('instance = "procore-sandbox"', 'instance = "procore-sandbox"\npreflight = false')
                            .replace('prompt_format = "datetime"\n', 'prompt_format = "datetime"\nmaxrows = 5000\n'),
                            encoding="utf-8")
        before = _calls(box)
        t0 = time.perf_counter()
        r = runner.sync("peoplesoft-procore", config_mod.load(cfg_path))
        first = {"calls": _calls(box) - before, "seconds": time.perf_counter() - t0, "exit": r.exit_code,
                 "vendors": len(box.procore.vendors), "commitments": len(box.procore.contracts),
                 "lines": len(box.procore.line_items)}
        before = _calls(box)
        t0 = time.perf_counter()
        r2 = runner.sync("peoplesoft-procore", config_mod.load(cfg_path))
        second = {"calls": _calls(box) - before, "seconds": time.perf_counter() - t0, "exit": r2.exit_code}
        return {"first": first, "second": second}


def one_per_record(vendors: int, pos: int, hourly: int) -> dict[str, Any]:
    """The same records, one record per call (vendors, cost codes, commitments, line items)."""
    with tempfile.TemporaryDirectory(prefix="mlc-procore-bench-") as tmp, \
            start_procore_sandbox(vendors=vendors, hourly_limit=hourly, spike_limit=10_000) as box:
        _seed(box, pos)
        from mlconnector.procore.config import ProcoreConfig
        from mlconnector.sandbox.procore_sim import CLIENT_ID, CLIENT_SECRET

        cfg = ProcoreConfig(client_id=CLIENT_ID, company_id=box.procore.company_id, base_url=box.procore_server.url,
                            login_url=box.procore_server.url, sync_batch=1, spare_calls=0)
        client = ProcoreClient(cfg, ProcoreToken(cfg, CLIENT_SECRET, token_cache_for(cfg, "bench", Path(tmp))))
        t0 = time.perf_counter()
        before = _calls(box)
        vendor_ids: dict[str, Any] = {}
        for row in box.ps.rows("vendors"):
            out = client.sync(cfg.vendors_path + "/sync", {"company_id": cfg.company_id},
                              [{"origin_id": f"v-{row['VENDOR_ID']}", "name": row["NAME1"]}])
            vendor_ids[row["VENDOR_ID"]] = out.entities[0]["id"]
        codes: dict[tuple[str, str], Any] = {}
        for pid in PROJECTS:
            for account, name in ACCOUNTS.items():
                out = client.sync(cfg.cost_codes_path + "/sync", {"project_id": int(pid)},
                                  [{"origin_id": f"c-{pid}-{account}", "code": account, "name": name}])
                codes[(pid, account)] = out.entities[0]["id"]
        by_dept = {dept: pid for pid, (_, dept) in PROJECTS.items()}
        for (bu, po_id), po in sorted(box.purchasing.pos.items()):
            pid = by_dept[po["PO_LINE"][0]["PO_LINE_DISTRIB"][0]["DEPTID"]]
            out = client.sync(cfg.commitments_path + "/sync", {"project_id": int(pid)},
                              [{"origin_id": f"po-{bu}-{po_id}", "vendor_id": vendor_ids[po["VENDOR_ID"]],
                                "number": po_id, "title": po_id}])
            cid = out.entities[0]["id"]
            for line in po["PO_LINE"]:
                d = line["PO_LINE_DISTRIB"][0]
                client.sync(f"{cfg.commitments_path}/{cid}/line_items/sync", {"project_id": int(pid)},
                            [{"origin_id": f"l-{po_id}-{line['LINE_NBR']}", "cost_code_id": codes[(pid, d["ACCOUNT"])],
                              "description": line["DESCR254_MIXED"], "quantity": line["QTY_PO"],
                              "unit_cost": line["PRICE_PO"], "amount": d["MERCHANDISE_AMT"]}])
        calls = _calls(box) - before
        client.close()
        return {"calls": calls, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vendors", type=int, default=2000)
    ap.add_argument("--pos", type=int, default=500)
    ap.add_argument("--hourly-limit", type=int, default=3600)
    a = ap.parse_args()
    for k in list(os.environ):
        if k.startswith("MLCONNECTOR_"):
            del os.environ[k]
    pair = pair_load(a.vendors, a.pos, a.hourly_limit)
    naive = one_per_record(a.vendors, a.pos, a.hourly_limit)
    f, s = pair["first"], pair["second"]
    print(f"Initial load: {a.vendors} vendors, {a.pos} POs ({f['lines']} line items), "
          f"{len(ACCOUNTS) * len(PROJECTS)} cost codes; hourly limit {a.hourly_limit}")
    print(f"{'':28}{'Procore calls':>14}{'seconds':>10}{'share of hourly limit':>24}")
    for name, calls, secs in (("sync peoplesoft-procore", f["calls"], f["seconds"]),
                              ("one call per record", naive["calls"], naive["seconds"]),
                              ("second pass (no change)", s["calls"], s["seconds"])):
        print(f"{name:28}{calls:>14}{secs:>10.1f}{calls / a.hourly_limit:>23.1%}")
    print(f"pair exit codes {f['exit']}/{s['exit']}; Procore holds {f['vendors']} vendors, {f['commitments']} "
          f"commitments, {f['lines']} line items")
    print(f"vendors alone: {-(-a.vendors // 1000)} sync call(s) vs {a.vendors} calls one by one")


if __name__ == "__main__":
    main()
