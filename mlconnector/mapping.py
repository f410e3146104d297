"""PeopleSoft rows -> Jira issue fields. Pure functions: no I/O, so they are easy to test.

A row that cannot be mapped (blank key, unreadable date or amount) raises RecordError naming the
column and value; the pass queues it and goes on.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from mlconnector.config import KINDS, Config
from mlconnector.errors import RecordError
from mlconnector.jira import adf
from mlconnector.jira.client import FieldInfo
from mlconnector.jira.sink import IssueWrite
from mlconnector.peoplesoft.qas import parse_ps_datetime
from mlconnector.sync.keys import comment_key, decode_key, display_key, encode_key, handle, legacy_handle

STATUS_TEXT: dict[str, dict[str, str]] = {
    "requisitions": {"P": "Pending approval", "A": "Approved", "D": "Denied", "C": "Complete", "X": "Canceled",
                     "O": "Open"},
    "purchase_orders": {"A": "Approved", "C": "Complete", "D": "Dispatched", "DA": "Denied", "I": "Initial",
                        "LD": "Line denied", "O": "Open", "PA": "Pending approval", "PX": "Pending cancel",
                        "X": "Canceled"},
    "vouchers": {"A": "Approved", "D": "Denied", "P": "Pending approval"},
}
# Source statuses after which a document no longer changes: its issue keeps the vendor facts it closed with,
# and its key-map entry drops the copy of its source inputs (see sync/reference.py). Vouchers have no such
# status among the columns read (APPR_STATUS), so every voucher stays open.
CLOSED_STATUS: dict[str, frozenset[str]] = {"requisitions": frozenset({"C", "X"}),
                                            "purchase_orders": frozenset({"C", "X"})}
STAMP = "LAST_DTTM_UPDATE"
SUMMARY_MAX = 254
LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass
class JiraTarget:
    """What a pass resolved from Jira's metadata: ids for the names in the configuration."""

    project: str
    issue_type_ids: dict[str, str]
    fields: dict[str, FieldInfo]  # logical name -> field
    key_field: FieldInfo | None
    labels: list[str]
    status_map: dict[str, dict[str, str]]
    priority_by_amount: list[tuple[float, str]] = field(default_factory=list)
    default_priority: str = ""


@dataclass
class MappedComment:
    kind: str
    parent_key: str
    comment_id: str
    ts: datetime
    ref: str  # marker written into the comment so a rerun can recognise it
    body: dict[str, Any]

    @property
    def key(self) -> str:
        """The comment's own key (queue, audit): injective over (record, comment id)."""
        return comment_key(self.parent_key, self.comment_id)


def _cell(row: dict[str, Any], column: str) -> Any:
    if not column:
        return None
    v = row.get(column)
    return v.strip() if isinstance(v, str) else v


def natural_key(kind: str, row: dict[str, Any]) -> str:
    parts = []
    for col in KINDS[kind]["keys"]:
        v = _cell(row, col)
        if v in (None, ""):
            raise RecordError(f"{KINDS[kind]['title']} row has no {col} (a key column is blank or missing), so "
                              f"it cannot be matched to an issue. Fix the row or the query's column list in "
                              f"PeopleSoft.")
        parts.append(str(v))
    return encode_key(parts)


def row_ts(kind: str, row: dict[str, Any], key: str) -> datetime:
    raw = row.get(STAMP)
    try:
        return parse_ps_datetime(raw)
    except ValueError:
        raise RecordError(f"{KINDS[kind]['title']} {key}: LAST_DTTM_UPDATE {raw!r} is not a timestamp "
                          f"(expected like 2024-03-05T14:02:11-0600).") from None


def record_label(kind: str, key: str) -> str:
    """The record's handle on the Jira issue (a label): injective, see sync/keys.py."""
    return handle(KINDS[kind]["label"], decode_key(key))


def content_hash(fields: dict[str, Any], status: str) -> str:
    blob = json.dumps({"f": fields, "s": status}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "replace")).hexdigest()[:20]


def _date(kind: str, key: str, column: str, value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value)[:10]
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise RecordError(f"{KINDS[kind]['title']} {key}: column {column} holds {value!r}, which is not a date "
                          f"(YYYY-MM-DD).") from None


