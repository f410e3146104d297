"""VoucherWriter against the voucher CI simulator through the real CIClient (zeep, SOAP over 127.0.0.1).

The promises: each supplier invoice becomes one voucher; a second write sends nothing; a lost answer, rerun,
never yields a second voucher, with PeopleSoft's duplicate-invoice check on or off; the duplicate-invoice error
means "already there" (adopted, not failed); a voucher waits for its PO; PeopleSoft's refusal is one plain
sentence with the raw fault in the audit trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mlconnector.audit import Audit, Redactor
from mlconnector.peoplesoft.ci import CIClient
from mlconnector.peoplesoft.voucher_sink import VoucherLine, VoucherNames, VoucherWrite, VoucherWriter, voucher_checks
from mlconnector.sandbox.peoplesoft_ap_gl_ci import PS_PASSWORD, PS_USER, AccountingBox
from mlconnector.state import State
from mlconnector.sync.engine import PassContext

KIND = "invoices"
VENDOR = "0000000042"
CREATE = "Create__CompIntfc__VCHR_EXPRESS"


class Run:
    """One pass's worth of writer against a shared state file and audit trail."""

    def __init__(self, box: AccountingBox, tmp: Path) -> None:
        self.box = box
        self.tmp = tmp
        self.passes = 0

    def pass_(self, *, names: VoucherNames | None = None, po_kind: str = "purchase_orders",
              grace: float = 0.0) -> tuple[PassContext, VoucherWriter]:
        self.passes += 1
        state = State.load(self.tmp / "state.json")
        audit = Audit(self.tmp / "audit.jsonl", Redactor(), "test")
        ctx = PassContext("test", state, audit)
        ci = CIClient(self.box.ps_config(), (PS_USER, PS_PASSWORD), cache_dir=self.tmp / "cache")
        writer = VoucherWriter(ctx, ci, names, po_kind=po_kind, grace_seconds=grace)
        writer.resolve_pending(KIND)
        return ctx, writer

    def audit(self) -> list[dict[str, Any]]:
        path = self.tmp / "audit.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def state(self) -> State:
        return State.load(self.tmp / "state.json")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    with AccountingBox() as box:
        yield Run(box, tmp_path)


def invoice(number: str = "INV-1001", *, amounts: tuple[str, ...] = ("100.00", "25.50"), bu: str = "US001",
            **kw: Any) -> VoucherWrite:
    lines = [VoucherLine(Decimal(a), "640000", "FAC", f"line {i}") for i, a in enumerate(amounts, 1)]
    fields: dict[str, Any] = {
        "key": f"{VENDOR}|{number}", "business_unit": bu, "vendor_setid": "SHARE", "vendor_id": VENDOR,
        "invoice_id": number, "invoice_date": "2026-11-30", "gross_amount": sum(Decimal(a) for a in amounts),
        "currency": "USD", "lines": lines, "title": f"invoice {number} of supplier {VENDOR}",
        "row": {"invoice": number}, "header": {"DESCR254_MIXED": f"jaggaer-invoice-{number}"}}
    fields.update(kw)
    return VoucherWrite(**fields)


def creates(box: AccountingBox) -> int:
    return box.accounting.calls["CI_VCHR_EXPRESS_C"]


# -- once -------------------------------------------------------------------------------------------
def test_invoice_becomes_one_voucher_and_a_second_write_sends_nothing(run: Run) -> None:
    ctx, w = run.pass_()
    posted = w.write(KIND, invoice())
    assert posted is not None and posted.action == "created" and posted.business_unit == "US001"
    (voucher,) = run.box.accounting.vouchers_for(VENDOR, "INV-1001")
    assert voucher["VOUCHER_ID"] == posted.id and Decimal(voucher["GROSS_AMT"]) == Decimal("125.50")
    assert [d["ACCOUNT"] for ln in voucher["VOUCHER_LINE"] for d in ln["DISTRIB_LINE"]] == ["640000", "640000"]
    assert voucher["DESCR254_MIXED"] == "jaggaer-invoice-INV-1001"
    assert ctx.result.counts[KIND].created == 1

    calls = sum(run.box.accounting.calls.values())
    ctx, w = run.pass_()
    again = w.write(KIND, invoice())
    assert again is not None and again.action == "unchanged" and again.id == posted.id
    assert sum(run.box.accounting.calls.values()) == calls  # no Find, no Get, no Create
    assert ctx.result.counts[KIND].unchanged == 1


