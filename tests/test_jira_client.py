"""JiraClient against the Jira simulator (and a fake looping server for the search guard)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from mlconnector.errors import ConfigError, RemoteError
from mlconnector.http import HttpSettings
from mlconnector.jira.client import JiraClient, resolve_field
from mlconnector.sandbox.jira_sim import JiraSim
from mlconnector.sandbox.server import SandboxServer

AUTH = ("sync-bot@example.com", "sandbox-jira-token")
FAST = HttpSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=2, read_timeout=10)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SandboxServer]:
    with SandboxServer(JiraSim(), name="jira") as srv:
        yield srv


@pytest.fixture
def sim(shared_server: SandboxServer) -> JiraSim:
    s = JiraSim()
    shared_server.app = s
    shared_server.faults.clear()
    shared_server.clear_log()
    return s


@pytest.fixture
def server(shared_server: SandboxServer, sim: JiraSim) -> SandboxServer:
    return shared_server


@pytest.fixture
def jira(server: SandboxServer) -> Iterator[JiraClient]:
    c = JiraClient(server.url, AUTH, FAST)
    yield c
    c.close()


def fields(n: int, **extra: Any) -> dict[str, Any]:
    return {"project": {"key": "PROC"}, "issuetype": {"id": "10002"}, "summary": f"PO {n}",
            "customfield_10050": f"PSFT-PO-{n}", "labels": ["erp-sync", f"psft-po-{n}"], **extra}


def test_resolve_field_by_id_and_by_name(jira: JiraClient) -> None:
    all_fields = jira.fields()
    assert resolve_field(all_fields, "customfield_10051", "jira.fields.amount").name == "Amount"
    assert resolve_field(all_fields, "amount", "jira.fields.amount").id == "customfield_10051"
    assert resolve_field(all_fields, "ERP KEY", "jira.key_field").id == "customfield_10050"
    assert resolve_field(all_fields, "duedate", "x").id == "duedate"


def test_resolve_field_ambiguous_name_lists_both_ids(server: SandboxServer) -> None:
    server.app = JiraSim(duplicate_field_name="Amount")
    c = JiraClient(server.url, AUTH, FAST)
    with pytest.raises(ConfigError) as info:
        resolve_field(c.fields(), "Amount", "jira.fields.amount")
    msg = info.value.message
    assert "customfield_10051" in msg and "customfield_10059" in msg and "jira.fields.amount" in msg


def test_resolve_field_unknown_lists_custom_fields(jira: JiraClient) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_field(jira.fields(), "Amout", "jira.fields.amount")
    msg = info.value.message
    assert "'Amout'" in msg and "jira.fields.amount" in msg and "ERP Key" in msg


def test_search_pages_through_every_issue_exactly_once(jira: JiraClient, server: SandboxServer) -> None:
    total = 230
    for start in range(0, total, 50):
        created, errors = jira.bulk_create([{"fields": fields(n)} for n in range(start, min(total, start + 50))])
        assert not errors and len(created) == min(50, total - start)
    server.clear_log()
    keys = [i["key"] for i in jira.search("project = PROC", ["summary"], page_size=100)]
    assert len(keys) == total and len(set(keys)) == total
    assert len(server.requests("POST", "/search/jql")) == 3


def test_search_of_nothing_makes_one_request(jira: JiraClient, server: SandboxServer) -> None:
    assert list(jira.search("labels = nothing-here", ["summary"])) == []
    assert len(server.requests("POST", "/search/jql")) == 1


def test_search_stops_when_the_server_repeats_a_page_token() -> None:
    base = "http://127.0.0.1:9"
    calls: list[dict[str, Any]] = []

    def looping(request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        calls.append(body)
        n = len(calls)
        page = {"issues": [{"id": str(n), "key": f"PROC-{n}"}], "nextPageToken": "same-token", "isLast": False}
        return 200, {"Content-Type": "application/json"}, json.dumps(page)

    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, f"{base}/rest/api/3/search/jql", callback=looping)
        c = JiraClient(base, AUTH, FAST)
        got = list(c.search("project = PROC", ["summary"]))
    assert 1 <= len(calls) <= 3
    assert len(got) == len(calls)
    assert "nextPageToken" not in calls[0] and calls[1]["nextPageToken"] == "same-token"


def test_search_stops_on_a_token_cycle() -> None:
    base = "http://127.0.0.1:9"
    calls: list[dict[str, Any]] = []

    def cycling(request: Any) -> tuple[int, dict[str, str], str]:
        calls.append(json.loads(request.body))
        token = "A" if len(calls) % 2 else "B"
        return 200, {}, json.dumps({"issues": [{"id": "1", "key": "PROC-1"}], "nextPageToken": token})

    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, f"{base}/rest/api/3/search/jql", callback=cycling)
        list(JiraClient(base, AUTH, FAST).search("project = PROC", ["summary"]))
    assert len(calls) <= 4


def test_transition_to_current_status_is_a_no_op(jira: JiraClient, server: SandboxServer, sim: JiraSim) -> None:
    key = jira.create_issue(fields(1))["key"]
    server.clear_log()
    assert jira.transition_to(key, "to do") is False
    assert server.requests("POST") == []
    assert sim.issue(key)["fields"]["status"] == "To Do"


def test_transition_to_reachable_status(jira: JiraClient, server: SandboxServer, sim: JiraSim) -> None:
    key = jira.create_issue(fields(1))["key"]
    assert jira.transition_to(key, "Approved") is True
    assert sim.issue(key)["fields"]["status"] == "Approved"
    server.clear_log()
    assert jira.transition_to(key, "APPROVED") is False
    assert server.requests("POST") == []


def test_transition_to_unknown_status_names_it(jira: JiraClient, server: SandboxServer) -> None:
    key = jira.create_issue(fields(1))["key"]
    server.clear_log()
    with pytest.raises(RemoteError) as info:
        jira.transition_to(key, "Awaiting Goods")
    msg = info.value.message
    assert "'Awaiting Goods'" in msg and key in msg and "status_map" in msg
    assert "pending approval" in msg.lower()  # what Jira offers from the current status is listed
    assert server.requests("POST") == []


def test_bulk_create_maps_results_and_errors_to_request_indexes(jira: JiraClient, sim: JiraSim) -> None:
    items = [fields(0), fields(1, summary="bad\nsummary"), fields(2), fields(3, duedate="31/12/2024"), fields(4)]
    created, errors = jira.bulk_create([{"fields": f} for f in items])
    assert sorted(created) == [0, 2, 4]
    assert sorted(errors) == [1, 3]
    assert "summary" in errors[1].message and "newline" in errors[1].message
    assert "duedate" in errors[3].message
    assert errors[1].status == 400 and not errors[1].retryable
    for idx, issue in created.items():
        assert sim.issue(issue["key"])["fields"]["summary"] == f"PO {idx}"


def test_bulk_create_all_invalid_returns_only_errors(jira: JiraClient) -> None:
    created, errors = jira.bulk_create([{"fields": fields(0, summary="")}, {"fields": fields(1, summary="x" * 300)}])
    assert created == {}
    assert sorted(errors) == [0, 1]
