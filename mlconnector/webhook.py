"""Jira webhooks: a receiver that verifies X-Hub-Signature and queues events for the next pass, and
dynamic (OAuth app) webhook registration with refresh before the 30-day expiry.

Polling stays the default and the safety net: an event only names an issue (and changelog id) for
the next `sync jde-jira` pass to check through the changelog, so a lost, late or replayed delivery
changes nothing but latency.

Events are appended to a spool file next to the state file (``<state>.webhooks.jsonl``) under its
own small lock, because a pass holds the state's run lock for minutes; the pass moves them into the
state (state.extra) under both locks and then empties the spool.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlconnector.state import iso, utcnow

log = logging.getLogger("mlconnector.webhook")

MAX_BODY = 1_000_000  # Jira issue events are a few KB; anything this big is not one
REFRESH_AFTER = timedelta(days=25)  # dynamic webhooks expire after 30 days


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

    return FileLock(str(path.with_name(path.name + ".lock")), timeout=30)


def append_event(path: Path, event: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _spool_lock(path), path.open("a", encoding="utf-8") as f:
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
        path.write_text("", encoding="utf-8")
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
def make_server(secret: str, spool: Path, host: str = "127.0.0.1", port: int = 0,
                path: str = "/jira/webhook") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - our own log lines instead
            return

        def _answer(self, status: int, text: str = "") -> None:
            body = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            who = self.client_address[0]
            if self.path.split("?", 1)[0] != path:
                self._answer(404, "not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                log.warning("rejected webhook from %s: body of %d bytes is too large", who, length)
                self.close_connection = True
                self._answer(413, "too large")
                return
            body = self.rfile.read(length) if length else b""
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
            event = event_from_payload(payload, self.headers.get("X-Atlassian-Webhook-Identifier") or "")
            if event is not None:
                append_event(spool, event)
                log.info("queued webhook event for %s (changelog %s)", event["issue"], event["changelog_id"])
            self._answer(204)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(405, "POST only")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(cfg: Any, *, host: str, port: int, path: str, echo: Callable[[str], None]) -> None:
    from mlconnector.credentials import SecretStore

    secret = SecretStore(cfg.instance).get("jira.webhook_secret")
    spool = spool_path(cfg.state_file)
    server = make_server(secret, spool, host, port, path)
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
