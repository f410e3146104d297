"""The peoplesoft-jaggaer chaos harness (benchmarks/chaos_jaggaer.py) in its reduced form: one pass killed after a
write took effect, then passes to completion: nothing duplicated, nothing lost, no traceback (lost answers are
tested in test_peoplesoft_jaggaer.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_killed_pass_and_its_reruns_duplicate_and_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    # Lost voucher answers with the duplicate check on and off are tested in test_peoplesoft_jaggaer.py.
    proc = subprocess.run([sys.executable, "-m", "benchmarks.chaos_jaggaer", "--trials", "1", "--seed", "5",
                           "--no-voucher-trials", "--json-out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    closing = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert closing == ("duplicate vouchers 0, duplicate POs 0, duplicate requisitions 0, duplicate suppliers 0, "
                       "duplicate vendors 0, lost 0, tracebacks 0"), proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert [t["what"].split()[0] for t in doc["trials"]] == ["kill"]


def test_a_pass_killed_after_the_vendor_create_took_effect_leaves_one_peoplesoft_vendor(tmp_path: Path) -> None:
    # The JAGGAER-only supplier's VNDR_ID Create lands, the pass dies before the answer; the reruns adopt the
    # vendor by its handle (one PeopleSoft vendor, named in the profile's extCode) and post its waiting PO.
    out = tmp_path / "chaos.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.chaos_jaggaer", "--trials", "1", "--seed", "9",
                           "--no-voucher-trials", "--kill-target", "ps_vendor", "--json-out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    (trial,) = json.loads(out.read_text(encoding="utf-8"))["trials"]
    assert trial["what"].startswith("kill after ps_vendor write #1 took effect")
    assert trial["duplicate_vendors"] == 0 and trial["lost"] == 0
