"""Jira webhooks: a receiver that verifies X-Hub-Signature and queues events for the next pass, and
dynamic (OAuth app) webhook registration with refresh before the 30-day expiry.

Polling stays the default and the safety net: an event only names an issue (and changelog id) for
the next `sync jde-jira` pass to check through the changelog, so a lost, late or replayed delivery
changes nothing but latency.

Events are appended to a spool file next to the state file (``<state>.webhooks.jsonl``) under its
own small lock, because a pass holds the state's run lock for minutes; the pass moves them into the
state (state.extra) under both locks and then empties the spool.

The receiver faces the network, so it reads nothing it cannot bound: a request needs a plain
``Content-Length`` (no chunked bodies, no negative or non-numeric lengths) of at most ``MAX_BODY``;
idle sockets time out after ``IDLE_TIMEOUT``; at most ``MAX_CONNECTIONS`` connections are served at
once (more get 503), so at most ``MAX_CONNECTIONS * MAX_BODY`` bytes are buffered before signatures
are checked. A signed delivery is accepted once: its identifier and body digest are remembered for
``REPLAY_WINDOW``, and a delivery whose signed ``timestamp`` is older than that (or too far ahead) is
refused, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlconnector.private import FILE_MODE, open_private, private_dir
from mlconnector.state import iso, utcnow

log = logging.getLogger("mlconnector.webhook")

MAX_BODY = 1_000_000  # Jira issue events are a few KB; anything this big is not one
REFRESH_AFTER = timedelta(days=25)  # dynamic webhooks expire after 30 days
IDLE_TIMEOUT = 10.0  # seconds a connection may sit without sending (Jira sends at once)
MAX_CONNECTIONS = 32  # served at once; bounds threads and bytes held before signature checks
# A signed delivery older than this is refused, and ids/digests are remembered this long. Jira retries
# a failed delivery within minutes; a later one is only latency lost, polling is the safety net.
REPLAY_WINDOW = timedelta(minutes=60)
FUTURE_SKEW = timedelta(minutes=5)  # clocks differ a little; a timestamp further ahead is forged
MAX_REMEMBERED = 100_000
_LENGTH = re.compile(r"[0-9]{1,9}")


# -- signature ----------------------------------------------------------------------------------------
def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> tuple[bool, str]:
    """(ok, reason). Only ``sha256=<hex>`` is accepted (Atlassian warns the prefix may change)."""
    if not secret:
        return False, "no webhook secret is configured"
    if not header:
        return False, "unsigned request (no X-Hub-Signature header)"
    method, _, given = header.strip().partition("=")
    if method.lower() != "sha256" or not given:
        return False, f"unsupported signature method {method!r}"
    expected = sign(secret, body).partition("=")[2]
    # Constant-time comparison: a timing difference must not reveal how many leading bytes matched.
    if not hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("ascii", "replace")):
        return False, "signature does not match the body"
    return True, ""


# -- spool --------------------------------------------------------------------------------------------
def spool_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".webhooks.jsonl")


def _spool_lock(path: Path) -> Any:
    from filelock import FileLock

    return FileLock(str(path.with_name(path.name + ".lock")), timeout=30, mode=FILE_MODE)


def append_event(path: Path, event: dict[str, Any]) -> None:
    private_dir(path.parent)
    with _spool_lock(path), open_private(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())  # acknowledged to Jira only once it is on disk


def drain_events(path: Path, commit: Callable[[list[dict[str, Any]]], None]) -> int:
    """Hand queued events to ``commit`` (which saves them in the state), then empty the spool."""
    if not path.exists():
        return 0
    with _spool_lock(path):
        events = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if isinstance(ev, dict):
                    events.append(ev)
        if events:
            commit(events)  # a crash before the truncate only repeats events; the changelog check dedupes
        with open_private(path, "w", encoding="utf-8"):
            pass
        return len(events)


def event_from_payload(payload: Any, delivery_id: str = "") -> dict[str, Any] | None:
    """The part of a Jira event the pass needs, or None when it carries no status change."""
    if not isinstance(payload, dict) or payload.get("webhookEvent") != "jira:issue_updated":
        return None
    issue = payload.get("issue") or {}
    changelog = payload.get("changelog") or {}
    items = changelog.get("items") or []
    if not issue.get("key") or not any((i.get("fieldId") or i.get("field")) == "status" for i in items
                                       if isinstance(i, dict)):
        return None
    return {"issue": str(issue["key"]), "changelog_id": str(changelog.get("id") or ""),
            "delivery": delivery_id, "received": iso(utcnow())}


# -- receiver -----------------------------------------------------------------------------------------
class ReplayGuard:
    """Remembers accepted deliveries (identifier and body digest) for ``window``; bounded in size.

    ``admit`` is atomic: of two concurrent copies of one delivery, exactly one is admitted.
    """

    def __init__(self, window: timedelta = REPLAY_WINDOW, limit: int = MAX_REMEMBERED,
                 clock: Callable[[], float] = time.time) -> None:
        self.window = window.total_seconds()
        self.limit = limit
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def stale(self, payload: Any) -> str:
        """Why the delivery's signed timestamp is unacceptable, or '' when it is fresh."""
        ts = payload.get("timestamp") if isinstance(payload, dict) else None
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            return "no timestamp in the signed body"
        age = self.clock() - ts / 1000.0
        if age > self.window:
            return f"delivery is {age / 60:.0f} min old (replay window {self.window / 60:.0f} min)"
        if -age > FUTURE_SKEW.total_seconds():
            return "timestamp is in the future"
        return ""

    def admit(self, keys: list[str]) -> bool:
        now = self.clock()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now:
                self._seen.popitem(last=False)
            if any(k in self._seen for k in keys):
                return False
            for k in keys:
                self._seen[k] = now + self.window
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)
            return True

    def forget(self, keys: list[str]) -> None:
        with self._lock:
            for k in keys:
                self._seen.pop(k, None)


