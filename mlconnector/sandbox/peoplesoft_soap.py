"""Loopback simulator of PeopleSoft Component Interface (CI) web services over SOAP.

It serves the same rows as a ``PeopleSoftSim`` (same object, same seed), so a test can read a
purchase order through QAS and through a CI and compare. Compose it with the QAS simulator on one
server with ``PeopleSoftGateway`` (requests under /PSIGW/PeopleSoftServiceListeningConnector come
here, everything else goes to QAS), as ``start_sandbox`` does.

What it mimics (reference peoplesoft.md §2.2, §4, §7):
- WSDLs at ``/PSIGW/PeopleSoftServiceListeningConnector/{NODE}/CI_<NAME>.1.wsdl``, document/literal,
  one schema namespace per message ``http://xmlns.oracle.com/Enterprise/Tools/schemas/M<digits>.V1``
  with digits drawn from the seed (so they differ between "installs"), each schema imported from its
  own ``.xsd`` URL; CI fields are simpleContent types with an ``IsChanged`` attribute, as PeopleSoft
  generates them; the ``soap:address`` names an internal host the client must override.
- WS-Security UsernameToken (PasswordText) is required; an OAuth2 bearer token accepted by the
  ``PeopleSoftSim`` is accepted too.
- Find (``_F``: partial key values match as prefixes, ``%`` is a wildcard; CIs with
  ``LAST_DTTM_UPDATE_FROM`` / ``LAST_DTTM_UPDATE_TO`` find keys filter on the update time), Get
  (``_G``), Create (``_C``; a key of ``NEXT`` is assigned), UpdateData (``_UD``) and Update (``_UP``,
  only on CIs listed with it).
- Find keys are required elements of the Find request, as in the WSDLs PeopleSoft generates: a Find
  without one of them is refused with a fault naming it. An empty element means "any value", except
  for keys listed in ``nonempty_find_keys`` (their schema type has ``minLength 1``), which need a value
  or a wildcard.
- Every error form: a SOAP fault with ``CIFault``/``IBResponse`` (Get of a missing key (91,50),
  duplicate Create (18,2), invalid value on Create (15,11), missing permission (158,536)), an HTTP
  200 response with ``notification`` 0 (UpdateData with an invalid value), the HTML "Unable to find
  a Routing" page (``deactivate(operation)``), and a wrong node (158,505) as HTTP 500.

CIs (name -> record kind): PO_EXPRESS_CI -> purchase_orders, REQ_CI -> requisitions, VOUCHER_CI ->
vouchers (also ``_UP``), VENDOR_CI -> vendors (no date-range find keys, ``_UP`` but no ``_UD``).
"""

from __future__ import annotations

import math
import random
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from mlconnector.sandbox.peoplesoft_sim import COLUMNS, ID_WIDTH, KEYS, PeopleSoftSim, _no_routing
from mlconnector.sandbox.server import Request, Response, text_response

SOAP_PREFIX = "/PSIGW/PeopleSoftServiceListeningConnector"
SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
SCHEMA_BASE = "http://xmlns.oracle.com/Enterprise/Tools/schemas"
INTERNAL_ADDRESS = "http://ps-internal.invalid:8000/PSIGW/PeopleSoftServiceListeningConnector"

