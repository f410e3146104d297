"""Issue 14, findings 5, 6 and 16: the webhook receiver against hostile clients and replays.

Raw sockets on 127.0.0.1 (port 0); every socket has a timeout, so no test can hang.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_jde_sync import JdeEnv, jde_env  # noqa: F401 - the fixture is shared with the sync tests
from test_jde_webhook import SECRET, _event

from mlconnector.state import State, iso, utcnow
from mlconnector.webhook import append_event, make_server, sign, spool_path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[object, Path]]:
    spool = spool_path(tmp_path / "state.json")
    srv = make_server(SECRET, spool, idle_timeout=0.3, max_connections=2)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv, spool
    finally:
        srv.shutdown()
        srv.server_close()


def _raw(port: int, head: str, body: bytes = b"", shut: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head.encode("latin-1") + b"\r\n" + body)
        if shut:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _lines(spool: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in spool.read_text().splitlines()] if spool.exists() else []


@pytest.mark.parametrize("length,expected", [("-1", 400), ("abc", 400), ("1e3", 400), (" +5", 400), (None, 411)])
def test_untrustworthy_content_length_is_refused_before_reading(server: tuple[object, Path], length: str | None,
                                                                expected: int, capfd: pytest.CaptureFixture[str]
                                                                ) -> None:
    srv, spool = server
    body = _event("PROC-1", "1")
    head = "POST /jira/webhook HTTP/1.1\r\nHost: x\r\n" + f"X-Hub-Signature: {sign(SECRET, body)}\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    answer = _raw(srv.server_address[1], head, body)  # type: ignore[attr-defined]
    assert _status(answer) == expected
    assert _lines(spool) == []
    assert "Traceback" not in capfd.readouterr().err  # 16: a 400, not a handler traceback


def test_chunked_bodies_are_refused(server: tuple[object, Path]) -> None:
    srv, spool = server
    body = _event("PROC-1", "1")
    head = (f"POST /jira/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"X-Hub-Signature: {sign(SECRET, body)}\r\n")
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    assert _status(_raw(srv.server_address[1], head, chunked)) == 411  # type: ignore[attr-defined]
    assert _lines(spool) == []


def test_idle_connections_time_out_and_are_bounded(server: tuple[object, Path]) -> None:
    srv, spool = server
    port = srv.server_address[1]  # type: ignore[attr-defined]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        idle[0].sendall(b"POST /jira/webhook HTTP/1.1\r\n")  # a head that never ends
        # Both slots are taken: a third connection is answered 503 at once, without a thread (it sends
        # nothing: data the server never reads would turn its close into a reset).
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            assert _status(third.recv(1024)) == 503
        # The idle sockets are dropped by the server after idle_timeout (0.3 s), not held forever.
        for s in idle:  # EOF within the client's own 5 s timeout (a TimeoutError here fails the test)
            while s.recv(1024):
                pass
    finally:
        for s in idle:
            s.close()
    body = _event("PROC-1", "7")
    head = (f"POST /jira/webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature: {sign(SECRET, body)}\r\n"
            f"Content-Length: {len(body)}\r\n")
    give_up = time.monotonic() + 5
    while True:  # a slot is released just after its socket closes
        status = _status(_raw(port, head, body))
        if status != 503 or time.monotonic() > give_up:
            break
    assert status == 204 and len(_lines(spool)) == 1


def _post(port: int, body: bytes, delivery: str) -> int:
    head = (f"POST /jira/webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature: {sign(SECRET, body)}\r\n"
            f"X-Atlassian-Webhook-Identifier: {delivery}\r\nContent-Length: {len(body)}\r\n")
    return _status(_raw(port, head, body))


def test_a_signed_delivery_is_accepted_once_and_stale_ones_are_refused(server: tuple[object, Path]) -> None:
    srv, spool = server
    port = srv.server_address[1]  # type: ignore[attr-defined]
    body = _event("PROC-1", "10010")
    assert [_post(port, body, "d-1") for _ in range(20)] == [204] * 20  # acknowledged, so Jira stops retrying
    assert _post(port, body, "d-forged-new-id") == 204  # the unsigned id changed, the signed body did not
    assert len(_lines(spool)) == 1
    old = _event("PROC-1", "10009", ts_ms=int((time.time() - 3 * 3600) * 1000))
    future = _event("PROC-1", "10011", ts_ms=int((time.time() + 3600) * 1000))
    assert _post(port, old, "d-2") == 400 and _post(port, future, "d-3") == 400
    assert len(_lines(spool)) == 1


def test_a_replayed_old_delivery_does_not_move_jde_back(jde_env: JdeEnv) -> None:  # noqa: F811
    env = jde_env
    assert env.sync().exit_code == 0
    wo = env.box.jde.rows(order_type="WO")[4]
    key = env.issue_for(wo["DOCO"])["key"]
    env.box.jira.transition_as_user(key, "Blocked")
    blocked_change = env.box.jira.issue(key)["changelog"][-1]["id"]
    assert env.sync().counts["jira_status"].posted == 1
    env.box.jira.transition_as_user(key, "Done")
    assert env.sync().counts["jira_status"].posted == 1
    assert [c.inputs["NewStatus"] for c in env.box.jde.calls_for(wo["DOCO"])] == ["HD", "90"]
    # Days later: the posted book was pruned and the polling window has moved on...
    state = State.load(env.state_file)
    state.extra["jde-jira"]["posted"] = {}
    state.watermarks["jde-jira.backflow"] = iso(utcnow() + timedelta(days=3))
    state.save()
    # ...when the old "Blocked" delivery comes in again (a replay the receiver could not tell apart).
    append_event(spool_path(env.state_file), {"issue": key, "changelog_id": blocked_change, "delivery": "d-old",
                                              "received": iso(utcnow())})
    result = env.sync()
    assert result.counts["jira_status"].posted == 0
    assert [c.inputs["NewStatus"] for c in env.box.jde.calls_for(wo["DOCO"])] == ["HD", "90"]
