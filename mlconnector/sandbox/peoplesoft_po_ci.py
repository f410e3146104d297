"""Loopback simulator of PeopleSoft's purchasing Component Interfaces over SOAP: a PO CI with scroll levels
(``PO_EXPRESS``: header -> ``PO_LINE`` -> ``PO_LINE_DISTRIB``) and the supplier CI ``VNDR_ID``.

As strict as reference peoplesoft.md §4-§5 (and stricter where the reference is unverified, so the client
cannot lean on luck):
- WSDL/XSD per CI with one ``M<digits>.V1`` namespace per message (digits from the seed), fields as
  simpleContent types, collections as nested repeating elements; the ``soap:address`` is an internal host.
- WS-Security UsernameToken (PasswordText) required.
- ``PO_REF`` is NOT unique: any number of POs may carry the same reference (typed by people, too).
- Find takes partial keys: every given value matches as a prefix (``%`` is a wildcard); ``BUSINESS_UNIT`` and
  ``PO_ID`` are required elements (empty = any); ``PO_REF`` and ``VENDOR_ID`` are optional alternate keys.
- Create assigns ``PO_ID`` for ``NEXT``; Create/UpdateData refuse (CIFault, message 15,11 "Invalid value")
  an unknown or inactive vendor, buyer, business unit, currency, unit of measure, ACCOUNT or DEPTID; a
  non-positive quantity; distributions that do not add up to their line; UpdateData of a PO already
  dispatched, complete or cancelled (CIFault).
- ``VNDR_ID`` (PS_VENDOR + VENDOR_ADDR): ``VENDOR_ID`` char 10 (``NEXT`` assigns one), NAME1 / NAME2 40
  characters, VENDOR_NAME_SHORT 14, address fields at their record lengths: a longer value is a CIFault
  (15,5), never cut; NAME1 required; VENDOR_STATUS A/D/E/I/X, VENDOR_CLASS and VENDOR_PERSISTENCE checked;
  Find by SETID + VENDOR_ID (empty = any) with VENDOR_NAME_SHORT / NAME1 as prefix alternate keys (not unique).
- A commit whose answer is lost: use the server's fault plan (``drop_after`` / ``hang_after`` with
  ``body=`` matching ``Create__CompIntfc__PO_EXPRESS``); ``on_commit`` is called after every saved write
  (tests synchronise on it instead of sleeping).
"""

from __future__ import annotations

import random
import threading
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.sax.saxutils import escape

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

METHOD_ELEMENT = {"F": "Find", "G": "Get", "C": "Create", "UD": "Updatedata"}
ELEMENT_METHOD = {v: k for k, v in METHOD_ELEMENT.items()}
DATE_FIELDS = {"PO_DT"}
DECIMAL_FIELDS = {"QTY_PO", "PRICE_PO", "MERCHANDISE_AMT"}
DATETIME_FIELDS = {"LAST_DTTM_UPDATE"}


@dataclass(frozen=True)
class Level:
    """One scroll level: its fields and child collections (name -> Level)."""

    fields: tuple[str, ...]
    children: dict[str, Level] = field(default_factory=dict)


@dataclass(frozen=True)
class CISpec:
    keys: tuple[str, ...]
    find_extra: tuple[str, ...]
    root: Level
    read_only: tuple[str, ...] = ()


DISTRIB = Level(("DISTRIB_LINE_NUM", "ACCOUNT", "DEPTID", "QTY_PO", "MERCHANDISE_AMT"))
LINE = Level(("LINE_NBR", "DESCR254_MIXED", "UNIT_OF_MEASURE", "QTY_PO", "PRICE_PO"), {"PO_LINE_DISTRIB": DISTRIB})
ADDR = Level(("ADDRESS_SEQ_NUM", "ADDRESS1", "ADDRESS2", "CITY", "STATE", "POSTAL", "COUNTRY"))
SPECS: dict[str, CISpec] = {
    "PO_EXPRESS": CISpec(("BUSINESS_UNIT", "PO_ID"), ("PO_REF", "VENDOR_ID"),
                         Level(("BUSINESS_UNIT", "PO_ID", "PO_REF", "VENDOR_SETID", "VENDOR_ID", "BUYER_ID", "PO_DT",
                                "CURRENCY_CD", "PO_STATUS", "LAST_DTTM_UPDATE"), {"PO_LINE": LINE}),
                         read_only=("LAST_DTTM_UPDATE",)),
    "VNDR_ID": CISpec(("SETID", "VENDOR_ID"), ("VENDOR_NAME_SHORT", "NAME1"),
                      Level(("SETID", "VENDOR_ID", "VENDOR_NAME_SHORT", "NAME1", "NAME2", "VENDOR_STATUS",
                             "VENDOR_CLASS", "VENDOR_PERSISTENCE", "LAST_DTTM_UPDATE"), {"VENDOR_ADDR": ADDR}),
                      read_only=("LAST_DTTM_UPDATE",)),
}
# PS_VENDOR field lengths (reference peoplesoft.md §6: VENDOR_ID char 10, NAME1 40); the others per the
# delivered record. A longer value is refused, never cut.
VENDOR_LENGTHS = {"VENDOR_ID": 10, "VENDOR_NAME_SHORT": 14, "NAME1": 40, "NAME2": 40, "ADDRESS1": 55,
                  "ADDRESS2": 55, "CITY": 30, "STATE": 6, "POSTAL": 12, "COUNTRY": 3}
