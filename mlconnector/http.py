"""The one HTTP policy every client uses: connection reuse, timeouts, retries, error translation.

Retries (tenacity, exponential backoff with jitter) cover connection errors, 5xx and 429, and never
wait less than the server's Retry-After. A non-idempotent request (POST by default) is retried only
when it certainly did not reach the server (connection refused, connect timeout) or was refused
before processing (429); when it may have taken effect (read timeout, reset, 5xx) the client raises
``AmbiguousWriteError`` so the caller looks the result up before writing again.

Also enforced here, once for every client:

- credentials (the session's auth, a per-request ``auth`` and credential headers such as
  ``jde-AIS-Auth``) are sent only to the origin (scheme, host, port) of ``base_url``; a URL on another
  origin (a WSDL import, a next-page link) goes without them, and an https client never downgrades to
  plain http;
- the configured trust (``verify``: a CA bundle path, True or False) is passed with every request, so
  ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` cannot replace a configured ``ca_bundle``;
- every attempt has a wall-clock deadline covering connect, headers and body (a server dripping one
  byte at a time defeats a per-read timeout), and a response body larger than ``max_response_bytes``
  is refused;
- a body cut off mid-response (``ChunkedEncodingError``) is a transport failure like a reset.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import tenacity
import urllib3.connection
import urllib3.connectionpool

from mlconnector import __version__
from mlconnector.errors import AmbiguousWriteError, AuthError, ConnectorError, RemoteError, UnreachableError

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
    # Wall-clock limit of one attempt (connect + headers + body); read_timeout alone bounds each socket
    # read, which a server sending a byte at a time never trips.
    request_deadline: float = 300.0
    # No answer this connector reads comes near this; a bigger one is a broken or hostile server.
    max_response_bytes: int = 256 * 1024 * 1024


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
        # The dashed spelling carries Unix seconds (Procore), not an ISO time.
        epoch = headers.get("X-Rate-Limit-Reset")
        try:
            return max(0.0, float(epoch) - time.time()) if epoch else None
        except ValueError:
            return None
    try:
        when = datetime.fromisoformat(reset.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - time.time())


def short_body(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- wall-clock deadline per attempt -----------------------------------------------------------------
class _Deadline:
    """The connections one attempt uses; when the deadline passes their sockets are shut down, which
    wakes the blocked read at once (the only portable way to interrupt a read in another thread)."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    def watch(self, conn: Any) -> None:
        with self._lock:
            if not any(c is conn for c in self._conns):
                self._conns.append(conn)
            expired = self.expired
        if expired:
            _shut(conn)

    def fire(self) -> None:
        with self._lock:
            self.expired = True
            conns = list(self._conns)
        for conn in conns:
            _shut(conn)