# CI name -> (record kind, methods, has the LAST_DTTM_UPDATE_FROM/_TO find keys)
CIS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "PO_EXPRESS_CI": ("purchase_orders", ("F", "G", "C", "UD"), True),
    "REQ_CI": ("requisitions", ("F", "G", "C", "UD"), True),
    "VOUCHER_CI": ("vouchers", ("F", "G", "C", "UD", "UP"), True),
    "VENDOR_CI": ("vendors", ("F", "G", "C", "UP"), False),
}
METHOD_ELEMENT = {"F": "Find", "G": "Get", "C": "Create", "UD": "Updatedata", "UP": "Update"}
ELEMENT_METHOD = {v: k for k, v in METHOD_ELEMENT.items()}
DATE_COLUMNS = {"PO_DT", "DUE_DT", "REQ_DT", "INVOICE_DT"}
NUMBER_COLUMNS = {"PO_AMT", "AMOUNT", "GROSS_AMT"}
STAMP = "LAST_DTTM_UPDATE"
RANGE = (f"{STAMP}_FROM", f"{STAMP}_TO")
# Translate values the CI's prompt tables would accept; anything else is "Invalid value" (15,11).
ALLOWED = {"PO_STATUS": {"I", "PA", "A", "D", "DA", "C", "X", "O", "LD", "PX"},
           "REQ_STATUS": {"P", "A", "D", "C", "X", "O"}, "APPR_STATUS": {"P", "A", "D"},
           "VENDOR_STATUS": {"A", "D", "E", "I", "X"}}


def _xsd_type(col: str) -> str:
    if col in DATE_COLUMNS:
        return "xsd:date"
    if col in NUMBER_COLUMNS:
        return "xsd:decimal"
    return "xsd:dateTime" if col.endswith(STAMP) or col in RANGE else "xsd:string"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class SoapFault(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body[:80])
        self.status = status
        self.body = body


