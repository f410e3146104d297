"""The one HTTP policy every client uses: connection reuse, timeouts, retries, error translation.

Retries (tenacity, exponential backoff with jitter) cover connection errors, 5xx and 429, and never
wait less than the server's Retry-After. A non-idempotent request (POST by default) is retried only
when it certainly did not reach the server (connection refused, connect timeout) or was refused
before processing (429); when it may have taken effect (read timeout, reset, 5xx) the client raises
``AmbiguousWriteError`` so the caller looks the result up before writing again.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import tenacity

from mlconnector import __version__
from mlconnector.errors import AmbiguousWriteError, AuthError, RemoteError, UnreachableError

log = logging.getLogger("mlconnector.http")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RAW_LIMIT = 20_000  # keep this much of an error body for the audit trail


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # A Retry-After longer than this (an hourly quota, say) is not slept through by a cron pass:
    # the request fails as retryable and the record is queued for the next run.
    max_retry_after: float = 120.0
    verify: bool | str = True  # True, False, or the path of a CA bundle


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, error: Exception, wait_at_least: float = 0.0) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_at_least = wait_at_least


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now_ts = time.time() if now is None else now
    return max(0.0, when.timestamp() - now_ts)


def _rate_limit_reset_wait(headers: Any) -> float | None:
    reset = headers.get("X-RateLimit-Reset")
    if not reset:
        return None
    try:
        when = datetime.fromisoformat(reset.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - time.time())


def short_body(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HttpClient:
    """A requests.Session bound to one system (``system`` names it in every error message)."""

    def __init__(
        self,
        system: str,
        base_url: str,
        settings: HttpSettings | None = None,
        *,
        auth: requests.auth.AuthBase | tuple[str, str] | None = None,
        is_permanent: Callable[[requests.Response], bool] | None = None,
        config_hint: str = "",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.system = system
        self.base_url = base_url.rstrip("/")
        self.settings = settings or HttpSettings()
        self.session = requests.Session()
        self.session.auth = auth
        self.session.verify = self.settings.verify
        self.session.headers["User-Agent"] = f"ml-connector/{__version__}"
        self.is_permanent = is_permanent
        self.config_hint = config_hint or f"the [{system.lower()}] section of the configuration"
        self._sleep = sleep
        self.requests_made = 0
        self.rate_limited = 0
        # A 429 pauses every thread using this client, not just the one that got it: the limit is shared.
        self._pause_until = 0.0
        self._pause_lock = threading.Lock()

    def pause(self, seconds: float) -> None:
        with self._pause_lock:
            self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    def _wait_for_pause(self) -> None:
        with self._pause_lock:
            wait = self._pause_until - time.monotonic()
        if wait > 0:
            self._sleep(wait)

    def close(self) -> None:
        self.session.close()

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        allow: Iterable[int] = (),
        timeout: float | None = None,
        auth: Any = None,
    ) -> requests.Response:
        """Send a request under the retry policy; return a 2xx response (or one whose status is in
        ``allow``); raise a ConnectorError subclass otherwise."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        allowed = set(allow)
        url = self.url(path)
        s = self.settings
        read_timeout = timeout if timeout is not None else s.read_timeout

        def attempt() -> requests.Response:
            self._wait_for_pause()
            self.requests_made += 1
            try:
                resp = self.session.request(
                    method, url, params=params, json=json, data=data, headers=headers,
                    timeout=(s.connect_timeout, read_timeout), auth=auth,
                )
            except requests.exceptions.SSLError as exc:
                raise self._tls_error(url, exc) from None
            except (requests.exceptions.ConnectTimeout, requests.exceptions.InvalidURL) as exc:
                raise _Retry(self._unreachable(url, exc)) from None
            except requests.exceptions.ConnectionError as exc:
                if _not_sent(exc):
                    raise _Retry(self._unreachable(url, exc)) from None
                err = self._unreachable(url, exc)
                if idempotent:
                    raise _Retry(err) from None
                raise AmbiguousWriteError(
                    f"{self.system}: the connection dropped during {method} {_path_of(url)}, so it is "
                    f"unknown whether the write took effect ({_reason(exc)}).",
                    system=self.system, retryable=True,
                ) from None
            except requests.exceptions.Timeout as exc:  # read timeout: the server may have acted
                err = UnreachableError(
                    f"{self.system} did not answer {method} {_path_of(url)} within {read_timeout:g} s "
                    f"({_reason(exc)}). Raise read_timeout in {self.config_hint} if the system is slow.",
                )
                if idempotent:
                    raise _Retry(err) from None
                raise AmbiguousWriteError(err.message, system=self.system, retryable=True) from None
            return self._check(resp, method, url, idempotent, allowed)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, s.max_attempts)),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retry),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retry as last:
            raise last.error from None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        s = self.settings
        n = state.attempt_number
        backoff = min(s.backoff_max, s.backoff_initial * (2 ** (n - 1))) * random.uniform(0.7, 1.3)
        exc = state.outcome.exception() if state.outcome else None
        floor = exc.wait_at_least if isinstance(exc, _Retry) else 0.0
        if floor > 0:
            # Retry-After is the server's word: wait that long (plus a little jitter so parallel
            # workers do not return in lockstep) rather than stacking exponential backoff on it.
            return floor + random.uniform(0, min(1.0, floor * 0.1))
        return backoff

    def _check(
        self, resp: requests.Response, method: str, url: str, idempotent: bool, allowed: set[int]
    ) -> requests.Response:
        status = resp.status_code
        if 200 <= status < 300 or status in allowed:
            self._note_quota(resp)
            return resp
        body = resp.text[:RAW_LIMIT]
        path = _path_of(url)
        if status == 401:
            raise AuthError(
                f"{self.system} refused the credentials (HTTP 401 on {method} {path}). Check the user "
                f"and secret for {self.system} (mlconnector secrets list), and that the account is not "
                f"locked or its token expired.",
            )
        if status == 429:
            self.rate_limited += 1
            wait = parse_retry_after(resp.headers.get("Retry-After"))
            if wait is None:
                wait = _rate_limit_reset_wait(resp.headers)
            err = RemoteError(
                f"{self.system} is rate limiting requests (HTTP 429 on {method} {path}); the record "
                f"will be retried on the next run.",
                system=self.system, status=status, raw=body, retryable=True,
            )
            if wait is not None and wait > self.settings.max_retry_after:
                raise err
            if wait:
                self.pause(wait)
            # A 429 is refused before processing, so even a POST is safe to send again.
            raise _Retry(err, wait_at_least=wait or 0.0)
        if status >= 500:
            err = RemoteError(
                f"{self.system} failed with HTTP {status} on {method} {path}: {short_body(body)}",
                system=self.system, status=status, raw=body, retryable=True,
            )
            if self.is_permanent and self.is_permanent(resp):
                err.retryable = False
                raise err
            if idempotent:
                wait = parse_retry_after(resp.headers.get("Retry-After")) or 0.0
                if wait > self.settings.max_retry_after:
                    raise err
                raise _Retry(err, wait_at_least=wait)
            raise AmbiguousWriteError(
                err.message + " It is unknown whether the write took effect.",
                system=self.system, status=status, raw=body, retryable=True,
            )
        raise RemoteError(
            f"{self.system} rejected {method} {path} with HTTP {status}: {short_body(body)}",
            system=self.system, status=status, raw=body,
        )

    def _note_quota(self, resp: requests.Response) -> None:
        """Slow down before the server has to say 429: when the window's quota is spent, wait for its reset."""
        remaining = resp.headers.get("X-RateLimit-Remaining")
        if remaining is None:
            return
        try:
            left = int(remaining)
        except ValueError:
            return
        if left <= 0:
            wait = _rate_limit_reset_wait(resp.headers)
            if wait:
                self.pause(min(wait, self.settings.max_retry_after))

    def _unreachable(self, url: str, exc: Exception) -> UnreachableError:
        host = urlsplit(url).netloc
        return UnreachableError(
            f"Cannot reach {self.system} at {host} ({_reason(exc)}). Check the host and port in "
            f"{self.config_hint}, DNS, and that a firewall or proxy lets this machine through.",
        )

    def _tls_error(self, url: str, exc: Exception) -> UnreachableError:
        host = urlsplit(url).netloc
        return UnreachableError(
            f"TLS handshake with {self.system} at {host} failed ({_reason(exc)}). If the server uses a "
            f"certificate from an internal CA, set ca_bundle to that CA's PEM file in {self.config_hint}.",
        )


def _path_of(url: str) -> str:
    return urlsplit(url).path or "/"


def _reason(exc: BaseException) -> str:
    # requests/urllib3 wrap the real cause several levels deep; the innermost text is the useful one.
    seen = exc
    while True:
        nxt = seen.__cause__ or seen.__context__ or (seen.args[0] if seen.args and isinstance(seen.args[0],
                                                                                                BaseException)
                                                    else None)
        if nxt is None or nxt is seen:
            break
        seen = nxt
    text = str(seen) or seen.__class__.__name__
    if "Connection refused" in text or "ECONNREFUSED" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "host name not found"
    if "timed out" in text.lower():
        return "timed out"
    if "reset by peer" in text or "RemoteDisconnected" in text or "closed connection" in text:
        return "connection reset"
    return short_body(text, 160)


def _not_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the request certainly never reached the server (refused, DNS, connect failure)."""
    text = repr(exc)
    markers = ("NewConnectionError", "NameResolutionError", "Connection refused", "ConnectTimeoutError",
               "Failed to establish a new connection")
    return any(m in text for m in markers)
