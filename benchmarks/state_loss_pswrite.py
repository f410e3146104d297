"""State loss for the pairs that write into PeopleSoft: nothing duplicated, nothing lost, whatever became of the state.

    python -m benchmarks.state_loss_pswrite [--seed N] [--pairs procurify-peoplesoft ...] [--json-out FILE]

For procurify-peoplesoft, peoplesoft-jaggaer and peoplesoft-procore, each on its own loopback sandbox
(127.0.0.1 only), drives the real CLI (``python -m mlconnector sync <pair> --json``) through four cases one
after the other:

a. **state deleted** after a full sync: the next pass must adopt what it finds by handle (no record made
   twice, the target's record count unchanged), and the pass after it must write nothing;
b. **state restored from an older copy** (taken before more work arrived and was synced): no duplicate, and
   the work done after the restore (a change, new documents) reaches the target;
c. **config moved** to another folder (no ``state_file``; the state lives under the instance name in the
   platform state directory): the pass from the new folder finds the state and writes nothing;
d. **state of another site** (the configuration names the PeopleSoft server by another host name): exit 5,
   the state file unchanged, nothing written.

The books are checked independently of the connector's state by the pairs' chaos modules (``account`` in
chaos_procurify, ``figures`` in chaos_jaggaer, ``audit_books`` in procore_chaos). Prints one row per case
and the closing line ``state loss: N cases, failed N, duplicated N, lost N, tracebacks N``; exit status 0
only when all of those are 0.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import chaos_jaggaer, chaos_procurify, procore_chaos
from benchmarks.chaos import base_env, is_traceback, quiet_sandbox_resets
from mlconnector.errors import EXIT_OK, EXIT_STATE
from mlconnector.sandbox.jaggaer_run import start_jaggaer_sandbox
from mlconnector.sandbox.procore_run import start_procore_sandbox
from mlconnector.sandbox.procurify_run import start_procurify_sandbox

WRITES = ("created", "updated", "transitioned", "commented", "posted")


@dataclass
class PairBox:
    """One pair's sandbox and what the cases need of it: the books (duplicates, losses), the number of records
    on the target sides, and the work people do between two passes."""

    pair: str
    box: Any
    books: Callable[[], tuple[int, int]]  # (duplicated, lost), read from the simulators only
    records: Callable[[], int]
    work: Callable[[random.Random, int], None]
    config_text: Callable[[Path], str]


def procurify_box() -> PairBox:
    box = start_procurify_sandbox(requisitions=8)

    def books() -> tuple[int, int]:
        acc = chaos_procurify.account(box)
        return acc["duplicate_pos"] + acc["duplicate_vendors"], acc["lost"]

    return PairBox("procurify-peoplesoft", box, books,
                   lambda: len(box.purchasing.pos) + len(box.purchasing.vendors),
                   lambda rng, n: chaos_procurify._work(box, rng, n), lambda sf: box.config_text(sf))


def jaggaer_box(seed: int) -> PairBox:
    box = start_jaggaer_sandbox(seed=seed, pos=6, only_pos=1)
    log: list[str] = []

    def books() -> tuple[int, int]:
        f = chaos_jaggaer.figures(box, log)
        return sum(v for k, v in f.items() if k.startswith("duplicate_")), f["lost"]

    def records() -> int:
        vouchers = len(box.accounting.vouchers) if box.accounting is not None else 0
        return (len(box.purchasing.pos) + len(box.purchasing.vendors) + vouchers + len(box.jaggaer.requisitions)
                + len(box.jaggaer.suppliers))

    return PairBox("peoplesoft-jaggaer", box, books, records,
                   lambda rng, _n: chaos_jaggaer.revise(box, rng), lambda sf: box.config_text(sf))


def procore_box() -> PairBox:
    box = start_procore_sandbox(vendors=12)
    active = procore_chaos.add_pos(box, 6)
    state_files: list[Path] = []

    def books() -> tuple[int, int]:
        b = procore_chaos.audit_books(box)
        return b["duplicate"] + b["echo"], b["lost"]

    def records() -> int:
        sim = box.procore
        return (len(sim.vendors) + len(sim.cost_codes) + len(sim.contracts) + len(sim.line_items)
                + len(box.purchasing.pos) + len(box.accounting.journals))

    def work(rng: random.Random, n: int) -> None:
        for i in range(3):  # a few of PeopleSoft's and Procore's changes (webhook deliveries to the state's spool)
            procore_chaos._mutate(box, rng, 100 * n + i, state_files[-1], active)

    def config_text(sf: Path) -> str:
        state_files.append(sf)
        return box.config_text(sf)

    return PairBox("peoplesoft-procore", box, books, records, work, config_text)


class Runner:
    """Runs the CLI for one pair's cases, collecting outputs and tracebacks."""

    def __init__(self, pb: PairBox, d: Path) -> None:
        self.pb, self.dir = pb, d
        d.mkdir(parents=True)
        self.config = d / "config.toml"
        self.state_file = d / "state.json"
        self.config.write_text(pb.config_text(self.state_file), encoding="utf-8")
        self.env = base_env({**pb.box.env(), "MLCONNECTOR_CACHE_DIR": str(d / "cache")})
        self.tracebacks: list[str] = []

    def sync(self, label: str, config: Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
        cp = subprocess.run([sys.executable, "-m", "mlconnector", "sync", self.pb.pair, "--json", "--config",
                             str(config or self.config)], env=env or self.env, capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL)
        text = cp.stdout + cp.stderr
        if is_traceback(text, cp.returncode):
            self.tracebacks.append(f"{self.pb.pair} {label}: {text[-1500:]}")
        try:
            doc = json.loads(cp.stdout)
        except ValueError:
            doc = {}
        counts = doc.get("counts") or {}
        return {"exit": cp.returncode, "text": text,
                "writes": sum(c.get(w, 0) for c in counts.values() for w in WRITES),
                "created": sum(c.get("created", 0) for c in counts.values()),
                "adopted": sum(c.get("adopted", 0) for c in counts.values())}

    def row(self, case: str, p: dict[str, Any], ok: bool, **extra: Any) -> dict[str, Any]:
        dup, lost = self.pb.books()
        return {"pair": self.pb.pair, "case": case, "exit": p["exit"], "duplicated": dup, "lost": lost,
                "ok": ok and dup == 0 and lost == 0, **extra,
                "message": "" if p["exit"] == EXIT_OK else p["text"].strip().splitlines()[-1][:140]}


def cases(pb: PairBox, d: Path, rng: random.Random) -> tuple[list[dict[str, Any]], list[str]]:
    r = Runner(pb, d)
    rows: list[dict[str, Any]] = []
    # a) state deleted after a full sync (the second pass settles whatever the first left for a person or a lookup)
    r.sync("full sync")
    r.sync("settling pass")
    before = pb.records()
    r.state_file.unlink()
    p = r.sync("state deleted: pass")
    nxt = r.sync("state deleted: next pass")
    rows.append(r.row("state deleted after a full sync", p, p["exit"] == EXIT_OK and pb.records() == before
                      and nxt["exit"] == EXIT_OK and nxt["writes"] == 0, adopted=p["adopted"],
                      records_before=before, records_after=pb.records(), next_writes=nxt["writes"]))

    # b) state restored from a copy taken before more work was synced, then more work after the restore
    backup = d / "state-backup.json"
    shutil.copy(r.state_file, backup)
    pb.work(rng, 1)
    r.sync("restored: pass after the backup")
    shutil.copy(backup, r.state_file)
    pb.work(rng, 2)
    p = r.sync("restored: pass")
    settle = r.sync("restored: settling pass")
    nxt = r.sync("restored: next pass")
    rows.append(r.row("state restored from an older copy", p, p["exit"] in (EXIT_OK, 1) and nxt["exit"] == EXIT_OK
                      and nxt["writes"] == 0, adopted=p["adopted"], settle_exit=settle["exit"],
                      next_writes=nxt["writes"]))

    # c) a config without state_file (the platform state directory, under the instance name) moved elsewhere
    xdg = d / "xdg-state"
    env = {**r.env, "XDG_STATE_HOME": str(xdg)}
    text = "\n".join(x for x in r.config.read_text(encoding="utf-8").splitlines()
                     if not x.startswith(("state_file", "instance")))
    inst = "chaos-" + pb.pair
    a, b = d / "etc-a" / "mlconnector.toml", d / "etc-b" / "mlconnector.toml"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_text(f'instance = "{inst}"\n' + text, encoding="utf-8")
    r.sync("moved: first pass", a, env)
    r.sync("moved: settling pass", a, env)
    a.rename(b)
    p = r.sync("moved: pass from the new folder", b, env)
    found = (xdg / "mlconnector" / f"{inst}.json").is_file()
    rows.append(r.row("config moved to another folder", p, p["exit"] == EXIT_OK and p["writes"] == 0 and found,
                      state_found=found, next_writes=p["writes"]))

    # d) the same state file, a configuration naming PeopleSoft by another host name
    state_before = r.state_file.read_bytes()
    url = pb.box.ps_server.url
    r.config.write_text(r.config.read_text(encoding="utf-8").replace(url, url.replace("127.0.0.1", "localhost")),
                        encoding="utf-8")
    records = pb.records()
    p = r.sync("another site: pass")
    unchanged = r.state_file.read_bytes() == state_before
    clear = "belongs to other sites" in p["text"] and "state rebind" in p["text"]
    rows.append(r.row("state of another site", p, p["exit"] == EXIT_STATE and unchanged and clear
                      and pb.records() == records, state_unchanged=unchanged, clear_message=clear))
    return rows, r.tracebacks


MAKERS: dict[str, Callable[[int], PairBox]] = {
    "procurify-peoplesoft": lambda _seed: procurify_box(),
    "peoplesoft-jaggaer": jaggaer_box,
    "peoplesoft-procore": lambda _seed: procore_box(),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--pairs", nargs="+", choices=sorted(MAKERS), default=list(MAKERS))
    ap.add_argument("--json-out", type=Path, help="also write the rows and totals as JSON to this file")
    a = ap.parse_args(argv)
    quiet_sandbox_resets()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    tracebacks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mlc-state-loss-") as tmp:
        for pair in a.pairs:
            pb = MAKERS[pair](a.seed)
            try:
                got, tb = cases(pb, Path(tmp) / pair, random.Random(f"{a.seed}/{pair}"))
            finally:
                pb.box.stop()
            rows += got
            tracebacks += tb
    cols = ["pair", "case", "exit", "ok", "duplicated", "lost", "adopted", "next_writes", "message"]
    print("  ".join(cols))
    for row in rows:
        print("  ".join(str(row.get(c, "")) for c in cols))
    for tb in tracebacks:
        print(tb, file=sys.stderr)
    totals = {"cases": len(rows), "failed": sum(not r["ok"] for r in rows),
              "duplicated": sum(r["duplicated"] for r in rows), "lost": sum(r["lost"] for r in rows),
              "tracebacks": len(tracebacks), "seconds": round(time.monotonic() - started, 1)}
    if a.json_out:
        a.json_out.write_text(json.dumps({"rows": rows, "totals": totals}, indent=1), encoding="utf-8")
    print(f"state loss: {totals['cases']} cases, failed {totals['failed']}, duplicated {totals['duplicated']}, "
          f"lost {totals['lost']}, tracebacks {totals['tracebacks']} ({totals['seconds']} s)")
    return 0 if not (totals["failed"] or totals["duplicated"] or totals["lost"] or totals["tracebacks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
