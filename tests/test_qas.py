"""QASClient against the PeopleSoft simulator: windows that never lose rows, prompts, errors."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlconnector import config as config_mod
from mlconnector.config import PeopleSoftConfig
from mlconnector.errors import RemoteError
from mlconnector.peoplesoft.qas import QASClient, normalise_row, parse_ps_datetime
from mlconnector.sandbox.peoplesoft_sim import PeopleSoftSim
from mlconnector.sandbox.server import SandboxServer

NOW = datetime(2024, 3, 31, 18, 0, 0, tzinfo=UTC)
AUTH = ("ML_CONNECTOR", "sandbox-ps-password")
DB_TZ = timezone(timedelta(hours=-6))
D0 = datetime(2024, 3, 10, tzinfo=DB_TZ)  # local midnight in the database
EMPTY = {"vendors": 0, "requisitions": 0, "purchase_orders": 0, "vouchers": 0}
QUERY = "ML_PO_CHANGED"


def ps_config(base_url: str, extra: str = "", offset: str | None = "-06:00") -> PeopleSoftConfig:
    text = f"""
instance = "qas-test"
state_file = "/tmp/qas-test-state.json"
[peoplesoft]
base_url = "{base_url}"
node = "PSFT_EP"
user = "ML_CONNECTOR"
{f'db_utc_offset = "{offset}"' if offset else ''}
maxrows = 100
max_attempts = 2
backoff_initial = 0.001
backoff_max = 0.01
read_timeout = 10
{extra}
[jira]
site = "http://127.0.0.1:9"
email = "sync-bot@example.com"
project = "PROC"
"""
    return config_mod.from_dict(tomllib.loads(text), Path("/tmp/qas-test.toml")).peoplesoft


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SandboxServer]:
    with SandboxServer(PeopleSoftSim(now=lambda: NOW, counts=EMPTY), name="peoplesoft") as srv:
        yield srv


@pytest.fixture
def sim(shared_server: SandboxServer) -> PeopleSoftSim:
    s = PeopleSoftSim(now=lambda: NOW, counts=EMPTY)
    shared_server.app = s
    shared_server.faults.clear()
    return s


@pytest.fixture
def server(shared_server: SandboxServer, sim: PeopleSoftSim) -> SandboxServer:
    return shared_server


class CallCap:
    """Stops a runaway read (fails the test) instead of letting it send thousands of requests."""

    def __init__(self, client: QASClient, limit: int) -> None:
        self.inner = client.execute
        self.limit = limit
        self.calls = 0
        client.execute = self  # type: ignore[method-assign]

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        assert self.calls <= self.limit, f"read_window sent more than {self.limit} queries"
        return self.inner(*args)


def read_all(client: QASClient, start: datetime, end: datetime) -> tuple[set[tuple[str, str, str]], list[datetime]]:
    seen: set[tuple[str, str, str]] = set()
    marks: list[datetime] = []
    for rows, covered in client.read_window(QUERY, start, end):
        marks.append(covered)
        seen |= {(r["BUSINESS_UNIT"], r["PO_ID"], r["LAST_DTTM_UPDATE"]) for r in rows}
    return seen, marks


def source_rows(sim: PeopleSoftSim, lo: datetime, hi: datetime,
                inclusive_hi: bool = False) -> set[tuple[str, str, str]]:
    out = set()
    for r in sim.rows("purchase_orders"):
        ts = parse_ps_datetime(r["LAST_DTTM_UPDATE"])
        if lo <= ts and (ts <= hi if inclusive_hi else ts < hi):
            out.add((r["BUSINESS_UNIT"], r["PO_ID"], r["LAST_DTTM_UPDATE"]))
    return out


def load_busy_week(sim: PeopleSoftSim) -> None:
    # 5 days x 200 rows, plus a burst of 250 rows stamped in the same second.
    for day in range(5):
        sim.bulk_load("purchase_orders", 200, D0 + timedelta(days=day), D0 + timedelta(days=day + 1))
    burst = D0 + timedelta(days=2, hours=9, minutes=30)
    sim.bulk_load("purchase_orders", 250, burst, burst + timedelta(seconds=1))


@pytest.mark.parametrize("prompt_format", ["date", "datetime"])
def test_read_window_returns_every_row_despite_maxrows(server: SandboxServer, sim: PeopleSoftSim,
                                                        prompt_format: str) -> None:
    load_busy_week(sim)
    cfg = ps_config(server.url, f'prompt_format = "{prompt_format}"\nmax_maxrows = 6400')
    client = QASClient(cfg, AUTH)
    cap = CallCap(client, 400)
    start = (D0 + timedelta(hours=3, minutes=17, seconds=5)).astimezone(UTC)
    end = (D0 + timedelta(days=4, hours=19, minutes=1)).astimezone(UTC)
    got, marks = read_all(client, start, end)
    expected = source_rows(sim, start, end)
    assert len(expected) > 10 * cfg.maxrows
    assert expected <= got, f"{len(expected - got)} rows lost"
    # Nothing outside what the prompts asked for (whole days, or +1 s for datetime prompts).
    if prompt_format == "datetime":
        assert got <= source_rows(sim, start.replace(microsecond=0), end, inclusive_hi=True)
    else:
        assert got <= source_rows(sim, D0, D0 + timedelta(days=5))
    # Sub-windows are chronological and end exactly at the window's end.
    assert marks == sorted(marks) and marks[-1] == end
    assert cap.calls > 1


def test_one_day_over_max_maxrows_fails_loudly(server: SandboxServer, sim: PeopleSoftSim) -> None:
    sim.bulk_load("purchase_orders", 300, D0, D0 + timedelta(days=1))
    client = QASClient(ps_config(server.url, "max_maxrows = 200"), AUTH)
    with pytest.raises(RemoteError) as info:
        list(client.read_window(QUERY, D0.astimezone(UTC), (D0 + timedelta(days=1)).astimezone(UTC)))
    assert "max_maxrows" in info.value.message
    assert "2024-03-10..2024-03-11" in info.value.message


def test_date_window_is_split_at_day_boundary_before_raising(server: SandboxServer, sim: PeopleSoftSim) -> None:
    """Each day (150 rows) fits max_maxrows (200); a window spanning two days must therefore be read
    day by day rather than failing with 'cannot be split further'."""
    sim.bulk_load("purchase_orders", 150, D0, D0 + timedelta(days=1))
    sim.bulk_load("purchase_orders", 150, D0 + timedelta(days=1), D0 + timedelta(days=2))
    client = QASClient(ps_config(server.url, "max_maxrows = 200"), AUTH)
    start = (D0 + timedelta(hours=6)).astimezone(UTC)
    end = (D0 + timedelta(days=1, hours=12)).astimezone(UTC)
    got, _ = read_all(client, start, end)
    assert source_rows(sim, start, end) <= got


def test_widened_datetime_window_reads_with_bounded_requests(server: SandboxServer, sim: PeopleSoftSim) -> None:
    """Without db_utc_offset each datetime query is widened by 14 h each side, so halving the window
    never makes the result smaller than 28 h of rows; the read must still finish in a few queries
    (by raising maxrows) instead of recursing down to 2-second windows."""
    sim.bulk_load("purchase_orders", 150, D0, D0 + timedelta(days=1))
    sim.bulk_load("purchase_orders", 150, D0 + timedelta(days=1), D0 + timedelta(days=2))
    client = QASClient(ps_config(server.url, 'prompt_format = "datetime"\nmax_maxrows = 1000', offset=None), AUTH)
    cap = CallCap(client, 60)
    start = (D0 + timedelta(hours=6)).astimezone(UTC)
    end = (D0 + timedelta(days=1, hours=12)).astimezone(UTC)
    got, _ = read_all(client, start, end)
    assert source_rows(sim, start, end) <= got
    assert cap.calls <= 60


# -- prompt values ------------------------------------------------------------------------------

START = datetime(2024, 3, 5, 20, 2, 11, tzinfo=UTC)
END = datetime(2024, 3, 6, 3, 0, 0, tzinfo=UTC)


def _client_for(prompt_format: str, offset: str | None) -> QASClient:
    cfg = ps_config("http://127.0.0.1:9", f'prompt_format = "{prompt_format}"', offset=offset)
    return QASClient(cfg, AUTH)


def test_prompt_values_with_known_offset() -> None:
    assert _client_for("date", "-06:00").prompt_values(START, END) == ("2024-03-05", "2024-03-06")
    assert _client_for("datetime", "-06:00").prompt_values(START, END) == ("2024-03-05T14:02:11",
                                                                           "2024-03-05T21:00:01")
    # A window ending exactly at local midnight does not ask for the next day.
    midnight = datetime(2024, 3, 6, 6, 0, tzinfo=UTC)
    assert _client_for("date", "-06:00").prompt_values(START, midnight) == ("2024-03-05", "2024-03-06")


def test_prompt_values_widened_without_offset() -> None:
    assert _client_for("date", None).prompt_values(START, END) == ("2024-03-04", "2024-03-08")
    assert _client_for("datetime", None).prompt_values(START, END) == ("2024-03-05T06:02:11",
                                                                       "2024-03-06T17:00:01")


OFFSETS = ["-12:00", "-06:00", "+00:00", "+05:30", "+14:00"]
_BASE_CFG = ps_config("http://127.0.0.1:9")
_PROMPT_CLIENT = QASClient(_BASE_CFG, AUTH)


def _as_instant(value: str, tz: timezone) -> datetime:
    fmt = "%Y-%m-%dT%H:%M:%S" if "T" in value else "%Y-%m-%d"
    return datetime.strptime(value, fmt).replace(tzinfo=tz)


def _tz(offset: str) -> timezone:
    return datetime.strptime(offset.replace(":", ""), "%z").tzinfo  # type: ignore[return-value]


@settings(max_examples=300, deadline=None)
@given(start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
       length=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=20)),
       prompt_format=st.sampled_from(["date", "datetime"]),
       offset=st.sampled_from([None, *OFFSETS]))
def test_prompt_values_cover_the_window(start: datetime, length: timedelta, prompt_format: str,
                                        offset: str | None) -> None:
    _PROMPT_CLIENT.cfg = dataclasses.replace(_BASE_CFG, prompt_format=prompt_format, db_utc_offset=offset)
    end = start + length
    lo, hi = _PROMPT_CLIENT.prompt_values(start, end)
    # The database reads the prompts in its own local time: unknown offset means any real one.
    for off in [offset] if offset else OFFSETS:
        tz = _tz(off)
        assert _as_instant(lo, tz) <= start, (lo, off)
        # BIND2 is exclusive, and every stored second in [start, end) must be below it.
        assert _as_instant(hi, tz) >= end, (hi, off)
    if offset and prompt_format == "datetime":
        # Known offset: no more than a second of slack either side.
        tz = _tz(offset)
        assert start - _as_instant(lo, tz) < timedelta(seconds=1)
        assert _as_instant(hi, tz) - end <= timedelta(seconds=1)


# -- parsing ----------------------------------------------------------------------------------------

def test_parse_ps_datetime_converts_database_offset_to_utc() -> None:
    assert parse_ps_datetime("2024-03-05T14:02:11-0600") == datetime(2024, 3, 5, 20, 2, 11, tzinfo=UTC)
    assert parse_ps_datetime("2024-03-05T14:02:11.250000+0100") == datetime(2024, 3, 5, 13, 2, 11, 250000,
                                                                           tzinfo=UTC)
    assert parse_ps_datetime("2024-03-05-14.02.11.000000") == datetime(2024, 3, 5, 14, 2, 11, tzinfo=UTC)
    for bad in ("", "   ", None, "yesterday", 12):
        with pytest.raises(ValueError):
            parse_ps_datetime(bad)


def test_normalise_row_drops_rownumber_and_alias_prefixes() -> None:
    row = {"attr:rownumber": 1, "A.PO_ID": "0000000001", "A.DESCR": "first", "B.DESCR": "second",
           "B.VENDOR_ID": "V1", "C.DESCR": "third"}
    assert normalise_row(row) == {"PO_ID": "0000000001", "DESCR": "first", "B.DESCR": "second",
                                  "VENDOR_ID": "V1", "C.DESCR": "third"}


def test_rows_from_server_are_normalised(server: SandboxServer, sim: PeopleSoftSim) -> None:
    sim.bulk_load("purchase_orders", 3, D0, D0 + timedelta(hours=1))
    client = QASClient(ps_config(server.url), AUTH)
    (rows, _), = list(client.read_window(QUERY, D0.astimezone(UTC), (D0 + timedelta(hours=2)).astimezone(UTC)))
    assert len(rows) == 3
    for r in rows:
        assert "attr:rownumber" not in r and not any("." in k for k in r)
        assert set(r) >= {"BUSINESS_UNIT", "PO_ID", "PO_STATUS", "LAST_DTTM_UPDATE"}


# -- error translation --------------------------------------------------------------------------------

def _read(server: SandboxServer) -> list[Any]:
    client = QASClient(ps_config(server.url), AUTH)
    return list(client.read_window(QUERY, D0.astimezone(UTC), (D0 + timedelta(days=1)).astimezone(UTC)))


def test_inactive_routing_page_explains_what_to_activate(server: SandboxServer, sim: PeopleSoftSim) -> None:
    sim.deactivate(QUERY)
    with pytest.raises(RemoteError) as info:
        _read(server)
    msg = info.value.message
    assert "activate the service operation QAS_EXECUTEQRY_REST_GET" in msg
    assert "PSFT_EP" in msg and QUERY in msg
    assert "Unable to find a Routing" in info.value.raw


def test_permission_error_names_permission_list(server: SandboxServer, sim: PeopleSoftSim) -> None:
    sim.deny("ML_CONNECTOR", QUERY)
    with pytest.raises(RemoteError) as info:
        _read(server)
    msg = info.value.message
    assert "(158,536)" in msg and "permission list" in msg and "ML_CONNECTOR" in msg


def test_wrong_node_is_reported_without_retrying(server: SandboxServer, sim: PeopleSoftSim) -> None:
    cfg = dataclasses.replace(ps_config(server.url), node="WRONG_NODE")
    client = QASClient(cfg, AUTH)
    server.clear_log()
    with pytest.raises(RemoteError) as info:
        list(client.read_window(QUERY, D0.astimezone(UTC), (D0 + timedelta(days=1)).astimezone(UTC)))
    assert "WRONG_NODE" in info.value.message and "Default Local" in info.value.message
    assert len(server.requests()) == 1


def test_malformed_json_is_remote_error(server: SandboxServer, sim: PeopleSoftSim) -> None:
    server.faults.add(kind="body", body='{"status": "success", "data": {', count=None)
    with pytest.raises(RemoteError) as info:
        _read(server)
    assert "malformed JSON" in info.value.message
    assert info.value.raw.startswith('{"status"')


def test_status_other_than_success_is_remote_error(server: SandboxServer, sim: PeopleSoftSim) -> None:
    server.faults.add(kind="body", body='{"status": "fail", "data": {"query": {"rows": []}}}',
                      headers={"Content-Type": "application/json"}, count=None)
    with pytest.raises(RemoteError) as info:
        _read(server)
    assert "'fail'" in info.value.message and "success" in info.value.message


def test_unexpected_json_layout_is_remote_error(server: SandboxServer, sim: PeopleSoftSim) -> None:
    server.faults.add(kind="body", body='{"status": "success", "data": {"query": {"rows": "nope"}}}', count=None)
    with pytest.raises(RemoteError) as info:
        _read(server)
    assert "unexpected JSON layout" in info.value.message
