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
from mlconnector.config import Config
from mlconnector.credentials import SecretStore
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
    r = Redactor()
    from mlconnector.credentials import KNOWN_SECRETS

    for name in KNOWN_SECRETS:
        value = secrets.find(name)
        user = (cfg.ps.user if cfg.ps else "") if name.startswith("peoplesoft") else cfg.jira.email
        r.add(value, user)
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
    from mlconnector.jira.oauth import JiraOAuth

    return JiraOAuth(j, secrets)


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


def sync_peoplesoft_jira(cfg: Config, *, dry_run: bool = False, since: datetime | None = None,
                         kinds: list[str] | None = None, progress: Progress = _noop) -> PassResult:
    # A dry run writes nothing, so it does not need (or wait for) the lock.
    with session(cfg, lock=not dry_run) as (state, clients, audit, _):
        p = PeopleSoftJiraPass(cfg, state, clients.ps, clients.jira, audit, dry_run=dry_run, progress=progress)
        return p.run(kinds, since)


def replay_items(cfg: Config, ids: list[str] | None) -> tuple[PassResult, int, int]:
    """Retry queued items (all when ids is None); return (result, succeeded, still failing)."""
    with session(cfg) as (state, clients, audit, _):
        items = state.replay if ids is None else [i for i in state.replay if i["id"] in ids]
        p = PeopleSoftJiraPass(cfg, state, clients.ps, clients.jira, audit)
        from mlconnector.errors import EXIT_OK, EXIT_RECORDS_FAILED, AuthError, UnreachableError

        try:
            p.prepare()
            ok, bad = p.replay(list(items))
        except (AuthError, UnreachableError) as exc:
            p.result.fatal = exc.message
            p.result.exit_code = exc.exit_code
            ok, bad = 0, len(items)
        finally:
            if state.dirty:
                state.save()
        p.result.queue_size = len(state.replay)
        if p.result.fatal is None:
            p.result.exit_code = EXIT_RECORDS_FAILED if bad else EXIT_OK
        return p.result, ok, bad
