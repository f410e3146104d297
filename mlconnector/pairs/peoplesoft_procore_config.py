"""The [peoplesoft_procore] section: what flows between PeopleSoft and Procore, and through which names.

Crosswalks an admin writes: ``projects`` (Procore project id -> "PROJECT_ID/DEPTID": which PeopleSoft POs
belong to which job, and the department of POs made from its commitments) and ``accounts`` (GL ACCOUNT ->
cost code name: the accounts published as cost codes on every project in scope; the cost code's code is the
account). PeopleSoft names (the PO component interface, the project PO query's columns) are configuration with
the delivered records' names as defaults, since the reference leaves them to each customer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from mlconnector.errors import ConfigError
from mlconnector.pairs.procurify_peoplesoft_config import POFields
from mlconnector.sections import Section, parse_since, str_list
from mlconnector.sync.echo import CONFLICT_RULES

SECTION = "peoplesoft_procore"
SYSTEMS = ("peoplesoft", "procore")


@dataclass(frozen=True)
class POColumns:
    """Columns of the PeopleSoft query that lists purchase order distributions (one row each) by change stamp."""

    business_unit: str = "BUSINESS_UNIT"
    po_id: str = "PO_ID"
    po_ref: str = "PO_REF"
    status: str = "PO_STATUS"
    po_date: str = "PO_DT"
    vendor_setid: str = "VENDOR_SETID"
    vendor_id: str = "VENDOR_ID"
    line_nbr: str = "LINE_NBR"
    description: str = "DESCR254_MIXED"
    unit: str = "UNIT_OF_MEASURE"
    quantity: str = "QTY_PO"
    price: str = "PRICE_PO"
    distrib_nbr: str = "DISTRIB_LINE_NUM"
    account: str = "ACCOUNT"
    deptid: str = "DEPTID"
    project_id: str = "PROJECT_ID"
    amount: str = "MERCHANDISE_AMT"


@dataclass
class PairSettings:
    """Typed [peoplesoft_procore] settings (see the module docstring)."""

    business_unit: str
    buyer_id: str
    projects: dict[str, str] = field(default_factory=dict)  # Procore project id -> "PROJECT_ID/DEPTID"
    accounts: dict[str, str] = field(default_factory=dict)  # ACCOUNT -> cost code name
    # Procore vendor id -> PeopleSoft VENDOR_ID, for vendors made in Procore (vendors sent from PeopleSoft are
    # linked by the vendor flow and need no entry).
    vendors: dict[str, str] = field(default_factory=dict)
    po_query: str = "ML_PO_PROJECT_DISTRIB"
    po_statuses: list[str] = field(default_factory=lambda: ["A", "D"])  # PeopleSoft POs published to Procore
    commitment_status: str = "Approved"  # status of a commitment made from a PeopleSoft PO
    approved_statuses: list[str] = field(default_factory=lambda: ["Approved"])  # commitments that become POs
    po_ci: str = "PO_EXPRESS"
    vendor_setid: str = "SHARE"
    currency: str = "USD"
    unit: str = "EA"
    handle_prefix: str = "PCO-"
    handle_max: int = 30  # PO_REF is CHAR(30)
    commitment_handle: str = "id"  # "id" | "number": what of the commitment goes into the handle field
    updatable_statuses: list[str] = field(default_factory=lambda: ["I", "O", "PA", "A"])
    conflict_rule: str = "owner"  # owner | newest | manual
    system_of_record: str = "peoplesoft"
    overlap_minutes: float = 10.0
    initial_since: datetime = field(default_factory=lambda: datetime(2000, 1, 1))
    pending_grace_seconds: float = 600.0
    countries: dict[str, str] = field(default_factory=lambda: {"USA": "US", "CAN": "CA", "MEX": "MX", "GBR": "GB",
                                                               "DEU": "DE", "FRA": "FR", "AUS": "AU"})
    # Project costs -> GL journals (on when offset_account is set): approved direct costs and commitment change
    # orders, one debit per cost line on the account of its cost code, the credit on offset_account.
    offset_account: str = ""
    journal_ci: str = "JOURNAL_ENTRY"
    ledger: str = "ACTUALS"
    journal_business_unit: str = ""  # default: business_unit
    direct_cost_statuses: list[str] = field(default_factory=lambda: ["approved"])
    change_order_statuses: list[str] = field(default_factory=lambda: ["approved"])
    # "<cost code id>" or "<cost code id>|<line item type id>" -> ACCOUNT; a cost code published from a GL account
    # needs no entry (its account is its code).
    cost_accounts: dict[str, str] = field(default_factory=dict)
    reference_prefix: str = "procore-"  # the journal's reference field: "procore-dc-<id>" / "procore-cco-<id>"
    journal_origin_back: bool = True  # the journal id goes back to the direct cost's origin_id
    po: POFields = field(default_factory=POFields)
    po_columns: POColumns = field(default_factory=POColumns)
    journal: Any = None  # JournalNames (peoplesoft/journal_sink.py), from [peoplesoft_procore.journal_fields]

    CONFIG_KEYS = {"project": f"{SECTION}.projects", "account": f"{SECTION}.accounts",
                   "vendor": f"{SECTION}.vendors", "ps_vendor": "peoplesoft.records.vendors"}

    def project_of(self, project_id: str, deptid: str) -> str | None:
        """The Procore project of a PeopleSoft distribution: PROJECT_ID first, DEPTID when PROJECT_ID is blank."""
        for pid, target in self.projects.items():
            ps_project, _, dept = target.partition("/")
            if project_id and ps_project == project_id:
                return pid
        for pid, target in self.projects.items():
            ps_project, _, dept = target.partition("/")
            if not project_id and dept and dept == deptid:
                return pid
        return None


KNOWN = {f.name for f in fields(PairSettings)} | {"po_fields", "journal_fields"}
KNOWN -= {"po", "journal"}


def _names(s: Section, name: str, cls: type) -> Any:
    t = s.table(name, {f.name for f in fields(cls)})
    values = {}
    for k, v in t.data.items():
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{t.key(k)} must be a name in quotes, got {v!r}.")
        values[k] = v
    return cls(**values)


def parse_section(s: Section) -> PairSettings:
    """Parse [peoplesoft_procore] (registered in registry.SECTIONS); every error names its key."""
    s = Section(s.data, s.prefix, KNOWN)
    projects = s.str_map("projects")
    for k, v in projects.items():
        if not k.isdigit() or "/" not in v or not v.split("/")[0] and not v.split("/")[1]:
            raise ConfigError(f"{s.key('projects')}.{k!r} = {v!r}: write a project as \"<Procore project id>\" = "
                              f"\"<PROJECT_ID>/<DEPTID>\" (either side may be empty, not both), like "
                              f"\"562949953425469\" = \"PRJ-0042/CONST\".")
    accounts = s.str_map("accounts")
    rule = s.str("conflict_rule", "owner", choices=CONFLICT_RULES)
    handle_prefix = s.str("handle_prefix", "PCO-")
    countries = s.str_map("countries") if "countries" in s.data else PairSettings.__dataclass_fields__[
        "countries"].default_factory()  # type: ignore[misc]
    return PairSettings(
        business_unit=s.str("business_unit"),
        buyer_id=s.str("buyer_id"),
        projects=projects,
        accounts=accounts,
        vendors=s.str_map("vendors"),
        po_query=s.str("po_query", "ML_PO_PROJECT_DISTRIB"),
        po_statuses=str_list(s, "po_statuses") if "po_statuses" in s.data else ["A", "D"],
        commitment_status=s.str("commitment_status", "Approved"),
        approved_statuses=str_list(s, "approved_statuses") if "approved_statuses" in s.data else ["Approved"],
        po_ci=s.str("po_ci", "PO_EXPRESS"),
        vendor_setid=s.str("vendor_setid", "SHARE"),
        currency=s.str("currency", "USD"),
        unit=s.str("unit", "EA"),
        handle_prefix=handle_prefix,
        handle_max=s.num("handle_max", 30, minimum=4, integer=True),
        commitment_handle=s.str("commitment_handle", "id", choices=("id", "number")),
        updatable_statuses=str_list(s, "updatable_statuses") if "updatable_statuses" in s.data
        else ["I", "O", "PA", "A"],
        conflict_rule=rule,
        system_of_record=s.str("system_of_record", "peoplesoft", choices=SYSTEMS),
        overlap_minutes=s.num("overlap_minutes", 10.0, minimum=0),
        initial_since=parse_since(s, "initial_since", "2000-01-01"),
        pending_grace_seconds=s.num("pending_grace_seconds", 600.0, minimum=0),
        countries={k.upper(): v.upper() for k, v in countries.items()},
        offset_account=s.str("offset_account", ""),
        journal_ci=s.str("journal_ci", "JOURNAL_ENTRY"),
        ledger=s.str("ledger", "ACTUALS"),
        journal_business_unit=s.str("journal_business_unit", ""),
        direct_cost_statuses=str_list(s, "direct_cost_statuses") if "direct_cost_statuses" in s.data
        else ["approved"],
        change_order_statuses=str_list(s, "change_order_statuses") if "change_order_statuses" in s.data
        else ["approved"],
        cost_accounts=s.str_map("cost_accounts"),
        reference_prefix=s.str("reference_prefix", "procore-"),
        journal_origin_back=s.bool("journal_origin_back", True),
        po=_names(s, "po_fields", POFields),
        po_columns=_names(s, "po_columns", POColumns),
        journal=_journal_names(s, s.str("journal_ci", "JOURNAL_ENTRY")),
    )


def _journal_names(s: Section, ci: str) -> Any:
    from mlconnector.peoplesoft.journal_sink import JournalNames

    names = _names(s, "journal_fields", JournalNames) if "journal_fields" in s.data else JournalNames()
    return JournalNames(**{**{f.name: getattr(names, f.name) for f in fields(JournalNames)}, "ci": ci})
