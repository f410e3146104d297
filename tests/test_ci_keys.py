"""CI Find and Get requests built from the WSDL: required key elements, configured key values and key sets."""

from __future__ import annotations

import pytest
from conftest import SMALL, Env

from mlconnector.errors import ConfigError
from mlconnector.peoplesoft.ci import CIClient, CIFaultError, CIServiceMissingError
from mlconnector.sandbox.run import PS_PASSWORD, PS_USER

PO = "PO_EXPRESS_CI"


def client(env: Env, extra_ps: str = "") -> CIClient:
    if extra_ps:
        env.write_config(extra_ps=extra_ps)
    return CIClient(env.load_config().peoplesoft, (PS_USER, PS_PASSWORD), cache_dir=env.dir / "cache")


def vendors_via_ci(setid: str | None = None) -> str:
    keys = f'\n[peoplesoft.records.vendors.find_keys]\nSETID = "{setid}"\n' if setid is not None else ""
    return f'[peoplesoft.records.vendors]\ntransport = "ci"\nci = "VENDOR_CI"\n{keys}'


def test_find_sends_every_required_key_element_the_wsdl_names(sandbox_env: Env) -> None:
    ci = client(sandbox_env)
    svc = ci.service(PO)
    # The generated WSDL marks the Find keys as required (minOccurs 1), like PeopleSoft's own.
    assert svc.required["F"] == ["BUSINESS_UNIT", "PO_ID"] and svc.keys == ["BUSINESS_UNIT", "PO_ID"]
    assert svc.find_request({}) == {"BUSINESS_UNIT": "", "PO_ID": ""}
    assert len(ci.find(PO, {})) == SMALL["purchase_orders"]  # the sandbox refuses a Find missing one
    some = ci.find(PO, {"BUSINESS_UNIT": "US001"})
    assert some and all(r["BUSINESS_UNIT"] == "US001" for r in some)


def test_a_key_that_needs_a_value_takes_it_from_the_configuration(sandbox_env: Env) -> None:
    env = sandbox_env
    env.box.soap.nonempty_find_keys = {"VENDOR_CI": {"SETID"}}
    with pytest.raises(CIFaultError) as info:
        client(env, vendors_via_ci()).find("VENDOR_CI", {})
    assert "SETID" in info.value.message
    everything = client(env, vendors_via_ci("%")).find("VENDOR_CI", {})
    assert len(everything) == SMALL["vendors"]
    setid = env.box.ps.rows("vendors")[0]["SETID"]
    share = client(env, vendors_via_ci(setid))
    assert {r["SETID"] for r in share.find("VENDOR_CI", {})} == {setid}
    # A Get missing a key takes the configured value too.
    vendor = env.box.ps.rows("vendors")[0]
    assert share.get("VENDOR_CI", {"VENDOR_ID": vendor["VENDOR_ID"]})["VENDOR_ID"] == vendor["VENDOR_ID"]


def test_key_sets_are_configurable_and_checked_against_the_wsdl(sandbox_env: Env) -> None:
    env = sandbox_env
    extra = ('[peoplesoft.records.purchase_orders]\ntransport = "ci"\nci = "PO_EXPRESS_CI"\n'
             'get_keys = ["PO_ID", "RECEIVER_ID"]\n[peoplesoft.records.purchase_orders.find_keys]\nVENDOR_ID = "1"\n')
    ci = client(env, extra)
    svc = ci.service(PO)
    assert svc.keys == ["PO_ID", "RECEIVER_ID"]
    problems = svc.key_problems()
    assert any("find_keys names VENDOR_ID" in p for p in problems)
    assert any("get_keys names RECEIVER_ID" in p for p in problems)
    assert any("Get of CI_PO_EXPRESS_CI needs key RECEIVER_ID" in p for p in problems)
    assert all("peoplesoft.records.purchase_orders." in p for p in problems)
    po = env.box.ps.rows("purchase_orders")[0]
    with pytest.raises(CIServiceMissingError) as info:
        ci.get(PO, {"PO_ID": po["PO_ID"]})
    assert "BUSINESS_UNIT" in info.value.message and "find_keys" in info.value.message
    # The default key set of a CI the configuration says nothing about has no problems.
    assert ci.service("REQ_CI").key_problems() == []


def test_get_keys_must_be_a_list_of_names(sandbox_env: Env) -> None:
    sandbox_env.write_config(extra_ps='[peoplesoft.records.vouchers]\nget_keys = "VOUCHER_ID"\n')
    with pytest.raises(ConfigError) as info:
        sandbox_env.load_config()
    assert "peoplesoft.records.vouchers.get_keys" in info.value.message
