"""The [procurify_peoplesoft] section: how approved Procurify order items become PeopleSoft purchase orders.

The PO component interface is unverified in the reference (``PO_EXPRESS`` is a customer-built CI on the
Express PO component, its field and scroll names are [U]), so every PeopleSoft name is configuration, with
the delivered record's field names as defaults; so are the Procurify order-item JSON paths the mapping reads
(dotted, e.g. ``pref_vendor.id``). Reference tables (vendors, accounts x departments, units) are crosswalks:
a value missing from them makes its order wait, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from mlconnector.errors import ConfigError
from mlconnector.peoplesoft.vendor_sink import VendorNames
from mlconnector.sections import Section, str_list

SECTION = "procurify_peoplesoft"


@dataclass(frozen=True)
class POFields:
    """Field and collection names of the PO component interface (header -> lines -> distributions)."""

    business_unit: str = "BUSINESS_UNIT"
    po_id: str = "PO_ID"
    handle: str = "PO_REF"  # carries the Procurify requisition number; NOT unique in PeopleSoft
    vendor_setid: str = "VENDOR_SETID"
    vendor_id: str = "VENDOR_ID"
    buyer: str = "BUYER_ID"
    po_date: str = "PO_DT"
    currency: str = "CURRENCY_CD"
    status: str = "PO_STATUS"
    lines: str = "PO_LINE"
    line_nbr: str = "LINE_NBR"
    description: str = "DESCR254_MIXED"
    unit: str = "UNIT_OF_MEASURE"
    quantity: str = "QTY_PO"
    price: str = "PRICE_PO"
    distributions: str = "PO_LINE_DISTRIB"
    distrib_nbr: str = "DISTRIB_LINE_NUM"
    account: str = "ACCOUNT"
    deptid: str = "DEPTID"
    distrib_quantity: str = "QTY_PO"
    amount: str = "MERCHANDISE_AMT"


@dataclass(frozen=True)
class ItemFields:
    """Where the mapping finds each value in a Procurify order item (dotted JSON paths)."""

    id: str = "id"
    requisition: str = "orderNum"
    line: str = "num"
    vendor: str = "pref_vendor.id"
    vendor_name: str = "pref_vendor.name"
    vendor_external_id: str = "pref_vendor.external_id"
    account_code: str = "accountCode"
    department: str = "department.name"  # [U] the department of the item's account (budget line)
    unit: str = "unit"
    quantity: str = "approved_quantity"
    price: str = "approved_price"
    description: str = "name"
    currency: str = "currency"
    status: str = "status"
    modified: str = "last_modified"


@dataclass
class PairSettings:
    """Typed [procurify_peoplesoft] settings (see the module docstring)."""

    business_unit: str
    buyer_id: str
    po_ci: str = "PO_EXPRESS"
    vendor_setid: str = "SHARE"
    handle_prefix: str = "PRC-"
    handle_max: int = 30  # PO_REF is CHAR(30) on PS_PO_HDR
    group_by: str = "requisition_vendor"  # one PO per requisition and vendor | "requisition" (one vendor each)
    currencies: list[str] = field(default_factory=lambda: ["USD"])  # currencies PeopleSoft knows for this BU
    approved_statuses: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 5, 6])
    updatable_statuses: list[str] = field(default_factory=lambda: ["I", "O", "PA", "A"])  # not dispatched
    vendor_key: str = "xref"  # "xref": [..vendors] table + learned | "external_id": Procurify external_id = VENDOR_ID
    amount_places: int = 3  # MERCHANDISE_AMT is (28,3)
    # A PO Create whose answer was lost is not looked up (nor its requisition posted) until this old: the
    # application server may still be committing it after the client gave up.
    pending_grace_seconds: float = 600.0
    vendors: dict[str, str] = field(default_factory=dict)  # Procurify vendor id -> PeopleSoft VENDOR_ID
    accounts: dict[str, str] = field(default_factory=dict)  # "<account code>|<department>" -> "ACCOUNT/DEPTID"
    units: dict[str, str] = field(default_factory=dict)  # Procurify unit -> PeopleSoft UNIT_OF_MEASURE
    po: POFields = field(default_factory=POFields)
    item: ItemFields = field(default_factory=ItemFields)
    # Vendors: a Procurify vendor an approved item needs and PeopleSoft lacks is created through the supplier CI
    # (found again by vendor_fields.handle = vendor_handle_prefix + Procurify id); PeopleSoft changes to a
    # linked supplier (name, status, address) are sent back to Procurify on a full-read cadence.
    create_vendors: bool = True
    vendor_handle_prefix: str = "PRCV-"
    vendor_handle_max: int = 14  # VENDOR_NAME_SHORT is CHAR(14)
    vendor_defaults: dict[str, str] = field(default_factory=lambda: dict(VENDOR_DEFAULTS))
    vendor_fields: VendorNames = field(default_factory=VendorNames)
    vendor_backflow: bool = True
    vendor_read_every_minutes: float = 60.0  # 0 = every pass; PS_VENDOR has no change stamp: read in full
    active_vendor_statuses: list[str] = field(default_factory=lambda: ["A"])  # VENDOR_STATUS = active in Procurify
    # Concurrent PO Find/Get/Create/UpdateData calls. Each holds an application-server process for its
    # length: keep it at or below what the PeopleSoft admin allots to integrations.
    ci_workers: int = 4
    # GL accounts: PeopleSoft GL accounts in scope (these ACCOUNT values, or ACCOUNT values starting with one of
    # these prefixes) are published to Procurify account codes. Off while both are empty. GL_ACCOUNT_TBL has no
    # change stamp: the query (no prompts; ACCOUNT, DESCR, EFF_STATUS) is read in full on a cadence.
    gl_accounts: list[str] = field(default_factory=list)
    gl_account_prefixes: list[str] = field(default_factory=list)
    gl_query: str = "ML_GL_ACCOUNTS"
    gl_read_every_minutes: float = 60.0
    gl_active_statuses: list[str] = field(default_factory=lambda: ["A"])

    # Vouchers close Procurify POs (off by default): the voucher query (no prompts; BUSINESS_UNIT, PO_ID,
    # VOUCHER_ID, GROSS_AMT: one row per voucher on a PO, ideally only POs whose PO_REF starts with
    # handle_prefix) is read on a cadence; a PO the connector created is closed in Procurify once
    # close_when holds: "vouchered" = the vouchers' gross adds up to the PO amount or more; "any_voucher".
    close_pos: bool = False
    voucher_query: str = "ML_PO_VOUCHERS"
    voucher_read_every_minutes: float = 60.0
    close_when: str = "vouchered"

    def gl_in_scope(self, account: str) -> bool:
        return account in self.gl_accounts or any(account.startswith(p) for p in self.gl_account_prefixes)

    @property
    def gl_publish(self) -> bool:
        return bool(self.gl_accounts or self.gl_account_prefixes)

    CONFIG_KEYS = {"vendor": f"{SECTION}.vendors", "account": f"{SECTION}.accounts", "unit": f"{SECTION}.units"}

    def crosswalk_tables(self) -> dict[str, dict[str, str]]:
        return {"vendor": self.vendors, "account": self.accounts, "unit": self.units}


VENDOR_DEFAULTS = {"VENDOR_STATUS": "A", "VENDOR_CLASS": "R", "VENDOR_PERSISTENCE": "R"}

KNOWN = {"create_vendors", "vendor_handle_prefix", "vendor_handle_max", "vendor_defaults", "vendor_fields",
         "vendor_backflow", "vendor_read_every_minutes", "active_vendor_statuses", "ci_workers",
         "business_unit", "buyer_id", "po_ci", "vendor_setid", "handle_prefix", "handle_max", "group_by",
         "currencies", "approved_statuses", "updatable_statuses", "vendor_key", "amount_places", "vendors",
         "pending_grace_seconds", "gl_accounts", "gl_account_prefixes", "gl_query", "gl_read_every_minutes",
         "gl_active_statuses", "close_pos", "voucher_query", "voucher_read_every_minutes", "close_when",
         "accounts", "units", "po_fields", "item_fields"}


def _names(s: Section, name: str, cls: type) -> Any:
    t = s.table(name, {f.name for f in fields(cls)})
    values = {}
    for k, v in t.data.items():
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{t.key(k)} must be a name in quotes, got {v!r}.")
        values[k] = v
    return cls(**values)


def parse_section(s: Section) -> PairSettings:
    """Parse [procurify_peoplesoft] (registered in registry.SECTIONS); every error names its key."""
    s = Section(s.data, s.prefix, KNOWN)
    accounts = s.str_map("accounts")
    for k, v in accounts.items():
        if "|" not in k or len(v.split("/")) != 2 or not all(v.split("/")):
            raise ConfigError(f"{s.key('accounts')}.{k!r} = {v!r}: write an account mapping as "
                              f"\"<account code>|<department>\" = \"<ACCOUNT>/<DEPTID>\", like \"6100|Facilities\" = "
                              f"\"640000/FAC\".")
    statuses = s.data.get("approved_statuses", [0, 1, 2, 3, 5, 6])
    if not isinstance(statuses, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in statuses):
        raise ConfigError(f"{s.key('approved_statuses')} must be a list of Procurify order-item status numbers, "
                          f"like [0, 1, 2].")
    currencies = str_list(s, "currencies") if "currencies" in s.data else ["USD"]
    updatable = str_list(s, "updatable_statuses") if "updatable_statuses" in s.data else ["I", "O", "PA", "A"]
    return PairSettings(
        business_unit=s.str("business_unit"),
        buyer_id=s.str("buyer_id"),
        po_ci=s.str("po_ci", "PO_EXPRESS"),
        vendor_setid=s.str("vendor_setid", "SHARE"),
        handle_prefix=s.str("handle_prefix", "PRC-"),
        handle_max=s.num("handle_max", 30, minimum=4, integer=True),
        group_by=s.str("group_by", "requisition_vendor", choices=("requisition_vendor", "requisition")),
        currencies=[c.upper() for c in currencies],
        approved_statuses=list(statuses),
        updatable_statuses=updatable,
        vendor_key=s.str("vendor_key", "xref", choices=("xref", "external_id")),
        amount_places=s.num("amount_places", 3, minimum=0, integer=True),
        pending_grace_seconds=s.num("pending_grace_seconds", 600.0, minimum=0),
        vendors=s.str_map("vendors"),
        accounts=accounts,
        units=s.str_map("units"),
        po=_names(s, "po_fields", POFields),
        item=_names(s, "item_fields", ItemFields),
        create_vendors=s.bool("create_vendors", True),
        vendor_handle_prefix=s.str("vendor_handle_prefix", "PRCV-"),
        vendor_handle_max=s.num("vendor_handle_max", 14, minimum=4, integer=True),
        vendor_defaults={**VENDOR_DEFAULTS, **s.str_map("vendor_defaults")},
        vendor_fields=_names(s, "vendor_fields", VendorNames),
        vendor_backflow=s.bool("vendor_backflow", True),
        vendor_read_every_minutes=s.num("vendor_read_every_minutes", 60.0, minimum=0),
        active_vendor_statuses=(str_list(s, "active_vendor_statuses") if "active_vendor_statuses" in s.data
                                else ["A"]),
        ci_workers=_workers(s),
        gl_accounts=str_list(s, "gl_accounts") if "gl_accounts" in s.data else [],
        gl_account_prefixes=str_list(s, "gl_account_prefixes") if "gl_account_prefixes" in s.data else [],
        gl_query=s.str("gl_query", "ML_GL_ACCOUNTS"),
        gl_read_every_minutes=s.num("gl_read_every_minutes", 60.0, minimum=0),
        gl_active_statuses=(str_list(s, "gl_active_statuses") if "gl_active_statuses" in s.data else ["A"]),
        close_pos=s.bool("close_pos", False),
        voucher_query=s.str("voucher_query", "ML_PO_VOUCHERS"),
        voucher_read_every_minutes=s.num("voucher_read_every_minutes", 60.0, minimum=0),
        close_when=s.str("close_when", "vouchered", choices=("vouchered", "any_voucher")),
    )


def _workers(s: Section) -> int:
    n = s.num("ci_workers", 4, minimum=1, integer=True)
    if n > 16:
        raise ConfigError(f"{s.key('ci_workers')} = {n}: each concurrent call holds a PeopleSoft application-server "
                          f"process; keep it at or below what the admin allots to integrations (1-16, usually 2-6).")
    return int(n)