class WebhookServer(ThreadingHTTPServer):
    """A threading HTTP server serving at most ``max_connections`` connections at once.

    A connection over the limit is answered 503 and closed without a thread of its own.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int = MAX_CONNECTIONS) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            # The slot is free before the client can see the connection close, so a client that
            # connects again at once is served.
            self._slots.release()
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line, never a traceback on the console: a client that hangs up mid-answer is routine."""
        import sys

        exc = sys.exc_info()[1]
        who = client_address[0] if client_address else "?"
        if isinstance(exc, OSError):
            log.info("webhook connection from %s ended early (%s)", who, exc.__class__.__name__)
        else:
            log.error("webhook request from %s failed: %s: %s", who, exc.__class__.__name__, exc)


def make_server(secret: str, spool: Path, host: str = "127.0.0.1", port: int = 0,
                path: str = "/jira/webhook", *, idle_timeout: float = IDLE_TIMEOUT,
                max_connections: int = MAX_CONNECTIONS, guard: ReplayGuard | None = None) -> WebhookServer:
    replay = guard or ReplayGuard()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = idle_timeout  # socket timeout: an idle or dripping client is dropped

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - our own log lines instead
            return

        def _answer(self, status: int, text: str = "") -> None:
            body = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _refuse(self, status: int, text: str, why: str) -> None:
            log.warning("rejected webhook from %s: %s", self.client_address[0], why)
            self.close_connection = True  # the unread body must not be taken for the next request
            self._answer(status, text)

        def _length(self) -> int | None:
            """The body length, or None after answering a request whose length cannot be trusted."""
            if self.headers.get("Transfer-Encoding"):
                self._refuse(411, "Content-Length required", "chunked body (Content-Length required)")
                return None
            values = self.headers.get_all("Content-Length") or []
            if not values:
                self._refuse(411, "Content-Length required", "no Content-Length")
                return None
            if len(values) > 1 or not _LENGTH.fullmatch(values[0].strip()):
                self._refuse(400, "bad Content-Length", f"bad Content-Length {values[0][:20]!r}")
                return None
            length = int(values[0])
            if length > MAX_BODY:
                self._refuse(413, "too large", f"body of {length} bytes is too large")
                return None
            return length

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            who = self.client_address[0]
            if self.path.split("?", 1)[0] != path:
                self.close_connection = True
                self._answer(404, "not found")
                return
            length = self._length()
            if length is None:
                return
            try:
                body = self.rfile.read(length)
            except OSError:  # includes the idle timeout
                self.close_connection = True
                return
            if len(body) < length:  # the client went away mid-body
                self.close_connection = True
                return
            # Verify the raw bytes before parsing anything (reference jira.md 7.2).
            ok, reason = verify_signature(secret, body, self.headers.get("X-Hub-Signature"))
            if not ok:
                log.warning("rejected webhook from %s: %s", who, reason)
                self._answer(401, "bad signature")
                return
            try:
                payload = json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                log.warning("rejected webhook from %s: signed body is not JSON", who)
                self._answer(400, "not JSON")
                return
            stale = replay.stale(payload)
            if stale:
                log.warning("rejected webhook from %s: %s", who, stale)
                self._answer(400, "stale delivery")
                return
            delivery = self.headers.get("X-Atlassian-Webhook-Identifier") or ""
            # The digest covers the signed body, so changing the (unsigned) identifier does not evade it.
            keys = ["sha256:" + hashlib.sha256(body).hexdigest()] + ([f"id:{delivery}"] if delivery else [])
            if not replay.admit(keys):
                log.warning("ignored webhook from %s: delivery %s was already accepted", who, delivery or "(no id)")
                self._answer(204)  # acknowledged, so that Jira stops retrying it
                return
            event = event_from_payload(payload, delivery)
            try:
                if event is not None:
                    append_event(spool, event)
                    log.info("queued webhook event for %s (changelog %s)", event["issue"], event["changelog_id"])
            except BaseException:
                replay.forget(keys)  # not stored: Jira's retry must be accepted
                raise
            self._answer(204)

        def do_GET(self) -> None:  # noqa: N802
            self.close_connection = True
            self._answer(405, "POST only")

    return WebhookServer((host, port), Handler, max_connections)


