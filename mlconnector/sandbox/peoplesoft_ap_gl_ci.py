"""Loopback simulator of PeopleSoft's payables and general-ledger Component Interfaces over SOAP: a voucher CI
(default ``VCHR_EXPRESS``: header -> ``VOUCHER_LINE`` -> ``DISTRIB_LINE``) and a journal CI (default
``JOURNAL_ENTRY``: header -> ``JRNL_LN``), served beside the purchasing CIs (chain it like ``PurchasingGateway``).

As strict as reference peoplesoft.md §4-§5 (stricter where the reference is unverified):
- WSDL/XSD per CI with one ``M<digits>.V1`` namespace per message, fields as simpleContent types, collections
  nested; WS-Security UsernameToken (PasswordText) required; the CI names are constructor arguments because the
  reference marks the voucher CI unverified and names no journal CI.
- Voucher Create assigns ``VOUCHER_ID`` for ``NEXT`` (8 characters); it refuses (CIFault 15,11 "Invalid value")
  an unknown business unit, currency, ACCOUNT or DEPTID, a supplier that is not approved in ``VENDOR_SETID``,
  a PO that does not exist or belongs to another supplier; an INVOICE_ID longer than 30 characters; lines or
  distributions that do not add up to GROSS_AMT.
- **Duplicate-invoice check**: VENDOR_SETID + VENDOR_ID + INVOICE_ID, plus the fields in ``duplicate_fields``
  (e.g. ``("INVOICE_DT", "GROSS_AMT")``), against every voucher; on by default, switched off per business unit
  with ``duplicate_check[bu] = False`` (then a second identical voucher is created).
- Find takes partial keys (prefix match, ``%`` wildcard); ``BUSINESS_UNIT`` and ``VOUCHER_ID`` are required
  elements (empty = any); ``INVOICE_ID``, ``VENDOR_ID`` and ``VENDOR_SETID`` are alternate keys.
- Journal Create assigns ``JOURNAL_ID`` for ``NEXT`` (10 characters); keys are BUSINESS_UNIT, JOURNAL_ID,
  JOURNAL_DATE (Get needs all three, Find returns them); it refuses an unbalanced journal (MONETARY_AMOUNT not
  summing to zero), no lines, an unknown LEDGER, ACCOUNT, DEPTID, PROJECT_ID or currency. Any number of
  journals may carry the same reference text (``DESCR254``): nothing in PeopleSoft makes it unique.
- Lost answers: the server's fault plan (``drop_after`` / ``hang_after`` with ``body_match`` on
  ``Create__CompIntfc__VCHR_EXPRESS``); ``on_commit(operation, keys)`` after every saved write and
  ``after_call(operation)`` after every answered operation (tests synchronise on them, never on time).
"""

from __future__ import annotations

import random
import re
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from mlconnector.sandbox.peoplesoft_po_ci import (
    METHOD_ELEMENT,
    CISpec,
    Level,
    PurchasingCI,
    _leaf,
    _local,
    _parse,
    _render,
    cifault_namespace,
)
from mlconnector.sandbox.peoplesoft_soap import (
    PASSWORD_TEXT,
    SCHEMA_BASE,
    SOAP_PREFIX,
    SOAPENV,
    WSSE,
    _ci_fault,
    _fault,
    _fault_xml,
    _ib_error,
    _ib_response,
    _no_routing_soap,
    _schema,
)
from mlconnector.sandbox.server import Request, Response, text_response

ELEMENT_METHOD = {v: k for k, v in METHOD_ELEMENT.items()}
DATE_FIELDS = {"INVOICE_DT", "JOURNAL_DATE", "ACCOUNTING_DT"}
DECIMAL_FIELDS = {"GROSS_AMT", "MERCHANDISE_AMT", "MONETARY_AMOUNT", "QTY_VCHR"}
DATETIME_FIELDS = {"LAST_DTTM_UPDATE"}
VOUCHER_FIELDS = ("BUSINESS_UNIT", "VOUCHER_ID", "INVOICE_ID", "INVOICE_DT", "VENDOR_SETID", "VENDOR_ID",
                  "GROSS_AMT", "TXN_CURRENCY_CD", "PO_BUSINESS_UNIT", "PO_ID", "DESCR254_MIXED", "ENTRY_STATUS",
                  "LAST_DTTM_UPDATE")
