"""The JAGGAER client against the simulator (127.0.0.1, port 0): both token formats, renewal before expiry
and on a 401 whose body is not JSON, returnCode errors inside HTTP 200, FIQL filters and start paging."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlconnector.errors import AuthError, ConfigError, TokenError
from mlconnector.http import HttpSettings
from mlconnector.jaggaer.client import JaggaerClient, JaggaerError, JaggaerToken, parse_token_answer
from mlconnector.jaggaer.config import JaggaerConfig, parse_jaggaer
from mlconnector.sandbox.jaggaer_sim import CLIENT_ID, CLIENT_SECRET, LEGACY_TOKEN, JaggaerSim
from mlconnector.sandbox.server import Fault, SandboxServer
from mlconnector.sections import Section
from mlconnector.token_cache import FileTokenCache

FAST = HttpSettings(max_attempts=3, backoff_initial=0.01, backoff_max=0.05, read_timeout=5)


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Iterator[tuple[JaggaerSim, SandboxServer]]:
    s = JaggaerSim(clock=clock)
    server = SandboxServer(s, "jaggaer").start()
    try:
        yield s, server
    finally:
        server.stop()


def _client(server: SandboxServer, clock: Clock, **kw: object) -> JaggaerClient:
    cfg = parse_jaggaer(Section({"base_url": server.url, "client_id": CLIENT_ID, "token_cache": "none", **kw},
                                "jaggaer"))
    cfg.http = FAST
    return JaggaerClient(cfg, JaggaerToken(cfg, CLIENT_SECRET, clock=clock))


def test_token_answers_in_both_documented_formats_are_read() -> None:
    assert parse_token_answer({"access_token": "a", "expires_in": 300}, "auto") == ("a", 300.0, "keycloak")
    assert parse_token_answer({"token": "b", "expire_in": 600000}, "auto") == ("b", 600.0, "legacy")
    with pytest.raises(ValueError):
        parse_token_answer({"token": "b", "expire_in": 600000}, "keycloak")


@pytest.mark.parametrize("fmt", ["keycloak", "legacy"])
def test_each_token_format_logs_in_and_lists_with_paging(sim: tuple[JaggaerSim, SandboxServer], clock: Clock,
                                                         fmt: str) -> None:
    s, server = sim
    for n in range(5):
        s.add_supplier(f"Supplier {n}", ext_code=f"{n:010d}")
    c = _client(server, clock, token_format=fmt)
    try:
        pages = list(c.changed(c.cfg.suppliers, datetime(2020, 1, 1, tzinfo=UTC)))
        assert [len(p) for p in pages] == [2, 2, 1]  # start=1, 3, 5 (server-chosen page size 2)
        assert c.token.format_seen == fmt
        assert c.token.fetches == 1
        if fmt == "legacy":
            assert c.cfg.token_path == LEGACY_TOKEN
    finally:
        c.close()


def test_token_is_renewed_before_it_expires_inside_a_long_pass(sim: tuple[JaggaerSim, SandboxServer],
                                                                clock: Clock) -> None:
    s, server = sim
    s.expires_in = 120
    s.add_supplier("A", ext_code="1")
    c = _client(server, clock)
    try:
        c.find(c.cfg.suppliers, "extCode", "1")
        clock.t += 85  # 35 s left, outside the 30 s margin: the same token
        c.find(c.cfg.suppliers, "extCode", "1")
        assert c.token.fetches == 1
        clock.t += 10  # 25 s left: inside the margin, renewed before the request, never a 401
        c.find(c.cfg.suppliers, "extCode", "1")
        assert c.token.fetches == 2 and c.renewals_on_401 == 0
        assert server.requests(path="/j1p/api/public/ja/v1/companyprofiles")[-1].status == 200
    finally:
        c.close()


def test_a_token_that_dies_mid_pass_is_renewed_once_on_a_401_that_is_not_json(
        sim: tuple[JaggaerSim, SandboxServer], clock: Clock) -> None:
    s, server = sim
    for n in range(5):
        s.add_supplier(f"S{n}", ext_code=str(n))
    s.token_uses = 2  # the token lapses after the second page
    c = _client(server, clock)
    try:
        rows = [r for p in c.changed(c.cfg.suppliers, datetime(2020, 1, 1, tzinfo=UTC)) for r in p]
        assert len(rows) == 5 and c.token.fetches == 2 and c.renewals_on_401 == 1
        s.client_secret = "rotated"  # the new token request is refused: a clear error, no loop
        s.revoke_tokens()
        with pytest.raises(TokenError, match="jaggaer.client_secret"):
            c.find(c.cfg.suppliers, "extCode", "1")
    finally:
        c.close()


def test_a_second_401_with_a_fresh_token_is_an_auth_error_naming_the_fix(
        sim: tuple[JaggaerSim, SandboxServer], clock: Clock) -> None:
    s, server = sim
    s.token_uses = 0  # every token refused
    c = _client(server, clock)
    try:
        with pytest.raises(AuthError, match="freshly issued token") as exc:
            c.find(c.cfg.suppliers, "extCode", "1")
        assert "Traceback" not in str(exc.value)
    finally:
        c.close()


def test_http_200_with_a_return_code_is_a_failure_with_the_return_message(
        sim: tuple[JaggaerSim, SandboxServer], clock: Clock) -> None:
    s, server = sim
    c = _client(server, clock)
    try:
        s.fail_next("GET", "companyprofiles", code=-7, message="Insufficient rights on ja module")
        with pytest.raises(JaggaerError) as exc:
            c.find(c.cfg.suppliers, "extCode", "1")
        assert exc.value.return_code == -7 and "Insufficient rights on ja module" in exc.value.message
        # A filter field the tenant does not know is also an error inside 200, not an empty list.
        bad = _client(server, clock, suppliers={"modified_field": "LAST_MODIFIED"})
        with pytest.raises(JaggaerError, match="Invalid filter"):
            list(bad.changed(bad.cfg.suppliers, datetime(2020, 1, 1, tzinfo=UTC)))
        bad.close()
    finally:
        c.close()


def test_429_and_5xx_go_through_the_shared_policy(sim: tuple[JaggaerSim, SandboxServer], clock: Clock) -> None:
    s, server = sim
    s.add_supplier("A", ext_code="1")
    server.faults.add(Fault("status", path="companyprofiles", status=429, retry_after=0.01, count=1))
    server.faults.add(Fault("status", path="companyprofiles", status=503, count=1))
    c = _client(server, clock)
    try:
        assert len(c.find(c.cfg.suppliers, "extCode", "1")) == 1
    finally:
        c.close()


def test_fiql_values_with_reserved_characters_are_quoted(sim: tuple[JaggaerSim, SandboxServer],
                                                         clock: Clock) -> None:
    s, server = sim
    s.add_supplier("A", ext_code="X;1")
    s.add_supplier("B", ext_code="X")
    c = _client(server, clock)
    try:
        assert [r["companyName"] for r in c.find(c.cfg.suppliers, "extCode", "X;1")] == ["A"]
    finally:
        c.close()


def test_token_cache_file_is_private_and_reused(sim: tuple[JaggaerSim, SandboxServer], clock: Clock,
                                                tmp_path: Path) -> None:
    _, server = sim
    cfg = parse_jaggaer(Section({"base_url": server.url, "client_id": CLIENT_ID}, "jaggaer"))
    cache = FileTokenCache(tmp_path / "jaggaer" / "t.json")
    t1 = JaggaerToken(cfg, CLIENT_SECRET, cache, clock=clock)
    tok = t1.get()
    assert (tmp_path / "jaggaer" / "t.json").stat().st_mode & 0o777 == 0o600
    t2 = JaggaerToken(cfg, CLIENT_SECRET, cache, clock=clock)
    assert t2.get() == tok and t2.fetches == 0
    t1.close()
    t2.close()


def test_config_errors_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"jaggaer.token_format"):
        parse_jaggaer(Section({"base_url": "https://x", "client_id": "c", "token_format": "jwt"}, "jaggaer"))
    with pytest.raises(ConfigError, match=r"jaggaer.invoices.path"):
        parse_jaggaer(Section({"base_url": "https://x", "client_id": "c", "invoices": {"path": "ji/v1"}}, "jaggaer"))
    cfg: JaggaerConfig = parse_jaggaer(Section({"base_url": "https://x", "client_id": "c"}, "jaggaer"))
    assert cfg.invoices.list_key == "jiinvoiceList.jiinvoice" and cfg.suppliers.filter == "TYPE==SELLER"
