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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from mlconnector.errors import LockedError, StateError
from mlconnector.keymap import KEYS_OPEN, KeyMap, read_buffer
from mlconnector.private import private_dir

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


@dataclass
class State:
    path: Path
    watermarks: dict[str, str] = field(default_factory=dict)
    vendors: dict[str, dict[str, Any]] = field(default_factory=dict)
    replay: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # per-pair bookkeeping (back-flow, webhooks)
    # system -> the site this state describes ("https://jira.example.com project PROC"); see bind_sites
    sites: dict[str, str] = field(default_factory=dict)
    # The pairs whose records this state holds (see runner.claim_state): pairs that name their records alike
    # (purchase_orders, vendors) must never share one state.
    pairs: list[str] = field(default_factory=list)
    dirty: bool = False
    watermarks_moved: bool = False  # a watermark moved since the last save (saved once, at the end of a pass)
    # The key map, kind -> natural key -> {"issue": "PROC-1", "id": "10000", "hash": "...", "status": "A",
    #   "ts": "<source last update, UTC>", "pending": true while a create is in flight,
    #   "comments": {comment_id: jira_comment_id or "pending"}}; mostly on disk (see keymap.py).
    keymap: KeyMap = field(default_factory=KeyMap)

    # -- load / save -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls(path=path)
        try:
            raw = read_buffer(path)  # the key map stays in it, unparsed
        except OSError as exc:
            raise StateError(f"Cannot read the state file {path}: {exc.strerror or exc}. Check its permissions; "
                             f"the file is needed to avoid duplicate issues.") from None
        data: Any = None
        keymap: KeyMap | None = None
        start = raw.find(b"\n") + 1
        if start and raw[start - len(KEYS_OPEN):start] == KEYS_OPEN:
            # The layout this version writes: the header line, then the key map section, read lazily.
            try:
                data = json.loads(raw[:start - len(KEYS_OPEN)] + b"}")
            except (ValueError, UnicodeDecodeError):
                data = None
            if isinstance(data, dict) and isinstance(data.get("pending", {}), dict):
                keymap = KeyMap.from_section(raw, start, data.get("pending", {}))
        if keymap is None:
            # Any other JSON of the right shape (an older version's file, a hand-edited one): read it whole.
            try:
                data = json.loads(raw[:])  # a copy, once: this layout is rewritten by the next save
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError):
                raise StateError(
                    f"The state file {path} is corrupt (not valid JSON). It was not changed. Restore it from "
                    f"backup (the newest copy you have: an older one is safe). Or move it aside and run the "
                    f"pass again: records are re-read from initial_since and every issue already in Jira is "
                    f"found by its label and adopted, not created again; that costs one edit per issue, and "
                    f"the replay queue and the Jira -> JD Edwards changes made since the last pass are lost."
                ) from None
        del raw  # kept by the key map when it is in this layout
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
            if keymap is None:
                keys = data.get("keys", {})
                if not isinstance(keys, dict) or not all(
                        isinstance(v, dict) and all(isinstance(e, dict) for e in v.values()) for v in keys.values()):
                    raise ValueError("keys")
                keymap = KeyMap.from_entries(keys)
            return cls(
                path=path,
                watermarks=dict(data.get("watermarks", {})),
                vendors=dict(data.get("vendors", {})),
                replay=list(data.get("replay", [])),
                extra=dict(data.get("extra", {})),
                sites={str(k): str(v) for k, v in dict(data.get("sites", {})).items()},
                pairs=[str(p) for p in list(data.get("pairs", []))],
                keymap=keymap,
            )
        except (TypeError, ValueError, AttributeError):
            raise StateError(f"The state file {path} has an unexpected layout and was not changed. Restore "
                             f"it from backup or move it aside (see README, 'State file').") from None

    def save(self) -> None:
        pending = self.keymap.pending_map()
        header = {"schema": SCHEMA_VERSION, "saved_at": iso(utcnow()), "watermarks": self.watermarks,
                  "vendors": self.vendors, "replay": self.replay, "extra": self.extra, "sites": self.sites,
                  "pairs": self.pairs}
        # "replace": text that cannot be encoded (a lone surrogate) must not make the state unsavable. Keys
        # are escaped instead, as in the key map, so that they still match their entries.
        head = (json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")[:-1]
                + b',"pending":' + json.dumps(pending, separators=(",", ":")).encode("ascii") + KEYS_OPEN)

        trailer = b""

        def write(f: BinaryIO) -> None:
            nonlocal trailer
            f.write(head)
            trailer = self.keymap.write(f)

        write_atomic(self.path, write)
        try:
            self.keymap.reload(self.path, len(head), trailer, pending)
        except (OSError, ValueError) as exc:
            raise StateError(f"The state file {self.path} was saved but could not be read back ({exc}); this "
                             f"run stopped so that nothing is looked up in a half-loaded key map. Run the pass "
                             f"again; nothing was lost.") from None
        self.dirty = self.watermarks_moved = False

    # -- sites -----------------------------------------------------------------------------------
    def bind_sites(self, sites: dict[str, str], *, rebind: bool = False) -> None:
        """Tie this state to the sites it describes, or refuse a configuration that points elsewhere.

        A state file copied to another host, or a configuration edited to point at another Jira or
        PeopleSoft, would otherwise apply one site's links to another site's records. Systems that the
        state does not know yet are added; ``rebind`` replaces every site (the admin's deliberate move).
        """
        if not rebind and not self.sites:
            self._check_first_bind(sites)
        if not rebind:
            moved = {k: (self.sites[k], v) for k, v in sites.items() if k in self.sites and self.sites[k] != v}
            if moved:
                what = "; ".join(f"{k}: the state describes {old}, the configuration {new}"
                                 for k, (old, new) in sorted(moved.items()))
                raise StateError(
                    f"The state file {self.path} belongs to other sites ({what}). Nothing was changed. If this "
                    f"configuration should have its own state, give it its own 'instance' name (or state_file). "
                    f"If the site really moved (a new URL for the same Jira or PeopleSoft), run 'mlconnector state "
                    f"rebind --config ...' once: links are kept and checked by their handles as records change.")
        changed = {**self.sites, **sites} if not rebind else dict(sites)
        if changed != self.sites:
            self.sites = changed
            self.dirty = True

    def _check_first_bind(self, sites: dict[str, str], sample: int = 200) -> None:
        """A state written before sites were recorded: before binding it, check that its links fit. Linked
        issue keys (``PROC-17``) must belong to a project the configuration names ("... project PROC")."""
        named = [v.rsplit(" project ", 1)[1] for v in sites.values() if " project " in v]
        projects = {p.strip() for v in named for p in v.split(",")}
        if not projects:
            return
        for kind in self.kinds():
            for n, (_key, entry) in enumerate(self.keymap.items(kind)):
                if n >= sample:
                    break
                issue = str(entry.get("issue") or "")
                if "-" in issue and issue.rsplit("-", 1)[0] not in projects:
                    raise StateError(
                        f"The state file {self.path} links records to issue {issue}, which is not in the project "
                        f"this configuration names ({', '.join(sorted(projects))}). It was written for another "
                        f"site or project and was not changed. Give this configuration its own 'instance' name "
                        f"(or state_file); if the project really was renamed, run 'mlconnector state rebind "
                        f"--config ...' once.")

    # -- key map ---------------------------------------------------------------------------------
    def entry(self, kind: str, key: str) -> dict[str, Any] | None:
        """The entry of a key; a live object until ``release``: change it in place, then mark dirty."""
        return self.keymap.get(kind, key)

    def set_entry(self, kind: str, key: str, entry: dict[str, Any]) -> None:
        self.keymap.set(kind, key, entry)
        self.dirty = True

    def drop_entry(self, kind: str, key: str) -> None:
        self.keymap.drop(kind, key)
        self.dirty = True

    def pending(self, kind: str) -> list[str]:
        return self.keymap.pending(kind)

    def kinds(self) -> list[str]:
        """The kinds with at least one key-map entry."""
        return self.keymap.kinds()

    def entries(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every entry of a kind, parsed (costs memory in proportion: for reports and tests, not passes)."""
        return dict(self.keymap.items(kind))

    def summary(self) -> dict[str, Any]:
        """What an admin asks of a state: sites, watermarks, links and pending creates per entity, queue per
        entity (counts only; no record content)."""
        queue: dict[str, int] = {}
        for item in self.replay:
            name = f"{item['kind']} ({item.get('what', 'record')})"
            queue[name] = queue.get(name, 0) + 1
        return {"path": str(self.path), "pairs": list(self.pairs), "sites": dict(self.sites),
                "watermarks": dict(sorted(self.watermarks.items())),
                "links": {k: self.keymap.count(k) for k in self.kinds()},
                "pending": {k: len(p) for k in self.kinds() if (p := self.pending(k))},
                "queue": queue}

    def find_issues(self, kinds: list[str], issues: set[str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
        return self.keymap.find_issues(kinds, issues)

    def find_by(self, kind: str, name: str, values: set[str]) -> list[str]:
        """Keys of ``kind`` whose entry field ``name`` is one of ``values`` (one scan; see KeyMap.find_by)."""
        return self.keymap.find_by(kind, name, values)

    def release(self, can_save: bool = True) -> None:
        """Drop the parsed entries handed out so far, saving first if any changed. Call it between batches,
        when no caller still holds an entry: it keeps a pass over many records flat in memory."""
        if self.keymap.changed():
            if not can_save:
                return
            self.save()
        self.keymap.release()

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


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` with ``data`` (bytes, or a function writing them to the open file) atomically."""
    private_dir(path.parent)  # 0700 when created; mkstemp makes the file 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
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

    private_dir(state_path.parent)
    lock_path = state_path.with_name(state_path.name + ".lock")
    lock = FileLock(str(lock_path), timeout=wait, mode=0o600)
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
