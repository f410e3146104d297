"""JD Edwards dates and times, both ways, in one place (reference jde-ais.md section 4).

- Julian CYYDDD: (year - 1900) * 1000 + day of year; 0 means blank. 2024-01-15 -> 124015.
- HHMMSS times are numbers without leading zeros: 09:05:00 -> 90500.
- AIS data-service rows render date columns as "yyyyMMdd" strings; Julian numbers are accepted too,
  because which one a given release sends is not confirmed ([U]).
- Condition literals are written in the AIS user's date format (a Java pattern such as MM/dd/yyyy).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

MIN_YEAR = 1900
MAX_YEAR = 2899  # C is one digit in practice (0..9 covers 1900..2899)


def julian_to_date(value: Any) -> date | None:
    """124015 -> date(2024, 1, 15); 0, None or "" -> None. Raises ValueError on an impossible day."""
    if value in (None, "", 0, "0"):
        return None
    j = int(value)
    if j < 0:
        raise ValueError(f"negative Julian date {value!r}")
    year, day = MIN_YEAR + j // 1000, j % 1000
    first = date(year, 1, 1)
    last = date(year, 12, 31).timetuple().tm_yday
    if not 1 <= day <= last:
        raise ValueError(f"Julian date {value!r} has day {day}, but {year} has {last} days")
    return first + timedelta(days=day - 1)


def date_to_julian(d: date) -> int:
    if not MIN_YEAR <= d.year <= MAX_YEAR:
        raise ValueError(f"{d} cannot be written as a JDE Julian date")
    return (d.year - MIN_YEAR) * 1000 + d.timetuple().tm_yday


def jde_time_to_time(value: Any) -> time:
    """90500 -> 09:05:00; blank -> midnight. Raises ValueError on 250000 and the like."""
    if value in (None, ""):
        return time(0, 0, 0)
    s = f"{int(value):06d}"
    if len(s) != 6:
        raise ValueError(f"JDE time {value!r} has more than six digits")
    return time(int(s[:2]), int(s[2:4]), int(s[4:]))


def time_to_jde(t: time) -> int:
    return t.hour * 10000 + t.minute * 100 + t.second


_YMD = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def parse_ais_date(value: Any) -> date | None:
    """A date cell from an AIS row: "20240115", "2024-01-15", or a Julian number (124015)."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return julian_to_date(int(value))
    text = str(value).strip()
    if not text or text == "0":
        return None
    if m := _YMD.match(text):
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if m := _ISO.match(text):
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if text.isdigit():
        return julian_to_date(int(text))
    raise ValueError(f"{value!r} is not a date (expected yyyyMMdd or a Julian CYYDDD number)")


def to_datetime(day: date, hhmmss: Any, tz: tzinfo) -> datetime:
    return datetime.combine(day, jde_time_to_time(hhmmss), tz)


def from_datetime(moment: datetime, tz: tzinfo) -> tuple[int, int]:
    """(Julian date, HHMMSS) of ``moment`` in the JDE server's zone."""
    local = moment.astimezone(tz)
    return date_to_julian(local.date()), time_to_jde(local.time().replace(microsecond=0))


# Java SimpleDateFormat letters AIS reports in userInfo.simpleDateFormat -> strftime.
_JAVA = [("yyyy", "%Y"), ("yy", "%y"), ("MM", "%m"), ("dd", "%d")]


def java_to_strftime(pattern: str) -> str:
    out = pattern
    for java, py in _JAVA:
        out = out.replace(java, py)
    return out


def date_literal(d: date, java_pattern: str) -> str:
    """The date as a condition literal in the AIS user's format (reference 3.4)."""
    return d.strftime(java_to_strftime(java_pattern))


def parse_date_literal(text: str, java_pattern: str) -> date:
    return datetime.strptime(text, java_to_strftime(java_pattern)).date()
