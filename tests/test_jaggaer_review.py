"""Review findings on `sync peoplesoft-jaggaer`, reproduced on the simulators (127.0.0.1, port 0): PO_REF
carries a prefix so a PO a person keyed with the bare JAGGAER number is never adopted, while POs written under
the bare number before an upgrade are still found; a page count in quotes still pages every row and an
unreadable one fails the read; a lowercase vendor handle prefix still finds the supplier (VENDOR_NAME_SHORT is
uppercase); requisition lines are read by the requisitions read, never replaced by one lump line."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from mlconnector.errors import RemoteError
from mlconnector.jaggaer.client import JaggaerClient, JaggaerToken
from mlconnector.jaggaer.config import parse_jaggaer
from mlconnector.peoplesoft.qas import QASClient, parse_ps_datetime
from mlconnector.sandbox.jaggaer_sim import CLIENT_ID, CLIENT_SECRET, JaggaerSim
from mlconnector.sandbox.server import Fault, SandboxServer
from mlconnector.sections import Section
from tests.test_jaggaer_client import FAST, Clock
from tests.test_peoplesoft_jaggaer import JEnv, jenv  # noqa: F401 (fixture)


@pytest.fixture
def jsim() -> Iterator[tuple[JaggaerSim, JaggaerClient]]:
    clock = Clock()
    s = JaggaerSim(clock=clock)
    server = SandboxServer(s, "jaggaer").start()
    cfg = parse_jaggaer(Section({"base_url": server.url, "client_id": CLIENT_ID, "token_cache": "none"}, "jaggaer"))
    cfg.http = FAST
    c = JaggaerClient(cfg, JaggaerToken(cfg, CLIENT_SECRET, clock=clock))
    try:
        yield s, c
    finally:
        c.close()
        server.stop()


# -- b. paging counts that are not JSON numbers ------------------------------------------------------
def test_counts_sent_as_numeric_strings_still_page_every_row(jsim: tuple[JaggaerSim, JaggaerClient]) -> None:
    s, c = jsim
    for n in range(5):
        s.add_supplier(f"Supplier {n}", ext_code=f"{n:010d}")
    s.count_style = "str"
    pages = list(c.changed(c.cfg.suppliers, datetime(2020, 1, 1, tzinfo=UTC)))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert len(c.find(c.cfg.suppliers, "extCode", "0000000004")) == 1


def test_an_unreadable_count_fails_the_read_instead_of_ending_it(jsim: tuple[JaggaerSim, JaggaerClient]) -> None:
    s, c = jsim
    for n in range(5):
        s.add_supplier(f"Supplier {n}", ext_code=f"{n:010d}")
    s.count_style = "garbage"
    with pytest.raises(RemoteError, match="returnedRecords|totRecords") as info:
        list(c.changed(c.cfg.suppliers, datetime(2020, 1, 1, tzinfo=UTC)))
    assert "not a whole number" in str(info.value) and "next pass" in str(info.value)


def test_an_unreadable_count_posts_nothing_and_moves_no_watermark(jenv: JEnv) -> None:  # noqa: F811
    jenv.box.jaggaer.count_style = "garbage"
    r = jenv.sync()
    assert r.exit_code != 0
    assert any("not a whole number" in f["error"] for f in r.failures), r.failures
    assert not jenv.box.purchasing.pos
    jenv.box.jaggaer.count_style = "int"
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    assert len(jenv.box.purchasing.pos) == len(jenv.box.jaggaer.pos)  # nothing was skipped by the failed read


# -- c. VENDOR_NAME_SHORT is an uppercase field ----------------------------------------------------------
def test_a_lowercase_vendor_handle_prefix_still_finds_the_supplier_after_a_lost_answer(jenv: JEnv) -> None:  # noqa: F811
    box = jenv.box
    jenv.write_config(extra_pair='vendor_handle_prefix = "jgrs-"\npending_grace_seconds = 0')
    box.jaggaer.add_po("JP2000", box.jaggaer_only, [{"description": "Valve", "quantity": 2, "unitPrice": "40",
                                                     "accountCode": "6300"}])
    box.ps_server.faults.add(Fault("drop_after", method="POST", body_match="Create__CompIntfc__VNDR_ID", count=1))
    r = jenv.sync()
    assert any(f["kind"] == "ps_vendors" and "was lost" in f["error"] for f in r.failures), r.failures
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["ps_vendors"].adopted == 1 and r.counts["ps_vendors"].created == 0
    made = [v for v in box.purchasing.vendors.values() if v.get("NAME1") == "Fresh Supplier Ltd"]
    assert len(made) == 1 and made[0]["VENDOR_NAME_SHORT"] == f"JGRS-{box.jaggaer_only}"
    assert box.purchasing.calls["CI_VNDR_ID_C"] == 1


# -- d. requisition lines are read by the requisitions read, never replaced by one lump line ------------
LINES_QUERY = "ML_REQ_LINES"


def _serve_lines(monkeypatch: pytest.MonkeyPatch, lines: list[dict[str, Any]]) -> None:
    """A requisition-lines query on the PeopleSoft side: rows whose LAST_DTTM_UPDATE is in the prompt window,
    as QAS would return them (the shared QAS simulator has no line table)."""
    original = QASClient.read_window

    def read_window(self: QASClient, query: str, start: datetime, end: datetime) -> Any:
        if query != LINES_QUERY:
            yield from original(self, query, start, end)
            return
        yield [dict(ln) for ln in lines if start <= parse_ps_datetime(ln["LAST_DTTM_UPDATE"]) <= end], end

    monkeypatch.setattr(QASClient, "read_window", read_window)


def _line(req: dict[str, Any], nbr: int, descr: str) -> dict[str, Any]:
    return {"BUSINESS_UNIT": req["BUSINESS_UNIT"], "REQ_ID": req["REQ_ID"], "LINE_NBR": nbr, "DESCR254": descr,
            "QTY_REQ": 2, "PRICE_REQ": "10.5", "UNIT_OF_MEASURE": "EA", "ACCOUNT": "640000", "DEPTID": "FAC",
            "LAST_DTTM_UPDATE": req["LAST_DTTM_UPDATE"]}  # written with the requisition, untouched since


def _jreq(env: JEnv, req: dict[str, Any]) -> list[dict[str, Any]]:
    want = f"PSREQ-{req['BUSINESS_UNIT']}-{req['REQ_ID']}"
    return [r for r in env.box.jaggaer.requisitions.values() if r["externalRequisitionNumber"] == want]


def test_a_requisition_approved_after_its_lines_changed_is_sent_with_its_lines(
        jenv: JEnv, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    box = jenv.box
    reqs = box.ps.rows("requisitions")
    late = next(r for r in reqs if r["REQ_STATUS"] not in ("A", "P"))
    _serve_lines(monkeypatch, [_line(r, n, f"Item {n}") for r in reqs for n in (1, 2)])
    jenv.write_config(extra_pair=f'pending_grace_seconds = 0\nrequisition_lines_query = "{LINES_QUERY}"')
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    assert not _jreq(jenv, late)
    box.ps.touch("requisitions", (late["BUSINESS_UNIT"], late["REQ_ID"]), REQ_STATUS="A")  # approved today
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    (sent,) = _jreq(jenv, late)
    assert [ln["description"] for ln in sent["lines"]] == ["Item 1", "Item 2"]  # not one lump line


def test_a_requisition_whose_lines_query_returns_nothing_waits_then_goes_with_its_lines(
        jenv: JEnv, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    box = jenv.box
    reqs = box.ps.rows("requisitions")
    bare = next(r for r in reqs if r["REQ_STATUS"] == "A")
    lines = [_line(r, 1, "Item 1") for r in reqs if r is not bare]
    _serve_lines(monkeypatch, lines)
    jenv.write_config(extra_pair=f'pending_grace_seconds = 0\nrequisition_lines_query = "{LINES_QUERY}"')
    r = jenv.sync()
    assert not _jreq(jenv, bare)  # never sent header-only
    (fail,) = [f for f in r.failures if f["kind"] == "requisitions"]
    assert "returned no lines" in fail["error"] and "requisition_lines_query" in fail["error"]
    lines.append(_line(bare, 1, "Late line"))
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    (sent,) = _jreq(jenv, bare)
    assert [ln["description"] for ln in sent["lines"]] == ["Late line"]


# -- a. PO_REF carries a prefix; POs written under the bare number are still found ---------------------------
def _item(qty: int) -> list[dict[str, Any]]:
    return [{"description": "Item 0-0", "quantity": qty, "unitPrice": "12.5", "unitOfMeasure": "EA",
             "accountCode": "6100"}]


def test_a_po_a_person_keyed_with_the_bare_jaggaer_number_is_never_adopted(jenv: JEnv) -> None:  # noqa: F811
    box = jenv.box
    assert jenv.sync().exit_code == 0
    first = next(iter(box.jaggaer.pos))
    box.jaggaer.add_po("JP3000", box.jaggaer.pos[first]["header"]["supplier"]["id"], _item(5))
    (ours,) = box.purchasing.pos_with_ref(f"JAG-{first}")
    manual = copy.deepcopy(ours)  # keyed by a person, same business unit and vendor, PO_REF = the bare number
    manual.update(PO_ID="MANUAL0001", PO_REF="JP3000")
    box.purchasing.pos[(manual["BUSINESS_UNIT"], "MANUAL0001")] = manual
    kept = copy.deepcopy(manual)
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["purchase_orders"].created == 1 and r.counts["purchase_orders"].adopted == 0
    (made,) = box.purchasing.pos_with_ref("JAG-JP3000")
    assert Decimal(str(made["PO_LINE"][0]["QTY_PO"])) == 5
    assert box.purchasing.pos[(manual["BUSINESS_UNIT"], "MANUAL0001")] == kept  # untouched


def test_an_upgrade_finds_pos_written_under_the_bare_number_and_creates_none(jenv: JEnv) -> None:  # noqa: F811
    box = jenv.box
    jenv.write_config(extra_pair='pending_grace_seconds = 0\npo_handle_prefix = ""')  # as the earlier default
    assert jenv.sync().exit_code == 0
    numbers = sorted(box.jaggaer.pos)
    assert all(len(box.purchasing.pos_with_ref(n)) == 1 for n in numbers)
    lost, kept = numbers[0], numbers[1]
    state = jenv.state()
    state.drop_entry("purchase_orders", lost)  # e.g. a state restored from before that PO was written
    state.save()
    jenv.write_config()  # upgraded: po_handle_prefix now defaults to "JAG-"
    box.jaggaer.revise_po(lost, lines=_item(7))
    box.jaggaer.add_po("JP3000", box.jaggaer.pos[lost]["header"]["supplier"]["id"], _item(5))
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["purchase_orders"].created == 1  # only the new PO, under the prefix
    assert [p["PO_REF"] for p in box.purchasing.pos.values() if p["PO_REF"].startswith("JAG-")] == ["JAG-JP3000"]
    assert len(box.purchasing.pos) == len(numbers) + 1
    (a,) = box.purchasing.pos_with_ref(lost)
    assert Decimal(str(a["PO_LINE"][0]["QTY_PO"])) == 7  # the revision reached the PO found under the bare number
    assert len(box.purchasing.pos_with_ref(kept)) == 1
    calls = box.purchasing.calls["CI_PO_EXPRESS_UD"]
    r = jenv.sync()
    assert r.exit_code == 0 and box.purchasing.calls["CI_PO_EXPRESS_UD"] == calls  # settled: nothing resent
