"""Record keys and handles: injective encodings of a record's key parts.

A record's key is a tuple of parts (business unit, PO id, ...). Two encodings are used:

- ``encode_key``: the key map's string form. Parts are joined with ``|``; a ``|`` or ``\\`` inside a
  part is escaped with ``\\``, so ``("US|01", "X")`` and ``("US", "01|X")`` stay apart. Keys whose parts
  hold neither character (all real PeopleSoft and JD Edwards keys seen so far) encode exactly as
  earlier versions wrote them, so existing state files keep matching.
- ``handle``: the tag a target record carries so that it can be found again without our state (a Jira
  label, a PeopleSoft reference field, a Procore ``origin_id``). Readable where that is safe: when
  every part is made only of ``[A-Za-z0-9_.]`` the handle is ``<prefix>-<part>-<part>`` (the form
  earlier versions wrote, so their issues are still found). Any other key gets a sanitised readable
  part plus ``--`` and 12 hex digits of a SHA-256 of the exact parts. A readable handle never holds
  ``--`` (its segments are never empty), so the two forms cannot meet, and the digest keeps keys that
  sanitise alike apart.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

SAFE_PART = re.compile(r"[A-Za-z0-9_.]+")
UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9_.\-]")
HANDLE_MAX = 255  # Jira's label limit; the tightest of the targets' handle fields so far
DIGEST_CHARS = 12


def encode_key(parts: Sequence[str]) -> str:
    """The key map's string for these key parts (injective; see the module docstring)."""
    return "|".join(p.replace("\\", "\\\\").replace("|", "\\|") for p in parts)


def decode_key(key: str) -> tuple[str, ...]:
    """The parts of an ``encode_key`` string (a plain ``a|b`` string decodes to ``("a", "b")``)."""
    parts: list[str] = []
    cur: list[str] = []
    chars = iter(key)
    for ch in chars:
        if ch == "\\":
            cur.append(next(chars, "\\"))
        elif ch == "|":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return tuple(parts)


def display_key(key: str) -> str:
    """A key for people to read: parts joined with ``/`` (not injective: never use it to match)."""
    return "/".join(decode_key(key))


def key_digest(parts: Sequence[str]) -> str:
    blob = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_CHARS]


def handle(prefix: str, parts: Sequence[str], limit: int = HANDLE_MAX) -> str:
    """The injective handle of a record with these key parts under a per-entity prefix (``psft-po``)."""
    readable = f"{prefix}-{'-'.join(parts)}"
    if parts and all(SAFE_PART.fullmatch(p) for p in parts) and len(readable) <= limit:
        return readable
    suffix = "--" + key_digest(parts)
    body = UNSAFE_CHAR.sub("_", readable).replace("--", "-_")
    return body[: limit - len(suffix)].rstrip("-") + suffix


def legacy_handle(prefix: str, parts: Sequence[str]) -> str:
    """The label versions before handles were hashed wrote: sanitised and cut, so NOT injective. Used only to
    find issues those versions made, and only with a second check (see jira/sink.py)."""
    return UNSAFE_CHAR.sub("_", f"{prefix}-{'-'.join(parts)}")[:HANDLE_MAX]


def comment_key(parent: str, child: str) -> str:
    """The queue key of a child record (a comment) of ``parent`` (an encoded key): ``parent#child`` with ``#``
    and ``\\`` escaped in both, so no two (parent, child) pairs share one. Plain keys read as before."""
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("#", "\\#")

    return f"{esc(parent)}#{esc(child)}"
