"""Row -> Jira fields mapping: what Jira would reject must never be produced."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlconnector import config as config_mod
from mlconnector.config import Config
from mlconnector.errors import RecordError
from mlconnector.jira import adf
from mlconnector.jira.client import FieldInfo
from mlconnector.mapping import JiraTarget, content_hash, map_comment, map_record, record_label

CF = "com.atlassian.jira.plugin.system.customfieldtypes:"
JIRA_RICH_TEXT_LIMIT = 32_767

CONFIG_TEXT = """
instance = "map-test"
state_file = "/tmp/map-test-state.json"
[peoplesoft]
base_url = "http://127.0.0.1:9"
node = "PSFT_EP"
user = "ML_CONNECTOR"
db_utc_offset = "-06:00"
[jira]
site = "http://127.0.0.1:9"
email = "sync-bot@example.com"
project = "PROC"
"""


def make_config() -> Config:
    return config_mod.from_dict(tomllib.loads(CONFIG_TEXT), Path("/tmp/map-test.toml"))


CFG = make_config()
TARGET = JiraTarget(
    project="PROC",
    issue_type_ids={"requisitions": "10001", "purchase_orders": "10002", "vouchers": "10003"},
    fields={
        "amount": FieldInfo("customfield_10051", "Amount", "number", CF + "float"),
        "vendor": FieldInfo("customfield_10052", "Vendor", "string", CF + "textfield"),
        "approval_status": FieldInfo("customfield_10054", "Approval Status", "string", CF + "textfield"),
        "vendor_details": FieldInfo("customfield_10055", "Vendor Details", "string", CF + "textarea"),
        "currency": FieldInfo("customfield_10056", "Currency", "string", CF + "textfield"),
        "requester": FieldInfo("customfield_10057", "Requester", "string", CF + "textfield"),
        "order_date": FieldInfo("customfield_10058", "Order Date", "date", CF + "datepicker"),
    },
    key_field=FieldInfo("customfield_10050", "ERP Key", "string", CF + "textfield"),
    labels=["erp-sync"],
    status_map=CFG.jira.status_map,
    priority_by_amount=CFG.jira.priority_by_amount,
    default_priority=CFG.jira.default_priority,
)
VENDORS = {"SHARE|0000000007": {"name": "Müller & Söhne GmbH", "address1": "1 Main St", "city": "Houston",
                                "state": "TX", "postal": "77002", "country": "USA", "terms": "N30"}}


def po_row(**over: Any) -> dict[str, Any]:
    row = {"BUSINESS_UNIT": "US001", "PO_ID": "0000000042", "PO_STATUS": "A", "PO_DT": "2024-03-01",
           "BUYER_ID": "BUYER1", "VENDOR_SETID": "SHARE", "VENDOR_ID": "0000000007", "PO_AMT": 1234.5,
           "CURRENCY_CD": "USD", "DUE_DT": "2024-04-01", "DESCR254": "Copy paper, 80 cases",
           "LAST_DTTM_UPDATE": "2024-03-05T14:02:11-0600"}
    row.update(over)
    return row


def walk(node: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(node, dict):
        out.append(node)
        for c in node.get("content", []) or []:
            out += walk(c)
    return out


def assert_valid_adf(doc: dict[str, Any]) -> None:
    assert doc["type"] == "doc" and doc["version"] == 1 and doc["content"]
    for node in walk(doc):
        if node["type"] == "text":
            assert isinstance(node["text"], str) and node["text"] != ""
            assert "\n" not in node["text"] and "\r" not in node["text"]
        if node["type"] in ("paragraph", "heading", "bulletList", "listItem"):
            assert node.get("content"), f"empty {node['type']}"


def assert_jira_acceptable(fields: dict[str, Any]) -> None:
    summary = fields["summary"]
    assert 0 < len(summary) <= 254
    assert "\n" not in summary and "\r" not in summary
    for value in fields.values():
        if isinstance(value, dict) and value.get("type") == "doc":
            assert_valid_adf(value)
    for label in fields.get("labels", []):
        assert label and " " not in label and len(label) <= 255


descriptions = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(["\n", "\r", " ", "\t", "\x00", "\x0b", "\x7f", "a", "é", "\u2028"])),
    st.just(""), st.just("   "), st.just("\n\n\n"), st.just("x" * 100_000),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(description=descriptions)
@example(description="line one\r\nline two\n\n\nline three\n")
@example(description="\x00\x01\x02")
def test_mapping_never_produces_what_jira_rejects(description: str) -> None:
    rec = map_record(CFG, TARGET, "purchase_orders", po_row(DESCR254=description), VENDORS)
    assert_jira_acceptable(rec.create_fields)
    assert rec.edit_fields["summary"] == rec.create_fields["summary"]
    assert rec.label in rec.create_fields["labels"] and "erp-sync" in rec.create_fields["labels"]
    assert rec.create_fields["project"] == {"key": "PROC"}
    assert rec.create_fields["issuetype"] == {"id": "10002"}
    assert rec.create_fields["customfield_10051"] == 1234.5


@settings(max_examples=100, deadline=None)
@given(bu=st.text(min_size=1, max_size=20).filter(lambda s: s.strip()),
       po=st.text(min_size=1, max_size=40).filter(lambda s: s.strip()))
def test_labels_never_contain_spaces_for_any_key(bu: str, po: str) -> None:
    label = record_label("purchase_orders", f"{bu.strip()}|{po.strip()}")
    assert label and " " not in label and len(label) <= 255
    assert all(c.isascii() for c in label)


def test_summary_has_no_newline_when_it_falls_back_to_the_vendor_name() -> None:
    vendors = {"SHARE|0000000007": {"name": "Acme Industrial\nSupply Co"}}
    rec = map_record(CFG, TARGET, "purchase_orders", po_row(DESCR254=""), vendors)
    assert_jira_acceptable(rec.create_fields)


@pytest.mark.parametrize("text", ["a\n" * 50_000, "line\n\n" * 20_000, "ü" * 100_000])
def test_rich_text_fits_jira_size_limit(text: str) -> None:
    """Jira refuses a rich-text field whose serialised ADF exceeds 32,767 characters."""
    rec = map_record(CFG, TARGET, "purchase_orders", po_row(DESCR254=text), VENDORS)
    size = len(json.dumps(rec.create_fields["description"], ensure_ascii=False))
    assert size <= JIRA_RICH_TEXT_LIMIT, size


def test_comment_body_fits_jira_size_limit() -> None:
    row = {"BUSINESS_UNIT": "US001", "PO_ID": "0000000042", "COMMENT_ID": 3, "OPRID": "BUYER1",
           "COMMENTS": "- item\n" * 10_000, "LAST_DTTM_UPDATE": "2024-03-05T14:02:11-0600"}
    c = map_comment("purchase_orders", row)
    assert_valid_adf(c.body)
    assert len(json.dumps(c.body, ensure_ascii=False)) <= JIRA_RICH_TEXT_LIMIT


def test_content_hash_is_stable_and_tracks_changes() -> None:
    a = map_record(CFG, TARGET, "purchase_orders", po_row(), VENDORS)
    b = map_record(CFG, TARGET, "purchase_orders", dict(reversed(list(po_row().items()))), VENDORS)
    assert a.hash == b.hash
    assert content_hash(a.edit_fields, "") == a.hash
    changed = map_record(CFG, TARGET, "purchase_orders", po_row(PO_AMT=1234.51), VENDORS)
    assert changed.hash != a.hash
    assert map_record(CFG, TARGET, "purchase_orders", po_row(PO_STATUS="C"), VENDORS).hash != a.hash
    # A later timestamp alone is not a content change.
    later = map_record(CFG, TARGET, "purchase_orders", po_row(LAST_DTTM_UPDATE="2024-03-06T09:00:00-0600"),
                       VENDORS)
    assert later.hash == a.hash


def test_record_fields_and_status() -> None:
    rec = map_record(CFG, TARGET, "purchase_orders", po_row(), VENDORS)
    assert rec.key == "US001|0000000042"
    assert rec.status_code == "A" and rec.target_status == "Approved"
    assert rec.create_fields["customfield_10050"] == "PSFT-PO-US001-0000000042"
    assert rec.create_fields["duedate"] == "2024-04-01"
    assert rec.create_fields["customfield_10058"] == "2024-03-01"
    assert rec.create_fields["customfield_10052"] == "Müller & Söhne GmbH"
    assert rec.create_fields["summary"] == "Purchase order US001/0000000042: Copy paper, 80 cases"
    assert rec.ts.isoformat() == "2024-03-05T20:02:11+00:00"
    big = map_record(CFG, TARGET, "purchase_orders", po_row(PO_AMT="150,000.00"), VENDORS)
    assert big.create_fields["priority"] == {"name": "Highest"}
    assert rec.create_fields["priority"] == {"name": "Medium"}


@pytest.mark.parametrize(("over", "column"), [
    ({"PO_ID": "   "}, "PO_ID"), ({"BUSINESS_UNIT": None}, "BUSINESS_UNIT"),
    ({"PO_DT": "2024-13-45"}, "PO_DT"), ({"DUE_DT": "next week"}, "DUE_DT"),
    ({"PO_AMT": "12 dollars"}, "PO_AMT"), ({"PO_AMT": "nan"}, "PO_AMT"),
    ({"LAST_DTTM_UPDATE": "yesterday"}, "LAST_DTTM_UPDATE"),
])
def test_unmappable_rows_raise_record_error_naming_the_column(over: dict[str, Any], column: str) -> None:
    with pytest.raises(RecordError) as info:
        map_record(CFG, TARGET, "purchase_orders", po_row(**over), VENDORS)
    assert column in info.value.message


def test_map_comment_ref_is_deterministic_and_in_the_body() -> None:
    row = {"BUSINESS_UNIT": "US001", "PO_ID": "0000000042", "COMMENT_ID": 3, "OPRID": "BUYER1",
           "COMMENTS": "Vendor confirmed ship date.\nTracking to follow.",
           "LAST_DTTM_UPDATE": "2024-03-05T14:02:11-0600"}
    a, b = map_comment("purchase_orders", row), map_comment("purchase_orders", dict(row))
    assert a.ref == b.ref == "psft:po:US001/0000000042#3"
    assert a.body == b.body
    assert a.ref in adf.plain_text(a.body)
    assert_valid_adf(a.body)
    other = map_comment("purchase_orders", {**row, "COMMENT_ID": 4})
    assert other.ref != a.ref


def test_empty_comment_still_yields_valid_adf() -> None:
    row = {"BUSINESS_UNIT": "US001", "PO_ID": "1", "COMMENT_ID": "1", "COMMENTS": " \n\x00 ",
           "LAST_DTTM_UPDATE": "2024-03-05T14:02:11-0600"}
    c = map_comment("purchase_orders", row)
    assert_valid_adf(c.body)
    assert "(empty comment)" in adf.plain_text(c.body)


def test_comment_without_id_is_record_error() -> None:
    row = {"BUSINESS_UNIT": "US001", "PO_ID": "1", "COMMENT_ID": "", "LAST_DTTM_UPDATE": "2024-03-05T14:02:11-0600"}
    with pytest.raises(RecordError) as info:
        map_comment("purchase_orders", row)
    assert "COMMENT_ID" in info.value.message