class PeopleSoftSoap:
    """Callable app: CI-based SOAP services over the data of ``ps``."""

    def __init__(self, ps: PeopleSoftSim, *, seed: int | None = None, node: str | None = None,
                 nonempty_find_keys: dict[str, set[str]] | None = None) -> None:
        self.ps = ps
        self.nonempty_find_keys = {ci: set(keys) for ci, keys in (nonempty_find_keys or {}).items()}
        self.node = node or ps.node
        self.seed = ps.seed if seed is None else seed
        self.calls: Counter[str] = Counter()  # operation name -> calls that reached the CI
        self.fetches: Counter[str] = Counter()  # WSDL / XSD document name -> GETs served
        self.inactive: set[str] = set()
        self.denied: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._ns = self._namespaces()

    # -- install-specific namespaces -------------------------------------------------------------
    def _namespaces(self) -> dict[str, str]:
        """Element name -> its M<digits>.V1 namespace; digits from the seed, unique per install."""
        rng = random.Random(f"ci-namespaces/{self.seed}")
        used: set[int] = set()
        out: dict[str, str] = {}
        names = ["CIFault"]
        for ci, (_, methods, _) in CIS.items():
            for m in methods:
                names += [f"{METHOD_ELEMENT[m]}__CompIntfc__{ci}", f"{METHOD_ELEMENT[m]}__CompIntfc__{ci}Response"]
        for name in names:
            n = rng.randrange(100000, 1000000)
            while n in used:
                n = rng.randrange(100000, 1000000)
            used.add(n)
            out[name] = f"{SCHEMA_BASE}/M{n}.V1"
        return out

    def namespace(self, element: str) -> str:
        return self._ns[element]

    # -- test controls -----------------------------------------------------------------------------
    def deactivate(self, operation: str) -> None:
        """Make a service operation's routing inactive (e.g. ``CI_PO_EXPRESS_CI_UD``)."""
        with self._lock:
            self.inactive.add(operation)

    def activate(self, operation: str) -> None:
        with self._lock:
            self.inactive.discard(operation)

    def deny(self, oprid: str, operation: str) -> None:
        with self._lock:
            self.denied.add((oprid, operation))

    # -- HTTP ------------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        parts = [p for p in request.path[len(SOAP_PREFIX):].split("/") if p]
        if request.method == "GET":
            if len(parts) != 2:
                return text_response(404, "Not Found")
            if parts[0] != self.node:
                return _ib_error(500, 158, 505, "Integration Gateway: no handler for the inbound request message. "
                                                "(158,505)")
            return self._document(parts[1])
        if request.method != "POST":
            return text_response(405, "Method Not Allowed")
        if parts and parts[0] != self.node:
            return _fault(500, _ib_response(158, 505, "Integration Gateway: no handler for the inbound request "
                                                      "message. (158,505)"))
        try:
            return self._soap(request)
        except SoapFault as f:
            return text_response(f.status, f.body, "text/xml; charset=UTF-8")

    # -- documents -------------------------------------------------------------------------------
    def _document(self, name: str) -> Response:
        with self._lock:
            self.fetches[name] += 1
        if name.endswith(".1.wsdl") and name.startswith("CI_") and name[3:-7] in CIS:
            return text_response(200, self.wsdl(name[3:-7]), "text/xml; charset=UTF-8")
        if name.endswith(".V1.xsd") and name[:-7] in self._ns:
            return text_response(200, self.xsd(name[:-7]), "text/xml; charset=UTF-8")
        return _ib_error(404, 158, 10403, f"Unable to find the WSDL or schema document {name}. (158,10403)")

    def wsdl(self, ci: str) -> str:
        _, methods, _ = CIS[ci]
        return ci_wsdl(ci, {m: METHOD_ELEMENT[m] for m in methods}, self._ns, self.node)

    def xsd(self, element: str) -> str:
        ns = self._ns[element]
        body = ""
        types: set[str] = set()
        if element == "CIFault":
            body = ('<xsd:element name="CIFault"><xsd:complexType><xsd:sequence>'
                    '<xsd:element name="IBResponse" type="tns:IBResponseType" maxOccurs="unbounded"/>'
                    '</xsd:sequence></xsd:complexType></xsd:element>')
            return _schema(ns, body + _IB_RESPONSE_TYPE)
        method, _, rest = element.partition("__CompIntfc__")
        response = rest.endswith("Response")
        ci = rest[:-8] if response else rest
        kind = CIS[ci][0]
        keys, cols = KEYS[kind], self.ps.columns(kind)
        m = ELEMENT_METHOD[method]

        nonempty = self.nonempty_find_keys.get(ci, set()) if m == "F" and not response else set()

        def fields(names: tuple[str, ...] | list[str], required: bool = False) -> str:
            types.update(names)
            occurs = "" if required else ' minOccurs="0"'
            return "".join(f'<xsd:element name="{n}" type="tns:{n}{"Key" if n in nonempty else ""}TypeShape"'
                           f'{occurs}/>' for n in names)

        if not response:
            if m == "F":
                content = fields(keys, required=True) + (fields(RANGE) if CIS[ci][2] else "")
            elif m == "G":
                content = fields(keys, required=True)
            else:  # Create / Updatedata / Update: keys plus every writable property
                content = fields(keys, required=True) + fields([c for c in cols if c not in keys and c != STAMP])
        elif m == "F":
            content = (f'<xsd:element name="{ci}" minOccurs="0" maxOccurs="unbounded"><xsd:complexType>'
                       f"<xsd:sequence>{fields(keys)}</xsd:sequence></xsd:complexType></xsd:element>")
        elif m == "G":
            content = fields(cols)
        elif m == "C":
            content = ('<xsd:element name="notification" type="xsd:integer" minOccurs="0"/>'
                       f'<xsd:element name="detail" minOccurs="0"><xsd:complexType><xsd:sequence>{fields(keys)}'
                       "</xsd:sequence></xsd:complexType></xsd:element>")
        else:
            content = ('<xsd:element name="notification" type="xsd:integer"/>'
                       '<xsd:element name="detail" minOccurs="0"><xsd:complexType><xsd:sequence>'
                       '<xsd:element name="IBResponse" type="tns:IBResponseType" minOccurs="0" maxOccurs="unbounded"/>'
                       "</xsd:sequence></xsd:complexType></xsd:element>")
        defs = "".join(
            f'<xsd:simpleType name="{n}TypeDef"><xsd:restriction base="{_xsd_type(n)}"/></xsd:simpleType>'
            f'<xsd:complexType name="{n}TypeShape"><xsd:simpleContent><xsd:extension base="tns:{n}TypeDef">'
            f'<xsd:attribute name="IsChanged" type="xsd:string" use="optional"/></xsd:extension>'
            f"</xsd:simpleContent></xsd:complexType>" for n in sorted(types))
        defs += "".join(
            f'<xsd:simpleType name="{n}KeyTypeDef"><xsd:restriction base="{_xsd_type(n)}"><xsd:minLength value="1"/>'
            f'</xsd:restriction></xsd:simpleType><xsd:complexType name="{n}KeyTypeShape"><xsd:simpleContent>'
            f'<xsd:extension base="tns:{n}KeyTypeDef"><xsd:attribute name="IsChanged" type="xsd:string" '
            f'use="optional"/></xsd:extension></xsd:simpleContent></xsd:complexType>' for n in sorted(nonempty))
        extra = _IB_RESPONSE_TYPE if response and m in ("UD", "UP") else ""
        body = f'<xsd:element name="{element}"><xsd:complexType><xsd:sequence>{content}</xsd:sequence>' \
               f"</xsd:complexType></xsd:element>"
        return _schema(ns, body + defs + extra)

    # -- SOAP calls ------------------------------------------------------------------------------
    def _soap(self, request: Request) -> Response:
        try:
            env = ET.fromstring(request.body)
        except ET.ParseError:
            raise SoapFault(500, _fault_xml("soapenv:Client", "The request is not well-formed XML.")) from None
        header = next((c for c in env if _local(c.tag) == "Header"), None)
        body = next((c for c in env if _local(c.tag) == "Body"), None)
        payload = next(iter(body), None) if body is not None else None
        if payload is None:
            raise SoapFault(500, _fault_xml("soapenv:Client", "The SOAP body is empty."))
        name = _local(payload.tag)
        method, _, ci = name.partition("__CompIntfc__")
        m = ELEMENT_METHOD.get(method)
        if ci not in CIS or m not in CIS[ci][1]:
            return _no_routing_soap()
        op = f"CI_{ci}_{m}"
        oprid = self._authenticate(header, request)
        if oprid is None:
            return _fault(500, _ib_response(158, 10, "Invalid user ID or password for security verification. "
                                                     "(158,10)"))
        expected_ns = self._ns[name]
        if not payload.tag.startswith("{" + expected_ns + "}"):
            raise SoapFault(500, _fault_xml("soapenv:Client", f"Element {name} is not in namespace {expected_ns} "
                                                              f"of this install's schema."))
        with self._lock:
            if op in self.inactive:
                return _no_routing_soap()
            if (oprid, op) in self.denied:
                return _fault(500, _ib_response(158, 536, f"User {oprid} not authorized to invoke Service "
                                                          f"Operation {op}. (158,536)"))
            self.calls[op] += 1
        values = {_local(c.tag): (c.text or "") for c in payload}
        kind = CIS[ci][0]
        handler = {"F": self._find, "G": self._get, "C": self._create, "UD": self._update, "UP": self._update}[m]
        return handler(ci, kind, values, f"{name}Response")

    def _authenticate(self, header: ET.Element | None, request: Request) -> str | None:
        auth = request.header("Authorization") or ""
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "bearer" and cred.strip() in self.ps.bearer_tokens:
            return next(iter(self.ps.users), "ML_CONNECTOR")
        if header is None:
            return None
        for token in header.iter(f"{{{WSSE}}}UsernameToken"):
            user = token.find(f"{{{WSSE}}}Username")
            pw = token.find(f"{{{WSSE}}}Password")
            if user is None or pw is None:
                return None
            if pw.get("Type") not in (None, PASSWORD_TEXT):  # PeopleSoft takes clear text tokens only
                return None
            name = (user.text or "").strip()
            if name in self.ps.users and self.ps.users[name] == (pw.text or ""):
                return name
        return None

    def _response(self, element: str, content: str) -> Response:
        ns = self._ns[element]
        return text_response(200, f'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="{SOAPENV}"><soapenv:Body>'
                                  f'<{element} xmlns="{ns}">{content}</{element}></soapenv:Body></soapenv:Envelope>',
                             "text/xml; charset=UTF-8")

    def _find(self, ci: str, kind: str, values: dict[str, str], element: str) -> Response:
        keys = KEYS[kind]
        fault_ns = self._ns["CIFault"]
        for k in keys:
            # Find keys are required elements of the request schema; some also need a value.
            if k not in values:
                return _fault(500, _ci_fault(fault_ns, 91, 37, f"Missing element {k}: the search key {k} of {ci} "
                                                               f"is required in a Find request. (91,37)"))
            if k in self.nonempty_find_keys.get(ci, set()) and not values[k].strip():
                return _fault(500, _ci_fault(fault_ns, 91, 37, f"A value is required for search key {k} of {ci} "
                                                               f"(a value, a prefix or %). (91,37)"))
        table = self.ps._tables[kind]
        lo_text, hi_text = values.get(RANGE[0]), values.get(RANGE[1])
        with self.ps._lock:
            if lo_text or hi_text:
                lo = self._epoch(lo_text) if lo_text else 0
                # Stored stamps are whole seconds: round the upper bound up, or a row changed earlier in
                # the same second as the bound would fall outside the window.
                hi = self._epoch(hi_text, ceil=True) if hi_text else 2**40
                found = [table.keys[rid] for rid in table.window(lo, hi)]
            else:
                found = [table.keys[e[2]] for e in table.index]
        prefixes = {k: values[k].split("%", 1)[0] for k in keys if values.get(k)}
        rows = [key for key in found
                if all(str(v).startswith(prefixes[k]) for k, v in zip(keys, key, strict=True) if k in prefixes)]
        content = "".join(f"<{ci}>" + "".join(_field(k, v) for k, v in zip(keys, key, strict=True)) + f"</{ci}>"
                          for key in rows)
        return self._response(element, content)

    def _get(self, ci: str, kind: str, values: dict[str, str], element: str) -> Response:
        key = tuple(values.get(k, "") for k in KEYS[kind])
        try:
            row = self.ps.get(kind, key)
        except KeyError:
            return _fault(500, _ci_fault(self._ns["CIFault"], 91, 50,
                                         f"No rows exist for the specified keys. {{{ci}.GETKEYS}} (91,50)"))
        content = "".join(_field(c, self._wire(c, row.get(c))) for c in self.ps.columns(kind))
        return self._response(element, content)

    def _epoch(self, text: str, *, ceil: bool = False) -> int:
        d = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        ts = (d if d.tzinfo else d.replace(tzinfo=self.ps.tz)).timestamp()
        return math.ceil(ts) if ceil else int(ts)

    def _wire(self, col: str, value: Any) -> Any:
        if col == STAMP and isinstance(value, str) and len(value) == 24:
            # QAS prints -0600; xsd:dateTime needs -06:00.
            return value[:-2] + ":" + value[-2:]
        return value

    def _invalid(self, values: dict[str, str]) -> str | None:
        for col, allowed in ALLOWED.items():
            if col in values and values[col] not in allowed:
                return f"Invalid value -- press the prompt button or hyperlink for a list of valid values. " \
                       f"({{{col}}} value {values[col]!r}) (15,11)"
        return None

    def _create(self, ci: str, kind: str, values: dict[str, str], element: str) -> Response:
        keys = KEYS[kind]
        fault_ns = self._ns["CIFault"]
        bad = self._invalid(values)
        if bad:
            return _fault(500, _ci_fault(fault_ns, 15, 11, bad))
        row = {c: _typed(c, values[c]) for c in values if c in COLUMNS[kind] and c != STAMP}
        with self.ps._lock:
            table = self.ps._tables[kind]
            for k in keys:
                if row.get(k) == "NEXT":  # PeopleSoft assigns the next number on save
                    row[k] = f"{table.next_seq + 90000:0{ID_WIDTH[kind]}d}"
                    table.next_seq += 1
            key = tuple(row.get(k, "") for k in keys)
            if not all(key):
                return _fault(500, _ci_fault(fault_ns, 91, 37, f"Required key {keys} missing for {ci}. (91,37)"))
            if key in table.by_key:
                return _fault(500, _ci_fault(fault_ns, 18, 2, f"The data being added conflicts with existing data. "
                                                              f"{{{ci}}} key {'/'.join(key)} (18,2)"))
            self.ps.add(kind, row)
        detail = "".join(_field(k, v) for k, v in zip(keys, key, strict=True))
        return self._response(element, f"<notification>1</notification><detail>{detail}</detail>")

    def _update(self, ci: str, kind: str, values: dict[str, str], element: str) -> Response:
        keys = KEYS[kind]
        key = tuple(values.get(k, "") for k in keys)
        try:
            self.ps.get(kind, key)
        except KeyError:
            return _fault(500, _ci_fault(self._ns["CIFault"], 91, 50,
                                         f"No rows exist for the specified keys. {{{ci}.GETKEYS}} (91,50)"))
        bad = self._invalid(values)
        if bad:
            # The save failed inside the CI: PeopleSoft answers HTTP 200 with notification 0.
            return self._response(element, "<notification>0</notification><detail>"
                                  + _ib_response(15, 11, bad) + "</detail>")
        changes = {c: _typed(c, v) for c, v in values.items() if c in COLUMNS[kind] and c not in keys and c != STAMP}
        self.ps.touch(kind, key, **changes)
        return self._response(element, "<notification>1</notification>")

    def handles(self, path: str) -> bool:
        return path.startswith(SOAP_PREFIX)


