"""The shipped examples are what admins copy: they must stay valid."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from mlconnector import config as config_mod

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_example_config_is_valid_and_names_no_secret() -> None:
    cfg = config_mod.load(EXAMPLES / "config.toml")
    assert cfg.peoplesoft.base_url == "https://psfin.acme.internal:8443"
    assert cfg.peoplesoft.node == "PSFT_EP" and cfg.jira.project == "PROC"
    assert set(cfg.jira.issue_types) == {"requisitions", "purchase_orders", "vouchers"}
    text = (EXAMPLES / "config.toml").read_text(encoding="utf-8")
    assert "mlconnector secrets set" in text


def test_scheduler_examples_run_one_pass_with_a_config() -> None:
    cron = (EXAMPLES / "crontab").read_text(encoding="utf-8")
    assert "sync peoplesoft-jira --config" in cron
    task = ET.fromstring((EXAMPLES / "windows-task.xml").read_bytes())
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    args = task.find("t:Actions/t:Exec/t:Arguments", ns)
    assert args is not None and args.text is not None and "sync peoplesoft-jira --config" in args.text
    policy = task.find("t:Settings/t:MultipleInstancesPolicy", ns)
    assert policy is not None and policy.text == "IgnoreNew"


def test_procurify_example_config_is_valid_and_needs_no_jira() -> None:
    cfg = config_mod.load(EXAMPLES / "procurify-peoplesoft.toml")
    assert cfg.jira is None
    assert cfg.sections["procurify"].base_url == "https://acme.procurify.com"
    pair = cfg.sections["procurify_peoplesoft"]
    assert pair.po_ci == "PO_EXPRESS" and pair.po.handle == "PO_REF"
    assert "procurify.client_secret" in (EXAMPLES / "procurify-peoplesoft.toml").read_text(encoding="utf-8")
