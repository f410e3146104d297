"""The sandbox Jira's account and the settle time its configurations use, shared by every sandbox."""

from __future__ import annotations

JIRA_EMAIL = "sync-bot@example.com"
JIRA_TOKEN = "sandbox-jira-token"


BULK_MAX = 50  # issues per bulk create (Jira's limit, and the connector's chunk)


def settle_for(search_lag: float, create_cost: float = 0.0) -> float:
    """The settle time a configuration pointing at a sandbox Jira with this search lag needs (with margin).

    A create may take effect until Jira has finished the request that carries it, not only when it was
    sent: one bulk create of ``BULK_MAX`` issues at ``create_cost`` each is added to the lag."""
    return round(max(1.0, search_lag * 1.5 + 0.5 + BULK_MAX * create_cost), 2)
