"""Typed reads of TOML tables for every configuration section, with errors that name the full key.

Core: system packages parse their own sections with these (no system is named here).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlconnector.errors import ConfigError
from mlconnector.http import HttpSettings

SECRET_LOOKING_KEYS = {"password", "api_token", "token", "client_secret", "secret", "refresh_token",
                       "access_token", "passwd", "pwd"}


class Section:
    """Typed reads from one TOML table, with errors that name the full key."""

    def __init__(self, data: dict[str, Any], prefix: str, known: set[str] | None = None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"[{prefix}] must be a table (a section with keys), not {type(data).__name__}.")
        self.data = data
        self.prefix = prefix
        self.known = known
        for k in data:
            if k.lower() in SECRET_LOOKING_KEYS:
                raise ConfigError(
                    f"{prefix}.{k} looks like a secret, and secrets never go in the configuration file. "
                    f"Delete the line and store it with: mlconnector secrets set {prefix.split('.')[0]}.{k}"
                )
        if known is not None:
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(
                    f"Unknown key {prefix}.{unknown[0]} in the configuration. Known keys in [{prefix}]: "
                    f"{', '.join(sorted(known))}. Check the spelling."
                )

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def str(self, name: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str:
        v = self.data.get(name, default)
        if v is None:
            raise ConfigError(f"{self.key(name)} is missing. Add it to the [{self.prefix}] section.")
        if not isinstance(v, str):
            raise ConfigError(f"{self.key(name)} must be a string in quotes, got {v!r}.")
        if choices and v not in choices:
            raise ConfigError(f"{self.key(name)} = {v!r} is not allowed; use one of: {', '.join(choices)}.")
        return v

    def num(self, name: str, default: float, *, minimum: float = 0, integer: bool = False) -> Any:
        v = self.data.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
            kind = "a whole number" if integer else "a number"
            raise ConfigError(f"{self.key(name)} must be {kind}, got {v!r}.")
        if v < minimum:
            raise ConfigError(f"{self.key(name)} must be at least {minimum}, got {v!r}.")
        return v

    def bool(self, name: str, default: bool) -> bool:
        v = self.data.get(name, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self.key(name)} must be true or false (no quotes), got {v!r}.")
        return v

    def table(self, name: str, known: set[str] | None = None) -> Section:
        return Section(self.data.get(name, {}), self.key(name), known)

    def str_map(self, name: str) -> dict[str, str]:
        t = self.table(name)
        out = {}
        for k, v in t.data.items():
            if not isinstance(v, str):
                raise ConfigError(f"{t.key(k)} must be a string in quotes, got {v!r}.")
            out[str(k)] = v
        return out


def http_settings(s: Section) -> HttpSettings:
    verify: bool | str = s.bool("verify_tls", True)
    ca = s.data.get("ca_bundle")
    if ca is not None:
        if not isinstance(ca, str) or not ca:
            raise ConfigError(f"{s.key('ca_bundle')} must be the path of a PEM file, in quotes.")
        p = Path(ca).expanduser()
        if not p.is_file():
            raise ConfigError(f"{s.key('ca_bundle')} = {ca!r}: no such file. Point it at the PEM file "
                              f"of the CA that signed the server's certificate.")
        verify = str(p) if verify else False
    return HttpSettings(
        connect_timeout=s.num("connect_timeout", 10.0, minimum=0.1),
        read_timeout=s.num("read_timeout", 120.0, minimum=0.1),
        max_attempts=s.num("max_attempts", 5, minimum=1, integer=True),
        backoff_initial=s.num("backoff_initial", 0.5, minimum=0),
        backoff_max=s.num("backoff_max", 30.0, minimum=0),
        max_retry_after=s.num("max_retry_after", 120.0, minimum=0),
        verify=verify,
        request_deadline=s.num("request_deadline", 300.0, minimum=1),
        max_response_bytes=s.num("max_response_mb", 256, minimum=1, integer=True) * 1024 * 1024,
    )


def url(s: Section, name: str) -> str:
    v = s.str(name).rstrip("/")
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{s.key(name)} = {v!r} is not a URL; write it like \"https://host:port\".")
    return v


def parse_since(s: Section, name: str, default: str) -> datetime:
    v = s.str(name, default)
    try:
        d = datetime.fromisoformat(v)
    except ValueError:
        raise ConfigError(f"{s.key(name)} = {v!r} is not a date; write it as \"YYYY-MM-DD\".") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


HTTP_KEYS = {"verify_tls", "ca_bundle", "connect_timeout", "read_timeout", "max_attempts",
             "backoff_initial", "backoff_max", "max_retry_after", "request_deadline", "max_response_mb"}


def str_list(s: Section, name: str) -> list[str]:
    v = s.data.get(name, [])
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"{s.key(name)} must be a list of names in quotes, like [\"BUSINESS_UNIT\", \"PO_ID\"].")
    return list(v)


class RootSection(Section):
    """The file's top level: sections are named without a leading dot."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.prefix = ""
        self.known = None

    def key(self, name: str) -> str:
        return name

