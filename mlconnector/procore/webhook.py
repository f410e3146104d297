"""Procore webhooks as triggers, polling as the safety net: registering the hook and its triggers, and a
receiver that checks the shared secret, dedupes deliveries and spools the records they name.

Procore signs nothing: the only authenticity check is the ``destination_headers`` Authorization value sent
with every delivery (reference procore.md section 8), compared in constant time with the secret
``procore.webhook_secret``. A delivery never carries the record, only its resource name and id: the receiver
answers at once (Procore wants 2xx within 5 s) after appending ``{resource_name, resource_id, project_id}`` to
its own spool next to the state file, and the next pass fetches the named records. Duplicates (Procore retries
for hours) are dropped on ``ulid``/``id`` and are harmless anyway: the pass writes only what changed. A missed
delivery costs latency only: the pass's updated_at window reads every change.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from mlconnector.errors import ConfigError
from mlconnector.state import iso, utcnow
from mlconnector.webhook import (
    _LENGTH,
    IDLE_TIMEOUT,
    MAX_BODY,
    MAX_CONNECTIONS,
    ReplayGuard,
    WebhookServer,
    append_event,
)

log = logging.getLogger("mlconnector.procore.webhook")

SECRET = "procore.webhook_secret"
DEDUPE_WINDOW = timedelta(hours=13)  # Procore retries a failing delivery for up to 12 h


def spool_path(state_file: Path) -> Path:
    """The Procore receiver's own spool (the Jira receiver's is drained by another pair)."""
    return state_file.with_name(state_file.name + ".procore-webhooks.jsonl")


def event_from_payload(payload: Any) -> dict[str, Any] | None:
    """What the pass needs of a delivery (v2 to v4 payloads), or None when it names no record."""
    if not isinstance(payload, dict):
        return None
    rid = payload.get("resource_id")
    name = payload.get("resource_name") or payload.get("resource_type")
    if rid in (None, "") or not name:
        return None
    return {"resource_name": str(name), "resource_id": str(rid), "project_id": str(payload.get("project_id") or ""),
            "event_type": str(payload.get("event_type") or payload.get("reason") or ""),
            "ulid": str(payload.get("ulid") or payload.get("id") or ""), "received": iso(utcnow())}


def make_server(secret: str, spool: Path, host: str = "127.0.0.1", port: int = 0, path: str = "/procore/webhook",
                *, idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                guard: ReplayGuard | None = None) -> WebhookServer:
    """The receiver: 401 without the shared secret, 2xx at once for a stored or duplicate delivery."""
    if not secret:
        raise ConfigError(f"No Procore webhook secret: set it with `mlconnector secrets set {SECRET}` (the same value "
                          f"`mlconnector webhook procore-register` sends as the hook's Authorization header).")
    expected = f"Bearer {secret}".encode()
    seen = guard or ReplayGuard(window=DEDUPE_WINDOW)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = idle_timeout

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - our own log lines instead
            return

        def _answer(self, status: int, text: str = "", close: bool = False) -> None:
            if close:
                self.close_connection = True
            body = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            who = self.client_address[0]
            if self.path.split("?", 1)[0] != path:
                self._answer(404, "not found", close=True)
                return
            given = (self.headers.get("Authorization") or "").strip().encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                log.warning("rejected Procore webhook from %s: missing or wrong Authorization", who)
                self._answer(401, "unauthorized", close=True)  # the body is left unread
                return
            values = self.headers.get_all("Content-Length") or []
            if self.headers.get("Transfer-Encoding") or len(values) != 1 or not _LENGTH.fullmatch(values[0].strip()):
                self._answer(411, "Content-Length required", close=True)
                return
            length = int(values[0])
            if length > MAX_BODY:
                self._answer(413, "too large", close=True)
                return
            try:
                body = self.rfile.read(length)
            except OSError:
                self.close_connection = True
                return
            if len(body) < length:
                self.close_connection = True
                return
            try:
                payload = json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self._answer(400, "not JSON")
                return
            event = event_from_payload(payload)
            if event is None:
                self._answer(200, "ignored")
                return
            keys = [f"ulid:{event['ulid']}"] if event["ulid"] else []
            if keys and not seen.admit(keys):
                self._answer(200, "duplicate")  # acknowledged, so that Procore stops retrying it
                return
            try:
                append_event(spool, event)
            except BaseException:
                seen.forget(keys)  # not stored: Procore's retry must be accepted
                raise
            log.info("queued Procore %s %s", event["resource_name"], event["resource_id"])
            self._answer(200, "queued")

        def do_GET(self) -> None:  # noqa: N802
            self._answer(405, "POST only", close=True)

    return WebhookServer((host, port), Handler, max_connections)


def serve(cfg: Any, *, host: str, port: int, path: str, echo: Callable[[str], None]) -> None:
    from mlconnector.credentials import SecretStore

    secret = SecretStore(cfg.instance).get(SECRET)
    spool = spool_path(cfg.state_file)
    try:
        server = make_server(secret, spool, host, port, path)
    except (OSError, OverflowError) as exc:
        raise ConfigError(f"Cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}). Choose a free "
                          f"port with --port or another address with --host.") from None
    echo(f"Listening for Procore webhooks on http://{host}:{server.server_address[1]}{path} (records queued in "
         f"{spool} for the next sync peoplesoft-procore pass). Put a TLS reverse proxy in front of it. Ctrl-C stops.")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        echo("Stopped.")
    finally:
        server.server_close()


def register(client: Any, url: str, secret: str, *, namespace: str, api_version: str,
             resources: list[str], events: list[str]) -> dict[str, Any]:
    """Make sure the company has one hook of ``namespace`` posting to ``url`` with the secret, and a trigger
    per resource and event. Every create is preceded by a lookup (running it twice changes nothing).
    Returns {"hook": id, "created": bool, "triggers_added": n}."""
    cfg = client.cfg
    base = "/rest/v1.0/webhooks/hooks"
    cid = cfg.company_id
    headers = {"Authorization": f"Bearer {secret}"}
    hooks = client.get_json(base, {"company_id": cid, "namespace": namespace})
    mine = [h for h in hooks if isinstance(h, dict) and h.get("destination_url") == url] if isinstance(
        hooks, list) else []
    created = False
    if mine:
        hook = mine[0]
        client.request("PATCH", f"{base}/{hook['id']}", json={"company_id": cid, "hook": {
            "api_version": api_version, "destination_url": url, "destination_headers": headers}}, idempotent=True)
    else:
        resp = client.request("POST", base, json={"company_id": cid, "hook": {
            "api_version": api_version, "namespace": namespace, "destination_url": url,
            "destination_headers": headers}})
        hook = resp.json()
        created = True
    have = client.get_json(f"{base}/{hook['id']}/triggers", {"company_id": cid})
    existing = {(t.get("resource_name"), t.get("event_type")) for t in have if isinstance(t, dict)} if isinstance(
        have, list) else set()
    added = 0
    for resource in resources:
        for event in events:
            if (resource, event) in existing:
                continue
            client.request("POST", f"{base}/{hook['id']}/triggers", json={
                "company_id": cid, "api_version": api_version,
                "trigger": {"resource_name": resource, "event_type": event}})
            added += 1
    return {"hook": hook["id"], "created": created, "triggers_added": added}