def test_a_voucher_already_in_peoplesoft_is_adopted_not_entered_again(run: Run) -> None:
    ctx, w = run.pass_()
    w.write(KIND, invoice())
    (run.tmp / "state.json").unlink()  # a lost state file: the lookup before create still finds it
    ctx, w = run.pass_()
    posted = w.write(KIND, invoice())
    assert posted is not None and posted.action == "adopted"
    assert ctx.result.counts[KIND].adopted == 1 and creates(run.box) == 1
    assert len(run.box.accounting.vouchers_for(VENDOR, "INV-1001")) == 1


# -- lost answers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("check", [True, False], ids=["duplicate-check-on", "duplicate-check-off"])
def test_lost_answer_then_rerun_gives_one_voucher_adopted(run: Run, check: bool) -> None:
    run.box.accounting.duplicate_check["US001"] = check
    fault = run.box.server.faults.add(kind="drop_after", body_match=CREATE)
    ctx, w = run.pass_()
    assert w.write(KIND, invoice()) is None
    assert fault.reached.is_set() and len(run.box.accounting.vouchers_for(VENDOR, "INV-1001")) == 1
    assert ctx.result.counts[KIND].failed == 1 and ctx.result.counts[KIND].created == 0
    (item,) = ctx.state.replay
    assert "was not sent again" in item["error"]
    # Same pass, the record offered again (say a duplicate row): never resent, still one voucher.
    assert w.write(KIND, invoice()) is None
    assert creates(run.box) == 1 and "earlier in this pass" in ctx.result.failures[-1]["error"]
    (item,) = ctx.state.replay

    ctx, w = run.pass_()
    posted = w.write(KIND, invoice())
    assert posted is not None and posted.action == "adopted"
    assert ctx.result.counts[KIND].adopted == 1 and ctx.result.counts[KIND].failed == 0
    assert creates(run.box) == 1 and len(run.box.accounting.vouchers_for(VENDOR, "INV-1001")) == 1
    assert ctx.state.replay == [] and not ctx.state.pending(KIND)


def test_the_duplicate_check_is_per_business_unit_and_off_lets_a_second_voucher_in(run: Run) -> None:
    # Why the lookup before create matters: with the check off, PeopleSoft takes the same invoice twice.
    from mlconnector.peoplesoft.ci import CIFaultError

    ctx, w = run.pass_()
    record = w.record(invoice("X-1"), None)
    w.ci.create("VCHR_EXPRESS", record)
    with pytest.raises(CIFaultError, match="Duplicate invoice"):
        w.ci.create("VCHR_EXPRESS", record)
    run.box.accounting.duplicate_check["US001"] = False
    w.ci.create("VCHR_EXPRESS", record)
    assert len(run.box.accounting.vouchers_for(VENDOR, "X-1")) == 2
    # Two vouchers for one invoice: the writer enters nothing and names the double payment.
    assert w.write(KIND, invoice("X-1")) is None
    (failure,) = ctx.result.failures
    assert "2 vouchers" in failure["error"] and "double payment" in failure["error"]
    assert creates(run.box) == 3


def test_a_young_pending_mark_waits_for_the_grace_period(run: Run) -> None:
    run.box.server.faults.add(kind="drop_after", body_match=CREATE)
    ctx, w = run.pass_(grace=3600)
    w.write(KIND, invoice())
    ctx, w = run.pass_(grace=3600)
    assert w.write(KIND, invoice()) is None
    assert "may still be running" in ctx.result.failures[0]["error"]
    assert creates(run.box) == 1 and ctx.state.pending(KIND)


