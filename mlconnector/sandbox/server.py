"""A small threaded HTTP server on loopback that hosts one simulator app, with fault injection.

Simulators are plain callables ``app(request) -> Response``; this module owns sockets, latency,
rate limiting and injected faults so every simulator gets them the same way. Servers bind
127.0.0.1 on port 0 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # keys lower-cased
    body: bytes = b""

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    h = {"Content-Type": "application/json;charset=UTF-8"}
    h.update(headers or {})
    return Response(status, json.dumps(obj).encode("utf-8"), h)


def text_response(status: int, text: str, content_type: str = "text/plain; charset=UTF-8",
                  headers: dict[str, str] | None = None) -> Response:
    h = {"Content-Type": content_type}
    h.update(headers or {})
    return Response(status, text.encode("utf-8"), h)


App = Callable[[Request], Response]

FAULT_KINDS = ("status", "drop_before", "drop_after", "delay", "hang_after", "body")


@dataclass
class Fault:
    """One injected fault.

    kind:
      - ``status``: answer ``status`` (e.g. 503, 429) with ``body`` and ``headers`` without calling the app
        (429 gets ``Retry-After: retry_after`` when set);
      - ``drop_before``: close the connection without answering and without calling the app;
      - ``drop_after``: call the app (its side effects happen), then close without answering;
      - ``delay``: sleep ``delay`` seconds, then handle normally (use to exceed a client timeout);
      - ``hang_after``: call the app (its side effects happen), then sleep ``delay`` seconds before answering
        (a window in which to kill the client after the write and before it learns the result);
      - ``body``: call nothing, answer ``status`` (default 200) with ``body`` verbatim (garbage, HTML...).
    ``count`` is how many matching requests it hits (None = all); ``skip`` lets that many matching
    requests through first. ``body_match`` (a regular expression searched in the request body) tells SOAP
    operations apart, which all share one path. ``reached`` is set once a hit request got to the fault (for
    ``drop_after`` and ``hang_after``: once the app has run, so its side effects are all there): tests wait on
    it rather than sample a write that is still under way.
    """

    kind: str
    path: str = ".*"  # regular expression searched in the request path
    method: str | None = None
    count: int | None = 1
    skip: int = 0
    status: int = 503
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    delay: float = 0.0
    body_match: str | None = None
    reached: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(FAULT_KINDS)}")
        self._re = re.compile(self.path)
        self._body_re = re.compile(self.body_match.encode("utf-8")) if self.body_match else None

    def matches(self, req: Request) -> bool:
        if self.method and self.method.upper() != req.method:
            return False
        if self._body_re is not None and not self._body_re.search(req.body):
            return False
        return bool(self._re.search(req.path))


class FaultPlan:
    """Thread-safe list of faults; the first live matching fault wins."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.hits = 0

    def add(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        f = fault or Fault(**kwargs)
        with self._lock:
            self._faults.append(f)
        return f

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, req: Request) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if (f.count is None or f.count > 0) and f.matches(req):
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    if f.count is not None:
                        f.count -= 1
                    self.hits += 1
                    return f
        return None


class TokenBucket:
    """Requests per second limit; past it the server answers 429 with Retry-After."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take a token; return 0 if granted, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int  # 0 when the connection was dropped


class SandboxServer:
    """Hosts ``app`` on http://127.0.0.1:<port>. Use as a context manager or call start()/stop()."""

    def __init__(self, app: App, name: str = "sandbox", host: str = "127.0.0.1", port: int = 0,
                 latency: float = 0.0, rate_limit: float | None = None) -> None:
        self.app = app
        self.name = name
        self.host = host
        self.port = port
        self.latency = latency
        self.faults = FaultPlan()
        self.bucket = TokenBucket(rate_limit) if rate_limit else None
        # Set: every request waits until the event is set (at most gate_timeout s). Tests hold a client at its
        # first request this way, to order events between processes without sleeping.
        self.gate: threading.Event | None = None
        self.gate_timeout = 120.0
        self.log: list[LoggedRequest] = []
        self._log_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.name}-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_rate_limit(self, rate: float | None, burst: float | None = None) -> None:
        self.bucket = TokenBucket(rate, burst) if rate else None

    # -- request log -----------------------------------------------------------------------------
    def record(self, method: str, path: str, status: int) -> None:
        with self._log_lock:
            self.log.append(LoggedRequest(method, path, status))

    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        rx = re.compile(path) if path else None
        with self._log_lock:
            return [r for r in self.log
                    if (method is None or r.method == method) and (rx is None or rx.search(r.path))]

    def clear_log(self) -> None:
        with self._log_lock:
            self.log.clear()

    # -- dispatch --------------------------------------------------------------------------------
    def dispatch(self, req: Request) -> Response | None:
        """Return the response to send, or None to drop the connection."""
        gate = self.gate
        if gate is not None:
            gate.wait(self.gate_timeout)
        if self.latency:
            time.sleep(self.latency)
        fault = self.faults.take(req)
        if fault is not None and fault.kind not in ("drop_after", "hang_after"):
            fault.reached.set()
        if fault is not None:
            if fault.kind == "drop_before":
                return None
            if fault.kind == "delay":
                time.sleep(fault.delay)
            elif fault.kind == "status":
                headers = dict(fault.headers)
                if fault.retry_after is not None:
                    headers.setdefault("Retry-After", _fmt_seconds(fault.retry_after))
                headers.setdefault("Content-Type", "application/json;charset=UTF-8")
                body = fault.body or json.dumps({"errorMessages": [f"injected HTTP {fault.status}"],
                                                 "errors": {}})
                return Response(fault.status, body.encode("utf-8"), headers)
            elif fault.kind == "body":
                headers = dict(fault.headers)
                headers.setdefault("Content-Type", "text/html; charset=UTF-8")
                return Response(fault.status if fault.status != 503 else 200, fault.body.encode("utf-8"),
                                headers)
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait > 0:
                secs = max(1, int(wait + 0.999))
                return json_response(429, {"errorMessages": ["Rate limit exceeded."], "errors": {}},
                                     {"Retry-After": str(secs), "RateLimit-Reason": "jira-burst-based",
                                      "X-RateLimit-Limit": str(int(self.bucket.rate)),
                                      "X-RateLimit-Remaining": "0"})
        try:
            resp = self.app(req)
        except Exception as exc:  # a simulator bug must show up as a 500, not hang the client
            resp = json_response(500, {"errorMessages": [f"sandbox error: {exc!r}"], "errors": {}})
        if fault is not None:
            fault.reached.set()  # drop_after, hang_after: the app has run
        if fault is not None and fault.kind == "drop_after":
            return None
        if fault is not None and fault.kind == "hang_after":
            time.sleep(fault.delay)
        return resp


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _make_handler(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms a request.
        disable_nagle_algorithm = True
        server_version = f"mlconnector-{server.name}"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
            return

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            resp = server.dispatch(req)
            if resp is None:
                server.record(req.method, req.path, 0)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            server.record(req.method, req.path, resp.status)
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            try:
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.body)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (a timeout, a killed pass): exactly what some tests provoke.
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    return Handler
