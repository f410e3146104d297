"""`sync procurify-peoplesoft` end to end against the Procurify and purchasing CI simulators (127.0.0.1, port 0).

The promises: every approved requisition becomes one PO with the right lines and distributions; a pass with
nothing new writes nothing (and makes no PeopleSoft call); changes update the same PO where PeopleSoft allows
it, else wait for a person; an unmapped reference waits and posts once mapped; a lost CI answer, a kill after
the commit, a PO_REF shared with other POs never yield a second PO; bad input holds only its own group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import sandbox_environ

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.sandbox.procurify_run import ACCOUNTS, ProcurifyBox, start_procurify_sandbox
from mlconnector.sandbox.procurify_sim import CLIENT_SECRET
from mlconnector.sandbox.server import Fault
from mlconnector.state import State
from mlconnector.sync.engine import PassResult

CREATE = "Create__CompIntfc__PO_EXPRESS"


@dataclass
class PEnv:
    box: ProcurifyBox
    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def audit_file(self) -> Path:
        return self.dir / "state.audit.jsonl"

    def write_config(self, **kwargs: Any) -> None:
        self.config.write_text(self.box.config_text(self.state_file, **kwargs), encoding="utf-8")

    def sync(self, dry_run: bool = False) -> PassResult:
        return runner.sync("procurify-peoplesoft", config_mod.load(self.config), dry_run=dry_run)

    def state(self) -> State:
        return State.load(self.state_file)

    def pos_by_ref(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for po in self.box.purchasing.pos.values():
            out.setdefault((po["PO_REF"], po["VENDOR_ID"]), []).append(po)
        return out

    def writes(self) -> int:
        calls = self.box.purchasing.calls
        return calls["CI_PO_EXPRESS_C"] + calls["CI_PO_EXPRESS_UD"]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}
        env.update(self.box.env(), MLCONNECTOR_CACHE_DIR=str(self.dir / "cache"), PYTHONIOENCODING="utf-8")
        return env


@pytest.fixture
def penv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PEnv]:
    box = start_procurify_sandbox(requisitions=4)
    sandbox_environ(monkeypatch, box.env(), tmp_path / "cache")
    env = PEnv(box, tmp_path)
    env.write_config()
    try:
        yield env
    finally:
        box.stop()


def _assert_one_po_per_group(env: PEnv) -> None:
    groups = {(i["orderNum"], i["pref_vendor"]["id"]) for i in env.box.procurify.items.values() if i["status"] == 0}
    from mlconnector.sandbox.procurify_run import VENDORS

    wanted = {(f"PRC-{req}-{v}", VENDORS[v][0]) for req, v in groups}
    got = env.pos_by_ref()
    assert {k: len(v) for k, v in got.items() if len(v) != 1} == {}
    assert set(got) == wanted


# -- 1. first pass, second pass ---------------------------------------------------------------------
def test_first_pass_posts_each_approved_requisition_once_with_lines_and_distributions(penv: PEnv) -> None:
    r = penv.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["requisitions"].created == 4
    _assert_one_po_per_group(penv)
    sim = penv.box.procurify
    for po in penv.box.purchasing.pos.values():
        req = int(po["PO_REF"].removeprefix("PRC-").split("-")[0])  # PRC-<requisition>-<Procurify vendor>
        items = sim.items_of(req)
        assert po["BUSINESS_UNIT"] == "US001" and po["BUYER_ID"] == "BUYER1" and po["CURRENCY_CD"] == "USD"
        assert [ln["DESCR254_MIXED"] for ln in po["PO_LINE"]] == [i["name"] for i in items]
        for line, item in zip(po["PO_LINE"], items, strict=True):
            assert Decimal(line["QTY_PO"]) == Decimal(item["approved_quantity"])
            assert Decimal(line["PRICE_PO"]) == Decimal(item["approved_price"])
            (dist,) = line["PO_LINE_DISTRIB"]
            account, deptid = ACCOUNTS[f"{item['accountCode']}|{item['department']['name']}"].split("/")
            assert (dist["ACCOUNT"], dist["DEPTID"]) == (account, deptid)
            # The distribution adds up to its line.
            assert Decimal(dist["QTY_PO"]) == Decimal(line["QTY_PO"])
            assert Decimal(dist["MERCHANDISE_AMT"]) == Decimal(line["QTY_PO"]) * Decimal(line["PRICE_PO"])


def test_second_pass_writes_nothing_and_makes_no_peoplesoft_call(penv: PEnv) -> None:
    penv.sync()
    writes, ps_requests = penv.writes(), len(penv.box.ps_server.requests())
    token_requests = penv.box.procurify.token_requests
    r = penv.sync()
    assert r.exit_code == 0
    assert r.counts["requisitions"].unchanged == 4 and r.counts["requisitions"].created == 0
    assert penv.writes() == writes
    assert len(penv.box.ps_server.requests()) == ps_requests  # O(1): no WSDL, no Find, no Get
    assert r.requests["procurify"] == 1  # one list page; the token came from the cache
    assert penv.box.procurify.token_requests == token_requests
    _assert_one_po_per_group(penv)


# -- 2. new and changed requisitions ----------------------------------------------------------------
def test_new_requisition_is_posted_and_a_change_updates_the_same_po(penv: PEnv) -> None:
    penv.sync()
    sim = penv.box.procurify
    new_req = sim.add_requisition(302, [{"name": "Safety boots", "quantity": 3, "price": "80.00", "unit": "BOX",
                                         "account_code": "6300", "department_id": 3}])
    changed_req = sorted({i["orderNum"] for i in sim.items.values()})[0]
    item = sim.items_of(changed_req)[0]
    sim.change_item(item["id"], quantity=9)
    r = penv.sync()
    assert r.exit_code == 0, r.failures
    assert (r.counts["requisitions"].created, r.counts["requisitions"].updated) == (1, 1)
    _assert_one_po_per_group(penv)
    (po,) = [p for p in penv.box.purchasing.pos.values() if p["PO_REF"].startswith(f"PRC-{changed_req}-")]
    assert Decimal(po["PO_LINE"][0]["QTY_PO"]) == 9
    assert Decimal(po["PO_LINE"][0]["PO_LINE_DISTRIB"][0]["QTY_PO"]) == 9
    (new_po,) = [p for p in penv.box.purchasing.pos.values() if p["PO_REF"].startswith(f"PRC-{new_req}-")]
    assert new_po["PO_LINE"][0]["UNIT_OF_MEASURE"] == "BX"
    assert penv.sync().counts["requisitions"].updated == 0


def test_a_lost_update_answer_that_took_effect_is_not_sent_again(penv: PEnv) -> None:
    penv.sync()
    sim = penv.box.procurify
    req = sorted({i["orderNum"] for i in sim.items.values()})[0]
    sim.change_item(sim.items_of(req)[0]["id"], quantity=7)
    penv.box.ps_server.faults.add(Fault("drop_after", method="POST", body_match="Updatedata__CompIntfc__PO_EXPRESS",
                                        count=1))
    r = penv.sync()
    # The lines read back (a collection, rows in PeopleSoft's order) show the change: it took effect.
    assert r.exit_code == 0, r.failures
    assert penv.box.purchasing.calls["CI_PO_EXPRESS_UD"] == 1
    (po,) = [p for p in penv.box.purchasing.pos.values() if p["PO_REF"].startswith(f"PRC-{req}-")]
    assert Decimal(po["PO_LINE"][0]["QTY_PO"]) == 7


def test_change_to_a_dispatched_po_waits_for_a_person_with_both_versions(penv: PEnv) -> None:
    penv.sync()
    sim, ps = penv.box.procurify, penv.box.purchasing
    req = sorted({i["orderNum"] for i in sim.items.values()})[0]
    (key,) = [k for k, p in ps.pos.items() if p["PO_REF"].startswith(f"PRC-{req}-")]
    ps.set_po_status(key, "D")
    sim.change_item(sim.items_of(req)[0]["id"], quantity=7)
    r = penv.sync()
    assert r.exit_code == 1
    (failure,) = r.failures
    assert "status 'D'" in failure["error"] and "no second PO" in failure["error"]
    assert ps.calls["CI_PO_EXPRESS_UD"] == 0
    _assert_one_po_per_group(penv)
    (item,) = penv.state().replay
    both = json.loads(item["raw"])
    assert {"purchase_order", "wanted"} <= set(both)
    assert both["wanted"]["lines"][0]["QTY_PO"] == "7"
    # The person applies the change in PeopleSoft: the next pass finds the PO equal and clears the item.
    ps.pos[key]["PO_LINE"][0]["QTY_PO"] = "7"
    ps.pos[key]["PO_LINE"][0]["PO_LINE_DISTRIB"][0]["QTY_PO"] = "7"
    amount = Decimal(7) * Decimal(ps.pos[key]["PO_LINE"][0]["PRICE_PO"])
    ps.pos[key]["PO_LINE"][0]["PO_LINE_DISTRIB"][0]["MERCHANDISE_AMT"] = str(amount)
    r = penv.sync()
    assert r.exit_code == 0, r.failures
    assert penv.state().replay == [] and ps.calls["CI_PO_EXPRESS_UD"] == 0


# -- 3. reference data ------------------------------------------------------------------------------
def test_unmapped_account_waits_with_its_reason_then_posts_once_mapped(penv: PEnv) -> None:
    partial = {k: v for k, v in ACCOUNTS.items() if not k.startswith("6200")}
    penv.write_config(accounts=partial)
    r = penv.sync()
    assert r.exit_code == 1
    waiting = penv.state().replay
    assert waiting and all(i["waits"] for i in waiting)
    assert all("'6200|IT'" in i["error"] and "[procurify_peoplesoft.accounts]" in i["error"] for i in waiting)
    held = {"PRC-" + "-".join(i["row"]["group"]) for i in waiting}
    assert not any(p["PO_REF"] in held for p in penv.box.purchasing.pos.values())  # never posted in part
    # Still waiting on the next pass (retried every pass, no attempt cap).
    for _ in range(4):
        assert penv.sync().exit_code == 1
    penv.write_config()
    r = penv.sync()
    assert r.exit_code == 0, r.failures
    assert penv.state().replay == []
    _assert_one_po_per_group(penv)


def test_unmapped_vendor_and_unit_wait_naming_their_config_keys(penv: PEnv) -> None:
    penv.write_config(extra_pair="pending_grace_seconds = 0\ncreate_vendors = false")
    sim = penv.box.procurify
    sim.add_vendor("Brand New Vendor Ltd", vendor_id=399)
    sim.add_requisition(399, [{"name": "Widget", "quantity": 1, "price": "5", "account_code": "6100",
                               "department_id": 1}])
    sim.add_requisition(301, [{"name": "Rope", "quantity": 2, "price": "3", "unit": "M", "account_code": "6100",
                               "department_id": 1}])
    r = penv.sync()
    errors = sorted(f["error"] for f in r.failures)
    assert len(errors) == 2
    assert any("vendor '399'" in e and "[procurify_peoplesoft.vendors]" in e for e in errors)
    assert any("unit 'M'" in e and "[procurify_peoplesoft.units]" in e for e in errors)
    assert r.counts["requisitions"].created == 4


def test_bad_input_holds_only_its_own_group(penv: PEnv) -> None:
    sim = penv.box.procurify
    zero = sim.add_requisition(301, [{"name": "Ok line", "quantity": 2, "price": "1", "account_code": "6100",
                                      "department_id": 1},
                                     {"name": "Zero line", "quantity": 0, "price": "1", "account_code": "6100",
                                      "department_id": 1}])
    gbp = sim.add_requisition(301, [{"name": "Tea", "quantity": 1, "price": "4", "account_code": "6100",
                                     "department_id": 1}], currency="GBP")
    r = penv.sync()
    assert r.counts["requisitions"].created == 4
    errors = {f["key"].split("|")[0]: f["error"] for f in r.failures}
    assert "quantity 0" in errors[str(zero)] and "not posted in part" in errors[str(zero)]
    assert "'GBP'" in errors[str(gbp)] and "not replaced" in errors[str(gbp)]
    refs = {p["PO_REF"] for p in penv.box.purchasing.pos.values()}
    assert not [r for r in refs if r.startswith((f"PRC-{zero}-", f"PRC-{gbp}-"))]


def test_amounts_are_decimal_end_to_end(penv: PEnv) -> None:
    sim = penv.box.procurify
    req = sim.add_requisition(301, [{"name": "Fine", "quantity": "3", "price": "0.10000001", "account_code": "6100",
                                     "department_id": 1}])
    assert penv.sync().exit_code == 0
    (po,) = [p for p in penv.box.purchasing.pos.values() if p["PO_REF"].startswith(f"PRC-{req}-")]
    line = po["PO_LINE"][0]
    assert line["PRICE_PO"] == "0.10000001"  # not 0.1000000099999... (a float would show it)
    assert line["PO_LINE_DISTRIB"][0]["MERCHANDISE_AMT"] == "0.300"


# -- 4. never a second PO ---------------------------------------------------------------------------
def test_po_ref_shared_with_another_vendors_po_is_not_adopted(penv: PEnv) -> None:
    sim, ps = penv.box.procurify, penv.box.purchasing
    req = sorted({i["orderNum"] for i in sim.items.values()})[0]
    # Someone keyed a PO with the same reference for another supplier (PO_REF is not unique), and one whose
    # reference only starts with ours (Find matches prefixes).
    for po_id, ref in (("0000900001", f"PRC-{req}"), ("0000900002", f"PRC-{req}0")):
        ps.pos[("US001", po_id)] = {"BUSINESS_UNIT": "US001", "PO_ID": po_id, "PO_REF": ref, "VENDOR_SETID": "SHARE",
                                    "VENDOR_ID": "0000000077", "PO_STATUS": "D", "PO_LINE": []}
    r = penv.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["requisitions"].created == 4 and r.counts["requisitions"].adopted == 0
    assert ps.pos[("US001", "0000900001")]["PO_STATUS"] == "D"  # untouched


def test_two_pos_with_our_handle_and_vendor_are_a_conflict_not_a_third(penv: PEnv) -> None:
    sim, ps = penv.box.procurify, penv.box.purchasing
    req = sorted({i["orderNum"] for i in sim.items.values()})[0]
    for po_id in ("0000900001", "0000900002"):
        ps.pos[("US001", po_id)] = {"BUSINESS_UNIT": "US001", "PO_ID": po_id, "PO_REF": f"PRC-{req}",
                                    "VENDOR_SETID": "SHARE", "VENDOR_ID": "0000000042", "PO_STATUS": "I",
                                    "PO_LINE": []}
    r = penv.sync()
    (failure,) = r.failures
    assert "2 purchase orders" in failure["error"] and "Nothing was created" in failure["error"]
    assert len(ps.pos_with_ref(f"PRC-{req}")) == 2


def test_a_po_found_by_handle_after_a_state_loss_is_adopted_not_created_again(penv: PEnv) -> None:
    penv.sync()
    before = dict(penv.box.purchasing.pos)
    penv.state_file.unlink()
    r = penv.sync()
    assert r.exit_code == 0, r.failures
    assert r.counts["requisitions"].adopted == 4 and r.counts["requisitions"].created == 0
    assert penv.box.purchasing.pos.keys() == before.keys()


def test_lost_create_answer_is_not_resent_in_the_pass_and_the_next_pass_adopts(penv: PEnv) -> None:
    penv.box.ps_server.faults.add(Fault("drop_after", method="POST", body_match=CREATE, count=1))
    r = penv.sync()
    assert r.exit_code == 1
    (failure,) = r.failures
    assert "was lost" in failure["error"] and "not sent again" in failure["error"]
    assert penv.box.purchasing.calls["CI_PO_EXPRESS_C"] == 4  # the lost one was not resent
    assert len(penv.box.purchasing.pos) == 4  # ...though it was saved
    assert len(penv.state().pending("requisitions")) == 1
    r = penv.sync()
    assert r.exit_code == 0, r.failures
    assert penv.box.purchasing.calls["CI_PO_EXPRESS_C"] == 4
    _assert_one_po_per_group(penv)
    state = penv.state()
    assert state.pending("requisitions") == [] and state.replay == []


def test_lost_create_that_did_not_take_effect_is_created_by_the_next_pass(penv: PEnv) -> None:
    penv.box.ps_server.faults.add(Fault("drop_before", method="POST", body_match=CREATE, count=1))
    r = penv.sync()
    assert r.exit_code == 1 and len(penv.box.purchasing.pos) == 3
    r = penv.sync()
    assert r.exit_code == 0, r.failures
    _assert_one_po_per_group(penv)


def test_kill_after_the_ci_commit_and_an_immediate_rerun_create_no_second_po(penv: PEnv) -> None:
    committed = threading.Event()
    penv.box.purchasing.on_commit = lambda op, key: committed.set() if op.endswith("_C") else None
    # The first Create is saved, then its answer hangs: the pass is killed in that window.
    penv.box.ps_server.faults.add(Fault("hang_after", method="POST", body_match=CREATE, count=1, delay=30))
    cmd = [sys.executable, "-m", "mlconnector", "sync", "procurify-peoplesoft", "--config", str(penv.config)]
    proc = subprocess.Popen(cmd, env=penv.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert committed.wait(60), "the pass never reached the PO Create"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    # Up to ci_workers creates were in flight: each one committed and unlinked has its mark on disk.
    linked = {tuple(e["po"].values()) for e in penv.state().entries("requisitions").values()
              if e.get("po") and not e.get("pending")}
    unlinked = [k for k in penv.box.purchasing.pos if k not in linked]
    assert unlinked and len(penv.state().pending("requisitions")) >= len(unlinked)
    penv.box.ps_server.faults.clear()
    done = subprocess.run(cmd, env=penv.env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    _assert_one_po_per_group(penv)
    assert penv.box.purchasing.calls["CI_PO_EXPRESS_C"] == 4
    state = penv.state()
    assert state.pending("requisitions") == [] and state.replay == []


# -- 5. secrets ---------------------------------------------------------------------------------------
def test_secrets_and_tokens_never_reach_state_or_audit_and_the_token_file_is_private(penv: PEnv) -> None:
    penv.sync()
    tokens = list(penv.box.procurify.tokens)
    assert tokens
    (token_file,) = (penv.dir / "cache" / "procurify").glob("*.token.json")
    assert token_file.stat().st_mode & 0o777 == 0o600
    for path in (penv.state_file, penv.audit_file):
        text = path.read_text(encoding="utf-8")
        for secret in [CLIENT_SECRET, "sandbox-ps-password", *tokens]:
            assert secret not in text, path
    audit = [json.loads(line) for line in penv.audit_file.read_text(encoding="utf-8").splitlines()]
    ids = [a.get("request_id") for a in audit if a.get("action") == "procurify_response"]
    assert ids and all(ids)  # x-request-id of every Procurify answer is in the audit trail


# -- 6. ping ------------------------------------------------------------------------------------------
def test_ping_checks_procurify_the_po_ci_and_the_account_crosswalk(penv: PEnv) -> None:
    from mlconnector.ping import run_ping

    checks = run_ping(config_mod.load(penv.config))
    names = {(c.system, c.name): c for c in checks}
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]
    assert ("Procurify", "token") in names and ("Procurify", "GET /api/v3/order-items/") in names
    assert names[("PeopleSoft", "lookup CI_PO_EXPRESS")].detail == "Find by BUSINESS_UNIT, PO_REF, VENDOR_ID"
    assert ("Jira", "reachable") not in names  # this configuration has no [jira]
    penv.write_config(accounts={k: v for k, v in ACCOUNTS.items() if not k.startswith("6200")})
    bad = [c for c in run_ping(config_mod.load(penv.config)) if not c.ok]
    assert [c.name for c in bad] == ["account crosswalk"]
    assert "6200" in bad[0].detail and "IT" in bad[0].detail and "procurify_peoplesoft.accounts" in bad[0].fix
    penv.box.purchasing.inactive.add("CI_PO_EXPRESS_F")
    penv.write_config()
    bad = [c for c in run_ping(config_mod.load(penv.config)) if not c.ok]
    assert [c.name for c in bad] == ["find CI_PO_EXPRESS"] and "Routing" in bad[0].detail


def test_cli_sync_and_ping_run_without_a_jira_section(penv: PEnv) -> None:
    base = [sys.executable, "-m", "mlconnector"]
    done = subprocess.run([*base, "sync", "procurify-peoplesoft", "--config", str(penv.config), "--json"],
                          env=penv.env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["counts"]["requisitions"]["created"] == 4
    done = subprocess.run([*base, "ping", "--config", str(penv.config)], env=penv.env(), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    env = {k: v for k, v in penv.env().items() if k != "MLCONNECTOR_PROCURIFY_CLIENT_SECRET"}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
    done = subprocess.run([*base, "sync", "procurify-peoplesoft", "--config", str(penv.config)], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "MLCONNECTOR_PROCURIFY_CLIENT_SECRET" in done.stdout + done.stderr


def test_a_young_pending_create_is_neither_looked_up_nor_resent(penv: PEnv) -> None:
    # The Create's answer is lost and nothing was saved yet (the app server may still be at it): within the
    # grace period an absence proves nothing, so the record waits instead of being created again.
    penv.write_config(extra_pair="pending_grace_seconds = 3600")
    penv.box.ps_server.faults.add(Fault("drop_before", method="POST", body_match=CREATE, count=1))
    penv.sync()
    finds = penv.box.purchasing.calls["CI_PO_EXPRESS_F"]
    r = penv.sync()
    (failure,) = r.failures
    assert "may still be running" in failure["error"] and "pending_grace_seconds" in failure["error"]
    assert penv.box.purchasing.calls["CI_PO_EXPRESS_C"] == 3 and len(penv.box.purchasing.pos) == 3
    assert penv.box.purchasing.calls["CI_PO_EXPRESS_F"] == finds
    penv.write_config(extra_pair="pending_grace_seconds = 0")  # as if the grace period had passed
    assert penv.sync().exit_code == 0
    _assert_one_po_per_group(penv)


def test_a_pair_whose_section_is_missing_is_refused_plainly(penv: PEnv) -> None:
    from mlconnector.errors import ConfigError

    with pytest.raises(ConfigError, match=r"peoplesoft-jira needs a \[jira\] section"):
        runner.sync("peoplesoft-jira", config_mod.load(penv.config))


def test_a_plan_names_each_po_it_would_create_and_writes_nothing(penv: PEnv) -> None:
    plan = penv.sync(dry_run=True)
    assert plan.exit_code == 0, plan.failures
    creates = [p for p in plan.plan if p["action"] == "create"]
    assert len(creates) == 4 and all(p["handle"].startswith("PRC-") for p in creates)
    assert penv.box.purchasing.pos == {} and not penv.state_file.exists()
    assert penv.sync().counts["requisitions"].created == 4  # the plan was what the pass did


def test_auth_jira_on_a_configuration_without_jira_is_a_clear_error(penv: PEnv) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mlconnector", "auth", "jira", "--no-browser", "--config",
                           str(penv.config)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "no [jira] section" in proc.stderr and "Traceback" not in proc.stderr


def test_a_state_holding_another_pairs_records_is_refused_and_left_alone(penv: PEnv) -> None:
    # One configuration with [peoplesoft], [jaggaer] and [procurify] sections runs both pairs against one state
    # file; both name their records "requisitions". procurify-peoplesoft must not read the other pair's pending
    # creates and links as its own (a pending mark settled by the wrong pair is a second PO).
    assert penv.sync().exit_code == 0
    assert penv.state().pairs == ["procurify-peoplesoft"]  # recorded by its first pass
    state = penv.state()
    state.pairs = ["peoplesoft-jaggaer"]
    state.save()
    before = penv.state_file.read_bytes()
    calls = dict(penv.box.purchasing.calls)
    done = subprocess.run([sys.executable, "-m", "mlconnector", "sync", "procurify-peoplesoft", "--config",
                           str(penv.config)], env=penv.env(), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 5 and "Traceback" not in out, out
    assert "peoplesoft-jaggaer" in out and "instance" in out and "Nothing was changed" in out
    assert penv.state_file.read_bytes() == before
    assert dict(penv.box.purchasing.calls) == calls  # no PeopleSoft write, no lookup