def _typed(col: str, text: str) -> Any:
    if col in NUMBER_COLUMNS and text:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _field(name: str, value: Any) -> str:
    if value is None or value == "":
        return f"<{name}/>"
    if isinstance(value, date):
        value = value.isoformat()
    return f"<{name}>{escape(str(value))}</{name}>"


def _schema(ns: str, content: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            f'xmlns:tns="{ns}" targetNamespace="{ns}" elementFormDefault="qualified">{content}</xsd:schema>')


_IB_RESPONSE_TYPE = (
    '<xsd:complexType name="IBResponseType"><xsd:sequence>'
    + "".join(f'<xsd:element name="{n}" type="xsd:string" minOccurs="0"/>'
              for n in ("DefaultTitle", "StatusCode", "MessageSetID", "MessageID", "DefaultMessage",
                        "MessageParameters"))
    + '</xsd:sequence><xsd:attribute name="type" type="xsd:string"/></xsd:complexType>')


def _ib_response(set_id: int, msg_id: int, message: str) -> str:
    return ('<IBResponse type="error"><DefaultTitle>Integration Broker Response</DefaultTitle>'
            f"<StatusCode>20</StatusCode><MessageSetID>{set_id}</MessageSetID><MessageID>{msg_id}</MessageID>"
            f"<DefaultMessage>{escape(message)}</DefaultMessage></IBResponse>")


