"""Where a client-credentials access token waits between runs (Procurify, JAGGAER, Procore, ...).

A token is a secret: it is kept in a 0600 file in a 0700 directory of the user cache directory, or in the OS
keyring, never in the state file. A cache costs speed, not correctness: ``load`` answers None for anything it
cannot read, and ``store`` / ``clear`` never raise. The file name carries a digest of what the token belongs to
(base URL, client id, ...), so a changed configuration never reuses another tenant's token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlconnector.audit import GLOBAL
from mlconnector.private import open_private

log = logging.getLogger("mlconnector.token_cache")

KEYRING_SERVICE = "mlconnector"
CACHE_ENV = "MLCONNECTOR_CACHE_DIR"


class TokenCache:
    """No cache (``token_cache = "none"``): every run fetches a token. The base of the caches below:
    ``load`` returns the cached record or None; ``store`` and ``clear`` never raise."""

    def load(self) -> dict[str, Any] | None:
        return None

    def store(self, record: dict[str, Any]) -> None:
        return None

    def clear(self) -> None:
        return None


def default_cache_dir() -> Path:
    """``$MLCONNECTOR_CACHE_DIR``, else the platform's user cache directory for mlconnector."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mlconnector"))


class FileTokenCache(TokenCache):
    """A 0600 JSON file in a 0700 directory (``open_private``), replaced atomically."""

    def __init__(self, path: Path, system: str = "") -> None:
        self.path = path
        self.system = system

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def store(self, record: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            with open_private(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not cache the %s token at %s: %s", self.system or "access", self.path,
                        exc.__class__.__name__)

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


class KeyringTokenCache(TokenCache):
    """The OS keyring, under service ``mlconnector``, user ``<instance>/<system>.token-cache``."""

    def __init__(self, instance: str, system: str) -> None:
        self.system = system
        self.user = f"{instance}/{system}.token-cache"

    def load(self) -> dict[str, Any] | None:
        try:
            import keyring

            raw = keyring.get_password(KEYRING_SERVICE, self.user)
            data = json.loads(raw) if raw else None
        except Exception:  # noqa: BLE001 - any backend failure is a cache miss
            return None
        return data if isinstance(data, dict) else None

    def store(self, record: dict[str, Any]) -> None:
        try:
            import keyring

            keyring.set_password(KEYRING_SERVICE, self.user, json.dumps(record))
        except Exception as exc:  # noqa: BLE001 - a cache costs speed, not correctness
            log.warning("could not cache the %s token in the keyring: %s", self.system, exc.__class__.__name__)

    def clear(self) -> None:
        with contextlib.suppress(Exception):
            import keyring

            keyring.delete_password(KEYRING_SERVICE, self.user)


def token_cache(kind: str, system: str, instance: str, belongs_to: str, cache_dir: Path | None = None) -> TokenCache:
    """The cache a ``token_cache`` setting names: ``"keyring"``, ``"none"``, or a file (anything else) under
    ``<cache dir>/<system>/<instance>-<digest of belongs_to>.token.json``."""
    if kind == "keyring":
        return KeyringTokenCache(instance, system)
    if kind == "none":
        return TokenCache()
    digest = hashlib.sha256(belongs_to.encode()).hexdigest()[:12]
    return FileTokenCache((cache_dir or default_cache_dir()) / system / f"{instance}-{digest}.token.json", system)


class CachedToken(ABC):
    """A client-credentials token kept in memory and in a ``TokenCache`` until ``token_margin_minutes`` before it
    expires (a subclass may measure the margin otherwise: ``_fresh``). A subclass passes its section, secret,
    cache and token endpoint client (``http``) to this constructor and implements ``_owner`` (what a cached
    record must name to be reused: tenant, client) and ``_fetch`` (ask the token endpoint, cache and return the
    token, holding the lock). Thread-safe; ``fetches`` counts token requests. Every token it hands out is added
    to the redactors first."""

    def __init__(self, cfg: Any, client_secret: str, cache: TokenCache, http: Any, *, redactor: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._secret = client_secret
        self.cache = cache
        self.http = http
        self.redactor = redactor
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.fetches = 0

    def close(self) -> None:
        self.http.close()

    @abstractmethod
    def _owner(self) -> dict[str, Any]:
        """The fields a cached record must carry (equal) to be reused."""

    @abstractmethod
    def _fetch(self) -> str:
        """Ask the token endpoint (the lock is held), cache the answer, return the token."""

    def _fresh(self, expires: float) -> bool:
        return self.clock() < expires - 60.0 * self.cfg.token_margin_minutes

    def _remember(self, token: str) -> None:
        for r in (self.redactor, GLOBAL):
            if r is not None:
                r.add(token)

    def get(self) -> str:
        with self._lock:
            if self._token is not None and self._fresh(self._expires):
                return self._token
            cached = self.cache.load()
            if (cached and all(cached.get(k) == v for k, v in self._owner().items())
                    and isinstance(cached.get("access_token"), str)
                    and isinstance(cached.get("expires_at"), int | float) and self._fresh(cached["expires_at"])):
                self._token, self._expires = cached["access_token"], float(cached["expires_at"])
                self._remember(self._token)
                return self._token
            return self._fetch()

    def invalidate(self, token: str) -> None:
        """Drop ``token`` (the server refused it) so the next ``get`` fetches a new one."""
        with self._lock:
            if self._token == token:
                self._token, self._expires = None, 0.0
                self.cache.clear()
