"""Multi-hop workflows: JiraClient.transition_to against the simulator's per-issue-type workflows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mlconnector.errors import RemoteError
from mlconnector.http import HttpSettings
from mlconnector.jira.client import JiraClient
from mlconnector.jira.workflow import Edge, WorkflowGraph
from mlconnector.sandbox.jira_sim import JiraSim, Workflow, WorkflowTransition
from mlconnector.sandbox.server import SandboxServer

AUTH = ("sync-bot@example.com", "sandbox-jira-token")
FAST = HttpSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=2, read_timeout=10)
MOVES = r"/issue/[^/]+/transitions$"
PO, WORK_ORDER = "10002", "10005"


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SandboxServer]:
    with SandboxServer(JiraSim(), name="jira") as srv:
        yield srv


@pytest.fixture
def server(shared_server: SandboxServer) -> SandboxServer:
    shared_server.app = JiraSim()
    shared_server.faults.clear()
    shared_server.clear_log()
    return shared_server


def use(server: SandboxServer, **kw: Any) -> JiraSim:
    server.app = sim = JiraSim(**kw)
    return sim


@pytest.fixture
def jira(server: SandboxServer) -> Iterator[JiraClient]:
    c = JiraClient(server.url, AUTH, FAST)
    yield c
    c.close()


def new_issue(jira: JiraClient, n: int, type_id: str = PO) -> str:
    return jira.create_issue({"project": {"key": "PROC"}, "issuetype": {"id": type_id}, "summary": f"Issue {n}",
                              "labels": [f"n-{n}"]})["key"]


def moves(server: SandboxServer) -> int:
    """Transitions Jira performed (204) since the log was cleared."""
    return sum(r.status == 204 for r in server.requests("POST", MOVES))


def path_of(sim: JiraSim, key: str) -> list[str]:
    return [h["items"][0]["toString"] for h in sim.issue(key)["changelog"]]


def test_shortest_path_through_the_workflow_definition(server: SandboxServer, jira: JiraClient) -> None:
    sim: JiraSim = server.app  # type: ignore[assignment]
    key = new_issue(jira, 1)
    assert jira.transition_to(key, "Done") is True
    # To Do -> In Progress -> Done (two hops) rather than To Do -> Pending Approval -> Approved -> Done.
    assert moves(server) == 2
    assert path_of(sim, key) == ["In Progress", "Done"]
    # The workflow was read once for the pass: a second issue of the type needs no more metadata.
    server.clear_log()
    other = new_issue(jira, 2)
    assert jira.transition_to(other, "Approved") is True
    assert path_of(sim, other) == ["Pending Approval", "Approved"]
    assert server.requests("GET", r"/workflow") == []


def test_without_workflow_permission_the_way_is_learned_from_issues_already_there(server: SandboxServer,
                                                                                  jira: JiraClient) -> None:
    sim = use(server, workflow_admin=False)
    key = new_issue(jira, 1)
    pending = new_issue(jira, 2)
    sim.transition_as_user(pending, "Pending Approval")
    assert jira.transition_to(key, "Approved") is True
    assert moves(server) == 2
    assert path_of(sim, pending) == ["Pending Approval"]  # only looked at, never moved
    assert len(server.requests("GET", r"/workflowscheme/project$")) == 1  # refused once, not asked again
    server.clear_log()
    third = new_issue(jira, 3)
    assert jira.transition_to(third, "Approved") is True
    assert server.requests("GET", r"/workflow") == [] and server.requests("POST", r"/search/jql$") == []


def test_without_permission_or_examples_the_path_is_found_by_taking_hops(server: SandboxServer,
                                                                         jira: JiraClient) -> None:
    sim = use(server, workflow_admin=False)
    key = new_issue(jira, 1, WORK_ORDER)
    assert jira.transition_to(key, "Done") is True
    # To Do offers In Progress and Cancelled: the walk never explores into a done status such as Cancelled.
    assert path_of(sim, key) == ["In Progress", "Done"]


def test_no_path_names_the_missing_transition_and_moves_nothing(server: SandboxServer, jira: JiraClient) -> None:
    flow = Workflow("Short", "10000", (WorkflowTransition("41", "Start", ("10000",), "10003"),
                                       WorkflowTransition("11", "Reopen", ("10003",), "10000")))
    use(server, workflows={t: flow for t in ("10001", "10002", "10003", "10004", "10005", "10006")})
    key = new_issue(jira, 1)
    with pytest.raises(RemoteError) as info:
        jira.transition_to(key, "Done")
    msg = info.value.message
    assert "To Do -> Done" in msg and "In Progress" in msg and "status_map" in msg and key in msg
    assert moves(server) == 0


def test_a_transition_with_a_required_screen_field_says_which(server: SandboxServer, jira: JiraClient) -> None:
    sim: JiraSim = server.app  # type: ignore[assignment]
    key = new_issue(jira, 1)
    with pytest.raises(RemoteError) as info:
        jira.transition_to(key, "Blocked")
    msg = info.value.message
    assert "'Block'" in msg and "resolution" in msg and "Resolution is required" in msg
    assert "Procurement Approval" in msg and "status_map" in msg
    assert sim.issue(key)["fields"]["status"] == "In Progress"


def test_a_walk_cut_between_two_hops_continues_from_where_the_issue_is(server: SandboxServer,
                                                                       jira: JiraClient) -> None:
    sim: JiraSim = server.app  # type: ignore[assignment]
    key = new_issue(jira, 1)

    class Killed(BaseException):
        pass

    taken: list[str] = []
    real = jira.do_transition

    def die_after_one(k: str, tid: str) -> None:
        if taken:
            raise Killed
        real(k, tid)
        taken.append(tid)

    jira.do_transition = die_after_one  # type: ignore[method-assign]
    with pytest.raises(Killed):
        jira.transition_to(key, "Approved")
    assert sim.issue(key)["fields"]["status"] == "Pending Approval"
    server.clear_log()
    fresh = JiraClient(server.url, AUTH, FAST)  # the next pass: nothing remembered
    try:
        assert fresh.transition_to(key, "Approved") is True
    finally:
        fresh.close()
    assert moves(server) == 1
    assert path_of(sim, key) == ["Pending Approval", "Approved"]


def test_a_create_may_only_carry_a_transition_out_of_the_start_status(server: SandboxServer,
                                                                      jira: JiraClient) -> None:
    fields = {"project": {"key": "PROC"}, "issuetype": {"id": PO}, "summary": "PO"}
    created, errors = jira.bulk_create([{"fields": fields, "transition": {"id": "21"}},
                                        {"fields": fields, "transition": {"id": "71"}}])
    assert list(created) == [0] and list(errors) == [1]
    assert "not valid" in errors[1].message


def test_graph_planning_prefers_not_to_pass_through_done_statuses() -> None:
    g = WorkflowGraph()
    g.learn("Approved", [Edge("81", "Cancel", "Cancelled", "done"), Edge("41", "Start", "In Progress")])
    g.learn("Cancelled", [Edge("11", "Reopen", "To Do")])
    g.learn("In Progress", [Edge("12", "Back", "To Do")])
    assert [e.id for e in g.path("Approved", "To Do") or []] == ["41", "12"]
    assert g.path("To Do", "Approved") is None
    assert g.next_hop("To Do", "Approved", set()) is None  # To Do itself is unexplored: nothing known yet
