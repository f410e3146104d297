"""Chaos harness: prove a pass loses nothing, duplicates nothing and leaks nothing, whatever happens.

    python -m benchmarks.chaos [--trials 50] [--records 1000] [--quick] [--json-out FILE] [--seed N]

Drives the real CLI (``python -m mlconnector``) as subprocesses against the loopback sandbox
(PeopleSoft + Jira, JD Edwards AIS + Jira; 127.0.0.1 only) through five scenarios, for both pairs:

1. kill at any instant: SIGKILL at random moments of passes over ~1,000 records, one sandbox for all
   trials so the kills accumulate, source rows mutated between trials, then a completion pass;
2. fault matrix: 5xx bursts, 429 (Retry-After 0 and 1), resets mid-response, answers slower than
   read_timeout, expired tokens / 401, IB error bodies, malformed JSON, a Jira 400; then
   ``replay retry --all`` and a normal pass;
3. overlapping runs: 2 then 5 passes started together on one config;
4. a catalogue of bad inputs (configuration, secrets, network, certificates, Jira metadata, rows,
   state files, webhooks), including hostile HTTP: a server dripping its answer, a body cut off
   mid-chunk, webhook lengths that lie (-1, non-numeric, missing, chunked), a connection flood, an
   idle connection, replayed and stale signed deliveries;
5. a scan of every state file, audit trail, log and captured output for the configured secrets;
6. kill and rerun at once while Jira's search lags its writes by 2 s and 5 s and each issue created costs
   Jira ``--create-cost`` seconds: a pass SIGKILLed at a random instant of its creates, or while Jira holds
   the answer to a bulk create it performed, then at once a rerun (``--lag-trials`` per pair per lag);
7. state deleted after a full sync, restored from an older copy, a config moved to another folder (default
   state location), a config naming another site over the same state file.
Then the PeopleSoft-writing pairs: procurify-peoplesoft (kill-and-rerun trials with lost CI answers, in this
process) and, through their own chaos modules run as subprocesses, peoplesoft-jaggaer (kills and lost answers,
PeopleSoft's duplicate-invoice check on and off; 30 trials, 1 with --quick) and peoplesoft-procore (kills, lost
answers on every kind of write, missing and duplicated webhook deliveries; 30 trials, 1 with --quick), and
the state cases of 7 for all three (benchmarks/state_loss_pswrite.py: state deleted, restored from an older
copy, config moved, state of another site; duplicates and losses counted on the simulators).

Prints a table of figures and a JSON document, then one closing line:
``lost N, duplicated N, leaked N, tracebacks N``. Exit status 0 only when all four are 0.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import Any

import requests

from mlconnector.errors import EXIT_CONFIG, EXIT_LOCKED, EXIT_OK, EXIT_RECORDS_FAILED, EXIT_STATE, EXIT_UNREACHABLE
from mlconnector.mapping import record_label
from mlconnector.sandbox.jde_sim import PASSWORD as JDE_PASSWORD
from mlconnector.sandbox.jde_sim import USER as JDE_USER
from mlconnector.sandbox.jde_sim import JdeSandbox, start_jde_sandbox
from mlconnector.sandbox.run import (
    JIRA_EMAIL,
    JIRA_TOKEN,
    PS_PASSWORD,
    PS_USER,
    Sandbox,
    settle_for,
    start_sandbox,
)
from mlconnector.state import State
from mlconnector.webhook import IDLE_TIMEOUT, sign

WEBHOOK_SECRET = "sandbox-webhook-secret"
WRONG_PS_PASSWORD = "wrong-ps-password-4711"
WRONG_JDE_PASSWORD = "wrong-jde-password-4711"
SECRET_IN_FILE = "hunter2-in-file-4711"
NO_KEYRING = "keyring.backends.fail.Keyring"
GATE_TIMEOUT = 120.0  # s an overlap round waits for the locked runs to exit (see overlap_round)

API = "/rest/api/3"
BULK = rf"{API}/issue/bulk$"
ISSUE = rf"{API}/issue/PROC-\d+$"
TRANSITIONS = rf"{API}/issue/PROC-\d+/transitions$"
COMMENT = rf"{API}/issue/PROC-\d+/comment$"
SEARCH = rf"{API}/search/jql$"
QUERY = r"/ExecuteQuery\.v1/"
DATASERVICE = r"/jderest/v2/dataservice"
SMALL = {"vendors": 12, "requisitions": 15, "purchase_orders": 30, "vouchers": 20}
PS_KINDS = {"requisitions": ("REQ_ID", "psft-req", "req_comments"),
            "purchase_orders": ("PO_ID", "psft-po", "po_comments"),
            "vouchers": ("VOUCHER_ID", "psft-voucher", "voucher_comments")}
PO_STATUS_NAMES = {"A": "Approved", "PA": "Pending Approval"}
IB_ERROR = ('<?xml version="1.0"?><IBResponse type="error"><DefaultTitle>Integration Broker Response'
            "</DefaultTitle><StatusCode>20</StatusCode><MessageID>10</MessageID><DefaultMessage><![CDATA["
            "Integration Gateway: unexpected failure of the query engine. (158,999)]]></DefaultMessage>"
            "</IBResponse>")
ERROR_COLLECTION = json.dumps({"errorMessages": [],
                               "errors": {"customfield_10051": "Operation value must be a number."}})


# -- process runner: every CLI run goes through here so outputs are kept for the traceback/secret scans --
@dataclass
class Proc:
    label: str
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def message(self) -> str:
        """First line of the user-facing message: the "Error:" line, the JSON "error", or stdout."""
        doc = self.json()
        if doc.get("error") or doc.get("fatal"):
            return str(doc.get("error") or doc.get("fatal")).splitlines()[0]
        if doc.get("failures"):
            f = doc["failures"][0]
            return f"{len(doc['failures'])} failed, first: {f.get('kind')} {f.get('key')}: {f.get('error')}"
        for line in self.err.splitlines():
            if line.startswith(("Error:", "Internal error", "Usage:")):
                return line
        lines = [x for x in (self.err + "\n" + self.out).splitlines() if x.strip()]
        return lines[0] if lines else ""

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.out)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}


def is_traceback(text: str, rc: int | None = None) -> bool:
    # The CLI turns an unexpected exception into "Internal error" + exit 70 (traceback kept in a file):
    # for this harness that is a traceback all the same.
    return "Traceback (most recent call last)" in text or "Internal error:" in text or rc == 70


class Harness:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.seed = seed
        self.outputs: list[tuple[str, str]] = []
        self.tracebacks: list[str] = []
        self._n = 0
        self.started = time.monotonic()

    def workdir(self, name: str) -> Path:
        self._n += 1
        d = self.root / f"{self._n:03d}-{name}"
        d.mkdir(parents=True)
        return d

    def record(self, label: str, text: str, rc: int | None) -> None:
        self.outputs.append((label, text))
        if is_traceback(text, rc):
            self.tracebacks.append(label)

    def run(self, label: str, args: list[str], env: dict[str, str], timeout: float = 180,
            stdin: str | None = None) -> Proc:
        t = time.monotonic()
        try:
            cp = subprocess.run([sys.executable, "-m", "mlconnector", *args], capture_output=True, text=True,
                                env=env, timeout=timeout, input=stdin,
                                stdin=None if stdin is not None else subprocess.DEVNULL)
            p = Proc(label, cp.returncode, cp.stdout, cp.stderr, time.monotonic() - t)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            p = Proc(label, -999, out, err + f"\n[harness] timed out after {timeout} s", time.monotonic() - t)
        self.record(label, p.text, p.rc)
        return p

    def start(self, label: str, args: list[str], env: dict[str, str], out_file: Path) -> tuple[subprocess.Popen[bytes],
                                                                                             float]:
        with out_file.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "mlconnector", *args], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        return proc, time.monotonic()

    def collect(self, label: str, proc: subprocess.Popen[bytes], out_file: Path) -> str:
        text = out_file.read_text(encoding="utf-8", errors="replace")
        # A SIGKILLed pass cannot print a traceback; anything else it printed is scanned as usual.
        self.record(label, text, proc.returncode)
        return text


def quiet_sandbox_resets() -> None:
    """A SIGKILLed client resets its sockets; the sandbox servers (in this process) would print a
    ConnectionResetError traceback for each. Those are expected here and are not the product's output."""
    original = socketserver.BaseServer.handle_error

    def handle_error(self: socketserver.BaseServer, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            original(self, request, client_address)

    socketserver.BaseServer.handle_error = handle_error  # type: ignore[method-assign]


def kill(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=30)


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """A headless cron host: secrets from the environment, no keyring probed, UTF-8 output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}
    env.update(extra)
    env["PYTHON_KEYRING_BACKEND"] = NO_KEYRING
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hostile:
    """A raw HTTP server on 127.0.0.1 that misbehaves on purpose (items 11 and 13 of issue 14).

    ``mode`` "drip": a 200 with a 100 kB Content-Length, then one byte every 0.2 s (defeats a per-read
    timeout); "cut": a chunked 200 whose connection closes mid-chunk. Stopping it ends every handler.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopping = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            if self.mode == "drip":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not self.stopping.wait(0.2):
                    conn.sendall(b" ")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"400\r\n{\"values\": [1, 2")
                conn.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


def set_read_timeout(text: str, section: str, seconds: float) -> str:
    """read_timeout of one section only: the sandbox config repeats the retry block per section."""
    start = text.index(f"[{section}]")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    return text[:start] + text[start:end].replace("read_timeout = 10", f"read_timeout = {seconds:g}") + text[end:]


