"""Chaos harness for `sync peoplesoft-jaggaer`: kill-and-rerun trials and lost answers, counting duplicates.

    python -m benchmarks.chaos_jaggaer [--trials 8] [--seed N] [--json-out FILE] [--no-voucher-trials]
                                       [--kill-target ps_vendor]

Drives the real CLI (``python -m mlconnector``) as subprocesses against the loopback sandbox (JAGGAER simulator,
PeopleSoft QAS + purchasing CIs; 127.0.0.1 only). Each trial starts a fresh sandbox and then:

- **kill**: SIGKILL the pass either in the window after a write took effect and before its answer (a create of
  a PeopleSoft PO, voucher or supplier, a JAGGAER requisition or a JAGGAER supplier, chosen at random, the first
  or second of its kind) or at a random instant; then a JAGGAER PO is revised; then passes run to completion;
- **lost**: the answer to a random create is dropped after the server acted; then passes run to completion.

Then it counts, over the whole sandbox: POs per PO_REF, requisitions per external number, profiles per extCode
(duplicates), records that never arrived or PO revisions not applied (lost), and tracebacks in any output.
Prints one figure line per trial and a closing line
``duplicate vouchers N, duplicate POs N, duplicate requisitions N, duplicate suppliers N, duplicate vendors N,
lost N, tracebacks N`` (vendors: PeopleSoft suppliers per handle, the JAGGAER-only supplier's made through VNDR_ID);
exit status 0 only when all are 0. Vouchers are counted when the build has the voucher writer and its CI simulator
(half the trials with PeopleSoft's duplicate-invoice check switched off); without them that figure stays 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socketserver
import subprocess
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from mlconnector.sandbox.jaggaer_run import JaggaerBox, start_jaggaer_sandbox
from mlconnector.sandbox.server import Fault

PAIR = "peoplesoft-jaggaer"
TARGETS = {
    "ps_po": ("ps", "POST", ".*", "Create__CompIntfc__PO_EXPRESS"),
    "j_requisition": ("jaggaer", "POST", "requisitions", None),
    "j_supplier": ("jaggaer", "POST", "companyprofiles", '"CREATE"'),
    "ps_voucher": ("ps", "POST", ".*", "Create__CompIntfc__VCHR_EXPRESS"),
    "ps_vendor": ("ps", "POST", ".*", "Create__CompIntfc__VNDR_ID"),
}
ONCE = {"ps_vendor"}  # the sandbox makes one write of these kinds (its one JAGGAER-only supplier)


def _quiet_resets() -> None:
    original = socketserver.BaseServer.handle_error

    def handle_error(self: socketserver.BaseServer, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            original(self, request, client_address)

    socketserver.BaseServer.handle_error = handle_error  # type: ignore[method-assign]


def _traceback(text: str, rc: int | None) -> bool:
    return "Traceback (most recent call last)" in text or "Internal error:" in text or rc == 70


class Trial:
    def __init__(self, root: Path, rng: random.Random, n: int) -> None:
        self.dir = root / f"trial-{n:03d}"
        self.dir.mkdir(parents=True)
        self.rng = rng
        self.box: JaggaerBox = start_jaggaer_sandbox(seed=rng.randrange(1, 10_000), pos=6, only_pos=1)
        self.config = self.dir / "config.toml"
        self.config.write_text(self.box.config_text(self.dir / "state.json"), encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}
        self.env.update(self.box.env(), MLCONNECTOR_CACHE_DIR=str(self.dir / "cache"), PYTHONIOENCODING="utf-8",
                        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
        self.tracebacks = 0
        self.log: list[str] = []
        self.check = True
        if self.box.accounting is not None:
            # Half the trials run with PeopleSoft's duplicate-invoice check switched off for the business unit:
            # then the connector's own lookup before every create is the only guard.
            self.check = rng.random() < 0.5
            self.box.accounting.duplicate_check["US001"] = self.check

    def targets(self) -> list[str]:
        return [t for t in TARGETS if t != "ps_voucher" or self.box.accounting is not None]

    def args(self) -> list[str]:
        return [sys.executable, "-m", "mlconnector", "sync", PAIR, "--config", str(self.config)]

    def run(self, label: str) -> int:
        cp = subprocess.run(self.args(), env=self.env, capture_output=True, text=True, timeout=180,
                            stdin=subprocess.DEVNULL)
        text = cp.stdout + cp.stderr
        if _traceback(text, cp.returncode):
            self.tracebacks += 1
            self.log.append(f"{label}: {text[-2000:]}")
        return cp.returncode

    def server(self, side: str) -> Any:
        return self.box.ps_server if side == "ps" else self.box.jaggaer_server

    def kill_trial(self, target: str | None = None) -> str:
        target = target or self.rng.choice([*self.targets(), "random"])
        out = self.dir / "killed.out"
        if target == "random":
            with out.open("wb") as f:
                proc = subprocess.Popen(self.args(), env=self.env, stdin=subprocess.DEVNULL, stdout=f,
                                        stderr=subprocess.STDOUT)
            time.sleep(self.rng.uniform(0.2, 2.5))  # a random instant of the pass (the point of the trial)
            what = "random instant"
        else:
            side, method, path, body = TARGETS[target]
            nth = 0 if target in ONCE else self.rng.randrange(2)  # else at least two writes of each kind
            fault = Fault("hang_after", method=method, path=path, body_match=body, count=1, skip=nth, delay=3)
            self.server(side).faults.add(fault)
            with out.open("wb") as f:
                proc = subprocess.Popen(self.args(), env=self.env, stdin=subprocess.DEVNULL, stdout=f,
                                        stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 90
            while not fault.reached.wait(0.05) and proc.poll() is None and time.monotonic() < deadline:
                pass
            what = f"after {target} write #{nth + 1} took effect" if fault.reached.is_set() else \
                f"(pass ended before {target} write #{nth + 1})"
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait(30)
        text = out.read_text(encoding="utf-8", errors="replace")
        if rc != -signal.SIGKILL and _traceback(text, rc):
            self.tracebacks += 1
            self.log.append(f"killed pass: {text[-2000:]}")
        self.box.ps_server.faults.clear()
        self.box.jaggaer_server.faults.clear()
        self.mutate()
        return f"kill {what}{self.check_text()}"

    def lost_trial(self, target: str | None = None, check: bool | None = None) -> str:
        if check is not None and self.box.accounting is not None:
            self.check = check
            self.box.accounting.duplicate_check["US001"] = check
        target = target or self.rng.choice(self.targets())
        side, method, path, body = TARGETS[target]
        self.server(side).faults.add(Fault("drop_after", method=method, path=path, body_match=body, count=1,
                                           skip=0 if target in ONCE else self.rng.randrange(2)))
        self.run("lost answer pass")
        self.server(side).faults.clear()
        self.mutate()
        return f"lost {target} answer{self.check_text()}"

    def check_text(self) -> str:
        if self.box.accounting is None:
            return ""
        return f" (duplicate-invoice check {'on' if self.check else 'off'})"

    def mutate(self) -> None:
        revise(self.box, self.rng)

    def complete(self) -> None:
        # The first pass settles what the fault left (pending marks, queue); the second must find it all done.
        for n in range(2):
            self.run(f"completion pass {n + 1}")

    def figures(self) -> dict[str, int]:
        return {**figures(self.box, self.log), "tracebacks": self.tracebacks}


def revise(box: JaggaerBox, rng: random.Random) -> None:
    """A buyer revises a JAGGAER PO (one more of every line): the revision must reach its PeopleSoft PO."""
    j = box.jaggaer
    number = rng.choice(sorted(j.pos))
    lines = [{"description": ln["description"], "quantity": ln["quantity"] + 1,
              "unitPrice": ln["unitPrice"]["money"], "unitOfMeasure": ln["unitOfMeasure"],
              "accountCode": ln["accountCode"]} for ln in j.pos[number]["lines"]]
    j.revise_po(number, lines=lines)


def figures(box: JaggaerBox, log: list[str]) -> dict[str, int]:
    """Duplicates and losses over the whole sandbox, independently of the connector's state; ``log`` gets why."""
    refs = Counter(p["PO_REF"] for p in box.purchasing.pos.values())
    reqs = Counter(r["externalRequisitionNumber"] for r in box.jaggaer.requisitions.values())
    sups = Counter(s["extCode"] for s in box.jaggaer.suppliers.values() if s["extCode"])
    lost = 0
    for number, jpo in box.jaggaer.pos.items():
        ps = [p for p in box.purchasing.pos.values() if p["PO_REF"] == f"JAG-{number}"]  # po_handle_prefix
        if not ps:
            lost += 1
            log.append(f"PO {number} never reached PeopleSoft")
            continue
        got = [Decimal(str(ln["QTY_PO"])) for ln in ps[0]["PO_LINE"]]
        if got != [Decimal(str(ln["quantity"])) for ln in jpo["lines"]]:
            lost += 1
            log.append(f"PO {number}: revision {jpo['header']['revision']} not applied")
    wanted = {f"PSREQ-{r['BUSINESS_UNIT']}-{r['REQ_ID']}" for r in box.ps.rows("requisitions")
              if r["REQ_STATUS"] in ("A", "P")}
    lost += len(wanted - set(reqs))
    active = {v["VENDOR_ID"] for v in box.ps.rows("vendors") if v["VENDOR_STATUS"] == "A"}
    lost += len(active - set(sups))
    # PeopleSoft suppliers per handle: the JAGGAER-only supplier must have exactly one, named in its extCode.
    handles = Counter(v["VENDOR_NAME_SHORT"] for v in box.purchasing.vendors.values() if v["VENDOR_NAME_SHORT"])
    made = [v for v in box.purchasing.vendors.values() if v["VENDOR_NAME_SHORT"] == f"JGRS-{box.jaggaer_only}"]
    if not made or box.jaggaer.suppliers[box.jaggaer_only]["extCode"] not in {v["VENDOR_ID"] for v in made}:
        lost += 1
        log.append("the JAGGAER-only supplier has no PeopleSoft vendor named in its extCode")
    dup_vouchers = 0
    if box.accounting is not None:
        vouchers = Counter((v["VENDOR_ID"], v["INVOICE_ID"]) for v in box.accounting.vouchers.values())
        dup_vouchers = sum(n - 1 for n in vouchers.values() if n > 1)
        missing = {i["header"]["supplierInvoiceNumber"] for i in box.jaggaer.invoices.values()} - {
            k[1] for k in vouchers}
        lost += len(missing)
        log += [f"invoice {m} never became a voucher" for m in sorted(missing)]
    return {"duplicate_vouchers": dup_vouchers, "duplicate_pos": sum(n - 1 for n in refs.values() if n > 1),
            "duplicate_requisitions": sum(n - 1 for n in reqs.values() if n > 1),
            "duplicate_suppliers": sum(n - 1 for n in sups.values() if n > 1),
            "duplicate_vendors": sum(n - 1 for n in handles.values() if n > 1), "lost": lost}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--voucher-trials", action=argparse.BooleanOptionalAction, default=True,
                    help="add a lost voucher answer with the duplicate-invoice check on, then off")
    ap.add_argument("--kill-target", choices=sorted(TARGETS),
                    help="every trial kills the pass after a write of this kind took effect")
    a = ap.parse_args(argv)
    _quiet_resets()
    rng = random.Random(a.seed)
    totals: Counter[str] = Counter()
    trials: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chaos-jaggaer-") as tmp:
        # The random trials, then a lost voucher answer with the duplicate-invoice check on and off.
        plan: list[tuple[str | None, bool | None]] = [(None, None)] * a.trials
        if a.voucher_trials:
            plan += [("ps_voucher", True), ("ps_voucher", False)]
        for n, (target, check) in enumerate(plan):
            t = Trial(Path(tmp), rng, n)
            if target == "ps_voucher" and t.box.accounting is None:
                t.box.stop()
                continue
            try:
                if target is not None:
                    what = t.lost_trial(target, check)
                else:
                    what = (t.kill_trial(a.kill_target) if a.kill_target else
                            t.kill_trial() if n % 2 == 0 else t.lost_trial())
                t.complete()
                figs = t.figures()
            finally:
                t.box.stop()
            totals.update(figs)
            trials.append({"trial": n, "what": what, **figs, "notes": t.log[-5:]})
            print(f"trial {n}: {what}: " + ", ".join(f"{k} {v}" for k, v in figs.items()), flush=True)
            for note in t.log[-5:]:
                print(f"  {note[:400]}")
    doc = {"seed": a.seed, "trials": trials, "totals": dict(totals)}
    if a.json_out:
        a.json_out.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    keys = ("duplicate_vouchers", "duplicate_pos", "duplicate_requisitions", "duplicate_suppliers",
            "duplicate_vendors", "lost", "tracebacks")
    print(", ".join(f"{k.replace('_', ' ').replace('pos', 'POs')} {totals[k]}" for k in keys))
    return 0 if all(totals[k] == 0 for k in keys) else 1


if __name__ == "__main__":
    sys.exit(main())
