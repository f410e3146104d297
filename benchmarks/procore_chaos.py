"""Chaos for `sync peoplesoft-procore`: passes killed at random instants, lost answers on every kind of write,
duplicated and missing webhook deliveries, with PeopleSoft and Procore changing in between; then passes run to
the end and the books are checked.

    python -m benchmarks.procore_chaos [--trials 25] [--seed 7]

Invariants checked at the end (each a count that must be 0):
- duplicate: two Procore vendors, cost codes, commitments or line items with one origin_id; two PeopleSoft POs
  for one commitment; two journals for one direct cost or change order;
- lost: a PeopleSoft vendor not in Procore, an in-scope approved PeopleSoft PO without its commitment, an
  approved commitment (with a linked vendor) without its PO, a commitment line missing from its PO, an approved
  direct cost or change order without its journal, a journal that does not balance;
- echo: a commitment made from a PO that was itself made from a commitment;
- traceback: any pass output with a traceback or an internal error.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.chaos import base_env, is_traceback, kill, quiet_sandbox_resets
from mlconnector.procore.webhook import event_from_payload, spool_path
from mlconnector.sandbox.procore_run import ACCOUNTS, PROJECTS, ProcoreBox, start_procore_sandbox
from mlconnector.sandbox.server import Fault
from mlconnector.sync.keys import handle
from mlconnector.webhook import append_event

CREATE = "Create__CompIntfc__PO_EXPRESS"
JOURNAL_CREATE = "Create__CompIntfc__JOURNAL_ENTRY"
TOWER = int(next(iter(PROJECTS)))
FAULTS = [
    {"path": "/vendors/sync", "method": "PATCH"},
    {"path": "/purchase_order_contracts/sync", "method": "PATCH"},
    {"path": "/line_items/sync", "method": "PATCH"},
    {"path": "/cost_codes/sync", "method": "PATCH"},
]


def _run(cfg: Path, env: dict[str, str], kill_after: float | None) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "mlconnector", "sync", "peoplesoft-procore", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    if kill_after is None:
        out, _ = proc.communicate(timeout=300)
        return proc.returncode, out.decode("utf-8", "replace")
    try:
        out, _ = proc.communicate(timeout=kill_after)
        return proc.returncode, out.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        rc = kill(proc)
        out = proc.stdout.read() if proc.stdout else b""
        return rc, out.decode("utf-8", "replace")


def _mutate(box: ProcoreBox, rng: random.Random, trial: int, state_file: Path, active: list[str]) -> str:
    sim = box.procore
    choice = rng.choice(["po", "po_change", "commitment", "commitment_change", "webhook", "vendor_change",
                         "direct_cost", "change_order"])
    if choice == "po" or not box.purchasing.pos:
        project, dept = rng.choice(list(PROJECTS.values()))
        box.add_po(f"{9_000_000 + trial:010d}", rng.choice(active), [
            {"descr": f"Chaos lot {trial}", "qty": rng.randint(1, 9), "price": "17.25",
             "account": rng.choice(sorted(ACCOUNTS))}], project=project, deptid=dept)
        return "new PeopleSoft PO"
    if choice == "po_change":
        keys = [k for k, po in box.purchasing.pos.items() if not str(po.get("PO_REF", "")).startswith("PCO-")]
        if keys:
            box.change_po(rng.choice(keys), qty=rng.randint(1, 20))
        return "PeopleSoft PO changed"
    if choice == "vendor_change":
        box.ps.touch("vendors", ("SHARE", rng.choice(active)), NAME1=f"Renamed {trial}")
        return "PeopleSoft vendor renamed"
    linked = [v for v in sim.vendors.values() if v.get("is_active")]  # PeopleSoft refuses an inactive supplier
    codes = [c for c in sim.cost_codes.values() if c["project_id"] == TOWER]
    if choice == "direct_cost" and codes:
        dc = sim.add_direct_cost(TOWER, None, invoice_number=f"INV-{trial}", lines=[
            {"cost_code_id": rng.choice(codes)["id"], "amount": f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}",
             "description": f"Cost {trial}"} for _ in range(rng.randint(1, 3))])
        ev = event_from_payload(sim.delivery("Direct Costs", dc["id"], TOWER))
        for _ in range(rng.choice([0, 1, 2])):
            append_event(spool_path(state_file), ev)  # type: ignore[arg-type]
        return "Procore direct cost approved"
    mine_contracts = [c for c in sim.contracts.values() if not str(c.get("origin_id") or "").startswith("psft-po")]
    if choice == "change_order" and codes and mine_contracts:
        sim.add_change_order(TOWER, rng.choice(mine_contracts)["id"], number=f"CO-{trial}", lines=[
            {"cost_code_id": rng.choice(codes)["id"], "amount": f"{rng.randint(1, 999)}.50", "description": "CO"}])
        return "Procore change order approved"
    if choice in ("commitment", "webhook") and linked and codes:
        c = sim.add_commitment(TOWER, rng.choice(linked)["id"], number=f"CH-{trial}", title=f"Chaos {trial}", lines=[
            {"cost_code_id": rng.choice(codes)["id"], "description": f"Chaos line {trial}", "quantity": "2",
             "unit_cost": "40"}])
        if choice == "webhook":
            ev = event_from_payload(sim.delivery("Purchase Order Contracts", c["id"], TOWER))
            for _ in range(rng.choice([0, 1, 2, 3])):  # missing, once, duplicated
                append_event(spool_path(state_file), ev)  # type: ignore[arg-type]
        return "Procore commitment approved"
    mine = [c for c in sim.contracts.values() if not str(c.get("origin_id") or "").startswith("psft-po")]
    if mine:
        c = rng.choice(mine)
        lines = sim.lines_of(c["id"])
        if lines:
            sim.change_commitment(c["id"], lines=[{"id": lines[0]["id"], "quantity": str(rng.randint(1, 9))}])
    return "Procore commitment changed"


def add_pos(box: ProcoreBox, n: int) -> list[str]:
    """``n`` PeopleSoft project POs across both projects and the active vendors; returns those vendors."""
    active = [r["VENDOR_ID"] for r in box.ps.rows("vendors") if r["VENDOR_STATUS"] == "A"]
    for i in range(n):
        project, dept = list(PROJECTS.values())[i % 2]
        box.add_po(f"{i + 1:010d}", active[i % len(active)], [
            {"descr": f"Lot {i}", "qty": 3, "price": "99.90", "account": sorted(ACCOUNTS)[i % 3]}],
            project=project, deptid=dept)
    return active


def audit_books(box: ProcoreBox) -> dict[str, int]:
    sim, pcs = box.procore, box.purchasing
    dup = lost = echo = 0
    for table in (sim.vendors, sim.cost_codes, sim.contracts, sim.line_items):
        origins = Counter(r.get("origin_id") for r in table.values() if r.get("origin_id"))
        dup += sum(n - 1 for n in origins.values() if n > 1)
    by_ref = Counter(po.get("PO_REF") for po in pcs.pos.values() if str(po.get("PO_REF", "")).startswith("PCO-"))
    dup += sum(n - 1 for n in by_ref.values() if n > 1)
    vendor_origins = {v.get("origin_id") for v in sim.vendors.values()}
    lost += sum(1 for r in box.ps.rows("vendors") if handle("psft-vendor", ("SHARE", r["VENDOR_ID"]))
                not in vendor_origins)
    contract_origins = {c.get("origin_id") for c in sim.contracts.values()}
    for (bu, po_id), po in pcs.pos.items():
        made_here = str(po.get("PO_REF", "")).startswith("PCO-")
        if made_here:
            echo += handle("psft-po", (bu, po_id)) in contract_origins
        elif po.get("PO_STATUS") in ("A", "D"):
            lost += handle("psft-po", (bu, po_id)) not in contract_origins
    for c in sim.contracts.values():
        if str(c.get("origin_id") or "").startswith("psft-po") or c.get("status") != "Approved":
            continue
        pos = pcs.pos_with_ref(f"PCO-{c['id']}")
        if not pos or len(pos[0]["PO_LINE"]) != len(sim.lines_of(c["id"])):
            lost += 1
    from decimal import Decimal

    journals = Counter(str(j.get("DESCR254")) for j in box.accounting.journals.values())
    dup += sum(n - 1 for n in journals.values() if n > 1)
    lost += sum(1 for j in box.accounting.journals.values()
                if sum(Decimal(str(ln["MONETARY_AMOUNT"])) for ln in j.get("JRNL_LN", [])) != 0)
    for prefix, docs in (("dc", sim.direct_costs), ("cco", sim.change_orders)):
        lost += sum(1 for d in docs.values() if d.get("status") == "approved" and not journals.get(
            f"procore-{prefix}-{d['id']}"))
    return {"duplicate": dup, "lost": lost, "echo": echo}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    quiet_sandbox_resets()  # a dropped answer is the point here, not news
    tracebacks = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlc-procore-chaos-") as tmp, start_procore_sandbox(vendors=30) as box:
        d = Path(tmp)
        cfg, state_file = d / "c.toml", d / "state.json"
        cfg.write_text(box.config_text(state_file).replace('instance = "procore-sandbox"',
                                                           'instance = "procore-sandbox"\npreflight = false'),
                       encoding="utf-8")
        env = base_env({**box.env(), "MLCONNECTOR_CACHE_DIR": str(d / "cache")})
        active = add_pos(box, 12)
        kills = 0
        for trial in range(a.trials):
            what = _mutate(box, rng, trial, state_file, active)
            box.procore_server.faults.clear()
            box.ps_server.faults.clear()
            if rng.random() < 0.5:
                box.procore_server.faults.add(Fault("drop_after", count=1, **rng.choice(FAULTS)))
            if rng.random() < 0.3:
                box.ps_server.faults.add(Fault("drop_after", method="POST", count=1,
                                               body_match=rng.choice([CREATE, JOURNAL_CREATE])))
            delay = rng.uniform(0.3, 6.0)
            rc, out = _run(cfg, env, delay)
            kills += rc < 0
            if is_traceback(out, rc):
                tracebacks += 1
                print(f"trial {trial}: traceback after {what}:\n{out}", file=sys.stderr)
        box.procore_server.faults.clear()
        box.ps_server.faults.clear()
        finals = [_run(cfg, env, None) for _ in range(3)]
        tracebacks += sum(is_traceback(out, rc) for rc, out in finals)
        books = audit_books(box)
        sim = box.procore
        print(f"{a.trials} trials ({kills} passes killed mid-way), then {len(finals)} passes to the end "
              f"(exit codes {[rc for rc, _ in finals]}), {time.monotonic() - started:.0f} s")
        print(f"Procore: {len(sim.vendors)} vendors, {len(sim.cost_codes)} cost codes, {len(sim.contracts)} "
              f"commitments, {len(sim.line_items)} line items, {len(sim.direct_costs)} direct costs, "
              f"{len(sim.change_orders)} change orders; PeopleSoft: {len(box.purchasing.pos)} POs, "
              f"{len(box.accounting.journals)} journals")
        print(f"duplicate {books['duplicate']}, lost {books['lost']}, echo {books['echo']}, tracebacks {tracebacks}")
        if finals[-1][0] != 0:
            print(finals[-1][1][-3000:])
        return 0 if not any(books.values()) and not tracebacks else 1


if __name__ == "__main__":
    raise SystemExit(main())
