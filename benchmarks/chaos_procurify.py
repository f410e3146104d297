"""Chaos for `sync procurify-peoplesoft`: kill at any instant, lost CI answers; nothing lost, nothing twice.

    python -m benchmarks.chaos_procurify [--trials 50] [--seed S] [--quick] [--keep]

Drives the real CLI (``python -m mlconnector``) as subprocesses against the loopback Procurify and
purchasing-CI simulators (127.0.0.1 only). Each trial first changes Procurify as buyers would (a new
requisition, sometimes for a vendor PeopleSoft does not have yet, sometimes a changed quantity), may plant a
lost CI answer (PeopleSoft commits a PO or supplier Create, then the answer is dropped, or held while the pass
is killed), starts a pass, SIGKILLs it at a random instant of its work and at once starts the next trial.
Then two passes with no faults finish the work.

Prints, per run: approved requisition groups, POs, lost groups (no PO, or a PO whose lines differ from the
requisition), duplicate POs (two POs for one group), duplicate vendors (two suppliers with one handle),
leaked secrets (client secret, PeopleSoft password and its Basic form, every token the simulator issued,
searched in every output, state file and audit trail), tracebacks; then the closing line
``lost N, duplicate POs N, duplicate vendors N, leaked N, tracebacks N``; exit status 0 only when all are 0.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.chaos import Harness, b64, base_env, kill, quiet_sandbox_resets, wait_for
from mlconnector.sandbox.procurify_run import PS_PASSWORD, PS_USER, VENDORS, ProcurifyBox, start_procurify_sandbox
from mlconnector.sandbox.procurify_sim import CLIENT_SECRET
from mlconnector.sandbox.server import Fault
from mlconnector.state import State

PAIR = "procurify-peoplesoft"
PO_CREATE = "Create__CompIntfc__PO_EXPRESS"
VENDOR_CREATE = "Create__CompIntfc__VNDR_ID"
PO_UPDATE = "Updatedata__CompIntfc__PO_EXPRESS"
LATENCY = 0.01  # s per request on both servers: widens the windows between a commit and the state save


def _work(box: ProcurifyBox, rng: random.Random, trial: int) -> None:
    """What buyers do between two passes."""
    sim = box.procurify
    vendor = rng.choice(sorted(sim.vendors))
    if rng.random() < 0.3:
        vendor = sim.add_vendor(f"Chaos Vendor {trial} " + "Industrial Supply " * rng.randrange(0, 3))["id"]
    n = rng.randrange(1, 4)
    lines = []
    for j in range(n):
        code, dept = rng.choice([("6100", 1), ("6200", 2), ("6300", 3)])  # the mapped budget lines
        lines.append({"name": f"Part {trial}-{j}", "quantity": rng.randrange(1, 20),
                      "price": f"{rng.randrange(100, 9999) / 100}", "unit": "EA", "account_code": code,
                      "department_id": dept})
    sim.add_requisition(vendor, lines)
    if rng.random() < 0.3 and sim.items:
        item = sim.items[rng.choice(sorted(sim.items))]
        sim.change_item(item["id"], quantity=rng.randrange(1, 30))


def _plant_fault(box: ProcurifyBox, rng: random.Random) -> str:
    """Maybe a lost answer for one CI write of this pass; returns its name ('' for none)."""
    r = rng.random()
    if r < 0.45:
        return ""
    target = rng.choice([PO_CREATE, PO_CREATE, VENDOR_CREATE, PO_UPDATE])
    kind = "drop_after" if r < 0.8 else "hang_after"
    box.ps_server.faults.add(Fault(kind, method="POST", body_match=target, count=1, skip=rng.randrange(0, 3),
                                   delay=2.0))
    return f"{kind} {target.split('__')[0]} {target.rsplit('__', 1)[-1]}"


def account(box: ProcurifyBox) -> dict[str, Any]:
    """Every approved requisition group against PeopleSoft, independently of the connector's state."""
    sim, ps = box.procurify, box.purchasing
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for it in sim.items.values():
        if it["status"] == 0:
            groups.setdefault((it["orderNum"], it["pref_vendor"]["id"]), []).append(it)
    handles = Counter(v.get("VENDOR_NAME_SHORT") for v in ps.vendors.values() if v.get("VENDOR_NAME_SHORT"))
    dup_vendors = sum(n - 1 for n in handles.values() if n > 1)
    by_handle = {v.get("VENDOR_NAME_SHORT"): v["VENDOR_ID"] for v in ps.vendors.values()}
    pos: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for po in ps.pos.values():
        pos.setdefault((po["PO_REF"], po["VENDOR_ID"]), []).append(po)
    lost = dup = stale = 0
    for (req, pid), items in groups.items():
        vid = VENDORS[pid][0] if pid in VENDORS else by_handle.get(f"PRCV-{pid}")
        found = pos.get((f"PRC-{req}-{pid}", vid or "?"), [])  # PO_REF = prefix + requisition + vendor
        if not found:
            lost += 1
            continue
        dup += len(found) - 1
        want = sorted((i["name"], Decimal(i["approved_quantity"])) for i in items)
        have = sorted((ln["DESCR254_MIXED"], Decimal(ln["QTY_PO"])) for ln in found[0].get("PO_LINE", []))
        if want != have:
            stale += 1
    return {"groups": len(groups), "pos": len(ps.pos), "vendors_created": len(handles), "lost": lost + stale,
            "lost_no_po": lost, "lost_stale_lines": stale, "duplicate_pos": dup, "duplicate_vendors": dup_vendors}


