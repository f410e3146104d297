"""`sync peoplesoft-procore` end to end against the Procore simulator and the PeopleSoft servers (127.0.0.1,
port 0).

The promises: vendors, cost codes, PO commitments and commitment POs are each written once; a second pass
writes nothing; a sync answer's refused rows (HTTP 200) are the only ones queued; a PeopleSoft change updates,
never duplicates; a commitment becomes one PO and does not come back as a commitment; a two-sided change
follows the configured rule; a token that runs out mid-pass is renewed; a lost sync answer duplicates nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import sandbox_environ

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.sandbox.procore_run import ACCOUNTS, PROJECTS, ProcoreBox, start_procore_sandbox
from mlconnector.sandbox.server import Fault
from mlconnector.state import State
from mlconnector.sync.engine import PassResult
from mlconnector.sync.keys import handle

PAIR = "peoplesoft-procore"
TOWER = int(next(iter(PROJECTS)))


@dataclass
class Env:
    """One sandbox (Procore, PeopleSoft queries and CIs) and its configuration, state and audit files."""

    box: ProcoreBox
    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def write_config(self, **kwargs: Any) -> None:
        self.config.write_text(self.box.config_text(self.state_file, **kwargs), encoding="utf-8")

    def sync(self) -> PassResult:
        return runner.sync(PAIR, config_mod.load(self.config))

    def state(self) -> State:
        return State.load(self.state_file)

    def active_vendor(self, n: int = 0) -> str:
        return [r["VENDOR_ID"] for r in self.box.ps.rows("vendors") if r["VENDOR_STATUS"] == "A"][n]

    def procore_vendor(self, ps_vendor: str) -> int:
        [v] = self.box.procore.by_origin(self.box.procore.vendors, handle("psft-vendor", ("SHARE", ps_vendor)))
        return int(v["id"])

    def cost_code(self, account: str, project: int = TOWER) -> int:
        [c] = self.box.procore.by_origin(self.box.procore.cost_codes, handle("psft-acct", (str(project), account)))
        return int(c["id"])

    def ps_writes(self) -> int:
        calls = self.box.purchasing.calls
        return calls["CI_PO_EXPRESS_C"] + calls["CI_PO_EXPRESS_UD"]

    def audit(self, event: str) -> list[dict[str, Any]]:
        path = self.state_file.with_suffix(".audit.jsonl")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r for r in rows if r.get("action") == event]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    box = start_procore_sandbox(vendors=6)
    sandbox_environ(monkeypatch, box.env(), tmp_path / "cache")
    e = Env(box, tmp_path)
    e.write_config()
    try:
        yield e
    finally:
        box.stop()


def _po(env: Env, po_id: str = "0000000501", vendor: int = 0) -> tuple[str, str]:
    env.box.add_po(po_id, env.active_vendor(vendor), [
        {"descr": "Rebar #5, 20 ft", "qty": 10, "price": "25.50", "account": "640000"},
        {"descr": "Crane day rate", "qty": 2, "price": "1200", "account": "641000"}])
    return ("US001", po_id)


def _commitment(env: Env, number: str = "PO-PM-7", vendor: int = 0) -> dict[str, Any]:
    return env.box.procore.add_commitment(TOWER, env.procore_vendor(env.active_vendor(vendor)), number=number,
                                          title="Formwork rental", lines=[
        {"cost_code_id": env.cost_code("641000"), "description": "Formwork panels", "quantity": "40",
         "unit_cost": "12.25", "uom": "EA"},
        {"cost_code_id": env.cost_code("650000"), "description": "Install crew (lump sum)", "amount": "3000.00"}])


# -- 1. once, then nothing ----------------------------------------------------------------------------
def test_first_pass_writes_each_record_once_and_second_pass_writes_nothing(env: Env) -> None:
    key = _po(env)
    r = env.sync()
    assert r.exit_code == 0, r.failures
    sim = env.box.procore
    assert r.counts["vendors"].created == 6 and len(sim.vendors) == 6
    assert r.counts["cost_codes"].created == len(ACCOUNTS) * len(PROJECTS) == len(sim.cost_codes)
    [contract] = sim.contracts.values()
    assert contract["origin_id"] == handle("psft-po", key) and contract["project_id"] == TOWER
    assert contract["vendor_id"] == env.procore_vendor(env.active_vendor())
    lines = sorted(sim.lines_of(contract["id"]), key=lambda li: li["description"])
    assert [(li["description"], li["quantity"], li["amount"], li["cost_code_id"]) for li in lines] == [
        ("Crane day rate", "2.00", "2400.00", env.cost_code("641000")),
        ("Rebar #5, 20 ft", "10.00", "255.00", env.cost_code("640000"))]
    # 6 vendors in one sync call; cost codes in one call per project.
    assert sim.calls["PATCH /rest/v1.0/vendors/sync"] == 1
    assert sim.calls["PATCH /rest/v1.0/cost_codes/sync"] == len(PROJECTS)

    writes, ps_writes = dict(sim.writes), env.ps_writes()
    r2 = env.sync()
    assert r2.exit_code == 0, r2.failures
    assert dict(sim.writes) == writes and env.ps_writes() == ps_writes
    assert sum(c.created + c.updated for c in r2.counts.values()) == 0
    # One read per project of commitments, direct costs and change orders; no write.
    assert r2.requests["procore"] <= 3 * len(PROJECTS)


# -- 2. partial errors in an HTTP 200 --------------------------------------------------------------------
def test_plan_on_a_fresh_state_lists_every_vendor_and_cost_code_it_would_create_and_writes_nothing(env: Env) -> None:
    """--plan reads both sides and stores nothing, so the vendors it would create must come from what it read,
    not from the state (a first plan once listed the cost codes but none of the 6 vendors)."""
    r = runner.sync(PAIR, config_mod.load(env.config), dry_run=True)
    assert r.exit_code == 0, r.failures
    planned = {(p["kind"], p["action"]) for p in r.plan}
    vendors = [p for p in r.plan if p["kind"] == "vendors"]
    assert len(vendors) == 6 and {p["action"] for p in vendors} == {"create"}, r.plan
    assert ("cost_codes", "create") in planned
    assert not env.box.procore.writes and not env.state_file.exists()
    assert env.sync().counts["vendors"].created == 6


def test_sync_action_partial_errors_queue_only_the_refused_rows(env: Env) -> None:
    bad = env.active_vendor(1)
    env.box.procore.refuse[handle("psft-vendor", ("SHARE", bad))] = "name has already been taken"
    r = env.sync()
    assert r.counts["vendors"].created == 5 and r.counts["vendors"].failed == 1
    queued = [i for i in env.state().replay if i["kind"] == "vendors"]
    assert len(queued) == 1 and bad in queued[0]["key"]
    assert "name has already been taken" in queued[0]["error"]
    env.box.procore.refuse.clear()
    r2 = env.sync()
    assert r2.exit_code == 0, r2.failures
    assert len(env.box.procore.vendors) == 6
    assert not env.state().replay


# -- 3. PeopleSoft changes update ----------------------------------------------------------------------
def test_peoplesoft_changes_update_vendor_and_commitment_without_duplicates(env: Env) -> None:
    key = _po(env)
    assert env.sync().exit_code == 0
    vid = env.active_vendor()
    env.box.ps.touch("vendors", ("SHARE", vid), NAME1="Acme Rebar & Steel")
    env.box.change_po(key, qty=12)
    r = env.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["vendors"].updated == 1 and r.counts["purchase_orders"].updated == 1
    sim = env.box.procore
    [v] = sim.by_origin(sim.vendors, handle("psft-vendor", ("SHARE", vid)))
    assert v["name"] == "Acme Rebar & Steel" and len(sim.vendors) == 6
    [contract] = sim.contracts.values()
    amounts = sorted(li["amount"] for li in sim.lines_of(contract["id"]))
    assert amounts == ["2400.00", "306.00"]
    assert len(sim.line_items) == 2


# -- 4. commitments -> PeopleSoft POs --------------------------------------------------------------------
def test_approved_commitment_becomes_one_po_with_no_echo_back(env: Env) -> None:
    assert env.sync().exit_code == 0
    c = _commitment(env)
    r = env.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["commitments"].created == 1
    [po] = env.box.purchasing.pos_with_ref(f"PCO-{c['id']}")
    assert po["VENDOR_ID"] == env.active_vendor()
    lines = po["PO_LINE"]
    assert [(ln["DESCR254_MIXED"], ln["PO_LINE_DISTRIB"][0]["ACCOUNT"], ln["PO_LINE_DISTRIB"][0]["DEPTID"])
            for ln in lines] == [("Formwork panels", "641000", "FAC"), ("Install crew (lump sum)", "650000", "FAC")]
    # The PO comes back through the project PO query: it must not become a commitment, nor be sent again.
    contracts, ps_writes = len(env.box.procore.contracts), env.ps_writes()
    r2 = env.sync()
    assert r2.exit_code == 0, r2.failures
    assert len(env.box.procore.contracts) == contracts and env.ps_writes() == ps_writes
    assert len(env.box.purchasing.pos_with_ref(f"PCO-{c['id']}")) == 1


def test_commitment_with_an_unlinked_vendor_waits(env: Env) -> None:
    assert env.sync().exit_code == 0
    sim = env.box.procore
    stranger = sim._stamp({"name": "Walk-in Supply"})
    sim.vendors[stranger["id"]] = stranger
    c = sim.add_commitment(TOWER, stranger["id"], number="PO-X", title="Misc", lines=[
        {"cost_code_id": env.cost_code("640000"), "description": "Bolts", "quantity": "1", "unit_cost": "5"}])
    r = env.sync()
    assert r.counts["commitments"].failed == 1
    [item] = [i for i in env.state().replay if i["kind"] == "commitments"]
    assert item["waits"] and "peoplesoft_procore.vendors" in item["error"]
    assert not env.box.purchasing.pos_with_ref(f"PCO-{c['id']}")
    # The admin maps the Procore-made vendor to a PeopleSoft supplier: the next pass posts the PO, once.
    with env.config.open("a", encoding="utf-8") as f:
        f.write(f'\n[peoplesoft_procore.vendors]\n"{stranger["id"]}" = "{env.active_vendor(1)}"\n')
    r2 = env.sync()
    assert r2.exit_code == 0, r2.failures
    [po] = env.box.purchasing.pos_with_ref(f"PCO-{c['id']}")
    assert po["VENDOR_ID"] == env.active_vendor(1)


# -- 5. both sides changed ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["owner", "manual"])
def test_two_sided_change_follows_the_configured_rule(env: Env, rule: str) -> None:
    env.write_config(extra_pair=f'pending_grace_seconds = 0\nconflict_rule = "{rule}"\n'
                                'system_of_record = "peoplesoft"')
    key = _po(env)
    assert env.sync().exit_code == 0
    sim = env.box.procore
    [contract] = sim.contracts.values()
    sim.change_commitment(contract["id"], title="Edited by the PM in Procore")
    env.box.change_po(key, descr="Rebar #6, 20 ft")
    r = env.sync()
    if rule == "owner":
        assert r.exit_code == 0, r.failures
        lines = {li["description"] for li in sim.lines_of(contract["id"])}
        assert "Rebar #6, 20 ft" in lines
        [conflict] = env.audit("conflict")
        assert conflict["winner"] == "peoplesoft" and "Edited by the PM" in conflict["other"]
    else:
        assert r.counts["purchase_orders"].failed == 1
        [item] = [i for i in env.state().replay if i["kind"] == "purchase_orders"]
        assert "manual" in item["error"]
        assert "Rebar #6, 20 ft" not in {li["description"] for li in sim.lines_of(contract["id"])}
    assert len(sim.contracts) == 1


# -- 6. token and lost answers ------------------------------------------------------------------------
def test_token_running_out_mid_pass_is_renewed_once(env: Env) -> None:
    _po(env)
    env.box.procore.expire_after = 2  # after the vendors and the first cost codes call
    r = env.sync()
    assert r.exit_code == 0, r.failures
    assert env.box.procore.token_requests == 2
    assert len(env.box.procore.contracts) == 1


def test_lost_sync_answer_is_resent_without_duplicates(env: Env) -> None:
    _po(env)
    env.box.procore_server.faults.add(Fault("drop_after", path="/vendors/sync", method="PATCH", count=1))
    env.box.procore_server.faults.add(Fault("drop_after", path="/purchase_order_contracts/sync", method="PATCH",
                                            count=1))
    r = env.sync()
    assert r.exit_code == 0, r.failures
    sim = env.box.procore
    assert sim.calls["PATCH /rest/v1.0/vendors/sync"] == 2  # the resend reached the server too
    assert len(sim.vendors) == 6 and len(sim.contracts) == 1
    origins = [v["origin_id"] for v in sim.vendors.values()]
    assert len(set(origins)) == len(origins)


def test_example_config_is_valid_and_needs_no_jira() -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "peoplesoft-procore.toml"
    cfg = config_mod.load(path)
    assert cfg.jira is None and cfg.sections["procore"].company_id == 4264807
    pair = cfg.sections["peoplesoft_procore"]
    assert pair.po.handle == "PO_REF" and pair.project_of("PRJ-TOWER", "") == "562949953425001"
    assert "procore.client_secret" in path.read_text(encoding="utf-8")


def test_webhook_delivery_makes_the_next_pass_fetch_the_named_commitment(env: Env) -> None:
    from mlconnector.procore.webhook import event_from_payload, spool_path
    from mlconnector.webhook import append_event

    assert env.sync().exit_code == 0
    c = _commitment(env)
    # Its change stamp lies before the last pass's window (a late commit): only the delivery names it.
    env.box.procore.contracts[c["id"]]["updated_at"] = "2019-01-01T00:00:00Z"
    event = event_from_payload(env.box.procore.delivery("Purchase Order Contracts", c["id"], TOWER))
    assert event is not None
    spool = spool_path(env.state_file)
    append_event(spool, event)
    append_event(spool, event)  # a duplicated delivery
    r = env.sync()
    assert r.exit_code == 0, r.failures
    assert len(env.box.purchasing.pos_with_ref(f"PCO-{c['id']}")) == 1
    assert not spool.read_text(encoding="utf-8") and "procore_events" not in env.state().extra
    assert env.sync().counts["commitments"].created == 0



# -- 7. project costs -> GL journals ------------------------------------------------------------------
def _journals(env: Env, reference: str) -> list[dict[str, Any]]:
    return env.box.accounting.journals_with(reference)


def test_approved_direct_cost_posts_one_balanced_journal_and_its_id_goes_back(env: Env) -> None:
    from decimal import Decimal

    from mlconnector.sandbox.procore_run import OFFSET_ACCOUNT

    assert env.sync().exit_code == 0
    sim = env.box.procore
    dc = sim.add_direct_cost(TOWER, env.procore_vendor(env.active_vendor()), invoice_number="INV-88", lines=[
        {"cost_code_id": env.cost_code("640000"), "amount": "1250.10", "description": "Concrete"},
        {"cost_code_id": env.cost_code("641000"), "amount": "99.95", "description": "Pump truck"}])
    draft = sim.add_direct_cost(TOWER, None, invoice_number="INV-89", status="draft", lines=[
        {"cost_code_id": env.cost_code("640000"), "amount": "5", "description": "Not yet"}])
    r = env.sync()
    assert r.exit_code == 0, r.failures
    [journal] = _journals(env, f"procore-dc-{dc['id']}")
    assert not _journals(env, f"procore-dc-{draft['id']}")
    lines = journal["JRNL_LN"]
    assert sum(Decimal(ln["MONETARY_AMOUNT"]) for ln in lines) == 0
    assert sorted((ln["ACCOUNT"], ln["MONETARY_AMOUNT"], ln["DEPTID"], ln["PROJECT_ID"]) for ln in lines) == [
        (OFFSET_ACCOUNT, "-1350.05", "FAC", "PRJ-TOWER"), ("640000", "1250.10", "FAC", "PRJ-TOWER"),
        ("641000", "99.95", "FAC", "PRJ-TOWER")]
    assert sim.direct_costs[dc["id"]]["origin_id"] == handle("psft-jrnl", ("US001", journal["JOURNAL_ID"]))
    calls = dict(env.box.accounting.calls)
    r2 = env.sync()
    assert r2.exit_code == 0, r2.failures
    assert len(_journals(env, f"procore-dc-{dc['id']}")) == 1 and dict(env.box.accounting.calls) == calls


def test_approved_change_order_posts_one_journal_and_a_lost_answer_does_not_duplicate(env: Env) -> None:
    assert env.sync().exit_code == 0
    c = _commitment(env)
    co = env.box.procore.add_change_order(TOWER, c["id"], number="CO-3", lines=[
        {"cost_code_id": env.cost_code("650000"), "amount": "700.00", "description": "Extra fencing"}])
    env.box.ps_server.faults.add(Fault("drop_after", method="POST", body_match="Create__CompIntfc__JOURNAL_ENTRY",
                                       count=1))
    r = env.sync()
    assert r.counts["change_orders"].failed == 1  # answer lost: looked up next pass, never resent blindly
    r2 = env.sync()
    assert r2.exit_code == 0, r2.failures
    assert len(_journals(env, f"procore-cco-{co['id']}")) == 1



def test_direct_cost_webhook_is_fetched_by_the_next_pass(env: Env) -> None:
    from mlconnector.procore.webhook import event_from_payload, spool_path
    from mlconnector.webhook import append_event

    assert env.sync().exit_code == 0
    sim = env.box.procore
    dc = sim.add_direct_cost(TOWER, None, invoice_number="INV-90", lines=[
        {"cost_code_id": env.cost_code("650000"), "amount": "410.00", "description": "Scaffold crew"}])
    sim.direct_costs[dc["id"]]["updated_at"] = "2019-01-01T00:00:00Z"  # outside every window: only the hook names it
    event = event_from_payload(sim.delivery("Direct Costs", dc["id"], TOWER))
    assert event is not None
    append_event(spool_path(env.state_file), event)
    r = env.sync()
    assert r.exit_code == 0, r.failures
    assert len(_journals(env, f"procore-dc-{dc['id']}")) == 1


def test_lost_po_create_answer_is_adopted_next_pass_not_duplicated(env: Env) -> None:
    assert env.sync().exit_code == 0
    c = _commitment(env)
    env.box.ps_server.faults.add(Fault("drop_after", method="POST", body_match="Create__CompIntfc__PO_EXPRESS",
                                       count=1))
    r = env.sync()
    assert r.counts["commitments"].failed == 1  # the PO was saved, its answer lost: not sent again
    r2 = env.sync()
    assert r2.exit_code == 0, r2.failures
    assert len(env.box.purchasing.pos_with_ref(f"PCO-{c['id']}")) == 1
    assert not env.state().replay
