"""Behaviour of the PeopleSoft QAS sandbox over real loopback HTTP."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from mlconnector.sandbox.peoplesoft_sim import PeopleSoftSim
from mlconnector.sandbox.server import SandboxServer

NOW = datetime(2024, 3, 31, 18, 0, 0, tzinfo=UTC)
AUTH = ("ML_CONNECTOR", "sandbox-ps-password")


class Clock:
    def __init__(self) -> None:
        self.value = NOW

    def __call__(self) -> datetime:
        return self.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> PeopleSoftSim:
    return PeopleSoftSim(now=clock, bearer_tokens={"tok-123"})


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SandboxServer]:
    # One listener for the module: stopping a server waits out serve_forever's 0.5 s poll interval.
    with SandboxServer(PeopleSoftSim(), name="peoplesoft") as srv:
        yield srv


@pytest.fixture
def server(shared_server: SandboxServer, sim: PeopleSoftSim) -> SandboxServer:
    shared_server.app = sim
    return shared_server


def query(server: SandboxServer, name: str, lo: str, hi: str, maxrows: int | None = 1000,
          node: str = "PSFT_EP", auth: Any = AUTH, json_resp: bool = True) -> requests.Response:
    params = f"isconnectedquery=N&prompt_psqueryname=&prompt_uniquepromptname=BIND1,BIND2" \
             f"&prompt_fieldvalue={lo},{hi}"
    if maxrows is not None:
        params += f"&maxrows={maxrows}"
    if json_resp:
        params += "&json_resp=true"
    out = "JSON" if json_resp else "XMLP"
    url = f"{server.url}/PSIGW/RESTListeningConnector/{node}/ExecuteQuery.v1/PUBLIC/{name}/{out}/NONFILE"
    url += f"?{params}"
    return requests.get(url, auth=auth, timeout=10)


def rows_of(resp: requests.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success"
    return body["data"]["query"]["rows"]


def test_basic_auth_enforced(server: SandboxServer) -> None:
    for auth in (None, ("ML_CONNECTOR", "wrong"), ("NOBODY", "sandbox-ps-password")):
        resp = query(server, "ML_PO_CHANGED", "2024-03-01", "2024-04-01", auth=auth)
        assert resp.status_code == 401
        assert "Invalid user ID or password" in resp.text and "<IBResponse" in resp.text
    url = f"{server.url}/PSIGW/RESTListeningConnector/PSFT_EP/QueryPrompts.v1/PUBLIC/ML_PO_CHANGED" \
          "?isconnectedquery=N&json_resp=true"
    assert requests.get(url, headers={"Authorization": "Bearer tok-123"}, timeout=10).status_code == 200
    assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401


def test_wrong_node_is_500_158_505(server: SandboxServer) -> None:
    resp = query(server, "ML_PO_CHANGED", "2024-03-01", "2024-04-01", node="PSFT_HR")
    assert resp.status_code == 500
    assert "(158,505)" in resp.text


def test_window_rows_ordered_and_offset(server: SandboxServer, sim: PeopleSoftSim) -> None:
    resp = query(server, "ML_PO_CHANGED", "2024-03-10", "2024-03-20")
    rows = rows_of(resp)
    assert resp.json()["data"]["query"]["numrows"] == len(rows)
    assert resp.json()["data"]["query"]["queryname"] == "ML_PO_CHANGED"
    lo = datetime(2024, 3, 10, 6, tzinfo=UTC)  # midnight at -0600
    hi = datetime(2024, 3, 20, 6, tzinfo=UTC)
    expected = [r for r in sim.rows("purchase_orders")
                if lo <= datetime.strptime(r["LAST_DTTM_UPDATE"], "%Y-%m-%dT%H:%M:%S%z") < hi]
    assert rows and [(r["A.BUSINESS_UNIT"], r["A.PO_ID"]) for r in rows] == \
        [(r["BUSINESS_UNIT"], r["PO_ID"]) for r in expected]
    stamps = [datetime.strptime(r["A.LAST_DTTM_UPDATE"], "%Y-%m-%dT%H:%M:%S%z") for r in rows]
    assert stamps == sorted(stamps)
    assert all(r["A.LAST_DTTM_UPDATE"].endswith("-0600") for r in rows)
    assert [r["attr:rownumber"] for r in rows] == list(range(1, len(rows) + 1))
    first = rows[0]
    assert isinstance(first["A.PO_AMT"], float) and len(first["A.PO_ID"]) == 10
    assert (first["A.VENDOR_SETID"], first["A.VENDOR_ID"]) in sim.keys("vendors")
    datetime.strptime(first["A.PO_DT"], "%Y-%m-%d")


def test_maxrows_truncates_silently(server: SandboxServer) -> None:
    full = rows_of(query(server, "ML_VOUCHER_CHANGED", "2024-01-01", "2024-04-02"))
    assert len(full) == 80
    resp = query(server, "ML_VOUCHER_CHANGED", "2024-01-01", "2024-04-02", maxrows=25)
    assert resp.json()["data"]["query"]["numrows"] == 25
    assert rows_of(resp) == full[:25]
    assert "<IBResponse" in query(server, "ML_VOUCHER_CHANGED", "2024-01-01", "2024-04-02", maxrows=None).text


def test_datetime_prompts_and_bad_prompts(server: SandboxServer, sim: PeopleSoftSim) -> None:
    row = sim.rows("requisitions")[10]
    stamp = datetime.strptime(row["LAST_DTTM_UPDATE"], "%Y-%m-%dT%H:%M:%S%z")
    lo, hi = (f"{t:%Y-%m-%dT%H:%M:%S}" for t in (stamp, stamp + timedelta(seconds=1)))  # local wall time
    got = rows_of(query(server, "ML_REQ_CHANGED", lo, hi))
    assert [(r["A.BUSINESS_UNIT"], r["A.REQ_ID"]) for r in got] == [(row["BUSINESS_UNIT"], row["REQ_ID"])]
    for bad in ("2024-13-45", "03/01/2024", "2024-03-01 10:00:00"):
        resp = query(server, "ML_REQ_CHANGED", bad, "2024-04-01")
        assert "<IBResponse" in resp.text
    url = f"{server.url}/PSIGW/RESTListeningConnector/PSFT_EP/ExecuteQuery.v1/PUBLIC/ML_REQ_CHANGED/JSON/" \
          "NONFILE?isconnectedquery=N&maxrows=10&json_resp=true"
    assert "<IBResponse" in requests.get(url, auth=AUTH, timeout=10).text


def test_deactivated_query_answers_html_200(server: SandboxServer, sim: PeopleSoftSim) -> None:
    sim.deactivate("ML_PO_CHANGED")
    resp = query(server, "ML_PO_CHANGED", "2024-03-01", "2024-04-01")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert "Unable to find a Routing" in resp.text
    sim.activate("ML_PO_CHANGED")
    assert rows_of(query(server, "ML_PO_CHANGED", "2024-03-01", "2024-04-01"))
    assert sim.calls["ML_PO_CHANGED"] == 2


def test_denied_user_and_unknown_query_are_200_errors(server: SandboxServer, sim: PeopleSoftSim) -> None:
    sim.deny("ML_CONNECTOR", "ML_VENDOR_CHANGED")
    resp = query(server, "ML_VENDOR_CHANGED", "2024-03-01", "2024-04-01")
    assert resp.status_code == 200
    root = ET.fromstring(resp.text)
    assert root.tag == "IBResponse" and root.get("type") == "error"
    assert root.findtext("StatusCode") == "20" and root.findtext("MessageID") == "536"
    assert root.findtext("DefaultMessage") == ("User ML_CONNECTOR not authorized to invoke Service Operation "
                                               "QAS_EXECUTEQRY_REST_GET. (158,536)")
    resp = query(server, "ML_X", "2024-03-01", "2024-04-01")
    assert resp.status_code == 200 and "Query ML_X does not exist" in resp.text


def test_touch_moves_row_into_later_window(server: SandboxServer, sim: PeopleSoftSim, clock: Clock) -> None:
    key = next(k for k in sim.keys("purchase_orders") if k[0] == "US001")
    clock.value = NOW + timedelta(days=2)
    sim.touch("purchase_orders", key, PO_STATUS="X")
    later = rows_of(query(server, "ML_PO_CHANGED", "2024-04-02", "2024-04-03"))
    assert [(r["A.BUSINESS_UNIT"], r["A.PO_ID"], r["A.PO_STATUS"]) for r in later] == [(*key, "X")]
    assert later[0]["A.LAST_DTTM_UPDATE"] == "2024-04-02T12:00:00-0600"
    earlier = rows_of(query(server, "ML_PO_CHANGED", "2024-01-01", "2024-04-01"))
    assert (key[0], key[1]) not in {(r["A.BUSINESS_UNIT"], r["A.PO_ID"]) for r in earlier}


def test_add_comment_visible(server: SandboxServer, sim: PeopleSoftSim, clock: Clock) -> None:
    parent = sim.keys("vouchers")[0]
    existing = [r for r in sim.rows("voucher_comments") if (r["BUSINESS_UNIT"], r["VOUCHER_ID"]) == parent]
    clock.value = NOW + timedelta(hours=1)
    added = sim.add_comment("vouchers", parent, "Invoice disputed.\nSee email – ø", oprid="APCLERK")
    assert added["COMMENT_ID"] == len(existing) + 1
    rows = rows_of(query(server, "ML_VOUCHER_COMMENTS", "2024-03-31T12:00:00", "2024-03-31T13:00:01"))
    assert rows == [{"attr:rownumber": 1, "A.BUSINESS_UNIT": parent[0], "A.VOUCHER_ID": parent[1],
                     "A.COMMENT_ID": len(existing) + 1, "A.OPRID": "APCLERK",
                     "A.COMMENTS": "Invoice disputed.\nSee email – ø",
                     "A.LAST_DTTM_UPDATE": "2024-03-31T13:00:00-0600"}]


def test_corrupt_and_raw_rows_pass_through(server: SandboxServer, sim: PeopleSoftSim) -> None:
    key = sim.keys("vouchers")[3]
    stamp = sim.get("vouchers", key)["LAST_DTTM_UPDATE"]
    sim.corrupt("vouchers", key, "INVOICE_DT", "2024-13-45")
    sim.corrupt("vouchers", key, "VOUCHER_ID", "")
    got = sim.get("vouchers", (key[0], ""))
    assert got["INVOICE_DT"] == "2024-13-45" and got["LAST_DTTM_UPDATE"] == stamp
    sim.vendor_stamp = True  # a customer view with a stamp: the windowed vendor query exists
    sim.add_raw("vendors", {"SETID": "SHARE", "VENDOR_ID": "", "NAME1": None,
                            "LAST_DTTM_UPDATE": "2024-03-31T10:00:00-0600"})
    rows = rows_of(query(server, "ML_VENDOR_CHANGED", "2024-03-31T10:00:00", "2024-03-31T10:00:01"))
    assert rows == [{"attr:rownumber": 1, "A.SETID": "SHARE", "A.VENDOR_ID": "", "A.NAME1": None,
                     "A.LAST_DTTM_UPDATE": "2024-03-31T10:00:00-0600"}]


def test_xmlp_and_prompts(server: SandboxServer) -> None:
    resp = query(server, "ML_REQ_CHANGED", "2024-03-01", "2024-04-01", maxrows=3, json_resp=False)
    assert resp.status_code == 200 and "<![CDATA[" in resp.text
    root = ET.fromstring(resp.content)
    assert root.tag.endswith("}query") and root.get("numrows") == "3"
    url = f"{server.url}/PSIGW/RESTListeningConnector/PSFT_EP/QueryPrompts.v1/PUBLIC/ML_REQ_CHANGED" \
          "?isconnectedquery=N&json_resp=true"
    prompts = requests.get(url, auth=AUTH, timeout=10).json()["data"]["queryprompts"]["prompts"]
    assert [(p["UniquePromptName"], p["FieldName"], p["FieldType"]) for p in prompts] == \
        [("BIND1", "LAST_DTTM_UPDATE", "date"), ("BIND2", "LAST_DTTM_UPDATE", "date")]


def test_bulk_load_narrow_window(server: SandboxServer, sim: PeopleSoftSim) -> None:
    start = datetime(2024, 1, 1, 6, tzinfo=UTC)  # midnight -0600
    sim.bulk_load("purchase_orders", 100_000, start, start + timedelta(days=10))
    assert len(sim.keys("purchase_orders")) == 100_120
    # 10 days over 100,000 rows: one row every 8.64 s, so one local hour holds 417 rows
    rows = rows_of(query(server, "ML_PO_CHANGED", "2024-01-05T00:00:00", "2024-01-05T01:00:00", maxrows=5000))
    assert len(rows) == 417
    assert all(r["A.LAST_DTTM_UPDATE"].startswith("2024-01-05T00:") for r in rows)
    assert len({r["A.PO_ID"] for r in rows}) == 417


def full_query(server: SandboxServer, name: str, maxrows: int = 1000) -> requests.Response:
    url = (f"{server.url}/PSIGW/RESTListeningConnector/PSFT_EP/ExecuteQuery.v1/PUBLIC/{name}/JSON/NONFILE"
           f"?isconnectedquery=N&maxrows={maxrows}&json_resp=true")
    return requests.get(url, auth=AUTH, timeout=10)


def test_the_vendor_master_has_no_stamp_by_default(server: SandboxServer, sim: PeopleSoftSim) -> None:
    # PS_VENDOR has no LAST_DTTM_UPDATE: rows carry none, and no windowed vendor query can exist.
    assert all("LAST_DTTM_UPDATE" not in r for r in sim.rows("vendors"))
    assert "LAST_DTTM_UPDATE" not in sim.columns("vendors")
    missing = query(server, "ML_VENDOR_CHANGED", "2024-03-01", "2024-04-01")
    assert "(262,62)" in missing.text
    # The full query takes no prompts and returns every vendor, in key order, without a stamp.
    rows = rows_of(full_query(server, "ML_VENDOR_ALL"))
    assert [(r["A.SETID"], r["A.VENDOR_ID"]) for r in rows] == sorted(sim.keys("vendors"))
    assert all("A.LAST_DTTM_UPDATE" not in r for r in rows)
    assert len(rows_of(full_query(server, "ML_VENDOR_ALL", maxrows=5))) == 5  # maxrows still truncates
    # A touch changes the content; there is no stamp to show it.
    key = sim.keys("vendors")[0]
    sim.touch("vendors", key, NAME1="Renamed Supply")
    assert sim.get("vendors", key) == {**sim.get("vendors", key), "NAME1": "Renamed Supply"}
    assert "LAST_DTTM_UPDATE" not in sim.get("vendors", key)


def test_a_stamped_vendor_view_is_modelled_on_request(server: SandboxServer, clock: Clock) -> None:
    server.app = sim = PeopleSoftSim(now=clock, vendor_stamp=True)
    rows = rows_of(query(server, "ML_VENDOR_CHANGED", "2024-01-01", "2024-04-01"))
    assert rows and all(r["A.LAST_DTTM_UPDATE"].endswith("-0600") for r in rows)
    assert len(rows_of(full_query(server, "ML_VENDOR_ALL"))) == len(sim.keys("vendors"))