def leaks(h: Harness, box: ProcurifyBox, d: Path) -> list[str]:
    needles = {CLIENT_SECRET, PS_PASSWORD, b64(PS_USER, PS_PASSWORD), *box.procurify.tokens}
    texts = list(h.outputs)
    for path in sorted(d.rglob("*")):
        # The token cache (a 0600 file in the cache directory) is where the token is meant to be.
        if path.is_file() and path.suffix != ".toml" and "cache" not in path.relative_to(d).parts:
            texts.append((str(path.relative_to(d)), path.read_text(encoding="utf-8", errors="replace")))
    return [f"{where}: {n[:4]}..." for where, text in texts for n in needles if n and n in text]


def scenario(h: Harness, trials: int, quick: bool = False) -> dict[str, Any]:
    """The kill-and-rerun trials with lost CI answers; one row of figures."""
    d = h.workdir("procurify-kill")
    box = start_procurify_sandbox(requisitions=12 if quick else 40, latency=LATENCY)
    env = base_env({**box.env(), "MLCONNECTOR_CACHE_DIR": str(d / "cache")})
    config = d / "config.toml"
    config.write_text(box.config_text(d / "state.json", extra_pair="pending_grace_seconds = 0\n"
                                                                   "vendor_read_every_minutes = 0\nci_workers = 4"),
                      encoding="utf-8")
    args = ["sync", PAIR, "--config", str(config)]
    killed = finished = unloadable = 0
    faults: Counter[str] = Counter()
    est = 2.0
    t0 = time.monotonic()
    try:
        for trial in range(trials):
            box.ps_server.faults.clear()
            _work(box, h.rng, trial)
            planted = _plant_fault(box, h.rng)
            if planted:
                faults[planted] += 1
            before = len(box.ps_server.log) + len(box.procurify_server.log)
            out = d / f"kill-{trial}.out"
            proc, _ = h.start(f"{PAIR} kill trial {trial}", args, env, out)
            # Count from the pass's first request, so the kill lands inside it rather than in start-up.
            wait_for(lambda b=before, p=proc: len(box.ps_server.log) + len(box.procurify_server.log) > b
                     or p.poll() is not None, 60)
            delay = h.rng.uniform(0.0, est)
            started = time.monotonic()
            wait_for(lambda p=proc: p.poll() is not None, delay)
            if proc.poll() is not None:
                est = max(0.3, time.monotonic() - started)
            rc = kill(proc)
            h.collect(f"{PAIR} kill trial {trial}", proc, out)
            killed += rc < 0
            finished += rc >= 0
            try:
                State.load(d / "state.json")
            except Exception:  # noqa: BLE001 - counted: a kill must never leave an unreadable state
                unloadable += 1
        box.ps_server.faults.clear()
        box.ps_server.latency = box.procurify_server.latency = 0.0
        first = h.run(f"{PAIR} completion pass", args, env)
        second = h.run(f"{PAIR} settling pass", args, env)
        state = State.load(d / "state.json")
        row = {"pair": PAIR, "trials": trials, "killed": killed, "finished_before_kill": finished,
               "faults_planted": sum(faults.values()), "fault_kinds": dict(faults),
               "state_unloadable_after_kill": unloadable, "completion_exit": first.rc, "settle_exit": second.rc,
               "settle_writes": sum(second.json().get("counts", {}).get(k, {}).get("created", 0) +
                                    second.json().get("counts", {}).get(k, {}).get("updated", 0)
                                    for k in ("requisitions", "vendors")),
               "pending": len(state.pending("requisitions")) + len(state.pending("vendors")),
               "queue_after": len(state.replay), **account(box)}
        row["leaked"] = leaks(h, box, d)
        row["tracebacks"] = list(h.tracebacks)
        row["seconds"] = round(time.monotonic() - t0, 1)
        return row
    finally:
        box.stop()


