"""Load and save a state file with 100,000 key-map entries (target: well under a second each).

    python -m benchmarks.state_io [--entries 100000] [--changed 1000]

Prints: the save that writes every entry (the first save, or the rewrite of a file in another layout),
the load, and the save of a pass that changed ``--changed`` entries of the 100,000 (what a cron run
does), with the Python objects the load creates (tracemalloc).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from mlconnector.state import State


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--changed", type=int, default=1_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.json"
        st = State(path)
        for i in range(a.entries):
            st.set_entry("purchase_orders", f"US001|{i:010d}", {
                "issue": f"PROC-{i + 1}", "hash": "3f2a9c0b1d4e5f60718a", "status": "A",
                "ts": "2026-11-20T10:00:00+00:00"})
        t = time.perf_counter()
        st.save()
        full_s = time.perf_counter() - t
        del st
        tracemalloc.start()
        t = time.perf_counter()
        loaded = State.load(path)
        load_s = time.perf_counter() - t
        held_mb = tracemalloc.get_traced_memory()[0] / 1e6
        tracemalloc.stop()
        assert loaded.keymap.count("purchase_orders") == a.entries
        t = time.perf_counter()
        for i in random.Random(1).sample(range(a.entries), a.changed):
            entry = loaded.entry("purchase_orders", f"US001|{i:010d}")
            assert entry is not None
            entry["status"] = "B"
        for i in range(a.changed // 10):  # and some new records
            loaded.set_entry("purchase_orders", f"US002|{i:010d}", {"issue": f"NEW-{i}", "hash": "x"})
        loaded.dirty = True
        lookups_s = time.perf_counter() - t
        t = time.perf_counter()
        loaded.save()
        incr_s = time.perf_counter() - t
        print(f"{a.entries} entries, {path.stat().st_size / 1e6:.1f} MB on disk (target: each well under 1 s)")
        print(f"  load: {load_s:.3f} s; {held_mb:.1f} MB of Python objects (the key map stays one unparsed "
              f"buffer the size of the file, outside the Python heap)")
        print(f"  save after a pass that changed {a.changed} entries and added {a.changed // 10}: {incr_s:.3f} s "
              f"(with fsync; lookups {lookups_s:.3f} s)")
        print(f"  save writing every entry anew (first save, or rewriting another layout): {full_s:.3f} s")


if __name__ == "__main__":
    main()
