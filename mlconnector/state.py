"""The state file: watermarks, key map and replay queue of one configuration.

Written atomically (temp file in the same directory, fsync, os.replace, then fsync of the
directory) so a pass killed at any instant leaves either the old or the new file, never half of
one. Guarded by an exclusive lock (filelock: Windows has no fcntl) for the whole run. A corrupt or
newer-version file stops the run; it is never silently reset.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlconnector.errors import LockedError, StateError

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


@dataclass
class State:
    path: Path
    watermarks: dict[str, str] = field(default_factory=dict)
    # keys[kind][natural_key] = {"issue": "PROC-1", "id": "10000", "hash": "...", "status": "A",
    #   "ts": "<source last update, UTC>", "pending": true while a create is in flight,
    #   "comments": {comment_id: jira_comment_id or "pending"}}
    keys: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    vendors: dict[str, dict[str, Any]] = field(default_factory=dict)
    replay: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # per-pair bookkeeping (back-flow, webhooks)
    dirty: bool = False

    # -- load / save -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls(path=path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StateError(f"Cannot read the state file {path}: {exc.strerror}. Check its permissions; "
                             f"the file is needed to avoid duplicate issues.") from None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            raise StateError(
                f"The state file {path} is corrupt (not valid JSON). It was not changed. Restore it from "
                f"backup, or move it aside and run 'mlconnector sync ... --since <date>' to rebuild it: issues "
                f"already in Jira are found by their ERP key, not created again."
            ) from None
        version = data.get("schema")
        if not isinstance(version, int):
            raise StateError(f"The state file {path} has no schema version, so it was not written by "
                             f"ml-connector. Point state_file at the right file or move this one aside.")
        if version > SCHEMA_VERSION:
            raise StateError(
                f"The state file {path} was written by a newer ml-connector (schema {version}; this version "
                f"reads up to {SCHEMA_VERSION}). Upgrade ml-connector on this host; the file was not changed."
            )
        try:
            return cls(
                path=path,
                watermarks=dict(data.get("watermarks", {})),
                keys={k: dict(v) for k, v in data.get("keys", {}).items()},
                vendors=dict(data.get("vendors", {})),
                replay=list(data.get("replay", [])),
                extra=dict(data.get("extra", {})),
            )
        except (TypeError, ValueError, AttributeError):
            raise StateError(f"The state file {path} has an unexpected layout and was not changed. Restore "
                             f"it from backup or move it aside (see README, 'State file').") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "saved_at": iso(utcnow()),
            "watermarks": self.watermarks,
            "keys": self.keys,
            "vendors": self.vendors,
            "replay": self.replay,
            "extra": self.extra,
        }

    def save(self) -> None:
        # "replace": text that cannot be encoded (a lone surrogate) must not make the state unsavable.
        write_atomic(self.path, json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)
                     .encode("utf-8", "replace"))
        self.dirty = False

    # -- key map ---------------------------------------------------------------------------------
    def entry(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.keys.get(kind, {}).get(key)

    def set_entry(self, kind: str, key: str, entry: dict[str, Any]) -> None:
        self.keys.setdefault(kind, {})[key] = entry
        self.dirty = True

    def pending(self, kind: str) -> list[str]:
        return [k for k, e in self.keys.get(kind, {}).items() if e.get("pending")]

    # -- replay queue ----------------------------------------------------------------------------
    def enqueue(self, kind: str, key: str, row: dict[str, Any], error: str, raw: str = "",
                what: str = "record") -> dict[str, Any]:
        """Queue a failed record (or comment) with its source row; one item per (what, kind, key)."""
        now = iso(utcnow())
        for item in self.replay:
            if item["kind"] == kind and item["key"] == key and item.get("what", "record") == what:
                item.update(row=row, error=error, raw=raw, last_failed=now, attempts=item["attempts"] + 1)
                self.dirty = True
                return item
        item = {"id": uuid.uuid4().hex[:8], "what": what, "kind": kind, "key": key, "row": row,
                "error": error, "raw": raw, "attempts": 1, "first_failed": now, "last_failed": now}
        self.replay.append(item)
        self.dirty = True
        return item

    def dequeue(self, kind: str, key: str, what: str = "record") -> None:
        before = len(self.replay)
        self.replay = [i for i in self.replay
                       if not (i["kind"] == kind and i["key"] == key and i.get("what", "record") == what)]
        if len(self.replay) != before:
            self.dirty = True

    def find_replay(self, item_id: str) -> dict[str, Any] | None:
        return next((i for i in self.replay if i["id"] == item_id), None)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def run_lock(state_path: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the exclusive run lock of this configuration, or raise LockedError at once."""
    from filelock import FileLock, Timeout

    state_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = state_path.with_name(state_path.name + ".lock")
    lock = FileLock(str(lock_path), timeout=wait)
    start = time.monotonic()
    try:
        lock.acquire()
    except Timeout:
        raise LockedError(
            f"Another ml-connector run holds the lock {lock_path} (waited {time.monotonic() - start:.0f} s). "
            f"This run did nothing. If no other run is active (check the process list), the lock is released "
            f"automatically; overlapping cron schedules should be spaced further apart."
        ) from None
    try:
        yield
    finally:
        lock.release()
