"""HttpClient retry policy over real loopback HTTP, with injected faults and a fake sleep."""

from __future__ import annotations

import email.utils
import socket
import threading
from collections.abc import Iterator

import pytest

from mlconnector.errors import AmbiguousWriteError, AuthError, RemoteError, UnreachableError
from mlconnector.http import HttpClient, HttpSettings, parse_retry_after
from mlconnector.sandbox.server import Request, Response, SandboxServer, json_response, text_response


class App:
    """Counts the requests that reached the application (i.e. that could have had an effect)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, req: Request) -> Response:
        with self.lock:
            self.seen.append((req.method, req.path))
        if req.path == "/auth":
            return json_response(401, {"errorMessages": ["Client must be authenticated"]})
        if req.path == "/bad":
            return text_response(400, '{"errorMessages":["Field \'x\' is invalid"],"errors":{}}')
        return json_response(200 if req.method == "GET" else 201, {"ok": True, "path": req.path})

    def count(self, method: str | None = None) -> int:
        with self.lock:
            return sum(1 for m, _ in self.seen if method is None or m == method)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SandboxServer]:
    with SandboxServer(App(), name="http-test") as srv:
        yield srv


@pytest.fixture
def app(shared_server: SandboxServer) -> App:
    a = App()
    shared_server.app = a
    shared_server.faults.clear()
    shared_server.clear_log()
    return a


@pytest.fixture
def server(shared_server: SandboxServer, app: App) -> SandboxServer:
    return shared_server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def client(server: SandboxServer, sleeps: Sleeps, **settings: float) -> HttpClient:
    s = HttpSettings(**{"backoff_initial": 0.001, "backoff_max": 0.01, "max_attempts": 5,
                        "read_timeout": 5.0, "connect_timeout": 2.0, **settings})
    return HttpClient("Testsys", server.url, s, sleep=sleeps)


def test_get_retries_through_503_and_succeeds(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=503, count=2)
    resp = client(server, sleeps).request("GET", "/thing")
    assert resp.status_code == 200 and resp.json()["path"] == "/thing"
    assert app.count() == 1
    assert len(server.requests("GET", "/thing")) == 3
    assert len(sleeps.waits) == 2


def test_429_waits_at_least_retry_after(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=429, retry_after=2, count=1)
    c = client(server, sleeps)
    resp = c.request("GET", "/thing")
    assert resp.status_code == 200
    # The first wait honours Retry-After (the shared pause may add a second fake sleep: no real time passes).
    assert sleeps.waits and sleeps.waits[0] >= 2
    assert c.rate_limited == 1
    assert len(server.requests("GET")) == 2


def test_503_retry_after_honoured_for_get(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=503, headers={"Retry-After": "7"}, count=1)
    assert client(server, sleeps).request("GET", "/thing").status_code == 200
    assert sleeps.waits and sleeps.waits[0] >= 7


def test_retry_after_beyond_max_fails_retryable_without_sleeping(server: SandboxServer, app: App,
                                                                  sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=429, retry_after=3600, count=None)
    with pytest.raises(RemoteError) as info:
        client(server, sleeps, max_retry_after=60).request("GET", "/thing")
    err = info.value
    assert not isinstance(err, AmbiguousWriteError)
    assert err.retryable and err.status == 429
    assert "rate limiting" in err.message and "next run" in err.message
    assert sleeps.waits == []
    assert len(server.requests(path="/thing")) == 1


def test_post_dropped_after_processing_is_ambiguous_and_not_resent(server: SandboxServer, app: App,
                                                                     sleeps: Sleeps) -> None:
    server.faults.add(kind="drop_after", method="POST", count=1)
    with pytest.raises(AmbiguousWriteError) as info:
        client(server, sleeps).request("POST", "/issue", json={"a": 1})
    assert info.value.retryable
    assert "unknown whether the write took effect" in info.value.message
    assert app.count("POST") == 1
    assert len(server.requests("POST")) == 1
    assert sleeps.waits == []


def test_post_read_timeout_after_processing_is_ambiguous(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    server.faults.add(kind="hang_after", method="POST", delay=1.5, count=1)
    with pytest.raises(AmbiguousWriteError) as info:
        client(server, sleeps, read_timeout=0.3).request("POST", "/issue", json={"a": 1})
    assert "read_timeout" in info.value.message
    assert app.count("POST") == 1  # reached the app once, was never sent again


def test_post_503_is_ambiguous_and_not_retried(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=503, method="POST", count=None)
    with pytest.raises(AmbiguousWriteError) as info:
        client(server, sleeps).request("POST", "/issue", json={"a": 1})
    assert info.value.status == 503 and info.value.retryable
    assert len(server.requests("POST")) == 1
    assert sleeps.waits == []


def test_post_503_can_be_retried_when_declared_idempotent(server: SandboxServer, app: App,
                                                          sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=503, method="POST", count=1)
    resp = client(server, sleeps).request("POST", "/search", json={}, idempotent=True)
    assert resp.status_code == 201
    assert len(server.requests("POST")) == 2 and app.count("POST") == 1


def test_post_429_is_retried_because_it_was_refused_before_processing(server: SandboxServer, app: App,
                                                                       sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=429, method="POST", retry_after=1, count=1)
    resp = client(server, sleeps).request("POST", "/issue", json={"a": 1})
    assert resp.status_code == 201
    assert app.count("POST") == 1
    assert len(server.requests("POST")) == 2
    assert sleeps.waits and sleeps.waits[0] >= 1


def test_get_dropped_before_processing_is_retried(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    server.faults.add(kind="drop_before", method="GET", count=2)
    resp = client(server, sleeps).request("GET", "/thing")
    assert resp.status_code == 200
    assert app.count() == 1
    assert len(server.requests("GET")) == 3


def test_401_is_auth_error_without_retry(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    with pytest.raises(AuthError) as info:
        client(server, sleeps).request("GET", "/auth")
    assert "HTTP 401" in info.value.message and "Testsys" in info.value.message
    assert app.count() == 1
    assert sleeps.waits == []


def test_400_is_remote_error_keeping_raw_body(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    with pytest.raises(RemoteError) as info:
        client(server, sleeps).request("POST", "/bad", json={})
    err = info.value
    assert not isinstance(err, AmbiguousWriteError)
    assert err.status == 400 and not err.retryable
    assert err.raw == '{"errorMessages":["Field \'x\' is invalid"],"errors":{}}'
    assert "HTTP 400" in err.message and "/bad" in err.message
    assert app.count() == 1 and sleeps.waits == []


def test_allowed_status_is_returned_not_raised(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    resp = client(server, sleeps).request("GET", "/bad", allow=(400,))
    assert resp.status_code == 400


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_unreachable_naming_host_and_port(sleeps: Sleeps) -> None:
    port = _closed_port()
    c = HttpClient("Testsys", f"http://127.0.0.1:{port}", HttpSettings(backoff_initial=0.001, max_attempts=3),
                   sleep=sleeps)
    with pytest.raises(UnreachableError) as info:
        c.request("GET", "/x")
    assert f"127.0.0.1:{port}" in info.value.message
    assert "connection refused" in info.value.message
    assert c.requests_made == 3


def test_post_connection_refused_is_retried_not_ambiguous(sleeps: Sleeps) -> None:
    """A refused connection never reached the server, so even a POST is safely retried."""
    port = _closed_port()
    c = HttpClient("Testsys", f"http://127.0.0.1:{port}", HttpSettings(backoff_initial=0.001, max_attempts=2),
                   sleep=sleeps)
    with pytest.raises(UnreachableError):
        c.request("POST", "/x", json={})
    assert c.requests_made == 2


def test_attempts_are_capped_at_max_attempts(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=502, count=None)
    c = client(server, sleeps, max_attempts=3)
    with pytest.raises(RemoteError) as info:
        c.request("GET", "/thing")
    assert info.value.status == 502 and info.value.retryable
    assert len(server.requests("GET")) == 3
    assert c.requests_made == 3
    assert len(sleeps.waits) == 2
    assert app.count() == 0


def test_backoff_grows_and_respects_backoff_max(server: SandboxServer, app: App, sleeps: Sleeps) -> None:
    server.faults.add(kind="status", status=503, count=None)
    c = client(server, sleeps, max_attempts=6, backoff_initial=1.0, backoff_max=4.0)
    with pytest.raises(RemoteError):
        c.request("GET", "/thing")
    assert len(sleeps.waits) == 5
    assert all(0 < w <= 4.0 * 1.3 for w in sleeps.waits)
    assert sleeps.waits[0] < sleeps.waits[-1]


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), (" 5 ", 5.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0),
    (None, None), ("", None), ("soon", None),
])
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    future = email.utils.formatdate(now + 30, usegmt=True)
    past = email.utils.formatdate(now - 300, usegmt=True)
    assert parse_retry_after(future, now=now) == pytest.approx(30.0)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 90) == pytest.approx(90.0)


def test_spent_quota_pauses_before_the_server_must_refuse() -> None:
    """X-RateLimit-Remaining: 0 with a reset time: the next request waits for the reset instead of a 429."""
    from datetime import UTC, datetime, timedelta

    reset = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")

    def app(req: Request) -> Response:
        return json_response(200, {"ok": True}, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})

    waits: list[float] = []
    with SandboxServer(app) as server:
        client = HttpClient("Jira", server.url, HttpSettings(backoff_initial=0.001), sleep=waits.append)
        client.request("GET", "/a")
        assert waits == []
        client.request("GET", "/b")
        assert len(waits) == 1 and 25 <= waits[0] <= 30
