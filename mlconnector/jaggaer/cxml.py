"""cXML receiver: where a customer's JAGGAER pushes ``OrderRequest`` / ``InvoiceDetailRequest`` documents instead
of exposing its REST lists, this accepts them and spools them for the next `sync peoplesoft-jaggaer` pass.

The design is the Jira webhook receiver's (webhook.py): the receiver faces the network, so it reads only a
bounded body with a plain Content-Length, checks the sender's credential before anything is kept, appends the
document to a spool file next to the state file (``<state>.cxml.jsonl``, fsync'ed, under its own small lock)
and answers at once; the pass moves the spooled documents into the state and posts them through the same PO and
voucher flows as REST documents (the same lookups before every create, so a duplicate delivery changes nothing).

The body is untrusted XML: it is parsed with defusedxml, which refuses entity declarations (the "billion
laughs" expansion bomb, external entities reading local files or URLs) before expanding anything. A plain
``<!DOCTYPE cXML SYSTEM "...cXML.dtd">`` line, which every cXML document carries, is accepted and never fetched.

Answers are cXML ``Response/Status`` documents with the codes of the cXML convention (the HTTP status equals the
cXML code): 200 accepted (also for a payloadID already accepted), 401 a missing or wrong shared secret, 400 not
well-formed XML or not cXML, 406 a cXML request this receiver does not take or one lacking what the pass needs,
413 too large, 500 the document could not be spooled (the sender retries).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from mlconnector.state import iso, utcnow
from mlconnector.webhook import _LENGTH, IDLE_TIMEOUT, MAX_CONNECTIONS, WebhookServer, append_event

log = logging.getLogger("mlconnector.jaggaer.cxml")

SECRET = "jaggaer.cxml_shared_secret"
MAX_BODY = 5_000_000  # a large PO with hundreds of lines is well under this
MAX_REMEMBERED = 100_000
PO_DOC = "OrderRequest"
INVOICE_DOC = "InvoiceDetailRequest"


def spool_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".cxml.jsonl")


class CXMLRefused(Exception):
    """A document refused with a cXML status ``code`` and a short ``text`` for the sender."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


