"""Jira webhook receiver (X-Hub-Signature) and dynamic webhook registration/refresh."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from test_jde_sync import JdeEnv, jde_env  # noqa: F401 - the fixture is shared with the sync tests

from mlconnector.errors import EXIT_OK
from mlconnector.http import HttpClient
from mlconnector.sandbox.server import Request, SandboxServer, json_response
from mlconnector.state import State, iso, utcnow
from mlconnector.webhook import ensure_dynamic_webhook, make_server, sign, spool_path, verify_signature

SECRET = "sandbox-webhook-secret"


def test_official_test_vector() -> None:
    # jira.md 7.2: Atlassian's published vector.
    expected = "sha256=a4771c39fbe90f317c7824e83ddef3caae9cb3d976c214ace1f2937e133263c9"
    assert sign("It's a Secret to Everybody", b"Hello World!") == expected
    assert verify_signature("It's a Secret to Everybody", b"Hello World!", expected) == (True, "")
    assert verify_signature("It's a Secret to Everybody", b"Hello World!", expected.upper().replace("SHA", "sha"))[0]


@pytest.mark.parametrize("header", [None, "", "sha1=a4771c39", "sha256=", "sha256=" + "0" * 64,
                                    sign("another secret", b"Hello World!")])
def test_unsigned_or_bad_signatures_are_refused(header: str | None) -> None:
    ok, reason = verify_signature(SECRET, b"Hello World!", header)
    assert not ok and reason


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    spool = spool_path(tmp_path / "state.json")
    server = make_server(SECRET, spool)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jira/webhook", spool
    finally:
        server.shutdown()
        server.server_close()


def _event(key: str, changelog_id: str, to: str = "Blocked", ts_ms: int | None = None) -> bytes:
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms  # Jira's own: epoch milliseconds of the event
    return json.dumps({"timestamp": ts, "webhookEvent": "jira:issue_updated", "issue_event_type_name": "issue_generic",
                       "issue": {"id": "10002", "key": key},
                       "changelog": {"id": changelog_id, "items": [{"field": "status", "fieldId": "status",
                                                                     "fromString": "To Do", "toString": to}]}
                       }).encode()


def test_receiver_rejects_bad_signature_with_a_log_line(receiver: tuple[str, Path],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    url, spool = receiver
    body = _event("PROC-1", "10010")
    with caplog.at_level(logging.WARNING, logger="mlconnector.webhook"):
        bad = requests.post(url, data=body, headers={"X-Hub-Signature": sign("wrong", body)}, timeout=5)
        unsigned = requests.post(url, data=body, timeout=5)
        tampered = requests.post(url, data=body + b" ", headers={"X-Hub-Signature": sign(SECRET, body)}, timeout=5)
    assert (bad.status_code, unsigned.status_code, tampered.status_code) == (401, 401, 401)
    assert not spool.exists() or spool.read_text() == ""
    rejected = [r.getMessage() for r in caplog.records if "rejected webhook" in r.getMessage()]
    assert len(rejected) == 3 and any("unsigned" in m for m in rejected)

    good = requests.post(url, data=body, headers={"X-Hub-Signature": sign(SECRET, body),
                                                  "X-Atlassian-Webhook-Identifier": "d-1"}, timeout=5)
    assert good.status_code == 204
    [event] = [json.loads(x) for x in spool.read_text().splitlines()]
    assert (event["issue"], event["changelog_id"], event["delivery"]) == ("PROC-1", "10010", "d-1")


def test_queued_event_makes_the_next_pass_check_the_issue(jde_env: JdeEnv) -> None:  # noqa: F811
    env = jde_env
    assert env.sync().exit_code == EXIT_OK
    wo = env.box.jde.rows(order_type="WO")[3]
    key = env.issue_for(wo["DOCO"])["key"]
    env.box.jira.transition_as_user(key, "Blocked")
    change_id = env.box.jira.issue(key)["changelog"][-1]["id"]
    # Move the polling window past the change, so only the webhook event can bring it in.
    state = State.load(env.state_file)
    state.watermarks["jde-jira.backflow"] = iso(utcnow() + timedelta(days=1))
    state.save()
    server = make_server(SECRET, spool_path(env.state_file))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        body = _event(key, change_id)
        url = f"http://127.0.0.1:{server.server_address[1]}/jira/webhook"
        assert requests.post(url, data=body, headers={"X-Hub-Signature": sign(SECRET, body)},
                             timeout=5).status_code == 204
    finally:
        server.shutdown()
        server.server_close()
    result = env.sync()
    assert result.counts["jira_status"].posted == 1
    assert [c.inputs["NewStatus"] for c in env.box.jde.calls_for(wo["DOCO"])] == ["HD"]
    assert State.load(env.state_file).extra["jde-jira"]["webhook_events"] == []
    assert spool_path(env.state_file).read_text() == ""


class _DynamicWebhooks:
    """Just the three dynamic-webhook endpoints of Jira Cloud (the JiraSim does not host them)."""

    def __init__(self) -> None:
        self.registered: list[dict[str, Any]] = []
        self.refreshed: list[list[int]] = []

    def __call__(self, req: Request) -> Any:
        if req.method == "POST" and req.path == "/rest/api/3/webhook":
            self.registered.append(req.json())
            created = 1000 + len(self.registered)
            return json_response(200, {"webhookRegistrationResult": [{"createdWebhookId": created}]})
        if req.method == "PUT" and req.path == "/rest/api/3/webhook/refresh":
            ids = req.json()["webhookIds"]
            self.refreshed.append(ids)
            if ids != [1000 + len(self.registered)]:
                return json_response(404, {"errorMessages": ["Webhook not found"]})
            return json_response(200, {"expirationDate": "2030-01-01T00:00:00.000+0000"})
        return json_response(404, {})


def test_dynamic_webhook_registered_once_and_refreshed_at_25_days() -> None:
    app = _DynamicWebhooks()
    with SandboxServer(app, "jira-webhooks") as srv:
        http = HttpClient("Jira", srv.url)
        book: dict[str, Any] = {}
        t0 = utcnow()
        jql = 'project = "PROC"'
        assert ensure_dynamic_webhook(http, book, "https://hooks.example.com/jira", jql, t0) == "registered"
        assert app.registered[0]["webhooks"][0]["events"] == ["jira:issue_updated"]
        assert ensure_dynamic_webhook(http, book, "https://hooks.example.com/jira", jql, t0 + timedelta(days=24)) \
            == "ok"
        assert app.refreshed == []
        assert ensure_dynamic_webhook(http, book, "https://hooks.example.com/jira", jql, t0 + timedelta(days=25)) \
            == "refreshed"
        assert book["webhook"]["expires"].startswith("2030")
        # Refreshed at day 25: the next refresh is due 25 days after that, not after registration.
        assert ensure_dynamic_webhook(http, book, "https://hooks.example.com/jira", jql, t0 + timedelta(days=49)) \
            == "ok"
        # Deleted on the Jira side: the refresh fails and a new registration replaces it.
        book["webhook"]["id"] = 999
        assert ensure_dynamic_webhook(http, book, "https://hooks.example.com/jira", jql, t0 + timedelta(days=51)) \
            == "registered"
        assert len(app.registered) == 2
        http.close()