# -- the duplicate-invoice error --------------------------------------------------------------------
def test_duplicate_invoice_error_means_already_there_counted_adopted(run: Run) -> None:
    # A clerk keys the same invoice in between the writer's lookup and its Create.
    acct = run.box.accounting

    def clerk(op: str) -> None:
        if op == "CI_VCHR_EXPRESS_F" and not acct.vouchers_for(VENDOR, "INV-7"):
            acct.enter_voucher({"BUSINESS_UNIT": "US001", "VENDOR_SETID": "SHARE", "VENDOR_ID": VENDOR,
                                "INVOICE_ID": "INV-7", "INVOICE_DT": "2026-11-30", "GROSS_AMT": "125.50",
                                "TXN_CURRENCY_CD": "USD",
                                "VOUCHER_LINE": [{"VOUCHER_LINE_NUM": "1", "MERCHANDISE_AMT": "100.00"},
                                                 {"VOUCHER_LINE_NUM": "2", "MERCHANDISE_AMT": "25.50"}]})

    acct.after_call = clerk
    ctx, w = run.pass_()
    posted = w.write(KIND, invoice("INV-7"))
    acct.after_call = None
    assert creates(run.box) == 1  # sent once, refused as a duplicate
    assert posted is not None and posted.action == "adopted"
    c = ctx.result.counts[KIND]
    assert (c.adopted, c.failed, c.queued, c.created) == (1, 0, 0, 0)
    assert ctx.state.replay == [] and not ctx.state.pending(KIND)
    assert len(acct.vouchers_for(VENDOR, "INV-7")) == 1
    assert any(a["action"] == "duplicate_invoice" and "Duplicate invoice" in a["raw"] for a in run.audit())
    # The next pass: linked, nothing sent.
    calls = sum(acct.calls.values())
    ctx, w = run.pass_()
    assert w.write(KIND, invoice("INV-7")) is not None and sum(acct.calls.values()) == calls


# -- waits and refusals -----------------------------------------------------------------------------
def test_voucher_waits_for_its_po_then_posts_matched(run: Run) -> None:
    ctx, w = run.pass_()
    assert w.write(KIND, invoice(po_key="PO-JAG-9")) is None
    (item,) = ctx.state.replay
    assert item["waits"] and "PO-JAG-9" in item["error"] and creates(run.box) == 0
    # The PO writer links the PO (as POWriter stores it), then the voucher posts matched to it.
    run.box.purchasing.pos[("US001", "0000100001")] = {"BUSINESS_UNIT": "US001", "PO_ID": "0000100001",
                                                         "VENDOR_ID": VENDOR}
    ctx.state.set_entry("purchase_orders", "PO-JAG-9", {"po": {"BUSINESS_UNIT": "US001", "PO_ID": "0000100001"}})
    ctx.state.save()
    ctx, w = run.pass_()
    posted = w.write(KIND, invoice(po_key="PO-JAG-9"))
    assert posted is not None and posted.action == "created"
    (voucher,) = run.box.accounting.vouchers_for(VENDOR, "INV-1001")
    assert (voucher["PO_BUSINESS_UNIT"], voucher["PO_ID"]) == ("US001", "0000100001")


def test_lines_not_adding_up_are_refused_before_any_call(run: Run) -> None:
    ctx, w = run.pass_()
    assert w.write(KIND, invoice(gross_amount=Decimal("125.49"))) is None
    assert "add up to 125.50, not to its gross amount 125.49" in ctx.result.failures[0]["error"]
    assert sum(run.box.accounting.calls.values()) == 0


def test_cifault_is_one_plain_sentence_and_the_raw_fault_is_audited(run: Run) -> None:
    ctx, w = run.pass_()
    bad = invoice(lines=[VoucherLine(Decimal("125.50"), "999999", "FAC")])
    assert w.write(KIND, bad) is None
    (failure,) = ctx.result.failures
    text = failure["error"]
    assert text.startswith("invoice INV-1001 of supplier 0000000042 was not entered: PeopleSoft refused the voucher")
    assert "{ACCOUNT} value '999999'" in text and "\n" not in text and "Traceback" not in text
    assert not ctx.state.pending(KIND) and ctx.state.entry(KIND, bad.key) is None
    (audited,) = [a for a in run.audit() if a["action"] == "failed"]
    assert "<CIFault" in audited["raw"] and "(15,11)" in audited["raw"]


