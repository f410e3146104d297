"""Wiring: configuration + secrets -> a pair's clients, lock, state and audit for one command.

The CLI and the demo both go through here, so a pass run by cron and a pass run by the demo are
the same code. Pairs are found through the registry; nothing here knows a system.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import EXIT_CONFIG, EXIT_UNREACHABLE, ConfigError, ConnectorError, StateError
from mlconnector.state import State, run_lock
from mlconnector.sync.engine import PassResult, Progress, no_progress, run_pass, run_replay


def make_redactor(cfg: Config, secrets: SecretStore) -> Redactor:
    from mlconnector.audit import GLOBAL
    from mlconnector.credentials import KNOWN_SECRETS

    r = Redactor()
    for name in KNOWN_SECRETS:
        try:
            value = secrets.find(name)
        except ConfigError:
            continue  # an unreadable keyring only matters for the secrets this command needs (read later)
        if name.startswith("peoplesoft"):
            user = cfg.ps.user if cfg.ps else ""
        else:
            user = cfg.jira.email if cfg.jira is not None else ""
        r.add(value, user)
        GLOBAL.add(value, user)
    return r


# Files kept beside a state file, named by a suffix of its name (see webhook.py, jira/oauth.py).
COMPANIONS = (".webhooks.jsonl", ".jira-token.json")


def legacy_state(cfg: Config) -> Path | None:
    """The state file an earlier version kept for this configuration, if one is there."""
    return next((p for p in cfg.legacy_state_files if p.exists()), None)


def adopt_legacy_state(cfg: Config) -> None:
    """Move a state file from the path earlier versions derived from the config's location (a digest of
    it) to the instance's own path, with the files kept beside it. Call with the run lock held.

    The legacy file's own lock is taken too: a pass of the earlier version still running on it would
    otherwise save into a file nobody reads again. When the instance's path is already taken (another
    configuration with the same instance name, or an earlier migration), nothing is moved: the admin is
    told which file is whose, so no state is stranded silently."""
    old, new = legacy_state(cfg), cfg.state_file
    if old is None:
        return
    if new.exists():
        raise StateError(
            f"Two state files claim this configuration ({cfg.path}): {old}, written by an earlier version for it, "
            f"and {new}, where this version keeps the state of instance {cfg.instance!r} (another configuration "
            f"with the same instance name, or a run of the earlier version after the upgrade). Nothing was "
            f"changed. Give this configuration its own name (instance = \"...\" in {cfg.path.name}): {old.name} "
            f"is then moved to it on the next run. Or, if {new.name} is this configuration's, move {old.name} aside.")
    with run_lock(old):
        moves = [(old.with_name(old.name + s), new.with_name(new.name + s)) for s in COMPANIONS]
        if cfg.audit_file == new.with_suffix(".audit.jsonl"):  # the audit trail follows the state by default
            moves.append((old.with_suffix(".audit.jsonl"), cfg.audit_file))
        for src, dst in moves:
            if src.exists() and not dst.exists():
                os.replace(src, dst)
        os.replace(old, new)  # last: until it moves, a rerun finds the old file and tries again


def open_state(cfg: Config, *, locked: bool, rebind: bool = False) -> State:
    """The configuration's state, bound to its sites (a StateError names any mismatch). Without the lock
    (read-only commands) a state still at its legacy path is read where it is."""
    if locked:
        adopt_legacy_state(cfg)
    path = cfg.state_file
    if not locked and not path.exists():
        path = legacy_state(cfg) or path
    state = State.load(path)
    if not state.pairs:
        # Whose records these are is read from the state as written, before this configuration's sites are
        # bound to it: a state without sites is one of release 0.1.0 (see pairs_held).
        state.pairs = pairs_held(state)
    state.bind_sites(cfg.sites(), rebind=rebind)
    return state


# Configuration sections that are systems with a site of their own (Config.sites).
SYSTEMS = ("peoplesoft", "jira", "jde", "procurify", "jaggaer", "procore")


def pairs_held(state: State) -> list[str]:
    """The pairs whose records ``state`` holds: as recorded, or, for a state written before pairs were recorded,
    the pairs whose entities it holds and whose systems it is bound to (a state without sites comes from
    release 0.1.0, whose pairs were peoplesoft-jira and jde-jira)."""
    from mlconnector.registry import LEGACY_SCOPE, PAIRS

    if state.pairs:
        return list(state.pairs)
    names = set(state.kinds()) | {w.split(".", 1)[0] for w in state.watermarks} | {i["kind"] for i in state.replay}
    return [name for name, spec in PAIRS.items() if names & set(spec.kinds) and (
        all(s in state.sites for s in spec.sections if s in SYSTEMS) if state.sites
        else spec.state_scope == LEGACY_SCOPE)]


def clashing(held: list[str], pair: str) -> list[str]:
    """The pairs of ``held`` whose records ``pair`` must not share a state with."""
    from mlconnector.registry import PAIRS

    scope = PAIRS[pair].state_scope
    return [p for p in held if p != pair and not (scope and p in PAIRS and PAIRS[p].state_scope == scope)]


def claim_state(state: State, pair: str) -> None:
    """Record that ``pair`` keeps its records in ``state``, or refuse (StateError, nothing changed) when the state
    holds another pair's records under the same names: that pair's links, pending creates and queue would be
    read as this pair's, and a create it left pending could be settled, or a record adopted, by the wrong one."""
    held = pairs_held(state)
    clash = clashing(held, pair)
    if clash:
        raise StateError(
            f"The state file {state.path} holds the records of {', '.join(clash)}, which names its records like "
            f"{pair} does (vendors, purchase orders, ...), so {pair} cannot keep its own there: one pair's pending "
            f"creates and links would be taken for the other's. Nothing was changed. Run {pair} from a "
            f"configuration file of its own with its own instance name (instance = \"...\"; copy the sections it "
            f"needs); secrets from MLCONNECTOR_* environment variables serve both, keyring entries are per instance "
            f"('mlconnector secrets set --config NEW.toml ...'). Its first pass looks every record up on the target "
            f"before creating it, so records it wrote before are adopted, not created again.")
    wanted = sorted({*held, pair})
    if state.pairs != wanted:
        state.pairs = wanted
        state.dirty = True