def _amount(kind: str, key: str, column: str, value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        amount = float(str(value).replace(",", ""))
    except ValueError:
        raise RecordError(f"{KINDS[kind]['title']} {key}: column {column} holds {value!r}, which is not a "
                          f"number.") from None
    if amount != amount or amount in (float("inf"), float("-inf")):
        raise RecordError(f"{KINDS[kind]['title']} {key}: column {column} is not a finite number.")
    return amount


def record_amount(cfg: Config, kind: str, key: str, row: dict[str, Any]) -> float | None:
    """The amount a document row carries (its configured amount column), read as ``map_record`` reads it."""
    column = cfg.peoplesoft.records[kind].columns["amount"]
    return _amount(kind, key, column, _cell(row, column))


def vendor_key(setid: Any, vendor_id: Any) -> str | None:
    if not vendor_id:
        return None
    return encode_key((str(setid or ""), str(vendor_id)))


def vendor_summary(v: dict[str, Any]) -> tuple[str, str, str]:
    """(name, address, terms) of a cached vendor."""
    addr = ", ".join(x for x in [v.get("address1"), v.get("city"),
                                 " ".join(y for y in [v.get("state"), v.get("postal")] if y), v.get("country")] if x)
    return str(v.get("name") or ""), addr, str(v.get("terms") or "")


def vendor_from_row(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    return {k: (_cell(row, c) or "") for k, c in columns.items() if c}


class VendorFacts(Protocol):
    """Where mapping finds a vendor's facts by its vendor key (a dict, or the key map's vendor rows)."""

    def get(self, key: str, /) -> dict[str, Any] | None: ...


def source_inputs(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The compact copy of a document row that ``map_record`` needs again: the configured columns that hold
    a value (its key and stamp are kept by the key map entry itself; see ``source_row``)."""
    return {c: row[c] for c in sorted(set(columns.values())) if c and row.get(c) not in (None, "")}


def source_row(kind: str, key: str, inputs: dict[str, Any], ts: str) -> dict[str, Any]:
    """A row ``map_record`` maps exactly as the one ``source_inputs`` was taken from (stamp ``ts``)."""
    return {**inputs, **dict(zip(KINDS[kind]["keys"], decode_key(key), strict=True)), STAMP: ts}


def row_vendor(row: dict[str, Any], columns: dict[str, str]) -> str | None:
    """The vendor key a document row shows, or None."""
    return vendor_key(_cell(row, columns["vendor_setid"]), _cell(row, columns["vendor_id"]))


def _field_value(f: FieldInfo, value: Any) -> Any:
    """Shape a value as the Jira field type expects (reference jira.md 3.6)."""
    if f.is_rich_text:
        return value if isinstance(value, dict) else adf.doc(adf.paragraph(str(value)))
    if f.type == "number":
        return value
    if f.type == "option":
        return {"value": str(value)}
    if f.type == "array" and f.custom.endswith(":labels"):
        return [LABEL_SAFE.sub("_", str(value))]
    return adf.one_line(value)[:255]


def map_record(cfg: Config, target: JiraTarget, kind: str, row: dict[str, Any],
               vendors: VendorFacts) -> IssueWrite:
    spec = KINDS[kind]
    cols = cfg.peoplesoft.records[kind].columns
    key = natural_key(kind, row)
    ts = row_ts(kind, row, key)
    title = spec["title"]
    shown = display_key(key)

    status_code = str(_cell(row, cols["status"]) or "")
    status_text = STATUS_TEXT.get(kind, {}).get(status_code, status_code or "unknown")
    description = _cell(row, cols["description"]) or ""
    amount = _amount(kind, key, cols["amount"], _cell(row, cols["amount"]))
    currency = str(_cell(row, cols["currency"]) or "")
    due = _date(kind, key, cols["due_date"], _cell(row, cols["due_date"]))
    doc_date = _date(kind, key, cols["date"], _cell(row, cols["date"]))
    requester = str(_cell(row, cols["requester"]) or "")
    invoice = str(_cell(row, cols["invoice_number"]) or "")
    vkey = vendor_key(_cell(row, cols["vendor_setid"]), _cell(row, cols["vendor_id"]))
    vendor = vendors.get(vkey or "") if vkey else None
    v_name, v_addr, v_terms = vendor_summary(vendor) if vendor else ("", "", "")
    vendor_display = v_name or (display_key(vkey) if vkey else "")

    headline = adf.one_line(description) or adf.one_line(vendor_display) or status_text
    summary = adf.one_line(f"{title} {shown}: {headline}")
    if len(summary) > SUMMARY_MAX:
        summary = summary[: SUMMARY_MAX - 1] + "…"
    amount_text = f"{amount:,.2f} {currency}".strip() if amount is not None else ""
    vendor_facts = [("Vendor", f"{v_name} ({display_key(vkey)})" if v_name and vkey else vendor_display),
                    ("Vendor address", v_addr), ("Payment terms", v_terms)]
    vendor_doc = adf.doc(adf.facts(vendor_facts)) if vendor_display else None
    body = adf.doc(
        adf.heading(f"{title} {shown}"),
        adf.paragraph(adf.truncate(description)) if description else None,
        adf.facts([("Approval status", f"{status_text} ({status_code})" if status_code else ""),
                   ("Amount", amount_text), ("Invoice number", invoice), ("Date", doc_date or ""),
                   ("Due date", due or ""), ("Requester" if kind == "requisitions" else "Buyer", requester),
                   *([] if "vendor_details" in target.fields else vendor_facts)]),
        adf.paragraph("Synced from PeopleSoft by ml-connector. PeopleSoft is the source of truth: edits to these "
                      "fields in Jira are overwritten at the next change."),
    )

    fields: dict[str, Any] = {"summary": summary, "description": body}
    logical: dict[str, Any] = {
        "amount": amount, "vendor": vendor_display or None, "invoice_number": invoice or None,
        "approval_status": status_text if status_code else None, "vendor_details": vendor_doc,
        "currency": currency or None, "requester": requester or None, "order_date": doc_date,
    }
    for name, value in logical.items():
        f = target.fields.get(name)
        if f is not None and value is not None:
            fields[f.id] = _field_value(f, value)
    if due:
        fields["duedate"] = due
    priority = _priority(target, amount)
    if priority:
        fields["priority"] = {"name": priority}
    if target.key_field is not None:
        fields[target.key_field.id] = _field_value(target.key_field, f"PSFT-{spec['label'][5:].upper()}-"
                                                                    f"{'-'.join(decode_key(key))}")
    label = record_label(kind, key)
    create = {"project": {"key": target.project}, "issuetype": {"id": target.issue_type_ids[kind]},
              **fields, "labels": sorted({*target.labels, spec["label"], label})}
    target_status = target.status_map.get(kind, {}).get(status_code)
    return IssueWrite(kind=kind, key=key, ts=ts, status_code=status_code, target_status=target_status,
                        create_fields=create, edit_fields=fields, hash=content_hash(fields, ""), label=label,
                      legacy_label=legacy_handle(spec["label"], decode_key(key)))


def _priority(target: JiraTarget, amount: float | None) -> str:
    if amount is not None:
        for threshold, name in target.priority_by_amount:
            if amount >= threshold:
                return name
    return target.default_priority


COMMENT_PARENT = {"requisitions": "REQ_ID", "purchase_orders": "PO_ID", "vouchers": "VOUCHER_ID"}


def map_comment(kind: str, row: dict[str, Any]) -> MappedComment:
    parent = natural_key(kind, row)
    cid = _cell(row, "COMMENT_ID")
    if cid in (None, ""):
        raise RecordError(f"Comment row for {KINDS[kind]['title']} {display_key(parent)} has no COMMENT_ID, "
                          f"so it cannot be posted exactly once. Add COMMENT_ID to the comments query.")
    ts = row_ts(kind, row, parent)
    text = str(_cell(row, "COMMENTS") or "")
    author = str(_cell(row, "OPRID") or "PeopleSoft")
    ref = f"psft:{KINDS[kind]['label'][5:]}:{display_key(parent)}#{cid}"
    body = adf.doc(adf.paragraph(adf.truncate(text) or "(empty comment)"),
                   adf.paragraph(f"— {author} in PeopleSoft, {ts:%Y-%m-%d %H:%M} UTC [{ref}]"))
    return MappedComment(kind=kind, parent_key=parent, comment_id=str(cid), ts=ts, ref=ref, body=body)
