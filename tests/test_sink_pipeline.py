"""The Jira writer's pipeline: the hops of issues just created go out while other bulk creates are still being
worked on, and every bulk create still finds its records' pending marks on disk when it reaches Jira."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlconnector.audit import Audit, Redactor
from mlconnector.http import HttpSettings
from mlconnector.jira.client import JiraClient
from mlconnector.jira.sink import IssueWrite, IssueWriter
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


def record(n: int, target: str | None) -> IssueWrite:
    label = f"mlc-po-{n}"
    fields = {"project": {"key": "PROC"}, "issuetype": {"id": PO}, "summary": f"Purchase order US001/{n}: test",
              "labels": [label]}
    return IssueWrite(KIND, encode_key(("US001", str(n))), datetime(2026, 1, 1, tzinfo=UTC), "S" if target else "",
                      target, fields, {"summary": fields["summary"]}, f"h{n}", label)


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(JiraSim(), name="jira") as srv:
        yield srv


def writer(tmp_path: Path, server: SandboxServer, failures: list[Any]) -> IssueWriter:
    counts: dict[str, Counts] = defaultdict(Counts)
    return IssueWriter(JiraClient(server.url, AUTH, FAST), State.load(tmp_path / "state.json"),
                       Audit(None, Redactor(), "test"), counts=lambda k: counts[k],
                       fail=lambda kind, key, row, exc: failures.append((key, exc)), project="PROC",
                       issue_type_id=lambda kind: PO, bulk_size=5, max_workers=2, max_bulk_creates=4,
                       settle_seconds=0)


def labels_of(req: Request) -> set[str]:
    return {lab for u in req.json()["issueUpdates"] for lab in u["fields"]["labels"]}


def test_the_hops_of_a_chunk_go_out_while_a_later_bulk_create_is_still_in_jira(tmp_path: Path,
                                                                                server: SandboxServer) -> None:
    # Approved is two hops from the start status: the create carries the first, a request takes the second.
    # The first record (the one created alone to learn the workflow) needs no transition, so every hop seen
    # belongs to a chunk created beside the held one.
    recs = [record(0, None)] + [record(n, "Approved") for n in range(1, 12)]
    last = recs[-1].label
    moved = threading.Event()
    seen_while_held: list[bool] = []

    def validator(req: Request) -> None:
        if req.method == "POST" and req.path.endswith("/transitions"):
            moved.set()
        elif req.method == "POST" and req.path.endswith("/issue/bulk") and last in labels_of(req):
            seen_while_held.append(moved.wait(HOLD))

    server.app.request_validator = validator
    failures: list[Any] = []
    w = writer(tmp_path, server, failures)
    done = w.write(KIND, [(r, {}) for r in recs])
    assert seen_while_held == [True]
    assert failures == [] and done == {r.key for r in recs}
    statuses = {i.status for i in server.app._issues.values()}
    assert len(server.app._issues) == 12 and statuses == {"10000", "10002"}  # To Do (record 0) and Approved


def test_each_bulk_create_finds_its_pending_marks_on_disk_with_several_in_flight(tmp_path: Path,
                                                                                   server: SandboxServer) -> None:
    recs = [record(n, "Pending Approval") for n in range(40)]
    by_label = {r.label: r.key for r in recs}
    missing: list[str] = []
    bulks = 0
    lock = threading.Lock()

    def validator(req: Request) -> None:
        nonlocal bulks
        if req.method == "POST" and req.path.endswith("/issue/bulk"):
            on_disk = State.load(tmp_path / "state.json").entries(KIND)
            with lock:
                bulks += 1
                missing.extend(lab for lab in labels_of(req)
                               if not (on_disk.get(by_label[lab]) or {}).get("pending"))

    server.app.request_validator = validator
    failures: list[Any] = []
    done = writer(tmp_path, server, failures).write(KIND, [(r, {}) for r in recs])
    assert bulks >= 5 and missing == []
    assert failures == [] and len(done) == 40 and len(server.app._issues) == 40