def problems(row: dict[str, Any]) -> list[str]:
    out = []
    if row["completion_exit"] != 0 or row["settle_exit"] != 0:
        out.append(f"completion/settle exit {row['completion_exit']}/{row['settle_exit']}")
    if row["pending"] or row["queue_after"] or row["settle_writes"] or row["state_unloadable_after_kill"]:
        out.append(f"pending {row['pending']}, queued {row['queue_after']}, settle writes {row['settle_writes']}, "
                   f"unloadable {row['state_unloadable_after_kill']}")
    return out


def fold_totals(t: dict[str, int], doc: dict[str, Any]) -> dict[str, int]:
    """Add this pair's figures (doc["procurify"]) to benchmarks/chaos.py's closing totals."""
    row = doc.get("procurify")
    if not row:
        return t
    doc.setdefault("problems", []).extend(f"procurify: {p}" for p in problems(row))
    return {**t, "lost": t["lost"] + row["lost"], "duplicated": t["duplicated"] + row["duplicate_pos"] +
            row["duplicate_vendors"], "leaked": t["leaked"] + len(row["leaked"]),
            "other_problems": t.get("other_problems", 0) + len(problems(row))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=None, help="kill trials (default 50; 8 with --quick)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (printed; reuse it to replay a run)")
    ap.add_argument("--quick", action="store_true", help="fewer trials and requisitions")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args(argv)
    trials = a.trials if a.trials is not None else (8 if a.quick else 50)
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    root = Path(tempfile.mkdtemp(prefix="mlconnector-chaos-procurify-"))
    h = Harness(root, seed)
    quiet_sandbox_resets()
    try:
        row = scenario(h, trials, a.quick)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    for k, v in row.items():
        print(f"  {k:28} {v}")
    probs = problems(row)
    for p in probs:
        print(f"  problem: {p}")
    print(f"\nseed {seed}\nJSON:\n{json.dumps(row, default=str)}")
    print(f"lost {row['lost']}, duplicate POs {row['duplicate_pos']}, duplicate vendors {row['duplicate_vendors']}, "
          f"leaked {len(row['leaked'])}, tracebacks {len(row['tracebacks'])}")
    bad = row["lost"] or row["duplicate_pos"] or row["duplicate_vendors"] or row["leaked"] or row["tracebacks"]
    return 1 if bad or probs else 0


if __name__ == "__main__":
    sys.exit(main())
