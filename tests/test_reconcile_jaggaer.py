"""`reconcile peoplesoft-jaggaer` against the JAGGAER and PeopleSoft (PO and voucher CI) simulators: each class
made to happen (a PO or voucher edited in PeopleSoft, a PeopleSoft record deleted, a JAGGAER PO deleted, a
record queued, a queued record dropped, a create left pending, a PO keyed by hand with our handle) and named by
the report; PO amounts and voucher gross both sides equal sums computed by hand."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import sandbox_environ
from test_peoplesoft_jaggaer import JEnv

from mlconnector import config as config_mod
from mlconnector.errors import EXIT_NOT_IN_STEP, EXIT_OK
from mlconnector.reconcile import reconcile
from mlconnector.sandbox.jaggaer_run import ACCOUNTS, start_jaggaer_sandbox
from mlconnector.sync.keys import encode_key
from mlconnector.sync.links import mark_pending

pytest.importorskip("mlconnector.peoplesoft.voucher_sink")
CENT = Decimal("0.01")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JEnv]:
    box = start_jaggaer_sandbox(pos=5, invoices=3)
    sandbox_environ(monkeypatch, box.env(), tmp_path / "cache")
    e = JEnv(box, tmp_path)
    e.write_config()
    try:
        yield e
    finally:
        box.stop()


def _run(env: JEnv, *, fix: bool = False) -> Any:
    def writes() -> tuple[int, int, int]:
        acc = env.box.accounting.calls
        return env.ps_writes(), acc["CI_VCHR_EXPRESS_C"] + acc["CI_VCHR_EXPRESS_UD"], env.j_writes()

    before, state = writes(), env.state_file.read_bytes()
    report = reconcile("peoplesoft-jaggaer", config_mod.load(env.config), fix=fix)
    assert writes() == before and env.state_file.read_bytes() == state  # read-only
    return report


def _jaggaer_total(po: dict[str, Any]) -> Decimal:
    """A JAGGAER PO's amount by hand: quantity x unit price per line, to the cent."""
    return sum((Decimal(str(ln["quantity"])) * Decimal(str(ln["unitPrice"]["money"]))).quantize(CENT, ROUND_HALF_UP)
               for ln in po["lines"])


def _ps_total(po: dict[str, Any]) -> Decimal:
    return sum((Decimal(str(d["MERCHANDISE_AMT"])) for ln in po["PO_LINE"] for d in ln["PO_LINE_DISTRIB"]),
               Decimal(0))


def _key(number: str) -> str:
    return encode_key((number,))


