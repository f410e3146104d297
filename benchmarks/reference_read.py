"""The vendor master without a change stamp: the cost of reading it in full and diffing it, against the
stamped window read, and the pass in which one vendor changed.

    python -m benchmarks.reference_read [--vendors 5000 50000] [--documents 2000]

For each vendor count, one sandbox (vendors unstamped, as PS_VENDOR; purchase orders spread over a year,
each showing one of the vendors) and one state file, and these passes, each its own CLI process:

- initial load: the full vendor read plus every purchase order created;
- between full reads (full_read_every_hours = 1, not due): what most cron passes cost;
- full read due, nothing changed: the full read and diff alone (reads only, no write);
- full read due, one vendor renamed: the diff finds it and the open purchase orders that show it are
  re-mapped from the state and edited, without re-reading them;
- stamped window read, nothing changed (a vendor view with LAST_DTTM_UPDATE, read = "stamped").

Each line: PeopleSoft and Jira requests, wall seconds, and the pass's peak RSS. Then the key-map bytes per
purchase order with and without the copy of its source inputs that makes the re-map possible.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import Run, run_cli, workspace
from mlconnector.keymap import enc_entry
from mlconnector.sandbox.run import Sandbox, start_sandbox
from mlconnector.state import State
from mlconnector.sync.reference import SOURCE, ref_field

ONLY_POS = ('max_maxrows = 200000\n'
            '[peoplesoft.records.purchase_orders]\ncomments_query = ""\n'
            '[peoplesoft.records.requisitions]\nenabled = false\n'
            '[peoplesoft.records.vouchers]\nenabled = false\n')


def _config(work: Path, name: str, vendors: str) -> Path:
    base = (work / "base.toml").read_text(encoding="utf-8")
    path = work / name
    path.write_text(base + vendors, encoding="utf-8")
    return path


def _pass(box: Sandbox, work: Path, config: Path, label: str) -> dict[str, Any]:
    box.ps_server.clear_log()
    box.jira_server.clear_log()
    (work / "config.toml").write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
    run: Run = run_cli(box, work)
    if run.exit_code != 0:
        raise SystemExit(f"{label}: exit {run.exit_code}: {json.dumps(run.summary)[:2000]}")
    counts = run.summary.get("counts", {})
    writes = [r for r in box.jira_server.requests() if r.method in ("POST", "PUT") and "/search" not in r.path]
    return {"pass": label, "ps": len(box.ps_server.requests()), "jira": len(box.jira_server.requests()),
            "jira_writes": len(writes), "seconds": run.seconds, "inside": run.summary.get("seconds", 0.0),
            "rss": run.peak_rss_mb, "vendors": counts.get("vendors", {}),
            "remapped": counts.get("purchase_orders", {}).get("remapped", 0),
            "updated": counts.get("purchase_orders", {}).get("updated", 0)}


def _age_full_read(state_file: Path) -> None:
    st = State.load(state_file)
    st.watermarks.pop("vendors.full", None)
    st.save()


def state_size(state_file: Path) -> dict[str, float]:
    st = State.load(state_file)
    with_src = without = n = opened = 0
    for _key, entry in st.keymap.items("purchase_orders"):
        n += 1
        opened += SOURCE in entry
        with_src += len(enc_entry(entry)) + 20  # + the key and separators of its line
        bare = {k: v for k, v in entry.items() if k not in (SOURCE, ref_field("vendors"))}
        without += len(enc_entry(bare)) + 20
    return {"entries": n, "open": opened, "with": with_src / max(n, 1), "without": without / max(n, 1),
            "file_mb": state_file.stat().st_size / 1e6}


def measure(vendors: int, documents: int) -> dict[str, Any]:
    with start_sandbox(counts={"vendors": vendors, "requisitions": 0, "purchase_orders": 0, "vouchers": 0}) as box:
        now = datetime.now(UTC)
        box.ps.bulk_load("purchase_orders", documents, now - timedelta(days=365), now - timedelta(days=1))
        work = workspace(box, extra_ps=ONLY_POS)
        text = (work / "config.toml").read_text(encoding="utf-8")
        since = (now - timedelta(days=400)).date().isoformat()
        text = "\n".join(f'initial_since = "{since}"' if line.startswith("initial_since") else line
                         for line in text.replace("maxrows = 100\n", "maxrows = 1000\n").splitlines()) + "\n"
        (work / "base.toml").write_text(text, encoding="utf-8")
        every = _config(work, "every.toml", "[peoplesoft.records.vendors]\nfull_read_every_hours = 0\n")
        hourly = _config(work, "hourly.toml", "[peoplesoft.records.vendors]\nfull_read_every_hours = 1\n")
        rows = [_pass(box, work, every, "initial load")]
        rows.append(_pass(box, work, hourly, "between full reads (not due)"))
        rows.append(_pass(box, work, every, "full read due, no change"))
        # The vendor with the most purchase orders, renamed at the source (its documents do not change).
        shown: dict[tuple[str, str], int] = {}
        for po in box.ps.rows("purchase_orders"):
            shown[(po["VENDOR_SETID"], po["VENDOR_ID"])] = shown.get((po["VENDOR_SETID"], po["VENDOR_ID"]), 0) + 1
        vendor = max(shown, key=lambda v: shown[v])
        box.ps.touch("vendors", vendor, NAME1="Renamed For The Benchmark")
        rows.append(_pass(box, work, every, f"full read due, one vendor renamed ({shown[vendor]} POs)"))
        size = state_size(work / "state.json")
        # The stamped alternative: the same table read by window (a view with LAST_DTTM_UPDATE).
        box.ps.vendor_stamp = True
        stamped = _config(work, "stamped.toml", '[peoplesoft.records.vendors]\nread = "stamped"\n'
                                                'query = "ML_VENDOR_CHANGED"\n')
        _age_full_read(work / "state.json")
        rows.append(_pass(box, work, stamped, "stamped window read, first (every vendor once)"))
        rows.append(_pass(box, work, stamped, "stamped window read, no change"))
        return {"vendors": vendors, "documents": documents, "rows": rows, "size": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vendors", type=int, nargs="+", default=[5000, 50_000])
    ap.add_argument("--documents", type=int, default=2000)
    a = ap.parse_args()
    for result in (measure(n, a.documents) for n in a.vendors):
        print(f"{result['vendors']} vendors, {result['documents']} purchase orders:")
        for r in result["rows"]:
            v = r["vendors"]
            print(f"  {r['pass']:<52} PeopleSoft {r['ps']:>3} + Jira {r['jira']:>4} requests ({r['jira_writes']} "
                  f"writes), {r['seconds']:6.2f} s wall ({r['inside']:.2f} s in the pass), peak RSS "
                  f"{r['rss']:5.0f} MB; vendors read {v.get('read', 0)}, changed {v.get('updated', 0)}; "
                  f"POs re-mapped {r['remapped']}, edited {r['updated']}")
        s = result["size"]
        print(f"  key map per purchase order: {s['with']:.0f} bytes with the source copy, {s['without']:.0f} "
              f"without ({s['open']} of {s['entries']} open); state file {s['file_mb']:.1f} MB; at 100,000 "
              f"open documents the copy adds {(s['with'] - s['without']) * 100_000 / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
