"""The sandbox Jira's account and the settle time its configurations use, shared by every sandbox."""

from __future__ import annotations

JIRA_EMAIL = "sync-bot@example.com"
JIRA_TOKEN = "sandbox-jira-token"


def settle_for(search_lag: float) -> float:
    """The settle time a configuration pointing at a sandbox Jira with this search lag needs (with margin)."""
    return round(max(1.0, search_lag * 1.5 + 0.5), 2)
