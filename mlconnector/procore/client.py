"""Procore REST client: DMSA client credentials (form body), a token cached across runs, the company header,
Link-header paging, sync actions with their always-200 answers, and both rate-limit windows.

Contract:
- The access token lives ``expires_in`` (90 min) from ``created_at``; it is kept as a secret between runs (a
  0600 file in the user cache directory, or the OS keyring; never the state file) and renewed
  ``token_margin_minutes`` before it expires. A 401 drops it and fetches one new token, once per request; a
  second 401 is an AuthError naming the secret.
- Every call carries ``Procore-Company-Id``. A 403 "App is not connected to this company" is an AuthError
  naming the App Management page (it stops the pass: every later call would get the same answer).
- ``X-Rate-Limit-Limit/-Remaining/-Reset`` are read from every answer (whichever window is closer to
  exhaustion); at ``spare_calls`` remaining the client waits for the reset when that is short, or stops with
  a retryable error naming the reset time when it is not (the next run goes on). 429 and 503 follow the
  shared HTTP policy (mlconnector/http.py), which honours ``Retry-After`` and ``X-Rate-Limit-Reset``.
- ``sync`` sends at most ``sync_batch`` items per call and returns the ``entities`` and ``errors`` of the
  answer: an HTTP 200 may carry failed rows. A sync action upserts by ``origin_id``, so resending it after a
  lost answer updates what the first call made and never duplicates it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from mlconnector.audit import Redactor
from mlconnector.auth import BearerAuth
from mlconnector.errors import AuthError, RemoteError, TokenError
from mlconnector.http import HttpClient, short_body
from mlconnector.procore.config import ProcoreConfig
from mlconnector.token_cache import CachedToken, TokenCache, token_cache

log = logging.getLogger("mlconnector.procore")

SYSTEM = "Procore"
SECRET = "procore.client_secret"
NOT_CONNECTED = "not connected to this company"
APP_MANAGEMENT = "Company Admin > App Management"


def token_cache_for(cfg: ProcoreConfig, instance: str, cache_dir: Path | None = None) -> TokenCache:
    return token_cache(cfg.token_cache, "procore", instance, f"{cfg.login_url}|{cfg.client_id}", cache_dir)


class ProcoreToken(CachedToken):
    """Fetches and caches the client-credentials token. Thread-safe; ``fetches`` counts token requests."""

    def __init__(self, cfg: ProcoreConfig, client_secret: str, cache: TokenCache, *,
                 redactor: Redactor | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(cfg, client_secret, cache, HttpClient(
            f"{SYSTEM} login", cfg.login_url, cfg.http, config_hint="login_url in the [procore] section"),
            redactor=redactor, clock=clock)

    def _owner(self) -> dict[str, str]:
        return {"login_url": self.cfg.login_url, "client_id": self.cfg.client_id}

    def _fetch(self) -> str:
        body = {"grant_type": "client_credentials", "client_id": self.cfg.client_id, "client_secret": self._secret}
        self.fetches += 1
        try:
            # Form encoded (reference procore.md section 2); asking twice for a token does no harm.
            resp = self.http.request("POST", self.cfg.token_path, data=body, idempotent=True,
                                     allow=(400, 401, 403), headers={"Accept": "application/json"})
        except AuthError:
            resp = None
        if resp is None or resp.status_code in (400, 401, 403):
            status = resp.status_code if resp is not None else 401
            text = short_body(resp.text, 200) if resp is not None else ""
            raise TokenError(
                f"Procore refused the client credentials (HTTP {status}: {text}). Check client_id and login_url in "
                f"[procore] (each environment has its own host and credentials: the developer sandbox uses the "
                f"app's sandbox id and secret) and the secret (mlconnector secrets set {SECRET}).")
        try:
            data = resp.json()
            token = data["access_token"]
            expires_in = float(data.get("expires_in", 5400))
            created = float(data.get("created_at") or self.clock())
        except (ValueError, KeyError, TypeError):
            raise TokenError(f"Procore answered {self.cfg.token_path} without an access_token. Check login_url and "
                             f"token_path in [procore].") from None
        if not isinstance(token, str) or not token:
            raise TokenError(f"Procore answered {self.cfg.token_path} with an empty access_token.")
        # The server's created_at, but never later than our own clock says (a skewed server clock must not
        # make an expired token look fresh).
        self._token, self._expires = token, min(created, self.clock()) + expires_in
        self._remember(token)
        self.cache.store({**self._owner(), "access_token": token, "expires_at": self._expires})
        return token


@dataclass
class RateWindow:
    """What the last answer said of the rate-limit window closest to exhaustion."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # Unix seconds
    lowest: int | None = None  # the fewest calls seen remaining during this run


