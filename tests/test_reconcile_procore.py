"""`reconcile peoplesoft-procore` against the Procore simulator and the PeopleSoft (PO query, PO and journal CI)
simulators: each class made to happen (a commitment edited in Procore, a PO or journal edited in PeopleSoft, a
target record deleted, a document deleted in Procore, a record queued, a queued record dropped, a create left
pending, a target record carrying our handle for no source record) and named by the report; PO amounts both
sides and journal debits and credits (balanced, and against the Procore amount) equal sums computed by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import sandbox_environ
from test_peoplesoft_procore import TOWER, Env, _commitment, _po

from mlconnector import config as config_mod
from mlconnector.errors import EXIT_NOT_IN_STEP, EXIT_OK
from mlconnector.reconcile import reconcile, text_lines
from mlconnector.sandbox.procore_run import start_procore_sandbox
from mlconnector.sync.keys import encode_key, handle
from mlconnector.sync.links import mark_pending

CENT = Decimal("0.01")
PAIR = "peoplesoft-procore"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    box = start_procore_sandbox(vendors=4)
    sandbox_environ(monkeypatch, box.env(), tmp_path / "cache")
    e = Env(box, tmp_path)
    e.write_config()
    try:
        yield e
    finally:
        box.stop()


def _run(env: Env) -> Any:
    def writes() -> tuple[int, int, int]:
        return env.ps_writes(), env.box.accounting.calls["CI_JOURNAL_ENTRY_C"], sum(env.box.procore.writes.values())

    before, state = writes(), env.state_file.read_bytes()
    report = reconcile(PAIR, config_mod.load(env.config))
    assert writes() == before and env.state_file.read_bytes() == state  # read-only
    return report


def _by(report: Any, kind: str) -> dict[str, Any]:
    return {f.key: f for f in report.findings if f.kind == kind and f.cls != "orphaned"}


def _one(cid: Any) -> str:
    return encode_key((str(cid),))


def _ps_amount(po: dict[str, Any]) -> Decimal:
    return sum((Decimal(str(d["MERCHANDISE_AMT"])) for ln in po["PO_LINE"] for d in ln["PO_LINE_DISTRIB"]),
               Decimal(0))


def _contract_amount(env: Env, cid: int) -> Decimal:
    return sum((Decimal(li["amount"]) for li in env.box.procore.lines_of(cid)), Decimal(0))


def test_purchase_orders_and_commitments_every_class_and_po_amounts_both_sides(env: Env) -> None:
    sim, ps = env.box.procore, env.box.purchasing
    pos = [_po(env, f"000000050{n}", vendor=n % 2) for n in (1, 2, 3, 4)]
    assert env.sync().exit_code == EXIT_OK
    made = [_commitment(env, f"PO-PM-{n}", vendor=n % 2) for n in (1, 2, 3)]
    assert env.sync().exit_code == EXIT_OK
    report = _run(env)
    assert report.exit_code == EXIT_OK, [f.to_dict() for f in report.differ]
    assert report.counts["purchase_orders"]["in_step"] == 4 and report.counts["commitments"]["in_step"] == 3
    m = report.money_dict()
    contracts = {c["origin_id"]: c["id"] for c in sim.contracts.values() if c.get("origin_id")}
    ps_pos = sum((_ps_amount(ps.pos[k]) for k in pos), Decimal(0))
    assert m["purchase_orders"]["source"] == m["purchase_orders"]["target"] == str(ps_pos.quantize(CENT))
    procore = sum((_contract_amount(env, c["id"]) for c in made), Decimal(0))
    assert m["commitments"]["source"] == m["commitments"]["target"] == str(procore.quantize(CENT))

    # purchase_orders (PeopleSoft -> Procore)
    c501 = contracts[handle("psft-po", pos[0])]
    [line] = [li for li in sim.lines_of(c501) if li["description"].startswith("Rebar")]
    sim.change_commitment(c501, lines=[{"id": line["id"], "quantity": "11"}])  # edited in Procore
    po502 = ps.pos[pos[1]]  # changed in PeopleSoft, not synced yet
    po502["PO_LINE"][0]["QTY_PO"] = po502["PO_LINE"][0]["PO_LINE_DISTRIB"][0]["QTY_PO"] = "12"
    po502["PO_LINE"][0]["PO_LINE_DISTRIB"][0]["MERCHANDISE_AMT"] = "306.00"
    po502["LAST_DTTM_UPDATE"] = datetime.now(UTC).isoformat(timespec="seconds")
    gone = contracts[handle("psft-po", pos[2])]
    gone_amount = _contract_amount(env, gone)
    del sim.contracts[gone]  # deleted in Procore
    stray = sim.add_commitment(TOWER, env.procore_vendor(env.active_vendor()), number="0000000999", title="Copy")
    sim.contracts[stray["id"]]["origin_id"] = handle("psft-po", ("US001", "0000000999"))  # our handle, no PO
    fresh = _po(env, "0000000505")  # not synced yet
    # commitments (Procore -> PeopleSoft)
    refs = {p["PO_REF"]: k for k, p in ps.pos.items()}
    edited = ps.pos[refs[f"PCO-{made[0]['id']}"]]  # edited in PeopleSoft
    dist = edited["PO_LINE"][0]["PO_LINE_DISTRIB"][0]
    dist["MERCHANDISE_AMT"] = str(Decimal(str(dist["MERCHANDISE_AMT"])) + 50)
    edited_amount = _ps_amount(edited)
    removed = refs[f"PCO-{made[1]['id']}"]
    del ps.pos[removed]  # deleted in PeopleSoft
    late = _commitment(env, "PO-PM-9")  # a pass killed between its pending mark and the Create
    state = env.state()
    state.set_entry("commitments", _one(late["id"]), mark_pending({"handle": f"PCO-{late['id']}", "hash": ""}))
    state.save()

    report = _run(env)
    assert report.exit_code == EXIT_NOT_IN_STEP
    by = _by(report, "purchase_orders")
    assert {k: f.cls for k, f in by.items()} == {
        encode_key(pos[0]): "drifted", encode_key(pos[1]): "drifted", encode_key(pos[2]): "missing",
        encode_key(pos[3]): "in_step", encode_key(fresh): "missing"}
    assert by[encode_key(pos[0])].changed == "target" and any("quantity" in f for f in by[encode_key(pos[0])].fields)
    assert by[encode_key(pos[1])].changed == "source"
    assert "no longer exists in Procore" in by[encode_key(pos[2])].reason
    [orphan] = [f for f in report.findings if f.kind == "purchase_orders" and f.cls == "orphaned"]
    assert orphan.issue == str(stray["id"]) and "psft-po-US001-0000000999" in orphan.reason
    cby = _by(report, "commitments")
    assert {k: f.cls for k, f in cby.items()} == {
        _one(made[0]["id"]): "drifted", _one(made[1]["id"]): "missing", _one(made[2]["id"]): "in_step",
        _one(late["id"]): "pending"}
    assert cby[_one(made[0]["id"])].changed == "target"
    assert cby[_one(made[0]["id"])].fields == ["line 1 MERCHANDISE_AMT"]
    assert "no longer exists in PeopleSoft" in cby[_one(made[1]["id"])].reason

    # By hand. purchase_orders: every PeopleSoft project PO (its distribution amounts) against the line items
    # of every Procore contract carrying one of our PO handles (the deleted one is gone; the stray has none).
    m = report.money_dict()
    source = sum((_ps_amount(ps.pos[k]) for k in (*pos, fresh)), Decimal(0))
    target = sum((_contract_amount(env, c["id"]) for c in sim.contracts.values()
                  if str(c.get("origin_id", "")).startswith("psft-po-")), Decimal(0))
    assert (m["purchase_orders"]["source"], m["purchase_orders"]["target"]) == (str(source.quantize(CENT)),
                                                                                str(target.quantize(CENT)))
    assert Decimal(m["purchase_orders"]["difference"]) == source - target != 0
    assert gone_amount > 0
    # commitments: Procore's line items of every approved commitment we did not make, against PeopleSoft's
    # distribution amounts of their POs (the deleted one is gone, the edited one counts as edited).
    source = sum((_contract_amount(env, c["id"]) for c in (*made, late)), Decimal(0))
    target = sum((_ps_amount(p) for p in ps.pos.values() if p["PO_REF"].startswith("PCO-")), Decimal(0))
    assert (m["commitments"]["source"], m["commitments"]["target"]) == (str(source.quantize(CENT)),
                                                                        str(target.quantize(CENT)))
    assert m["commitments"]["by_class"]["drifted"]["target"] == str(edited_amount.quantize(CENT))


def _journal(env: Env, reference: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    [(key, rec)] = [(k, j) for k, j in env.box.accounting.journals.items() if j.get("DESCR254") == reference]
    return key, rec


def _debits_credits(journals: list[dict[str, Any]]) -> tuple[Decimal, Decimal]:
    amounts = [Decimal(str(ln["MONETARY_AMOUNT"])) for j in journals for ln in j["JRNL_LN"]]
    return sum((a for a in amounts if a > 0), Decimal(0)), -sum((a for a in amounts if a < 0), Decimal(0))


def test_direct_costs_and_change_orders_against_journals_debits_credits_and_every_class(env: Env) -> None:
    sim, acc = env.box.procore, env.box.accounting
    assert env.sync().exit_code == EXIT_OK  # vendors and cost codes first
    c = _commitment(env)

    def cost(number: str, *amounts: str) -> dict[str, Any]:
        return sim.add_direct_cost(TOWER, None, invoice_number=number, lines=[
            {"cost_code_id": env.cost_code("640000"), "amount": a, "description": f"{number} {i}"}
            for i, a in enumerate(amounts)])

    def order(number: str, amount: str, cost_code: int | None = None) -> dict[str, Any]:
        return sim.add_change_order(TOWER, c["id"], number=number, lines=[
            {"cost_code_id": cost_code or env.cost_code("650000"), "amount": amount, "description": number}])

    dcs = [cost("INV-1", "100.10", "20.00"), cost("INV-2", "55.55"), cost("INV-3", "7.00")]
    cos = [order("CO-1", "700.00"), order("CO-2", "300.00")]
    held, dropped = order("CO-8", "80.00", 999999), order("CO-9", "90.00", 999998)  # cost codes of no account
    assert env.sync().exit_code != EXIT_OK  # the two change orders wait
    state = env.state()
    drop = ("change_orders", _one(dropped["id"]))
    state.replay = [i for i in state.replay if (i["kind"], i["key"]) != drop]  # `replay drop`
    state.save()
    report = _run(env)
    assert report.counts["direct_costs"]["in_step"] == 3 and report.counts["change_orders"]["in_step"] == 2
    assert report.counts["change_orders"]["waiting"] == 1 and report.counts["change_orders"]["missing"] == 1
    m = report.money_dict()["direct_costs"]
    procore = sum((Decimal(a) for a in ("100.10", "20.00", "55.55", "7.00")), Decimal(0))
    assert (m["source"], m["target"], m["target_debits"], m["target_credits"], m["target_balance"]) == (
        str(procore), str(procore), str(procore), str(procore), "0.00")

    _, edited = _journal(env, f"procore-dc-{dcs[0]['id']}")  # edited in PeopleSoft: one debit line, unbalanced
    edited["JRNL_LN"][0]["MONETARY_AMOUNT"] = "110.10"
    gone, _ = _journal(env, f"procore-dc-{dcs[1]['id']}")
    del acc.journals[gone]  # deleted in PeopleSoft
    fresh = cost("INV-4", "12.34")  # not posted yet
    late = cost("INV-5", "1.00")  # a pass killed between its pending mark and the Create
    state = env.state()
    state.set_entry("direct_costs", _one(late["id"]), mark_pending(
        {"business_unit": "US001", "reference": f"procore-dc-{late['id']}", "hash": ""}))
    state.save()
    _, copied = _journal(env, f"procore-cco-{cos[0]['id']}")  # a second journal for CO-1, keyed by hand
    acc.journals[("US001", "0000009999", copied["JOURNAL_DATE"])] = {**copied, "JOURNAL_ID": "0000009999"}
    co2_journal = _journal(env, f"procore-cco-{cos[1]['id']}")[1]
    del sim.change_orders[cos[1]["id"]]  # deleted in Procore: its journal stays

    report = _run(env)
    assert report.exit_code == EXIT_NOT_IN_STEP
    by = _by(report, "direct_costs")
    assert {k: f.cls for k, f in by.items()} == {
        _one(dcs[0]["id"]): "drifted", _one(dcs[1]["id"]): "missing", _one(dcs[2]["id"]): "in_step",
        _one(fresh["id"]): "missing", _one(late["id"]): "pending"}
    assert by[_one(dcs[0]["id"])].fields == ["line 1 MONETARY_AMOUNT"] and by[_one(dcs[0]["id"])].changed == "target"
    assert "no longer exists in PeopleSoft" in by[_one(dcs[1]["id"])].reason
    cby = _by(report, "change_orders")
    assert {k: f.cls for k, f in cby.items()} == {
        _one(cos[0]["id"]): "in_step", _one(cos[1]["id"]): "deleted", _one(held["id"]): "waiting",
        _one(dropped["id"]): "missing"}
    assert "cannot be mapped" in cby[_one(dropped["id"])].reason
    [orphan] = [f for f in report.findings if f.cls == "orphaned"]
    assert orphan.kind == "change_orders" and orphan.key == _one(cos[0]["id"]) and "second journal" in orphan.reason

    # By hand: the Procore amounts of the direct costs that map, against the debits and credits of every journal
    # whose reference names a direct cost; the edited journal no longer balances.
    m = report.money_dict()["direct_costs"]
    source = procore + Decimal("12.34") + Decimal("1.00")
    debits, credits = _debits_credits([j for j in acc.journals.values() if j["DESCR254"].startswith("procore-dc-")])
    assert (m["source"], m["target"], m["target_debits"], m["target_credits"]) == (
        str(source), str(debits), str(debits), str(credits))
    assert m["target_balance"] == str(debits - credits) == "10.00" and m["unbalanced"] == 1
    assert Decimal(m["difference"]) == source - debits
    debits_dc, credits_dc = debits, credits
    m = report.money_dict()["change_orders"]
    debits, credits = _debits_credits([j for j in acc.journals.values() if j["DESCR254"].startswith("procore-cco-")])
    assert (m["source"], m["target_debits"], m["target_credits"]) == ("700.00", str(debits), str(credits))
    assert debits == Decimal("700.00") * 2 + Decimal("300.00") and m["unbalanced"] == 0
    assert m["by_class"]["deleted"]["target"] == str(_debits_credits([co2_journal])[0])
    money_line = next(ln for ln in text_lines(report) if ln.startswith("money direct_costs"))
    assert f"debits {debits_dc}, credits {credits_dc}, balance 10.00 (1 unbalanced)" in money_line


def test_vendors_and_cost_codes_every_class(env: Env) -> None:
    sim, ps = env.box.procore, env.box.ps
    assert env.sync().exit_code == EXIT_OK
    report = _run(env)
    assert report.exit_code == EXIT_OK, [f.to_dict() for f in report.differ]
    assert report.counts["vendors"]["in_step"] == len(ps.rows("vendors")) == len(sim.vendors)
    assert report.counts["cost_codes"]["in_step"] == len(sim.cost_codes)

    edited, renamed = env.active_vendor(0), env.active_vendor(1)
    sim.vendors[env.procore_vendor(edited)]["city"] = "Edited In Procore"
    ps.touch("vendors", ("SHARE", renamed), NAME1="Renamed In PeopleSoft")  # not synced yet
    gone = env.cost_code("641000")
    del sim.cost_codes[gone]  # deleted in Procore
    stray = max(sim.vendors) + 1000
    sim.vendors[stray] = {**sim.vendors[env.procore_vendor(edited)], "id": stray,
                          "origin_id": handle("psft-vendor", ("SHARE", "0000999999"))}

    report = _run(env)
    assert report.exit_code == EXIT_NOT_IN_STEP
    by = {(f.kind, f.key): f for f in report.differ}
    assert {k: f.cls for k, f in by.items()} == {
        ("vendors", encode_key(("SHARE", edited))): "drifted", ("vendors", encode_key(("SHARE", renamed))): "drifted",
        ("vendors", encode_key(("SHARE", "0000999999"))): "orphaned",
        ("cost_codes", encode_key((str(TOWER), "641000"))): "missing"}
    vendor = by[("vendors", encode_key(("SHARE", edited)))]
    assert vendor.fields == ["city"] and vendor.changed == "target"
    assert by[("vendors", encode_key(("SHARE", renamed)))].changed == "source"
    assert by[("vendors", encode_key(("SHARE", "0000999999")))].issue == str(stray)
    assert "no longer in Procore" in by[("cost_codes", encode_key((str(TOWER), "641000")))].reason
