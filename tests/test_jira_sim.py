"""Behaviour of the Jira Cloud simulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from mlconnector.sandbox.jira_sim import JiraSim
from mlconnector.sandbox.server import Request, SandboxServer

AUTH = ("sync-bot@example.com", "sandbox-jira-token")


def adf(text: str) -> dict[str, Any]:
    para = {"type": "paragraph", "content": [{"type": "text", "text": text}]}
    return {"type": "doc", "version": 1, "content": [para]}


def po_fields(n: int, **extra: Any) -> dict[str, Any]:
    return {"project": {"key": "PROC"}, "issuetype": {"name": "Purchase Order"}, "summary": f"PO {n}",
            "customfield_10050": f"PSFT-PO-{n}", "labels": ["erp-sync", f"psft-po-{n}"], **extra}


class Client:
    def __init__(self, base: str, auth: Any = AUTH) -> None:
        self.base, self.s = base + "/rest/api/3", requests.Session()
        self.s.auth = auth

    def __getattr__(self, verb: str) -> Any:
        return lambda path, **kw: self.s.request(verb.upper(), self.base + path, timeout=5, **kw)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    # One server for the module: stopping one costs SandboxServer's 0.5 s shutdown poll.
    with SandboxServer(JiraSim(), name="jira") as srv:
        yield srv


@pytest.fixture
def host(server: SandboxServer) -> Iterator[Any]:
    """Swap a fresh simulator into the shared server for one test."""
    def mount(app: JiraSim) -> Client:
        server.app = app
        return Client(server.url)
    yield mount
    server.app = JiraSim()


@pytest.fixture
def sim() -> JiraSim:
    return JiraSim(bearer_tokens={"oauth-access-1"})


@pytest.fixture
def api(sim: JiraSim, host: Any) -> Client:
    return host(sim)


def create(api: Client, n: int, **extra: Any) -> str:
    r = api.post("/issue", json={"fields": po_fields(n, **extra)})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def bulk(api: Client, *numbers: int) -> None:
    r = api.post("/issue/bulk", json={"issueUpdates": [{"fields": po_fields(n)} for n in numbers]})
    assert r.status_code == 201 and not r.json()["errors"], r.text


def search(api: Client, jql: str, **body: Any) -> requests.Response:
    return api.post("/search/jql", json={"jql": jql, **body})


def test_auth_is_enforced(sim: JiraSim, api: Client) -> None:
    base = api.base.removesuffix("/rest/api/3")
    for auth in (None, ("sync-bot@example.com", "wrong")):
        r = Client(base, auth).get("/myself")
        assert r.status_code == 401
        assert r.json()["errorMessages"] and r.json()["errors"] == {}
    bearer = requests.get(api.base + "/myself", headers={"Authorization": "Bearer oauth-access-1"}, timeout=5)
    assert bearer.status_code == 200
    me = api.get("/myself").json()
    assert me["emailAddress"] == "sync-bot@example.com" and me["timeZone"] and me["accountId"]
    assert sim.calls["GET /rest/api/3/myself"] == 4


def test_metadata(api: Client) -> None:
    fields = {f["id"]: f for f in api.get("/field").json()}
    assert fields["customfield_10050"]["name"] == "ERP Key"
    assert fields["customfield_10051"]["schema"]["type"] == "number"
    assert fields["customfield_10055"]["schema"]["custom"].endswith(":textarea")
    assert "cf[10050]" in fields["customfield_10050"]["clauseNames"]
    project = api.get("/project/PROC").json()
    assert {t["name"] for t in project["issueTypes"]} >= {"Purchase Order", "Vendor Invoice", "Work Order"}
    assert api.get("/project/NOPE").status_code == 404
    assert api.get("/issue/createmeta/PROC/issuetypes", params={"maxResults": 201}).status_code == 400
    types = api.get("/issue/createmeta/PROC/issuetypes", params={"maxResults": 2}).json()
    assert len(types["issueTypes"]) == 2 and types["total"] == 6
    meta = {f["fieldId"]: f for f in api.get("/issue/createmeta/PROC/issuetypes/10002").json()["fields"]}
    assert meta["summary"]["required"] and "Medium" in {p["name"] for p in meta["priority"]["allowedValues"]}
    statuses = api.get("/project/PROC/statuses").json()
    assert "Blocked" in {s["name"] for s in statuses[0]["statuses"]}


def test_duplicate_field_name(host: Any) -> None:
    api = host(JiraSim(duplicate_field_name="ERP Key"))
    names = [f["name"] for f in api.get("/field").json()]
    assert names.count("ERP Key") == 2
    api.post("/issue", json={"fields": po_fields(1)})
    api.post("/issue", json={"fields": po_fields(2, customfield_10059="PSFT-PO-1")})
    # a clause name shared by two fields matches either of them
    hits = search(api, '"ERP Key" = "PSFT-PO-1" ORDER BY key ASC').json()["issues"]
    assert [i["key"] for i in hits] == ["PROC-1", "PROC-2"]


def test_create_get_edit(sim: JiraSim, api: Client) -> None:
    key = create(api, 1, description=adf("Synced from PeopleSoft."), customfield_10051=1250.75,
                 customfield_10058="2026-01-15")
    assert key == "PROC-1"
    issue = api.get(f"/issue/{key}").json()
    assert issue["fields"]["status"]["name"] == "To Do"
    assert issue["fields"]["priority"]["name"] == "Medium"
    assert issue["fields"]["customfield_10051"] == 1250.75
    before = issue["fields"]["updated"]
    only = api.get(f"/issue/{key}", params={"fields": "summary,labels"}).json()["fields"]
    assert set(only) == {"summary", "labels"}
    r = api.put(f"/issue/{key}", json={"fields": {"summary": "PO 1 - approved", "customfield_10051": 1300},
                                       "update": {"labels": [{"add": "approved"}, {"remove": "erp-sync"}]}})
    assert r.status_code == 204, r.text
    after = sim.issue(key)
    assert after["fields"]["summary"] == "PO 1 - approved"
    assert after["fields"]["labels"] == ["psft-po-1", "approved"]
    assert after["fields"]["updated"] != before
    changed = {i["fieldId"] for h in after["changelog"] for i in h["items"]}
    assert changed == {"summary", "customfield_10051", "labels"}
    assert sim.writes == 2 and sim.calls["PUT /rest/api/3/issue/{issueIdOrKey}"] == 1
    assert api.get("/issue/PROC-99").status_code == 404


@pytest.mark.parametrize(("fields", "field_id", "text"), [
    ({"description": "plain string"}, "description", "Atlassian Document"),
    ({"description": adf("")}, "description", "non-empty text"),
    ({"customfield_10055": "Acme Corp"}, "customfield_10055", "Atlassian Document"),
    ({"customfield_999": "x"}, "customfield_999", "cannot be set"),
    ({"status": {"name": "Done"}}, "status", "cannot be set"),
    ({"labels": ["has space"]}, "labels", "contains spaces"),
    ({"customfield_10051": "12.5"}, "customfield_10051", "number"),
    ({"customfield_10058": "15/01/2026"}, "customfield_10058", "date"),
    ({"priority": {"name": "Urgent"}}, "priority", "invalid"),
    ({"summary": "x" * 255}, "summary", "255"),
])
def test_create_validation(api: Client, fields: dict[str, Any], field_id: str, text: str) -> None:
    r = api.post("/issue", json={"fields": po_fields(1, **fields)})
    assert r.status_code == 400
    assert text in r.json()["errors"][field_id]


def test_bulk_create_reports_failed_element(sim: JiraSim, api: Client) -> None:
    updates = [{"fields": po_fields(n)} for n in range(3)]
    updates[1]["fields"]["issuetype"] = {"name": "Spaceship"}
    r = api.post("/issue/bulk", json={"issueUpdates": updates})
    assert r.status_code == 201
    body = r.json()
    assert [i["key"] for i in body["issues"]] == ["PROC-1", "PROC-2"]
    assert body["errors"][0]["failedElementNumber"] == 1
    assert "issuetype" in body["errors"][0]["elementErrors"]["errors"]
    assert [i["fields"]["customfield_10050"] for i in sim.all_issues()] == ["PSFT-PO-0", "PSFT-PO-2"]
    all_bad = api.post("/issue/bulk", json={"issueUpdates": [{"fields": {"summary": "no project"}}]})
    assert all_bad.status_code == 400 and all_bad.json()["issues"] == []
    too_many = api.post("/issue/bulk", json={"issueUpdates": [{"fields": po_fields(n)} for n in range(51)]})
    assert too_many.status_code == 400


def test_search_by_label_and_custom_field(api: Client) -> None:
    bulk(api, 1, 2, 3)
    create(api, 12, issuetype={"name": "Vendor Invoice"})
    hits = search(api, "project = PROC AND labels = psft-po-2", fields=["summary"]).json()
    assert [i["key"] for i in hits["issues"]] == ["PROC-2"] and hits["isLast"] is True
    assert hits["issues"][0]["fields"] == {"summary": "PO 2"}
    exact = search(api, 'cf[10050] = "PSFT-PO-1"', fields=["customfield_10050"]).json()["issues"]
    assert [i["key"] for i in exact] == ["PROC-1"]
    # `~` matches whole words; only the trailing `*` lets the last word match PSFT-PO-12 as well
    fuzzy = search(api, 'cf[10050] ~ "PSFT-PO-1*"').json()["issues"]
    assert {i["key"] for i in fuzzy} == {"PROC-1", "PROC-4"}
    assert "fields" not in fuzzy[0]
    named = search(api, '"ERP Key" in ("PSFT-PO-2", "PSFT-PO-3") ORDER BY key ASC').json()["issues"]
    assert [i["key"] for i in named] == ["PROC-2", "PROC-3"]
    keys = search(api, 'key in (PROC-1, PROC-3) AND issuetype = "Purchase Order" ORDER BY key DESC').json()
    assert [i["key"] for i in keys["issues"]] == ["PROC-3", "PROC-1"]
    either = search(api, "project = PROC AND (labels in (psft-po-1, \"psft-po-3\") OR issuetype = 10003)").json()
    assert {i["key"] for i in either["issues"]} == {"PROC-1", "PROC-3", "PROC-4"}
    get = api.get("/search/jql", params={"jql": "labels = psft-po-3", "fields": "summary,status"}).json()
    assert get["issues"][0]["fields"]["status"]["name"] == "To Do"


def test_search_paging_and_updated_filter(sim: JiraSim, api: Client) -> None:
    bulk(api, *range(1, 13))
    cutoff = sim.issue("PROC-5")["updated_ms"]
    jql = f"project = PROC AND updated >= {cutoff} ORDER BY updated ASC, key ASC"
    seen, token, pages = [], None, []
    while True:
        body = {"fields": ["updated"], "maxResults": 3, **({"nextPageToken": token} if token else {})}
        page = search(api, jql, **body).json()
        pages.append(page)
        seen += [i["key"] for i in page["issues"]]
        if len(pages) == 1:
            # an edit while paging must not shift the frozen result set
            assert api.put("/issue/PROC-6", json={"fields": {"summary": "moved"}}).status_code == 204
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == [f"PROC-{n}" for n in range(5, 13)]
    assert len(pages) == 3 and pages[-1]["isLast"] is True and "nextPageToken" not in pages[-1]
    assert all(p["isLast"] is False and p["nextPageToken"] for p in pages[:-1])
    again = search(api, jql, maxResults=3, nextPageToken=pages[0]["nextPageToken"]).json()
    assert [i["key"] for i in again["issues"]] == seen[3:6]
    assert search(api, "project = PROC", nextPageToken="bogus").status_code == 400
    newer = search(api, f"updated > {sim.issue('PROC-11')['updated_ms']} ORDER BY updated ASC").json()
    assert [i["key"] for i in newer["issues"]] == ["PROC-12", "PROC-6"]


@pytest.mark.parametrize(("jql", "text"), [
    ("", "Unbounded"),
    ("ORDER BY key ASC", "Unbounded"),
    ("project = PROC AND", "Expecting a field name"),
    ("nosuchfield = 1", "does not exist"),
    ("project = PROC labels = x", "Expecting 'AND'"),
    ("status = Sleeping", "does not exist for the field"),
    ("summary = foo", "operator '=' is not supported"),
    ("key in (PROC-999)", "does not exist"),
    ('labels in ("a"', "close the IN list"),
    ("updated >= yesterday", "invalid"),
])
def test_bad_jql(api: Client, jql: str, text: str) -> None:
    r = search(api, jql)
    assert r.status_code == 400
    assert text in " ".join(r.json()["errorMessages"])


def test_transitions_and_changelog(sim: JiraSim, api: Client) -> None:
    key = create(api, 1)
    available = api.get(f"/issue/{key}/transitions").json()["transitions"]
    by_target = {t["to"]["name"]: t["id"] for t in available}
    # Only the way out of To Do is listed: Approved is two hops away in the default workflow.
    assert "To Do" not in by_target and "Approved" not in by_target and by_target["Pending Approval"] == "21"
    assert api.post(f"/issue/{key}/transitions", json={"transition": {"id": "31"}}).status_code == 400
    assert api.post(f"/issue/{key}/transitions", json={"transition": {"id": "21"}}).status_code == 204
    assert api.post(f"/issue/{key}/transitions", json={"transition": {"id": "21"}}).status_code == 400
    assert api.post(f"/issue/{key}/transitions", json={"transition": {"id": "999"}}).status_code == 400
    sim.transition_as_user(key, "Blocked", account_id="user-floor-2")
    assert sim.issue(key)["fields"]["status"] == "Blocked"
    log = api.get(f"/issue/{key}/changelog", params={"maxResults": 1}).json()
    assert log["total"] == 2 and log["isLast"] is False
    item = log["values"][0]["items"][0]
    assert (item["fieldId"], item["fromString"], item["toString"]) == ("status", "To Do", "Pending Approval")
    full = api.get(f"/issue/{key}", params={"expand": "changelog", "fields": "status"}).json()
    last = full["changelog"]["histories"][-1]
    assert last["author"]["accountId"] == "user-floor-2" and last["items"][0]["toString"] == "Blocked"
    blocked = search(api, 'status = "Blocked"', fields=["status"]).json()["issues"]
    assert [i["key"] for i in blocked] == [key]


def test_comments_and_properties(sim: JiraSim, api: Client) -> None:
    key = create(api, 1)
    r = api.post(f"/issue/{key}/comment", json={"body": adf("Synced PO 1")})
    assert r.status_code == 201 and r.json()["id"] and r.json()["author"]["accountId"]
    assert api.post(f"/issue/{key}/comment", json={"body": "plain"}).status_code == 400
    sim.comment_as_user(key, "Vendor called.\nShip Friday.")
    page = api.get(f"/issue/{key}/comment", params={"startAt": 1, "maxResults": 1}).json()
    assert page["total"] == 2 and page["comments"][0]["author"]["accountId"] == "user-floor-1"
    assert len(page["comments"][0]["body"]["content"]) == 2
    assert api.put(f"/issue/{key}/properties/mlconnector", json={"src": "PSFT", "rev": 1}).status_code == 201
    assert api.put(f"/issue/{key}/properties/mlconnector", json={"src": "PSFT", "rev": 2}).status_code == 200
    prop = api.get(f"/issue/{key}/properties/mlconnector").json()
    assert prop == {"key": "mlconnector", "value": {"src": "PSFT", "rev": 2}}
    assert api.get(f"/issue/{key}/properties/other").status_code == 404
    assert sim.issue(key)["properties"]["mlconnector"]["rev"] == 2
    assert [c["text"] for c in sim.issue(key)["comments"]] == ["Synced PO 1", "Vendor called.\nShip Friday."]
    assert sim.find_by_label("psft-po-1")[0]["key"] == key
    assert sim.find_by_field("customfield_10050", "PSFT-PO-1")[0]["key"] == key
    assert sim.writes == 4


def test_request_validator_rejections_become_400(host: Any) -> None:
    def validator(req: Request) -> None:
        if req.method == "POST" and b"forbidden" in req.body:
            raise ValueError("request does not match the OpenAPI schema")

    sim = JiraSim(request_validator=validator)
    r = host(sim).post("/issue", json={"fields": po_fields(1, summary="forbidden")})
    assert r.status_code == 400 and "OpenAPI" in r.json()["errorMessages"][0]
    assert sim.all_issues() == []


def test_create_cost_makes_bulk_creates_progressive_without_blocking_other_requests(host: Any) -> None:
    """JiraSim(create_cost=...): a bulk create takes its issues' cost and creates them one after the other;
    other requests (reads, searches, even other creates) are served meanwhile, as on a Jira cluster."""
    import threading
    import time

    sim = JiraSim(create_cost=0.3)
    api = host(sim)
    answers: list[requests.Response] = []
    worker = threading.Thread(target=lambda: answers.append(
        api.post("/issue/bulk", json={"issueUpdates": [{"fields": po_fields(n)} for n in range(5)]})))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not sim.all_issues() and time.monotonic() < deadline:
            time.sleep(0.01)
        # The first issue exists, the request has not answered: the others are still to come.
        partial = len(sim.all_issues())
        other = Client(api.base.removesuffix("/rest/api/3"))
        assert other.get("/myself").status_code == 200
        assert search(other, "project = PROC", fields=["summary"]).status_code == 200
        assert worker.is_alive() and 1 <= partial < 5  # served while the bulk create was still working
    finally:
        worker.join(timeout=20)
    assert answers and answers[0].status_code == 201 and len(answers[0].json()["issues"]) == 5
    created = sorted(int(i["updated_ms"]) for i in sim.all_issues())
    assert created[-1] - created[0] >= 4 * 300 * 0.9  # one cost apart each
    assert sim.writes == 1
