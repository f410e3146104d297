"""Moving and rebuilding a state: `state export`, `state import` and `state rebuild <pair>`.

An export is one JSON document: the state in the plain layout ``State.load`` reads whole (watermarks,
key map, replay queue, sites), and the audit trail's lines when asked. An import checks the document as a
pass would (``State.load`` on a temporary copy, the schema version, the sites of this configuration), then
writes it atomically under the run lock; a state that already holds something is replaced only on request.

A rebuild is the safe answer to a lost state: the pair's watermarks are forgotten and one normal pass
re-reads everything from ``initial_since``; lookups before every create find the records already on the
target by their handles and adopt them. Without ``execute`` the same pass runs as a plan (nothing written).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mlconnector import __version__
from mlconnector.audit import Audit, Redactor
from mlconnector.config import Config
from mlconnector.errors import ConfigError, StateError
from mlconnector.runner import open_state, preflight, session
from mlconnector.state import SCHEMA_VERSION, State, iso, run_lock, utcnow, write_atomic
from mlconnector.sync.engine import PassResult, Progress, no_progress, run_pass

FORMAT = "mlconnector-state-export"
FORMAT_VERSION = 1


# -- export ---------------------------------------------------------------------------------------
def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def write_export(cfg: Config, out: BinaryIO, *, with_audit: bool) -> dict[str, Any]:
    """Write the export document of this configuration's state to ``out``; return what it holds (counts).

    The key map is written one kind and one entry at a time, so a large state is not held in memory twice.
    The state is read without the lock: it is only ever replaced whole (see state.write_atomic)."""
    state = open_state(cfg, locked=False)
    if not state.path.exists():
        raise ConfigError(f"There is no state to export at {state.path}: this configuration has not run a pass "
                          f"yet (or its state_file/instance points elsewhere; 'mlconnector state path' shows it).")
    head = {"format": FORMAT, "format_version": FORMAT_VERSION, "exported_at": iso(utcnow()),
            "mlconnector": __version__, "instance": cfg.instance, "source": str(state.path)}
    body = {"schema": SCHEMA_VERSION, "watermarks": state.watermarks, "vendors": state.vendors,
            "replay": state.replay, "extra": state.extra, "sites": state.sites, "pairs": state.pairs}
    out.write(_dump(head)[:-1] + b',"state":' + _dump(body)[:-1] + b',"keys":{')
    links: dict[str, int] = {}
    for i, kind in enumerate(state.kinds()):
        out.write((b"," if i else b"") + b"\n" + _dump(kind) + b":{")
        n = 0
        for key, entry in state.keymap.items(kind):
            out.write((b"," if n else b"") + b"\n" + _dump(key) + b":" + _dump(entry))
            n += 1
        out.write(b"}")
        links[kind] = n
    out.write(b"\n}}")
    audit_lines = 0
    if with_audit:
        out.write(b',"audit_lines":[')
        if cfg.audit_file.exists():
            with cfg.audit_file.open("r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    line = line.rstrip("\r\n")
                    if line:
                        out.write((b"," if audit_lines else b"") + b"\n" + _dump(line))
                        audit_lines += 1
        out.write(b"\n]")
    out.write(b"}\n")
    return {"state_file": str(state.path), "links": links, "watermarks": len(state.watermarks),
            "queue": len(state.replay), "audit_lines": audit_lines if with_audit else None}


def export_state(cfg: Config, target: Path | None, *, with_audit: bool) -> dict[str, Any]:
    """Export to the file ``target`` (written atomically, 0600) or, when None, to standard output."""
    if target is None:
        info = write_export(cfg, sys.stdout.buffer, with_audit=with_audit)
        sys.stdout.buffer.flush()
        return info
    holder: dict[str, Any] = {}

    def write(f: BinaryIO) -> None:
        holder.update(write_export(cfg, f, with_audit=with_audit))

    write_atomic(target, write)
    return holder


# -- import ---------------------------------------------------------------------------------------
def _read_document(source: Path | None) -> tuple[str, dict[str, Any], list[str] | None]:
    """(name, state object, audit lines or None) from an export document or a plain state file."""
    name = "standard input" if source is None else str(source)
    try:
        raw = sys.stdin.buffer.read() if source is None else source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {name}: {exc.strerror or exc}. Name the file 'state export' wrote.") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise ConfigError(f"{name} is not a state export (not a JSON object). Nothing was changed. Use the file "
                          f"written by 'mlconnector state export' (or a state file itself).")
    if doc.get("format") == FORMAT:
        version = doc.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ConfigError(f"{name} was exported by a newer ml-connector (format {version}; this version reads "
                              f"up to {FORMAT_VERSION}). Nothing was changed. Upgrade ml-connector on this host.")
        state, audit = doc.get("state"), doc.get("audit_lines")
        if not isinstance(state, dict) or not (audit is None or (isinstance(audit, list)
                                                                and all(isinstance(x, str) for x in audit))):
            raise ConfigError(f"{name} is a damaged state export (no state object). Nothing was changed. "
                              f"Export it again on the source host.")
        return name, state, audit
    if "schema" in doc:  # a state file copied as is
        return name, doc, None
    raise ConfigError(f"{name} is neither a state export nor a state file (no 'format' or 'schema'). Nothing was "
                      f"changed. Use the file written by 'mlconnector state export'.")


def _validated(cfg: Config, name: str, state_doc: dict[str, Any], rebind: bool) -> State:
    """The imported state, loaded from a temporary copy exactly as a pass loads a state, bound to this
    configuration's sites."""
    with tempfile.TemporaryDirectory(prefix="mlconnector-import-") as tmp:
        copy = Path(tmp) / "state.json"
        copy.write_bytes(_dump(state_doc))
        try:
            state = State.load(copy)
        except StateError as exc:
            raise StateError(exc.message.replace(str(copy), name).split(" Restore")[0]
                             + " Nothing was changed; export it again on the source host.") from None
    sites = cfg.sites()
    moved = {k: (state.sites[k], v) for k, v in sites.items() if k in state.sites and state.sites[k] != v}
    if moved and not rebind:
        what = "; ".join(f"{k}: the export describes {old}, the configuration {new}"
                         for k, (old, new) in sorted(moved.items()))
        raise StateError(f"{name} belongs to other sites than {cfg.path.name} ({what}). Nothing was changed. If "
                         f"this configuration carries it on at new addresses (a deliberate move of a site), import "
                         f"it with --rebind; otherwise import it with the configuration it was exported from.")
    from mlconnector.runner import clashing, configured_pairs, pairs_held

    held = pairs_held(state)  # as recorded, or read from an export of an earlier version before binding
    mine = configured_pairs(cfg)
    if held and mine and all(clashing(held, pair) for pair in mine):
        raise StateError(f"{name} holds the records of {', '.join(held)}, and {cfg.path.name} runs "
                         f"{', '.join(mine)}, which cannot share a state with it (they name their records alike). "
                         f"Nothing was changed. Import it with the configuration of {held[0]}.")
    state.pairs = held
    try:
        state.bind_sites(sites, rebind=rebind)
    except StateError as exc:
        raise StateError(exc.message.replace(str(state.path), name).replace(
            "run 'mlconnector state rebind --config ...' once", "import it with --rebind")) from None
    return state


