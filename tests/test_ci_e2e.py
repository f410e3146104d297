"""End to end: `sync peoplesoft-jira` and `ping` reading purchase orders through a CI (SOAP), as cron runs them."""

from __future__ import annotations

import json

import pytest
from conftest import SMALL, Env

from mlconnector.mapping import record_label

CI_PO = """
[peoplesoft.records.purchase_orders]
transport = "ci"
ci = "PO_EXPRESS_CI"
"""
WSDL_GETS = r"\.(wsdl|xsd)$"


@pytest.fixture
def ci_env(sandbox_env: Env) -> tuple[Env, dict[str, str]]:
    sandbox_env.write_config(extra_ps=CI_PO)
    env = dict(sandbox_env.env, MLCONNECTOR_CACHE_DIR=str(sandbox_env.dir / "cache"))
    return sandbox_env, env


def _json(proc) -> dict:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def test_purchase_orders_read_through_ci_land_in_jira_and_a_warm_pass_fetches_no_wsdl(ci_env) -> None:
    env, environ = ci_env
    box = env.box
    first = env.cli("sync", "peoplesoft-jira", "--json", env=environ)
    assert first.returncode == 0, first.stderr
    summary = _json(first)
    assert summary["counts"]["purchase_orders"]["created"] == SMALL["purchase_orders"]
    assert summary["counts"]["requisitions"]["created"] == SMALL["requisitions"]  # still QAS
    assert box.ps.calls["ML_PO_CHANGED"] == 0 and box.ps.calls["ML_REQ_CHANGED"] > 0
    assert box.soap.calls["CI_PO_EXPRESS_CI_G"] == SMALL["purchase_orders"]
    po_labels = {record_label("purchase_orders", f"{r['BUSINESS_UNIT']}|{r['PO_ID']}")
                 for r in box.ps.rows("purchase_orders")}
    by_label = env.issues_by_label()
    assert po_labels <= set(by_label) and all(len(by_label[lbl]) == 1 for lbl in po_labels)
    po = next(r for r in box.ps.rows("purchase_orders") if r["PO_STATUS"] == "A")
    [issue] = box.jira.find_by_label(f"psft-po-{po['BUSINESS_UNIT']}-{po['PO_ID']}")
    assert issue["fields"]["status"] == "Approved"
    assert issue["fields"]["customfield_10051"] == float(po["PO_AMT"])
    assert issue["fields"]["duedate"] == po["DUE_DT"]

    # Second pass (new process, as cron): the WSDL and XSDs come from the disk cache; a changed PO
    # is still picked up through the CI.
    box.ps_server.clear_log()
    box.ps.touch("purchase_orders", (po["BUSINESS_UNIT"], po["PO_ID"]), PO_STATUS="C")
    second = _json(env.cli("sync", "peoplesoft-jira", "--json", env=environ))
    assert second["exit_code"] == 0
    assert box.ps_server.requests("GET", WSDL_GETS) == []
    assert second["counts"]["purchase_orders"]["transitioned"] == 1
    [issue] = box.jira.find_by_label(f"psft-po-{po['BUSINESS_UNIT']}-{po['PO_ID']}")
    assert issue["fields"]["status"] == "Done"

    third = env.cli("sync", "peoplesoft-jira", "--refresh-wsdl", "--json", env=environ)
    assert third.returncode == 0, third.stderr
    assert len(box.ps_server.requests("GET", r"CI_PO_EXPRESS_CI\.1\.wsdl$")) == 1


def test_inactive_ci_operation_stops_the_pass_with_the_admin_action_and_raw_body_audited(ci_env) -> None:
    env, environ = ci_env
    env.box.soap.deactivate("CI_PO_EXPRESS_CI_F")
    proc = env.cli("sync", "peoplesoft-jira", "--kind", "purchase_orders", env=environ)
    assert proc.returncode == 3
    assert "CI_PO_EXPRESS_CI_F" in proc.stderr and "any-to-local routing" in proc.stderr
    audit = [json.loads(line) for line in env.audit_file.read_text(encoding="utf-8").splitlines()]
    # PeopleSoft's own answer is kept for the admin.
    assert any("Unable to find a Routing" in a.get("raw", "") and "CI_PO_EXPRESS_CI_F" in a.get("error", "")
               for a in audit)


def test_ping_checks_each_configured_ci(ci_env) -> None:
    env, environ = ci_env
    ok = _json(env.cli("ping", "--json", env=environ))
    checks = {c["name"]: c for c in ok["checks"]}
    for name in ("WSDL CI_PO_EXPRESS_CI", "operations CI_PO_EXPRESS_CI", "find CI_PO_EXPRESS_CI"):
        assert checks[name]["ok"], checks[name]
    assert "query ML_PO_CHANGED" not in checks  # read through the CI, not the PS Query

    env.box.soap.deny("ML_CONNECTOR", "CI_PO_EXPRESS_CI_F")
    bad = env.cli("ping", "--json", env=environ)
    assert bad.returncode == 3
    data = _json(bad)
    checks = {c["name"]: c for c in data["checks"]}
    assert not checks["find CI_PO_EXPRESS_CI"]["ok"]
    assert "permission list" in checks["find CI_PO_EXPRESS_CI"]["detail"]