def test_purchase_orders_every_class_and_po_amounts_both_sides(env: JEnv) -> None:
    jag, ps = env.box.jaggaer, env.box.purchasing
    supplier = next(iter(env.box.linked))
    held = jag.add_po("JP1005", supplier, [{"description": "Odd", "quantity": 1, "unitPrice": "9",
                                            "accountCode": "6999"}])  # no such account code: it waits
    assert env.sync().exit_code != EXIT_OK
    report = _run(env)
    assert report.exit_code == EXIT_OK  # the waiting one is explained by the queue
    counts = report.counts["purchase_orders"]
    assert (counts["in_step"], counts["waiting"]) == (5, 1)
    m = report.money_dict()["purchase_orders"]
    synced = sum((_jaggaer_total(p) for n, p in jag.pos.items() if n != "JP1005"), Decimal(0))
    assert m["target"] == str(synced.quantize(CENT)) and m["difference"] == "0.00"  # the waiting one maps to none

    refs = env.pos_by_ref()
    (edited,) = refs["JP1000"]  # edited in PeopleSoft: the first distribution's amount
    dist = edited["PO_LINE"][0]["PO_LINE_DISTRIB"][0]
    dist["MERCHANDISE_AMT"] = str(Decimal(str(dist["MERCHANDISE_AMT"])) + 100)
    jag.revise_po("JP1001", lines=[  # changed in JAGGAER (the first line's quantity), not synced yet
        {"description": "Item 1-0", "quantity": 9, "unitPrice": "12.5", "accountCode": "6200"},
        {"description": "Item 1-1", "quantity": 3, "unitPrice": "13.5", "accountCode": "6300"}])
    (gone,) = refs["JP1002"]
    del ps.pos[(gone["BUSINESS_UNIT"], gone["PO_ID"])]  # purged in PeopleSoft
    copied = copy.deepcopy(gone)  # keyed by hand with one of our handles, for no JAGGAER PO
    copied.update(PO_ID="0009999001", PO_REF="JAG-JP9999")
    ps.pos[("US001", "0009999001")] = copied
    (dropped,) = refs["JP1003"]
    del jag.pos["JP1003"]  # deleted in JAGGAER: its PeopleSoft PO stays
    fresh = jag.add_po("JP1006", supplier, [{"description": "New", "quantity": 2, "unitPrice": "5",
                                             "accountCode": "6100"}])  # not synced yet
    late = jag.add_po("JP1007", supplier, [{"description": "Late", "quantity": 3, "unitPrice": "4",
                                            "accountCode": "6300"}])
    state = env.state()  # a pass killed between its pending mark and the Create
    state.set_entry("purchase_orders", _key("JP1007"), mark_pending({"handle": "JAG-JP1007", "hash": ""}))
    state.save()

    report = _run(env, fix=True)  # --fix: the pass's plan for the missing and drifted ones (nothing written)
    assert report.exit_code == EXIT_NOT_IN_STEP
    by = {f.key: f for f in report.findings if f.kind == "purchase_orders" and f.cls != "orphaned"}
    assert by[_key("JP1001")].fix == "update" and by[_key("JP1006")].fix == "create"
    assert by[_key("JP1000")].fix.startswith("none: ")  # a PO edited in PeopleSoft is not mended by a pass
    assert {k: f.cls for k, f in by.items()} == {
        _key("JP1000"): "drifted", _key("JP1001"): "drifted", _key("JP1002"): "missing", _key("JP1003"): "deleted",
        _key("JP1004"): "in_step", _key("JP1005"): "waiting", _key("JP1006"): "missing",
        _key("JP1007"): "pending"}
    assert by[_key("JP1000")].changed == "target" and by[_key("JP1000")].fields == ["line 1 MERCHANDISE_AMT"]
    assert by[_key("JP1001")].changed == "source" and "line 1 QTY_PO" in by[_key("JP1001")].fields
    assert "no longer exists in PeopleSoft" in by[_key("JP1002")].reason
    assert "not in PeopleSoft" in by[_key("JP1006")].reason
    assert "6999" in by[_key("JP1005")].reason
    assert by[_key("JP1003")].issue == f"US001/{dropped['PO_ID']}"
    [orphan] = [f for f in report.findings if f.cls == "orphaned"]
    assert orphan.issue == "US001/0009999001" and "JAG-JP9999" in orphan.reason

    # By hand: JAGGAER's amount of every PO that maps (the waiting one does not; the deleted one is gone),
    # PeopleSoft's distribution amounts of every PO carrying our prefix.
    m = report.money_dict()["purchase_orders"]
    source = sum((_jaggaer_total(p) for n, p in jag.pos.items() if n != "JP1005"), Decimal(0))
    target = sum((_ps_total(p) for p in ps.pos.values() if p["PO_REF"].startswith("JAG-")), Decimal(0))
    assert (m["source"], m["target"]) == (str(source.quantize(CENT)), str(target.quantize(CENT)))
    assert Decimal(m["difference"]) == source - target
    assert m["by_class"]["orphaned"]["target"] == str(_ps_total(copied).quantize(CENT))
    assert m["by_class"]["deleted"]["target"] == str(_ps_total(dropped).quantize(CENT))
    assert fresh and late and held  # (made above)