def _holds_something(state: State) -> bool:
    return bool(state.watermarks or state.kinds() or state.replay)


def import_state(cfg: Config, source: Path | None, *, replace: bool, rebind: bool) -> dict[str, Any]:
    """Validate the document at ``source`` (standard input when None) and make it this configuration's state,
    atomically and under the run lock. A state already holding watermarks, links or a queue is replaced only
    with ``replace``. Imported audit lines go to the audit trail when it is empty, else beside it."""
    name, state_doc, audit_lines = _read_document(source)
    state = _validated(cfg, name, state_doc, rebind)
    target = cfg.state_file
    with run_lock(target):
        if target.exists() and not replace:
            try:
                existing = State.load(target)
            except StateError:
                raise StateError(f"{target} is already there and cannot be read. Nothing was changed. Add --replace "
                                 f"to put the imported state in its place.") from None
            if _holds_something(existing):
                raise StateError(
                    f"{target} already holds a state ({len(existing.watermarks)} watermark(s), "
                    f"{sum(existing.keymap.count(k) for k in existing.kinds())} link(s), {len(existing.replay)} "
                    f"queued). Nothing was changed. Export it first if it is worth keeping, then import with "
                    f"--replace.")
        state.path = target
        state.dirty = True
        state.save()
        audit_to = None
        if audit_lines:
            audit_to = cfg.audit_file
            if audit_to.exists() and audit_to.stat().st_size:
                audit_to = audit_to.with_name(audit_to.name + ".imported")  # a trail is never overwritten
            write_atomic(audit_to, "".join(line + "\n" for line in audit_lines).encode("utf-8", "replace"))
        audit = Audit(cfg.audit_file, Redactor(), "state")
        audit.write("state_imported", source=name, replaced=replace)
        audit.close()
    return {"state_file": str(target), "links": {k: state.keymap.count(k) for k in state.kinds()},
            "watermarks": len(state.watermarks), "queue": len(state.replay), "sites": dict(state.sites),
            "audit_file": str(audit_to) if audit_to else None, "audit_lines": len(audit_lines or [])}