def test_configurable_ci_name_and_ping_checks(tmp_path: Path) -> None:
    with AccountingBox(voucher_ci="AP_VOUCHER_CI") as box:
        r = Run(box, tmp_path)
        ctx, w = r.pass_(names=VoucherNames(ci="AP_VOUCHER_CI"))
        assert w.write(KIND, invoice()) is not None
        checks = voucher_checks(w.ci, VoucherNames(ci="AP_VOUCHER_CI"), "US001", "peoplesoft_jaggaer")
        assert [c.ok for c in checks] == [True, True, True], checks
        missing = voucher_checks(w.ci, VoucherNames(), "US001", "peoplesoft_jaggaer")
        assert not missing[0].ok and "voucher_ci" in missing[0].fix and "CI_VCHR_EXPRESS" in missing[0].detail


# -- kills and handles ------------------------------------------------------------------------------
@pytest.mark.parametrize("sent", [True, False], ids=["killed-after-commit", "killed-before-sending"])
def test_a_kill_around_the_create_never_duplicates_nor_loses(run: Run, monkeypatch: pytest.MonkeyPatch,
                                                             sent: bool) -> None:
    ctx, w = run.pass_()
    real = w.ci.create

    def killed(ci: str, record: dict[str, Any]) -> dict[str, Any]:
        if sent:
            real(ci, record)  # PeopleSoft saved the voucher...
        raise KeyboardInterrupt  # ...and the process died before reading (or sending) anything

    monkeypatch.setattr(w.ci, "create", killed)
    with pytest.raises(KeyboardInterrupt):
        w.write(KIND, invoice())
    assert run.state().pending(KIND)  # the mark was on disk before the request
    ctx, w = run.pass_()
    posted = w.write(KIND, invoice())
    assert posted is not None and posted.action == ("adopted" if sent else "created")
    assert len(run.box.accounting.vouchers_for(VENDOR, "INV-1001")) == 1 and not ctx.state.pending(KIND)


def test_same_invoice_number_with_another_amount_is_not_entered_twice(run: Run) -> None:
    # With GROSS_AMT in PeopleSoft's duplicate check a corrected amount would pass it; the handle (supplier +
    # INVOICE_ID) still finds the voucher, and the difference goes to a person.
    run.box.accounting.duplicate_fields = ("GROSS_AMT",)
    ctx, w = run.pass_()
    w.write(KIND, invoice())
    (run.tmp / "state.json").unlink()
    ctx, w = run.pass_()
    assert w.write(KIND, invoice(amounts=("100.00", "30.00"))) is None
    assert "differs from the invoice" in ctx.result.failures[0]["error"]
    assert creates(run.box) == 1 and len(run.box.accounting.vouchers_for(VENDOR, "INV-1001")) == 1


def test_a_failing_lookup_keeps_the_pending_mark_and_sends_nothing(run: Run) -> None:
    run.box.server.faults.add(kind="drop_after", body_match=CREATE)
    ctx, w = run.pass_()
    w.write(KIND, invoice())
    run.box.accounting.inactive.add("CI_VCHR_EXPRESS_F")  # the admin deactivated Find meanwhile
    ctx, w = run.pass_()
    assert w.write(KIND, invoice()) is None
    assert "no active routing" in ctx.result.failures[0]["error"] and "CI_VCHR_EXPRESS_F" in ctx.result.failures[0][
        "error"]
    assert ctx.state.pending(KIND) and creates(run.box) == 1
    run.box.accounting.inactive.clear()
    ctx, w = run.pass_()
    posted = w.write(KIND, invoice())
    assert posted is not None and posted.action == "adopted" and creates(run.box) == 1