@contextlib.contextmanager
def session(cfg: Config, pair: str, *, lock: bool = True, refresh_wsdl: bool = False,
            ) -> Iterator[tuple[Any, Any, State, Audit]]:
    """Everything one command of a pair needs: (pair module, open clients, state, audit). Secrets are read and
    clients built before the lock is taken; the state is bound to the configuration's sites."""
    from mlconnector.registry import PAIRS

    missing = [s for s in PAIRS[pair].sections if s not in cfg.raw]
    if missing:
        example = "examples/procurify-peoplesoft.toml" if missing[0].startswith("procurify") else "examples/config.toml"
        if "jaggaer" in missing[0]:
            example = "examples/peoplesoft-jaggaer.toml"
        if "procore" in missing[0]:
            example = "examples/peoplesoft-procore.toml"
        raise ConfigError(f"{pair} needs a [{missing[0]}] section, which {cfg.path} does not have. Copy it from "
                          f"{example} and fill it in.")
    mod = PAIRS[pair].load()
    secrets = SecretStore(cfg.instance)
    redactor = make_redactor(cfg, secrets)
    with mod.connect(cfg, secrets, redactor, refresh_wsdl=refresh_wsdl) as clients:
        ctx = run_lock(cfg.state_file) if lock else contextlib.nullcontext()
        with ctx:
            state = open_state(cfg, locked=lock)
            claim_state(state, pair)
            # A dry run (--plan) writes nothing anywhere: not even an audit line.
            audit = Audit(cfg.audit_file if lock else None, redactor, pair)
            try:
                yield mod, clients, state, audit
            finally:
                audit.close()