VOUCHER_LINE = Level(("VOUCHER_LINE_NUM", "DESCR", "MERCHANDISE_AMT", "LINE_NBR"),
                     {"DISTRIB_LINE": Level(("DISTRIB_LINE_NUM", "ACCOUNT", "DEPTID", "MERCHANDISE_AMT"))})
JOURNAL_FIELDS = ("BUSINESS_UNIT", "JOURNAL_ID", "JOURNAL_DATE", "LEDGER_GROUP", "LEDGER", "SOURCE", "DESCR254",
                  "JRNL_HDR_STATUS", "LAST_DTTM_UPDATE")
JOURNAL_LINE = Level(("JOURNAL_LINE", "ACCOUNT", "DEPTID", "PROJECT_ID", "CURRENCY_CD", "MONETARY_AMOUNT",
                      "LINE_DESCR"))
CENT = Decimal("0.001")  # GROSS_AMT is (28,3)


def voucher_spec() -> CISpec:
    return CISpec(("BUSINESS_UNIT", "VOUCHER_ID"), ("INVOICE_ID", "VENDOR_ID", "VENDOR_SETID"),
                  Level(VOUCHER_FIELDS, {"VOUCHER_LINE": VOUCHER_LINE}),
                  read_only=("ENTRY_STATUS", "LAST_DTTM_UPDATE"))


def journal_spec() -> CISpec:
    return CISpec(("BUSINESS_UNIT", "JOURNAL_ID", "JOURNAL_DATE"), ("DESCR254", "LEDGER"),
                  Level(JOURNAL_FIELDS, {"JRNL_LN": JOURNAL_LINE}),
                  read_only=("JRNL_HDR_STATUS", "LAST_DTTM_UPDATE"))


def _xsd_type(name: str) -> str:
    if name in DATE_FIELDS:
        return "xsd:date"
    if name in DECIMAL_FIELDS:
        return "xsd:decimal"
    if name in DATETIME_FIELDS:
        return "xsd:dateTime"
    return "xsd:string"


def _dec(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value or "0"))
    except InvalidOperation:
        return None


