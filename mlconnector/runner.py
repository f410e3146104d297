"""Wiring: configuration + secrets -> authenticated clients, lock, state and audit for one command.

The CLI and the demo both go through here, so a pass run by cron and a pass run by the demo are
the same code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import ISSUE_KINDS, Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import ConfigError
from mlconnector.jira.client import JiraClient
from mlconnector.pairs.peoplesoft_jira import PAIR, PassResult, PeopleSoftJiraPass, Progress, _noop
from mlconnector.peoplesoft.qas import QASClient
from mlconnector.state import State, run_lock


@dataclass
class Clients:
    ps: QASClient
    jira: JiraClient

    def close(self) -> None:
        self.ps.close()
        self.jira.close()


def make_redactor(cfg: Config, secrets: SecretStore) -> Redactor:
    from mlconnector.audit import GLOBAL
    from mlconnector.credentials import KNOWN_SECRETS

    r = Redactor()
    for name in KNOWN_SECRETS:
        try:
            value = secrets.find(name)
        except ConfigError:
            continue  # an unreadable keyring only matters for the secrets this command needs (read later)
        user = (cfg.ps.user if cfg.ps else "") if name.startswith("peoplesoft") else cfg.jira.email
        r.add(value, user)
        GLOBAL.add(value, user)
    return r


def peoplesoft_auth(cfg: Config, secrets: SecretStore) -> Any:
    ps = cfg.peoplesoft
    if ps.auth == "basic":
        return (ps.user, secrets.get("peoplesoft.password"))
    from mlconnector.auth import ClientCredentialsAuth

    return ClientCredentialsAuth("PeopleSoft", ps.token_url, ps.client_id, secrets.get("peoplesoft.client_secret"),
                                 ps.scope, ps.http)


def jira_auth(cfg: Config, secrets: SecretStore) -> Any:
    j = cfg.jira
    if j.auth == "basic":
        return (j.email, secrets.get("jira.api_token"))
    from mlconnector.jira.oauth import JiraOAuth, token_file_for

    return JiraOAuth(j, secrets, token_file=token_file_for(cfg.state_file))


def open_clients(cfg: Config, secrets: SecretStore) -> Clients:
    # Secrets are read before any network call, so a missing one is reported first and plainly.
    ps_auth = peoplesoft_auth(cfg, secrets)
    jira_auth_ = jira_auth(cfg, secrets)
    return Clients(QASClient(cfg.peoplesoft, ps_auth), JiraClient(cfg.jira.api_base, jira_auth_, cfg.jira.http))


@contextlib.contextmanager
def session(cfg: Config, *, lock: bool = True) -> Iterator[tuple[State, Clients, Audit, Redactor]]:
    secrets = SecretStore(cfg.instance)
    redactor = make_redactor(cfg, secrets)
    clients = open_clients(cfg, secrets)
    ctx = run_lock(cfg.state_file) if lock else contextlib.nullcontext()
    with ctx:
        state = State.load(cfg.state_file)
        audit = Audit(cfg.audit_file, redactor, PAIR)
        try:
            yield state, clients, audit, redactor
        finally:
            audit.close()
            clients.close()


def ci_readers(cfg: Config, auth: Any, *, refresh_wsdl: bool = False) -> tuple[dict[str, Any], Any]:
    """Readers for the record kinds configured with transport = "ci", and the CI client they share."""
    wanted = {k: rs for k, rs in cfg.peoplesoft.records.items() if rs.enabled and rs.transport == "ci"}
    if not wanted:
        return {}, None
    from mlconnector.peoplesoft.ci import CIClient, CIReader  # zeep is heavy: import it only when used

    client = CIClient(cfg.peoplesoft, auth, refresh=refresh_wsdl)
    return {k: CIReader(client, rs.ci) for k, rs in wanted.items()}, client


def sync_peoplesoft_jira(cfg: Config, *, dry_run: bool = False, since: datetime | None = None,
                         kinds: list[str] | None = None, progress: Progress = _noop,
                         refresh_wsdl: bool = False) -> PassResult:
    # A dry run writes nothing, so it does not need (or wait for) the lock.
    with session(cfg, lock=not dry_run) as (state, clients, audit, _):
        # The CI client shares the QAS client's authenticator (one OAuth2 token for both).
        readers, ci = ci_readers(cfg, clients.ps.http.session.auth, refresh_wsdl=refresh_wsdl)
        try:
            p = PeopleSoftJiraPass(cfg, state, clients.ps, clients.jira, audit, dry_run=dry_run, progress=progress,
                                   readers=readers)
            return p.run(kinds, since)
        finally:
            if ci is not None:
                ci.close()


def _replay(p: Any, state: State, audit: Audit, items: list[dict[str, Any]], steps: Any) -> tuple[Any, int, int]:
    """Run ``steps()`` (-> succeeded, still failing) for a pass object; settle its result and the state."""
    from mlconnector.errors import EXIT_OK, EXIT_RECORDS_FAILED, AuthError, UnreachableError

    try:
        p.prepare()
        ok, bad = steps()
    except (AuthError, UnreachableError) as exc:
        p.result.fatal = audit.redactor(exc.message)
        p.result.exit_code = exc.exit_code
        ok, bad = 0, len(items)
    finally:
        if state.dirty:
            state.save()
    p.result.queue_size = len(state.replay)
    if p.result.fatal is None:
        p.result.exit_code = EXIT_RECORDS_FAILED if bad else EXIT_OK
    return p.result, ok, bad


def replay_items(cfg: Config, ids: list[str] | None) -> tuple[PassResult, int, int]:
    """Retry queued items (all when ids is None); return (result, succeeded, still failing)."""
    if cfg.ps is None and cfg.jde is not None:
        return replay_jde_items(cfg, ids)
    from mlconnector.errors import RemoteError

    with session(cfg) as (state, clients, audit, _):
        items = state.replay if ids is None else [i for i in state.replay if i["id"] in ids]
        readers, ci = ci_readers(cfg, clients.ps.http.session.auth)
        p = PeopleSoftJiraPass(cfg, state, clients.ps, clients.jira, audit, readers=readers)

        def steps() -> tuple[int, int]:
            # As at the start of a pass: a create left pending (say, answered after the timeout) is looked
            # up before anything is created again.
            p.writer.resolve_pending(ISSUE_KINDS)
            try:
                p.refresh_items(list(items))
            except RemoteError as exc:
                # PeopleSoft could not be re-read: retry with the rows as they were queued.
                audit.write("refresh_failed", error=audit.redactor(exc.message))
            return p.replay(list(items))

        try:
            return _replay(p, state, audit, items, steps)
        finally:
            if ci is not None:
                ci.close()


@contextlib.contextmanager
def jde_session(cfg: Config, *, lock: bool = True) -> Iterator[tuple[State, Any, JiraClient, Audit]]:
    from mlconnector.jde.ais import AisClient
    from mlconnector.pairs.jde_jira import PAIR as JDE_PAIR

    if cfg.jde is None:
        raise ConfigError(f"{cfg.path} has no [jde] section, which sync jde-jira needs. Copy it from "
                          f"README.md ('sync jde-jira'); examples/config.toml has the [jira] part.")
    secrets = SecretStore(cfg.instance)
    redactor = make_redactor(cfg, secrets)
    # Secrets are read before any network call, so a missing one is reported first and plainly.
    password = secrets.get("jde.password")
    redactor.add(password, cfg.jde.user)  # also masks the Basic-auth form of the JDE credentials
    from mlconnector.audit import GLOBAL

    GLOBAL.add(password, cfg.jde.user)
    ais = AisClient(cfg.jde, password)
    jira = JiraClient(cfg.jira.api_base, jira_auth(cfg, secrets), cfg.jira.http)
    try:
        with run_lock(cfg.state_file) if lock else contextlib.nullcontext():
            state = State.load(cfg.state_file)
            audit = Audit(cfg.audit_file, redactor, JDE_PAIR)
            try:
                yield state, ais, jira, audit
            finally:
                audit.close()
    finally:
        ais.close()  # logs the AIS session out: tokens are never kept between runs
        jira.close()


def sync_jde_jira(cfg: Config, *, dry_run: bool = False, since: datetime | None = None,
                  progress: Progress = _noop) -> Any:
    """One `sync jde-jira` pass: own wiring, because the PeopleSoft client in session() is not needed."""
    from mlconnector.pairs.jde_jira import JdeJiraPass

    # A dry run writes nothing, so it does not need (or wait for) the lock.
    with jde_session(cfg, lock=not dry_run) as (state, ais, jira, audit):
        return JdeJiraPass(cfg, state, ais, jira, audit, dry_run=dry_run, progress=progress).run(since)


def replay_jde_items(cfg: Config, ids: list[str] | None) -> tuple[Any, int, int]:
    from mlconnector.pairs.jde_jira import JdeJiraPass

    assert cfg.jde is not None
    with jde_session(cfg) as (state, ais, jira, audit):
        items = state.replay if ids is None else [i for i in state.replay if i["id"] in ids]
        p = JdeJiraPass(cfg, state, ais, jira, audit)

        def steps() -> tuple[int, int]:
            p.writer.resolve_pending(list(cfg.jde.sources))
            return p.replay(list(items))

        return _replay(p, state, audit, items, steps)