# -- PeopleSoft -> Jira: workspaces and accounting ----------------------------------------------------------
@dataclass
class PsWs:
    h: Harness
    box: Sandbox
    dir: Path
    env: dict[str, str] = field(default_factory=dict)
    hostile: Hostile | None = None  # a misbehaving server a bad-input case points the config at

    def __post_init__(self) -> None:
        self.env = base_env(self.box.env())
        self.write_config()

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def write_config(self, text: str | None = None, **kw: Any) -> None:
        self.config.write_text(text if text is not None else self.box.config_text(self.state_file, **kw),
                               encoding="utf-8")

    def cli(self, label: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Proc:
        return self.h.run(label, [*args, "--config", str(self.config)], env or self.env, timeout)

    def sync(self, label: str, *extra: str) -> Proc:
        return self.cli(label, "sync", "peoplesoft-jira", "--json", *extra)


def _key_text(row: dict[str, Any], cols: Iterable[str]) -> str:
    return "|".join("" if row.get(c) is None else str(row.get(c)) for c in cols)


def ps_account(ws: PsWs) -> dict[str, Any]:
    """Source records vs Jira issues vs the replay queue, comments included (never raises)."""
    ps, jira = ws.box.ps, ws.box.jira
    source: dict[str, tuple[str, str]] = {}  # label -> (kind, key)
    invalid: Counter[str] = Counter()  # rows with a blank key part: queued as "invalid-row-<hash>"
    for kind, (id_col, _prefix, _ck) in PS_KINDS.items():
        for row in ps.rows(kind):
            if any(row.get(c) in (None, "") for c in ("BUSINESS_UNIT", id_col)):
                invalid[kind] += 1
                continue
            key = _key_text(row, ("BUSINESS_UNIT", id_col))
            source[record_label(kind, key)] = (kind, key)
    issues = jira.all_issues()
    by_label: dict[str, list[dict[str, Any]]] = {}
    for issue in issues:
        for label in issue["fields"].get("labels", []):
            if label.startswith("psft-") and label.count("-") >= 3:
                by_label.setdefault(label, []).append(issue)
    state_ok, queued, pending, queue_len = True, set(), 0, 0
    watermarks: dict[str, str] = {}
    queued_comments: set[str] = set()
    try:
        state = State.load(ws.state_file)
        queue_len = len(state.replay)
        queued = {record_label(i["kind"], i["key"]) for i in state.replay if i.get("what", "record") == "record"
                  and i["kind"] in PS_KINDS}
        for i in state.replay:
            if i.get("what", "record") == "record" and str(i["key"]).startswith("invalid-row-"):
                invalid[i["kind"]] -= 1
        # A comment queued for retry is accounted for as well.
        queued_comments = {str(i["key"]) for i in state.replay if i.get("what") == "comment"}
        pending = sum(len(state.pending(k)) for k in state.kinds())
        watermarks = dict(state.watermarks)
    except Exception:  # noqa: BLE001 - an unloadable state file is a figure, not a harness crash
        state_ok, queued_comments = False, set()
    dup = sum(len(v) - 1 for v in by_label.values() if len(v) > 1)
    synced = set(by_label) & set(source)
    missing = set(source) - set(by_label) - queued
    invalid_missing = sum(max(0, n) for n in invalid.values())
    # Records of a kind whose watermark moved: those must be synced or queued after any pass.
    missing_done = sum(1 for lbl in missing if source[lbl][0] in watermarks) + sum(
        max(0, n) for k, n in invalid.items() if k in watermarks)
    c_dup = c_missing = c_total = 0
    for kind, (id_col, prefix, ckind) in PS_KINDS.items():
        short = prefix[len("psft-"):]
        for row in ps.rows(ckind):
            key = _key_text(row, ("BUSINESS_UNIT", id_col))
            label = record_label(kind, key)
            c_total += 1
            ref = f"psft:{short}:{row['BUSINESS_UNIT']}/{row[id_col]}#{row['COMMENT_ID']}"
            hits = sum(ref in c["text"] for i in by_label.get(label, []) for c in i["comments"])
            if hits > 1:
                c_dup += hits - 1
            elif hits == 0 and label not in queued and f"{key}#{row['COMMENT_ID']}" not in queued_comments:
                c_missing += 1
    return {"source": len(source), "issues": len(issues), "synced": len(synced), "queued": len(queued & set(source)),
            "queue_items": queue_len, "duplicates": dup, "missing": len(missing) + invalid_missing,
            "missing_done": missing_done,
            "missing_sample": sorted(missing)[:5], "comments": c_total, "comments_duplicated": c_dup,
            "comments_missing": c_missing, "state_loadable": state_ok, "pending": pending,
            "watermarks": len(watermarks)}


def mutate_ps(box: Sandbox, rng: random.Random, trial: int) -> int:
    """Edits a buyer would make between two cron runs; returns how many rows changed."""
    ps = box.ps
    n = 0
    for kind, col, values in (("purchase_orders", "PO_STATUS", ("A", "PA", "D", "C")),
                              ("requisitions", "REQ_STATUS", ("P", "A", "C")),
                              ("vouchers", "APPR_STATUS", ("P", "A", "D"))):
        keys = ps.keys(kind)
        for key in rng.sample(keys, min(len(keys), 12 if kind == "purchase_orders" else 3)):
            ps.touch(kind, key, **{col: rng.choice(values)})
            n += 1
    pos = ps.keys("purchase_orders")
    ps.touch("purchase_orders", rng.choice(pos), DESCR254=f"Changed in trial {trial} ({rng.random():.5f})")
    for key in rng.sample(pos, 6):
        ps.add_comment("purchase_orders", key, f"Trial {trial} note ({rng.random():.6f}).", "CHAOS")
    if trial % 3 == 0:  # new orders keep arriving
        now = datetime.now(UTC)
        ps.bulk_load("purchase_orders", 10, now - timedelta(seconds=2), now)
        n += 10
    return n + 7


def ps_stale_status(box: Sandbox) -> int:
    """POs whose Jira status is not the one PeopleSoft says (one issue listing: find_by_label per row is
    quadratic on the simulator and took minutes at 1,000 records)."""
    status = {label: issue["fields"]["status"] for issue in box.jira.all_issues()
              for label in issue["fields"].get("labels", [])}
    stale = 0
    for row in box.ps.rows("purchase_orders"):
        want = PO_STATUS_NAMES.get(row["PO_STATUS"])
        label = record_label("purchase_orders", f"{row['BUSINESS_UNIT']}|{row['PO_ID']}")
        if want and status.get(label) != want:
            stale += 1
    return stale


# -- JD Edwards -> Jira ---------------------------------------------------------------------------------------
@dataclass
class JdeWs:
    h: Harness
    box: JdeSandbox
    dir: Path
    page_size: int = 100
    env: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)  # change id -> DOCO of a user "Blocked" transition
    hostile: Hostile | None = None
    rejected_calls: int = 0  # calls JDE recorded but answered jde__status ERROR (not applied): not duplicates

    def __post_init__(self) -> None:
        self.env = base_env(self.box.env())
        self.write_config()

    @property
    def config(self) -> Path:
        return self.dir / "jde.toml"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def write_config(self, text: str | None = None, **kw: Any) -> None:
        if text is None:
            text = self.box.config_text(self.state_file, **kw).replace(
                "max_page_size = 5\n", f"max_page_size = {self.page_size}\n")
        self.config.write_text(text, encoding="utf-8")

    def cli(self, label: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Proc:
        return self.h.run(label, [*args, "--config", str(self.config)], env or self.env, timeout)

    def sync(self, label: str, *extra: str) -> Proc:
        return self.cli(label, "sync", "jde-jira", "--json", *extra)


def jde_label(row: dict[str, Any]) -> str:
    return f"{'jde-wo' if row['DCTO'] == 'WO' else 'jde-eco'}-{row['DOCO']}-{row['DCTO']}"


def change_id(jira: Any, key: str) -> str:
    """The id the pair sends as JiraChangeId: issue key and changelog history id."""
    return f"{key}:{jira.issue(key)['changelog'][-1]['id']}"


def jde_account(ws: JdeWs) -> dict[str, Any]:
    rows = ws.box.jde.rows()
    source = {jde_label(r) for r in rows}
    by_label: dict[str, list[str]] = {}
    issues = ws.box.jira.all_issues()
    for issue in issues:
        for label in issue["fields"].get("labels", []):
            if label.startswith("jde-") and label.count("-") == 3:
                by_label.setdefault(label, []).append(issue["key"])
    state_ok, queued, pending, queue_len = True, set(), 0, 0
    wms: set[str] = set()
    try:
        state = State.load(ws.state_file)
        queue_len = len(state.replay)
        for i in state.replay:
            if i.get("what", "record") == "record":
                doco, _, dcto = str(i["key"]).partition("|")
                queued.add(f"{'jde-wo' if dcto == 'WO' else 'jde-eco'}-{doco}-{dcto}")
        pending = sum(len(state.pending(k)) for k in state.kinds())
        wms = set(state.watermarks)
        posted = state.extra.get("jde-jira", {}).get("posted", {})
        pending += sum(1 for p in posted.values() if p.get("state") == "pending")
    except Exception:  # noqa: BLE001 - an unloadable state file is a figure
        state_ok = False
    calls = Counter(c.inputs.get("JiraChangeId", "") for c in ws.box.jde.calls)
    back_dup = max(0, sum(n - 1 for cid, n in calls.items() if cid and n > 1) - ws.rejected_calls)
    back_missing = sum(1 for cid in ws.blocked if calls.get(cid, 0) == 0)
    wrong_jde = sum(1 for doco in ws.blocked.values() if ws.box.jde.order(doco)["SRST"] != "HD")
    return {"source": len(source), "issues": len(issues), "synced": len(set(by_label) & source),
            "queued": len(queued & source), "queue_items": queue_len,
            "duplicates": sum(len(v) - 1 for v in by_label.values() if len(v) > 1),
            "missing": len(source - set(by_label) - queued),
            # Only orders of a source whose window completed (watermark saved) must be synced or queued.
            "missing_done": sum(1 for r in rows if jde_label(r) not in by_label and jde_label(r) not in queued
                                and ("jde.work_orders" if r["DCTO"] == "WO" else "jde.change_orders") in wms),
            "missing_sample": sorted(source - set(by_label))[:5],
            "backflow_changes": len(ws.blocked), "backflow_duplicated": back_dup, "backflow_missing": back_missing,
            "backflow_wrong_jde_status": wrong_jde, "state_loadable": state_ok, "pending": pending}


def mutate_jde(ws: JdeWs, rng: random.Random, trial: int) -> int:
    jde, jira = ws.box.jde, ws.box.jira
    frozen = set(ws.blocked.values())
    candidates = [r for r in jde.rows(order_type="WO") if r["DOCO"] not in frozen]
    for row in rng.sample(candidates, 12):
        jde.touch(row["DOCO"], SRST=rng.choice(["10", "40", "45", "90"]), DL01=f"Trial {trial} {rng.random():.4f}")
    if trial % 3 == 0:
        jde.add_orders(6)
    # A planner blocks an order in Jira: the change must reach JDE exactly once. Orders blocked once are
    # never touched again in JDE, so "one orchestration call per change, order ends HD" is exact.
    for row in rng.sample(candidates, 8):
        if row["DOCO"] in frozen or row["SRST"] == "HD":
            continue
        found = jira.find_by_label(jde_label(row))
        if not found or found[0]["fields"]["status"] == "Blocked":
            continue
        jira.transition_as_user(found[0]["key"], "Blocked")
        ws.blocked[change_id(jira, found[0]["key"])] = row["DOCO"]
        break
    return 4


# -- scenario 1: kill at any instant ---------------------------------------------------------------------------
def kill_trials(h: Harness, ws: PsWs | JdeWs, pair: str, trials: int, mutate: Callable[[int], int],
                servers: list[Any], latency: float, window: float) -> dict[str, Any]:
    for s in servers:
        s.latency = latency  # widens the windows between a write and the state save
    jira_log = ws.box.jira_server.log
    killed = finished = unloadable = bad_rc = 0
    delays: list[float] = []
    est = window
    t0 = time.monotonic()
    for trial in range(trials):
        if trial:
            mutate(trial)
        before = len(jira_log)
        out = ws.dir / f"kill-{trial}.out"
        proc, _ = h.start(f"{pair} kill trial {trial}", ["sync", pair, "--config", str(ws.config)], ws.env, out)
        # Count from the first Jira request so the kill lands inside the pass, not in interpreter start-up.
        wait_for(lambda b=before, p=proc: len(jira_log) > b or p.poll() is not None, 30)
        # Uniform over the length of the last pass that ran to its end, so kills land inside the pass
        # (an incremental pass is much shorter than the initial load).
        delay = h.rng.uniform(0.0, min(window, est))
        started = time.monotonic()
        wait_for(lambda p=proc: p.poll() is not None, delay)
        if proc.poll() is not None:
            est = max(0.2, time.monotonic() - started)
        rc = kill(proc)
        h.collect(f"{pair} kill trial {trial}", proc, out)
        delays.append(round(delay, 3))
        if rc == -signal.SIGKILL:
            killed += 1
        else:
            finished += 1
            if rc not in (EXIT_OK, EXIT_RECORDS_FAILED):
                bad_rc += 1
        try:
            State.load(ws.state_file)
        except Exception:  # noqa: BLE001
            unloadable += 1
    for s in servers:
        s.latency = 0.0
    completion = ws.sync(f"{pair} completion pass")
    writes = ws.box.jira.writes
    jde_calls = len(ws.box.jde.calls) if isinstance(ws, JdeWs) else 0
    settle = ws.sync(f"{pair} settling pass")
    settle_writes = ws.box.jira.writes - writes + ((len(ws.box.jde.calls) - jde_calls) if isinstance(ws, JdeWs)
                                                   else 0)
    acc = ps_account(ws) if isinstance(ws, PsWs) else jde_account(ws)
    out: dict[str, Any] = {
        "pair": pair, "trials": trials, "killed": killed, "finished_before_kill": finished,
        "kill_delay_max_s": max(delays, default=0.0), "state_unloadable_after_kill": unloadable,
        "bad_exit_codes": bad_rc, "completion_exit": completion.rc, "settle_exit": settle.rc,
        "settle_writes": settle_writes, "queue_after": completion.json().get("queue_size"),
        "seconds": round(time.monotonic() - t0, 1), **acc}
    if isinstance(ws, PsWs):
        out["stale_status"] = ps_stale_status(ws.box)
    return out


def scenario_kill(h: Harness, trials: int, records: int) -> list[dict[str, Any]]:
    results = []
    box = start_sandbox(counts={"vendors": 40, "requisitions": 30, "purchase_orders": 0, "vouchers": 30})
    try:
        now = datetime.now(UTC)
        box.ps.bulk_load("purchase_orders", records, now - timedelta(days=30), now - timedelta(minutes=5))
        rng = random.Random(h.seed)
        for key in rng.sample(box.ps.keys("purchase_orders"), max(1, records // 10)):
            box.ps.add_comment("purchase_orders", key, f"Initial note on {key[1]}.", "BUYER1")
        ws = PsWs(h, box, h.workdir("kill-ps"))
        results.append(kill_trials(h, ws, "peoplesoft-jira", trials, lambda t: mutate_ps(box, h.rng, t),
                                   [box.jira_server, box.ps_server], 0.007, 3.0))
    finally:
        box.stop()
    jbox = start_jde_sandbox()
    try:
        jbox.jde.add_orders(max(0, records - 16))
        jws = JdeWs(h, jbox, h.workdir("kill-jde"))
        results.append(kill_trials(h, jws, "jde-jira", trials, lambda t: mutate_jde(jws, h.rng, t),
                                   [jbox.jira_server, jbox.jde_server], 0.007, 2.5))
    finally:
        jbox.stop()
    return results


# -- scenario 2: fault matrix ----------------------------------------------------------------------------------
@dataclass
class FaultCase:
    name: str
    pair: str
    setup: Callable[[Any], None]
    allowed: tuple[int, ...]  # acceptable exit codes of the faulted pass
    read_timeout: tuple[str, float] | None = None
    prepare: bool = False  # run a clean pass first (faults on the second pass, e.g. back-flow)


def _jf(ws: Any) -> Any:
    return ws.box.jira_server.faults


def _ps_cases() -> list[FaultCase]:
    def burst(ws: PsWs) -> None:
        f = _jf(ws)
        f.add(kind="status", status=503, path=BULK, method="POST", count=2)
        f.add(kind="status", status=502, path=SEARCH, method="POST", count=1)
        f.add(kind="status", status=500, path=ISSUE, method="GET", count=2)
        f.add(kind="status", status=503, path=TRANSITIONS, method="POST", count=2)
        f.add(kind="status", status=503, path=COMMENT, method="POST", count=1)
        ws.box.ps_server.faults.add(kind="status", status=503, path="ML_PO_CHANGED", count=2)

    def long_burst(ws: PsWs) -> None:
        _jf(ws).add(kind="status", status=503, path=BULK, method="POST", count=8)

    def r429_0(ws: PsWs) -> None:
        _jf(ws).add(kind="status", status=429, retry_after=0, path=BULK, method="POST", count=3)
        _jf(ws).add(kind="status", status=429, retry_after=0, path=TRANSITIONS, method="POST", count=2)
        ws.box.ps_server.faults.add(kind="status", status=429, retry_after=0, path="ML_REQ_CHANGED", count=1)

    def r429_1(ws: PsWs) -> None:
        _jf(ws).add(kind="status", status=429, retry_after=1, path=BULK, method="POST", count=1)
        _jf(ws).add(kind="status", status=429, retry_after=1, path=COMMENT, method="GET", count=1)

    def bucket(ws: PsWs) -> None:
        ws.box.jira_server.set_rate_limit(15)

    def reset_jira(ws: PsWs) -> None:
        f = _jf(ws)
        f.add(kind="drop_after", path=BULK, method="POST", count=2)
        f.add(kind="drop_before", path=SEARCH, method="POST", count=1)
        f.add(kind="drop_after", path=TRANSITIONS, method="POST", count=2)
        f.add(kind="drop_before", path=COMMENT, method="POST", count=1)
        f.add(kind="drop_after", path=COMMENT, method="POST", count=2)

    def reset_ps(ws: PsWs) -> None:
        pf = ws.box.ps_server.faults
        pf.add(kind="drop_after", path="ML_PO_CHANGED", count=1)
        pf.add(kind="drop_after", path="ML_PO_COMMENTS", count=1)
        pf.add(kind="drop_before", path="ML_REQ_CHANGED", count=1)

    def slow_jira(ws: PsWs) -> None:
        _jf(ws).add(kind="delay", delay=2, path=BULK, method="POST", count=2)
        _jf(ws).add(kind="delay", delay=2, path=ISSUE, method="GET", count=2)
        _jf(ws).add(kind="delay", delay=2, path=COMMENT, method="POST", count=1)

    def slow_ps(ws: PsWs) -> None:
        ws.box.ps_server.faults.add(kind="delay", delay=2, path=QUERY, count=2)

    def jira_401(ws: PsWs) -> None:
        _jf(ws).add(kind="status", status=401, path=API, count=6, skip=12,
                    body=json.dumps({"errorMessages": ["Client must be authenticated"], "errors": {}}))

    def ps_401(ws: PsWs) -> None:
        ws.box.ps_server.faults.add(kind="status", status=401, path="ML_PO_CHANGED", count=6,
                                    headers={"WWW-Authenticate": 'Basic realm="PSIGW"'},
                                    body="<IBResponse type=\"error\"><MessageID>10</MessageID><DefaultMessage>"
                                         "Invalid user ID or password. (158,10)</DefaultMessage></IBResponse>")

    def ib_body(ws: PsWs) -> None:
        ws.box.ps_server.faults.add(kind="body", path="ML_PO_CHANGED", method="GET", count=1, body=IB_ERROR,
                                    headers={"Content-Type": "text/xml"})

    def bad_json(ws: PsWs) -> None:
        ws.box.ps_server.faults.add(kind="body", path="ML_PO_CHANGED", method="GET", count=1,
                                    body='{"status": "success", "data": {"query": {"rows": [',
                                    headers={"Content-Type": "application/json"})

    def jira_400(ws: PsWs) -> None:
        _jf(ws).add(kind="status", status=400, path=BULK, method="POST", count=1, body=ERROR_COLLECTION)

    ok = (EXIT_OK, EXIT_RECORDS_FAILED)
    stop = (EXIT_UNREACHABLE,)
    p = "peoplesoft-jira"
    return [
        FaultCase("5xx bursts (within retry budget)", p, burst, ok),
        FaultCase("5xx burst past the retry budget", p, long_burst, ok),
        FaultCase("429 Retry-After: 0", p, r429_0, ok),
        FaultCase("429 Retry-After: 1", p, r429_1, ok),
        FaultCase("rate limit 15 req/s (token bucket)", p, bucket, ok),
        FaultCase("Jira resets before/after answering", p, reset_jira, ok),
        FaultCase("PeopleSoft resets mid-response", p, reset_ps, ok + stop),
        FaultCase("Jira slower than read_timeout (1 s)", p, slow_jira, ok, ("jira", 1)),
        FaultCase("PeopleSoft slower than read_timeout (1 s)", p, slow_ps, ok + stop, ("peoplesoft", 1)),
        FaultCase("Jira 401 burst mid-pass (token revoked)", p, jira_401, stop),
        FaultCase("PeopleSoft 401 mid-pass", p, ps_401, stop),
        FaultCase("PeopleSoft HTTP 200 + IB error body", p, ib_body, stop),
        FaultCase("PeopleSoft malformed JSON", p, bad_json, stop),
        FaultCase("Jira 400 on one bulk create", p, jira_400, (EXIT_RECORDS_FAILED,)),
    ]


def _jde_cases() -> list[FaultCase]:
    def token_expiry(ws: JdeWs) -> None:
        ws.box.jde.expire_tokens_after_requests = 2

    def rs_expiry(ws: JdeWs) -> None:
        ws.box.jde.expire_result_sets_next = 1

    def ais_burst(ws: JdeWs) -> None:
        ws.box.jde_server.faults.add(kind="status", status=503, path=DATASERVICE + "$", count=2)

    def ais_reset(ws: JdeWs) -> None:
        ws.box.jde_server.faults.add(kind="drop_after", path=DATASERVICE + "/next$", count=1)

    def ais_slow(ws: JdeWs) -> None:
        ws.box.jde_server.faults.add(kind="delay", delay=2, path=DATASERVICE, count=1)

    def orch_fail(ws: JdeWs) -> None:
        for row in ws.box.jde.rows(order_type="WO")[:3]:
            [issue] = ws.box.jira.find_by_label(jde_label(row))
            ws.box.jira.transition_as_user(issue["key"], "Blocked")
            ws.blocked[change_id(ws.box.jira, issue["key"])] = row["DOCO"]
        ws.box.jde.fail_orchestration_next = 1
        ws.box.jde.error_orchestration_next = 1
        ws.rejected_calls = 1

    def orch_hang(ws: JdeWs) -> None:
        row = ws.box.jde.rows(order_type="WO")[4]
        [issue] = ws.box.jira.find_by_label(jde_label(row))
        ws.box.jira.transition_as_user(issue["key"], "Blocked")
        ws.blocked[change_id(ws.box.jira, issue["key"])] = row["DOCO"]
        ws.box.jde_server.faults.add(kind="hang_after", delay=2, path="/orchestrator/", method="POST", count=1)

    def jira_burst(ws: JdeWs) -> None:
        _jf(ws).add(kind="status", status=503, path=BULK, method="POST", count=2)
        _jf(ws).add(kind="status", status=429, retry_after=0, path=BULK, method="POST", count=1)

    def jira_reset(ws: JdeWs) -> None:
        _jf(ws).add(kind="drop_after", path=BULK, method="POST", count=2)

    def jira_400(ws: JdeWs) -> None:
        _jf(ws).add(kind="status", status=400, path=BULK, method="POST", count=1, body=ERROR_COLLECTION)

    def jira_401(ws: JdeWs) -> None:
        _jf(ws).add(kind="status", status=401, path=API, count=6, skip=6,
                    body=json.dumps({"errorMessages": ["Client must be authenticated"], "errors": {}}))

    ok = (EXIT_OK, EXIT_RECORDS_FAILED)
    stop = (EXIT_UNREACHABLE,)
    p = "jde-jira"
    return [
        FaultCase("AIS token expiry (444) mid-pass", p, token_expiry, (EXIT_OK,)),
        FaultCase("AIS result set expired", p, rs_expiry, (EXIT_OK,)),
        FaultCase("AIS 5xx burst", p, ais_burst, ok + stop),
        FaultCase("AIS reset mid-response (next page)", p, ais_reset, ok + stop),
        FaultCase("AIS slower than read_timeout (1 s)", p, ais_slow, ok + stop, ("jde", 1)),
        FaultCase("orchestration HTTP 500 + jde__status ERROR", p, orch_fail, (EXIT_RECORDS_FAILED,), prepare=True),
        FaultCase("orchestration answer later than read_timeout", p, orch_hang, ok, ("jde", 1), prepare=True),
        FaultCase("Jira 5xx + 429 (Retry-After 0)", p, jira_burst, ok),
        FaultCase("Jira resets after creating", p, jira_reset, ok),
        FaultCase("Jira 400 on one bulk create", p, jira_400, (EXIT_RECORDS_FAILED,)),
        FaultCase("Jira 401 burst mid-pass", p, jira_401, stop),
    ]


def run_fault_case(h: Harness, case: FaultCase) -> dict[str, Any]:
    if case.pair == "peoplesoft-jira":
        box: Any = start_sandbox(counts=SMALL)
        ws: Any = PsWs(h, box, h.workdir("fault-ps"))
        account: Callable[[Any], dict[str, Any]] = ps_account
    else:
        box = start_jde_sandbox(work_orders=30, change_orders=6)
        ws = JdeWs(h, box, h.workdir("fault-jde"), page_size=8)
        account = jde_account
    try:
        if case.read_timeout:
            section, secs = case.read_timeout
            ws.write_config(set_read_timeout(ws.config.read_text(), section, secs))
        if case.prepare:
            ws.sync(f"fault {case.name}: clean pass")
        case.setup(ws)
        t = time.monotonic()
        first = ws.sync(f"fault {case.name}: faulted pass", "--verbose")
        seconds = time.monotonic() - t
        # Requests the client gave up on still finish server-side (delay 2 s): let them land before counting
        # and before the replay, as test_faults does, so a late create is not mistaken for a missing one.
        time.sleep(2.5 if case.read_timeout else 0.0)
        after_fault = account(ws)
        for srv in (box.jira_server, getattr(box, "ps_server", None), getattr(box, "jde_server", None)):
            if srv is not None:
                srv.faults.clear()
                srv.set_rate_limit(None)
        if isinstance(ws, JdeWs):
            box.jde.expire_tokens_after_requests = None
            box.jde.fail_orchestration_next = box.jde.error_orchestration_next = 0
        replay = ws.cli(f"fault {case.name}: replay retry", "replay", "retry", "--all", "--json")
        after_replay = account(ws)
        final = ws.sync(f"fault {case.name}: normal pass")
        after_final = account(ws)
        lost = after_final["missing"] + after_final.get("comments_missing", 0) + after_final.get(
            "backflow_missing", 0)
        dup = (after_final["duplicates"] + after_final.get("comments_duplicated", 0)
               + after_final.get("backflow_duplicated", 0))
        return {"pair": case.pair, "case": case.name, "exit": first.rc, "exit_ok": first.rc in case.allowed,
                "seconds": round(seconds, 1), "message": first.message()[:160] if first.rc else "",
                "synced": after_fault["synced"], "queued": after_fault["queued"],
                "unaccounted_after_fault": after_fault["missing"], "source": after_fault["source"],
                "replay_exit": replay.rc, "replay_message": replay.message()[:120] if replay.rc else "",
                "synced_after_replay": after_replay["synced"], "queued_after_replay": after_replay["queued"],
                "final_exit": final.rc, "synced_final": after_final["synced"], "queued_final": after_final["queued"],
                "lost": lost, "duplicated": dup, "state_loadable": after_final["state_loadable"],
                "pending_final": after_final["pending"]}
    finally:
        box.stop()


def scenario_faults(h: Harness, quick: bool) -> list[dict[str, Any]]:
    cases = _ps_cases() + _jde_cases()
    if quick:
        keep = {"5xx bursts (within retry budget)", "Jira resets before/after answering", "Jira 400 on one bulk create",
                "PeopleSoft malformed JSON", "AIS token expiry (444) mid-pass", "Jira resets after creating"}
        cases = [c for c in cases if c.name in keep]
    return [run_fault_case(h, c) for c in cases]


# -- scenario 3: overlapping runs ------------------------------------------------------------------------------
def overlap_round(h: Harness, ws: Any, pair: str, n: int) -> dict[str, Any]:
    """Start n passes of one configuration at once: exactly one may work, the others must exit 4 at once.

    Ordered by events, not by timing: every sandbox server holds each request until the other n - 1 runs have
    exited. A pass makes its first request only with the run lock held, so the one that took the lock is held
    inside it until each other run has tried the lock; a run that waited for the lock instead of exiting would
    hold the round until GATE_TIMEOUT (reported as ``held_until_timeout``)."""
    gate = threading.Event()
    servers = [s for s in (getattr(ws.box, a, None) for a in ("jira_server", "ps_server", "jde_server"))
               if s is not None]
    for srv in servers:
        srv.gate = gate
    procs = []
    try:
        for i in range(n):
            out = ws.dir / f"overlap-{n}-{i}.out"
            procs.append((*h.start(f"{pair} overlap {n}#{i}", ["sync", pair, "--config", str(ws.config)], ws.env,
                                   out), out))
        deadline = time.monotonic() + GATE_TIMEOUT
        while sum(p.poll() is not None for p, _, _ in procs) < n - 1 and time.monotonic() < deadline:
            time.sleep(0.02)  # polls for the other runs' exits; the order does not depend on this interval
        held_until_timeout = sum(p.poll() is not None for p, _, _ in procs) < n - 1
    finally:
        gate.set()
        for srv in servers:
            srv.gate = None
    codes, took = [], []
    for proc, started, out in procs:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            kill(proc)
        took.append(time.monotonic() - started)
        codes.append(proc.returncode)
        h.collect(f"{pair} overlap {n}#{proc.pid}", proc, out)
    locked = [t for c, t in zip(codes, took, strict=True) if c == EXIT_LOCKED]
    worked = [t for c, t in zip(codes, took, strict=True) if c == EXIT_OK]
    acc = ps_account(ws) if isinstance(ws, PsWs) else jde_account(ws)
    return {"pair": pair, "runs": n, "exit_codes": sorted(codes), "worked": len(worked), "locked": len(locked),
            "exactly_one_worked": len(worked) == 1 and len(locked) == n - 1 and not held_until_timeout,
            "held_until_timeout": held_until_timeout,
            "locked_max_s": round(max(locked, default=0.0), 2), "worker_s": round(max(worked, default=0.0), 2),
            "state_loadable": acc["state_loadable"], "duplicates": acc["duplicates"],
            "missing": acc["missing"]}


def scenario_overlap(h: Harness, records: int) -> list[dict[str, Any]]:
    out = []
    n_new = max(100, records // 3)
    box = start_sandbox(counts={"vendors": 20, "requisitions": 10, "purchase_orders": 0, "vouchers": 10},
                        latency=0.01)
    try:
        now = datetime.now(UTC)
        box.ps.bulk_load("purchase_orders", n_new, now - timedelta(days=20), now - timedelta(minutes=5))
        ws = PsWs(h, box, h.workdir("overlap-ps"))
        for n in (2, 5):
            if n == 5:  # fresh work, so the winner is still busy when the others try the lock
                box.ps.bulk_load("purchase_orders", n_new, datetime.now(UTC) - timedelta(seconds=3),
                                 datetime.now(UTC))
            out.append(overlap_round(h, ws, "peoplesoft-jira", n))
    finally:
        box.stop()
    jbox = start_jde_sandbox(latency=0.01)
    try:
        jbox.jde.add_orders(n_new)
        jws = JdeWs(h, jbox, h.workdir("overlap-jde"), page_size=50)
        for n in (2, 5):
            if n == 5:
                jbox.jde.add_orders(n_new)
            out.append(overlap_round(h, jws, "jde-jira", n))
    finally:
        jbox.stop()
    return out


# -- scenario 4: bad inputs ------------------------------------------------------------------------------------
@dataclass
class BadCase:
    name: str
    pair: str
    prep: Callable[[Any], list[str] | None]  # edits the workspace; returns CLI args (None: a default sync)
    expect: tuple[int, ...]


def _replace(ws: Any, old: str, new: str) -> None:
    text = ws.config.read_text(encoding="utf-8")
    assert old in text, old
    ws.config.write_text(text.replace(old, new, 1), encoding="utf-8")


def _append(ws: Any, extra: str) -> None:
    ws.config.write_text(ws.config.read_text(encoding="utf-8") + extra, encoding="utf-8")


def _po(ws: PsWs, i: int) -> tuple[str, str]:
    rows = ws.box.ps.rows("purchase_orders")
    return rows[i]["BUSINESS_UNIT"], rows[i]["PO_ID"]


def _bad_cases() -> list[BadCase]:  # noqa: PLR0915 - a catalogue reads best as one list
    p, j = "peoplesoft-jira", "jde-jira"
    cases: list[BadCase] = []

    def add(name: str, pair: str, expect: tuple[int, ...]) -> Callable[[Callable[[Any], list[str] | None]], None]:
        def deco(fn: Callable[[Any], list[str] | None]) -> None:
            cases.append(BadCase(name, pair, fn, expect))
        return deco

    @add("broken TOML", p, (EXIT_CONFIG,))
    def _1(ws: PsWs) -> None:
        _append(ws, "\n[peoplesoft.records\n")

    @add("incomplete TOML (file cut in half)", p, (EXIT_CONFIG,))
    def _2(ws: PsWs) -> None:
        text = ws.config.read_text()
        ws.config.write_text(text[: text.index("[jira]") + 12])

    @add("empty config file", p, (EXIT_CONFIG,))
    def _3(ws: PsWs) -> None:
        ws.config.write_text("")

    @add("missing config file", p, (EXIT_CONFIG,))
    def _4(ws: PsWs) -> None:
        ws.config.unlink()

    @add("unknown key (hots)", p, (EXIT_CONFIG,))
    def _5(ws: PsWs) -> None:
        _replace(ws, 'node = "PSFT_EP"', 'node = "PSFT_EP"\nhots = "ps.example.com"')

    @add("unknown section [peoplesft]", p, (EXIT_CONFIG,))
    def _6(ws: PsWs) -> None:
        _append(ws, '\n[peoplesft]\nnode = "X"\n')

    @add("wrong type (maxrows = \"many\")", p, (EXIT_CONFIG,))
    def _7(ws: PsWs) -> None:
        _replace(ws, "maxrows = 100", 'maxrows = "many"')

    @add("wrong type (read_timeout = [1])", p, (EXIT_CONFIG,))
    def _8(ws: PsWs) -> None:
        _replace(ws, "read_timeout = 10", "read_timeout = [1]")

    @add("negative number (maxrows = -5)", p, (EXIT_CONFIG,))
    def _9(ws: PsWs) -> None:
        _replace(ws, "maxrows = 100", "maxrows = -5")

    @add("secret written in the config file", p, (EXIT_CONFIG,))
    def _10(ws: PsWs) -> None:
        _replace(ws, 'node = "PSFT_EP"', f'node = "PSFT_EP"\npassword = "{SECRET_IN_FILE}"')

    @add("[jira] section missing", p, (EXIT_CONFIG,))
    def _11(ws: PsWs) -> None:
        text = ws.config.read_text()
        ws.config.write_text(text[: text.index("[jira]")])

    @add("missing PeopleSoft password", p, (EXIT_CONFIG,))
    def _12(ws: PsWs) -> None:
        ws.env.pop("MLCONNECTOR_PEOPLESOFT_PASSWORD")

    @add("missing Jira API token", p, (EXIT_CONFIG,))
    def _13(ws: PsWs) -> None:
        ws.env.pop("MLCONNECTOR_JIRA_API_TOKEN")

    @add("wrong PeopleSoft password", p, (EXIT_UNREACHABLE,))
    def _14(ws: PsWs) -> None:
        ws.env["MLCONNECTOR_PEOPLESOFT_PASSWORD"] = WRONG_PS_PASSWORD

    @add("base_url not a URL", p, (EXIT_CONFIG,))
    def _15(ws: PsWs) -> None:
        _replace(ws, 'base_url = "http://', 'base_url = "htp//')

    @add("unreachable host (closed port)", p, (EXIT_UNREACHABLE,))
    def _16(ws: PsWs) -> None:
        _replace(ws, ws.box.ps_server.url, f"http://127.0.0.1:{closed_port()}")

    @add("Jira drips its answer a byte at a time (request_deadline)", p, (EXIT_UNREACHABLE,))
    def _16b(ws: PsWs) -> None:
        ws.hostile = Hostile("drip")
        _replace(ws, ws.box.jira_server.url, ws.hostile.url)
        _replace(ws, "[jira]\n", "[jira]\nrequest_deadline = 1\n")

    @add("Jira's answer cut off mid-body (chunked)", p, (EXIT_UNREACHABLE,))
    def _16c(ws: PsWs) -> None:
        ws.hostile = Hostile("cut")
        _replace(ws, ws.box.jira_server.url, ws.hostile.url)

    @add("wrong node", p, (EXIT_UNREACHABLE,))
    def _17(ws: PsWs) -> None:
        _replace(ws, 'node = "PSFT_EP"', 'node = "WRONG"')

    @add("https to a plain-HTTP port (TLS handshake fails)", p, (EXIT_UNREACHABLE,))
    def _18(ws: PsWs) -> None:
        _replace(ws, f'base_url = "{ws.box.ps_server.url}', f'base_url = "https://127.0.0.1:{ws.box.ps_server.port}')

    @add("ca_bundle is not a PEM file", p, (EXIT_CONFIG, EXIT_UNREACHABLE))
    def _19(ws: PsWs) -> None:
        bogus = ws.dir / "corp-ca.pem"
        bogus.write_bytes(b"\x00\x01 this is not a certificate \xff")
        _replace(ws, 'node = "PSFT_EP"', f'node = "PSFT_EP"\nca_bundle = "{bogus.as_posix()}"')
        _replace(ws, f'base_url = "{ws.box.ps_server.url}', f'base_url = "https://127.0.0.1:{ws.box.ps_server.port}')

    @add("ca_bundle file missing", p, (EXIT_CONFIG,))
    def _20(ws: PsWs) -> None:
        _replace(ws, 'node = "PSFT_EP"', 'node = "PSFT_EP"\nca_bundle = "/nonexistent/corp-ca.pem"')

    @add("unknown Jira field", p, (EXIT_CONFIG,))
    def _21(ws: PsWs) -> None:
        ws.write_config(extra_jira='[jira.fields]\namount = "No Such Field"\n')

    @add("unknown Jira status", p, (EXIT_CONFIG,))
    def _22(ws: PsWs) -> None:
        ws.write_config(extra_jira='[jira.status_map.purchase_orders]\nA = "Aproved"\n')

    @add("unknown Jira issue type", p, (EXIT_CONFIG,))
    def _23(ws: PsWs) -> None:
        ws.write_config(extra_jira='[jira.issue_types]\npurchase_orders = "Purchase Ordr"\n')

    @add("unknown Jira project", p, (EXIT_CONFIG,))
    def _24(ws: PsWs) -> None:
        _replace(ws, 'project = "PROC"', 'project = "NOPE"')

    @add("row with a blank key", p, (EXIT_RECORDS_FAILED,))
    def _25(ws: PsWs) -> None:
        row = ws.box.ps.rows("purchase_orders")[2]
        ws.box.ps.add_raw("purchase_orders", {**{k: v for k, v in row.items() if k != "LAST_DTTM_UPDATE"},
                                              "PO_ID": ""})

    @add("row without its key column", p, (EXIT_RECORDS_FAILED,))
    def _26(ws: PsWs) -> None:
        row = ws.box.ps.rows("purchase_orders")[3]
        ws.box.ps.add_raw("purchase_orders", {k: v for k, v in row.items()
                                              if k not in ("LAST_DTTM_UPDATE", "BUSINESS_UNIT")})

    @add("bad date (DUE_DT 2024-13-45)", p, (EXIT_RECORDS_FAILED,))
    def _27(ws: PsWs) -> None:
        ws.box.ps.corrupt("purchase_orders", _po(ws, 1), "DUE_DT", "2024-13-45")

    @add("bad timestamp (LAST_DTTM_UPDATE 'yesterday')", p, (EXIT_OK, EXIT_RECORDS_FAILED))
    def _28(ws: PsWs) -> None:
        ws.box.ps.corrupt("purchase_orders", _po(ws, 4), "LAST_DTTM_UPDATE", "yesterday")

    @add("bad number (PO_AMT '12,3O0.00')", p, (EXIT_RECORDS_FAILED,))
    def _29(ws: PsWs) -> None:
        ws.box.ps.corrupt("purchase_orders", _po(ws, 5), "PO_AMT", "12,3O0.00")

    @add("huge text (100k-char description and comment)", p, (EXIT_OK, EXIT_RECORDS_FAILED))
    def _30(ws: PsWs) -> None:
        key = _po(ws, 6)
        ws.box.ps.corrupt("purchase_orders", key, "DESCR254", "Lorem ipsum dolor sit amet. " * 3572)
        ws.box.ps.add_comment("purchase_orders", key, "x" * 100_000)

    @add("unicode (emoji, CJK, RTL, combining, NBSP)", p, (EXIT_OK,))
    def _31(ws: PsWs) -> None:
        key = _po(ws, 7)
        ws.box.ps.corrupt("purchase_orders", key, "DESCR254", "Pièces 🚚 配送 שלום e\u0301\u00a0ß ﬁ \u200b end")
        ws.box.ps.add_comment("purchase_orders", key, "Ünïcödé 💥 — „quotes“ \u202eRTL\u202c 𝔘𝔫𝔦")

    @add("control characters and a lone surrogate", p, (EXIT_OK, EXIT_RECORDS_FAILED))
    def _32(ws: PsWs) -> None:
        key = _po(ws, 8)
        ws.box.ps.corrupt("purchase_orders", key, "DESCR254", "tab\there\x00nul\x1besc \ud800 lone")
        ws.box.ps.add_comment("purchase_orders", key, "bell\x07 and \ud83d half an emoji")

    @add("corrupt state file", p, (EXIT_STATE,))
    def _33(ws: PsWs) -> None:
        ws.state_file.write_bytes(b'{"schema": 1, "keys": {\x00garbage \xff\xfe')

    @add("state file from a future version", p, (EXIT_STATE,))
    def _34(ws: PsWs) -> None:
        ws.state_file.write_text(json.dumps({"schema": 99, "keys": {}, "watermarks": {}}))

    @add("state file without schema", p, (EXIT_STATE,))
    def _35(ws: PsWs) -> None:
        ws.state_file.write_text("{}")

    @add("state file is a JSON array", p, (EXIT_STATE,))
    def _36(ws: PsWs) -> None:
        ws.state_file.write_text("[1, 2, 3]")

    @add("state file with a wrong layout (keys = 5)", p, (EXIT_STATE,))
    def _37(ws: PsWs) -> None:
        ws.state_file.write_text(json.dumps({"schema": 1, "keys": 5, "watermarks": []}))

    @add("state path is a directory", p, (EXIT_STATE, EXIT_CONFIG))
    def _38(ws: PsWs) -> None:
        ws.state_file.mkdir()

    @add("--since not a date", p, (EXIT_CONFIG,))
    def _39(ws: PsWs) -> list[str]:
        return ["sync", "peoplesoft-jira", "--since", "2024-02-30"]

    @add("--kind unknown", p, (EXIT_CONFIG,))
    def _40(ws: PsWs) -> list[str]:
        return ["sync", "peoplesoft-jira", "--kind", "invoices"]

    @add("sync jde-jira on a PeopleSoft-only config", p, (EXIT_CONFIG,))
    def _41(ws: PsWs) -> list[str]:
        return ["sync", "jde-jira"]

    @add("replay show of an unknown id", p, (EXIT_CONFIG,))
    def _42(ws: PsWs) -> list[str]:
        return ["replay", "show", "nosuchid"]

    @add("PeopleSoft service operation inactive (HTML page)", p, (EXIT_UNREACHABLE,))
    def _43(ws: PsWs) -> None:
        ws.box.ps.deactivate("ML_PO_CHANGED")

    @add("PeopleSoft user not authorized for a query", p, (EXIT_UNREACHABLE,))
    def _44(ws: PsWs) -> None:
        ws.box.ps.deny(PS_USER, "ML_PO_CHANGED")

    @add("JDE: wrong password", j, (EXIT_UNREACHABLE,))
    def _45(ws: JdeWs) -> None:
        ws.env["MLCONNECTOR_JDE_PASSWORD"] = WRONG_JDE_PASSWORD

    @add("JDE: missing password", j, (EXIT_CONFIG,))
    def _46(ws: JdeWs) -> None:
        ws.env.pop("MLCONNECTOR_JDE_PASSWORD")

    @add("JDE: wrong environment", j, (EXIT_UNREACHABLE, EXIT_CONFIG))
    def _47(ws: JdeWs) -> None:
        _replace(ws, 'environment = "JPD920"', 'environment = "JDV999"')

    @add("JDE: unknown column alias", j, (EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_RECORDS_FAILED))
    def _48(ws: JdeWs) -> None:
        _append(ws, '\n[jde.work_orders.columns]\ndescription = "XXXX"\n')

    @add("JDE: bad date_literal_format", j, (EXIT_CONFIG,))
    def _49(ws: JdeWs) -> None:
        _replace(ws, 'role = "*ALL"', 'role = "*ALL"\ndate_literal_format = "dd.mm"')

    @add("JDE: wrong type (max_page_size = true)", j, (EXIT_CONFIG,))
    def _50(ws: JdeWs) -> None:
        _replace(ws, "max_page_size = 100", "max_page_size = true")

    @add("JDE: unreachable AIS server", j, (EXIT_UNREACHABLE,))
    def _51(ws: JdeWs) -> None:
        _replace(ws, ws.box.jde_server.url, f"http://127.0.0.1:{closed_port()}")

    @add("JDE: corrupt state file", j, (EXIT_STATE,))
    def _52(ws: JdeWs) -> None:
        ws.state_file.write_text('{"schema": 1, "watermarks": {')

    return cases


def run_bad_case(h: Harness, case: BadCase) -> dict[str, Any]:
    if case.pair == "peoplesoft-jira":
        box: Any = start_sandbox(counts=SMALL)
        ws: Any = PsWs(h, box, h.workdir("bad-ps"))
    else:
        box = start_jde_sandbox()
        ws = JdeWs(h, box, h.workdir("bad-jde"))
    try:
        args = case.prep(ws)
        before = ws.state_file.read_bytes() if ws.state_file.is_file() else None
        proc = ws.cli(f"bad input: {case.name}", *(args or ["sync", case.pair]))
        after = ws.state_file.read_bytes() if ws.state_file.is_file() else None
        # Lost = a record neither in Jira nor queued although its kind's window was declared done.
        lost = 0
        if isinstance(ws, PsWs) and after is not None and before is None:
            acc = ps_account(ws)
            lost = acc["missing_done"]
        elif isinstance(ws, JdeWs) and after is not None and before is None:
            acc = jde_account(ws)
            lost = acc["missing_done"]
        return {"pair": case.pair, "case": case.name, "exit": proc.rc, "expected": list(case.expect),
                "exit_ok": proc.rc in case.expect, "message": proc.message()[:200],
                "traceback": is_traceback(proc.text, proc.rc), "lost": lost,
                "state_changed": before is not None and before != after,
                "jira_writes": box.jira.writes}
    finally:
        if getattr(ws, "hostile", None) is not None:
            ws.hostile.stop()
        box.stop()


def webhook_cases(h: Harness) -> list[dict[str, Any]]:
    """The real `mlconnector webhook serve`, hit with bad, missing and good signatures."""
    box = start_jde_sandbox()
    ws = JdeWs(h, box, h.workdir("webhook"))
    port = closed_port()
    out = ws.dir / "webhook.out"
    proc, _ = h.start("webhook serve", ["webhook", "serve", "--port", str(port), "--config", str(ws.config)],
                      ws.env, out)
    url = f"http://127.0.0.1:{port}/jira/webhook"
    rows: list[dict[str, Any]] = []
    try:
        def up() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
            return proc.poll() is not None
        wait_for(up, 30)
        # Flood first (item 5): 40 idle connections; the receiver serves 32 at once and answers 503 beyond.
        flood = []
        for _ in range(40):
            with contextlib.suppress(OSError):
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        refused = 0
        for c in flood[32:]:
            with contextlib.suppress(OSError):
                refused += c.recv(64).startswith(b"HTTP/1.1 503")
        idle = flood[0]
        for c in flood[1:]:
            c.close()

        def served() -> bool:  # the closed connections' slots are released by their threads, just after
            with contextlib.suppress(requests.RequestException):
                return requests.get(url, timeout=5).status_code == 405
            return False
        wait_for(served, 10)
        rows.append(_hook_row("webhook: 40 idle connections (32 served, the rest 503)", 1 if refused else 0, 1))

        def event(ts_ms: int, changelog: str = "10010") -> bytes:
            return json.dumps({"timestamp": ts_ms, "webhookEvent": "jira:issue_updated",
                               "issue": {"id": "10001", "key": "PROC-1"},
                               "changelog": {"id": changelog, "items": [{"field": "status", "fieldId": "status",
                                                                          "toString": "Blocked"}]}}).encode()

        now_ms = int(time.time() * 1000)
        body = event(now_ms)
        good = sign(WEBHOOK_SECRET, body)
        stale = event(now_ms - 3 * 3600 * 1000, "10009")
        probes: list[tuple[str, bytes, dict[str, str], int]] = [
            ("webhook: unsigned", body, {}, 401),
            ("webhook: signed with another secret", body, {"X-Hub-Signature": sign("not-the-secret", body)}, 401),
            ("webhook: sha1 method", body, {"X-Hub-Signature": "sha1=" + good[7:47]}, 401),
            ("webhook: empty signature", body, {"X-Hub-Signature": "sha256="}, 401),
            ("webhook: non-hex signature", body, {"X-Hub-Signature": "sha256=zz\u00e9zz"}, 401),
            ("webhook: tampered body", body + b" ", {"X-Hub-Signature": good}, 401),
            ("webhook: body over 1 MB", b"x" * 1_100_000, {"X-Hub-Signature": good}, 413),
            ("webhook: signed but not JSON", b"\xff\xfenot json", {"X-Hub-Signature": sign(WEBHOOK_SECRET,
                                                                                           b"\xff\xfenot json")}, 400),
            ("webhook: signed, 3 h old (replay window)", stale, {"X-Hub-Signature": sign(WEBHOOK_SECRET, stale)}, 400),
            ("webhook: good signature", body, {"X-Hub-Signature": good, "X-Atlassian-Webhook-Identifier": "d-1"}, 204),
            ("webhook: same delivery replayed", body, {"X-Hub-Signature": good,
                                                       "X-Atlassian-Webhook-Identifier": "d-1"}, 204),
            ("webhook: same body, forged new id", body, {"X-Hub-Signature": good,
                                                         "X-Atlassian-Webhook-Identifier": "d-2"}, 204),
        ]
        for name, data, headers, want in probes:
            try:
                status = requests.post(url, data=data, headers=headers, timeout=10).status_code
            except requests.RequestException as exc:
                status = -1
                name += f" ({exc.__class__.__name__})"
            rows.append(_hook_row(name, status, want))
        # Lengths the receiver must not trust (items 5 and 16), sent raw: requests would fix them.
        raw = [("webhook: Content-Length -1", "Content-Length: -1\r\n", 400),
               ("webhook: Content-Length abc", "Content-Length: abc\r\n", 400),
               ("webhook: no Content-Length", "", 411),
               ("webhook: chunked body", "Transfer-Encoding: chunked\r\n", 411)]
        for name, header, want in raw:
            rows.append(_hook_row(name, _raw_post(port, header, body, good), want))
        spool = ws.dir / "state.json.webhooks.jsonl"
        events = spool.read_text().splitlines() if spool.exists() else []
        # Exactly the one good delivery is queued: nothing lost, nothing forged, nothing replayed.
        good_row = next(r for r in rows if r["case"] == "webhook: good signature")
        good_row["lost"] = 0 if len(events) == 1 else 1
        if len(events) != 1:
            good_row["message"] += f"; {len(events)} events spooled"
        # The idle connection opened first has been dropped by now or within the idle timeout (10 s). Wait for that
        # close itself: the socket's own 5 s timeout ran out first when the steps above took under 5 s.
        try:
            idle.settimeout(IDLE_TIMEOUT + 10)
            closed = idle.recv(64) == b""
        except OSError:
            closed = False
        idle.close()
        rows.append(_hook_row("webhook: idle connection dropped", 1 if closed else 0, 1))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the receiver's own clean stop
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill(proc)
        text = h.collect("webhook serve", proc, out)
        box.stop()
    if is_traceback(text):
        for r in rows:
            r["traceback"] = True
    return rows


def _hook_row(name: str, status: int, want: int) -> dict[str, Any]:
    return {"pair": "webhook", "case": name, "exit": status, "expected": [want], "exit_ok": status == want,
            "message": f"HTTP {status}", "traceback": False, "lost": 0, "state_changed": False, "jira_writes": 0}


def _raw_post(port: int, length_header: str, body: bytes, signature: str) -> int:
    """POST with headers exactly as given (no Content-Length fixing); the status, or -1."""
    head = (f"POST /jira/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Hub-Signature: {signature}\r\n"
            f"{length_header}\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(head + body)
            c.shutdown(socket.SHUT_WR)
            answer = b""
            while b"\r\n" not in answer:  # the status line; the rest may be cut by the server's close
                chunk = c.recv(1024)
                if not chunk:
                    break
                answer += chunk
        return int(answer.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return -1


def scenario_bad_inputs(h: Harness, quick: bool) -> list[dict[str, Any]]:
    cases = _bad_cases()
    if quick:
        cases = cases[::6]
    rows = [run_bad_case(h, c) for c in cases]
    return rows + webhook_cases(h)


# -- scenario 5: secrets -----------------------------------------------------------------------------------------
def b64(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


def scenario_secrets(h: Harness, crash_file_before: float | None) -> dict[str, Any]:
    secrets = {PS_PASSWORD: PS_USER, JIRA_TOKEN: JIRA_EMAIL, JDE_PASSWORD: JDE_USER, WEBHOOK_SECRET: "",
               WRONG_PS_PASSWORD: PS_USER, WRONG_JDE_PASSWORD: JDE_USER, SECRET_IN_FILE: PS_USER}
    needles = set(secrets)
    for secret, user in secrets.items():
        if user:
            needles.add(b64(user, secret))
    texts: list[tuple[str, str]] = list(h.outputs)
    files = 0
    for path in sorted(h.root.rglob("*")):
        # Config files are the user's own input (one case writes a secret into one on purpose).
        if path.is_file() and path.suffix != ".toml":
            files += 1
            texts.append((str(path.relative_to(h.root)), path.read_text(encoding="utf-8", errors="replace")))
    for crash in Path(tempfile.gettempdir()).glob("mlconnector-crash*.txt"):
        with contextlib.suppress(OSError):
            if crash_file_before is None or crash.stat().st_mtime > crash_file_before:
                texts.append((str(crash), crash.read_text(encoding="utf-8", errors="replace")))
    leaks = [(where, n[:4] + "...") for where, text in texts for n in needles if n in text]
    return {"needles": len(needles), "outputs_scanned": len(h.outputs), "files_scanned": files,
            "leaks": len(leaks), "leak_sample": leaks[:10]}


# -- scenario 6: kill and rerun at once under Jira search lag -----------------------------------------------
LAGS = (2.0, 5.0)
CREATE_COST = 0.05  # seconds of Jira's work per issue created (JiraSim.create_cost): 2.5 s per bulk of 50
BULK_CALLS = f"POST {API}/issue/bulk"


def _lag_box(h: Harness, pair: str, lag: float, cost: float, d: Path) -> tuple[Any, Any]:
    """A small sandbox whose Jira search lags by ``lag`` and whose creates cost ``cost`` per issue; the config's
    settle_seconds follows both (sandbox.accounts.settle_for)."""
    if pair == "peoplesoft-jira":
        box: Any = start_sandbox(counts={"vendors": 10, "requisitions": 0, "purchase_orders": 20, "vouchers": 0},
                                 search_lag=lag, create_cost=cost, latency=0.002)
        return box, PsWs(h, box, d)
    jbox = start_jde_sandbox(work_orders=20, change_orders=4, search_lag=lag, create_cost=cost, latency=0.002)
    return jbox, JdeWs(h, jbox, d, page_size=50)


def _new_work(ws: Any, rng: random.Random, n: int, trial: int) -> None:
    """``n`` new orders (each needs a create), a few changes to existing ones, comments on new PeopleSoft POs."""
    if isinstance(ws, PsWs):
        ps = ws.box.ps
        old = ps.keys("purchase_orders")
        now = datetime.now(UTC)
        ps.bulk_load("purchase_orders", n, now - timedelta(seconds=2), now)
        new = [k for k in ps.keys("purchase_orders") if k not in set(old)]
        for key in rng.sample(new, min(len(new), 5)):
            ps.add_comment("purchase_orders", key, f"Lag trial {trial} note ({rng.random():.6f}).", "CHAOS")
        for key in rng.sample(old, min(len(old), 4)):
            ps.touch("purchase_orders", key, PO_STATUS=rng.choice(("A", "PA", "D", "C")))
    else:
        jde = ws.box.jde
        old = jde.rows(order_type="WO")
        jde.add_orders(n)
        for row in rng.sample(old, min(len(old), 4)):
            jde.touch(row["DOCO"], SRST=rng.choice(["10", "40", "45", "90"]), DL01=f"Lag trial {trial}")


def _kill_window(n: int, cost: float) -> float:
    """How long the creates of ``n`` records take in Jira: the first chunk alone (it teaches the transition ids),
    the others four at a time; plus a margin for what follows them (edits, transitions, comments)."""
    chunks = max(1, -(-n // 50))
    waves = 1 + -(-(chunks - 1) // 4)
    return waves * min(n, 50) * cost + 0.5


def lag_kill_trials(h: Harness, pair: str, lag: float, trials: int, cost: float, held_every: int,
                    n_range: tuple[int, int], d: Path) -> dict[str, Any]:
    """Trials of: new work, a pass SIGKILLed while its creates are in Jira's hands (at a random instant of the
    create phase, or on a bulk create Jira performed and holds the answer to), and at once a rerun."""
    rng = random.Random(f"{h.seed}/{pair}/{lag}")
    box, ws = _lag_box(h, pair, lag, cost, d)
    account: Callable[[Any], dict[str, Any]] = ps_account if isinstance(ws, PsWs) else jde_account
    t0 = time.monotonic()
    tag = f"{pair} lag {lag:g}s"
    out: dict[str, Any] = {"pair": pair, "lag_s": lag, "create_cost_s": cost, "trials": trials,
                           "settle_s": settle_for(lag, cost)}
    try:
        first = ws.sync(f"{tag}: first pass")
        killed = finished = held = rerun_bad = rerun_tb = dup_trials = 0
        rerun_s: list[float] = []
        dup_seen = 0
        dup_first: list[str] = []
        for trial in range(trials):
            n = rng.randint(*n_range)
            _new_work(ws, rng, n, trial)
            hold = held_every > 0 and trial % held_every == 0
            if hold:
                # Jira performs every bulk create of this pass, then sits on the answer.
                box.jira_server.faults.add(kind="hang_after", path=BULK, method="POST", count=None, delay=30)
            calls, writes = box.jira.calls[BULK_CALLS], box.jira.writes
            log = ws.dir / f"lag-{trial}.out"
            proc, _ = h.start(f"{tag} trial {trial}", ["sync", pair, "--config", str(ws.config)], ws.env, log)
            # Synchronised on Jira's own events: a bulk create arrived (and, held, was performed).
            wait_for(lambda c=calls, p=proc: box.jira.calls[BULK_CALLS] > c or p.poll() is not None, 90)
            if hold:
                wait_for(lambda w=writes, p=proc: box.jira.writes > w or p.poll() is not None, 90)
            else:
                wait_for(lambda p=proc: p.poll() is not None, rng.uniform(0.0, _kill_window(n, cost)))
            rc = kill(proc)
            box.jira_server.faults.clear()
            h.collect(f"{tag} trial {trial}", proc, log)
            if rc == -signal.SIGKILL:
                killed += 1
                held += hold
            else:
                finished += 1
            again = ws.sync(f"{tag} trial {trial}: rerun at once")  # immediately: Jira's search still lags
            rerun_s.append(again.seconds)
            rerun_bad += again.rc != EXIT_OK
            rerun_tb += is_traceback(again.text, again.rc)
            acc = account(ws)
            if acc["duplicates"] > dup_seen:
                dup_trials += 1
                dup_first = dup_first or [f"trial {trial} ({'held' if hold else 'random'} kill, {n} new): "
                                          f"{acc['duplicates'] - dup_seen} duplicated"]
                dup_seen = acc["duplicates"]
        completion = ws.sync(f"{tag}: completion pass")
        writes = box.jira.writes + (len(box.jde.calls) if isinstance(ws, JdeWs) else 0)
        settle = ws.sync(f"{tag}: settling pass")
        settle_writes = box.jira.writes + (len(box.jde.calls) if isinstance(ws, JdeWs) else 0) - writes
        acc = account(ws)
        out.update({"first_exit": first.rc, "killed": killed, "held_kills": held, "finished_before_kill": finished,
                    "rerun_nonzero": rerun_bad, "rerun_tracebacks": rerun_tb,
                    "rerun_max_s": round(max(rerun_s, default=0.0), 1),
                    "trials_with_duplicates": dup_trials, "first_duplicate": "; ".join(dup_first),
                    "completion_exit": completion.rc, "settle_exit": settle.rc, "settle_writes": settle_writes,
                    "source": acc["source"], "issues": acc["issues"], "duplicates": acc["duplicates"],
                    "missing": acc["missing"], "comments_duplicated": acc.get("comments_duplicated", 0),
                    "comments_missing": acc.get("comments_missing", 0),
                    "backflow_duplicated": acc.get("backflow_duplicated", 0), "pending": acc["pending"],
                    "state_loadable": acc["state_loadable"]})
    finally:
        box.stop()
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


LAG_COMBOS = [(pair, lag) for lag in LAGS for pair in ("peoplesoft-jira", "jde-jira")]
STATE_PAIRS = ("peoplesoft-jira", "jde-jira")


def scenario_lag_kill(h: Harness, trials: int, cost: float, quick: bool,
                      dirs: list[Path] | None = None) -> list[dict[str, Any]]:
    """Both pairs x both lags, side by side (each its own sandbox): the trials mostly wait out settle times."""
    # Quick: the 2 s lag only (the 5 s one waits out 10 s settle times), held kills only, one chunk each, so
    # the figure does not depend on where a random kill lands.
    combos = [c for c in LAG_COMBOS if c[1] == LAGS[0]] if quick else LAG_COMBOS
    dirs = dirs or [h.workdir(f"lag-{'ps' if p.startswith('p') else 'jde'}-{lag:g}s") for p, lag in combos]
    held_every, n_range = (1, (20, 50)) if quick else (5, (20, 160))
    with ThreadPoolExecutor(max_workers=len(combos)) as pool:
        futures = [pool.submit(lag_kill_trials, h, p, lag, trials, cost, held_every, n_range, d)
                   for (p, lag), d in zip(combos, dirs, strict=True)]
        return [f.result() for f in futures]


# -- scenario 7: state lost, restored from an old copy, config moved, state of another site ------------------
STATE_LAG = 2.0  # the state scenarios run against a lagging search too


def _wait_indexed(box: Any) -> None:
    """Wait until Jira's search shows every issue (the lag has passed since the last create): a state lost or
    restored right after a pass, before Jira's index caught up, is a case the connector cannot see."""
    newest = max((i["updated_ms"] for i in box.jira.all_issues()), default=0) / 1000
    time.sleep(max(0.0, min(box.search_lag + 0.2, newest + box.search_lag + 0.2 - time.time())))


def _writes(box: Any) -> int:
    return int(box.jira.writes) + (len(box.jde.calls) if isinstance(box, JdeSandbox) else 0)


def _created_adopted(p: Proc) -> tuple[int, int]:
    counts = p.json().get("counts") or {}
    return (sum(int(c.get("created", 0)) for c in counts.values()),
            sum(int(c.get("adopted", 0)) for c in counts.values()))


def _state_row(pair: str, case: str, p: Proc, acc: dict[str, Any], **extra: Any) -> dict[str, Any]:
    dup = acc["duplicates"] + acc.get("comments_duplicated", 0) + acc.get("backflow_duplicated", 0)
    lost = acc["missing"] + acc.get("comments_missing", 0) + acc.get("backflow_missing", 0)
    row = {"pair": pair, "case": case, "exit": p.rc, "issues": acc["issues"], "duplicated": dup, "lost": lost,
           "traceback": is_traceback(p.text, p.rc), "message": p.message()[:120] if p.rc else ""}
    row.update(extra)
    return row


def _touch_one(ws: Any, text: str) -> Callable[[], bool]:
    """Change one order's description; return a check that its Jira issue shows the change."""
    if isinstance(ws, PsWs):
        key = ws.box.ps.keys("purchase_orders")[1]
        ws.box.ps.touch("purchase_orders", key, DESCR254=text)
        label = record_label("purchase_orders", f"{key[0]}|{key[1]}")
    else:
        row = ws.box.jde.rows(order_type="WO")[1]
        ws.box.jde.touch(row["DOCO"], DL01=text)
        label = jde_label(row)
    return lambda: all(text in json.dumps(i["fields"].get("summary")) for i in ws.box.jira.find_by_label(label))


def _more_work(ws: Any, trial: int) -> None:
    if isinstance(ws, PsWs):
        now = datetime.now(UTC)
        ws.box.ps.bulk_load("purchase_orders", 7, now - timedelta(seconds=2), now)
        key = ws.box.ps.keys("purchase_orders")[-1]
        ws.box.ps.add_comment("purchase_orders", key, f"Note after the backup ({trial}).", "CHAOS")
    else:
        ws.box.jde.add_orders(7)


def state_loss_cases(h: Harness, pair: str, cost: float, d: Path, lag: float = STATE_LAG) -> list[dict[str, Any]]:
    """One sandbox per pair, the cases one after the other on it."""
    if pair == "peoplesoft-jira":
        box: Any = start_sandbox(counts=SMALL, search_lag=lag, create_cost=cost)
        ws: Any = PsWs(h, box, d)
        account: Callable[[Any], dict[str, Any]] = ps_account
    else:
        box = start_jde_sandbox(work_orders=30, change_orders=6, search_lag=lag, create_cost=cost)
        ws = JdeWs(h, box, d, page_size=50)
        account = jde_account
    rows: list[dict[str, Any]] = []
    rng = random.Random(f"{h.seed}/state/{pair}")
    try:
        # a) state deleted after a full sync (with a Jira -> JDE change already posted, for the JDE pair)
        ws.sync(f"{pair} state: full sync")
        if isinstance(ws, JdeWs):
            mutate_jde(ws, rng, 0)
            ws.sync(f"{pair} state: sync with a back-flow change")
        issues = len(box.jira.all_issues())
        _wait_indexed(box)
        ws.state_file.unlink()
        p = ws.sync(f"{pair} state deleted: pass")
        created, adopted = _created_adopted(p)
        w = _writes(box)
        nxt = ws.sync(f"{pair} state deleted: next pass")
        acc = account(ws)
        rows.append(_state_row(pair, "state deleted after a full sync", p, acc, created=created, adopted=adopted,
                               expected_adopted=issues, next_exit=nxt.rc, next_writes=_writes(box) - w,
                               ok=p.rc == EXIT_OK and created == 0 and adopted == issues and nxt.rc == EXIT_OK
                               and _writes(box) == w and acc["issues"] == issues))

        # b) state restored from a copy taken before some creates and changes
        backup = ws.dir / "state-backup.json"
        shutil.copy(ws.state_file, backup)
        _more_work(ws, 1)
        _touch_one(ws, "Changed after the backup")
        ws.sync(f"{pair} state restored: pass after the backup")
        issues = len(box.jira.all_issues())
        _wait_indexed(box)
        shutil.copy(backup, ws.state_file)
        caught_up = _touch_one(ws, "Changed once more after the restore")
        p = ws.sync(f"{pair} state restored: pass")
        created, adopted = _created_adopted(p)
        w = _writes(box)
        nxt = ws.sync(f"{pair} state restored: next pass")
        acc = account(ws)
        rows.append(_state_row(pair, "state restored from an older copy", p, acc, created=created,
                               adopted=adopted, caught_up=caught_up(), next_exit=nxt.rc,
                               next_writes=_writes(box) - w,
                               ok=p.rc == EXIT_OK and created == 0 and acc["issues"] == issues and caught_up()
                               and nxt.rc == EXIT_OK))

        # c) a config without state_file (default location under XDG_STATE_HOME) moved to another folder
        xdg = ws.dir / "xdg-state"
        env = {**ws.env, "XDG_STATE_HOME": str(xdg)}
        text = "\n".join(x for x in ws.config.read_text(encoding="utf-8").splitlines()
                         if not x.startswith(("state_file", "instance")))
        inst = "chaos-" + ("ps" if isinstance(ws, PsWs) else "jde")
        a, b = ws.dir / "etc-a" / "mlconnector.toml", ws.dir / "etc-b" / "mlconnector.toml"
        a.parent.mkdir()
        b.parent.mkdir()
        a.write_text(f'instance = "{inst}"\n' + text, encoding="utf-8")
        args = ["sync", pair, "--json"]
        h.run(f"{pair} config moved: first pass", [*args, "--config", str(a)], env)
        a.rename(b)
        w = _writes(box)
        p = h.run(f"{pair} config moved: pass from the new folder", [*args, "--config", str(b)], env)
        found = (xdg / "mlconnector" / f"{inst}.json").is_file()
        acc = account(ws)
        rows.append(_state_row(pair, "config moved to another folder", p, acc, next_writes=_writes(box) - w,
                               state_found=found, ok=p.rc == EXIT_OK and _writes(box) == w and found))

        # d) the state of another site: the same state file, a config naming another Jira site
        before = ws.state_file.read_bytes()
        url = box.jira_server.url
        ws.write_config(ws.config.read_text(encoding="utf-8").replace(
            f'site = "{url}"', f'site = "{url.replace("127.0.0.1", "localhost")}"'))
        w = _writes(box)
        p = ws.sync(f"{pair} state of another site: pass")
        unchanged = ws.state_file.read_bytes() == before
        clear = "belongs to other sites" in p.text and "state rebind" in p.text
        acc = account(ws)
        rows.append(_state_row(pair, "state of another site", p, acc, next_writes=_writes(box) - w,
                               state_unchanged=unchanged, clear_message=clear,
                               ok=p.rc == EXIT_STATE and unchanged and clear and _writes(box) == w))
    finally:
        box.stop()
    return rows


def scenario_state_loss(h: Harness, cost: float, dirs: list[Path] | None = None,
                        lag: float = STATE_LAG) -> list[dict[str, Any]]:
    pairs = STATE_PAIRS
    dirs = dirs or [h.workdir(f"state-{'ps' if p.startswith('p') else 'jde'}") for p in pairs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(state_loss_cases, h, p, cost, d, lag) for p, d in zip(pairs, dirs, strict=True)]
        return [row for f in futures for row in f.result()]


def scenario_lag_and_state(h: Harness, lag_trials: int, cost: float,
                           quick: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Scenarios 6 and 7 side by side: both spend most of their time waiting out search lag and settle times."""
    # Work directories first: Harness.workdir numbers them and is not meant for threads.
    lag_dirs = [h.workdir(f"lag-{'ps' if p.startswith('p') else 'jde'}-{lag:g}s") for p, lag in LAG_COMBOS
                if not quick or lag == LAGS[0]]
    state_dirs = [h.workdir(f"state-{'ps' if p.startswith('p') else 'jde'}") for p in STATE_PAIRS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        lag = pool.submit(scenario_lag_kill, h, lag_trials, cost, quick, lag_dirs)
        state = pool.submit(scenario_state_loss, h, cost, state_dirs, 1.0 if quick else STATE_LAG)
        return lag.result(), state.result()


# -- report --------------------------------------------------------------------------------------------------------
def _table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
    print(f"\n{title}")
    if not rows:
        print("  (none)")
        return
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    widths = [min(w, 70) for w in widths]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  " + "  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)))


def _vtable(title: str, rows: list[dict[str, Any]], metrics: list[str]) -> None:
    """One column per pair, one line per figure: the kill figures are too many for one line."""
    print(f"\n{title}")
    width = max(len(m) for m in metrics)
    print("  " + "".ljust(width) + "".join(str(r["pair"]).rjust(18) for r in rows))
    for m in metrics:
        print("  " + m.ljust(width) + "".join(str(r.get(m, "-")).rjust(18) for r in rows))


def totals(doc: dict[str, Any], h: Harness) -> dict[str, int]:
    lost = dup = 0
    problems: list[str] = []
    for r in doc["kill"]:
        lost += r["missing"] + r.get("comments_missing", 0) + r.get("backflow_missing", 0)
        dup += r["duplicates"] + r.get("comments_duplicated", 0) + r.get("backflow_duplicated", 0)
        if r["completion_exit"] != EXIT_OK or r["settle_writes"] or r["state_unloadable_after_kill"] or \
                r["pending"] or r["bad_exit_codes"] or r.get("stale_status") or r.get("backflow_wrong_jde_status"):
            problems.append(f"kill {r['pair']}")
    for r in doc["faults"]:
        lost += r["lost"]
        dup += r["duplicated"]
        if not r["exit_ok"] or r["final_exit"] != EXIT_OK or not r["state_loadable"] or r["pending_final"]:
            problems.append(f"fault {r['pair']}: {r['case']}")
    for r in doc["overlap"]:
        lost += r["missing"]
        dup += r["duplicates"]
        # A locked run that waited for the lock instead of exiting holds its round until GATE_TIMEOUT and fails
        # exactly_one_worked; locked_max_s (start-up included) is a figure, not a criterion: it grows with load.
        if not r["exactly_one_worked"] or not r["state_loadable"]:
            problems.append(f"overlap {r['pair']} x{r['runs']}")
    for r in doc["bad_inputs"]:
        lost += r["lost"]
        if not r["exit_ok"]:
            problems.append(f"bad input {r['pair']}: {r['case']} (exit {r['exit']}, want {r['expected']})")
    for r in doc.get("lag_kill", []):
        lost += r["missing"] + r["comments_missing"]
        dup += r["duplicates"] + r["comments_duplicated"] + r["backflow_duplicated"]
        if r["rerun_nonzero"] or r["completion_exit"] != EXIT_OK or r["settle_writes"] or r["pending"] or \
                not r["state_loadable"]:
            problems.append(f"lag kill {r['pair']} @{r['lag_s']:g}s (reruns not 0: {r['rerun_nonzero']}, "
                            f"settle writes {r['settle_writes']}, pending {r['pending']})")
    for r in doc.get("state_loss", []):
        lost += r["lost"]
        dup += r["duplicated"]
        if not r["ok"]:
            problems.append(f"state {r['pair']}: {r['case']} (exit {r['exit']})")
    doc["problems"] = problems
    return {"lost": lost, "duplicated": dup, "leaked": doc["secrets"]["leaks"], "tracebacks": len(h.tracebacks),
            "other_problems": len(problems)}



def scenario_own_harness(module: str, trials: int, seed: int, root: Path, extra: tuple[str, ...] = ()
                         ) -> dict[str, Any]:
    """Run a pair's own chaos module (peoplesoft-jaggaer, peoplesoft-procore: their own sandboxes, kills, lost
    answers and checks) as a subprocess and read its closing figures, so this harness covers every pair."""
    out = root / f"{module.rsplit('.', 1)[-1]}.json"
    args = [sys.executable, "-m", module, "--seed", str(seed), *extra] + (["--trials", str(trials)] if trials else [])
    if module.endswith(("chaos_jaggaer", "state_loss_pswrite")):
        args += ["--json-out", str(out)]
    t = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                          stdin=subprocess.DEVNULL, timeout=3600)
    row: dict[str, Any] = {"module": module, "trials": trials, "exit": proc.returncode,
                           "seconds": round(time.monotonic() - t, 1)}
    if out.exists():
        figures = json.loads(out.read_text(encoding="utf-8"))["totals"]
        row["duplicated"] = figures.get("duplicated", 0) + sum(v for k, v in figures.items()
                                                               if k.startswith("duplicate_"))
        if "cases" in figures:
            row["trials"], row["failed"] = figures["cases"], figures["failed"]
        row["lost"], row["tracebacks"] = figures.get("lost", 0), figures.get("tracebacks", 0)
    else:
        m = re.search(r"duplicate (\d+), lost (\d+), echo (\d+), tracebacks (\d+)", proc.stdout)
        if m:
            row["duplicated"], row["lost"] = int(m[1]), int(m[2])
            row["echo"], row["tracebacks"] = int(m[3]), int(m[4])
    if "duplicated" not in row:  # no figures: the module itself failed; count it, never pass it silently
        row.update(duplicated=0, lost=0, tracebacks=1, tail=(proc.stdout + proc.stderr)[-2000:])
    return row


def fold_own_harnesses(t: dict[str, int], doc: dict[str, Any]) -> dict[str, int]:
    """Add the figures of the pairs' own chaos modules to the closing totals."""
    for name in ("jaggaer", "procore", "state_loss_pswrite"):
        row = doc.get(name)
        if not row:
            continue
        t = {**t, "lost": t["lost"] + row["lost"], "duplicated": t["duplicated"] + row["duplicated"] +
             row.get("echo", 0), "tracebacks": t["tracebacks"] + row["tracebacks"]}
        if row["exit"] != 0:
            doc.setdefault("problems", []).append(f"{name}: its chaos module exited {row['exit']}")
        if row.get("failed"):
            t = {**t, "other_problems": t["other_problems"] + row["failed"]}
            doc.setdefault("problems", []).append(f"{name}: {row['failed']} case(s) failed")
    return t

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=None, help="kill trials per pair (default 50; 8 with --quick)")
    ap.add_argument("--records", type=int, default=None, help="records in the kill scenario (default 1000; "
                                                                 "300 with --quick)")
    ap.add_argument("--quick", action="store_true", help="a reduced run of every scenario (a few minutes)")
    ap.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    ap.add_argument("--seed", type=int, default=None, help="random seed (printed; reuse it to replay a run)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (state files, audit, outputs)")
    ap.add_argument("--lag-trials", type=int, default=None, help="kill-and-rerun trials per pair per search lag "
                                                                  "(default 50; 1 with --quick)")
    ap.add_argument("--create-cost", type=float, default=CREATE_COST, help="seconds of Jira's work per issue "
                                                                            f"created (default {CREATE_COST:g})")
    a = ap.parse_args(argv)
    trials = a.trials if a.trials is not None else (8 if a.quick else 50)
    lag_trials = a.lag_trials if a.lag_trials is not None else (1 if a.quick else 50)
    records = a.records if a.records is not None else (300 if a.quick else 1000)
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    crash_before = time.time()  # crash reports (unique names) written after this are scanned
    root = Path(tempfile.mkdtemp(prefix="mlconnector-chaos-"))
    h = Harness(root, seed)
    quiet_sandbox_resets()
    t0 = time.monotonic()
    doc: dict[str, Any] = {"seed": seed, "trials": trials, "records": records, "quick": a.quick,
                           "lag_trials": lag_trials, "create_cost": a.create_cost}
    timings: dict[str, float] = {}
    try:
        for name, fn in (("kill", lambda: scenario_kill(h, trials, records)),
                         ("faults", lambda: scenario_faults(h, a.quick)),
                         ("overlap", lambda: scenario_overlap(h, records)),
                         ("bad_inputs", lambda: scenario_bad_inputs(h, a.quick)),
                         ("lag_kill+state_loss", lambda: scenario_lag_and_state(h, lag_trials, a.create_cost,
                                                                                a.quick)),
                         ("procurify", lambda: import_module("benchmarks.chaos_procurify").scenario(h, trials,
                                                                                                    a.quick)),
                         ("jaggaer", lambda: scenario_own_harness("benchmarks.chaos_jaggaer", 1 if a.quick else 30,
                                                                  seed, root)),
                         ("procore", lambda: scenario_own_harness("benchmarks.procore_chaos", 1 if a.quick else 30,
                                                                  seed, root)),
                         # --quick: one of the three pairs (about 20 s), so the suite's reduced run stays short.
                         ("state_loss_pswrite", lambda: scenario_own_harness(
                             "benchmarks.state_loss_pswrite", 0, seed, root,
                             ("--pairs", "procurify-peoplesoft") if a.quick else ()))):
            t = time.monotonic()
            if name == "lag_kill+state_loss":
                doc["lag_kill"], doc["state_loss"] = fn()
            else:
                doc[name] = fn()
            timings[name] = round(time.monotonic() - t, 1)
            print(f"[chaos] {name} done in {timings[name]} s", file=sys.stderr, flush=True)
        doc["secrets"] = scenario_secrets(h, crash_before)
        doc["tracebacks"] = h.tracebacks
        doc["seconds"] = {**timings, "total": round(time.monotonic() - t0, 1)}
        doc["totals"] = fold_own_harnesses(import_module("benchmarks.chaos_procurify").fold_totals(totals(doc, h),
                                                                                                   doc), doc)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)

    _vtable("1. Kill at any instant (SIGKILL at random moments, then a completion pass)", doc["kill"],
            ["trials", "killed", "finished_before_kill", "kill_delay_max_s", "source", "issues", "synced",
             "duplicates", "missing", "comments", "comments_duplicated", "comments_missing", "backflow_changes",
             "backflow_duplicated", "backflow_missing", "backflow_wrong_jde_status", "state_unloadable_after_kill",
             "pending", "completion_exit", "settle_exit", "settle_writes", "stale_status", "seconds"])
    _table("2. Fault matrix (faulted pass -> replay retry --all -> normal pass)", doc["faults"],
           ["pair", "case", "exit", "exit_ok", "synced", "queued", "unaccounted_after_fault", "replay_exit",
            "synced_after_replay", "queued_after_replay", "final_exit", "synced_final", "lost", "duplicated",
            "message"])
    _table("3. Overlapping runs", doc["overlap"],
           ["pair", "runs", "exit_codes", "exactly_one_worked", "locked_max_s", "worker_s", "state_loadable",
            "duplicates", "missing"])
    _table(f"4. Bad input catalogue ({len(doc['bad_inputs'])} cases)", doc["bad_inputs"],
           ["pair", "case", "exit", "expected", "exit_ok", "traceback", "lost", "message"])
    _vtable(f"6. Kill and rerun at once under Jira search lag ({lag_trials} trials per pair per lag, "
            f"create cost {a.create_cost:g} s/issue)",
            [{**r, "pair": f"{'psft' if r['pair'].startswith('p') else 'jde'} @{r['lag_s']:g}s"}
             for r in doc["lag_kill"]],
            ["trials", "settle_s", "killed", "held_kills", "finished_before_kill", "rerun_nonzero",
             "rerun_tracebacks", "rerun_max_s", "source", "issues", "duplicates", "trials_with_duplicates",
             "missing", "comments_duplicated", "comments_missing", "backflow_duplicated", "pending",
             "completion_exit", "settle_writes", "seconds"])
    for r in doc["lag_kill"]:
        if r.get("first_duplicate"):
            print(f"  {r['pair']} @{r['lag_s']:g}s first duplicate: {r['first_duplicate']}")
    _table("7. State lost, restored, moved, of another site", doc["state_loss"],
           ["pair", "case", "exit", "ok", "created", "adopted", "issues", "duplicated", "lost", "next_writes",
            "traceback", "message"])
    _table("8. Pairs with their own chaos modules (kills, lost answers; jaggaer: duplicate-invoice check on and "
           "off; procore: missing and duplicated webhook deliveries; state_loss_pswrite: cases a-d of table 7 for the "
           "pairs that write into PeopleSoft)", [doc["jaggaer"], doc["procore"], doc["state_loss_pswrite"]],
           ["module", "trials", "exit", "failed", "duplicated", "lost", "tracebacks", "seconds"])
    s = doc["secrets"]
    print(f"\n5. Secrets: {s['needles']} needles (secrets + Basic base64) in {s['outputs_scanned']} captured outputs "
          f"and {s['files_scanned']} files: {s['leaks']} found {s['leak_sample'] or ''}")
    if doc["problems"]:
        print("\nOther problems (wrong exit code, unsettled state, lock not exclusive...):")
        for prob in doc["problems"]:
            print(f"  - {prob}")
    if h.tracebacks:
        print("\nTracebacks / internal errors in: " + "; ".join(h.tracebacks[:20]))
    print(f"\nseed {seed}; seconds {doc['seconds']}")
    print("\nJSON:")
    text = json.dumps(doc, indent=1, default=str)
    print(text)
    if a.json_out:
        a.json_out.write_text(text, encoding="utf-8")
    t = doc["totals"]
    print(f"lost {t['lost']}, duplicated {t['duplicated']}, leaked {t['leaked']}, tracebacks {t['tracebacks']}")
    return 0 if not (t["lost"] or t["duplicated"] or t["leaked"] or t["tracebacks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