def _ci_fault(ns: str, set_id: int, msg_id: int, message: str) -> str:
    return f"<CIFault xmlns={quoteattr(ns)}>{_ib_response(set_id, msg_id, message)}</CIFault>"


def _fault_xml(code: str, detail: str, faultstring: str = "null") -> str:
    # PeopleSoft puts "null" in faultstring; the text a human needs is in detail.
    return (f'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="{SOAPENV}"><soapenv:Body><soapenv:Fault>'
            f"<faultcode>{code}</faultcode><faultstring>{escape(faultstring)}</faultstring>"
            f"<detail>{detail}</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>")


def _fault(status: int, detail: str) -> Response:
    return text_response(status, _fault_xml("soapenv:Server", detail), "text/xml; charset=UTF-8")


def _ib_error(status: int, set_id: int, msg_id: int, message: str) -> Response:
    return text_response(status, _ib_response(set_id, msg_id, message), "text/xml; charset=UTF-8")


def _no_routing_soap() -> Response:
    resp = _no_routing()
    resp.body = resp.body.replace(b"RESTListeningConnector", b"PeopleSoftServiceListeningConnector")
    return resp


class PeopleSoftGateway:
    """One PeopleSoft web server: SOAP requests to ``soap``, everything else (QAS REST) to ``rest``."""

    def __init__(self, rest: PeopleSoftSim, soap: PeopleSoftSoap) -> None:
        self.rest = rest
        self.soap = soap

    def __call__(self, request: Request) -> Response:
        if self.soap.handles(request.path):
            return self.soap(request)
        return self.rest(request)


