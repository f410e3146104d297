"""Jira wiring shared by every pair that writes issues: the authenticator and the client from the config."""

from __future__ import annotations

from typing import Any

from mlconnector.config import Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import RemoteError
from mlconnector.jira.client import JiraClient, error_text


def jira_auth(cfg: Config, secrets: SecretStore) -> Any:
    """Basic (email + API token) or OAuth 2.0 (3LO); reads the secret now, so a missing one is reported first."""
    j = cfg.jira
    if j.auth == "basic":
        return (j.email, secrets.get("jira.api_token"))
    from mlconnector.jira.oauth import JiraOAuth, token_file_for

    return JiraOAuth(j, secrets, token_file=token_file_for(cfg.state_file))


def open_jira(cfg: Config, secrets: SecretStore) -> JiraClient:
    return JiraClient(cfg.jira.api_base, jira_auth(cfg, secrets), cfg.jira.http)


def describe(exc: Exception) -> str:
    """A failure's message for a pass writing to Jira: Jira's answers are read for their own error texts."""
    return error_text(exc) if isinstance(exc, RemoteError) and exc.system == "Jira" else str(exc)
