"""Tests for the Jira OpenAPI request checker (tests/jira_openapi.py). No server: Requests are built directly."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from jira_openapi import SPEC_ENV, JiraRequestChecker, SpecViolation, load_checker

from mlconnector.sandbox.server import Request


@pytest.fixture(scope="session")
def shared_checker() -> JiraRequestChecker:
    checker = load_checker()  # cached per process: the 2.4 MB spec is parsed once
    if checker is None:
        pytest.skip("Jira OpenAPI spec not found (set MLCONNECTOR_JIRA_SPEC)")
    return checker


@pytest.fixture
def checker(shared_checker: JiraRequestChecker) -> JiraRequestChecker:
    return shared_checker.fresh()  # same compiled spec, zeroed counters


def req(method: str, path: str, query: dict[str, list[str]] | None = None, body: Any = None,
        content_type: str | None = "application/json") -> Request:
    headers = {"authorization": "Basic eDp5"}
    raw = b""
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        if content_type:
            headers["content-type"] = content_type
    return Request(method=method, path=path, query=query or {}, headers=headers, body=raw)


def violation(checker: JiraRequestChecker, request: Request) -> str:
    with pytest.raises(SpecViolation) as info:
        checker(request)
    return str(info.value)


CREATE_BODY = {
    "fields": {
        "project": {"key": "ML"},
        "issuetype": {"id": "10001"},
        "summary": "PO 4711 out of sync",
        "description": {"type": "doc", "version": 1,
                        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "x"}]}]},
        "customfield_10042": None,
        "labels": ["erp"],
    },
    "properties": [{"key": "mlconnector", "value": {"source": "PS", "id": 4711}}],
}


# -- the required cases ---------------------------------------------------------------------------------


def test_valid_create_issue_passes(checker: JiraRequestChecker) -> None:
    checker(req("POST", "/rest/api/3/issue", body=CREATE_BODY))
    assert checker.checked == 1
    assert checker.violations == []
    assert checker.operations_seen == {"createIssue": 1}


def test_create_issue_with_fields_as_string_fails(checker: JiraRequestChecker) -> None:
    msg = violation(checker, req("POST", "/rest/api/3/issue", body={"fields": "summary=x"}))
    assert "createIssue" in msg
    assert "$.fields" in msg and "not of type 'object'" in msg
    assert checker.violations == [msg]
    assert checker.checked == 1


def test_unknown_path_fails(checker: JiraRequestChecker) -> None:
    msg = violation(checker, req("GET", "/rest/api/3/issue/ML-1/frobnicate"))
    assert "no path template" in msg


def test_search_jql_max_results_as_string_fails(checker: JiraRequestChecker) -> None:
    checker(req("POST", "/rest/api/3/search/jql",
                body={"jql": "project = ML", "maxResults": 50, "fields": ["summary", "status"],
                      "nextPageToken": "abc", "expand": "changelog,names"}))
    msg = violation(checker, req("POST", "/rest/api/3/search/jql", body={"jql": "x", "maxResults": "50"}))
    assert "$.maxResults" in msg and "not of type 'integer'" in msg


def test_valid_transition_post_passes(checker: JiraRequestChecker) -> None:
    checker(req("POST", "/rest/api/3/issue/ML-1/transitions",
                body={"transition": {"id": "31"}, "fields": {"resolution": {"name": "Done"}},
                      "update": {"comment": [{"add": {"body": {"type": "doc", "version": 1, "content": []}}}]}}))
    checker(req("GET", "/rest/api/3/issue/ML-1/transitions", {"expand": ["transitions.fields"]}))
    assert checker.violations == []
    assert checker.operations_seen == {"doTransition": 1, "getTransitions": 1}


def test_wrong_query_parameter_type_fails(checker: JiraRequestChecker) -> None:
    checker(req("GET", "/rest/api/3/issue/ML-1/comment", {"startAt": ["0"], "maxResults": ["100"]}))
    msg = violation(checker, req("GET", "/rest/api/3/issue/ML-1/comment", {"startAt": ["abc"]}))
    assert "getComments" in msg and "startAt" in msg and "'abc' is not of type 'integer'" in msg


# -- further behaviour ----------------------------------------------------------------------------------


def test_non_api_paths_are_ignored_and_not_counted(checker: JiraRequestChecker) -> None:
    checker(req("POST", "/oauth/token", body={"grant_type": "client_credentials"}))
    checker(req("GET", "/rest/atlassian-connect/1/whatever"))
    assert checker.checked == 0 and checker.violations == []


def test_method_not_in_spec_fails(checker: JiraRequestChecker) -> None:
    msg = violation(checker, req("DELETE", "/rest/api/3/field"))
    assert "no DELETE" in msg and "GET" in msg


def test_literal_segments_win_over_templates(checker: JiraRequestChecker) -> None:
    assert checker.operation_for("POST", "/rest/api/3/issue/bulk") == "createIssues"
    # like Jira's router: the literal template wins, and it has no GET (not getIssue with key "bulk")
    assert checker.operation_for("GET", "/rest/api/3/issue/bulk") is None
    assert "no GET there (allowed: POST)" in violation(checker, req("GET", "/rest/api/3/issue/bulk"))
    assert checker.operation_for("GET", "/rest/api/3/issue/createmeta/ML/issuetypes") == \
        "getCreateIssueMetaIssueTypes"
    assert checker.operation_for("GET", "/rest/api/3/issue/createmeta/ML/issuetypes/10001") == \
        "getCreateIssueMetaIssueTypeId"
    assert checker.operation_for("GET", "/rest/api/3/issue/ML%2D1") == "getIssue"


@pytest.mark.parametrize(("method", "path", "operation_id"), [
    ("POST", "/rest/api/3/issue", "createIssue"),
    ("POST", "/rest/api/3/issue/bulk", "createIssues"),
    ("PUT", "/rest/api/3/issue/ML-1", "editIssue"),
    ("GET", "/rest/api/3/issue/ML-1", "getIssue"),
    ("GET", "/rest/api/3/issue/ML-1/transitions", "getTransitions"),
    ("POST", "/rest/api/3/issue/ML-1/transitions", "doTransition"),
    ("GET", "/rest/api/3/issue/ML-1/comment", "getComments"),
    ("POST", "/rest/api/3/issue/ML-1/comment", "addComment"),
    ("PUT", "/rest/api/3/issue/ML-1/properties/mlconnector.sync", "setIssueProperty"),
    ("POST", "/rest/api/3/search/jql", "searchAndReconsileIssuesUsingJqlPost"),
    ("GET", "/rest/api/3/search/jql", "searchAndReconsileIssuesUsingJql"),
    ("GET", "/rest/api/3/field", "getFields"),
    ("GET", "/rest/api/3/myself", "getCurrentUser"),
    ("GET", "/rest/api/3/project/ML", "getProject"),
    ("GET", "/rest/api/3/project/ML/statuses", "getAllStatuses"),
    ("GET", "/rest/api/3/issue/ML-1/changelog", "getChangeLogs"),
])
def test_client_operations_are_routed(checker: JiraRequestChecker, method: str, path: str,
                                      operation_id: str) -> None:
    assert checker.operation_for(method, path) == operation_id


def test_valid_requests_for_client_operations(checker: JiraRequestChecker) -> None:
    valid = [
        req("POST", "/rest/api/3/issue/bulk", body={"issueUpdates": [CREATE_BODY, CREATE_BODY]}),
        req("PUT", "/rest/api/3/issue/ML-1", {"notifyUsers": ["false"]},
            body={"fields": {"summary": "y"}, "update": {"labels": [{"add": "sync"}, {"remove": "old"}]}}),
        req("GET", "/rest/api/3/issue/ML-1", {"fields": ["summary,status"], "expand": ["changelog"]}),
        req("GET", "/rest/api/3/issue/ML-1", {"fields": ["summary", "status"], "properties": ["p1"]}),
        req("POST", "/rest/api/3/issue/ML-1/comment",
            body={"body": {"type": "doc", "version": 1, "content": []},
                  "visibility": {"type": "role", "value": "Developers", "identifier": None}}),
        req("PUT", "/rest/api/3/issue/ML-1/properties/mlconnector.sync", body={"hash": "abc", "n": 3}),
        req("PUT", "/rest/api/3/issue/ML-1/properties/mlconnector.sync", body="plain string"),
        req("GET", "/rest/api/3/search/jql",
            {"jql": ["project = ML"], "maxResults": ["100"], "fields": ["*all"], "nextPageToken": ["t"]}),
        req("GET", "/rest/api/3/field"),
        req("GET", "/rest/api/3/myself"),
        req("GET", "/rest/api/3/project/ML", {"expand": ["issueTypes"]}),
        req("GET", "/rest/api/3/project/ML/statuses"),
        req("GET", "/rest/api/3/issue/createmeta/ML/issuetypes", {"startAt": ["0"], "maxResults": ["200"]}),
        req("GET", "/rest/api/3/issue/createmeta/ML/issuetypes/10001", {"maxResults": ["50"]}),
        req("GET", "/rest/api/3/issue/ML-1/changelog", {"startAt": ["100"], "maxResults": ["100"]}),
    ]
    for request in valid:
        checker(request)
    assert checker.violations == []
    assert checker.checked == len(valid)
    assert checker.deprecated_calls == []


@pytest.mark.parametrize(("request_", "expected"), [
    (req("POST", "/rest/api/3/search/jql", body={"jql": "x", "startAt": 0}), "'startAt' was unexpected"),
    (req("POST", "/rest/api/3/search/jql", body={"jql": "x", "expand": ["names"]}),
     "$.expand: ['names'] is not of type 'string'"),
    (req("POST", "/rest/api/3/search/jql", body={"jql": "x", "maxResults": 2**31}), "is not a 'int32'"),
    (req("POST", "/rest/api/3/issue/ML-1/transitions", body={"transition": {"id": "31", "name": "Done"}}),
     "$.transition.name: is readOnly"),
    (req("POST", "/rest/api/3/issue/ML-1/transitions", body={"transition": {"id": 31}}),
     "$.transition.id: 31 is not of type 'string'"),
    (req("POST", "/rest/api/3/issue/ML-1/transitions"), "request body is required"),
    (req("PUT", "/rest/api/3/issue/ML-1", body={"update": {"labels": [{"append": "x"}]}}),
     "'append' was unexpected"),
    (req("PUT", "/rest/api/3/issue/ML-1", {"notifyUsers": ["False"]}, body={"fields": {}}),
     "lowercase 'true'/'false'"),
    (req("POST", "/rest/api/3/issue/ML-1/comment", body={"body": "x", "visibility": {"type": "user"}}),
     "'user' is not one of ['group', 'role']"),
    (req("GET", "/rest/api/3/issue/ML-1/comment", {"orderBy": ["updated"]}), "is not one of"),
    (req("GET", "/rest/api/3/issue/createmeta/ML/issuetypes", {"maxResults": ["500"]}),
     "500 is greater than the maximum of 200"),
    (req("GET", "/rest/api/3/search/jql", {"jql": ["x"], "startAt": ["0"]}), "['startAt'] not defined"),
    (req("GET", "/rest/api/3/myself", {"expand": ["a", "b"]}), "given 2 times"),
    (req("GET", "/rest/api/3/myself", body={"x": 1}), "takes no request body"),
    (req("POST", "/rest/api/3/issue", body=b"{not json"), "not valid JSON"),
    (req("POST", "/rest/api/3/issue", body=CREATE_BODY, content_type=None), "without Content-Type"),
    (req("POST", "/rest/api/3/issue", body=CREATE_BODY, content_type="text/xml"), "not accepted"),
])
def test_violations(checker: JiraRequestChecker, request_: Request, expected: str) -> None:
    msg = violation(checker, request_)
    assert expected in msg, msg
    assert checker.violations == [msg]


def test_json_content_type_with_charset_is_accepted(checker: JiraRequestChecker) -> None:
    checker(req("POST", "/rest/api/3/issue", body=CREATE_BODY, content_type="application/json; charset=UTF-8"))


def test_lenient_options(shared_checker: JiraRequestChecker) -> None:
    lenient = JiraRequestChecker(shared_checker.spec, allow_unknown_query=True, allow_read_only=True)
    lenient(req("GET", "/rest/api/3/search/jql", {"jql": ["x"], "startAt": ["0"]}))
    lenient(req("POST", "/rest/api/3/issue/ML-1/transitions", body={"transition": {"id": "31", "name": "x"}}))
    assert lenient.violations == []


def test_deprecated_operations_are_recorded(checker: JiraRequestChecker) -> None:
    checker(req("GET", "/rest/api/3/search", {"jql": ["project = ML"]}))
    assert checker.deprecated_calls == ["GET /rest/api/3/search (searchForIssuesUsingJql)"]


def test_missing_spec_gives_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(SPEC_ENV, str(tmp_path / "absent.json"))
    assert load_checker() is None


def test_loaded_once_and_fast_per_request(shared_checker: JiraRequestChecker) -> None:
    assert load_checker() is shared_checker
    checker = shared_checker.fresh()
    requests = [
        req("POST", "/rest/api/3/issue", body=CREATE_BODY),
        req("GET", "/rest/api/3/issue/ML-1", {"fields": ["summary"]}),
        req("POST", "/rest/api/3/search/jql", body={"jql": "project = ML", "maxResults": 100}),
    ]
    for request in requests:  # compile outside the timed loop
        checker(request)
    start = time.perf_counter()
    for _ in range(100):
        for request in requests:
            checker(request)
    per_request = (time.perf_counter() - start) / 300
    assert per_request < 0.005, f"{per_request * 1000:.2f} ms per request"
