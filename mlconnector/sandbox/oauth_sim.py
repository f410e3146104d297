"""A loopback OAuth 2.0 authorization server: client credentials (PeopleSoft's identity provider) and
authorization code + rotating refresh tokens (Atlassian's 3LO), enough to exercise both flows.

Issued access tokens are added to ``accepted`` (a set shared with the PeopleSoft and Jira simulators'
``bearer_tokens``), so a token only works after it was really obtained here.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

from mlconnector.sandbox.server import Request, Response, json_response


class OAuthSim:
    def __init__(self, client_id: str, client_secret: str, accepted: set[str], *, expires_in: int = 3600,
                 auto_approve: bool = True) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.accepted = accepted
        self.expires_in = expires_in
        self.auto_approve = auto_approve
        self.codes: dict[str, str] = {}  # code -> redirect_uri
        self.refresh_tokens: set[str] = set()  # currently valid (each use rotates it)
        self.used_refresh_tokens: set[str] = set()
        self.token_requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, req: Request) -> Response:
        if req.path.endswith("/authorize") and req.method == "GET":
            return self._authorize(req)
        if req.path.endswith("/token") and req.method == "POST":
            return self._token(req)
        return json_response(404, {"error": "not_found"})

    def _authorize(self, req: Request) -> Response:
        if req.arg("client_id") != self.client_id or req.arg("response_type") != "code":
            return json_response(400, {"error": "invalid_request"})
        redirect = req.arg("redirect_uri") or ""
        state = req.arg("state") or ""
        if not self.auto_approve:
            return Response(302, b"", {"Location": redirect + "?" + urlencode({"error": "access_denied",
                                                                                "state": state})})
        code = secrets.token_urlsafe(12)
        with self._lock:
            self.codes[code] = redirect
        return Response(302, b"", {"Location": redirect + "?" + urlencode({"code": code, "state": state})})

    def _token(self, req: Request) -> Response:
        # Atlassian's endpoint takes JSON; identity providers for client credentials take a form.
        ctype = req.header("content-type", "") or ""
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        body = (req.json() or {}) if "json" in ctype else form
        basic = req.header("authorization", "") or ""
        client_id, client_secret = body.get("client_id"), body.get("client_secret")
        if basic.startswith("Basic "):
            import base64

            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        with self._lock:
            self.token_requests.append({"grant_type": body.get("grant_type"), "at": time.time()})
            if client_id != self.client_id or client_secret != self.client_secret:
                return json_response(401, {"error": "invalid_client"})
            grant = body.get("grant_type")
            if grant == "client_credentials":
                return self._issue(refresh=False)
            if grant == "authorization_code":
                code = body.get("code", "")
                if self.codes.pop(code, None) != body.get("redirect_uri"):
                    return json_response(403, {"error": "invalid_grant", "error_description": "bad code"})
                return self._issue(refresh=True)
            if grant == "refresh_token":
                token = body.get("refresh_token", "")
                if token not in self.refresh_tokens:
                    return json_response(403, {"error": "invalid_grant",
                                               "error_description": "Unknown or invalid refresh token."})
                self.refresh_tokens.discard(token)
                self.used_refresh_tokens.add(token)
                return self._issue(refresh=True)
            return json_response(400, {"error": "unsupported_grant_type"})

    def _issue(self, *, refresh: bool) -> Response:
        access = "at-" + secrets.token_urlsafe(16)
        self.accepted.add(access)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in,
                                "scope": "read:jira-work write:jira-work read:jira-user offline_access"}
        if refresh:
            rt = "rt-" + secrets.token_urlsafe(16)
            self.refresh_tokens.add(rt)
            body["refresh_token"] = rt
        return json_response(200, body)
