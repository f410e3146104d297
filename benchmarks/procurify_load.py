"""Initial load of Procurify requisitions into PeopleSoft POs, against a one-call-at-a-time script.

    python -m benchmarks.procurify_load [--requisitions 500] [--latency 0.05] [--workers 4]

Two fresh sandboxes with the same requisitions; every PeopleSoft CI call costs ``--latency`` seconds (the
application server's time per Component Interface call). Side by side:

- **ml-connector**: `sync procurify-peoplesoft` (in process), CI writes with ``ci_workers`` calls in flight;
- **script**: what a hand-written integration does with the same client, one call at a time: read the order
  items, then per requisition a Find by PO_REF and vendor (so a rerun does not post twice) and a Create.

Prints wall time and calls (PeopleSoft CI, Procurify) of the initial load per side, then the calls of a
second run with nothing new (the script must look every requisition up again; a pass makes O(1) calls).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.sandbox.procurify_run import ProcurifyBox, start_procurify_sandbox


@contextmanager
def _box(n: int, workers: int) -> Iterator[tuple[ProcurifyBox, Path]]:
    box = start_procurify_sandbox(requisitions=n)
    d = Path(tempfile.mkdtemp(prefix="mlconnector-bench-procurify-"))
    (d / "config.toml").write_text(box.config_text(d / "state.json", extra_pair=f"pending_grace_seconds = 0\n"
                                                                                f"ci_workers = {workers}"),
                                   encoding="utf-8")
    old = {k: os.environ.get(k) for k in (*box.env(), "MLCONNECTOR_CACHE_DIR")}
    os.environ.update(box.env(), MLCONNECTOR_CACHE_DIR=str(d / "cache"))
    try:
        yield box, d
    finally:
        box.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _calls(box: ProcurifyBox) -> tuple[int, int]:
    return sum(box.purchasing.calls.values()), sum(box.procurify.calls.values())


def connector(n: int, latency: float, workers: int) -> dict[str, Any]:
    with _box(n, workers) as (box, d):
        cfg = config_mod.load(d / "config.toml")
        box.ps_server.latency = latency
        t = time.perf_counter()
        r = runner.sync("procurify-peoplesoft", cfg)
        seconds = time.perf_counter() - t
        ps1, pr1 = _calls(box)
        r2 = runner.sync("procurify-peoplesoft", config_mod.load(d / "config.toml"))
        ps2, pr2 = _calls(box)
        assert r.exit_code == 0 and r2.exit_code == 0, (r.failures[:3], r2.failures[:3])
        return {"side": f"ml-connector (ci_workers {workers})", "seconds": round(seconds, 1),
                "pos": len(box.purchasing.pos), "ci_calls": ps1, "procurify_calls": pr1,
                "nochange_ci_calls": ps2 - ps1, "nochange_procurify_calls": pr2 - pr1}


def script(n: int, latency: float) -> dict[str, Any]:
    """The one-call-at-a-time integration, reusing the product's clients and mapping (so only the call pattern
    differs)."""
    from mlconnector.audit import Redactor
    from mlconnector.credentials import SecretStore
    from mlconnector.pairs.procurify_peoplesoft import connect, group_key, map_group, settings
    from mlconnector.state import State
    from mlconnector.sync.xref import Crosswalk

    def run(box: ProcurifyBox, d: Path) -> None:
        cfg = config_mod.load(d / "config.toml")
        s = settings(cfg)
        xref = Crosswalk(State.load(d / "script-state.json"), s.crosswalk_tables(), {})
        with connect(cfg, SecretStore(cfg.instance), Redactor()) as (procurify, ci):
            items = [it for page in procurify.order_items(datetime(2000, 1, 1), datetime.now()) for it in page]
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for it in items:
                groups.setdefault(group_key(s, it), []).append(it)
            for key, its in sorted(groups.items()):
                w = map_group(s, xref, key, its, {}, datetime.now().date())
                found = ci.find(s.po_ci, {s.po.business_unit: s.business_unit, s.po.handle: w.handle,
                                          s.po.vendor_id: w.vendor_id})
                if any(r.get(s.po.handle) == w.handle for r in found):
                    continue
                ci.create(s.po_ci, {**w.header, s.po.po_id: "NEXT", s.po.lines: w.lines})

    with _box(n, 1) as (box, d):
        box.ps_server.latency = latency
        t = time.perf_counter()
        run(box, d)
        seconds = time.perf_counter() - t
        ps1, pr1 = _calls(box)
        run(box, d)
        ps2, pr2 = _calls(box)
        return {"side": "script (one call at a time)", "seconds": round(seconds, 1), "pos": len(box.purchasing.pos),
                "ci_calls": ps1, "procurify_calls": pr1, "nochange_ci_calls": ps2 - ps1,
                "nochange_procurify_calls": pr2 - pr1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requisitions", type=int, default=500)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per PeopleSoft CI call (default 0.05)")
    ap.add_argument("--workers", type=int, default=4, help="ci_workers of the connector side (default 4)")
    a = ap.parse_args(argv)
    rows = [connector(a.requisitions, a.latency, a.workers), script(a.requisitions, a.latency)]
    cols = ["side", "seconds", "pos", "ci_calls", "procurify_calls", "nochange_ci_calls", "nochange_procurify_calls"]
    print(f"Initial load: {a.requisitions} approved requisitions, CI latency {a.latency * 1000:g} ms per call\n")
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
