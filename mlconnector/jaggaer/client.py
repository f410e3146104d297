"""JAGGAER REST client: OAuth2 client credentials in both documented token formats, renewal before expiry
and once on a 401, FIQL ``flt`` filters with a modified-time watermark, ``start`` paging, and ``returnCode``.

Contract:
- The token endpoint is posted ``client_id``, ``client_secret``, ``grant_type=client_credentials`` (form).
  Its answer is either Keycloak JSON (``access_token``, ``expires_in`` in SECONDS) or the legacy gateway's
  (``token``, ``expire_in`` in MILLISECONDS); ``token_format`` picks one or accepts either ("auto").
- A token is renewed ``token_margin_seconds`` before it expires, checked before every request, so a long
  pass never sends one about to lapse. A 401 (whose body may not be JSON, nor its Content-Type valid) drops
  the token and sends the request once more with a new one; a second 401 is an AuthError naming the fix.
- **HTTP 200 with ``returnCode`` != 0 is a failure**: ``JaggaerError`` carries ``returnMessage``. Callers
  never count such an answer as synced.
- Lists page with ``start`` (1-based) until ``totRecords`` rows were read or a page is empty.
- Every request goes through the shared HTTP policy (429 with Retry-After, 5xx with back-off).
- Tokens are secrets: cached in a 0600 file or the keyring (never in state or logs), redacted everywhere.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from mlconnector.audit import Redactor
from mlconnector.auth import BearerAuth
from mlconnector.errors import AuthError, RemoteError, TokenError
from mlconnector.http import HttpClient, short_body
from mlconnector.jaggaer.config import Endpoint, JaggaerConfig
from mlconnector.token_cache import CachedToken, TokenCache, token_cache

log = logging.getLogger("mlconnector.jaggaer")

SYSTEM = "JAGGAER"
SECRET = "jaggaer.client_secret"


class JaggaerError(RemoteError):
    """JAGGAER answered (often HTTP 200) with ``returnCode`` != 0: the request did NOT succeed.
    ``return_code`` and ``return_message`` are JAGGAER's own words."""

    def __init__(self, message: str, *, return_code: Any, return_message: str, raw: str = "",
                 status: int | None = None) -> None:
        super().__init__(message, system=SYSTEM, status=status, raw=raw)
        self.return_code = return_code
        self.return_message = return_message


# -- token cache ----------------------------------------------------------------------------------
def token_cache_for(cfg: JaggaerConfig, instance: str, cache_dir: Path | None = None) -> TokenCache:
    return token_cache(cfg.token_cache, "jaggaer", instance, f"{cfg.base_url}|{cfg.client_id}|{cfg.token_path}",
                       cache_dir)