# -- parsing (untrusted) ------------------------------------------------------------------------------
def parse(body: bytes) -> Any:
    """The root element of ``body``; CXMLRefused(400) when it is not well-formed, declares entities (never
    expanded) or is not a cXML document."""
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    try:
        root = DET.fromstring(body, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CXMLRefused(400, f"Refused: the document declares entities or external references "
                               f"({exc.__class__.__name__}); they are not expanded.") from None
    except Exception as exc:  # ParseError (and its expat relatives): not well-formed
        raise CXMLRefused(400, f"Not well-formed XML ({str(exc)[:120]}).") from None
    if root.tag != "cXML":
        raise CXMLRefused(400, f"Not a cXML document (root element {root.tag[:40]!r}).")
    return root


def _text(el: Any) -> str:
    return "" if el is None else "".join(el.itertext()).strip()


def shared_secret(root: Any) -> str:
    return _text(root.find("Header/Sender/Credential/SharedSecret"))


def check_secret(root: Any, secret: str) -> None:
    given = shared_secret(root)
    if not secret:
        raise CXMLRefused(401, "No shared secret is configured on the receiver.")
    # Constant-time: a timing difference must not reveal how much of the secret matched.
    if not given or not hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8")):
        raise CXMLRefused(401, "Unauthorized: the Sender credential's SharedSecret does not match.")


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    doc[parts[-1]] = value


def _money(el: Any) -> tuple[str, str]:
    m = el.find("Money") if el is not None else None
    return (_text(m), (m.get("currency") or "") if m is not None else "")


def _extrinsic(el: Any, name: str) -> str:
    for x in el.findall("Extrinsic") if el is not None else []:
        if (x.get("name") or "").lower() == name.lower():
            return _text(x)
    return ""


def order_to_po(root: Any, s: Any) -> dict[str, Any]:
    """An ``OrderRequest`` -> a purchase order in the shape the pair's PO flow reads (``s.po_source`` paths)."""
    req = root.find("Request/OrderRequest")
    head = req.find("OrderRequestHeader") if req is not None else None
    if head is None or not head.get("orderID"):
        raise CXMLRefused(406, "OrderRequest without OrderRequestHeader/@orderID.")
    src = s.po_source
    _, currency = _money(head.find("Total"))
    kind = (head.get("type") or "new").lower()
    po: dict[str, Any] = {}
    _put(po, src.number, head.get("orderID"))
    _put(po, src.revision, int(head.get("orderVersion") or 0) if (head.get("orderVersion") or "0").isdigit() else 0)
    # new/update: approved in JAGGAER (it sends only released orders); delete is not a status the flow posts.
    _put(po, src.status, s.po_statuses[0] if kind in ("new", "update") and s.po_statuses else f"cXML {kind}")
    _put(po, src.business_unit, _extrinsic(head, s.cxml_business_unit_extrinsic))
    _put(po, src.currency, currency)
    supplier = _text(root.find("Header/To/Credential/Identity"))
    _put(po, src.supplier_id, supplier)
    _put(po, src.supplier_key, _extrinsic(head, s.cxml_supplier_key_extrinsic))
    _put(po, src.supplier_name, "")
    _put(po, src.modified, root.get("timestamp") or head.get("orderDate") or "")
    lines = []
    for item in req.findall("ItemOut"):
        detail = item.find("ItemDetail")
        price, _ = _money(detail.find("UnitPrice") if detail is not None else None)
        segs = item.findall("Distribution/Accounting/AccountingSegment")
        want = s.cxml_account_segment.lower()
        seg = next((g for g in segs if want and _text(g.find("Name")).lower() == want), segs[0] if segs and not want
                   else None)
        ln: dict[str, Any] = {}
        _put(ln, src.line_number, item.get("lineNumber") or "")
        _put(ln, src.description, _text(detail.find("Description")) if detail is not None else "")
        _put(ln, src.quantity, item.get("quantity") or "")
        _put(ln, src.price, price)
        _put(ln, src.unit, _text(detail.find("UnitOfMeasure")) if detail is not None else "")
        _put(ln, src.account_code, (seg.get("id") or "") if seg is not None else "")
        lines.append(ln)
    _put(po, src.lines, lines)
    return po


def invoice_to_doc(root: Any, s: Any) -> dict[str, Any]:
    """An ``InvoiceDetailRequest`` -> an invoice in the shape the pair's invoice flow reads."""
    req = root.find("Request/InvoiceDetailRequest")
    head = req.find("InvoiceDetailRequestHeader") if req is not None else None
    if head is None or not head.get("invoiceID"):
        raise CXMLRefused(406, "InvoiceDetailRequest without InvoiceDetailRequestHeader/@invoiceID.")
    src = s.invoice_source
    order = req.find("InvoiceDetailOrder")
    ref = order.find("InvoiceDetailOrderInfo/OrderReference") if order is not None else None
    gross, currency = _money(req.find("InvoiceDetailSummary/GrossAmount"))
    if not gross:
        gross, currency = _money(req.find("InvoiceDetailSummary/DueAmount"))
    purpose = (head.get("purpose") or "standard").lower()
    operation = (head.get("operation") or "new").lower()
    inv: dict[str, Any] = {}
    number = head.get("invoiceID") or ""
    sender = _text(root.find("Header/From/Credential/Identity"))
    _put(inv, src.id, f"cxml-{sender}-{number}")  # a supplier's invoice number is unique per supplier only
    _put(inv, src.supplier_invoice_number, number)
    _put(inv, src.invoice_type, s.invoice_types[0] if purpose == "standard" and s.invoice_types else purpose)
    _put(inv, src.invoice_date, head.get("invoiceDate") or "")
    _put(inv, src.po_number, (ref.get("orderID") or "") if ref is not None else "")
    _put(inv, src.supplier_id, sender)
    _put(inv, src.total, gross)
    _put(inv, src.currency, currency)
    _put(inv, src.status, s.invoice_statuses[0] if operation == "new" and s.invoice_statuses else
         f"cXML {operation}")
    _put(inv, src.modified, root.get("timestamp") or head.get("invoiceDate") or "")
    lines = []
    for item in order.findall("InvoiceDetailItem") if order is not None else []:
        price, _ = _money(item.find("UnitPrice"))
        amount, _ = _money(item.find("SubtotalAmount"))
        iref = item.find("InvoiceDetailItemReference")
        ln: dict[str, Any] = {}
        _put(ln, src.line_number, item.get("invoiceLineNumber") or "")
        _put(ln, src.po_line_number, (iref.get("lineNumber") or "") if iref is not None else "")
        _put(ln, src.description, _text(iref.find("Description")) if iref is not None else "")
        _put(ln, src.quantity, item.get("quantity") or "")
        _put(ln, src.price, price)
        _put(ln, src.amount, amount)
        lines.append(ln)
    _put(inv, src.lines, lines)
    return inv


def document(root: Any, s: Any) -> dict[str, Any]:
    """The spool record of an accepted document: {"kind", "payload_id", "doc", "received"}."""
    if root.find("Request/" + PO_DOC) is not None:
        kind, doc = "purchase_orders", order_to_po(root, s)
    elif root.find("Request/" + INVOICE_DOC) is not None:
        kind, doc = "invoices", invoice_to_doc(root, s)
    else:
        req = root.find("Request")
        name = req[0].tag if req is not None and len(req) else "(none)"
        raise CXMLRefused(406, f"This receiver takes OrderRequest and InvoiceDetailRequest, not {name[:40]}.")
    transport = s.po_transport if kind == "purchase_orders" else s.invoice_transport
    if transport != "cxml":
        # Spooled, it would never be read: the pass reads this kind through REST.
        raise CXMLRefused(406, f"This connector reads {kind.replace('_', ' ')} through the REST API, not cXML "
                               f"(po_transport / invoice_transport in [peoplesoft_jaggaer]).")
    return {"kind": kind, "payload_id": root.get("payloadID") or "", "doc": doc, "received": iso(utcnow())}


def response(code: int, text: str) -> bytes:
    """A cXML Response document with Status ``code``."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    pid = f"{now}.{hashlib.sha256(f'{now}{code}{text}'.encode()).hexdigest()[:12]}@ml-connector"
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/1.2.045/cXML.dtd">\n'
            f'<cXML payloadID={quoteattr(pid)} timestamp={quoteattr(now)}><Response>'
            f'<Status code="{code}" text={quoteattr(_STATUS_TEXT.get(code, "Error"))}>{escape(text)}</Status>'
            f'</Response></cXML>\n').encode()


_STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 406: "Not Acceptable",
                413: "Request Entity Too Large", 500: "Internal Server Error"}


class Seen:
    """payloadIDs accepted (bounded, in memory): a repeated delivery is answered 200 without a second spool line.
    Only an optimisation: the pass's own lookups make a repeated document change nothing."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def admit(self, key: str) -> bool:
        with self._lock:
            if key in self._ids:
                return False
            self._ids[key] = None
            while len(self._ids) > self.limit:
                self._ids.popitem(last=False)
            return True

    def forget(self, key: str) -> None:
        with self._lock:
            self._ids.pop(key, None)


def make_server(secret: str, spool: Path, settings: Any, host: str = "127.0.0.1", port: int = 0,
                path: str = "/jaggaer/cxml", *, idle_timeout: float = IDLE_TIMEOUT,
                max_connections: int = MAX_CONNECTIONS, seen: Seen | None = None) -> WebhookServer:
    """The receiver (a WebhookServer: bounded connections, one log line per failure, never a traceback)."""
    accepted = seen or Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = idle_timeout

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - our own log lines instead
            return

        def _answer(self, code: int, text: str) -> None:
            body = response(code, text)
            self.send_response(code)
            self.send_header("Content-Type", "text/xml; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _refuse(self, code: int, text: str) -> None:
            log.warning("refused cXML from %s: %s %s", self.client_address[0], code, text)
            self._answer(code, text)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            if self.path.split("?", 1)[0] != path:
                self.close_connection = True
                self._answer(404, "Not found.")
                return
            values = self.headers.get_all("Content-Length") or []
            if self.headers.get("Transfer-Encoding") or len(values) != 1 or not _LENGTH.fullmatch(values[0].strip()):
                self.close_connection = True  # the unread body must not be taken for the next request
                self._refuse(400, "A plain Content-Length is required.")
                return
            length = int(values[0])
            if length > MAX_BODY:
                self.close_connection = True
                self._refuse(413, f"The document is larger than {MAX_BODY} bytes.")
                return
            try:
                body = self.rfile.read(length)
            except OSError:
                self.close_connection = True
                return
            if len(body) < length:
                self.close_connection = True
                return
            try:
                root = parse(body)
                check_secret(root, secret)  # before anything of the document is kept
                record = document(root, settings)
            except CXMLRefused as exc:
                self._refuse(exc.code, exc.text)
                return
            key = record["payload_id"] or "sha256:" + hashlib.sha256(body).hexdigest()
            if not accepted.admit(key):
                log.info("cXML payload %s was already accepted", key)
                self._answer(200, "Already accepted.")
                return
            try:
                append_event(spool, record)
            except Exception as exc:
                accepted.forget(key)  # not stored: the sender's retry must be accepted
                log.error("cXML payload %s could not be spooled: %s", key, exc.__class__.__name__)
                self._answer(500, "The document could not be stored; send it again.")
                return
            log.info("spooled cXML %s %s", record["kind"], key)
            self._answer(200, "OK")

        def do_GET(self) -> None:  # noqa: N802
            self.close_connection = True
            self._answer(400, "POST a cXML document.")

    return WebhookServer((host, port), Handler, max_connections)


def serve(cfg: Any, *, host: str, port: int, path: str, echo: Callable[[str], None]) -> None:
    """`mlconnector jaggaer-cxml serve`: run the receiver until Ctrl-C."""
    from mlconnector.credentials import SecretStore
    from mlconnector.errors import ConfigError

    # The pair's section is read from the configuration (the pair imports this module, not the reverse).
    s = cfg.sections.get("peoplesoft_jaggaer")
    if s is None:
        raise ConfigError(f"{cfg.path} has no [peoplesoft_jaggaer] section; the cXML receiver maps documents with "
                          f"it. Copy it from examples/peoplesoft-jaggaer.toml and set po_transport / "
                          f"invoice_transport = \"cxml\".")
    secret = SecretStore(cfg.instance).get(SECRET)
    spool = spool_path(cfg.state_file)
    try:
        server = make_server(secret, spool, s, host, port, path)
    except (OSError, OverflowError) as exc:
        raise ConfigError(f"Cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}). Choose a free "
                          f"port with --port (1-65535; below 1024 needs privileges) or another address with "
                          f"--host.") from None
    echo(f"Listening for JAGGAER cXML on http://{host}:{server.server_address[1]}{path} (documents spooled in "
         f"{spool}). Put a TLS reverse proxy in front of it. Ctrl-C stops.")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        echo("Stopped.")
    finally:
        server.server_close()
