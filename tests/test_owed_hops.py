"""Hops owed after a create: inside ``IssueWriter.overlapping`` a window's watermark may move while the hops of
its new issues still run, because they are recorded on disk first. A pass killed then leaves them to the next
pass, which takes each exactly once from the issue's current status; a later write of the same key waits for
them; the window loop ends only once they are done."""

from __future__ import annotations

import shutil
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlconnector.audit import Audit, Redactor
from mlconnector.http import HttpSettings
from mlconnector.jira.client import JiraClient
from mlconnector.jira.sink import OWED, IssueWrite, IssueWriter
from mlconnector.sandbox.jira_sim import JiraSim
from mlconnector.sandbox.server import Request, SandboxServer
from mlconnector.state import State
from mlconnector.sync.engine import Counts
from mlconnector.sync.keys import encode_key

AUTH = ("sync-bot@example.com", "sandbox-jira-token")
FAST = HttpSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=2, read_timeout=30)
PO = "10002"
KIND = "purchase_orders"
HOLD = 30.0  # upper bound of a wait that the behaviour under test ends at once
DEAD = "x-test-dead"  # header of the requests of a pass the test has "killed"
APPROVED = "10002"  # the sandbox's status id of Approved, two hops from the start status


def record(n: int, target: str | None, version: int = 1) -> IssueWrite:
    label = f"mlc-po-{n}"
    fields = {"project": {"key": "PROC"}, "issuetype": {"id": PO}, "summary": f"Purchase order US001/{n}: v{version}",
              "labels": [label]}
    return IssueWrite(KIND, encode_key(("US001", str(n))), datetime(2026, 1, version, tzinfo=UTC),
                      f"S{version}" if target else "", target, fields, {"summary": fields["summary"]},
                      f"h{n}-{version}", label)


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(JiraSim(), name="jira") as srv:
        yield srv


def writer(state_file: Path, server: SandboxServer, failures: list[Any], dead: bool = False) -> IssueWriter:
    counts: dict[str, Counts] = defaultdict(Counts)
    jira = JiraClient(server.url, AUTH, FAST)
    if dead:
        jira.http.session.headers[DEAD] = "1"
    return IssueWriter(jira, State.load(state_file), Audit(None, Redactor(), "test"), counts=lambda k: counts[k],
                       fail=lambda kind, key, row, exc: failures.append((key, exc)), project="PROC",
                       issue_type_id=lambda kind: PO, bulk_size=5, max_workers=2, max_bulk_creates=4,
                       settle_seconds=0)


def is_hop(req: Request) -> bool:
    return req.method == "POST" and req.path.endswith("/transitions")


def issue_of(req: Request) -> str:
    return req.path.split("/")[-2]


def statuses(server: SandboxServer) -> Counter[str]:
    return Counter(i.status for i in server.app._issues.values())


def test_a_pass_killed_with_hops_owed_leaves_them_on_disk_and_the_next_pass_takes_each_once(
        tmp_path: Path, server: SandboxServer) -> None:
    recs = [record(0, None)] + [record(n, "Approved") for n in range(1, 9)]
    release = threading.Event()
    held = threading.Event()
    hops: Counter[str] = Counter()  # issue -> hops Jira took (by POST /transitions)
    looks: list[str] = []
    lock = threading.Lock()

    def validator(req: Request) -> None:
        if req.header(DEAD):
            if is_hop(req):
                held.set()
                release.wait(HOLD)  # the killed pass's hop never reaches Jira
            if release.is_set():
                raise ValueError("this pass was killed")
            return
        with lock:
            if is_hop(req):
                hops[issue_of(req)] += 1
            elif req.method == "GET" and "/issue/PROC-" in req.path:
                looks.append(req.path)

    server.app.request_validator = validator
    failures: list[Any] = []
    first = writer(tmp_path / "state.json", server, failures, dead=True)
    windows = first.overlapping(iter([[(r, {}) for r in recs]]))
    try:
        batch = next(windows)
        done = first.write(KIND, batch)
        # Every record is handled for the window rule: created, and its hops owed on disk.
        assert done == {r.key for r in recs} and failures == []
        assert held.wait(HOLD)
        (tmp_path / "rerun").mkdir()
        shutil.copy(tmp_path / "state.json", tmp_path / "rerun" / "state.json")  # what a kill leaves on disk
    finally:
        release.set()
        windows.close()  # the dead pass's hops are all refused
    on_disk = State.load(tmp_path / "rerun" / "state.json")
    owed = on_disk.extra[OWED][KIND]
    assert sorted(owed) == sorted(r.key for r in recs[1:])
    assert all(on_disk.entry(KIND, k)["status"] is None for k in owed)
    assert statuses(server)[APPROVED] == 0 and hops == {}

    later: list[Any] = []
    rerun = writer(tmp_path / "rerun" / "state.json", server, later)
    rerun.resolve_pending([KIND])
    assert statuses(server)[APPROVED] == 8
    assert set(hops.values()) == {1} and len(hops) == 8  # each issue moved once, by one hop
    assert len(looks) == 8  # from its current status, read by GET /issue/{key}
    after = State.load(tmp_path / "rerun" / "state.json")
    assert OWED not in after.extra
    assert {after.entry(KIND, r.key)["status"] for r in recs[1:]} == {"S1"}

    # Nothing left: the pass after that sends nothing for them.
    hops.clear()
    looks.clear()
    writer(tmp_path / "rerun" / "state.json", server, later).resolve_pending([KIND])
    assert hops == {} and looks == [] and later == []


