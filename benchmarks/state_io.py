"""Load and save a state file with 100,000 key-map entries (target: well under a second each).

    python -m benchmarks.state_io [--entries 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mlconnector.state import State


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=100_000)
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
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        loaded = State.load(path)
        load_s = time.perf_counter() - t
        assert len(loaded.keys["purchase_orders"]) == a.entries
        print(f"{a.entries} entries, {path.stat().st_size / 1e6:.1f} MB: save {save_s:.2f} s (with fsync), "
              f"load {load_s:.2f} s  (target: each well under 1 s)")


if __name__ == "__main__":
    main()
