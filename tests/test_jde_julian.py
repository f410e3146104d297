"""JDE Julian dates (CYYDDD) and HHMMSS times: known values from the reference and round trips."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlconnector.jde.julian import (
    date_literal,
    date_to_julian,
    from_datetime,
    jde_time_to_time,
    julian_to_date,
    parse_ais_date,
    parse_date_literal,
    time_to_jde,
    to_datetime,
)

DATES = st.dates(min_value=date(1900, 1, 1), max_value=date(2899, 12, 31))


@pytest.mark.parametrize(("julian", "expected"), [
    (124015, date(2024, 1, 15)), (114001, date(2014, 1, 1)), (99365, date(1999, 12, 31)),
    (124366, date(2024, 12, 31)),  # leap year: day 366 exists
    (100060, date(2000, 2, 29)),
])
def test_reference_values(julian: int, expected: date) -> None:
    assert julian_to_date(julian) == expected
    assert date_to_julian(expected) == julian


def test_blank_values_mean_no_date() -> None:
    assert julian_to_date(0) is None and julian_to_date(None) is None and julian_to_date("") is None
    assert parse_ais_date("") is None and parse_ais_date(None) is None and parse_ais_date(0) is None


def test_impossible_day_is_rejected() -> None:
    with pytest.raises(ValueError):
        julian_to_date(123366)  # 2023 has 365 days
    with pytest.raises(ValueError):
        julian_to_date(124000)


def test_times_without_leading_zero() -> None:
    assert jde_time_to_time(90500) == time(9, 5, 0)
    assert jde_time_to_time(134502) == time(13, 45, 2)
    assert time_to_jde(time(9, 5, 0)) == 90500
    with pytest.raises(ValueError):
        jde_time_to_time(250000)


def test_ais_row_dates_in_every_form_seen() -> None:
    assert parse_ais_date("20240115") == date(2024, 1, 15)
    assert parse_ais_date("2024-01-15") == date(2024, 1, 15)
    assert parse_ais_date(124015) == date(2024, 1, 15)
    assert parse_ais_date("124015") == date(2024, 1, 15)
    with pytest.raises(ValueError):
        parse_ais_date("15.01.2024")


@given(DATES)
def test_julian_round_trip(d: date) -> None:
    j = date_to_julian(d)
    assert julian_to_date(j) == d
    assert parse_ais_date(d.strftime("%Y%m%d")) == d


@given(DATES, DATES)
def test_julian_order_matches_date_order(a: date, b: date) -> None:
    # The connector compares UPMJ values numerically, so the encoding must keep the order.
    assert (date_to_julian(a) < date_to_julian(b)) == (a < b)


@given(st.times().map(lambda t: t.replace(microsecond=0)))
def test_time_round_trip(t: time) -> None:
    assert jde_time_to_time(time_to_jde(t)) == t


@given(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2800, 1, 1)),
       st.integers(min_value=-12 * 60, max_value=14 * 60))
def test_datetime_round_trip_in_server_zone(moment: datetime, offset_minutes: int) -> None:
    tz = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(microsecond=0, tzinfo=UTC)
    jd, hhmmss = from_datetime(aware, tz)
    day = julian_to_date(jd)
    assert day is not None
    assert to_datetime(day, hhmmss, tz) == aware


@given(DATES, st.sampled_from(["MM/dd/yyyy", "dd/MM/yyyy", "yyyy/MM/dd", "dd.MM.yyyy"]))
def test_condition_literals_in_user_format(d: date, pattern: str) -> None:
    if d.year < 1000:
        return
    assert parse_date_literal(date_literal(d, pattern), pattern) == d
    if pattern == "MM/dd/yyyy":
        assert date_literal(date(2024, 1, 15), pattern) == "01/15/2024"
