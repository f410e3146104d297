"""The [peoplesoft_jaggaer] section: how PeopleSoft vendors and requisitions reach JAGGAER, and how JAGGAER
purchase orders (and invoices) reach PeopleSoft.

JAGGAER's procure-to-pay JSON is not public, so every JAGGAER field the mapping reads or writes is a dotted
path here, with the shapes of the public samples (and of the sandbox) as defaults; PeopleSoft names default
to the delivered records'. Reference tables (business units, vendors, account codes, units) are crosswalks:
a value missing from them makes its document wait, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from mlconnector.errors import ConfigError
from mlconnector.pairs.procurify_peoplesoft_config import VENDOR_DEFAULTS, POFields
from mlconnector.peoplesoft.vendor_sink import VendorNames
from mlconnector.sections import Section, str_list

SECTION = "peoplesoft_jaggaer"


@dataclass(frozen=True)
class SupplierFields:
    """Where each value sits in a JAGGAER company profile (dotted paths)."""

    id: str = "bravoId"
    key: str = "extCode"  # carries the PeopleSoft VENDOR_ID: the supplier's handle in JAGGAER
    name: str = "companyName"
    city: str = "city"
    country: str = "isoCountry"
    modified: str = "lastModTime"


@dataclass(frozen=True)
class POSource:
    """Where each value sits in a JAGGAER purchase order (dotted paths; lines relative to a line)."""

    number: str = "header.poNumber"
    revision: str = "header.revision"
    status: str = "header.status"
    business_unit: str = "header.businessUnit"
    currency: str = "header.currency"
    supplier_id: str = "header.supplier.id"
    supplier_key: str = "header.supplier.supplierNumber"
    supplier_name: str = "header.supplier.name"
    modified: str = "header.lastUpdate"
    lines: str = "lines"
    line_number: str = "lineNumber"
    description: str = "description"
    quantity: str = "quantity"
    price: str = "unitPrice.money"
    unit: str = "unitOfMeasure"
    account_code: str = "accountCode"


@dataclass(frozen=True)
class InvoiceSource:
    """Where each value sits in a JAGGAER invoice (``ji/v1`` sample shape; dotted paths)."""

    id: str = "header.invoiceId"
    supplier_invoice_number: str = "header.supplierInvoiceNumber"
    invoice_type: str = "header.invoiceType"
    invoice_date: str = "header.invoiceDate"
    po_number: str = "header.poNumber"
    supplier_id: str = "header.supplier.id"
    total: str = "header.total.value"
    currency: str = "header.total.currency"
    status: str = "header.workflowStatus"
    modified: str = "header.lastUpdate"
    lines: str = "lines"
    line_number: str = "lineNumber"
    po_line_number: str = "poLineNumber"
    description: str = "description"
    quantity: str = "quantity"
    price: str = "unitPrice.money"
    amount: str = "extendedPrice.money"


@dataclass
class PairSettings:
    """Typed [peoplesoft_jaggaer] settings (see the module docstring)."""

    buyer_id: str
    vendor_query: str = "ML_VENDOR_ALL"  # full read, no prompts (PS_VENDOR has no change stamp)
    vendor_setid: str = "SHARE"
    vendor_statuses: list[str] = field(default_factory=lambda: ["A"])
    requisition_query: str = "ML_REQ_CHANGED"
    requisition_lines_query: str = ""  # optional: lines (BUSINESS_UNIT, REQ_ID, LINE_NBR, ...) for the same window
    requisition_statuses: list[str] = field(default_factory=lambda: ["A"])
    requisition_handle_field: str = "externalRequisitionNumber"
    requisition_handle_prefix: str = "PSREQ"
    default_account_code: str = "6100"  # the JAGGAER account code of a header-only requisition's one line
    default_unit: str = "EA"
    po_ci: str = "PO_EXPRESS"
    # PO_REF = prefix + JAGGAER PO number. Not empty by default: a bare number could equal a PO_REF a person keyed
    # for the same vendor, and that PO would be adopted and overwritten.
    po_handle_prefix: str = "JAG-"
    # Where POs created before the prefix (PO_REF = bare number) are looked for before a create: "auto" when the
    # state holds such a PO, "always", or "never".
    po_legacy_lookup: str = "auto"
    handle_max: int = 30  # PO_REF is CHAR(30)
    po_statuses: list[str] = field(default_factory=lambda: ["Approved"])
    voucher_ci: str = "VCHR_EXPRESS"
    invoice_statuses: list[str] = field(default_factory=lambda: ["Approved"])
    invoice_types: list[str] = field(default_factory=lambda: ["Invoice"])  # credit memos are left to a person
    currencies: list[str] = field(default_factory=lambda: ["USD"])
    updatable_statuses: list[str] = field(default_factory=lambda: ["I", "O", "PA", "A"])
    amount_places: int = 3
    pending_grace_seconds: float = 600.0
    business_units: dict[str, str] = field(default_factory=dict)  # PeopleSoft BU -> JAGGAER business unit
    vendors: dict[str, str] = field(default_factory=dict)  # JAGGAER supplier id -> PeopleSoft VENDOR_ID
    accounts: dict[str, str] = field(default_factory=dict)  # JAGGAER account code -> "ACCOUNT/DEPTID"
    units: dict[str, str] = field(default_factory=dict)  # JAGGAER unit -> PeopleSoft UNIT_OF_MEASURE
    # A JAGGAER-only supplier (no extCode, not mapped) is created in PeopleSoft through the supplier CI before its
    # first PO, found again by vendor_fields.handle = vendor_handle_prefix + JAGGAER supplier id; its new
    # VENDOR_ID is then written to the profile's key field (extCode). create_vendors = false: it waits for a mapping.
    create_vendors: bool = True
    vendor_handle_prefix: str = "JGRS-"
    vendor_handle_max: int = 14  # VENDOR_NAME_SHORT is CHAR(14)
    vendor_defaults: dict[str, str] = field(default_factory=lambda: dict(VENDOR_DEFAULTS))
    vendor_fields: VendorNames = field(default_factory=VendorNames)
    # cXML transport (jaggaer/cxml.py): "cxml" reads POs / invoices from the receiver's spool instead of REST.
    po_transport: str = "rest"
    invoice_transport: str = "rest"
    cxml_business_unit_extrinsic: str = "BusinessUnit"  # OrderRequestHeader Extrinsic naming the JAGGAER BU
    cxml_supplier_key_extrinsic: str = "SupplierNumber"  # Extrinsic carrying the PeopleSoft VENDOR_ID, if sent
    cxml_account_segment: str = ""  # AccountingSegment Name whose id is the account code ("": the first one)
    po: POFields = field(default_factory=POFields)
    supplier: SupplierFields = field(default_factory=SupplierFields)
    po_source: POSource = field(default_factory=POSource)
    invoice_source: InvoiceSource = field(default_factory=InvoiceSource)

    CONFIG_KEYS = {"vendor": f"{SECTION}.vendors", "account": f"{SECTION}.accounts", "unit": f"{SECTION}.units",
                   "business_unit": f"{SECTION}.business_units"}

    def crosswalk_tables(self) -> dict[str, dict[str, str]]:
        return {"vendor": self.vendors, "account": self.accounts, "unit": self.units,
                "business_unit": {v: k for k, v in self.business_units.items()}}  # JAGGAER BU -> PS BU


KNOWN = {f.name for f in fields(PairSettings)} | {"po_fields", "supplier_fields", "po_source_fields",
                                                    "invoice_source_fields", "vendor_fields"}


def _names(s: Section, name: str, cls: type) -> Any:
    t = s.table(name, {f.name for f in fields(cls)})
    values = {}
    for k, v in t.data.items():
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{t.key(k)} must be a name in quotes, got {v!r}.")
        values[k] = v
    return cls(**values)


def parse_section(s: Section) -> PairSettings:
    """Parse [peoplesoft_jaggaer] (registered in registry.SECTIONS); every error names its key."""
    s = Section(s.data, s.prefix, KNOWN - {"po", "supplier", "po_source", "invoice_source"})
    accounts = s.str_map("accounts")
    for k, v in accounts.items():
        if len(v.split("/")) != 2 or not all(v.split("/")):
            raise ConfigError(f"{s.key('accounts')}.{k!r} = {v!r}: write an account mapping as \"<JAGGAER account "
                              f"code>\" = \"<ACCOUNT>/<DEPTID>\", like \"6100\" = \"640000/FAC\".")
    bus = s.str_map("business_units")
    if len(set(bus.values())) != len(bus):
        raise ConfigError(f"{s.key('business_units')} maps two PeopleSoft business units to one JAGGAER business "
                          f"unit; purchase orders could not be told apart. Give each its own.")

    def lst(name: str, default: list[str]) -> list[str]:
        return str_list(s, name) if name in s.data else default

    return PairSettings(
        buyer_id=s.str("buyer_id"),
        vendor_query=s.str("vendor_query", "ML_VENDOR_ALL"),
        vendor_setid=s.str("vendor_setid", "SHARE"),
        vendor_statuses=lst("vendor_statuses", ["A"]),
        requisition_query=s.str("requisition_query", "ML_REQ_CHANGED"),
        requisition_lines_query=s.str("requisition_lines_query", ""),
        requisition_statuses=lst("requisition_statuses", ["A"]),
        requisition_handle_field=s.str("requisition_handle_field", "externalRequisitionNumber"),
        requisition_handle_prefix=s.str("requisition_handle_prefix", "PSREQ"),
        default_account_code=s.str("default_account_code", "6100"),
        default_unit=s.str("default_unit", "EA"),
        po_ci=s.str("po_ci", "PO_EXPRESS"),
        po_handle_prefix=s.str("po_handle_prefix", "JAG-"),
        po_legacy_lookup=s.str("po_legacy_lookup", "auto", choices=("auto", "always", "never")),
        handle_max=s.num("handle_max", 30, minimum=4, integer=True),
        po_statuses=lst("po_statuses", ["Approved"]),
        voucher_ci=s.str("voucher_ci", "VCHR_EXPRESS"),
        invoice_statuses=lst("invoice_statuses", ["Approved"]),
        invoice_types=lst("invoice_types", ["Invoice"]),
        currencies=[c.upper() for c in lst("currencies", ["USD"])],
        updatable_statuses=lst("updatable_statuses", ["I", "O", "PA", "A"]),
        amount_places=s.num("amount_places", 3, minimum=0, integer=True),
        pending_grace_seconds=s.num("pending_grace_seconds", 600.0, minimum=0),
        business_units=bus,
        vendors=s.str_map("vendors"),
        accounts=accounts,
        units=s.str_map("units"),
        create_vendors=s.bool("create_vendors", True),
        vendor_handle_prefix=s.str("vendor_handle_prefix", "JGRS-"),
        vendor_handle_max=s.num("vendor_handle_max", 14, minimum=4, integer=True),
        vendor_defaults={**VENDOR_DEFAULTS, **s.str_map("vendor_defaults")},
        vendor_fields=_names(s, "vendor_fields", VendorNames),
        po_transport=s.str("po_transport", "rest", choices=("rest", "cxml")),
        invoice_transport=s.str("invoice_transport", "rest", choices=("rest", "cxml")),
        cxml_business_unit_extrinsic=s.str("cxml_business_unit_extrinsic", "BusinessUnit"),
        cxml_supplier_key_extrinsic=s.str("cxml_supplier_key_extrinsic", "SupplierNumber"),
        cxml_account_segment=s.str("cxml_account_segment", ""),
        po=_names(s, "po_fields", POFields),
        supplier=_names(s, "supplier_fields", SupplierFields),
        po_source=_names(s, "po_source_fields", POSource),
        invoice_source=_names(s, "invoice_source_fields", InvoiceSource),
    )