# -- rebuild --------------------------------------------------------------------------------------
def rebuild(pair: str, cfg: Config, *, execute: bool, progress: Progress = no_progress,
            refresh_wsdl: bool = False) -> tuple[PassResult, dict[str, str]]:
    """Forget ``pair``'s watermarks and run one pass from ``initial_since``; (result, forgotten watermarks).

    Without ``execute`` it is a plan: the watermarks are dropped in memory only and the pass writes nothing
    anywhere. With it, the watermarks are dropped and saved under the run lock before the pass starts (a pass
    stopped half-way then re-reads in full next time), and the pass runs under that same lock."""
    from mlconnector.registry import PAIRS

    spec = PAIRS[pair]
    with session(cfg, pair, lock=execute, refresh_wsdl=refresh_wsdl) as (mod, clients, state, audit):
        forgotten = {n: state.watermarks.pop(n) for n in sorted(state.watermarks) if spec.owns_watermark(n)}
        if execute:
            state.save()
            audit.write("state_rebuild", forgot=sorted(forgotten))
        if not state.watermarks and cfg.preflight:
            preflight(cfg, refresh_wsdl=refresh_wsdl)
        steps = mod.make_pass(cfg, clients, state, audit, dry_run=not execute, progress=progress)
        return run_pass(steps, None), forgotten


PLAN_COLUMNS = ("read", "adopted", "created", "updated", "unchanged", "transitioned", "commented", "posted",
                "failed")
WORDS = {"adopted": "adopt", "created": "create", "updated": "update", "transitioned": "transition",
         "commented": "comment", "posted": "post", "failed": "fail"}


def plan_lines(result: PassResult, echo: Callable[[str], None]) -> None:
    """Per entity: what the re-read would do (adopt and create shown for every entity with links, other actions
    when any)."""
    for kind, c in result.counts.items():
        # A reference entity (vendors) is neither adopted nor created: its counts are shown as they are.
        links = c.adopted or c.created or not any(getattr(c, col) for col in PLAN_COLUMNS[1:])
        shown = [f"{WORDS.get(col, col)} {getattr(c, col)}" for col in PLAN_COLUMNS
                 if getattr(c, col) or col == "read" or (links and col in ("adopted", "created"))]
        echo(f"  {kind}: " + ", ".join(shown))
