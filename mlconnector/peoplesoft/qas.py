"""PeopleSoft Query Access Service (ExecuteQuery.v1, JSON) client.

QAS has no pagination: a query returns at most ``maxrows`` rows and says nothing when it cut the
rest off. ``read_window`` therefore splits any window that comes back full and reads the halves,
and when a window cannot be split further (date prompts have day granularity) it asks again with a
larger maxrows, so nothing is silently lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import requests

from mlconnector.config import PeopleSoftConfig
from mlconnector.errors import EXIT_CONFIG, AuthError, RemoteError, TokenError
from mlconnector.http import HttpClient, short_body
from mlconnector.jira.adf import scrub

SYSTEM = "PeopleSoft"
ADMIN_PATH = "PeopleTools > Integration Broker > Integration Setup > Service Operations"


@dataclass
class QueryResult:
    rows: list[dict[str, Any]]
    numrows: int
    maxrows: int

    @property
    def truncated(self) -> bool:
        return self.numrows >= self.maxrows


def _ib_message(text: str) -> str | None:
    m = re.search(r"<DefaultMessage>(.*?)</DefaultMessage>", text, re.S | re.I)
    if m:
        return " ".join(m.group(1).replace("<![CDATA[", "").replace("]]>", "").split())
    return None


def explain_ib_error(text: str, query: str, node: str, user: str) -> str:
    """One paragraph naming the cause and the admin action, from a PeopleSoft error body."""
    msg = _ib_message(text)
    if re.search(r"Unable to find a Routing", text, re.I):
        return (f"PeopleSoft has no active routing for ExecuteQuery.v1 on node {node} (query {query}): it "
                f"answered with its HTML 'Unable to find a Routing' page. Ask the PeopleSoft admin to activate "
                f"the service operation QAS_EXECUTEQRY_REST_GET and its any-to-local routing ({ADMIN_PATH}).")
    if msg and "(158,536)" in msg:
        return (f"PeopleSoft user {user or '(token user)'} may not run query {query}: {msg} Ask the PeopleSoft "
                f"admin to add the service operation to one of the user's permission lists (QAS: PTPT2200 / "
                f"role QAS Admin) and to grant query access to the records the query reads.")
    if msg and "(158,505)" in msg:
        return (f"PeopleSoft did not recognise node {node}: {msg} Set node in [peoplesoft] to the database's "
                f"default local node (PeopleTools > Integration Broker > Integration Setup > Nodes, the row "
                f"flagged Default Local; FSCM ships PSFT_EP).")
    if msg and "(158,55)" in msg:
        return (f"PeopleSoft rejected the user: {msg} Check the OPRID in [peoplesoft] user and that the "
                f"account is not locked.")
    if msg:
        return f"PeopleSoft answered query {query} with an error: {msg}"
    return f"PeopleSoft answered query {query} with something that is not a query result: {short_body(text, 200)}"


class QASClient:
    def __init__(self, cfg: PeopleSoftConfig, auth: Any) -> None:
        self.cfg = cfg
        self.http = HttpClient(SYSTEM, cfg.base_url, cfg.http, auth=auth, is_permanent=self._permanent,
                               config_hint="the [peoplesoft] section of the configuration")
        self.calls = 0

    @staticmethod
    def _permanent(resp: requests.Response) -> bool:
        # A wrong node or a missing handler is a setup problem: retrying only delays the message.
        return "(158,505)" in resp.text or "Routing" in resp.text

    def close(self) -> None:
        self.http.close()

    def query_url(self, query: str) -> str:
        c = self.cfg
        return (f"/PSIGW/RESTListeningConnector/{quote(c.node)}/ExecuteQuery.v1/{c.owner_type}/"
                f"{quote(query)}/JSON/NONFILE")

    def execute(self, query: str, prompt_values: tuple[str, str] | None, maxrows: int) -> QueryResult:
        c = self.cfg
        # The query string is built by hand: the prompt lists are comma-separated and whether
        # PeopleSoft decodes %2C is unverified (reference 3.5), so commas stay literal.
        qs = f"isconnectedquery=N&maxrows={maxrows}&json_resp=true"
        if prompt_values is not None:
            names = ",".join(c.prompt_names)
            values = ",".join(quote(v, safe="-:T") for v in prompt_values)
            qs += f"&prompt_psqueryname=&prompt_uniquepromptname={names}&prompt_fieldvalue={values}"
        self.calls += 1
        try:
            resp = self.http.request("GET", f"{self.query_url(query)}?{qs}")
        except TokenError:
            raise  # the identity provider's own message says what to fix
        except AuthError:
            raise AuthError(
                f"PeopleSoft refused the credentials of {c.user or 'the OAuth2 client'} (HTTP 401). Check user in "
                f"[peoplesoft] and the secret (mlconnector secrets set "
                f"{'peoplesoft.password' if c.auth == 'basic' else 'peoplesoft.client_secret'}); the account may "
                f"also be locked, or the service operation may require another authentication type."
            ) from None
        except RemoteError as exc:
            if exc.raw and ("IBResponse" in exc.raw or "Routing" in exc.raw):
                raise RemoteError(explain_ib_error(exc.raw, query, c.node, c.user), system=SYSTEM,
                                  status=exc.status, raw=exc.raw) from None
            raise
        return self._parse(resp, query, maxrows)

    def _parse(self, resp: requests.Response, query: str, maxrows: int) -> QueryResult:
        text = resp.text
        head = text.lstrip()[:1]
        if head != "{":
            # HTTP 200 with an HTML routing page or an IBResponse: an error all the same.
            raise RemoteError(explain_ib_error(text, query, self.cfg.node, self.cfg.user), system=SYSTEM,
                              status=resp.status_code, raw=text[:20000])
        try:
            body = json.loads(text)
        except ValueError:
            raise RemoteError(f"PeopleSoft answered query {query} with malformed JSON: {short_body(text, 160)}",
                              system=SYSTEM, status=resp.status_code, raw=text[:20000], retryable=True) from None
        status = body.get("status") if isinstance(body, dict) else None
        if status != "success":
            raise RemoteError(
                f"PeopleSoft answered query {query} with status {status!r} instead of 'success': "
                f"{short_body(text, 200)}",
                system=SYSTEM, status=resp.status_code, raw=text[:20000])
        try:
            q = body["data"]["query"]
            rows = q.get("rows") or []
            if not isinstance(rows, list):
                raise TypeError
            numrows = int(q.get("numrows", len(rows)))
        except (KeyError, TypeError, ValueError):
            raise RemoteError(f"PeopleSoft answered query {query} with an unexpected JSON layout: "
                              f"{short_body(text, 200)}", system=SYSTEM, raw=text[:20000]) from None
        return QueryResult([normalise_row(r) for r in rows if isinstance(r, dict)], max(numrows, len(rows)),
                           maxrows)

    # -- windows ---------------------------------------------------------------------------------
    def _margin(self) -> timedelta:
        """How much each window is widened when the database time zone is unknown."""
        if _offset(self.cfg.db_utc_offset) is not None:
            return timedelta(0)
        return timedelta(days=1) if self.cfg.prompt_format == "date" else timedelta(hours=14)

    def prompt_values(self, start: datetime, end: datetime) -> tuple[str, str]:
        c = self.cfg
        tz = _offset(c.db_utc_offset) or UTC
        # Unknown database time zone: widen so the window covers any offset; dedupe absorbs the overlap.
        margin = self._margin()
        lo = (start - margin).astimezone(tz)
        hi = (end + margin).astimezone(tz)
        if c.prompt_format == "date":
            hi_date = hi.date() if hi.time() == datetime.min.time() else hi.date() + timedelta(days=1)
            return lo.date().isoformat(), hi_date.isoformat()
        return lo.strftime("%Y-%m-%dT%H:%M:%S"), (hi + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")

    def _split_point(self, start: datetime, end: datetime) -> datetime | None:
        """Where to split a full window so both halves ask for strictly less, or None if it cannot be."""
        span = end - start
        # Halving a widened window barely narrows what is asked for: below this, raise maxrows instead.
        if span <= 2 * self._margin() or span <= timedelta(seconds=2):
            return None
        mid = start + span / 2
        if self.cfg.prompt_format == "date":
            # Date prompts have day granularity: split on the database-local midnight nearest the middle.
            tz = _offset(self.cfg.db_utc_offset) or UTC
            local = mid.astimezone(tz)
            floor = local.replace(hour=0, minute=0, second=0, microsecond=0)
            cands = [c.astimezone(UTC) for c in (floor, floor + timedelta(days=1)) if start < c < end]
            if not cands:
                return None
            mid = min(cands, key=lambda c: abs(c - mid))
        parent = self.prompt_values(start, end)
        if self.prompt_values(start, mid) == parent or self.prompt_values(mid, end) == parent:
            return None
        return mid

    def read_window(self, query: str, start: datetime, end: datetime) -> Iterator[tuple[list[dict[str, Any]],
                                                                                      datetime]]:
        """Yield (rows, covered_until) for [start, end) in chronological sub-windows, none truncated."""
        yield from self._read(query, start, end, self.cfg.maxrows)

    def read_all(self, query: str) -> Iterator[list[dict[str, Any]]]:
        """Every row of a query that takes no prompts (a reference table read in full, see sync/reference.py).

        QAS has no paging, so this is one request with maxrows = max_maxrows; a result that fills it is
        refused rather than diffed (the rows cut off would look unchanged)."""
        maxrows = self.cfg.max_maxrows
        result = self.execute(query, None, maxrows)
        if result.truncated:
            raise RemoteError(
                f"Query {query} returned the maximum of {maxrows} rows, so the rest of the table was cut off and "
                f"it was not diffed (nothing was written). It is read in full (read = \"full\"): raise "
                f"max_maxrows in [peoplesoft] above the number of rows the table has.", system=SYSTEM,
                exit_code=EXIT_CONFIG)
        yield result.rows

    def _read(self, query: str, start: datetime, end: datetime, maxrows: int) -> Iterator[
            tuple[list[dict[str, Any]], datetime]]:
        prompts = self.prompt_values(start, end)
        result = self.execute(query, prompts, maxrows)
        if not result.truncated:
            yield result.rows, end
            return
        del result  # a truncated page is not used: kept through the recursion, it would cost a page per level
        mid = self._split_point(start, end)
        if mid is not None:
            yield from self._read(query, start, mid, maxrows)
            yield from self._read(query, mid, end, maxrows)
            return
        if maxrows < self.cfg.max_maxrows:
            yield from self._read(query, start, end, min(maxrows * 2, self.cfg.max_maxrows))
            return
        raise RemoteError(
            f"Query {query} returned the maximum of {maxrows} rows for {prompts[0]}..{prompts[1]}, a window that "
            f"cannot be split further, so some rows would be cut off. Raise max_maxrows in [peoplesoft], or "
            f"use datetime prompts (prompt_format = \"datetime\") so windows can be narrower than a day.",
            system=SYSTEM)


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """Drop the row counter and PS Query's record alias prefixes ("A.PO_ID" -> "PO_ID")."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k.startswith("attr:"):
            continue
        bare = k.split(".", 1)[1] if "." in k else k
        # Two records may both have, say, DESCR: keep the first bare, the others prefixed.
        out[k if bare in out else bare] = scrub(v) if isinstance(v, str) else v
    return out


def _offset(value: str | None) -> timezone | None:
    if not value:
        return None
    return datetime.strptime(value.replace(":", ""), "%z").tzinfo  # type: ignore[return-value]


def parse_ps_datetime(value: Any) -> datetime:
    """QAS datetimes carry the database offset (2024-03-05T14:02:11-0600); return an aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"missing timestamp {value!r}")
    v = value.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d-%H.%M.%S.%f"):
        try:
            dt = datetime.strptime(v, fmt)
            break
        except ValueError:
            continue
    else:
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"unreadable timestamp {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