def parse_token_answer(data: Any, token_format: str, legacy_minutes: float = 10.0) -> tuple[str, float, str]:
    """(token, lifetime in seconds, format seen) from a token endpoint's JSON; ValueError when neither shape.
    Keycloak: ``access_token`` + ``expires_in`` seconds. Legacy gateway: ``token`` + ``expire_in`` ms."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if token_format in ("auto", "keycloak") and isinstance(data.get("access_token"), str) and data["access_token"]:
        life = data.get("expires_in")
        return data["access_token"], float(life) if isinstance(life, int | float) else 300.0, "keycloak"
    if token_format in ("auto", "legacy") and isinstance(data.get("token"), str) and data["token"]:
        life = data.get("expire_in")
        seconds = float(life) / 1000.0 if isinstance(life, int | float) else 60.0 * legacy_minutes
        return data["token"], seconds, "legacy"
    raise ValueError("no token field")


class JaggaerToken(CachedToken):
    """Fetches, caches and renews the client-credentials token (either token format). Thread-safe; ``fetches``
    counts token requests; ``format_seen`` names the format of the last answer."""

    def __init__(self, cfg: JaggaerConfig, client_secret: str, cache: TokenCache | None = None, *,
                 redactor: Redactor | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(cfg, client_secret, cache or TokenCache(), HttpClient(
            f"{SYSTEM} token endpoint", cfg.base_url, cfg.http,
            config_hint="base_url and token_path in the [jaggaer] section"), redactor=redactor, clock=clock)
        self.format_seen = ""

    def _owner(self) -> dict[str, str]:
        return {"base_url": self.cfg.base_url, "client_id": self.cfg.client_id, "token_path": self.cfg.token_path}

    def _fresh(self, expires: float) -> bool:  # JAGGAER's margin is set in seconds
        return self.clock() < expires - self.cfg.token_margin_seconds

    def _fetch(self) -> str:
        form = {"client_id": self.cfg.client_id, "client_secret": self._secret, "grant_type": "client_credentials"}
        self.fetches += 1
        try:
            resp = self.http.request("POST", self.cfg.token_path, data=form, idempotent=True,
                                     allow=(400, 401, 403, 404), headers={"Accept": "application/json"})
        except AuthError:
            resp = None
        if resp is None or resp.status_code in (400, 401, 403, 404):
            status = resp.status_code if resp is not None else 401
            text = short_body(resp.text, 200) if resp is not None else ""
            where = ("token_path (Keycloak: /auth/realms/J1p-integrations/protocol/openid-connect/token; legacy "
                     "gateway: /esop/jint/api/public/v1/tokens)" if status == 404 else "client_id")
            raise TokenError(
                f"JAGGAER refused the token request (HTTP {status} on {self.cfg.token_path}: {text}). Check {where} "
                f"in [jaggaer] and the secret (mlconnector secrets set {SECRET}); JAGGAER issues the client id and "
                f"secret per environment (prep and production differ).")
        try:
            token, life, seen = parse_token_answer(resp.json(), self.cfg.token_format, self.cfg.legacy_token_minutes)
        except ValueError:
            raise TokenError(
                f"JAGGAER answered {self.cfg.token_path} without a token in the {self.cfg.token_format} format "
                f"(expected access_token/expires_in or token/expire_in). Check token_path and token_format in "
                f"[jaggaer].") from None
        self.format_seen = seen
        self._token, self._expires = token, self.clock() + life
        self._remember(token)
        self.cache.store({**self._owner(), "access_token": token, "expires_at": self._expires})
        return token


# -- client ---------------------------------------------------------------------------------------
def pick(record: Any, path: str) -> Any:
    """The value at a dotted path (``header.supplier.id``); None when any step is missing."""
    cur = record
    for step in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(step)
    return cur


_DECIMAL = re.compile(r'"\\u0000dec:([-+0-9.eE]+)"')


def dumps(body: Any) -> str:
    """JSON text of a request body; Decimals are written as JSON numbers with their exact digits (never
    through a binary float)."""
    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            return "\u0000dec:" + format(o, "f")
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    return _DECIMAL.sub(r"\1", json.dumps(body, default=default, ensure_ascii=False))


def fiql_value(value: str) -> str:
    """A value as FIQL needs it: quoted when it holds a reserved character."""
    if any(c in value for c in ";,()=<>!'\" ") or not value:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return value


def _count(body: dict[str, Any], name: str, path: str) -> int | None:
    """A paging count of a list answer as an int (JSON number or numeric string); None when absent. Anything
    else is a RemoteError: the rows that follow could not be counted, so the read must not look complete."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise RemoteError(f"JAGGAER answered GET {path} with {name} = {str(value)[:40]!r}, not a whole number, so the "
                      f"list cannot be paged safely. Nothing was synced from this read (no watermark moved); it "
                      f"is read again on the next pass. If it persists, report it to JAGGAER support.",
                      system=SYSTEM, raw=json.dumps(body, default=str)[:2000])


