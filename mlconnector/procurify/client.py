"""Procurify REST client: OAuth2 client credentials (JSON body, exact audience), a token cached across runs,
paged list reads, day-granular polling windows, and the ``x-request-id`` of every answer.

Contract:
- The access token lives 24 h and Procurify asks clients to cache it: it is kept as a secret (a 0600 file
  in the user cache directory, or the OS keyring), never in the state file, and is renewed
  ``token_margin_minutes`` before it expires. A 401 drops it and fetches one new token, once per request;
  a second 401 is an AuthError naming the secret.
- Lists follow ``metadata.pagination.next`` until it is null; amounts stay strings here (the pair parses
  them with ``Decimal``, never ``float``).
- Every request goes through the shared HTTP policy (429 with Retry-After, 5xx with back-off).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from mlconnector.audit import Redactor
from mlconnector.auth import BearerAuth
from mlconnector.errors import AuthError, RemoteError, TokenError
from mlconnector.http import HttpClient, short_body
from mlconnector.procurify.config import ProcurifyConfig
from mlconnector.token_cache import CachedToken, TokenCache, token_cache

log = logging.getLogger("mlconnector.procurify")

SYSTEM = "Procurify"
SECRET = "procurify.client_secret"
HEADERS = {"X-Procurify-Client": "api", "Accept": "application/json"}


# -- token cache ----------------------------------------------------------------------------------
def token_cache_for(cfg: ProcurifyConfig, instance: str, cache_dir: Path | None = None) -> TokenCache:
    return token_cache(cfg.token_cache, "procurify", instance, f"{cfg.base_url}|{cfg.client_id}", cache_dir)


class ProcurifyToken(CachedToken):
    """Fetches and caches the client-credentials token. Thread-safe; ``fetches`` counts token requests."""

    def __init__(self, cfg: ProcurifyConfig, client_secret: str, cache: TokenCache, *,
                 redactor: Redactor | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(cfg, client_secret, cache, HttpClient(
            f"{SYSTEM} token endpoint", cfg.base_url, cfg.http,
            config_hint="base_url / domain in the [procurify] section"), redactor=redactor, clock=clock)

    def _owner(self) -> dict[str, str]:
        return {"base_url": self.cfg.base_url, "client_id": self.cfg.client_id, "audience": self.cfg.audience}

    def _fetch(self) -> str:
        body = {"client_id": self.cfg.client_id, "client_secret": self._secret, "audience": self.cfg.audience,
                "grant_type": "client_credentials"}
        self.fetches += 1
        try:
            # JSON body, not form encoded (reference §2.3). Asking twice for a token does no harm.
            resp = self.http.request("POST", self.cfg.token_path, json=body, idempotent=True,
                                     allow=(400, 401, 403), headers={"Accept": "application/json"})
        except AuthError:
            resp = None
        if resp is None or resp.status_code in (400, 401, 403):
            status = resp.status_code if resp is not None else 401
            text = short_body(resp.text, 200) if resp is not None else ""
            raise TokenError(
                f"Procurify refused the client credentials (HTTP {status}: {text}). Check client_id and audience "
                f"(exactly {self.cfg.audience!r}) in [procurify] and the secret (mlconnector secrets set {SECRET}); "
                f"the API application is created under Settings > Integrations > Procurify API.")
        try:
            data = resp.json()
            token = data["access_token"]
            expires_in = float(data.get("expires_in", 86400))
        except (ValueError, KeyError, TypeError):
            raise TokenError(f"Procurify answered {self.cfg.token_path} without an access_token. Check base_url / "
                             f"domain and token_path in [procurify].") from None
        if not isinstance(token, str) or not token:
            raise TokenError(f"Procurify answered {self.cfg.token_path} with an empty access_token.")
        self._token, self._expires = token, self.clock() + expires_in
        self._remember(token)
        self.cache.store({**self._owner(), "access_token": token, "expires_at": self._expires})
        return token


# -- client ---------------------------------------------------------------------------------------
RequestHook = Callable[[str, str, int, str], None]  # (method, path, status, x-request-id)


class ProcurifyClient:
    """Reads (and, for later flows, writes) Procurify's REST API under one token and the shared HTTP policy.
    ``on_response`` is told the method, path, status and ``x-request-id`` of every answer (the audit trail)."""

    def __init__(self, cfg: ProcurifyConfig, token: ProcurifyToken, *, on_response: RequestHook | None = None) -> None:
        self.cfg = cfg
        self.token = token
        self._current = threading.local()
        self.http = HttpClient(SYSTEM, cfg.base_url, cfg.http, auth=BearerAuth(self._bearer),
                               config_hint="the [procurify] section of the configuration")
        self.http.session.headers.update(HEADERS)
        self.on_response = on_response
        self.request_ids: list[str] = []

    @property
    def requests_made(self) -> int:
        return self.http.requests_made + self.token.fetches

    def _bearer(self) -> str:
        tok = self.token.get()
        self._current.token = tok
        return tok

    def close(self) -> None:
        self.http.close()
        self.token.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request; on a 401 the token is dropped and fetched again, and the request sent once more."""
        for attempt in (1, 2):
            resp = self.http.request(method, path, allow=(401,), **kwargs)
            self._note(method, path, resp)
            if resp.status_code != 401:
                return resp
            refused = getattr(self._current, "token", None)
            if refused is not None:
                self.token.invalidate(refused)
            if attempt == 2:
                break
        raise AuthError(
            f"Procurify refused a freshly issued token (HTTP 401 on {method} {urlsplit(path).path}). The API "
            f"application's owning user may be deactivated or lack rights: use a dedicated, active service user, "
            f"and check client_id in [procurify] and the secret {SECRET}.")

    def _note(self, method: str, path: str, resp: requests.Response) -> None:
        rid = resp.headers.get("x-request-id", "")
        if rid:
            self.request_ids.append(rid)
        if self.on_response is not None:
            self.on_response(method, urlsplit(path).path, resp.status_code, rid)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        resp = self.request("GET", path, params=params)
        try:
            return resp.json()
        except ValueError:
            raise RemoteError(f"Procurify answered GET {urlsplit(path).path} with something that is not JSON: "
                              f"{short_body(resp.text, 200)}", system=SYSTEM, status=resp.status_code,
                              raw=resp.text) from None

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list endpoint: follows ``metadata.pagination.next`` (or a top-level ``pagination``,
        which some endpoints are reported to use) until it is null."""
        query: dict[str, Any] | None = {**(params or {}), "format": "json", "page": 1,
                                        "page_size": self.cfg.page_size}
        url: str | None = path
        seen: set[str] = set()
        while url:
            body = self.get_json(url, query)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise RemoteError(f"Procurify answered GET {urlsplit(url).path} without a data list (got "
                                  f"{short_body(json.dumps(body)[:300], 200)}). Check the path in [procurify].",
                                  system=SYSTEM, raw=json.dumps(body)[:2000])
            yield [r for r in body["data"] if isinstance(r, dict)]
            pag = (body.get("metadata") or {}).get("pagination") or body.get("pagination") or {}
            nxt = pag.get("next") if isinstance(pag, dict) else None
            if not nxt or nxt in seen:
                break
            seen.add(nxt)
            # The next link already carries every query parameter; it must stay on the configured host.
            if urlsplit(nxt).netloc and urlsplit(nxt).netloc != urlsplit(self.cfg.base_url).netloc:
                raise RemoteError(f"Procurify's next-page link points at another host ({urlsplit(nxt).netloc}); "
                                  f"refusing to send the token there.", system=SYSTEM)
            url, query = nxt, None

    def order_items(self, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        """Order items modified between ``start`` and ``end`` (day granularity: both days included)."""
        f = self.cfg.modified_filter
        params = {**self.cfg.order_item_filters, f"{f}_0": _day(start), f"{f}_1": _day(end)}
        yield from self.pages(self.cfg.order_items_path, params)

    def vendors(self) -> Iterator[list[dict[str, Any]]]:
        """Every vendor (the list has no modified-date filter: read in full, compare ``dateModified``)."""
        yield from self.pages(self.cfg.vendors_path)

    def patch_vendor(self, vendor_id: Any, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH a vendor (partial update: the same body sent twice leaves the same vendor)."""
        path = f"{self.cfg.vendor_path.rstrip('/')}/{vendor_id}/"
        resp = self.request("PATCH", path, json=changes, idempotent=True)
        if resp.status_code >= 400:
            raise RemoteError(f"Procurify refused the change to vendor {vendor_id} (HTTP {resp.status_code}: "
                              f"{short_body(resp.text, 200)}). Check that the API user may edit vendors, and "
                              f"vendor_path in [procurify].", system=SYSTEM, status=resp.status_code, raw=resp.text)
        try:
            body = resp.json()
        except ValueError:
            return {}
        data = body.get("data", body) if isinstance(body, dict) else {}
        return data if isinstance(data, dict) else {}

    def find_account_code(self, code: str) -> dict[str, Any] | None:
        """The account code whose ``code`` is exactly ``code`` (the filter is a current read), or None."""
        for page in self.pages(self.cfg.account_codes_path, {"code": code}):
            for row in page:
                if str(row.get("code")) == code:  # the filter's exactness is not documented: checked here
                    return row
        return None

    def create_account_code(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST an account code (not idempotent: the caller looks it up first and marks it pending)."""
        resp = self.request("POST", self.cfg.account_codes_path, json=body)
        return self._account_code_answer(resp, f"create account code {body.get('code')}")

    def put_account_code(self, code_id: Any, body: dict[str, Any]) -> dict[str, Any]:
        """PUT an account code (the whole record; the same body sent twice leaves the same code)."""
        path = f"{self.cfg.account_codes_path.rstrip('/')}/{code_id}/"
        resp = self.request("PUT", path, json=body, idempotent=True)
        return self._account_code_answer(resp, f"update account code {body.get('code')}")

    def _account_code_answer(self, resp: requests.Response, what: str) -> dict[str, Any]:
        if resp.status_code >= 400:
            raise RemoteError(f"Procurify refused to {what} (HTTP {resp.status_code}: {short_body(resp.text, 200)}). "
                              f"Check that the API user may manage account codes (Settings > Account Codes), and "
                              f"account_codes_path in [procurify].", system=SYSTEM, status=resp.status_code,
                              raw=resp.text)
        try:
            body = resp.json()
        except ValueError:
            return {}
        data = body.get("data", body) if isinstance(body, dict) else {}
        return data if isinstance(data, dict) else {}

    def purchase_order(self, number: Any) -> dict[str, Any]:
        """One Procurify PO by its ``procurify_PO`` number (a current read; ``state`` 3 = closed)."""
        body = self.get_json(f"{self.cfg.purchase_order_path.rstrip('/')}/{number}/")
        data = body.get("data", body) if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}

    def close_purchase_order(self, number: Any) -> dict[str, Any]:
        """POST close on a PO (no body). Not repeated on its own: the caller reads the state first."""
        resp = self.request("POST", f"{self.cfg.close_po_path.rstrip('/')}/{number}/close/")
        if resp.status_code >= 400:
            raise RemoteError(f"Procurify refused to close purchase order {number} (HTTP {resp.status_code}: "
                              f"{short_body(resp.text, 200)}). Check that the API user may close purchase orders, "
                              f"and close_po_path in [procurify].", system=SYSTEM, status=resp.status_code,
                              raw=resp.text)
        try:
            body = resp.json()
        except ValueError:
            return {}
        data = body.get("data", body) if isinstance(body, dict) else {}
        return data if isinstance(data, dict) else {}

    def whoami(self) -> dict[str, Any]:
        body = self.get_json(self.cfg.whoami_path)
        data = body.get("data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}


def _day(d: datetime | date) -> str:
    return d.date().isoformat() if isinstance(d, datetime) else d.isoformat()