def test_invoices_against_vouchers_every_class_and_gross_both_sides(env: JEnv) -> None:
    jag, acc = env.box.jaggaer, env.box.accounting
    assert env.sync().exit_code == EXIT_OK
    report = _run(env)
    assert report.exit_code == EXIT_OK and report.counts["invoices"]["in_step"] == 3
    m = report.money_dict()["invoices"]
    total = sum((Decimal(str(i["header"]["total"]["value"])) for i in jag.invoices.values()), Decimal(0))
    assert m["source"] == m["target"] == str(total.quantize(CENT))

    by_number = {v["INVOICE_ID"]: (k, v) for k, v in acc.vouchers.items()}
    inv_of = {i["header"]["supplierInvoiceNumber"]: str(i["header"]["invoiceId"]) for i in jag.invoices.values()}
    _, edited = by_number["INV-7000"]  # edited in PeopleSoft: gross and the line
    edited["GROSS_AMT"] = str(Decimal(str(edited["GROSS_AMT"])) + 10)
    gone_key, _ = by_number["INV-7001"]
    del acc.vouchers[gone_key]  # deleted in PeopleSoft
    # A queued invoice dropped from the queue by a person: its PO waits (account code unmapped), so it waits;
    # once dropped, nothing explains it any more.
    held = jag.pos["JP1004"]["lines"][0]["accountCode"]
    env.write_config(accounts={k: v for k, v in ACCOUNTS.items() if k != held})
    state = env.state()
    state.drop_entry("purchase_orders", _key("JP1004"))
    state.save()  # JP1004's link forgotten: its PO now waits for the account code, and its invoice for it
    dropped = jag.add_invoice("JP1004", "INV-8001")
    env.sync()
    state = env.state()
    assert any(i["kind"] == "invoices" and i["key"] == _key(str(dropped["header"]["invoiceId"])) for i in state.replay)
    state.replay = [i for i in state.replay if i["kind"] != "invoices"]  # `replay drop`
    fresh = jag.add_invoice("JP1003", "INV-8000")  # not synced yet
    late = jag.add_invoice("JP1002", "INV-8002")  # a pass killed between its pending mark and the Create
    state.set_entry("invoices", _key(str(late["header"]["invoiceId"])), mark_pending(
        {"business_unit": "US001", "vendor_setid": "SHARE", "vendor": "x", "invoice": "INV-8002", "hash": ""}))
    state.save()

    report = _run(env)
    assert report.exit_code == EXIT_NOT_IN_STEP
    by = {f.key: f for f in report.findings if f.kind == "invoices"}
    classes = {k: f.cls for k, f in by.items()}
    assert classes == {
        _key(inv_of["INV-7000"]): "drifted", _key(inv_of["INV-7001"]): "missing",
        _key(inv_of["INV-7002"]): "in_step", _key(str(fresh["header"]["invoiceId"])): "missing",
        _key(str(dropped["header"]["invoiceId"])): "missing", _key(str(late["header"]["invoiceId"])): "pending"}
    assert by[_key(inv_of["INV-7000"])].fields == ["GROSS_AMT"] and by[_key(inv_of["INV-7000"])].changed == "target"
    assert "no longer exists in PeopleSoft" in by[_key(inv_of["INV-7001"])].reason
    assert "JP1004" in by[_key(str(dropped["header"]["invoiceId"]))].reason  # waits for its PO: the reason says so

    # By hand: every JAGGAER invoice total that maps (the dropped one's PO is not in PeopleSoft: it does not
    # map), against the gross of every voucher PeopleSoft holds.
    m = report.money_dict()["invoices"]
    source = sum((Decimal(str(i["header"]["total"]["value"])) for i in jag.invoices.values()
                  if i is not dropped), Decimal(0))
    target = sum((Decimal(str(v["GROSS_AMT"])) for v in acc.vouchers.values()), Decimal(0))
    assert (m["source"], m["target"]) == (str(source.quantize(CENT)), str(target.quantize(CENT)))
    assert m["difference"] == str((source - target).quantize(CENT)) != "0.00"


def test_suppliers_and_requisitions_every_class(env: JEnv) -> None:
    jag, ps = env.box.jaggaer, env.box.ps
    assert env.sync().exit_code == EXIT_OK
    report = _run(env)
    assert report.exit_code == EXIT_OK, [f.to_dict() for f in report.differ]
    active = [v for v in ps.rows("vendors") if v["VENDOR_STATUS"] == "A"]
    assert report.counts["suppliers"]["in_step"] == len(active)
    assert report.counts["requisitions"]["in_step"] == len(jag.requisitions) > 2

    vendors = {s["extCode"]: bid for bid, s in jag.suppliers.items() if s["extCode"]}
    person, renamed = active[0]["VENDOR_ID"], active[1]["VENDOR_ID"]
    jag.change_supplier(vendors[person], city="Edited By Hand")  # a person's change in JAGGAER
    ps.touch("vendors", (active[1]["SETID"], renamed), NAME1="Renamed In PeopleSoft")  # not synced yet
    stray = jag.add_supplier("Typed By Hand", ext_code="0000999999")["bravoId"]  # names no PeopleSoft vendor
    reqs = sorted(jag.requisitions.values(), key=lambda r: r["requisitionId"])
    del jag.requisitions[reqs[0]["requisitionId"]]  # deleted in JAGGAER
    reqs[1]["lines"][0]["quantity"] = 99  # edited in JAGGAER

    report = _run(env)
    assert report.exit_code == EXIT_NOT_IN_STEP
    sup = {f.key: f for f in report.differ if f.kind == "suppliers"}
    assert {k: f.cls for k, f in sup.items()} == {encode_key(("SHARE", person)): "drifted",
                                                  encode_key(("SHARE", renamed)): "drifted",
                                                  encode_key(("SHARE", "0000999999")): "orphaned"}
    assert sup[encode_key(("SHARE", person))].fields == ["city"] and sup[encode_key(("SHARE", person))].changed == \
        "target"
    assert sup[encode_key(("SHARE", renamed))].changed == "source"
    assert sup[encode_key(("SHARE", "0000999999"))].issue == stray
    req = {f.issue or f.key: f for f in report.differ if f.kind == "requisitions"}
    assert {f.cls for f in req.values()} == {"missing", "drifted"}
    gone = next(f for f in req.values() if f.cls == "missing")
    assert "no longer in JAGGAER" in gone.reason and reqs[0]["externalRequisitionNumber"] in gone.reason
    assert req[str(reqs[1]["requisitionId"])].fields == ["line 1 quantity"]
