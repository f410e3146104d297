"""OAuth: PeopleSoft client-credentials tokens, and Jira 3LO consent with rotating refresh tokens."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
import requests
from conftest import SMALL, Env
from fake_keyring import ENV as KEYRING_ENV
from fake_keyring import FileKeyring

from mlconnector import config as config_mod
from mlconnector.credentials import SecretStore
from mlconnector.errors import EXIT_OK, EXIT_UNREACHABLE, ConnectorError
from mlconnector.jira.oauth import consent
from mlconnector.runner import sync_peoplesoft_jira
from mlconnector.sandbox.oauth_sim import OAuthSim
from mlconnector.sandbox.server import SandboxServer

ISSUE_KINDS = ("requisitions", "purchase_orders", "vouchers")


@pytest.fixture(autouse=True)
def fake_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(KEYRING_ENV, str(tmp_path / "keyring.json"))
    previous = keyring.get_keyring()
    keyring.set_keyring(FileKeyring())
    yield
    keyring.set_keyring(previous)


def test_peoplesoft_oauth2_client_credentials_token_is_fetched_once_and_used(
        sandbox_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = sandbox_env
    idp = OAuthSim("ml-connector", "ps-client-secret", accepted=env.box.ps.bearer_tokens)
    with SandboxServer(idp, "idp") as server:
        text = env.config.read_text().replace(
            'user = "ML_CONNECTOR"',
            f'auth = "oauth2"\ntoken_url = "{server.url}/oauth2/v1/token"\nclient_id = "ml-connector"')
        env.config.write_text(text)
        monkeypatch.delenv("MLCONNECTOR_PEOPLESOFT_PASSWORD")
        monkeypatch.setenv("MLCONNECTOR_PEOPLESOFT_CLIENT_SECRET", "ps-client-secret")
        result = sync_peoplesoft_jira(config_mod.load(env.config))
        assert result.exit_code == EXIT_OK, result.fatal
        assert sum(result.counts[k].created for k in ISSUE_KINDS) == sum(SMALL[k] for k in ISSUE_KINDS)
        # One token for the whole pass: it is cached until shortly before it expires.
        assert [r["grant_type"] for r in idp.token_requests] == ["client_credentials"]

        cron_env = {k: v for k, v in env.env.items() if k != "MLCONNECTOR_PEOPLESOFT_PASSWORD"}
        bad = env.cli("sync", "peoplesoft-jira", "--json",
                      env={**cron_env, "MLCONNECTOR_PEOPLESOFT_CLIENT_SECRET": "wrong", KEYRING_ENV: "/nonexistent"})
        assert bad.returncode == EXIT_UNREACHABLE
        assert "client credentials" in bad.stdout and "peoplesoft.client_secret" in bad.stdout
        assert "Traceback" not in bad.stderr


@pytest.fixture
def jira_oauth(sandbox_env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Env, OAuthSim, Any, SecretStore]]:
    """The sandbox configured for Jira OAuth 2.0 (3LO) against a loopback authorization server."""
    env = sandbox_env
    idp = OAuthSim("jira-app", "jira-app-secret", accepted=env.box.jira.bearer_tokens)
    with SandboxServer(idp, "atlassian-auth") as server:
        text = env.config.read_text().replace(
            'email = "sync-bot@example.com"',
            f'auth = "oauth2"\nclient_id = "jira-app"\napi_base = "{env.box.jira_server.url}"\n'
            f'auth_url = "{server.url}/authorize"\ntoken_url = "{server.url}/oauth/token"\nredirect_port = 0')
        env.config.write_text(text)
        monkeypatch.delenv("MLCONNECTOR_JIRA_API_TOKEN")
        cfg = config_mod.load(env.config)
        store = SecretStore(cfg.instance)
        store.set("jira.client_secret", "jira-app-secret")
        yield env, idp, cfg, store


def test_jira_consent_then_rotating_refresh_tokens_survive_across_passes(jira_oauth: Any) -> None:
    env, idp, cfg, store = jira_oauth
    with pytest.raises(ConnectorError, match="jira.refresh_token"):
        sync_peoplesoft_jira(cfg)  # no consent yet: the error names the missing secret

    def browser(text: str) -> None:
        url = text.splitlines()[-1]
        # What the user's browser does: open the consent page, follow the redirect to 127.0.0.1.
        threading.Thread(target=requests.get, args=(url,), kwargs={"timeout": 10}, daemon=True).start()

    scopes = consent(cfg.jira, store, open_browser=False, timeout=20, echo=browser)
    assert "offline_access" in scopes
    first_refresh = store.find("jira.refresh_token")
    assert first_refresh and first_refresh.startswith("rt-")

    result = sync_peoplesoft_jira(cfg)
    assert result.exit_code == EXIT_OK, result.fatal
    assert len(env.box.jira.all_issues()) == sum(SMALL[k] for k in ISSUE_KINDS)
    second_refresh = store.find("jira.refresh_token")
    # The refresh rotated the token and the new one reached the keyring at once.
    assert second_refresh != first_refresh and first_refresh in idp.used_refresh_tokens

    again = sync_peoplesoft_jira(cfg)  # works only if the rotated token was kept
    assert again.exit_code == EXIT_OK, again.fatal
    assert store.find("jira.refresh_token") not in (first_refresh, second_refresh)
    assert [r["grant_type"] for r in idp.token_requests] == ["authorization_code", "refresh_token",
                                                              "refresh_token"]


def test_jira_refresh_token_rejected_says_to_consent_again(jira_oauth: Any) -> None:
    env, _idp, cfg, store = jira_oauth
    store.set("jira.refresh_token", "rt-revoked")
    result = sync_peoplesoft_jira(cfg)
    assert result.exit_code == EXIT_UNREACHABLE
    assert "mlconnector auth jira" in (result.fatal or "")
    assert env.box.jira.all_issues() == []