class AccountingCI:
    """Callable app serving ``CI_<voucher_ci>`` and ``CI_<journal_ci>``. Reference data is public and shared with
    ``purchasing`` when given (its vendors, accounts, departments, currencies, business units and POs);
    ``vouchers`` and ``journals`` hold the records (key tuple -> record with its collections)."""

    def __init__(self, *, node: str, users: dict[str, str], seed: int = 7, purchasing: PurchasingCI | None = None,
                 voucher_ci: str = "VCHR_EXPRESS", journal_ci: str = "JOURNAL_ENTRY") -> None:
        self.node = node
        self.users = users
        self.voucher_ci = voucher_ci
        self.journal_ci = journal_ci
        self.purchasing = purchasing or PurchasingCI(node=node, users=users, seed=seed)
        self.ledgers = {"ACTUALS"}
        self.projects = {"", "PRJ-100", "PRJ-200", "PRJ-300"}
        self.duplicate_check: dict[str, bool] = {}  # business unit -> on (missing: on)
        self.duplicate_fields: tuple[str, ...] = ()  # compared besides VENDOR_SETID, VENDOR_ID, INVOICE_ID
        self.vouchers: dict[tuple[str, ...], dict[str, Any]] = {}
        self.journals: dict[tuple[str, ...], dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.inactive: set[str] = set()
        self.on_commit: Callable[[str, tuple[str, ...]], None] | None = None
        self.after_call: Callable[[str], None] | None = None
        self.specs = {voucher_ci: voucher_spec(), journal_ci: journal_spec()}
        self._next = {voucher_ci: 1, journal_ci: 1}
        self._lock = threading.RLock()
        rng = random.Random(f"ap-gl-ci-namespaces/{seed}/{voucher_ci}/{journal_ci}")
        self._ns: dict[str, str] = {}
        for ci in self.specs:
            for m in METHOD_ELEMENT.values():
                for suffix in ("", "Response"):
                    self._ns[f"{m}__CompIntfc__{ci}{suffix}"] = f"{SCHEMA_BASE}/M{rng.randrange(100000, 999999)}.V1"
        self._ns["CIFault"] = cifault_namespace(node)  # one CIFault schema per server, shared with the PO CI

    # -- shared reference data -------------------------------------------------------------------
    @property
    def business_units(self) -> set[str]:
        return self.purchasing.business_units

    @property
    def accounts(self) -> set[str]:
        return self.purchasing.accounts

    @property
    def deptids(self) -> set[str]:
        return self.purchasing.deptids

    @property
    def currencies(self) -> set[str]:
        return self.purchasing.currencies

    # -- test helpers ----------------------------------------------------------------------------
    def add_vendor(self, vendor_id: str, name: str, *, setid: str = "SHARE", status: str = "A") -> None:
        self.purchasing.add_vendor(vendor_id, name, setid=setid, status=status)

    def enter_voucher(self, record: dict[str, Any]) -> tuple[str, ...]:
        """A voucher keyed in by a clerk (no checks, no duplicate check): returns its keys."""
        with self._lock:
            rec = {"ENTRY_STATUS": "P", **record}
            if rec.get("VOUCHER_ID", "NEXT") == "NEXT":
                rec["VOUCHER_ID"] = self._assign(self.voucher_ci)
            key = (rec["BUSINESS_UNIT"], rec["VOUCHER_ID"])
            self.vouchers[key] = rec
            return key

    def vouchers_for(self, vendor_id: str, invoice_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [v for v in self.vouchers.values()
                    if v.get("VENDOR_ID") == vendor_id and v.get("INVOICE_ID") == invoice_id]

    def journals_with(self, reference: str, field: str = "DESCR254") -> list[dict[str, Any]]:
        with self._lock:
            return [j for j in self.journals.values() if j.get(field) == reference]

    def handles(self, request: Request) -> bool:
        if not request.path.startswith(SOAP_PREFIX):
            return False
        if request.method == "GET":
            name = request.path.rsplit("/", 1)[-1]
            return name[3:].removesuffix(".1.wsdl") in self.specs or name.removesuffix(".V1.xsd") in self._ns
        head = request.body[:4000]
        return any(re.search(rb"__CompIntfc__" + re.escape(ci.encode()) + rb"(Response)?[\s/>]", head)
                   for ci in self.specs)

    # -- documents -------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        parts = [p for p in request.path[len(SOAP_PREFIX):].split("/") if p]
        if not parts or parts[0] != self.node:
            return _ib_error(500, 158, 505, "Integration Gateway: no handler for the inbound request message. "
                                            "(158,505)")
        if request.method == "GET":
            name = parts[-1]
            if name.startswith("CI_") and name.endswith(".1.wsdl") and name[3:-7] in self.specs:
                from mlconnector.sandbox.peoplesoft_soap import ci_wsdl

                return text_response(200, ci_wsdl(name[3:-7], dict(METHOD_ELEMENT), self._ns, self.node),
                                     "text/xml; charset=UTF-8")
            if name.endswith(".V1.xsd") and name[:-7] in self._ns:
                return text_response(200, self.xsd(name[:-7]), "text/xml; charset=UTF-8")
            return _ib_error(404, 158, 10403, f"Unable to find the WSDL or schema document {name}. (158,10403)")
        return self._soap(request)

    def xsd(self, element: str) -> str:
        ns = self._ns[element]
        if element == "CIFault":
            from mlconnector.sandbox.peoplesoft_soap import _IB_RESPONSE_TYPE

            return _schema(ns, '<xsd:element name="CIFault"><xsd:complexType><xsd:sequence><xsd:element '
                               'name="IBResponse" type="tns:IBResponseType" maxOccurs="unbounded"/></xsd:sequence>'
                               '</xsd:complexType></xsd:element>' + _IB_RESPONSE_TYPE)
        method, _, rest = element.partition("__CompIntfc__")
        response = rest.endswith("Response")
        ci = rest.removesuffix("Response")
        spec, m = self.specs[ci], ELEMENT_METHOD[method]
        types: set[str] = set()

        def flds(names: tuple[str, ...] | list[str], required: tuple[str, ...] = ()) -> str:
            types.update(names)
            return "".join(f'<xsd:element name="{n}" type="tns:{n}TypeShape"'
                           f'{"" if n in required else " minOccurs=" + chr(34) + "0" + chr(34)}/>' for n in names)

        def level(lv: Level, required: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> str:
            out = flds([f for f in lv.fields if f not in skip], required)
            for name, child in lv.children.items():
                out += (f'<xsd:element name="{name}" minOccurs="0" maxOccurs="unbounded"><xsd:complexType>'
                        f"<xsd:sequence>{level(child, skip=skip)}</xsd:sequence></xsd:complexType></xsd:element>")
            return out

        if not response:
            if m == "F":
                # The last key (assigned by PeopleSoft) and the date key are optional search fields.
                content = flds(spec.keys, spec.keys[:2]) + flds(spec.find_extra)
            elif m == "G":
                content = flds(spec.keys, spec.keys)
            else:
                content = level(spec.root, spec.keys, skip=spec.read_only)
        elif m == "F":
            content = (f'<xsd:element name="{ci}" minOccurs="0" maxOccurs="unbounded"><xsd:complexType><xsd:sequence>'
                       f"{flds(spec.keys + spec.find_extra)}</xsd:sequence></xsd:complexType></xsd:element>")
        elif m == "G":
            content = level(spec.root)
        else:
            content = ('<xsd:element name="notification" type="xsd:integer" minOccurs="0"/>'
                       f'<xsd:element name="detail" minOccurs="0"><xsd:complexType><xsd:sequence>{flds(spec.keys)}'
                       "</xsd:sequence></xsd:complexType></xsd:element>")
        defs = "".join(
            f'<xsd:simpleType name="{n}TypeDef"><xsd:restriction base="{_xsd_type(n)}"/></xsd:simpleType>'
            f'<xsd:complexType name="{n}TypeShape"><xsd:simpleContent><xsd:extension base="tns:{n}TypeDef">'
            f'<xsd:attribute name="IsChanged" type="xsd:string" use="optional"/></xsd:extension>'
            f"</xsd:simpleContent></xsd:complexType>" for n in sorted(types))
        return _schema(ns, f'<xsd:element name="{element}"><xsd:complexType><xsd:sequence>{content}</xsd:sequence>'
                           f"</xsd:complexType></xsd:element>{defs}")

    # -- SOAP ------------------------------------------------------------------------------------
    def _soap(self, request: Request) -> Response:
        try:
            env = ET.fromstring(request.body)
        except ET.ParseError:
            return text_response(500, _fault_xml("soapenv:Client", "The request is not well-formed XML."),
                                 "text/xml; charset=UTF-8")
        header = next((c for c in env if _local(c.tag) == "Header"), None)
        body = next((c for c in env if _local(c.tag) == "Body"), None)
        payload = next(iter(body), None) if body is not None else None
        if payload is None:
            return text_response(500, _fault_xml("soapenv:Client", "The SOAP body is empty."),
                                 "text/xml; charset=UTF-8")
        name = _local(payload.tag)
        method, _, ci = name.partition("__CompIntfc__")
        m = ELEMENT_METHOD.get(method)
        if ci not in self.specs or m is None:
            return _no_routing_soap()
        op = f"CI_{ci}_{m}"
        if not self._authenticated(header):
            return _fault(500, _ib_response(158, 10, "Invalid user ID or password for security verification. "
                                                     "(158,10)"))
        if not payload.tag.startswith("{" + self._ns[name] + "}"):
            return text_response(500, _fault_xml("soapenv:Client", f"Element {name} is not in namespace "
                                                                   f"{self._ns[name]}."), "text/xml; charset=UTF-8")
        with self._lock:
            if op in self.inactive:
                return _no_routing_soap()
            self.calls[op] += 1
        values = _parse(payload)
        handler = {"F": self._find, "G": self._get, "C": self._create, "UD": self._update}[m]
        resp = handler(ci, values, f"{name}Response")
        if self.after_call is not None:
            self.after_call(op)
        return resp

    def _authenticated(self, header: ET.Element | None) -> bool:
        if header is None:
            return False
        for token in header.iter(f"{{{WSSE}}}UsernameToken"):
            user, pw = token.find(f"{{{WSSE}}}Username"), token.find(f"{{{WSSE}}}Password")
            if user is None or pw is None or pw.get("Type") not in (None, PASSWORD_TEXT):
                return False
            return self.users.get((user.text or "").strip()) == (pw.text or "")
        return False

    def _answer(self, element: str, content: str) -> Response:
        return text_response(200, f'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="{SOAPENV}"><soapenv:Body>'
                                  f'<{element} xmlns="{self._ns[element]}">{content}</{element}></soapenv:Body>'
                                  f"</soapenv:Envelope>", "text/xml; charset=UTF-8")

    def _cifault(self, set_id: int, msg_id: int, message: str) -> Response:
        return _fault(500, _ci_fault(self._ns["CIFault"], set_id, msg_id, message))

    def _table(self, ci: str) -> dict[tuple[str, ...], dict[str, Any]]:
        return self.vouchers if ci == self.voucher_ci else self.journals

    def _find(self, ci: str, values: dict[str, Any], element: str) -> Response:
        spec = self.specs[ci]
        for k in spec.keys[:2]:
            if k not in values:
                return self._cifault(91, 37, f"Missing element {k}: the search key {k} of {ci} is required in a "
                                             f"Find request. (91,37)")
        prefixes = {k: str(values[k]).split("%", 1)[0] for k in spec.keys + spec.find_extra if values.get(k)}
        if not prefixes:
            # PeopleSoft refuses an unbounded search on a transaction component.
            return self._cifault(91, 38, f"Enter at least one search value for {ci}. (91,38)")
        with self._lock:
            rows = [r for _, r in sorted(self._table(ci).items())
                    if all(str(r.get(k, "")).startswith(p) for k, p in prefixes.items())]
            content = "".join(f"<{ci}>" + "".join(_leaf(k, r.get(k, "")) for k in spec.keys + spec.find_extra)
                              + f"</{ci}>" for r in rows)
        return self._answer(element, content)

    def _get(self, ci: str, values: dict[str, Any], element: str) -> Response:
        key = tuple(str(values.get(k, "")) for k in self.specs[ci].keys)
        with self._lock:
            rec = self._table(ci).get(key)
            if rec is None:
                return self._cifault(91, 50, f"No rows exist for the specified keys. {{{ci}.GETKEYS}} (91,50)")
            content = _render(self.specs[ci].root, rec)
        return self._answer(element, content)

    def _update(self, ci: str, values: dict[str, Any], element: str) -> Response:
        # Vouchers and journals are corrected by people in PeopleSoft (or reversed), never by this connector.
        return self._cifault(91, 52, f"UpdateData is not enabled for {ci} on this node. (91,52)")

    # -- validation ------------------------------------------------------------------------------
    def _invalid(self, field_name: str, value: Any, why: str = "") -> Response:
        return self._cifault(15, 11, f"Invalid value -- press the prompt button or hyperlink for a list of valid "
                                     f"values. ({{{field_name}}} value {value!r}{': ' + why if why else ''}) (15,11)")

    def _check_voucher(self, rec: dict[str, Any]) -> Response | None:
        for name, allowed in (("BUSINESS_UNIT", self.business_units), ("TXN_CURRENCY_CD", self.currencies)):
            if rec.get(name) not in allowed:
                return self._invalid(name, rec.get(name))
        vendor = self.purchasing.vendors.get((rec.get("VENDOR_SETID", ""), rec.get("VENDOR_ID", "")))
        if vendor is None or vendor["VENDOR_STATUS"] != "A":
            return self._invalid("VENDOR_ID", rec.get("VENDOR_ID"),
                                 f"no approved supplier in SetID {rec.get('VENDOR_SETID')!r}")
        invoice = str(rec.get("INVOICE_ID", ""))
        if not invoice.strip():
            return self._cifault(7030, 10, "Invoice Number is required. (7030,10)")
        if len(invoice) > 30:
            return self._cifault(15, 5, "Field INVOICE_ID is longer than 30 characters. (15,5)")
        try:
            date.fromisoformat(str(rec.get("INVOICE_DT", "")))
        except ValueError:
            return self._invalid("INVOICE_DT", rec.get("INVOICE_DT"))
        if rec.get("PO_ID"):
            po = self.purchasing.pos.get((rec.get("PO_BUSINESS_UNIT") or rec.get("BUSINESS_UNIT", ""), rec["PO_ID"]))
            if po is None:
                return self._invalid("PO_ID", rec["PO_ID"], "no such purchase order")
            if po.get("VENDOR_ID") != rec.get("VENDOR_ID"):
                return self._cifault(7030, 60, f"Purchase order {rec['PO_ID']} belongs to supplier "
                                               f"{po.get('VENDOR_ID')}, not {rec.get('VENDOR_ID')}. (7030,60)")
        gross = _dec(rec.get("GROSS_AMT"))
        if gross is None or gross <= 0:
            return self._invalid("GROSS_AMT", rec.get("GROSS_AMT"))
        lines = rec.get("VOUCHER_LINE") or []
        if not lines:
            return self._cifault(7030, 20, "A voucher needs at least one line. (7030,20)")
        total = Decimal(0)
        for line in lines:
            amount = _dec(line.get("MERCHANDISE_AMT"))
            if amount is None:
                return self._invalid("MERCHANDISE_AMT", line.get("MERCHANDISE_AMT"))
            total += amount
            dists = line.get("DISTRIB_LINE") or []
            if not dists:
                return self._cifault(7030, 21, f"Voucher line {line.get('VOUCHER_LINE_NUM')} has no distribution. "
                                               f"(7030,21)")
            dsum = Decimal(0)
            for d in dists:
                if d.get("ACCOUNT") not in self.accounts:
                    return self._invalid("ACCOUNT", d.get("ACCOUNT"))
                if d.get("DEPTID") not in self.deptids:
                    return self._invalid("DEPTID", d.get("DEPTID"))
                da = _dec(d.get("MERCHANDISE_AMT"))
                if da is None:
                    return self._invalid("MERCHANDISE_AMT", d.get("MERCHANDISE_AMT"))
                dsum += da
            if dsum.quantize(CENT) != amount.quantize(CENT):
                return self._cifault(7030, 22, f"Distributions of voucher line {line.get('VOUCHER_LINE_NUM')} "
                                               f"({dsum}) do not add up to the line amount ({amount}). (7030,22)")
        if total.quantize(CENT) != gross.quantize(CENT):
            return self._cifault(7030, 23, f"The voucher is out of balance: lines total {total}, gross amount "
                                           f"{gross}. (7030,23)")
        if self.duplicate_check.get(str(rec.get("BUSINESS_UNIT")), True):
            fields = ("VENDOR_SETID", "VENDOR_ID", "INVOICE_ID", *self.duplicate_fields)
            for other in self.vouchers.values():
                if all(_same(f, other.get(f), rec.get(f)) for f in fields):
                    return self._cifault(7030, 35, f"Duplicate invoice: invoice {invoice} of supplier "
                                                   f"{rec.get('VENDOR_ID')} has already been entered. (7030,35)")
        return None

    def _check_journal(self, rec: dict[str, Any]) -> Response | None:
        if rec.get("BUSINESS_UNIT") not in self.business_units:
            return self._invalid("BUSINESS_UNIT", rec.get("BUSINESS_UNIT"))
        if rec.get("LEDGER") not in self.ledgers:
            return self._invalid("LEDGER", rec.get("LEDGER"))
        try:
            date.fromisoformat(str(rec.get("JOURNAL_DATE", "")))
        except ValueError:
            return self._invalid("JOURNAL_DATE", rec.get("JOURNAL_DATE"))
        lines = rec.get("JRNL_LN") or []
        if len(lines) < 2:
            return self._cifault(5830, 10, "A journal needs at least two lines. (5830,10)")
        total = Decimal(0)
        for line in lines:
            for name, allowed in (("ACCOUNT", self.accounts), ("DEPTID", self.deptids | {""}),
                                  ("PROJECT_ID", self.projects), ("CURRENCY_CD", self.currencies)):
                if line.get(name, "") not in allowed:
                    return self._invalid(name, line.get(name, ""))
            amount = _dec(line.get("MONETARY_AMOUNT"))
            if amount is None:
                return self._invalid("MONETARY_AMOUNT", line.get("MONETARY_AMOUNT"))
            total += amount
        if total != 0:
            return self._cifault(5830, 20, f"Journal is out of balance by {total}: debits and credits must be equal "
                                           f"for ledger {rec.get('LEDGER')}. (5830,20)")
        return None

    def _assign(self, ci: str) -> str:
        n = self._next[ci]
        self._next[ci] += 1
        return f"{n:08d}" if ci == self.voucher_ci else f"GL{n:08d}"

    def _create(self, ci: str, values: dict[str, Any], element: str) -> Response:
        spec = self.specs[ci]
        rec = {k: v for k, v in values.items() if k not in spec.read_only}
        id_field = spec.keys[1]
        with self._lock:
            if ci == self.voucher_ci:
                bad = self._check_voucher(rec)
                rec["ENTRY_STATUS"] = "P"
            else:
                bad = self._check_journal(rec)
                rec["JRNL_HDR_STATUS"] = "N"
            if bad is not None:
                return bad
            if rec.get(id_field) == "NEXT":
                rec[id_field] = self._assign(ci)
            key = tuple(str(rec.get(k, "")) for k in spec.keys)
            if not all(key):
                return self._cifault(91, 37, f"Required key {spec.keys} missing for {ci}. (91,37)")
            table = self._table(ci)
            if key in table:
                return self._cifault(18, 2, f"The data being added conflicts with existing data. {{{ci}}} key "
                                            f"{'/'.join(key)} (18,2)")
            rec["LAST_DTTM_UPDATE"] = datetime.now(UTC).isoformat(timespec="seconds")
            table[key] = rec
        if self.on_commit is not None:
            self.on_commit(f"CI_{ci}_C", key)
        return self._answer(element, "<notification>1</notification><detail>"
                            + "".join(_leaf(k, v) for k, v in zip(spec.keys, key, strict=True)) + "</detail>")


def _same(name: str, a: Any, b: Any) -> bool:
    """Equal as PeopleSoft compares the field: amounts by value (100 == 100.000), text as text."""
    if name in DECIMAL_FIELDS:
        return _dec(a) == _dec(b)
    return str(a or "").strip() == str(b or "").strip()


class AccountingGateway:
    """One PeopleSoft web server: the payables and GL CIs here, everything else to ``inner`` (e.g. a
    ``PurchasingGateway``)."""

    def __init__(self, inner: Callable[[Request], Response], accounting: AccountingCI) -> None:
        self.inner = inner
        self.accounting = accounting

    def __call__(self, request: Request) -> Response:
        if self.accounting.handles(request):
            return self.accounting(request)
        return self.inner(request)


# -- a ready sandbox --------------------------------------------------------------------------------
PS_USER = "ML_CONNECTOR"
PS_PASSWORD = "sandbox-ps-password"
NODE = "PSFT_EP"


class AccountingBox:
    """The purchasing and accounting CI simulators behind one loopback server (127.0.0.1, port 0), seeded with
    two approved suppliers; ``ps_config()`` describes the server as a [peoplesoft] section."""

    def __init__(self, *, seed: int = 7, latency: float = 0.0, voucher_ci: str = "VCHR_EXPRESS",
                 journal_ci: str = "JOURNAL_ENTRY") -> None:
        from mlconnector.sandbox.peoplesoft_po_ci import PurchasingGateway
        from mlconnector.sandbox.server import SandboxServer

        users = {PS_USER: PS_PASSWORD}
        self.purchasing = PurchasingCI(node=NODE, users=users, seed=seed)
        self.accounting = AccountingCI(node=NODE, users=users, seed=seed, purchasing=self.purchasing,
                                       voucher_ci=voucher_ci, journal_ci=journal_ci)
        self.purchasing.add_vendor("0000000042", "Acme Supply")
        self.purchasing.add_vendor("0000000077", "Northwind Industrial")
        inner = PurchasingGateway(lambda _: text_response(404, "Not Found"), self.purchasing)
        self.server = SandboxServer(AccountingGateway(inner, self.accounting), "peoplesoft", latency=latency).start()

    def ps_config(self, **http: Any) -> Any:
        from mlconnector.config import HttpSettings, PeopleSoftConfig

        settings = HttpSettings(**{"max_attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.05,
                                   "read_timeout": 5.0, **http})
        return PeopleSoftConfig(base_url=self.server.url, node=NODE, auth="basic", user=PS_USER, token_url="",
                                client_id="", scope="", http=settings, owner_type="", maxrows=1000,
                                max_maxrows=10000, overlap_minutes=5.0, prompt_format="date",
                                prompt_names=("FROM", "TO"), db_utc_offset=None, records={})

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> AccountingBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