def serve(cfg: Any, *, host: str, port: int, path: str, echo: Callable[[str], None]) -> None:
    from mlconnector.credentials import SecretStore

    secret = SecretStore(cfg.instance).get("jira.webhook_secret")
    spool = spool_path(cfg.state_file)
    try:
        server = make_server(secret, spool, host, port, path)
    except (OSError, OverflowError) as exc:
        from mlconnector.errors import ConfigError

        raise ConfigError(f"Cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}). Choose a free "
                          f"port with --port (1-65535; below 1024 needs privileges) or another address with "
                          f"--host.") from None
    echo(f"Listening for Jira webhooks on http://{host}:{server.server_address[1]}{path} (events queued in {spool})."
         f" Put a TLS reverse proxy in front of it. Ctrl-C stops.")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        echo("Stopped.")
    finally:
        server.server_close()


# -- dynamic webhooks (OAuth 2.0 apps) ----------------------------------------------------------------
def ensure_dynamic_webhook(http: Any, book: dict[str, Any], url: str, jql: str,
                           now: datetime | None = None) -> str:
    """Register the app's webhook once, refresh it 25 days after the last refresh; return what was done.

    ``book`` is the pair's state.extra section; the registration is kept under book["webhook"].
    Jira allows dynamic webhooks only for Connect and OAuth 2.0 apps (403 for API-token users).
    """
    now = now or utcnow()
    wh = book.get("webhook") or {}
    if wh.get("id") and wh.get("url") == url and wh.get("jql") == jql:
        last = datetime.fromisoformat(wh.get("refreshed_at") or wh["registered_at"])
        if now - last < REFRESH_AFTER:
            return "ok"
        resp = http.request("PUT", "/rest/api/3/webhook/refresh", json={"webhookIds": [int(wh["id"])]},
                            allow=(400, 404))
        if resp.status_code == 200:
            wh.update(refreshed_at=iso(now), expires=str(resp.json().get("expirationDate", "")))
            book["webhook"] = wh
            return "refreshed"
        # Gone (expired or deleted by an admin): register a new one below.
    body = {"url": url, "webhooks": [{"events": ["jira:issue_updated"], "jqlFilter": jql,
                                      "fieldIdsFilter": ["status"]}]}
    result = http.request("POST", "/rest/api/3/webhook", json=body, idempotent=False).json()
    first = (result.get("webhookRegistrationResult") or [{}])[0]
    if not first.get("createdWebhookId"):
        from mlconnector.errors import RemoteError

        raise RemoteError(f"Jira did not register the webhook: {'; '.join(first.get('errors') or ['no id'])}",
                          system="Jira", raw=json.dumps(result))
    book["webhook"] = {"id": int(first["createdWebhookId"]), "url": url, "jql": jql, "registered_at": iso(now),
                       "refreshed_at": iso(now)}
    return "registered"
