"""Issue 14, finding 4: a rotated Jira refresh token survives on hosts that seed it from the
environment, with or without a keyring."""

from __future__ import annotations

import os
import stat
import threading
from typing import Any

import keyring
import keyring.backends.fail
import pytest
import requests
from test_oauth import fake_keyring, jira_oauth  # noqa: F401 - shared fixtures

from mlconnector.errors import EXIT_OK
from mlconnector.jira.oauth import consent, token_file_for
from mlconnector.runner import sync_peoplesoft_jira


def _consent(cfg: Any, store: Any) -> str:
    def browser(text: str) -> None:
        url = text.splitlines()[-1]
        threading.Thread(target=requests.get, args=(url,), kwargs={"timeout": 10}, daemon=True).start()

    consent(cfg.jira, store, open_browser=False, timeout=20, echo=browser)
    token = store.find_in_keyring("jira.refresh_token")
    assert token
    # What the README told headless admins: put the token in the job's environment, nothing stored.
    store.delete("jira.refresh_token")
    token_file_for(cfg.state_file).unlink(missing_ok=True)
    return token


@pytest.mark.parametrize("host", ["headless, no keyring", "keyring, token seeded in the environment"])
def test_rotated_refresh_token_outlives_a_stale_environment_value(jira_oauth: Any, host: str,  # noqa: F811
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    env, idp, cfg, store = jira_oauth
    seed = _consent(cfg, store)
    monkeypatch.setenv("MLCONNECTOR_JIRA_REFRESH_TOKEN", seed)
    if host.startswith("headless"):
        monkeypatch.setenv("MLCONNECTOR_JIRA_CLIENT_SECRET", "jira-app-secret")
        keyring.set_keyring(keyring.backends.fail.Keyring())  # the fixture restores the previous backend
    first = sync_peoplesoft_jira(cfg)
    assert first.exit_code == EXIT_OK, first.fatal
    assert seed in idp.used_refresh_tokens  # rotated at Atlassian: the environment's value is spent now
    second = sync_peoplesoft_jira(cfg)  # a later cron run, same environment
    assert second.exit_code == EXIT_OK, second.fatal
    third = sync_peoplesoft_jira(cfg)
    assert third.exit_code == EXIT_OK, third.fatal
    path = token_file_for(cfg.state_file)
    text = path.read_text(encoding="utf-8")
    assert seed not in text  # only a digest of the superseded environment value
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # An admin who puts a *new* token in the environment (after consenting elsewhere) is obeyed.
    fresh = _consent(cfg, store) if not host.startswith("headless") else None
    if fresh:
        path.write_text(text, encoding="utf-8")  # the old record is still there
        monkeypatch.setenv("MLCONNECTOR_JIRA_REFRESH_TOKEN", fresh)
        assert sync_peoplesoft_jira(cfg).exit_code == EXIT_OK
        assert fresh in idp.used_refresh_tokens