class JaggaerClient:
    """Reads and writes JAGGAER's REST API under one token and the shared HTTP policy."""

    def __init__(self, cfg: JaggaerConfig, token: JaggaerToken) -> None:
        self.cfg = cfg
        self.token = token
        self._current = threading.local()
        self.http = HttpClient(SYSTEM, cfg.base_url, cfg.http, auth=BearerAuth(self._bearer),
                               config_hint="the [jaggaer] section of the configuration")
        self.http.session.headers.update({"Accept": "application/json"})
        self.renewals_on_401 = 0

    @property
    def requests_made(self) -> int:
        return self.http.requests_made + self.token.fetches

    def _bearer(self) -> str:
        tok = self.token.get()  # renewed here when it is about to expire, before every request
        self._current.token = tok
        return tok

    def close(self) -> None:
        self.http.close()
        self.token.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request; on a 401 (whatever its body) the token is dropped and the request sent once more."""
        for attempt in (1, 2):
            resp = self.http.request(method, path, allow=(401,), **kwargs)
            if resp.status_code != 401:
                return resp
            refused = getattr(self._current, "token", None)
            if refused is not None:
                self.token.invalidate(refused)
            self.renewals_on_401 += 1
            if attempt == 2:
                break
        raise AuthError(
            f"JAGGAER refused a freshly issued token (HTTP 401 on {method} {urlsplit(path).path}). The integration "
            f"client may lack the rights for this module or environment: ask JAGGAER to grant it, and check "
            f"client_id and token_path in [jaggaer] and the secret {SECRET}.")

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
             idempotent: bool | None = None) -> dict[str, Any]:
        """A request whose JSON answer is checked: ``returnCode`` != 0 raises JaggaerError (even on HTTP 200)."""
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["data"] = dumps(body).encode("utf-8")
            kwargs["headers"] = {"Content-Type": "application/json"}
        if idempotent is not None:
            kwargs["idempotent"] = idempotent
        resp = self.request(method, path, **kwargs)
        where = f"{method} {urlsplit(path).path}"
        try:
            data = resp.json()
        except ValueError:
            raise RemoteError(f"JAGGAER answered {where} with something that is not JSON: "
                              f"{short_body(resp.text, 200)}. Check the path in [jaggaer].", system=SYSTEM,
                              status=resp.status_code, raw=resp.text) from None
        if not isinstance(data, dict):
            raise RemoteError(f"JAGGAER answered {where} with JSON that is not an object. Check the path in "
                              f"[jaggaer].", system=SYSTEM, raw=resp.text[:2000])
        code = data.get("returnCode", 0)
        if code not in (0, "0", None):
            msg = str(data.get("returnMessage") or "(no returnMessage)")
            raise JaggaerError(f"JAGGAER refused {where} (HTTP {resp.status_code} with returnCode {code}: {msg}). "
                               f"Nothing was synced for it; it is retried on the next pass.",
                               return_code=code, return_message=msg, raw=resp.text[:2000], status=resp.status_code)
        return data

    def pages(self, ep: Endpoint, flt: str = "", params: dict[str, Any] | None = None,
              ) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list: ``start`` = 1, then ``start += returnedRecords`` until ``totRecords`` rows came
        or a page is empty. A count that is not a whole number (numeric strings are read as numbers) fails the
        read with RemoteError: stopping early would drop rows while a watermark advances, or make a lookup miss
        a record and create it twice."""
        start, got = 1, 0
        while True:
            query = {**(params or {}), "start": start}
            if flt:
                query["flt"] = flt
            body = self.call("GET", ep.path, params=query)
            total = _count(body, "totRecords", ep.path)
            rows = pick(body, ep.list_key)
            if rows is None and not total:
                rows = []
            if isinstance(rows, dict):
                rows = [rows]  # a single record is sometimes sent as an object
            if not isinstance(rows, list):
                raise RemoteError(f"JAGGAER answered GET {ep.path} without the list {ep.list_key!r} (keys: "
                                  f"{', '.join(sorted(body)) or 'none'}). Set list_key for this path in [jaggaer].",
                                  system=SYSTEM, raw=json.dumps(body)[:2000])
            rows = [r for r in rows if isinstance(r, dict)]
            returned = _count(body, "returnedRecords", ep.path)
            yield rows
            got += len(rows)
            if not rows:
                break
            if returned is None or returned <= 0:
                returned = len(rows)  # no usable count: the rows themselves say how far this page went
            if total is not None and got >= total:
                break
            start += returned

    def changed(self, ep: Endpoint, since: datetime, extra: str = "") -> Iterator[list[dict[str, Any]]]:
        """Records of ``ep`` modified at or after ``since`` (FIQL ``<field>>=<time>`` with the endpoint's format)."""
        stamp = since.astimezone(UTC).strftime(ep.time_format)
        clauses = [c for c in (ep.filter, extra, f"{ep.modified_field}>={fiql_value(stamp)}") if c]
        yield from self.pages(ep, ";".join(clauses))

    def find(self, ep: Endpoint, field_name: str, value: str) -> list[dict[str, Any]]:
        """Records of ``ep`` whose ``field_name`` equals ``value`` exactly (a current read, every page)."""
        clauses = [c for c in (ep.filter, f"{field_name}=={fiql_value(value)}") if c]
        return [r for page in self.pages(ep, ";".join(clauses)) for r in page]


def open_client(cfg: JaggaerConfig, instance: str, secret: str, *, redactor: Redactor | None = None,
                clock: Callable[[], float] = time.time) -> JaggaerClient:
    return JaggaerClient(cfg, JaggaerToken(cfg, secret, token_cache_for(cfg, instance), redactor=redactor,
                                           clock=clock))
