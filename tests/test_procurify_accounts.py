"""PeopleSoft GL accounts published to Procurify account codes in `sync procurify-peoplesoft` (127.0.0.1, port 0).

The promises: each GL account in the configured scope becomes one Procurify account code, looked up by code
before every create (a lost answer is adopted, never a second code); an unchanged table writes nothing; a
changed description is PUT; an inactivated account deactivates its code; off by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.sandbox.procurify_run import ProcurifyBox, start_procurify_sandbox
from mlconnector.sandbox.server import Fault
from mlconnector.sync.engine import PassResult

SCOPE = 'gl_account_prefixes = ["64"]\ngl_accounts = ["650000"]\n'


class GEnv:
    def __init__(self, box: ProcurifyBox, d: Path) -> None:
        self.box, self.dir = box, d
        self.config = d / "config.toml"
        self.write_config(SCOPE)

    def write_config(self, extra: str) -> None:
        self.config.write_text(self.box.config_text(self.dir / "state.json",
                                                    extra_pair="pending_grace_seconds = 0\n"
                                                               "gl_read_every_minutes = 0\n" + extra),
                               encoding="utf-8")

    def sync(self) -> PassResult:
        return runner.sync("procurify-peoplesoft", config_mod.load(self.config))


@pytest.fixture
def genv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GEnv]:
    box = start_procurify_sandbox(requisitions=0)
    for k, v in box.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLCONNECTOR_CACHE_DIR", str(tmp_path / "cache"))
    try:
        yield GEnv(box, tmp_path)
    finally:
        box.stop()


def test_accounts_in_scope_are_published_once_and_a_second_pass_writes_nothing(genv: GEnv) -> None:
    sim = genv.box.procurify
    r = genv.sync()
    assert r.exit_code == 0, (r.failures, r.fatal, r.errors)
    for code, descr in (("640000", "Office supplies expense"), ("641000", "IT equipment expense"),
                        ("650000", "Maintenance")):
        (row,) = sim.codes(code)
        assert row["description"] == descr and row["active"] is True
    assert sim.codes("710000") == []  # out of scope
    writes, lookups = sim.account_code_writes, sim.calls["/api/v3/account-codes/"]
    r = genv.sync()
    assert r.exit_code == 0, r.failures
    assert sim.account_code_writes == writes
    assert sim.calls["/api/v3/account-codes/"] == lookups  # linked and unchanged: no Procurify call


def test_description_change_updates_and_inactivation_deactivates(genv: GEnv) -> None:
    sim, gl = genv.box.procurify, genv.box.gl
    assert genv.sync().exit_code == 0
    gl.accounts["640000"]["DESCR"] = "Office supplies and stationery"
    gl.accounts["641000"]["EFF_STATUS"] = "I"
    del gl.accounts["650000"]  # a query of active accounts only drops it
    r = genv.sync()
    assert r.exit_code == 0, r.failures
    assert [c["description"] for c in sim.codes("640000")] == ["Office supplies and stationery"]
    assert [c["active"] for c in sim.codes("641000")] == [False]
    assert [c["active"] for c in sim.codes("650000")] == [False]
    writes = sim.account_code_writes
    assert genv.sync().exit_code == 0
    assert sim.account_code_writes == writes


def test_lost_create_answer_leaves_one_account_code(genv: GEnv) -> None:
    sim = genv.box.procurify
    genv.box.procurify_server.faults.add(Fault("drop_after", path="/api/v3/account-codes/$", method="POST"))
    first = genv.sync()
    assert first.exit_code != 0 or first.failures
    r = genv.sync()
    assert r.exit_code == 0, r.failures
    for code in ("640000", "641000", "650000"):
        assert len(sim.codes(code)) == 1


def test_off_by_default_and_a_taken_code_is_adopted(genv: GEnv) -> None:
    sim = genv.box.procurify
    genv.write_config("")
    assert genv.sync().exit_code == 0
    assert sim.codes("640000") == [] and genv.box.gl.calls == 0
    with sim._lock:
        sim._new_code("640000", "Office supplies expense")
    genv.write_config(SCOPE)
    r = genv.sync()
    assert r.exit_code == 0, r.failures
    assert len(sim.codes("640000")) == 1 and len(sim.codes("641000")) == 1


def test_simulator_refuses_patch_delete_duplicates_and_missing_fields(genv: GEnv) -> None:
    import requests

    from mlconnector.sandbox.procurify_sim import AUDIENCE, CLIENT_ID, CLIENT_SECRET

    base = genv.box.procurify_server.url
    tok = requests.post(f"{base}/oauth/token", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                                      "audience": AUDIENCE, "grant_type": "client_credentials"},
                        timeout=5).json()["access_token"]
    h = {"Authorization": f"Bearer {tok}", "X-Procurify-Client": "api"}
    url = f"{base}/api/v3/account-codes/"
    assert requests.post(url, json={"code": "6100", "description": "x"}, headers=h, timeout=5).status_code == 400
    assert requests.post(url, json={"code": "9000"}, headers=h, timeout=5).status_code == 400
    assert requests.patch(f"{url}1/", json={"active": False}, headers=h, timeout=5).status_code == 405
    assert requests.delete(f"{url}1/", headers=h, timeout=5).status_code == 405
    assert requests.put(f"{url}1/", json={"active": False}, headers=h, timeout=5).status_code == 400


# -- vouchers close Procurify POs ---------------------------------------------------------------------
CLOSE = 'close_pos = true\nvoucher_read_every_minutes = 0\n'
LINE = {"name": "Widget", "quantity": 2, "price": "5", "account_code": "6100", "department_id": 1}


def _posted(genv: GEnv, sim_order: int) -> tuple[str, str, dict[str, str]]:
    from mlconnector.state import State

    state = State.load(genv.dir / "state.json")
    for key, entry in state.entries("requisitions").items():
        if key.startswith(str(sim_order)):
            return key, entry["po"]["PO_ID"], entry["po"]
    raise AssertionError(f"requisition {sim_order} not posted")


def test_fully_vouchered_po_is_closed_once_and_partial_stays_open(genv: GEnv) -> None:
    sim, q = genv.box.procurify, genv.box.gl
    genv.write_config(CLOSE)
    full = sim.add_requisition(301, [LINE, {**LINE, "name": "Bolt", "quantity": 1, "price": "2.5"}])
    part = sim.add_requisition(302, [LINE])
    assert genv.sync().exit_code == 0
    n_full, n_part = sim.add_purchase_order(full), sim.add_purchase_order(part)
    _, full_po, _ = _posted(genv, full)
    _, part_po, _ = _posted(genv, part)
    q.vouchers = [{"BUSINESS_UNIT": "US001", "PO_ID": full_po, "VOUCHER_ID": "00000001", "GROSS_AMT": "10.000"},
                  {"BUSINESS_UNIT": "US001", "PO_ID": full_po, "VOUCHER_ID": "00000002", "GROSS_AMT": "2.500"},
                  {"BUSINESS_UNIT": "US001", "PO_ID": part_po, "VOUCHER_ID": "00000003", "GROSS_AMT": "4.000"}]
    r = genv.sync()
    assert r.exit_code == 0, (r.failures, r.fatal)
    assert sim.pos[n_full]["state"] == 3 and sim.pos[n_part]["state"] == 0
    assert sim.po_closes == 1
    r = genv.sync()
    assert r.exit_code == 0, (r.failures, r.fatal)
    assert sim.po_closes == 1  # a closed PO is not closed again
    q.vouchers.append({"BUSINESS_UNIT": "US001", "PO_ID": part_po, "VOUCHER_ID": "00000004", "GROSS_AMT": "6.000"})
    assert genv.sync().exit_code == 0
    assert sim.pos[n_part]["state"] == 3 and sim.po_closes == 2


def test_close_whose_answer_was_lost_is_not_sent_again_and_off_by_default(genv: GEnv) -> None:
    sim, q = genv.box.procurify, genv.box.gl
    num = sim.add_requisition(301, [LINE])
    assert genv.sync().exit_code == 0
    n = sim.add_purchase_order(num)
    _, po_id, _ = _posted(genv, num)
    q.vouchers = [{"BUSINESS_UNIT": "US001", "PO_ID": po_id, "VOUCHER_ID": "00000001", "GROSS_AMT": "10.000"}]
    assert genv.sync().exit_code == 0
    assert sim.pos[n]["state"] == 0  # close_pos is off by default
    genv.write_config(CLOSE)
    genv.box.procurify_server.faults.add(Fault("drop_after", path="/close/$", method="POST"))
    genv.sync()
    assert sim.pos[n]["state"] == 3 and sim.po_closes == 1
    r = genv.sync()
    assert r.exit_code == 0, (r.failures, r.fatal)
    assert sim.po_closes == 1 and r.failures == []


def test_ping_runs_the_configured_queries_and_names_the_fix(genv: GEnv) -> None:
    from mlconnector.ping import run_ping

    genv.write_config(SCOPE + CLOSE)
    names = {c.name: c for c in run_ping(config_mod.load(genv.config))}
    assert names["query ML_GL_ACCOUNTS"].ok and names["query ML_PO_VOUCHERS"].ok
    genv.write_config(SCOPE + 'gl_query = "NO_SUCH_QUERY"\n')
    (bad,) = [c for c in run_ping(config_mod.load(genv.config)) if c.name == "query NO_SUCH_QUERY"]
    assert not bad.ok and "gl_query" in bad.fix and "Query Manager" in bad.fix
