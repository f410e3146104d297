"""`sync peoplesoft-jaggaer` end to end against the JAGGAER simulator and the PeopleSoft QAS + purchasing CI
simulators (127.0.0.1, port 0).

The promises: vendors reach JAGGAER once (found by extCode first), echoes of our own writes are not news,
a JAGGAER-only supplier gets one PeopleSoft vendor (VNDR_ID, also after a lost answer) and is linked both ways,
or waits with its reason when create_vendors = false; requisitions reach JAGGAER once (looked up by their handle
before every create, also after a lost answer); each JAGGAER PO becomes one PeopleSoft PO and a revision
updates it; unmapped values wait and post once mapped; a returnCode error inside HTTP 200 is a queued
failure, never a success; a token lapsing mid-pass is renewed; a second pass writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import sandbox_environ

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.sandbox.jaggaer_run import ACCOUNTS, JaggaerBox, start_jaggaer_sandbox
from mlconnector.sandbox.jaggaer_sim import CLIENT_SECRET
from mlconnector.sandbox.server import Fault
from mlconnector.state import State
from mlconnector.sync.engine import PassResult

PAIR = "peoplesoft-jaggaer"


@dataclass
class JEnv:
    box: JaggaerBox
    dir: Path
    preflight: bool = False

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def write_config(self, **kwargs: Any) -> None:
        kwargs.setdefault("preflight", self.preflight)
        self.config.write_text(self.box.config_text(self.state_file, **kwargs), encoding="utf-8")

    def sync(self, dry_run: bool = False) -> PassResult:
        return runner.sync(PAIR, config_mod.load(self.config), dry_run=dry_run)

    def state(self) -> State:
        return State.load(self.state_file)

    def ps_writes(self) -> int:
        c = self.box.purchasing.calls
        return c["CI_PO_EXPRESS_C"] + c["CI_PO_EXPRESS_UD"]

    def j_writes(self) -> int:
        return sum(self.box.jaggaer.writes.values())

    def pos_by_ref(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for po in self.box.purchasing.pos.values():
            out.setdefault(po["PO_REF"].removeprefix("JAG-"), []).append(po)  # PO_REF = "JAG-" + JAGGAER number
        return out


@pytest.fixture
def jenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JEnv]:
    box = start_jaggaer_sandbox()
    sandbox_environ(monkeypatch, box.env(), tmp_path / "cache")
    env = JEnv(box, tmp_path)
    env.write_config()
    try:
        yield env
    finally:
        box.stop()


def _wanted_requisitions(env: JEnv) -> set[str]:
    return {f"PSREQ-{r['BUSINESS_UNIT']}-{r['REQ_ID']}" for r in env.box.ps.rows("requisitions")
            if r["REQ_STATUS"] in ("A", "P")}


def _assert_once(env: JEnv) -> None:
    ext = [r["externalRequisitionNumber"] for r in env.box.jaggaer.requisitions.values()]
    assert sorted(ext) == sorted(_wanted_requisitions(env))  # each once, none missing
    refs = env.pos_by_ref()
    assert {k: len(v) for k, v in refs.items()} == {n: 1 for n in env.box.jaggaer.pos}
    codes = [s["extCode"] for s in env.box.jaggaer.suppliers.values() if s["extCode"]]
    assert len(codes) == len(set(codes))


def _made_vendors(env: JEnv) -> list[dict[str, Any]]:
    """The PeopleSoft suppliers created for the JAGGAER-only profile (found by their handle)."""
    return [v for v in env.box.purchasing.vendors.values()
            if v.get("VENDOR_NAME_SHORT") == f"JGRS-{env.box.jaggaer_only}"]


# -- 1. first pass, second pass ---------------------------------------------------------------------
def test_first_pass_writes_each_record_once_and_the_second_writes_nothing(jenv: JEnv) -> None:
    jenv.preflight = True  # the first pass checks everything it will use (as ping) before writing
    jenv.write_config()
    r = jenv.sync()
    active = [v for v in jenv.box.ps.rows("vendors") if v["VENDOR_STATUS"] == "A"]
    assert r.counts["suppliers"].created + r.counts["suppliers"].adopted == len(active)
    assert r.counts["suppliers"].adopted == 2  # keyed in JAGGAER already: found by extCode, not created again
    assert r.counts["requisitions"].created == len(_wanted_requisitions(jenv))
    assert r.counts["purchase_orders"].created == 3
    # The JAGGAER-only supplier got its PeopleSoft vendor (VNDR_ID) and the profile now carries its VENDOR_ID.
    assert r.failures == [] and r.exit_code == 0
    (made,) = _made_vendors(jenv)
    assert jenv.box.jaggaer.suppliers[jenv.box.jaggaer_only]["extCode"] == made["VENDOR_ID"]
    assert r.counts["ps_vendors"].created == 1
    _assert_once(jenv)
    # Our supplier writes came back as changed profiles: echoes, not news.
    assert r.counts["jaggaer_suppliers"].unchanged == len(active)
    for po in jenv.box.purchasing.pos.values():
        jpo = jenv.box.jaggaer.pos[po["PO_REF"].removeprefix("JAG-")]
        vendor = jenv.box.linked[jpo["header"]["supplier"]["id"]]
        assert po["VENDOR_ID"] == vendor and po["BUSINESS_UNIT"] == "US001"
        for line, jl in zip(po["PO_LINE"], jpo["lines"], strict=True):
            account, dept = ACCOUNTS[jl["accountCode"]].split("/")
            (dist,) = line["PO_LINE_DISTRIB"]
            assert (dist["ACCOUNT"], dist["DEPTID"]) == (account, dept)
            assert Decimal(line["PRICE_PO"]) == Decimal(str(jl["unitPrice"]["money"]))
    linked = jenv.box.jaggaer.suppliers[next(iter(jenv.box.linked))]
    assert linked["city"] != "Old City"  # PeopleSoft's vendor master reached the adopted profile
    j, ps = jenv.j_writes(), jenv.ps_writes()
    r2 = jenv.sync()
    assert (jenv.j_writes(), jenv.ps_writes()) == (j, ps)
    assert r2.counts["purchase_orders"].unchanged == 3 and r2.counts["suppliers"].unchanged == len(jenv.box.ps.rows(
        "vendors"))
    assert r2.failures == [] and r2.exit_code == 0
    assert len(_made_vendors(jenv)) == 1
    _assert_once(jenv)


# -- 2. purchase orders -------------------------------------------------------------------------------
def test_a_revision_updates_the_same_po(jenv: JEnv) -> None:
    jenv.sync()
    jenv.box.jaggaer.revise_po("JP1000", lines=[{"description": "Item 0-0", "quantity": 7, "unitPrice": "12.5",
                                                 "unitOfMeasure": "EA", "accountCode": "6100"}])
    r = jenv.sync()
    assert r.counts["purchase_orders"].updated == 1 and r.counts["purchase_orders"].created == 0
    (po,) = jenv.pos_by_ref()["JP1000"]
    assert Decimal(po["PO_LINE"][0]["QTY_PO"]) == 7
    assert jenv.box.purchasing.calls["CI_PO_EXPRESS_C"] == 3
    assert jenv.sync().counts["purchase_orders"].updated == 0


def test_unmapped_account_waits_then_posts_once_mapped(jenv: JEnv) -> None:
    jenv.write_config(accounts={k: v for k, v in ACCOUNTS.items() if k != "6200"})
    r = jenv.sync()
    waiting = [i for i in jenv.state().replay if i["kind"] == "purchase_orders"]
    assert waiting and all(i["waits"] for i in waiting)
    assert all("'6200'" in i["error"] and "[peoplesoft_jaggaer.accounts]" in i["error"] for i in waiting)
    held = {i["key"] for i in waiting}
    assert not held & set(jenv.pos_by_ref())  # never posted in part
    assert r.counts["purchase_orders"].created == 3 - len(held)
    assert jenv.sync().counts["purchase_orders"].created == 0  # still waiting
    jenv.write_config()
    r = jenv.sync()
    assert r.counts["purchase_orders"].created == len(held)  # from the fresh read or the queue, once
    assert [i for i in jenv.state().replay if i["kind"] == "purchase_orders"] == []
    _assert_once(jenv)


def test_po_of_a_jaggaer_only_supplier_waits_with_its_reason_then_posts_once_mapped(jenv: JEnv) -> None:
    box = jenv.box
    box.jaggaer.add_po("JP2000", box.jaggaer_only, [{"description": "Valve", "quantity": 2, "unitPrice": "40",
                                                     "accountCode": "6300"}])
    jenv.write_config(extra_pair="pending_grace_seconds = 0\ncreate_vendors = false")
    r = jenv.sync()
    (po_fail,) = [f for f in r.failures if f["kind"] == "purchase_orders"]
    assert "JAGGAER-only" in po_fail["error"] and "create_vendors = false" in po_fail["error"]
    (sup_fail,) = [f for f in r.failures if f["kind"] == "jaggaer_suppliers"]
    assert "create_vendors = false" in sup_fail["error"] and "Fresh Supplier Ltd" in sup_fail["error"]
    assert "JP2000" not in jenv.pos_by_ref() and _made_vendors(jenv) == []
    vendor = box.ps.rows("vendors")[-1]["VENDOR_ID"]
    box.purchasing.add_vendor(vendor, "Fresh Supplier Ltd")
    jenv.write_config(extra_pair=f'pending_grace_seconds = 0\ncreate_vendors = false\n'
                                 f'[peoplesoft_jaggaer.vendors]\n"{box.jaggaer_only}" = "{vendor}"')
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    (po,) = jenv.pos_by_ref()["JP2000"]
    assert po["VENDOR_ID"] == vendor
    assert jenv.state().replay == [] and _made_vendors(jenv) == []


def _only_po(env: JEnv) -> None:
    env.box.jaggaer.add_po("JP2000", env.box.jaggaer_only, [{"description": "Valve", "quantity": 2,
                                                             "unitPrice": "40", "accountCode": "6300"}])


def test_jaggaer_only_supplier_is_created_in_peoplesoft_once_and_its_po_posts_in_the_same_pass(jenv: JEnv) -> None:
    box = jenv.box
    _only_po(jenv)
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    (made,) = _made_vendors(jenv)
    assert made["NAME1"] == "Fresh Supplier Ltd" and made["VENDOR_STATUS"] == "A"
    vid = made["VENDOR_ID"]
    assert box.jaggaer.suppliers[box.jaggaer_only]["extCode"] == vid  # linked both ways
    (po,) = jenv.pos_by_ref()["JP2000"]
    assert po["VENDOR_ID"] == vid  # the waiting PO posted in the same pass, on the new vendor
    assert jenv.state().extra["xref"]["vendor"][box.jaggaer_only] == vid
    j, ps, vc = jenv.j_writes(), jenv.ps_writes(), box.purchasing.calls["CI_VNDR_ID_C"]
    r2 = jenv.sync()  # the extCode write comes back as an echo: nothing is sent
    assert r2.exit_code == 0 and (jenv.j_writes(), jenv.ps_writes()) == (j, ps)
    assert box.purchasing.calls["CI_VNDR_ID_C"] == vc == 1


def test_lost_vendor_create_answer_yields_one_peoplesoft_vendor(jenv: JEnv) -> None:
    box = jenv.box
    _only_po(jenv)
    box.ps_server.faults.add(Fault("drop_after", method="POST", body_match="Create__CompIntfc__VNDR_ID", count=1))
    r = jenv.sync()
    assert r.exit_code != 0
    assert len(_made_vendors(jenv)) == 1  # PeopleSoft acted; the answer was lost
    assert "JP2000" not in jenv.pos_by_ref()  # its PO waits for the vendor
    assert any(f["kind"] == "ps_vendors" and "was lost" in f["error"] for f in r.failures), r.failures
    r = jenv.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["ps_vendors"].adopted == 1 and r.counts["ps_vendors"].created == 0
    (made,) = _made_vendors(jenv)
    assert box.purchasing.calls["CI_VNDR_ID_C"] == 1
    assert box.jaggaer.suppliers[box.jaggaer_only]["extCode"] == made["VENDOR_ID"]
    assert jenv.pos_by_ref()["JP2000"][0]["VENDOR_ID"] == made["VENDOR_ID"]
    assert jenv.state().replay == []


def test_lost_po_create_answer_is_adopted_by_the_next_pass(jenv: JEnv) -> None:
    jenv.box.ps_server.faults.add(Fault("drop_after", method="POST", body_match="Create__CompIntfc__PO_EXPRESS",
                                        count=1))
    r = jenv.sync()
    assert any("was lost" in f["error"] for f in r.failures)
    assert len(jenv.box.purchasing.pos) == 3
    jenv.sync()
    assert jenv.box.purchasing.calls["CI_PO_EXPRESS_C"] == 3
    _assert_once(jenv)


# -- 3. requisitions ----------------------------------------------------------------------------------
def test_return_code_error_inside_http_200_is_a_queued_failure_not_a_sync(jenv: JEnv) -> None:
    jenv.box.jaggaer.fail_next("POST", "requisitions", code=-12, message="Business unit BU02 is closed")
    r = jenv.sync()
    fails = [f for f in r.failures if f["kind"] == "requisitions"]
    assert len(fails) == 1 and "returnCode -12" in fails[0]["error"]
    assert "Business unit BU02 is closed" in fails[0]["error"]
    assert r.counts["requisitions"].created == len(_wanted_requisitions(jenv)) - 1
    state = jenv.state()
    assert state.entry("requisitions", fails[0]["key"]) is None  # not linked, not pending: nothing was made
    assert [i["key"] for i in state.replay if i["kind"] == "requisitions"] == [fails[0]["key"]]
    r = jenv.sync()
    assert r.counts["requisitions"].replayed == 1
    _assert_once(jenv)


def test_lost_requisition_answer_is_looked_up_not_sent_twice(jenv: JEnv) -> None:
    jenv.box.jaggaer_server.faults.add(Fault("drop_after", method="POST", path="requisitions", count=1))
    r = jenv.sync()
    (fail,) = [f for f in r.failures if f["kind"] == "requisitions"]
    assert "was lost" in fail["error"] and "not sent again" in fail["error"]
    assert jenv.state().pending("requisitions") == [fail["key"]]
    r = jenv.sync()
    assert jenv.state().pending("requisitions") == []
    assert [i for i in jenv.state().replay if i["kind"] == "requisitions"] == []
    _assert_once(jenv)


def test_requisition_state_loss_adopts_instead_of_creating_again(jenv: JEnv) -> None:
    jenv.sync()
    made = len(jenv.box.jaggaer.requisitions)
    jenv.state_file.unlink()
    r = jenv.sync()
    assert r.counts["requisitions"].adopted == made and r.counts["requisitions"].created == 0
    assert r.counts["purchase_orders"].adopted == 3
    _assert_once(jenv)


# -- 4. tokens ----------------------------------------------------------------------------------------
def test_a_token_that_lapses_mid_pass_is_renewed_and_the_pass_completes(jenv: JEnv) -> None:
    jenv.box.jaggaer.token_uses = 4  # each token serves four calls: it lapses several times in one pass
    r = jenv.sync()
    assert r.fatal is None
    assert jenv.box.jaggaer.token_requests >= 3
    assert jenv.box.jaggaer_server.requests(method="GET")[0].status == 200
    assert any(q.status == 401 for q in jenv.box.jaggaer_server.requests())
    _assert_once(jenv)


# -- 5. suppliers both ways -----------------------------------------------------------------------------
def test_vendor_change_reaches_jaggaer_once_and_its_echo_is_not_news(jenv: JEnv) -> None:
    jenv.sync()
    v = next(v for v in jenv.box.ps.rows("vendors") if v["VENDOR_STATUS"] == "A")
    jenv.box.ps.touch("vendors", (v["SETID"], v["VENDOR_ID"]), NAME1="Renamed Industrial Inc")
    updates = jenv.box.jaggaer.writes["supplier_update"]
    r = jenv.sync()
    assert r.counts["suppliers"].updated == 1
    (profile,) = [s for s in jenv.box.jaggaer.suppliers.values() if s["extCode"] == v["VENDOR_ID"]]
    assert profile["companyName"] == "Renamed Industrial Inc"
    r = jenv.sync()
    assert jenv.box.jaggaer.writes["supplier_update"] == updates + 1
    # A person renames the profile in JAGGAER: PeopleSoft owns the vendor master, so its name is restored once.
    jenv.box.jaggaer.change_supplier(profile["bravoId"], companyName="Typo Inc")
    jenv.sync()
    jenv.sync()
    assert jenv.box.jaggaer.suppliers[profile["bravoId"]]["companyName"] == "Renamed Industrial Inc"
    assert jenv.box.jaggaer.writes["supplier_update"] == updates + 2
    jenv.sync()
    assert jenv.box.jaggaer.writes["supplier_update"] == updates + 2


# -- 6. secrets, ping, plan --------------------------------------------------------------------------
def test_secrets_and_tokens_never_reach_state_or_audit(jenv: JEnv) -> None:
    jenv.sync()
    tokens = list(jenv.box.jaggaer.tokens)
    assert tokens
    for path in (jenv.state_file, jenv.dir / "state.audit.jsonl"):
        text = path.read_text(encoding="utf-8")
        for secret in [CLIENT_SECRET, "sandbox-ps-password", *tokens]:
            assert secret not in text, path
    (token_file,) = (jenv.dir / "cache" / "jaggaer").glob("*.token.json")
    assert token_file.stat().st_mode & 0o777 == 0o600


def test_ping_checks_the_token_each_path_and_the_peoplesoft_side(jenv: JEnv) -> None:
    from mlconnector.ping import run_ping

    checks = run_ping(config_mod.load(jenv.config))
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]
    names = {c.name for c in checks}
    assert {"token", "GET /j1p/api/public/ja/v1/companyprofiles", "GET /j1p/api/public/ji/v1/invoices",
            "lookup CI_PO_EXPRESS", "query ML_REQ_CHANGED"} <= names
    jenv.box.jaggaer.fail_next("GET", "invoices", code=-5, message="Module ji not licensed")
    bad = [c for c in run_ping(config_mod.load(jenv.config)) if not c.ok]
    assert [c.name for c in bad] == ["GET /j1p/api/public/ji/v1/invoices"]
    assert "Module ji not licensed" in bad[0].detail


def test_a_plan_writes_nothing(jenv: JEnv) -> None:
    plan = jenv.sync(dry_run=True)
    assert plan.fatal is None
    assert any(p["action"] == "create" and p["kind"] == "purchase_orders" for p in plan.plan)
    assert jenv.box.purchasing.pos == {} and jenv.box.jaggaer.requisitions == {} and jenv.j_writes() == 0


# -- 7. invoices -> vouchers (needs the shared voucher writer and its CI simulator) -------------------
def _vouchers(env: JEnv) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for v in env.box.accounting.vouchers.values():
        out.setdefault((v["VENDOR_ID"], v["INVOICE_ID"]), []).append(v)
    return out


def _assert_one_voucher_per_invoice(env: JEnv) -> None:
    got = _vouchers(env)
    assert {k: len(v) for k, v in got.items() if len(v) != 1} == {}
    wanted = {inv["header"]["supplierInvoiceNumber"] for inv in env.box.jaggaer.invoices.values()}
    assert {k[1] for k in got} == wanted
    for inv in env.box.jaggaer.invoices.values():
        (v,) = [v for (_, n), vs in got.items() for v in vs if n == inv["header"]["supplierInvoiceNumber"]]
        (po,) = jenv_pos(env, inv["header"]["poNumber"])
        assert (v["PO_ID"], v["VENDOR_ID"]) == (po["PO_ID"], po["VENDOR_ID"])  # matched to its PeopleSoft PO
        assert Decimal(str(v["GROSS_AMT"])) == Decimal(str(inv["header"]["total"]["value"]))


def jenv_pos(env: JEnv, ref: str) -> list[dict[str, Any]]:
    return env.pos_by_ref().get(ref, [])


def test_each_invoice_becomes_one_voucher_matched_to_its_po(jenv: JEnv) -> None:
    pytest.importorskip("mlconnector.peoplesoft.voucher_sink")
    r = jenv.sync()
    assert r.counts["invoices"].created == 2
    _assert_one_voucher_per_invoice(jenv)
    calls = sum(jenv.box.accounting.calls.values())
    r = jenv.sync()
    assert r.counts["invoices"].unchanged == 2 and sum(jenv.box.accounting.calls.values()) == calls


@pytest.mark.parametrize("check", [True, False])
def test_lost_voucher_answer_yields_one_voucher_with_the_duplicate_check_on_and_off(jenv: JEnv, check: bool) -> None:
    pytest.importorskip("mlconnector.peoplesoft.voucher_sink")
    jenv.box.accounting.duplicate_check["US001"] = check
    jenv.box.ps_server.faults.add(Fault("drop_after", method="POST", body_match="Create__CompIntfc__VCHR_EXPRESS",
                                        count=1))
    r = jenv.sync()
    (lost,) = [f for f in r.failures if f["kind"] == "invoices"]
    assert "was lost" in lost["error"]
    assert len(jenv.box.accounting.vouchers) == 2  # the lost one was saved all the same
    r = jenv.sync()
    assert [f for f in r.failures if f["kind"] == "invoices"] == []
    assert [i for i in jenv.state().replay if i["kind"] == "invoices"] == []  # neither failed nor stuck
    _assert_one_voucher_per_invoice(jenv)
    jenv.sync()
    _assert_one_voucher_per_invoice(jenv)


def test_invoice_whose_po_waits_waits_too_then_posts(jenv: JEnv) -> None:
    pytest.importorskip("mlconnector.peoplesoft.voucher_sink")
    held = jenv.box.jaggaer.pos["JP1001"]["lines"][0]["accountCode"]
    jenv.write_config(accounts={k: v for k, v in ACCOUNTS.items() if k != held})
    r = jenv.sync()
    waiting = {i["kind"]: i for i in jenv.state().replay if i["kind"] in ("invoices", "purchase_orders")}
    assert waiting["invoices"]["waits"] and "JP1001" in waiting["invoices"]["error"]
    assert r.counts["invoices"].created == 1
    jenv.write_config()
    jenv.sync()
    assert [i for i in jenv.state().replay if i["kind"] in ("invoices", "purchase_orders")] == []
    _assert_one_voucher_per_invoice(jenv)


# -- the purchasing and accounting CI simulators behind one server ----------------------------------
def test_po_and_voucher_ci_wsdls_both_load_from_one_server(tmp_path: Path) -> None:
    # One Integration Broker serves one CIFault.V1.xsd; every WSDL behind the server must reference that schema.
    from mlconnector.peoplesoft.ci import CIClient, CIFaultError
    from mlconnector.sandbox.peoplesoft_ap_gl_ci import PS_PASSWORD, PS_USER, AccountingBox

    with AccountingBox() as box:
        ci = CIClient(box.ps_config(), (PS_USER, PS_PASSWORD), cache_dir=tmp_path / "cache")
        try:
            for name in ("VCHR_EXPRESS", "PO_EXPRESS", "VNDR_ID", "JOURNAL_ENTRY"):
                svc = ci.service(name)
                assert {"F", "G", "C"} <= set(svc.operations), name
            # A fault of each CI parses against the one shared CIFault schema.
            for name, keys in (("PO_EXPRESS", {"BUSINESS_UNIT": "US001", "PO_ID": "NOPE"}),
                               ("VNDR_ID", {"SETID": "SHARE", "VENDOR_ID": "NOPE"})):
                with pytest.raises(CIFaultError) as fault:
                    ci.get(name, keys)
                assert (fault.value.message_set, fault.value.message_id) == ("91", "50")
        finally:
            ci.close()
    assert box.purchasing._ns["CIFault"] == box.accounting._ns["CIFault"]
