"""Authenticators shared by the clients: HTTP Basic and OAuth2 bearer tokens.

``ClientCredentialsAuth`` gets a token from the customer's identity provider (PeopleSoft is only a
resource server, see reference 2.3) and refreshes it shortly before it expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from mlconnector.errors import AuthError, TokenError
from mlconnector.http import HttpClient, HttpSettings, short_body

REFRESH_MARGIN = 60.0  # seconds before expiry at which a token is renewed


class BearerAuth(requests.auth.AuthBase):
    """Sends ``Authorization: Bearer <token>``, asking ``get_token`` each time (it caches)."""

    def __init__(self, get_token: Callable[[], str]) -> None:
        self.get_token = get_token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.get_token()}"
        return r


class ClientCredentialsAuth(BearerAuth):
    def __init__(self, system: str, token_url: str, client_id: str, client_secret: str, scope: str = "",
                 settings: HttpSettings | None = None, clock: Callable[[], float] = time.time) -> None:
        self.system = system
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.http = HttpClient(f"{system} identity provider", token_url, settings,
                               config_hint=f"token_url in the [{system.lower()}] section")
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        super().__init__(self.token)

    def token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._expires - REFRESH_MARGIN:
                self._fetch()
            assert self._token is not None
            return self._token

    def _fetch(self) -> None:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        try:
            # Asking twice for a token does no harm, so the POST may be retried like a GET; 4xx are
            # let through to be explained below.
            resp = self.http.request("POST", self.token_url, data=data, idempotent=True,
                                     auth=(self.client_id, self._secret), allow=(400, 401, 403))
        except AuthError:
            resp = None
        if resp is None or resp.status_code in (400, 401, 403):
            status = resp.status_code if resp is not None else 401
            text = resp.text if resp is not None else ""
            raise TokenError(
                f"The {self.system} identity provider refused the client credentials (HTTP {status}: "
                f"{short_body(text, 200)}). Check client_id in the configuration and the client secret "
                f"(mlconnector secrets set {self.system.lower()}.client_secret)."
            )
        try:
            body = resp.json()
            token = body["access_token"]
            expires_in = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise TokenError(f"The {self.system} identity provider answered without an access_token. Check "
                            f"token_url points at the OAuth2 token endpoint.") from None
        self._token = token
        self._expires = self.clock() + expires_in
