"""The JAGGAER cXML receiver (jaggaer/cxml.py) in front of `sync peoplesoft-jaggaer` with po_transport and
invoice_transport = "cxml" (127.0.0.1, port 0).

The promises: a document with the right SharedSecret is answered 200 at once and posted exactly once by the next
pass (PO through the PO CI, invoice as one voucher matched to it); a repeated delivery changes nothing; a wrong
or missing secret is 401 and nothing is kept; untrusted XML declaring entities (expansion bomb, external entity)
is refused 400 without being expanded; a request type the receiver does not take is 406.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import sandbox_environ

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.jaggaer.cxml import make_server, spool_path
from mlconnector.sandbox.jaggaer_run import JaggaerBox, start_jaggaer_sandbox

SECRET = "cxml-shared-secret-for-tests"
PAIR = "peoplesoft-jaggaer"


@dataclass
class CEnv:
    box: JaggaerBox
    dir: Path
    url: str
    spool: Path

    def sync(self) -> Any:
        return runner.sync(PAIR, config_mod.load(self.dir / "config.toml"))

    def post(self, body: str | bytes) -> requests.Response:
        data = body.encode("utf-8") if isinstance(body, str) else body
        return requests.post(self.url, data=data, headers={"Content-Type": "text/xml"}, timeout=10)

    def spooled(self) -> list[str]:
        return self.spool.read_text(encoding="utf-8").splitlines() if self.spool.exists() else []

    def ps_po_writes(self) -> int:
        c = self.box.purchasing.calls
        return c["CI_PO_EXPRESS_C"] + c["CI_PO_EXPRESS_UD"]


@pytest.fixture
def cenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CEnv]:
    box = start_jaggaer_sandbox()
    sandbox_environ(monkeypatch, box.env(), tmp_path / "cache")
    state = tmp_path / "state.json"
    (tmp_path / "config.toml").write_text(box.config_text(state, preflight=False, extra_pair=(
        'pending_grace_seconds = 0\npo_transport = "cxml"\ninvoice_transport = "cxml"')), encoding="utf-8")
    settings = config_mod.load(tmp_path / "config.toml").sections["peoplesoft_jaggaer"]
    server = make_server(SECRET, spool_path(state), settings, "127.0.0.1", 0, "/jaggaer/cxml")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield CEnv(box, tmp_path, f"http://127.0.0.1:{server.server_address[1]}/jaggaer/cxml", spool_path(state))
    finally:
        server.shutdown()
        server.server_close()
        box.stop()


def _header(secret: str = SECRET, supplier: str = "SUPPLIER") -> str:
    return (f'<Header><From><Credential domain="NetworkID"><Identity>{supplier}</Identity></Credential></From>'
            f'<To><Credential domain="NetworkID"><Identity>{supplier}</Identity></Credential></To>'
            f'<Sender><Credential domain="NetworkID"><Identity>JAGGAER</Identity>'
            f'<SharedSecret>{secret}</SharedSecret></Credential><UserAgent>JAGGAER</UserAgent></Sender></Header>')


DOCTYPE = '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/1.2.045/cXML.dtd">\n'


def order(supplier: str, *, payload: str = "p-1@jaggaer", secret: str = SECRET, number: str = "CX500") -> str:
    return (f'{DOCTYPE}<cXML payloadID="{payload}" timestamp="2026-12-01T10:00:00-05:00" version="1.2.045">'
            f'{_header(secret, supplier)}<Request deploymentMode="production"><OrderRequest>'
            f'<OrderRequestHeader orderID="{number}" orderDate="2026-12-01" type="new" orderVersion="1">'
            f'<Total><Money currency="USD">85.00</Money></Total><Extrinsic name="BusinessUnit">BU01</Extrinsic>'
            f'</OrderRequestHeader>'
            f'<ItemOut lineNumber="1" quantity="2"><ItemID><SupplierPartID>V-1</SupplierPartID></ItemID><ItemDetail>'
            f'<UnitPrice><Money currency="USD">40.00</Money></UnitPrice><Description xml:lang="en">Valve</Description>'
            f'<UnitOfMeasure>EA</UnitOfMeasure></ItemDetail><Distribution><Accounting name="GL">'
            f'<AccountingSegment id="6300"><Name xml:lang="en">Account</Name></AccountingSegment></Accounting>'
            f'<Charge><Money currency="USD">80.00</Money></Charge></Distribution></ItemOut>'
            f'<ItemOut lineNumber="2" quantity="1"><ItemID><SupplierPartID>G-2</SupplierPartID></ItemID><ItemDetail>'
            f'<UnitPrice><Money currency="USD">5.00</Money></UnitPrice><Description xml:lang="en">Gasket</Description>'
            f'<UnitOfMeasure>EA</UnitOfMeasure></ItemDetail><Distribution><Accounting name="GL">'
            f'<AccountingSegment id="6100"><Name xml:lang="en">Account</Name></AccountingSegment></Accounting>'
            f'<Charge><Money currency="USD">5.00</Money></Charge></Distribution></ItemOut>'
            f'</OrderRequest></Request></cXML>')


def invoice(supplier: str, *, payload: str = "i-1@supplier", number: str = "SUP-INV-9") -> str:
    return (f'{DOCTYPE}<cXML payloadID="{payload}" timestamp="2026-12-02T10:00:00-05:00" version="1.2.045">'
            f'{_header(SECRET, supplier)}<Request deploymentMode="production"><InvoiceDetailRequest>'
            f'<InvoiceDetailRequestHeader invoiceID="{number}" purpose="standard" operation="new" '
            f'invoiceDate="2026-12-02"><InvoiceDetailHeaderIndicator/><InvoiceDetailLineIndicator/>'
            f'</InvoiceDetailRequestHeader><InvoiceDetailOrder><InvoiceDetailOrderInfo>'
            f'<OrderReference orderID="CX500"><DocumentReference payloadID="p-1@jaggaer"/></OrderReference>'
            f'</InvoiceDetailOrderInfo>'
            f'<InvoiceDetailItem invoiceLineNumber="1" quantity="2"><UnitOfMeasure>EA</UnitOfMeasure>'
            f'<UnitPrice><Money currency="USD">40.00</Money></UnitPrice>'
            f'<InvoiceDetailItemReference lineNumber="1"><Description xml:lang="en">Valve</Description>'
            f'</InvoiceDetailItemReference><SubtotalAmount><Money currency="USD">80.00</Money></SubtotalAmount>'
            f'</InvoiceDetailItem></InvoiceDetailOrder><InvoiceDetailSummary>'
            f'<SubtotalAmount><Money currency="USD">80.00</Money></SubtotalAmount>'
            f'<GrossAmount><Money currency="USD">80.00</Money></GrossAmount>'
            f'<NetAmount><Money currency="USD">80.00</Money></NetAmount></InvoiceDetailSummary>'
            f'</InvoiceDetailRequest></Request></cXML>')


def _status(resp: requests.Response) -> str:
    import defusedxml.ElementTree as DET

    status = DET.fromstring(resp.content).find("Response/Status")
    assert status is not None
    return status.get("code") or ""


def test_good_documents_are_spooled_then_posted_once_by_the_next_pass(cenv: CEnv) -> None:
    box = cenv.box
    bid, vendor = next(iter(box.linked.items()))
    resp = cenv.post(order(bid))
    assert resp.status_code == 200 and _status(resp) == "200"  # answered at once; nothing posted yet
    assert len(cenv.spooled()) == 1 and "JAG-CX500" not in {p["PO_REF"] for p in box.purchasing.pos.values()}
    r = cenv.sync()
    assert r.exit_code == 0, r.failures
    (po,) = [p for p in box.purchasing.pos.values() if p["PO_REF"] == "JAG-CX500"]
    assert po["VENDOR_ID"] == vendor and po["BUSINESS_UNIT"] == "US001"
    assert [ln["PO_LINE_DISTRIB"][0]["ACCOUNT"] for ln in po["PO_LINE"]] == ["650000", "640000"]
    assert cenv.spooled() == []
    # The invoice against it becomes exactly one voucher matched to that PO.
    assert cenv.post(invoice(bid)).status_code == 200
    r = cenv.sync()
    assert r.exit_code == 0, r.failures
    (voucher,) = [v for v in box.accounting.vouchers.values() if v["INVOICE_ID"] == "SUP-INV-9"]
    assert voucher["VENDOR_ID"] == vendor
    # A repeated delivery: the receiver answers 200 and keeps nothing; a receiver restarted since (it forgot the
    # payloadID) spools it again, and the next pass finds everything posted already.
    assert _status(cenv.post(order(bid))) == "200" and cenv.spooled() == []
    po_writes, vouchers = cenv.ps_po_writes(), len(box.accounting.vouchers)
    settings = config_mod.load(cenv.dir / "config.toml").sections["peoplesoft_jaggaer"]
    fresh = make_server(SECRET, cenv.spool, settings, "127.0.0.1", 0, "/jaggaer/cxml")
    t = threading.Thread(target=fresh.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{fresh.server_address[1]}/jaggaer/cxml"
        for body in (order(bid), invoice(bid)):
            assert requests.post(url, data=body.encode(), timeout=10).status_code == 200
    finally:
        fresh.shutdown()
        fresh.server_close()
    assert len(cenv.spooled()) == 2
    r = cenv.sync()
    assert r.exit_code == 0, r.failures
    assert (cenv.ps_po_writes(), len(box.accounting.vouchers)) == (po_writes, vouchers)
    assert len([p for p in box.purchasing.pos.values() if p["PO_REF"] == "JAG-CX500"]) == 1


def test_a_wrong_or_missing_shared_secret_is_401_and_nothing_is_kept(cenv: CEnv) -> None:
    bid = next(iter(cenv.box.linked))
    for body in (order(bid, secret="guess"), order(bid, secret="")):
        resp = cenv.post(body)
        assert resp.status_code == 401 and _status(resp) == "401"
        assert SECRET not in resp.text
    assert cenv.spooled() == []


BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE cXML [\n<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">\n'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9))
        + f']>\n<cXML payloadID="bomb">{_header()}<Request><OrderRequest><OrderRequestHeader orderID="&j;"/>'
        + '</OrderRequest></Request></cXML>')


def test_an_xml_bomb_or_external_entity_is_refused_without_expansion(cenv: CEnv, tmp_path: Path) -> None:
    local = tmp_path / "local-secret.txt"
    local.write_text("CONTENT-OF-A-LOCAL-FILE", encoding="utf-8")
    xxe = (f'<?xml version="1.0"?>\n<!DOCTYPE cXML [<!ENTITY x SYSTEM "{local.as_uri()}">]>\n'
           f'<cXML payloadID="xxe">{_header()}<Request><OrderRequest><OrderRequestHeader orderID="&x;"/>'
           f'</OrderRequest></Request></cXML>')
    for body in (BOMB, xxe):
        resp = cenv.post(body)
        assert resp.status_code == 400 and _status(resp) == "400"
        assert "CONTENT-OF-A-LOCAL-FILE" not in resp.text and len(resp.content) < 2000  # nothing expanded
    assert cenv.spooled() == []


def test_malformed_or_unsupported_documents_are_refused_with_their_code(cenv: CEnv) -> None:
    bid = next(iter(cenv.box.linked))
    assert cenv.post("<cXML><Header>").status_code == 400  # not well-formed
    assert cenv.post("<other/>").status_code == 400  # not cXML
    profile = (f'<cXML payloadID="x">{_header(SECRET, bid)}<Request><ProfileRequest/></Request></cXML>')
    resp = cenv.post(profile)
    assert resp.status_code == 406 and _status(resp) == "406"
    headless = f'<cXML payloadID="y">{_header(SECRET, bid)}<Request><OrderRequest/></Request></cXML>'
    assert cenv.post(headless).status_code == 406
    assert cenv.spooled() == []


def test_a_kind_the_pass_reads_through_rest_is_refused_not_spooled(cenv: CEnv) -> None:
    from mlconnector.jaggaer.cxml import CXMLRefused, document, parse

    bid = next(iter(cenv.box.linked))
    cfg = config_mod.load(cenv.dir / "config.toml").sections["peoplesoft_jaggaer"]
    cfg.invoice_transport = "rest"
    with pytest.raises(CXMLRefused) as refused:
        document(parse(invoice(bid).encode()), cfg)
    assert refused.value.code == 406 and "invoice_transport" in refused.value.text
    assert document(parse(order(bid).encode()), cfg)["kind"] == "purchase_orders"