def sync(pair: str, cfg: Config, *, dry_run: bool = False, since: datetime | None = None,
         kinds: list[str] | None = None, progress: Progress = no_progress, refresh_wsdl: bool = False) -> PassResult:
    """One pass of ``pair`` (see sync/engine.py). A dry run writes nothing, so it does not need the lock."""
    with session(cfg, pair, lock=not dry_run, refresh_wsdl=refresh_wsdl) as (mod, clients, state, audit):
        if not state.watermarks and cfg.preflight:
            preflight(cfg, refresh_wsdl=refresh_wsdl)
        steps = mod.make_pass(cfg, clients, state, audit, dry_run=dry_run, progress=progress, kinds=kinds)
        if cfg.pass_deadline_minutes:
            steps.ctx.deadline = time.monotonic() + cfg.pass_deadline_minutes * 60
        return run_pass(steps, since)


# Checks whose failure means a system could not be reached or logged into (exit 3), not a wrong setting.
REACH_CHECKS = ("reachable", "authentication", "AIS server", "login", "token")


def preflight(cfg: Config, *, refresh_wsdl: bool = False) -> None:
    """The first pass of a configuration runs `ping`'s checks before it writes anything, and stops with one
    message listing every problem: a misconfigured first pass would otherwise fail record by record."""
    from mlconnector.ping import run_ping

    failed = [c for c in run_ping(cfg, refresh_wsdl=refresh_wsdl) if c.blocking]
    if not failed:
        return
    lines = "\n".join(f"- {c.system}: {c.name}: {c.detail}" + (f" Fix: {c.fix}" if c.fix else "") for c in failed)
    reach = all(any(c.name.startswith(r) for r in REACH_CHECKS) for c in failed)
    raise ConnectorError(
        f"This is the first pass of {cfg.path.name}, so everything it will use was checked first: {len(failed)} "
        f"check(s) failed and nothing was written (the same list as 'mlconnector ping'):\n{lines}",
        exit_code=EXIT_UNREACHABLE if reach else EXIT_CONFIG)


def sync_peoplesoft_jira(cfg: Config, **kwargs: Any) -> PassResult:
    return sync("peoplesoft-jira", cfg, **kwargs)


def sync_jde_jira(cfg: Config, **kwargs: Any) -> PassResult:
    return sync("jde-jira", cfg, **kwargs)


def configured_pairs(cfg: Config) -> list[str]:
    from mlconnector.registry import PAIRS

    # A pair runs only where every section it needs is present (a PeopleSoft + Procurify configuration does not
    # configure the PeopleSoft -> Jira pair).
    return [name for name, spec in PAIRS.items()
            if all(s in cfg.raw for s in spec.sections) and spec.load().configured(cfg)]


def replay_items(cfg: Config, ids: list[str] | None) -> tuple[PassResult, int, int]:
    """Retry queued items (all when ids is None) through each owning pair's normal write path; return
    (result, succeeded, still failing)."""
    pairs = configured_pairs(cfg)
    if not pairs:
        raise ConfigError(f"{cfg.path} configures no pair, so nothing can be retried.")
    totals: PassResult | None = None
    ok = bad = 0
    for pair in pairs:
        with session(cfg, pair) as (mod, clients, state, audit):
            steps = mod.make_pass(cfg, clients, state, audit)
            mine = set(steps.replay_kinds())
            items = [i for i in state.replay if i["kind"] in mine and (ids is None or i["id"] in ids)]
            if not items and (totals is not None or pair != pairs[-1]):
                continue  # nothing of this pair's is queued (the last pair still answers for an empty queue)
            result, o, b = run_replay(steps, items, lambda s=steps, m=mod, it=items: m.before_replay(s, it))
        ok, bad = ok + o, bad + b
        if totals is None:
            totals = result
        else:
            totals.counts.update(result.counts)
            totals.failures += result.failures
            totals.queue_size = result.queue_size
            totals.fatal = totals.fatal or result.fatal
            totals.exit_code = max(totals.exit_code, result.exit_code)
    assert totals is not None
    return totals, ok, bad
