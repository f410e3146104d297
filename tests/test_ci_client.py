"""PeopleSoft Component Interface client (zeep) against the SOAP sandbox over real HTTP on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SMALL, Env

from mlconnector.config import from_dict
from mlconnector.errors import AmbiguousWriteError, AuthError, ConfigError
from mlconnector.peoplesoft.ci import (
    LISTENER,
    CIClient,
    CIFaultError,
    CINotificationError,
    CIReader,
    CIRoutingError,
    CIServiceMissingError,
    CIWrongNodeError,
)
from mlconnector.sandbox.peoplesoft_soap import INTERNAL_ADDRESS, PeopleSoftGateway, PeopleSoftSoap
from mlconnector.sandbox.run import PS_PASSWORD, PS_USER
from mlconnector.sandbox.server import SandboxServer

PO = "PO_EXPRESS_CI"
WSDL_GETS = r"\.(wsdl|xsd)$"


def client(env: Env, password: str = PS_PASSWORD, **kw: object) -> CIClient:
    cfg = env.load_config().peoplesoft
    if "node" in kw:
        cfg = dataclasses.replace(cfg, node=str(kw.pop("node")))
    return CIClient(cfg, (PS_USER, password), cache_dir=env.dir / "cache", **kw)  # type: ignore[arg-type]


def a_po(env: Env) -> dict:
    return env.box.ps.rows("purchase_orders")[0]


def test_read_window_returns_the_qas_rows_through_find_and_get(sandbox_env: Env) -> None:
    env = sandbox_env
    ci = client(env)
    end = datetime.now(UTC) + timedelta(minutes=1)
    batches = list(CIReader(ci, PO).read_window("ML_PO_CHANGED", end - timedelta(days=120), end))
    rows = [r for rows, _ in batches for r in rows]
    # Same columns and values as the QAS simulator serves (unprefixed names, -0600 offsets, floats).
    assert sorted(rows, key=lambda r: r["PO_ID"]) == sorted(env.box.ps.rows("purchase_orders"),
                                                            key=lambda r: r["PO_ID"])
    assert len(rows) == SMALL["purchase_orders"] and batches[-1][1] == end
    assert env.box.soap.calls[f"CI_{PO}_F"] == 1 and env.box.soap.calls[f"CI_{PO}_G"] == len(rows)
    # The WSDL's soap:address names an internal host; the calls above only worked because the
    # binding (its QName read from the WSDL) was bound to the configured base URL instead.
    svc = ci.service(PO)
    assert INTERNAL_ADDRESS in env.box.soap.wsdl(PO)
    assert svc.binding.endswith(f"CI_{PO}_Binding") and svc.date_range == ("LAST_DTTM_UPDATE_FROM",
                                                                            "LAST_DTTM_UPDATE_TO")
    # A window that excludes some rows is honoured.
    some = list(CIReader(ci, PO).read_window("", end - timedelta(days=10), end))
    assert sum(len(r) for r, _ in some) < len(rows)


def test_a_ci_without_date_range_keys_is_read_by_full_find_and_filtered(sandbox_env: Env) -> None:
    env = sandbox_env
    env.box.ps.vendor_stamp = True  # a vendor CI over a stamped view: the window is honoured
    ci = client(env)
    vendors = env.box.ps.rows("vendors")
    cut = datetime.strptime(sorted(v["LAST_DTTM_UPDATE"] for v in vendors)[len(vendors) // 2], "%Y-%m-%dT%H:%M:%S%z")
    rows = [r for rs, _ in CIReader(ci, "VENDOR_CI").read_window("", cut, datetime.now(UTC)) for r in rs]
    want = {v["VENDOR_ID"] for v in vendors if datetime.strptime(v["LAST_DTTM_UPDATE"], "%Y-%m-%dT%H:%M:%S%z") >= cut}
    assert {r["VENDOR_ID"] for r in rows} == want


def test_install_specific_namespaces_come_from_the_wsdl(sandbox_env: Env, tmp_path: Path) -> None:
    env = sandbox_env
    other = PeopleSoftSoap(env.box.ps, seed=12345)
    assert other.namespace(f"Get__CompIntfc__{PO}") != env.box.soap.namespace(f"Get__CompIntfc__{PO}")
    with SandboxServer(PeopleSoftGateway(env.box.ps, other), "ps-other") as server:
        cfg = dataclasses.replace(env.load_config().peoplesoft, base_url=server.url)
        ci = CIClient(cfg, (PS_USER, PS_PASSWORD), cache_dir=tmp_path / "c2")
        po = a_po(env)
        # The sandbox rejects elements outside this install's namespaces, so this proves none is hard-coded.
        assert ci.get(PO, {"BUSINESS_UNIT": po["BUSINESS_UNIT"], "PO_ID": po["PO_ID"]})["PO_ID"] == po["PO_ID"]


def test_create_and_update_through_a_ci(sandbox_env: Env) -> None:
    env = sandbox_env
    ci = client(env)
    keys = ci.create(PO, {"BUSINESS_UNIT": "US001", "PO_ID": "ML00000001", "PO_STATUS": "PA", "PO_AMT": 1234.5,
                          "PO_DT": "2024-05-01", "CURRENCY_CD": "USD", "DESCR254": "Created by ml-connector"})
    assert keys == {"BUSINESS_UNIT": "US001", "PO_ID": "ML00000001"}
    row = env.box.ps.get("purchase_orders", ("US001", "ML00000001"))
    assert (row["PO_STATUS"], row["PO_AMT"], row["PO_DT"]) == ("PA", 1234.5, "2024-05-01")

    ci.update(PO, keys, {"PO_STATUS": "A", "PO_AMT": 99.0})
    assert ci.get(PO, keys)["PO_STATUS"] == "A"
    assert env.box.ps.get("purchase_orders", ("US001", "ML00000001"))["PO_AMT"] == 99.0
    assert env.box.soap.calls[f"CI_{PO}_UD"] == 1

    # PeopleSoft assigns NEXT keys; create returns the saved ones.
    assigned = ci.create(PO, {"BUSINESS_UNIT": "US002", "PO_ID": "NEXT", "PO_STATUS": "I"})
    assert assigned["PO_ID"] != "NEXT" and env.box.ps.get("purchase_orders", tuple(assigned.values()))

    # A CI generated without UpdateData is updated through Update (_UP).
    vendor = env.box.ps.rows("vendors")[0]
    ci.update("VENDOR_CI", {"SETID": vendor["SETID"], "VENDOR_ID": vendor["VENDOR_ID"]}, {"NAME1": "Renamed Inc"})
    assert env.box.ps.get("vendors", (vendor["SETID"], vendor["VENDOR_ID"]))["NAME1"] == "Renamed Inc"
    assert env.box.soap.calls["CI_VENDOR_CI_UP"] == 1


def test_create_whose_response_was_dropped_is_not_sent_twice(sandbox_env: Env) -> None:
    env = sandbox_env
    ci = client(env)
    ci.service(PO)  # WSDL loaded: the next POST is the Create
    env.box.ps_server.faults.add(kind="drop_after", method="POST", path=LISTENER, count=1)
    keys = ci.create(PO, {"BUSINESS_UNIT": "US001", "PO_ID": "ML00000002", "PO_STATUS": "I"})
    assert keys == {"BUSINESS_UNIT": "US001", "PO_ID": "ML00000002"}
    assert env.box.soap.calls[f"CI_{PO}_C"] == 1  # the lookup found it: no second Create
    assert env.box.soap.calls[f"CI_{PO}_F"] == 1
    assert env.box.ps.get("purchase_orders", ("US001", "ML00000002"))["PO_STATUS"] == "I"


def test_create_dropped_before_processing_is_sent_again_once_checked(sandbox_env: Env) -> None:
    env = sandbox_env
    ci = client(env)
    ci.service(PO)
    env.box.ps_server.faults.add(kind="drop_before", method="POST", path=LISTENER, count=1)
    ci.create(PO, {"BUSINESS_UNIT": "US002", "PO_ID": "ML00000003", "PO_STATUS": "I"})
    assert env.box.soap.calls[f"CI_{PO}_F"] == 1 and env.box.soap.calls[f"CI_{PO}_C"] == 1
    assert len(env.box.ps_server.requests("POST", LISTENER)) == 3  # create (dropped), find, create
    # With PeopleSoft-assigned keys there is nothing to look up: the write is reported, not repeated.
    env.box.ps_server.faults.add(kind="drop_after", method="POST", path=LISTENER, count=1)
    with pytest.raises(AmbiguousWriteError, match="not sent again"):
        ci.create(PO, {"BUSINESS_UNIT": "US002", "PO_ID": "NEXT", "PO_STATUS": "I"})
    assert env.box.soap.calls[f"CI_{PO}_C"] == 2


def test_update_whose_response_was_dropped_is_checked_with_get(sandbox_env: Env) -> None:
    env = sandbox_env
    ci = client(env)
    po = a_po(env)
    keys = {"BUSINESS_UNIT": po["BUSINESS_UNIT"], "PO_ID": po["PO_ID"]}
    ci.service(PO)
    env.box.ps_server.faults.add(kind="drop_after", method="POST", path=LISTENER, count=1)
    ci.update(PO, keys, {"DESCR254": "Changed once"})
    assert env.box.soap.calls[f"CI_{PO}_UD"] == 1 and env.box.soap.calls[f"CI_{PO}_G"] == 1
    assert env.box.ps.get("purchase_orders", tuple(keys.values()))["DESCR254"] == "Changed once"


def test_each_error_form_has_a_clear_message_and_keeps_the_raw_body(sandbox_env: Env) -> None:
    env = sandbox_env
    ci = client(env)
    po = a_po(env)
    keys = {"BUSINESS_UNIT": po["BUSINESS_UNIT"], "PO_ID": po["PO_ID"]}

    with pytest.raises(CIFaultError) as fault:  # SOAP fault with CIFault/IBResponse
        ci.get(PO, {"BUSINESS_UNIT": "US001", "PO_ID": "NOSUCHPO"})
    assert f"CI_{PO}_G" in fault.value.message and "No rows exist" in fault.value.message
    assert "message set 91, number 50" in fault.value.message and "Message Catalog" in fault.value.message
    assert "<CIFault" in fault.value.raw

    with pytest.raises(CINotificationError) as note:  # HTTP 200, notification 0
        ci.update(PO, keys, {"PO_STATUS": "ZZ"})
    assert f"CI_{PO}_UD" in note.value.message and "notification is 0" in note.value.message
    assert "Invalid value" in note.value.message and "<notification>0</notification>" in note.value.raw

    env.box.soap.deactivate(f"CI_{PO}_F")  # HTML routing page
    with pytest.raises(CIRoutingError) as routing:
        ci.find(PO, {})
    assert f"service operation CI_{PO}_F" in routing.value.message and "routing" in routing.value.message
    assert "Active" in routing.value.message and "Unable to find a Routing" in routing.value.raw

    env.box.soap.deny(PS_USER, f"CI_{PO}_G")  # permission list
    with pytest.raises(CIFaultError, match="permission list") as denied:
        ci.get(PO, keys)
    assert "(158,536)" in denied.value.message

    with pytest.raises(CIWrongNodeError) as node:  # wrong node
        client(env, node="PSFT_XX").service(PO)
    assert "node PSFT_XX" in node.value.message and "Default Local" in node.value.message
    assert "(158,505)" in node.value.raw

    with pytest.raises(AuthError, match="UsernameToken of user ML_CONNECTOR"):
        client(env, password="wrong").find("REQ_CI", {})

    with pytest.raises(CIServiceMissingError, match="without the CI_ prefix"):
        ci.service("CI_PO_EXPRESS_CI")


def test_second_client_loads_the_wsdl_from_disk_without_any_request(sandbox_env: Env) -> None:
    env = sandbox_env
    server = env.box.ps_server
    first = client(env)
    assert not first.service(PO).from_cache
    cold = len(server.requests("GET", WSDL_GETS))
    assert cold > 1 and first.wsdl_requests == cold  # the WSDL and the XSDs it imports

    server.clear_log()
    warm = client(env)
    po = a_po(env)
    assert warm.get(PO, {"BUSINESS_UNIT": po["BUSINESS_UNIT"], "PO_ID": po["PO_ID"]})["PO_ID"] == po["PO_ID"]
    assert server.requests("GET", WSDL_GETS) == [] and warm.wsdl_requests == 0
    assert warm.service(PO).from_cache

    client(env, refresh=True).service(PO)  # --refresh-wsdl
    assert len(server.requests("GET", WSDL_GETS)) == cold
    server.clear_log()
    client(env, max_age_hours=0).service(PO)  # older than wsdl_max_age_hours
    assert len(server.requests("GET", WSDL_GETS)) == cold


def test_config_transport_ci_needs_a_ci_name(tmp_path: Path) -> None:
    base = {"peoplesoft": {"base_url": "https://ps.example.com", "node": "PSFT_EP", "user": "U",
                           "wsdl_max_age_hours": 6,
                           "records": {"purchase_orders": {"transport": "ci", "ci": "PO_EXPRESS_CI"}}},
            "jira": {"site": "https://x.atlassian.net", "email": "a@b.c", "project": "P"}}
    cfg = from_dict(base, tmp_path / "c.toml")
    assert cfg.peoplesoft.records["purchase_orders"].transport == "ci"
    assert cfg.peoplesoft.records["vouchers"].transport == "qas" and cfg.peoplesoft.wsdl_max_age_hours == 6
    del base["peoplesoft"]["records"]["purchase_orders"]["ci"]
    with pytest.raises(ConfigError, match=r"peoplesoft\.records\.purchase_orders\.ci is missing"):
        from_dict(base, tmp_path / "c.toml")
    base["peoplesoft"]["records"]["purchase_orders"] = {"transport": "soap"}
    with pytest.raises(ConfigError, match="use one of: qas, ci"):
        from_dict(base, tmp_path / "c.toml")


def test_help_does_not_import_zeep() -> None:
    probe = ("import sys, atexit\n"
             "atexit.register(lambda: print('ZEEP-LOADED' if 'zeep' in sys.modules else 'NO-ZEEP'))\n"
             "sys.argv = ['mlconnector'] + sys.argv[1:]\n"
             "from mlconnector.cli import main\n"
             "main()\n")
    for args in (["--help"], ["sync", "peoplesoft-jira", "--help"], ["ping", "--help"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip().endswith("NO-ZEEP"), (args, out.stdout[-300:], out.stderr[-300:])
    assert "--refresh-wsdl" in out.stdout



def test_oauth2_sends_a_bearer_token_instead_of_a_username_token(sandbox_env: Env) -> None:
    from mlconnector.auth import BearerAuth

    env = sandbox_env
    env.box.ps.bearer_tokens.add("sandbox-token")
    cfg = env.load_config().peoplesoft
    ci = CIClient(cfg, BearerAuth(lambda: "sandbox-token"), cache_dir=env.dir / "cache")
    assert ci.wsse is None
    assert len(ci.find(PO, {})) == SMALL["purchase_orders"]
    env.box.ps.bearer_tokens.clear()
    with pytest.raises(AuthError, match="OAuth2 bearer token"):
        ci.find(PO, {})