def _shut(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread firing the deadlines of the attempts in flight (a timer thread per request
    would cost more than a loopback request). It holds only attempts in flight, so it stays small."""

    def __init__(self) -> None:
        self._active: set[_Deadline] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, deadline: _Deadline) -> None:
        with self._cond:
            if self._thread is None or self._pid != os.getpid():  # a forked child has no such thread
                self._active, self._pid = set(), os.getpid()
                self._thread = threading.Thread(target=self._run, name="mlconnector-deadline", daemon=True)
                self._thread.start()
            self._active.add(deadline)
            self._cond.notify()

    def remove(self, deadline: _Deadline) -> None:
        with self._cond:
            self._active.discard(deadline)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [d for d in self._active if d.at <= now]
                self._active.difference_update(due)
                if not due:
                    nearest = min((d.at for d in self._active), default=None)
                    self._cond.wait(None if nearest is None else nearest - now)
                    continue
            for d in due:
                d.fire()


_WATCHDOG = _Watchdog()
_current = threading.local()  # the _Deadline of the attempt running in this thread, if any


class _WatchedMixin:
    """Registers the connection with the running attempt's deadline when it connects or sends."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        d = getattr(_current, "deadline", None)
        if d is not None:
            d.watch(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        d = getattr(_current, "deadline", None)
        if d is not None:
            d.watch(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_WatchedMixin, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_WatchedMixin, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with connections the attempt deadline can interrupt (direct and via proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


class _DeadlineExceeded(Exception):
    """Internal: the body ended because the deadline shut the socket."""


class _TooLarge(Exception):
    """Internal: the body is over max_response_bytes."""


# -- credentials stay with their origin -------------------------------------------------------------
CREDENTIAL_HEADERS = frozenset({"authorization", "jde-ais-auth", "cookie"})


class _NoCredentials(requests.auth.AuthBase):
    """Stands in for the session's auth on a request to another origin (a None would let it through)."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.pop("Authorization", None)
        return r


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port made explicit, so https://h and https://h:443 match."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def ca_source(verify: bool | str) -> str:
    """Where TLS trust comes from for this setting, in words (for ping and error messages)."""
    if verify is False:
        return "none: TLS verification is off (verify_tls = false)"
    if isinstance(verify, str):
        return f"ca_bundle {verify}"
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if os.environ.get(var):
            return f"{var}={os.environ[var]} (environment; set ca_bundle to pin a CA)"
    return "the certifi CA bundle shipped with requests (set ca_bundle for an internal CA)"


class HttpClient:
    """A requests.Session bound to one system (``system`` names it in every error message).

    Contract: ``request`` returns a fully read 2xx response (or one whose status is in ``allow``) or
    raises a ``ConnectorError`` subclass; credentials go only to ``base_url``'s origin; each attempt
    ends by ``settings.request_deadline`` and reads at most ``settings.max_response_bytes``.
    """

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
        adapter = _DeadlineAdapter()
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.auth = auth
        self._origin = origin(self.base_url)
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
        before_send: Callable[[], None] | None = None,
    ) -> requests.Response:
        """Send a request under the retry policy; return a 2xx response (or one whose status is in
        ``allow``); raise a ConnectorError subclass otherwise. ``before_send`` runs right before each attempt
        goes out (after any wait): a writer renews its pending marks there, since a retried write takes
        effect when that attempt is sent, not when the first one was."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        allowed = set(allow)
        url = self.url(path)
        s = self.settings
        read_timeout = timeout if timeout is not None else s.read_timeout
        target = origin(url)
        if target != self._origin:
            if self._origin[0] == "https" and target[0] != "https":
                raise RemoteError(
                    f"{self.system}: refused to follow {url} over plain {target[0]}: the configured address is "
                    f"https and nothing is sent without TLS. If the server names this URL (a WSDL import, a "
                    f"next-page link), have its administrator publish https URLs.", system=self.system)
            # Another origin (a WSDL import naming another host, a next-page link): no credentials go there.
            log.debug("%s: %s is not on %s, sending it without credentials", self.system, target[1],
                      self._origin[1])
            auth = _NoCredentials()
            headers = {k: v for k, v in (headers or {}).items() if k.lower() not in CREDENTIAL_HEADERS}

        def attempt() -> requests.Response:
            self._wait_for_pause()
            if before_send is not None:
                before_send()
            self.requests_made += 1
            deadline = _Deadline(s.request_deadline)
            _current.deadline = deadline
            _WATCHDOG.add(deadline)
            try:
                resp = self.session.request(
                    method, url, params=params, json=json, data=data, headers=headers,
                    timeout=(s.connect_timeout, read_timeout), auth=auth, verify=s.verify, stream=True,
                )
                self._read_body(resp, deadline)
            except _TooLarge:
                text = (f"{self.system} sent more than {s.max_response_bytes // (1024 * 1024)} MB in answer to "
                        f"{method} {_path_of(url)}; the answer was dropped. Check that {self.config_hint} points at "
                        f"the right server.")
                if not idempotent:
                    # The server acted on the write; only its answer was refused: look it up, never resend.
                    raise AmbiguousWriteError(text + " It is unknown whether the write took effect.",
                                              system=self.system) from None
                raise RemoteError(text, system=self.system, retryable=True) from None
            except (requests.exceptions.RequestException, _DeadlineExceeded) as exc:
                raise self._transport_error(exc, method, url, idempotent, read_timeout, deadline) from None
            finally:
                _WATCHDOG.remove(deadline)
                _current.deadline = None
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

    def _transport_error(self, exc: Exception, method: str, url: str, idempotent: bool, read_timeout: float,
                         deadline: _Deadline) -> Exception:
        """The error to raise for a failed attempt: ``_Retry`` when another try is safe, an
        ``AmbiguousWriteError`` when a write may have taken effect, else the final error."""
        path = _path_of(url)
        if deadline.expired:
            err: ConnectorError = UnreachableError(
                f"{self.system} did not finish answering {method} {path} within {self.settings.request_deadline:g} s "
                f"(request_deadline); the server is stalling or too slow. Raise request_deadline in "
                f"{self.config_hint} if the system is just slow.")
        elif isinstance(exc, requests.exceptions.SSLError):
            return self._tls_error(url, exc)
        elif isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.InvalidURL) or (
                isinstance(exc, requests.exceptions.ConnectionError) and _not_sent(exc)):
            return _Retry(self._unreachable(url, exc))  # never reached the server: safe for any method
        elif isinstance(exc, requests.exceptions.Timeout) or "ReadTimeoutError" in repr(exc):
            err = UnreachableError(
                f"{self.system} did not answer {method} {path} within {read_timeout:g} s ({_reason(exc)}). Raise "
                f"read_timeout in {self.config_hint} if the system is slow.")
        elif isinstance(exc, requests.exceptions.ConnectionError):
            err = self._unreachable(url, exc)
            if not idempotent:
                return AmbiguousWriteError(
                    f"{self.system}: the connection dropped during {method} {path}, so it is unknown whether the "
                    f"write took effect ({_reason(exc)}).", system=self.system, retryable=True)
        else:
            # ChunkedEncodingError, ContentDecodingError...: the answer was cut off or mangled in transit.
            err = UnreachableError(
                f"{self.system}'s answer to {method} {path} was cut off or corrupted in transit ({_reason(exc)}). "
                f"Check the network path and any proxy in front of {self.system}.")
        if idempotent:
            return _Retry(err)
        return AmbiguousWriteError(err.message + " It is unknown whether the write took effect.",
                                   system=self.system, retryable=True)

    def _read_body(self, resp: requests.Response, deadline: _Deadline) -> None:
        """Read the body now, under the deadline and the size cap (the response was streamed)."""
        cap = self.settings.max_response_bytes
        try:
            declared = int(resp.headers.get("Content-Length") or 0)
        except ValueError:
            declared = 0
        if declared > cap:
            resp.close()
            raise _TooLarge()
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in resp.iter_content(65536):
                total += len(chunk)
                if total > cap:
                    raise _TooLarge()
                chunks.append(chunk)
        except BaseException:
            resp.close()  # never hand a half-read connection back to the pool
            raise
        if deadline.expired:  # the last read may have ended cleanly on the shut-down socket
            resp.close()
            raise _DeadlineExceeded()
        resp._content = b"".join(chunks)
        resp._content_consumed = True

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
