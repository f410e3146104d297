"""Vendors both ways in `sync procurify-peoplesoft` (127.0.0.1, port 0).

The promises: a Procurify vendor PeopleSoft lacks is created through the supplier CI before the PO that needs
it, once (looked up by its handle before every create, also after a lost answer), with a long name split
losslessly into NAME1 + NAME2 or refused, never cut; the learned pair lets the PO post in the same pass; a
PeopleSoft change to a linked supplier (name, status, address) reaches the Procurify vendor, and the
connector's own writes coming back are not sent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.peoplesoft.vendor_sink import join_name, split_name
from mlconnector.sandbox.procurify_run import ProcurifyBox, start_procurify_sandbox
from mlconnector.sandbox.server import Fault
from mlconnector.state import State
from mlconnector.sync.engine import PassResult

VCREATE = "Create__CompIntfc__VNDR_ID"
LINE = {"name": "Widget", "quantity": 2, "price": "5", "account_code": "6100", "department_id": 1}


class VEnv:
    def __init__(self, box: ProcurifyBox, d: Path) -> None:
        self.box, self.dir = box, d
        self.config = d / "config.toml"
        self.write_config()

    def write_config(self, extra: str = "") -> None:
        self.config.write_text(self.box.config_text(self.dir / "state.json",
                                                    extra_pair="pending_grace_seconds = 0\n"
                                                               "vendor_read_every_minutes = 0\n" + extra),
                               encoding="utf-8")

    def sync(self) -> PassResult:
        return runner.sync("procurify-peoplesoft", config_mod.load(self.config))

    def state(self) -> State:
        return State.load(self.dir / "state.json")


@pytest.fixture
def venv_(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[VEnv]:
    box = start_procurify_sandbox(requisitions=2)
    for k, v in box.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLCONNECTOR_CACHE_DIR", str(tmp_path / "cache"))
    try:
        yield VEnv(box, tmp_path)
    finally:
        box.stop()


def test_split_name_is_lossless_or_refused() -> None:
    name = "Northwind Industrial Fasteners and Fittings Corporation of America"
    n1, n2 = split_name(name)
    assert len(n1) <= 40 and len(n2) <= 40 and join_name(n1, n2) == name and not n1.endswith(" ")
    word = "X" * 55
    n1, n2 = split_name(word)
    assert (n1, n2) == ("X" * 40, "X" * 15) and join_name(n1, n2) == word
    assert split_name("Acme") == ("Acme", "")
    with pytest.raises(ValueError, match="cannot be kept whole"):
        split_name("Y" * 81)


def test_new_vendor_is_created_once_before_its_po_and_learned(venv_: VEnv) -> None:
    sim, ps = venv_.box.procurify, venv_.box.purchasing
    long_name = "Northwind Industrial Fasteners and Fittings Corporation of America"
    sim.add_vendor(long_name, vendor_id=399, addressLineOne="1 Harbour Way", city="Halifax", country="CA")
    sim.add_requisition(399, [LINE])
    r = venv_.sync()
    assert r.exit_code == 0, r.failures
    (vendor,) = ps.vendors_with_handle("PRCV-399")
    assert join_name(vendor["NAME1"], vendor["NAME2"]) == long_name and len(vendor["NAME1"]) <= 40
    assert vendor["VENDOR_ADDR"][0]["CITY"] == "Halifax"
    (po,) = [p for p in ps.pos.values() if p["VENDOR_ID"] == vendor["VENDOR_ID"]]
    assert po["PO_LINE"][0]["DESCR254_MIXED"] == "Widget"
    assert r.counts["vendors"].created == 1
    assert venv_.state().extra["xref"]["vendor"]["399"] == vendor["VENDOR_ID"]
    # Its own write read back is an echo; nothing new: no vendor create, no Procurify change.
    sim.add_requisition(399, [LINE])
    r = venv_.sync()
    assert r.exit_code == 0, r.failures
    assert ps.calls["CI_VNDR_ID_C"] == 1 and sim.vendor_patches == 0
    assert len([p for p in ps.pos.values() if p["VENDOR_ID"] == vendor["VENDOR_ID"]]) == 2


def test_state_loss_adopts_the_vendor_by_its_handle(venv_: VEnv) -> None:
    venv_.box.procurify.add_vendor("Fresh Vendor", vendor_id=398)
    venv_.box.procurify.add_requisition(398, [LINE])
    assert venv_.sync().exit_code == 0
    (venv_.dir / "state.json").unlink()
    r = venv_.sync()
    assert r.exit_code == 0, r.failures
    assert venv_.box.purchasing.calls["CI_VNDR_ID_C"] == 1
    assert len(venv_.box.purchasing.vendors_with_handle("PRCV-398")) == 1


def test_a_name_that_cannot_fit_is_refused_and_its_po_waits(venv_: VEnv) -> None:
    venv_.box.procurify.add_vendor("Z" * 90, vendor_id=397)
    venv_.box.procurify.add_requisition(397, [LINE])
    r = venv_.sync()
    errors = [f["error"] for f in r.failures]
    assert any("not cut" in e and "NAME1 + NAME2" in e for e in errors), errors
    assert any("waits for a mapping of vendor '397'" in e for e in errors), errors
    assert venv_.box.purchasing.vendors_with_handle("PRCV-397") == []
    assert r.counts["requisitions"].created == 2  # the others posted


def test_lost_vendor_create_answer_yields_one_vendor_and_the_po_posts_next_pass(venv_: VEnv) -> None:
    venv_.box.procurify.add_vendor("Lost Answer Supply", vendor_id=396)
    venv_.box.procurify.add_requisition(396, [LINE])
    venv_.box.ps_server.faults.add(Fault("drop_after", method="POST", body_match=VCREATE, count=1))
    r = venv_.sync()
    assert r.exit_code == 1
    assert any("was lost" in f["error"] and "not sent again" in f["error"] for f in r.failures), r.failures
    assert venv_.state().pending("vendors") == ["396"]
    r = venv_.sync()
    assert r.exit_code == 0, r.failures
    (vendor,) = venv_.box.purchasing.vendors_with_handle("PRCV-396")
    assert venv_.box.purchasing.calls["CI_VNDR_ID_C"] == 1
    assert [p for p in venv_.box.purchasing.pos.values() if p["VENDOR_ID"] == vendor["VENDOR_ID"]]
    assert venv_.state().replay == []


def test_peoplesoft_vendor_change_reaches_procurify(venv_: VEnv) -> None:
    assert venv_.sync().exit_code == 0  # the first full read is the baseline: nothing sent
    sim = venv_.box.procurify
    assert sim.vendor_patches == 0
    venv_.box.purchasing.change_vendor("0000000042", NAME1="Acme Supply Holdings", VENDOR_STATUS="I",
                                       address={"ADDRESS1": "9 Mill Road", "CITY": "Dayton", "STATE": "OH",
                                                "POSTAL": "45402", "COUNTRY": "USA"})
    r = venv_.sync()
    assert r.exit_code == 0, r.failures
    v = sim.vendors[301]
    assert (v["name"], v["active"], v["addressLineOne"], v["city"]) == ("Acme Supply Holdings", False,
                                                                         "9 Mill Road", "Dayton")
    assert r.counts["vendors"].posted == 1 and sim.vendor_patches == 1
    assert venv_.sync().exit_code == 0
    assert sim.vendor_patches == 1  # unchanged since: nothing sent again


def test_vendor_master_is_read_only_when_its_cadence_comes(venv_: VEnv) -> None:
    venv_.config.write_text(venv_.config.read_text().replace("vendor_read_every_minutes = 0\n",
                                                             "vendor_read_every_minutes = 60\n"))
    assert venv_.sync().exit_code == 0
    gets = venv_.box.purchasing.calls["CI_VNDR_ID_G"]
    venv_.box.purchasing.change_vendor("0000000042", NAME1="Renamed")
    r = venv_.sync()
    assert venv_.box.purchasing.calls["CI_VNDR_ID_G"] == gets and r.requests["peoplesoft"] == 0


def test_external_id_names_the_peoplesoft_vendor_it_is_linked_or_created_under(venv_: VEnv) -> None:
    venv_.write_config('vendor_key = "external_id"\n')
    sim, ps = venv_.box.procurify, venv_.box.purchasing
    ps.add_vendor("0000000099", "Known Elsewhere Inc")
    sim.add_vendor("Known Elsewhere Inc", vendor_id=395, external_id="0000000099")
    sim.add_vendor("Named But New", vendor_id=394, external_id="0000000123")
    sim.add_requisition(395, [LINE])
    sim.add_requisition(394, [LINE])
    r = venv_.sync()
    assert r.exit_code == 0, r.failures
    assert ps.calls["CI_VNDR_ID_C"] == 1  # only the one PeopleSoft did not have
    assert ("SHARE", "0000000123") in ps.vendors
    assert {p["VENDOR_ID"] for p in ps.pos.values()} >= {"0000000099", "0000000123"}


def test_a_lowercase_handle_prefix_still_finds_the_vendor_after_a_lost_answer(venv_: VEnv) -> None:
    """PeopleSoft keeps VENDOR_NAME_SHORT in capitals: a handle written as 'prcv-395' reads back 'PRCV-395', so
    a lookup by the lowercase text would miss it and create the supplier a second time."""
    venv_.write_config('vendor_handle_prefix = "prcv-"\n')
    venv_.box.procurify.add_vendor("Lower Case Supply", vendor_id=395)
    venv_.box.procurify.add_requisition(395, [LINE])
    venv_.box.ps_server.faults.add(Fault("drop_after", method="POST", body_match=VCREATE, count=1))
    assert venv_.sync().exit_code == 1
    r = venv_.sync()
    assert r.exit_code == 0, r.failures
    assert venv_.box.purchasing.calls["CI_VNDR_ID_C"] == 1
    assert len(venv_.box.purchasing.vendors_with_handle("PRCV-395")) == 1
