"""The key map (natural key -> Jira issue, per record kind), kept on disk rather than in memory.

Most cron passes look up a handful of keys, and a year of records is 100,000 of them: parsing every
entry into a dict would cost about 1 KB of memory per entry on every run. So the key map section of
the state file is written one entry per line, sorted by encoded key within each kind, and held as
one unparsed buffer (see read_buffer) that lookups bisect; only the entries a pass touches are parsed. The file is still
plain JSON with the same shape (``"keys": {kind: {key: entry}}``).

A SHA-256 of that section, written after it, proves the section is exactly as this module wrote it
(sorted, one entry per line). Anything else (a file from an older version, a hand-edited or
re-indented file) fails the check and is read in full instead, then written in this layout by the
next save.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mlconnector.errors import StateError

KEYS_OPEN = b',"keys":{\n'  # the header line of a state file ends with this
TRAILER = b'\n},"keys_sha256":"'  # after the key map section: its digest, then the end of the object
_ISSUE = re.compile(rb'"issue":"([^"\\]*)"')

Entry = dict[str, Any]
Buffer = bytes | mmap.mmap  # mmap has find/rfind/slicing but not startswith/index/count: see _at, _eol


# ensure_ascii: no raw newline in a line, and any text (lone surrogates included) encodes.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
_PLAIN = re.compile(r'[ !#-\[\]-~]*')  # printable ASCII but " and \: encodes as itself


def enc_key(key: str) -> bytes:
    """The bytes a key's line starts with. JSON string encoding is prefix-free, so ordering lines by
    their bytes orders them by key, and a line belongs to ``key`` exactly when it starts with these."""
    if _PLAIN.fullmatch(key):
        return b'"' + key.encode("ascii") + b'":'
    return _encode(key).encode("ascii") + b":"


def enc_entry(entry: Entry) -> bytes:
    return _encode(entry).encode("ascii")


def seek(buf: Buffer, lo: int, hi: int, target: bytes) -> int:
    """Start of the first line in buf[lo:hi] (lo and hi at line starts) not below ``target``, or hi."""
    while lo < hi:
        mid = (lo + hi) // 2
        s = buf.rfind(b"\n", lo, mid)
        s = lo if s < 0 else s + 1
        e = buf.find(b"\n", s, hi)
        e = hi if e < 0 else e + 1
        if buf[s:e] < target:
            lo = e
        else:
            hi = s
    return lo


def read_buffer(path: Path) -> Buffer:
    """The file's bytes in an anonymous memory map of their own.

    Not ``read_bytes``: glibc serves a large allocation freed once from its heap afterwards, so each
    save's fresh buffer (a little bigger each time) would strand the last one there and RSS would creep
    up by the key map's size per few batches. A map of our own is returned whole when dropped."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b""
        buf = mmap.mmap(-1, size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        view.release()
        if got < size:
            raise OSError(f"{path} shrank while being read")
        return buf


def _at(buf: Buffer, pos: int, text: bytes) -> bool:
    return buf[pos:pos + len(text)] == text


def _eol(buf: Buffer, pos: int, end: int) -> int:
    """Index of the newline ending the line at ``pos`` (a line in this section always has one)."""
    nl = buf.find(b"\n", pos, end)
    if nl < 0:
        raise ValueError("unterminated line")
    return nl


def _parse_line(line: bytes) -> tuple[str, Entry]:
    (key, entry), = json.loads(b"{" + line.rstrip(b",") + b"}").items()
    return key, entry


def parse_sections(buf: Buffer, start: int, end: int) -> dict[str, tuple[int, int]]:
    """kind -> (first line, end of last line) within buf[start:end], the key map section."""
    ranges: dict[str, tuple[int, int]] = {}
    pos = start
    while pos < end:
        if _at(buf, pos, b",\n"):
            pos += 2
        nl = _eol(buf, pos, end)
        head = buf[pos:nl]
        if not head.endswith(b":{"):
            raise ValueError("not a kind header")
        kind = json.loads(head[:-2])
        close = buf.find(b"\n}", nl, end)
        if not isinstance(kind, str) or close < 0:
            raise ValueError("bad kind section")
        ranges[kind] = (nl + 1, close + 1)
        pos = close + 2
    return ranges


def _write_lines(out: Callable[[bytes | memoryview], None], pieces: list[bytes | memoryview]) -> None:
    """Write pieces with ",\n" between them: new lines joined into larger writes, runs of saved lines
    (views into the buffer) as they are, never copied."""
    sep = False
    batch: list[bytes] = []

    def flush() -> None:
        nonlocal sep
        if batch:
            out((b",\n" if sep else b"") + b",\n".join(batch))
            sep = True
            batch.clear()

    for piece in pieces:
        if isinstance(piece, memoryview):
            flush()
            if sep:
                out(b",\n")
            out(piece)
            sep = True
        else:
            batch.append(piece)
            if len(batch) >= 2000:
                flush()
    flush()


class KeyMap:
    """The entries of every kind: the sorted lines last saved, plus the entries touched since.

    An entry handed out by ``get`` stays the live object for its key until ``release``, so callers
    may change it in place and the next save writes the change.
    """

    def __init__(self) -> None:
        self._buf: Buffer | None = b""
        self._ranges: dict[str, tuple[int, int]] = {}
        self._pending: dict[str, set[str]] = {}  # keys whose saved entry is a pending mark
        self._touched: dict[str, dict[str, Entry | None]] = {}  # None: dropped

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def from_section(cls, buf: Buffer, start: int, pending: dict[str, list[str]]) -> KeyMap | None:
        """A key map over the section written by ``write`` at buf[start:] (the file's end), or None when
        the section is not exactly that (then the caller parses the whole file).

        ``buf`` is the whole file, read in one piece: slicing the section out would copy it."""
        t = buf.rfind(TRAILER)
        if t < start:
            return None
        digest = buf[t + len(TRAILER):].rstrip(b"\r\n\t ")
        if digest != hashlib.sha256(memoryview(buf)[start:t]).hexdigest().encode() + b'"}':
            return None
        km = cls()
        try:
            km._ranges = parse_sections(buf, start, t)
        except ValueError:
            return None
        km._buf = buf
        # The header is outside the digest: keep only what can be a key (pending() checks each one).
        km._pending = {k: {x for x in v if isinstance(x, str)} for k, v in pending.items() if isinstance(v, list)}
        return km

    @classmethod
    def from_entries(cls, keys: dict[str, dict[str, Entry]]) -> KeyMap:
        """A key map over entries parsed from a whole file (another layout); laid out as a save would."""
        km = cls()
        km._touched = {kind: dict(entries) for kind, entries in keys.items()}
        out = io.BytesIO()
        pending = km.pending_map()
        km.write(out)
        built = cls.from_section(out.getvalue(), 0, pending)
        assert built is not None
        return built

    # -- reading ----------------------------------------------------------------------------------
    def _base(self, kind: str, key: str) -> bytes | None:
        """The saved value bytes of this key, or None."""
        buf = self._live()
        r = self._ranges.get(kind)
        if r is None or r[0] == r[1]:
            return None
        t = enc_key(key)
        p = seek(buf, r[0], r[1], t)
        if p < r[1] and _at(buf, p, t):
            return buf[p + len(t):_eol(buf, p, r[1])].rstrip(b",")
        return None

    def _live(self) -> Buffer:
        if self._buf is None:
            raise StateError("The state file could not be read back after it was saved, so this run stopped "
                             "before it could look up a key it had lost. The file on disk is complete; run "
                             "the pass again.")
        return self._buf

    def get(self, kind: str, key: str) -> Entry | None:
        touched = self._touched.get(kind)
        if touched is not None and key in touched:
            return touched[key]
        raw = self._base(kind, key)
        if raw is None:
            return None
        entry: Entry = json.loads(raw)
        self._touched.setdefault(kind, {})[key] = entry
        return entry

    def set(self, kind: str, key: str, entry: Entry) -> None:
        self._touched.setdefault(kind, {})[key] = entry

    def drop(self, kind: str, key: str) -> None:
        self._touched.setdefault(kind, {})[key] = None

    def pending(self, kind: str) -> list[str]:
        touched = self._touched.get(kind, {})
        out = [k for k, e in touched.items() if e is not None and e.get("pending")]
        # The list in the header is a hint (the digest does not cover it): each key is checked.
        return out + sorted(k for k in self._pending.get(kind, ()) if k not in touched
                            and (raw := self._base(kind, k)) is not None and json.loads(raw).get("pending"))

    def pending_map(self) -> dict[str, list[str]]:
        return {kind: keys for kind in sorted(set(self._pending) | set(self._touched)) if (keys := self.pending(kind))}

    def count(self, kind: str) -> int:
        lo, hi = self._ranges.get(kind, (0, 0))
        buf = self._live()
        n = 0
        while lo < hi:
            lo = _eol(buf, lo, hi) + 1
            n += 1
        for key, entry in self._touched.get(kind, {}).items():
            n += (entry is not None) - (self._base(kind, key) is not None)
        return n

    def kinds(self) -> list[str]:
        return [k for k in sorted(set(self._ranges) | set(self._touched)) if self.count(k)]

    def items(self, kind: str) -> Iterator[tuple[str, Entry]]:
        """Every entry of a kind. Entries not touched before are parsed copies: read, do not change them."""
        touched = self._touched.get(kind, {})
        for key, entry in list(touched.items()):
            if entry is not None:
                yield key, entry
        buf = self._live()
        lo, hi = self._ranges.get(kind, (0, 0))
        while lo < hi:
            nl = _eol(buf, lo, hi)
            key, entry = _parse_line(buf[lo:nl])
            if key not in touched:
                yield key, entry
            lo = nl + 1

    def find_issues(self, kinds: list[str], issues: set[str]) -> dict[str, tuple[str, str, Entry]]:
        """Jira issue key -> (kind, natural key, live entry) for those of ``issues`` the map knows.

        One scan of the saved lines for ``"issue":"<key>"``; the lines that match are parsed and checked.
        """
        found: dict[str, tuple[str, str, Entry]] = {}
        for kind in kinds:
            for key, entry in self._touched.get(kind, {}).items():
                if entry is not None and entry.get("issue") in issues:
                    found.setdefault(entry["issue"], (kind, key, entry))
        if not issues - set(found):
            return found
        buf = self._live()
        for kind in kinds:
            lo, hi = self._ranges.get(kind, (0, 0))
            touched = self._touched.get(kind, {})
            for m in _ISSUE.finditer(buf, lo, hi):
                issue = m.group(1).decode("ascii", "replace")
                if issue not in issues or issue in found:
                    continue
                start = max(lo, buf.rfind(b"\n", lo, m.start()) + 1)
                key, entry = _parse_line(buf[start:_eol(buf, m.end() - 1, hi)])
                if key in touched or entry.get("issue") != issue:
                    continue
                self._touched.setdefault(kind, {})[key] = entry
                found[issue] = (kind, key, entry)
        return found

    def find_by(self, kind: str, name: str, values: set[str]) -> list[str]:
        """The keys of ``kind`` whose entry's top-level string field ``name`` is one of ``values``.

        One scan of the saved lines for ``"<name>":"..."`` (only matching lines are parsed), plus the
        entries touched since the last save; no entry is handed out, so memory stays flat however many
        match. Lines whose key was touched are judged by their touched entry."""
        if not values:
            return []
        touched = self._touched.get(kind, {})
        out = [k for k, e in touched.items() if e is not None and e.get(name) in values]
        buf = self._live()
        lo, hi = self._ranges.get(kind, (0, 0))
        pattern = re.compile(re.escape(enc_key(name)) + rb'("(?:[^"\\]|\\.)*")')
        for m in pattern.finditer(buf, lo, hi):
            if json.loads(m.group(1)) not in values:
                continue
            start = max(lo, buf.rfind(b"\n", lo, m.start()) + 1)
            key, entry = _parse_line(buf[start:_eol(buf, m.end() - 1, hi)])
            if key not in touched and entry.get(name) in values:
                out.append(key)
        return out

    # -- writing ----------------------------------------------------------------------------------
    def changed(self) -> bool:
        """Whether any touched entry differs from its saved line (in-place changes included)."""
        for kind, touched in self._touched.items():
            for key, entry in touched.items():
                saved = self._base(kind, key)
                if (None if entry is None else enc_entry(entry)) != saved:
                    return True
        return False

    def release(self) -> None:
        """Forget the touched entries (their saved lines are current): keeps memory flat across batches."""
        self._touched = {}

    def _pieces(self, kind: str) -> list[bytes | memoryview]:
        """The lines of one kind after merging the touched entries, as runs of saved lines and new lines."""
        buf = self._live()
        view = memoryview(buf)
        lo, hi = self._ranges.get(kind, (0, 0))
        changes = sorted(((enc_key(k), e) for k, e in self._touched.get(kind, {}).items()), key=lambda c: c[0])
        pieces: list[bytes | memoryview] = []

        def run(a: int, b: int) -> memoryview:
            end = b - 1  # drop the newline, and the comma of a line that was not last before
            return view[a:end - 1] if buf[end - 1] == 0x2C else view[a:end]

        pos = lo
        for t, entry in changes:
            p = seek(buf, pos, hi, t)
            if p > pos:
                pieces.append(run(pos, p))
            if p < hi and _at(buf, p, t):
                p = _eol(buf, p, hi) + 1
            if entry is not None:
                pieces.append(t + enc_entry(entry))
            pos = p
        if pos < hi:
            pieces.append(run(pos, hi))
        return pieces

    def write(self, f: BinaryIO | io.BytesIO) -> bytes:
        """Write the merged key map section and its trailer (the file's closing bytes); return the trailer."""
        digest = hashlib.sha256()
        size = 0

        def out(b: bytes | memoryview) -> None:
            nonlocal size
            f.write(b)
            digest.update(b)
            size += len(b)

        first = True
        for kind in sorted(set(self._ranges) | set(self._touched)):
            pieces = self._pieces(kind)
            if not pieces:
                continue
            out((b"" if first else b",\n") + _encode(kind).encode("ascii") + b":{\n")
            first = False
            _write_lines(out, pieces)
            out(b"\n}")
        trailer = TRAILER + digest.hexdigest().encode() + b'"}\n'
        f.write(trailer)
        return trailer

    def reload(self, path: Path, start: int, trailer: bytes, pending: dict[str, list[str]]) -> None:
        """Take the file just saved (its key map section at ``start``, ending with ``trailer``) as the new
        saved lines. Anything else read back (a short read, another writer) raises ValueError: a key map
        that answered "not found" for keys it has would create duplicates.

        The old buffer goes first, so a save never holds two copies of the key map."""
        self._buf = None
        buf = read_buffer(path)
        end = len(buf) - len(trailer)
        if end < start or buf[end:] != trailer:
            raise ValueError("the file read back is not the one just written")
        self._ranges = parse_sections(buf, start, end)
        self._buf = buf
        self._pending = {k: set(v) for k, v in pending.items()}