def ci_wsdl(ci: str, methods: dict[str, str], ns: dict[str, str], node: str) -> str:
    """The WSDL of the CI-based service ``CI_<ci>`` as PeopleSoft generates it: one operation per method
    (code -> element name, e.g. "F" -> "Find"), document/literal, schemas imported per element from ``ns``."""
    svc = f"CI_{ci}"
    tns = f"http://xmlns.oracle.com/Enterprise/FSCM/services/{svc}.1"
    elements = ["CIFault"] + [f"{m}__CompIntfc__{ci}{suffix}" for m in methods.values() for suffix in ("", "Response")]
    prefixes = {el: f"m{i}" for i, el in enumerate(elements)}
    xmlns = "".join(f' xmlns:{p}="{ns[el]}"' for el, p in prefixes.items())
    imports = "".join(f'<xsd:import namespace="{ns[el]}" schemaLocation="{el}.V1.xsd"/>' for el in elements)
    messages = "".join(f'<wsdl:message name="{el}"><wsdl:part name="parameter" element="{prefixes[el]}:{el}"/>'
                       f"</wsdl:message>" for el in elements)
    port_ops = binding_ops = ""
    for code, m in methods.items():
        op, el = f"{svc}_{code}", f"{m}__CompIntfc__{ci}"
        port_ops += (f'<wsdl:operation name="{op}"><wsdl:input name="{el}" message="tns:{el}"/>'
                     f'<wsdl:output name="{el}Response" message="tns:{el}Response"/>'
                     f'<wsdl:fault name="CIFault" message="tns:CIFault"/></wsdl:operation>')
        binding_ops += (f'<wsdl:operation name="{op}"><soap:operation soapAction="{op}.V1" style="document"/>'
                        f'<wsdl:input name="{el}"><soap:body use="literal"/></wsdl:input>'
                        f'<wsdl:output name="{el}Response"><soap:body use="literal"/></wsdl:output>'
                        f'<wsdl:fault name="CIFault"><soap:fault name="CIFault" use="literal"/></wsdl:fault>'
                        f"</wsdl:operation>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<wsdl:definitions name="{svc}.1" targetNamespace="{tns}" xmlns:tns="{tns}"'
            f' xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"'
            f' xmlns:xsd="http://www.w3.org/2001/XMLSchema"{xmlns}>'
            f'<wsdl:documentation>Sandbox CI-based service {svc}</wsdl:documentation>'
            f"<wsdl:types><xsd:schema elementFormDefault=\"qualified\">{imports}</xsd:schema></wsdl:types>"
            f"{messages}<wsdl:portType name=\"{svc}_PortType\">{port_ops}</wsdl:portType>"
            f'<wsdl:binding name="{svc}_Binding" type="tns:{svc}_PortType">'
            f'<soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>{binding_ops}'
            f'</wsdl:binding><wsdl:service name="{svc}"><wsdl:port name="{svc}_Port" binding="tns:{svc}_Binding">'
            f'<soap:address location="{INTERNAL_ADDRESS}/{node}"/></wsdl:port></wsdl:service>'
            f"</wsdl:definitions>")