def test_a_later_write_of_a_key_waits_for_its_owed_hops(tmp_path: Path, server: SandboxServer) -> None:
    recs = [record(0, None)] + [record(n, "Approved") for n in range(1, 4)]
    again = record(2, "Pending Approval", version=2)  # the next window has a newer version of record 2
    order: list[tuple[str, str]] = []
    release = threading.Event()
    lock = threading.Lock()

    def validator(req: Request) -> None:
        if is_hop(req):
            release.wait(HOLD)  # every hop waits until the second write is seen waiting
            with lock:
                order.append(("hop", issue_of(req)))
        elif req.method == "PUT":
            with lock:
                order.append(("edit", req.path.split("/")[-1]))

    server.app.request_validator = validator
    failures: list[Any] = []
    w = writer(tmp_path / "state.json", server, failures)
    waited = threading.Event()
    wait_owed = w._wait_owed

    def spy(futures: set[Any]) -> None:
        if futures:
            waited.set()  # the second write is now waiting for the held hop
        wait_owed(futures)

    w._wait_owed = spy  # type: ignore[method-assign]
    results: list[set[str]] = []
    windows = w.overlapping(iter([[(r, {}) for r in recs], [(again, {})]]))
    results.append(w.write(KIND, next(windows)))
    key2 = str((w.state.entry(KIND, recs[2].key) or {}).get("issue"))
    second = threading.Thread(target=lambda: results.append(w.write(KIND, next(windows))))
    second.start()
    assert waited.wait(HOLD)
    release.set()
    second.join(HOLD)
    assert not second.is_alive()
    with pytest.raises(StopIteration):
        next(windows)  # the loop's end: every owed hop done
    assert failures == [] and results[1] == {again.key}
    mine = [x for x in order if x[1] == key2]
    assert mine[0] == ("hop", key2) and ("edit", key2) in mine[1:]  # the owed hop first, then the newer version
    state = State.load(tmp_path / "state.json")
    assert OWED not in state.extra
    assert state.entry(KIND, again.key)["status"] == "S2"
    assert statuses(server)[APPROVED] == 2


def test_the_window_loop_ends_once_every_owed_hop_is_done(tmp_path: Path, server: SandboxServer) -> None:
    recs = [record(0, None)] + [record(n, "Approved") for n in range(1, 12)]
    failures: list[Any] = []
    w = writer(tmp_path / "state.json", server, failures)
    for batch in w.overlapping(iter([[(r, {}) for r in recs[:6]], [(r, {}) for r in recs[6:]]])):
        w.write(KIND, batch)
    assert w._owed == {} and failures == []
    assert statuses(server)[APPROVED] == 11
    state = State.load(tmp_path / "state.json")
    assert OWED not in state.extra
    assert {state.entry(KIND, r.key)["status"] for r in recs[1:]} == {"S1"}


# -- the real CLI: several windows, and a SIGKILL while hops are owed ------------------------------------------
HOP = r"/issue/PROC-\d+/transitions$"
MAPPED = {"I": "To Do", "PA": "Pending Approval", "A": "Approved", "D": "In Progress", "DA": "Denied", "C": "Done",
          "X": "Cancelled"}


