"""The Procore client against the Procore simulator (127.0.0.1, port 0): form-body token cached across runs,
one renewal on a 401, the company header, Link paging, the 403 "not connected" message without a retry storm,
and both rate-limit windows read from the X-Rate-Limit-* headers (no sleeping: the clock is the test's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlconnector.errors import AuthError, RemoteError
from mlconnector.http import HttpSettings
from mlconnector.procore.client import ProcoreClient, ProcoreToken, token_cache_for
from mlconnector.procore.config import ProcoreConfig
from mlconnector.sandbox.procore_sim import CLIENT_ID, CLIENT_SECRET, COMPANY_ID, ProcoreSim
from mlconnector.sandbox.server import SandboxServer


class Clock:
    """A clock the test moves; sleeping on it advances it (nothing really waits)."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Iterator[tuple[ProcoreSim, SandboxServer]]:
    s = ProcoreSim(clock=clock, hourly_limit=50, spike_limit=40)
    s.add_project(11, "Tower")
    server = SandboxServer(s, "procore").start()
    try:
        yield s, server
    finally:
        server.stop()


def _client(server: SandboxServer, tmp_path: Path, clock: Clock, **cfg: Any) -> ProcoreClient:
    c = ProcoreConfig(client_id=CLIENT_ID, company_id=COMPANY_ID, base_url=server.url, login_url=server.url,
                      http=HttpSettings(max_attempts=3, backoff_initial=0.01, backoff_max=0.05, read_timeout=5),
                      **cfg)
    token = ProcoreToken(c, CLIENT_SECRET, token_cache_for(c, "t", tmp_path), clock=clock)
    client = ProcoreClient(c, token, clock=clock)
    client.http._sleep = clock.sleep
    client.http.pause = lambda seconds: clock.sleep(seconds)  # type: ignore[method-assign]
    return client


def test_token_is_form_encoded_cached_across_runs_and_renewed_once_on_401(sim: Any, tmp_path: Path,
                                                                          clock: Clock) -> None:
    s, server = sim
    a = _client(server, tmp_path, clock)
    assert a.companies()[0]["id"] == COMPANY_ID
    a.close()
    b = _client(server, tmp_path, clock)  # the next run: the cached token, no new login
    b.companies()
    assert s.token_requests == 1
    s.expire_tokens()
    b.companies()
    assert s.token_requests == 2
    clock.t += 5400 - 200  # within the renewal margin (5 min) before expires_in: renewed before use
    b.companies()
    assert s.token_requests == 3
    b.close()


def test_paging_follows_link_next(sim: Any, tmp_path: Path, clock: Clock) -> None:
    s, server = sim
    for n in range(5):
        v = s._stamp({"name": f"V{n}"})
        s.vendors[v["id"]] = v
    c = _client(server, tmp_path, clock, page_size=2)
    pages = list(c.pages(c.cfg.vendors_path, {"company_id": COMPANY_ID}))
    assert [len(p) for p in pages] == [2, 2, 1]
    c.close()


def test_app_not_connected_is_one_plain_message_and_no_retry(sim: Any, tmp_path: Path, clock: Clock) -> None:
    s, server = sim
    s.uninstall()
    c = _client(server, tmp_path, clock)
    with pytest.raises(AuthError) as err:
        c.companies()
    assert "App Management" in err.value.message and str(COMPANY_ID) in err.value.message
    assert "Traceback" not in err.value.message
    assert sum(s.calls.values()) == 1
    c.close()


def test_spike_window_is_waited_out_from_the_headers(sim: Any, tmp_path: Path, clock: Clock) -> None:
    s, server = sim
    s.spike = type(s.spike)(3, 10)
    c = _client(server, tmp_path, clock, spare_calls=1)
    for _ in range(6):
        c.companies()
    assert clock.slept and all(0 < w <= 10 for w in clock.slept)
    assert c.http.rate_limited == 0  # never ran into a 429
    c.close()