@dataclass
class SyncOutcome:
    """The answer of one or more sync action calls: rows written and rows refused (each with its errors)."""

    entities: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0


RequestHook = Callable[[str, str, int, str], None]  # (method, path, status, X-Request-Id)
LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class ProcoreClient:
    """Procore's REST API for one company under one token and the shared HTTP policy. ``on_response`` is told
    the method, path, status and ``X-Request-Id`` of every answer (the audit trail; support asks for it)."""

    def __init__(self, cfg: ProcoreConfig, token: ProcoreToken, *, on_response: RequestHook | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.token = token
        self.clock = clock
        self._current = threading.local()
        self.http = HttpClient(SYSTEM, cfg.base_url, cfg.http, auth=BearerAuth(self._bearer),
                               config_hint="the [procore] section of the configuration")
        self.http.session.headers.update({"Accept": "application/json",
                                          "Procore-Company-Id": str(cfg.company_id)})
        self.on_response = on_response
        self.rate = RateWindow()

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

    # -- requests ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request; on a 401 the token is dropped and fetched again, and the request sent once more."""
        for attempt in (1, 2):
            self._before()
            resp = self.http.request(method, path, allow=(401, 403), **kwargs)
            self._note(method, path, resp)
            if resp.status_code == 403:
                raise self._forbidden(method, path, resp)
            if resp.status_code != 401:
                return resp
            refused = getattr(self._current, "token", None)
            if refused is not None:
                self.token.invalidate(refused)
            if attempt == 2:
                break
        raise AuthError(
            f"Procore refused a freshly issued token (HTTP 401 on {method} {urlsplit(path).path}). The app's "
            f"service account may have been removed from the company directory: check {APP_MANAGEMENT}, "
            f"client_id in [procore] and the secret {SECRET}.")

    def _forbidden(self, method: str, path: str, resp: requests.Response) -> Exception:
        text = resp.text[:2000]
        if NOT_CONNECTED in text.lower():
            return AuthError(
                f"Procore says the app is not connected to company {self.cfg.company_id} (HTTP 403 on {method} "
                f"{urlsplit(path).path}). A company admin must install (or reinstall) the app under "
                f"{APP_MANAGEMENT} and pick its permitted projects; check company_id in [procore]. Nothing was "
                f"retried.")
        return RemoteError(
            f"Procore refused {method} {urlsplit(path).path} (HTTP 403: {short_body(text, 200)}). The app's "
            f"service account lacks a permission, the project is not one of its permitted projects, or the tool "
            f"is not enabled on the project: a company admin fixes this under {APP_MANAGEMENT} (permitted "
            f"projects, tool permissions) or in the project's Admin tool.",
            system=SYSTEM, status=403, raw=text)

    def _before(self) -> None:
        """Spend no call the window cannot afford: wait for a near reset, or stop until the next run."""
        r = self.rate
        if r.remaining is None or r.reset is None or r.remaining > self.cfg.spare_calls:
            return
        wait = r.reset - self.clock()
        if wait <= 0:
            return
        if wait > self.http.settings.max_retry_after:
            at = datetime.fromtimestamp(r.reset, UTC).strftime("%H:%M:%S UTC")
            raise RemoteError(
                f"Procore's rate limit for this app is nearly spent ({r.remaining} of {r.limit} calls left until "
                f"{at}). The pass stops here and the next run goes on; ask Procore to raise the app's limit if "
                f"this repeats.", system=SYSTEM, status=429, retryable=True)
        self.http.pause(wait)
        r.remaining = None  # the window reset: the next answer tells its new state

    def _note(self, method: str, path: str, resp: requests.Response) -> None:
        h = resp.headers
        try:
            if h.get("X-Rate-Limit-Remaining") is not None:
                self.rate.remaining = int(h["X-Rate-Limit-Remaining"])
                self.rate.limit = int(h.get("X-Rate-Limit-Limit") or 0) or None
                self.rate.reset = float(h.get("X-Rate-Limit-Reset") or 0) or None
                low = self.rate.lowest
                self.rate.lowest = self.rate.remaining if low is None else min(low, self.rate.remaining)
        except ValueError:
            pass
        rid = h.get("X-Request-Id", "")
        if self.on_response is not None:
            self.on_response(method, urlsplit(path).path, resp.status_code, rid)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        resp = self.request("GET", path, params=params)
        return self._json(resp, "GET", path)

    def _json(self, resp: requests.Response, method: str, path: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise RemoteError(f"Procore answered {method} {urlsplit(path).path} with something that is not JSON: "
                              f"{short_body(resp.text, 200)}. Check base_url in [procore].", system=SYSTEM,
                              status=resp.status_code, raw=resp.text[:2000]) from None

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list endpoint: follows ``Link: <...>; rel="next"`` until it is absent (not every
        endpoint pages; a list without the header is one page)."""
        query: dict[str, Any] | None = {**(params or {}), "page": 1, "per_page": self.cfg.page_size}
        url: str = path
        seen: set[str] = set()
        while True:
            resp = self.request("GET", url, params=query)
            body = self._json(resp, "GET", url)
            rows = body.get("data") if isinstance(body, dict) else body
            if not isinstance(rows, list):
                raise RemoteError(f"Procore answered GET {urlsplit(url).path} without a list. Check the path in "
                                  f"[procore].", system=SYSTEM, raw=str(body)[:2000])
            yield [r for r in rows if isinstance(r, dict)]
            m = LINK_NEXT.search(resp.headers.get("Link", ""))
            if not m or m.group(1) in seen:
                return
            nxt = m.group(1)
            seen.add(nxt)
            if urlsplit(nxt).netloc and urlsplit(nxt).netloc != urlsplit(self.cfg.base_url).netloc:
                raise RemoteError(f"Procore's next-page link points at another host ({urlsplit(nxt).netloc}); "
                                  f"refusing to send the token there.", system=SYSTEM)
            url, query = nxt, None

    def all(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [r for page in self.pages(path, params) for r in page]

    def sync(self, path: str, scope: dict[str, Any], items: list[dict[str, Any]]) -> SyncOutcome:
        """Upsert ``items`` by ``origin_id`` (or ``id``) with ``PATCH <path>``, ``sync_batch`` items per call."""
        out = SyncOutcome()
        size = self.cfg.sync_batch
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            # Safe to resend: an upsert by origin_id updates what a first, unanswered call made.
            resp = self.request("PATCH", path, json={**scope, "updates": chunk}, idempotent=True)
            body = self._json(resp, "PATCH", path)
            out.calls += 1
            if not isinstance(body, dict) or not isinstance(body.get("entities", []), list):
                raise RemoteError(f"Procore answered PATCH {urlsplit(path).path} without entities/errors lists; it "
                                  f"is unknown which rows were written. They are written again next pass.",
                                  system=SYSTEM, raw=str(body)[:2000], retryable=True)
            out.entities += [e for e in body.get("entities") or [] if isinstance(e, dict)]
            out.errors += [e for e in body.get("errors") or [] if isinstance(e, dict)]
        return out

    # -- resources ---------------------------------------------------------------------------------
    def companies(self) -> list[dict[str, Any]]:
        return self.all(self.cfg.companies_path)

    def projects(self) -> list[dict[str, Any]]:
        return self.all(self.cfg.projects_path, {"company_id": self.cfg.company_id})


def sync_error_text(err: dict[str, Any]) -> str:
    """One refused sync row's errors as a sentence (``{"name": ["can't be blank"]}`` -> ``name can't be blank``)."""
    errs = err.get("errors")
    if isinstance(errs, dict):
        return "; ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in errs.items())
    if isinstance(errs, list):
        return "; ".join(map(str, errs))
    return str(errs or err.get("message") or "refused")