def _po_statuses(env: Any) -> dict[str, tuple[str, str]]:
    """label -> (the Jira status of its issue, the status its PeopleSoft row maps to)."""
    from mlconnector.mapping import record_label

    wanted = {record_label("purchase_orders", f"{r['BUSINESS_UNIT']}|{r['PO_ID']}"): MAPPED[r["PO_STATUS"]]
              for r in env.box.ps.rows("purchase_orders")}
    out: dict[str, tuple[str, str]] = {}
    for issue in env.box.jira.all_issues():
        for label in issue["fields"].get("labels", []):
            if label in wanted:
                out[label] = (str(issue["fields"]["status"]), wanted[label])
    return out


def test_a_cli_pass_killed_with_hops_owed_is_finished_by_the_next_pass(sandbox_env: Any) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlconnector.errors import EXIT_OK

    env = sandbox_env
    env.write_config(extra_ps="[peoplesoft.records.requisitions]\nenabled = false\n"
                              "[peoplesoft.records.vouchers]\nenabled = false\n")
    env.config.write_text(env.config.read_text().replace("maxrows = 100\n", "maxrows = 8\n"))
    # Jira holds every hop it is sent: the pass goes on to the next windows, moving the watermark past issues
    # whose hops are owed (on disk), and is killed there.
    env.box.jira_server.faults.add(kind="delay", path=HOP, method="POST", count=None, delay=60)
    cmd = [sys.executable, "-m", "mlconnector", "sync", "peoplesoft-jira", "--config", str(env.config)]
    proc = subprocess.Popen(cmd, env=env.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    owed: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while not owed:
            assert proc.poll() is None, "the pass ended before it owed any hop past a watermark"
            assert time.monotonic() < deadline, "no hop owed past a watermark within 60 s"
            try:
                state = State.load(env.state_file)
            except Exception:  # noqa: BLE001 - not written yet
                state = None
            if state is not None and "purchase_orders" in state.watermarks:
                owed = dict((state.extra.get(OWED) or {}).get(KIND, {}))
            time.sleep(0.01)  # a child process's file: polled
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        env.box.jira_server.faults.clear()
    env.box.jira_server.clear_log()
    rerun = env.cli("sync", "peoplesoft-jira", "--json")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert json.loads(rerun.stdout)["queue_size"] == 0
    assert {label: keys for label, keys in env.issues_by_label().items() if len(keys) != 1} == {}
    assert {label: s for label, s in _po_statuses(env).items() if s[0] != s[1]} == {}
    hops = [r for r in env.box.jira_server.requests() if r.method == "POST" and r.path.endswith("/transitions")]
    assert hops and all(r.status == 204 for r in hops)  # none repeated (Jira refuses a hop it already took)
    after = State.load(env.state_file)
    assert OWED not in after.extra
    audit = [json.loads(x) for x in env.audit_file.read_text().splitlines()]
    finished = {x["key"] for x in audit if x.get("note") == "owed by an earlier pass"}
    assert finished and finished <= set(owed)


def test_a_mark_left_for_a_record_written_since_is_dropped_and_sends_nothing(tmp_path: Path,
                                                                            server: SandboxServer) -> None:
    recs = [record(0, None), record(1, "Approved")]
    failures: list[Any] = []
    w = writer(tmp_path / "state.json", server, failures)
    for batch in w.overlapping(iter([[(r, {}) for r in recs]])):
        w.write(KIND, batch)
    state = State.load(tmp_path / "state.json")
    issue = state.entry(KIND, recs[1].key)["issue"]
    # As if a pass had owed hops to these records, then written them again (status known) or relinked them.
    state.extra[OWED] = {KIND: {recs[1].key: {"issue": issue, "to": "To Do", "code": "I"},
                                recs[0].key: {"issue": "PROC-999", "to": "Done", "code": "C"}}}
    state.save()
    seen: list[str] = []
    server.app.request_validator = lambda req: seen.append(f"{req.method} {req.path}")
    writer(tmp_path / "state.json", server, failures).resolve_pending([KIND])
    assert seen == [] and failures == []
    assert OWED not in State.load(tmp_path / "state.json").extra
    assert statuses(server)[APPROVED] == 1