def test_hourly_window_nearly_spent_stops_with_a_retryable_message(sim: Any, tmp_path: Path, clock: Clock) -> None:
    s, server = sim
    s.hourly = type(s.hourly)(4, 3600)
    c = _client(server, tmp_path, clock, spare_calls=1)
    with pytest.raises(RemoteError) as err:
        for _ in range(10):
            c.companies()
    assert err.value.retryable and "rate limit" in err.value.message
    assert s.calls["GET /rest/v1.0/companies"] == 3
    c.close()


def test_429_waits_for_x_rate_limit_reset(sim: Any, tmp_path: Path, clock: Clock, monkeypatch: Any) -> None:
    import mlconnector.http as http_mod

    s, server = sim
    s.spike = type(s.spike)(2, 10)
    monkeypatch.setattr(http_mod.time, "time", clock)  # the reset is Unix seconds on the test's clock
    other = _client(server, tmp_path, clock, spare_calls=0)  # another run of the same app spends the spike window
    other.companies()
    other.companies()
    other.close()
    c = _client(server, tmp_path, clock)
    c.companies()  # 429, then the retry after the window's reset
    assert c.http.rate_limited == 1 and clock.slept and clock.slept[0] >= 9
    c.close()


def test_sync_reads_entities_and_errors_of_the_200_answer(sim: Any, tmp_path: Path, clock: Clock) -> None:
    s, server = sim
    c = _client(server, tmp_path, clock, sync_batch=2)
    out = c.sync(c.cfg.vendors_path + "/sync", {"company_id": COMPANY_ID},
                 [{"origin_id": "a", "name": "A"}, {"origin_id": "b", "name": ""}, {"origin_id": "c", "name": "C"}])
    assert out.calls == 2
    assert sorted(e["origin_id"] for e in out.entities) == ["a", "c"]
    assert [e["origin_id"] for e in out.errors] == ["b"]
    c.close()


# -- webhooks -----------------------------------------------------------------------------------------
def test_register_creates_hook_and_triggers_once(sim: Any, tmp_path: Path, clock: Clock) -> None:
    from mlconnector.procore.webhook import register

    s, server = sim
    c = _client(server, tmp_path, clock)
    kw: dict[str, Any] = {"namespace": "ml-connector", "api_version": "v2",
                          "resources": ["Purchase Order Contracts"], "events": ["create", "update"]}
    first = register(c, "https://hooks.example.com/procore/webhook", "s3cret", **kw)
    again = register(c, "https://hooks.example.com/procore/webhook", "s3cret-2", **kw)
    assert first["created"] and first["triggers_added"] == 2
    assert not again["created"] and again["triggers_added"] == 0
    [hook] = s.hooks.values()
    assert hook["destination_headers"] == {"Authorization": "Bearer s3cret-2"} and len(s.triggers) == 2
    c.close()


def test_receiver_refuses_without_the_secret_and_spools_a_duplicated_delivery_once(tmp_path: Path) -> None:
    import json
    import threading

    import requests

    from mlconnector.procore.webhook import make_server

    spool = tmp_path / "state.json.procore-webhooks.jsonl"
    server = make_server("s3cret", spool)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/procore/webhook"
        body = ProcoreSim().delivery("Purchase Order Contracts", 42, 11)
        assert requests.post(url, json=body, timeout=5).status_code == 401
        assert requests.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        ok = [requests.post(url, json=body, headers={"Authorization": "Bearer s3cret"}, timeout=5) for _ in range(2)]
        assert [r.status_code for r in ok] == [200, 200] and ok[1].text == "duplicate"
        lines = [json.loads(x) for x in spool.read_text(encoding="utf-8").splitlines()]
        assert [(e["resource_name"], e["resource_id"], e["project_id"]) for e in lines] == [
            ("Purchase Order Contracts", "42", "11")]
    finally:
        server.shutdown()
        server.server_close()
