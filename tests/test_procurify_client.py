"""The Procurify client against its simulator: the token request's exact form, the token cached across runs
as a private file (never the state), one re-fetch on a 401, 429 through the shared policy, paging, day-granular
windows with overlap and dedupe by id + modified time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlconnector.errors import AuthError, TokenError
from mlconnector.procurify.client import ProcurifyClient, ProcurifyToken, token_cache_for
from mlconnector.procurify.config import ProcurifyConfig, parse_procurify
from mlconnector.sandbox.procurify_sim import CLIENT_ID, CLIENT_SECRET, ProcurifySim
from mlconnector.sandbox.server import Fault, SandboxServer
from mlconnector.sections import Section
from mlconnector.token_cache import FileTokenCache


@pytest.fixture
def sim() -> Iterator[tuple[ProcurifySim, SandboxServer]]:
    s = ProcurifySim()
    s.add_vendor("Acme", vendor_id=301)
    for n in range(3):
        s.add_requisition(301, [{"name": f"Line {n}-{j}", "quantity": 1, "price": "2.5"} for j in range(2)])
    server = SandboxServer(s, "procurify").start()
    try:
        yield s, server
    finally:
        server.stop()


def _cfg(server: SandboxServer, **kw: object) -> ProcurifyConfig:
    data = {"base_url": server.url, "client_id": CLIENT_ID, "max_attempts": 3, "backoff_initial": 0.01,
            "backoff_max": 0.05, **kw}
    return parse_procurify(Section(data, "procurify"))


def _client(cfg: ProcurifyConfig, cache_dir: Path, secret: str = CLIENT_SECRET) -> ProcurifyClient:
    return ProcurifyClient(cfg, ProcurifyToken(cfg, secret, token_cache_for(cfg, "test", cache_dir)))


def test_token_request_is_json_with_the_exact_audience_and_is_cached_across_runs(sim, tmp_path: Path) -> None:
    s, server = sim
    cfg = _cfg(server)
    c1 = _client(cfg, tmp_path)
    assert c1.whoami()["domain"] == "sandbox"
    c1.close()
    c2 = _client(cfg, tmp_path)  # the next cron run
    assert c2.whoami()["domain"] == "sandbox"
    assert s.token_requests == 1
    (cached,) = (tmp_path / "procurify").glob("*.token.json")
    assert cached.stat().st_mode & 0o777 == 0o600
    assert json.loads(cached.read_text())["client_id"] == CLIENT_ID


def test_a_token_near_its_expiry_is_renewed_before_use(sim, tmp_path: Path) -> None:
    s, server = sim
    cfg = _cfg(server)
    cache = token_cache_for(cfg, "test", tmp_path)
    clock = [1_000_000.0]
    tok = ProcurifyToken(cfg, CLIENT_SECRET, cache, clock=lambda: clock[0])
    first = tok.get()
    clock[0] += 86400 - 60 * 29  # inside the 30 minute margin
    assert tok.get() != first and s.token_requests == 2


def test_wrong_audience_or_secret_is_a_plain_token_error(sim, tmp_path: Path) -> None:
    _, server = sim
    with pytest.raises(TokenError, match="audience"):
        _client(_cfg(server, audience="https://api.procurify.com"), tmp_path).whoami()  # no trailing slash
    with pytest.raises(TokenError, match="procurify.client_secret"):
        _client(_cfg(server), tmp_path / "other", secret="wrong").whoami()


def test_a_revoked_token_is_fetched_again_once(sim, tmp_path: Path) -> None:
    s, server = sim
    c = _client(_cfg(server), tmp_path)
    c.whoami()
    s.expire_tokens()
    assert c.whoami()["domain"] == "sandbox"
    assert s.token_requests == 2
    # A token refused even when fresh: one re-fetch, then a plain AuthError (no loop).
    server.faults.add(Fault("status", path="/api/v3/users/me/", status=401, count=None, body="{}"))
    with pytest.raises(AuthError, match="service user"):
        c.whoami()
    assert s.token_requests == 3


def test_429_is_retried_after_retry_after(sim, tmp_path: Path) -> None:
    s, server = sim
    server.faults.add(Fault("status", path="/api/v3/order-items/", status=429, retry_after=0, count=1))
    c = _client(_cfg(server), tmp_path)
    items = [i for page in c.order_items(datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC)) for i in page]
    assert len(items) == 6 and c.http.rate_limited == 1


def test_pages_are_followed_and_every_answer_reports_its_request_id(sim, tmp_path: Path) -> None:
    s, server = sim
    c = _client(_cfg(server, page_size=4), tmp_path)
    seen: list[tuple[str, int, str]] = []
    c.on_response = lambda method, path, status, rid: seen.append((path, status, rid))
    pages = list(c.order_items(datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC)))
    assert [len(p) for p in pages] == [4, 2]
    assert len(seen) == 2 and all(rid.startswith("req-") for _, _, rid in seen)
    # Decimals stay strings (the pair parses them with Decimal).
    assert pages[0][0]["approved_price"] == "2.50000000"


def test_windows_are_day_granular_and_the_day_before_is_reread(sim, tmp_path: Path) -> None:
    s, server = sim
    c = _client(_cfg(server), tmp_path)
    now = datetime.now(UTC)
    # A window that starts later today still includes today's items: the filter is by day.
    items = [i for p in c.order_items(now - timedelta(minutes=1), now) for i in p]
    assert len(items) == 6
    tomorrow = now + timedelta(days=1)
    assert [i for p in c.order_items(tomorrow, tomorrow) for i in p] == []


def test_config_errors_name_their_keys(tmp_path: Path) -> None:
    from mlconnector.errors import ConfigError

    with pytest.raises(ConfigError, match="procurify.domain"):
        parse_procurify(Section({"domain": "acme.procurify.com", "client_id": "x"}, "procurify"))
    with pytest.raises(ConfigError, match="procurify.client_secret looks like a secret"):
        parse_procurify(Section({"domain": "acme", "client_id": "x", "client_secret": "y"}, "procurify"))
    with pytest.raises(ConfigError, match="procurify.page_size"):
        parse_procurify(Section({"domain": "acme", "client_id": "x", "page_size": 5000}, "procurify"))
    cfg = parse_procurify(Section({"domain": "acme", "client_id": "x"}, "procurify"))
    assert cfg.base_url == "https://acme.procurify.com" and cfg.audience == "https://api.procurify.com/"


def test_a_cached_token_of_another_tenant_is_not_used(sim, tmp_path: Path) -> None:
    s, server = sim
    cfg = _cfg(server)
    cache = token_cache_for(cfg, "test", tmp_path)
    assert isinstance(cache, FileTokenCache)
    cache.store({"base_url": "https://other.procurify.com", "client_id": CLIENT_ID,
                 "audience": cfg.audience, "access_token": "foreign", "expires_at": 9e12})
    c = ProcurifyClient(cfg, ProcurifyToken(cfg, CLIENT_SECRET, cache))
    assert c.whoami()["domain"] == "sandbox" and s.token_requests == 1
