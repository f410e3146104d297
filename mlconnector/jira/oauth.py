"""Jira OAuth 2.0 (3LO): the one-time consent step and rotating refresh tokens.

Atlassian rotates refresh tokens: each refresh returns a new one and invalidates the old. The new
token is stored durably *before* the new access token is used, and refreshes happen only under the
run lock (the CLI holds it), so two cron runs never spend the same token. Where it is stored, and
why a value in the environment cannot win over it, is ``RefreshTokens``' business.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as pysecrets
import threading
import time
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from mlconnector.auth import REFRESH_MARGIN, BearerAuth
from mlconnector.config import JiraConfig
from mlconnector.credentials import SecretStore, env_name
from mlconnector.errors import AuthError, ConfigError, TokenError
from mlconnector.http import HttpClient, short_body

SCOPES = "read:jira-work write:jira-work read:jira-user offline_access"


def _token_request(j: JiraConfig, payload: dict[str, str]) -> dict[str, Any]:
    http = HttpClient("Jira authorization server", j.token_url, j.http, config_hint="token_url in [jira]")
    try:
        # Never retried blindly: a refresh that reached the server has already rotated the token.
        resp = http.request("POST", j.token_url, json=payload, idempotent=False, allow=(400, 401, 403))
    finally:
        http.close()
    if resp.status_code != 200:
        raise TokenError(
            f"Jira's authorization server refused the token request (HTTP {resp.status_code}: "
            f"{short_body(resp.text, 200)}). If it says invalid_grant, the refresh token expired or was already "
            f"used: run 'mlconnector auth jira' to consent again. Otherwise check jira.client_id and the secret "
            f"jira.client_secret.")
    try:
        body = resp.json()
        body["access_token"]
    except (ValueError, KeyError, TypeError):
        raise AuthError("Jira's authorization server answered without an access_token; check jira.token_url.") from None
    return body


REFRESH = "jira.refresh_token"


def token_file_for(state_file: Path) -> Path:
    """Where rotated refresh tokens are recorded for the configuration of ``state_file``."""
    return state_file.with_name(state_file.name + ".jira-token.json")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class RefreshTokens:
    """The current Jira refresh token of one configuration, and where a rotated one is kept.

    A rotated token goes to the keyring when there is one, else into ``path`` (0600, replaced
    atomically). ``path`` also records which environment value (``MLCONNECTOR_JIRA_REFRESH_TOKEN``,
    as a SHA-256 digest, never the value) the rotation superseded: while the environment still holds
    that spent value, the rotated token wins; a different value there is a new token the admin set on
    purpose, and it wins. Call ``save`` before using what the refresh returned.
    """

    def __init__(self, store: SecretStore, path: Path | None) -> None:
        self.store = store
        self.path = path

    def _record(self) -> dict[str, Any] | None:
        if self.path is None:
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise ConfigError(f"The Jira token file {self.path} is unreadable or corrupt. Run 'mlconnector auth jira' "
                              f"to consent again (it rewrites the file).") from None
        return data if isinstance(data, dict) else None

    def current(self) -> str:
        env = os.environ.get(env_name(REFRESH))
        rec = self._record()
        if rec is not None and (not env or _digest(env) == rec.get("superseded_env")):
            token = rec.get("refresh_token") if rec.get("store") == "file" else self.store.find_in_keyring(REFRESH)
            if token:
                return str(token)
        return self.store.get(REFRESH)  # the environment, else the keyring, else an error naming the fix

    def save(self, token: str) -> None:
        from mlconnector.audit import GLOBAL
        from mlconnector.state import iso, utcnow, write_atomic

        GLOBAL.add(token)
        env = os.environ.get(env_name(REFRESH))
        record: dict[str, Any] = {"superseded_env": _digest(env) if env else "", "saved_at": iso(utcnow())}
        try:
            self.store.set(REFRESH, token)
            if self.store.find_in_keyring(REFRESH) != token:  # a backend that silently stores nothing
                raise ConfigError("the keyring did not keep the token")
            record["store"] = "keyring"
        except ConfigError:
            if self.path is None:
                raise
            record.update(store="file", refresh_token=token)  # no keyring on this host
        if self.path is not None:
            try:
                write_atomic(self.path, json.dumps(record).encode("utf-8"))  # mkstemp: 0600
            except OSError as exc:
                raise AuthError(
                    f"The new Jira refresh token could not be saved to {self.path} ({exc.strerror or exc}); the old "
                    f"one is already spent. Make the state directory writable, then run 'mlconnector auth jira'."
                ) from None


class JiraOAuth(BearerAuth):
    def __init__(self, j: JiraConfig, store: SecretStore, clock: Callable[[], float] = time.time, *,
                 token_file: Path | None = None) -> None:
        self.j = j
        self.store = store
        self.clock = clock
        self.refresh_tokens = RefreshTokens(store, token_file)
        self._client_secret = store.get("jira.client_secret")
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.refresh_tokens.current()  # fail early, with the command that fixes it
        super().__init__(self.token)

    def token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._expires - REFRESH_MARGIN:
                self._refresh()
            assert self._token is not None
            return self._token

    def _refresh(self) -> None:
        refresh = self.refresh_tokens.current()
        body = _token_request(self.j, {"grant_type": "refresh_token", "client_id": self.j.client_id,
                                       "client_secret": self._client_secret, "refresh_token": refresh})
        new_refresh = body.get("refresh_token")
        if new_refresh and new_refresh != refresh:
            self.refresh_tokens.save(str(new_refresh))  # durable before the access token is used
        self._token = body["access_token"]
        self._expires = self.clock() + float(body.get("expires_in", 3600))


def consent(j: JiraConfig, store: SecretStore, *, open_browser: bool = True, timeout: float = 300.0,
            echo: Callable[[str], None] = print, token_file: Path | None = None) -> str:
    """Run the authorization-code flow on a loopback redirect; store the refresh token. Returns scopes granted."""
    if j.auth != "oauth2":
        raise ConfigError("jira.auth is \"basic\": there is nothing to consent to. Set auth = \"oauth2\", client_id "
                          "and cloud_id in [jira] to use OAuth 2.0 (3LO).")
    client_secret = store.get("jira.client_secret")
    state = pysecrets.token_urlsafe(24)
    result: dict[str, str] = {}
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            q = parse_qs(urlsplit(self.path).query)
            if q.get("state", [""])[0] != state:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(b"State mismatch: this response was not for this consent request.")
                return
            result.update({k: v[0] for k, v in q.items()})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"ml-connector received the authorization. You can close this window.")
            done.set()

    server = HTTPServer(("127.0.0.1", j.redirect_port), Handler)
    port = server.server_address[1]
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = j.auth_url + "?" + urlencode({
            "audience": "api.atlassian.com", "client_id": j.client_id, "scope": SCOPES, "redirect_uri": redirect_uri,
            "state": state, "response_type": "code", "prompt": "consent"})
        echo(f"Open this address in a browser and approve access:\n{url}")
        if open_browser:
            webbrowser.open(url)
        if not done.wait(timeout):
            raise AuthError(f"No answer from the browser within {timeout:.0f} s. Run 'mlconnector auth jira' "
                            f"again; the app's callback URL must be {redirect_uri}.")
    finally:
        server.shutdown()
        server.server_close()
    if "error" in result:
        raise AuthError(f"Consent was refused: {result.get('error')} {result.get('error_description', '')}".strip())
    code = result.get("code")
    if not code:
        raise AuthError("The authorization server redirected back without a code.")
    body = _token_request(j, {"grant_type": "authorization_code", "client_id": j.client_id,
                              "client_secret": client_secret, "code": code, "redirect_uri": redirect_uri})
    if not body.get("refresh_token"):
        raise AuthError("Jira granted no refresh token: the app must request the offline_access scope.")
    RefreshTokens(store, token_file).save(str(body["refresh_token"]))
    return str(body.get("scope", ""))