VENDOR_STATUSES = {"A", "D", "E", "I", "X"}  # Approved, Denied, Unapproved, Inactive, To Be Archived
VENDOR_CLASSES = {"R", "E", "H", "A"}  # regular, employee, HR, attorney
VENDOR_PERSISTENCES = {"O", "P", "R", "S"}  # one-time, permanent, regular, single payment
LOCKED_PO_STATUS = {"D": "dispatched", "C": "complete", "X": "cancelled"}


def cifault_namespace(node: str) -> str:
    """The namespace of ``CIFault.V1.xsd`` on the web server of ``node``. Integration Broker has one CIFault schema
    per server, referenced by every CI's WSDL: every CI simulator served behind one server must declare this one
    (a per-simulator namespace makes one WSDL's fault schema the other's, and that WSDL fails to load)."""
    digits = zlib.crc32(f"cifault/{node}".encode()) % 900000 + 100000
    return f"{SCHEMA_BASE}/M{digits}.V1"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(el: ET.Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in el:
        name = _local(c.tag)
        if len(c):
            out.setdefault(name, []).append(_parse(c))
        else:
            out[name] = (c.text or "").strip()
    return out


def _xsd_type(name: str) -> str:
    if name in DATE_FIELDS:
        return "xsd:date"
    if name in DECIMAL_FIELDS:
        return "xsd:decimal"
    if name in DATETIME_FIELDS:
        return "xsd:dateTime"
    return "xsd:string"


class PurchasingCI:
    """Callable app serving ``CI_PO_EXPRESS`` and ``CI_VNDR_ID``. Reference data (vendors, accounts, ...) is
    public and can be changed by tests; ``pos`` holds the purchase orders (key -> record with lines)."""

    def __init__(self, *, node: str, users: dict[str, str], seed: int = 7) -> None:
        self.node = node
        self.users = users
        self.seed = seed
        self.business_units = {"US001"}
        self.buyers = {"BUYER1"}
        self.currencies = {"USD", "CAD", "EUR"}
        self.units = {"EA", "BX", "HR", "CS"}
        self.accounts = {"640000", "641000", "650000"}
        self.deptids = {"FAC", "IT", "OPS"}
        self.vendors: dict[tuple[str, str], dict[str, Any]] = {}
        self.pos: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.inactive: set[str] = set()
        self.on_commit: Callable[[str, tuple[str, str]], None] | None = None
        self._next = {"PO_EXPRESS": 100001, "VNDR_ID": 700001}
        self._lock = threading.Lock()
        rng = random.Random(f"po-ci-namespaces/{seed}")
        self._ns: dict[str, str] = {}
        for ci in SPECS:
            for m in METHOD_ELEMENT.values():
                for suffix in ("", "Response"):
                    self._ns[f"{m}__CompIntfc__{ci}{suffix}"] = f"{SCHEMA_BASE}/M{rng.randrange(100000, 999999)}.V1"
        self._ns["CIFault"] = cifault_namespace(node)

    # -- test helpers ----------------------------------------------------------------------------
    def add_vendor(self, vendor_id: str, name: str, *, setid: str = "SHARE", status: str = "A") -> None:
        with self._lock:
            self.vendors[(setid, vendor_id)] = {"SETID": setid, "VENDOR_ID": vendor_id, "NAME1": name[:40],
                                                "NAME2": name[40:80], "VENDOR_STATUS": status,
                                                "VENDOR_NAME_SHORT": "", "VENDOR_CLASS": "R",
                                                "VENDOR_PERSISTENCE": "R", "VENDOR_ADDR": [],
                                                "LAST_DTTM_UPDATE": datetime.now(UTC).isoformat(timespec="seconds")}

    def change_vendor(self, vendor_id: str, *, setid: str = "SHARE", address: dict[str, str] | None = None,
                      **fields: str) -> None:
        """A person edits a supplier in PeopleSoft (name, status, the first address)."""
        with self._lock:
            v = self.vendors[(setid, vendor_id)]
            v.update(fields)
            if address is not None:
                rows = v.setdefault("VENDOR_ADDR", [])
                if not rows:
                    rows.append({"ADDRESS_SEQ_NUM": "1"})
                rows[0].update(address)

    def vendors_with_handle(self, handle: str) -> list[dict[str, Any]]:
        with self._lock:
            return [v for v in self.vendors.values() if v.get("VENDOR_NAME_SHORT") == handle]

    def set_po_status(self, key: tuple[str, str], status: str) -> None:
        with self._lock:
            self.pos[key]["PO_STATUS"] = status

    def pos_with_ref(self, ref: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.pos.values() if p.get("PO_REF") == ref]

    def handles(self, request: Request) -> bool:
        if not request.path.startswith(SOAP_PREFIX):
            return False
        if request.method == "GET":
            name = request.path.rsplit("/", 1)[-1]
            return name[3:].removesuffix(".1.wsdl") in SPECS or name.removesuffix(".V1.xsd") in self._ns
        return any(f"__CompIntfc__{ci}".encode() in request.body[:4000] for ci in SPECS)

    # -- documents -------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        parts = [p for p in request.path[len(SOAP_PREFIX):].split("/") if p]
        if not parts or parts[0] != self.node:
            return _ib_error(500, 158, 505, "Integration Gateway: no handler for the inbound request message. "
                                            "(158,505)")
        if request.method == "GET":
            name = parts[-1]
            if name.startswith("CI_") and name.endswith(".1.wsdl") and name[3:-7] in SPECS:
                return text_response(200, self.wsdl(name[3:-7]), "text/xml; charset=UTF-8")
            if name.endswith(".V1.xsd") and name[:-7] in self._ns:
                return text_response(200, self.xsd(name[:-7]), "text/xml; charset=UTF-8")
            return _ib_error(404, 158, 10403, f"Unable to find the WSDL or schema document {name}. (158,10403)")
        return self._soap(request)

    def wsdl(self, ci: str) -> str:
        from mlconnector.sandbox.peoplesoft_soap import ci_wsdl

        return ci_wsdl(ci, dict(METHOD_ELEMENT), self._ns, self.node)

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
        spec, m = SPECS[ci], ELEMENT_METHOD[method]
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
                content = flds(spec.keys, spec.keys) + flds(spec.find_extra)
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
        if ci not in SPECS or m is None:
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
        return handler(ci, values, f"{name}Response")

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

    def _table(self, ci: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.pos if ci == "PO_EXPRESS" else self.vendors

    def _find(self, ci: str, values: dict[str, Any], element: str) -> Response:
        spec = SPECS[ci]
        for k in spec.keys:
            if k not in values:
                return self._cifault(91, 37, f"Missing element {k}: the search key {k} of {ci} is required in a "
                                             f"Find request. (91,37)")
        prefixes = {k: str(values[k]).split("%", 1)[0] for k in spec.keys + spec.find_extra if values.get(k)}
        with self._lock:
            rows = [r for _, r in sorted(self._table(ci).items())
                    if all(str(r.get(k, "")).startswith(p) for k, p in prefixes.items())]
            content = "".join(f"<{ci}>" + "".join(_leaf(k, r.get(k, "")) for k in spec.keys + spec.find_extra)
                              + f"</{ci}>" for r in rows)
        return self._answer(element, content)

    def _get(self, ci: str, values: dict[str, Any], element: str) -> Response:
        key = tuple(str(values.get(k, "")) for k in SPECS[ci].keys)
        with self._lock:
            rec = self._table(ci).get(key)  # type: ignore[arg-type]
            if rec is None:
                return self._cifault(91, 50, f"No rows exist for the specified keys. {{{ci}.GETKEYS}} (91,50)")
            content = _render(SPECS[ci].root, rec)
        return self._answer(element, content)

    # -- validation ------------------------------------------------------------------------------
    def _invalid(self, field_name: str, value: Any) -> Response:
        return self._cifault(15, 11, f"Invalid value -- press the prompt button or hyperlink for a list of valid "
                                     f"values. ({{{field_name}}} value {value!r}) (15,11)")

    def _check_po(self, rec: dict[str, Any]) -> Response | None:
        checks = (("BUSINESS_UNIT", self.business_units), ("BUYER_ID", self.buyers), ("CURRENCY_CD", self.currencies))
        for name, allowed in checks:
            if rec.get(name) not in allowed:
                return self._invalid(name, rec.get(name))
        vendor = self.vendors.get((rec.get("VENDOR_SETID", ""), rec.get("VENDOR_ID", "")))
        if vendor is None or vendor["VENDOR_STATUS"] != "A":
            return self._cifault(15, 11, f"Invalid value -- press the prompt button or hyperlink for a list of valid "
                                         f"values. ({{VENDOR_ID}} value {rec.get('VENDOR_ID')!r}: no approved "
                                         f"supplier in SetID {rec.get('VENDOR_SETID')!r}) (15,11)")
        lines = rec.get("PO_LINE") or []
        if not lines:
            return self._cifault(10200, 66, "A purchase order needs at least one line. (10200,66)")
        for line in lines:
            if line.get("UNIT_OF_MEASURE") not in self.units:
                return self._invalid("UNIT_OF_MEASURE", line.get("UNIT_OF_MEASURE"))
            try:
                qty, price = Decimal(line.get("QTY_PO") or "0"), Decimal(line.get("PRICE_PO") or "0")
            except InvalidOperation:
                return self._invalid("QTY_PO", line.get("QTY_PO"))
            if qty <= 0 or price < 0:
                return self._cifault(10200, 71, f"Quantity must be greater than zero on line {line.get('LINE_NBR')}. "
                                                f"(10200,71)")
            dists = line.get("PO_LINE_DISTRIB") or []
            if not dists:
                return self._cifault(10200, 72, f"Line {line.get('LINE_NBR')} has no distribution. (10200,72)")
            for d in dists:
                if d.get("ACCOUNT") not in self.accounts:
                    return self._invalid("ACCOUNT", d.get("ACCOUNT"))
                if d.get("DEPTID") not in self.deptids:
                    return self._invalid("DEPTID", d.get("DEPTID"))
            if (sum(Decimal(d.get("QTY_PO") or "0") for d in dists) != qty
                    or sum(Decimal(d.get("MERCHANDISE_AMT") or "0") for d in dists) != (qty * price).quantize(
                        Decimal("0.001"))):
                return self._cifault(10200, 73, f"Distributions of line {line.get('LINE_NBR')} do not add up to the "
                                                f"line's quantity and amount. (10200,73)")
        return None

    def _check_vendor(self, rec: dict[str, Any]) -> Response | None:
        if not str(rec.get("NAME1") or "").strip():
            return self._cifault(15, 4, "Required field NAME1 is missing. {VNDR_ID.NAME1} (15,4)")
        rows = [rec, *(rec.get("VENDOR_ADDR") or [])]
        for row in rows:
            for name, limit in VENDOR_LENGTHS.items():
                value = str(row.get(name) or "")
                if len(value) > limit and not (name == "VENDOR_ID" and value == "NEXT"):
                    return self._cifault(15, 5, f"Field {name} is longer than {limit} characters: the value was "
                                                f"not saved. {{VNDR_ID.{name}}} (15,5)")
        for name, allowed in (("VENDOR_STATUS", VENDOR_STATUSES), ("VENDOR_CLASS", VENDOR_CLASSES),
                              ("VENDOR_PERSISTENCE", VENDOR_PERSISTENCES)):
            if rec.get(name) not in allowed:
                return self._invalid(name, rec.get(name))
        return None

    def _create(self, ci: str, values: dict[str, Any], element: str) -> Response:
        spec = SPECS[ci]
        rec = {k: v for k, v in values.items() if k not in spec.read_only}
        with self._lock:
            if ci == "PO_EXPRESS":
                rec.setdefault("PO_STATUS", "I")
                rec.setdefault("PO_DT", date.today().isoformat())
                bad = self._check_po(rec)
                if bad is not None:
                    return bad
            else:
                rec.setdefault("VENDOR_STATUS", "A")
                rec.setdefault("VENDOR_CLASS", "R")
                rec.setdefault("VENDOR_PERSISTENCE", "R")
                if isinstance(rec.get("VENDOR_NAME_SHORT"), str):
                    # VENDOR_NAME_SHORT is an uppercase field: PeopleSoft stores what it is given in capitals.
                    rec["VENDOR_NAME_SHORT"] = rec["VENDOR_NAME_SHORT"].upper()
                bad = self._check_vendor(rec)
                if bad is not None:
                    return bad
            key_name = spec.keys[-1]
            if rec.get(key_name) == "NEXT":
                rec[key_name] = f"{self._next[ci]:010d}"
                self._next[ci] += 1
            key = tuple(str(rec.get(k, "")) for k in spec.keys)
            if not all(key):
                return self._cifault(91, 37, f"Required key {spec.keys} missing for {ci}. (91,37)")
            table = self._table(ci)
            if key in table:
                return self._cifault(18, 2, f"The data being added conflicts with existing data. {{{ci}}} key "
                                            f"{'/'.join(key)} (18,2)")
            rec["LAST_DTTM_UPDATE"] = datetime.now(UTC).isoformat(timespec="seconds")
            table[key] = rec  # type: ignore[index]
        if self.on_commit is not None:
            self.on_commit(f"CI_{ci}_C", key)  # type: ignore[arg-type]
        return self._answer(element, "<notification>1</notification><detail>"
                            + "".join(_leaf(k, v) for k, v in zip(spec.keys, key, strict=True)) + "</detail>")

    def _update(self, ci: str, values: dict[str, Any], element: str) -> Response:
        spec = SPECS[ci]
        key = tuple(str(values.get(k, "")) for k in spec.keys)
        with self._lock:
            table = self._table(ci)
            current = table.get(key)  # type: ignore[arg-type]
            if current is None:
                return self._cifault(91, 50, f"No rows exist for the specified keys. {{{ci}.GETKEYS}} (91,50)")
            if ci == "PO_EXPRESS" and current.get("PO_STATUS") in LOCKED_PO_STATUS:
                return self._cifault(10200, 90, f"Purchase order {'/'.join(key)} has been "
                                                f"{LOCKED_PO_STATUS[current['PO_STATUS']]}; changes need a change "
                                                f"order. (10200,90)")
            merged = _merge(spec.root, current, {k: v for k, v in values.items() if k not in spec.read_only})
            bad = self._check_po(merged) if ci == "PO_EXPRESS" else self._check_vendor(merged)
            if bad is not None:
                return bad
            merged["LAST_DTTM_UPDATE"] = datetime.now(UTC).isoformat(timespec="seconds")
            table[key] = merged  # type: ignore[index]
        if self.on_commit is not None:
            self.on_commit(f"CI_{ci}_UD", key)  # type: ignore[arg-type]
        return self._answer(element, "<notification>1</notification>")


def _merge(level: Level, current: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """UpdateData: given fields replace; collection rows are matched by their first field (the row key),
    changed in place or inserted; rows not given stay as they are (a CI deletes rows only on request)."""
    out = {k: v for k, v in current.items()}
    for f in level.fields:
        if f in given:
            out[f] = given[f]
    for name, child in level.children.items():
        rows = {r.get(child.fields[0]): r for r in current.get(name, [])}
        for row in given.get(name, []):
            k = row.get(child.fields[0])
            rows[k] = _merge(child, rows.get(k, {}), row)
        out[name] = [rows[k] for k in sorted(rows, key=lambda x: int(x) if str(x).isdigit() else 0)]
    return out


def _leaf(name: str, value: Any) -> str:
    if value is None or value == "":
        return f"<{name}/>"
    return f"<{name}>{escape(str(value))}</{name}>"


def _render(level: Level, rec: dict[str, Any]) -> str:
    out = "".join(_leaf(f, rec.get(f, "")) for f in level.fields)
    for name, child in level.children.items():
        out += "".join(f"<{name}>{_render(child, r)}</{name}>" for r in rec.get(name, []))
    return out


class PurchasingGateway:
    """One PeopleSoft web server: the purchasing CIs here, everything else to ``inner`` (QAS + other CIs)."""

    def __init__(self, inner: Callable[[Request], Response], purchasing: PurchasingCI) -> None:
        self.inner = inner
        self.purchasing = purchasing

    def __call__(self, request: Request) -> Response:
        if self.purchasing.handles(request):
            return self.purchasing(request)
        return self.inner(request)
