"""Loopback simulator of the JAGGAER REST APIs the peoplesoft-jaggaer pair uses, as strict as reference
jaggaer.md (and stricter where it is unverified, so the client cannot lean on luck).

- Tokens, both documented formats, form-encoded client credentials only (a JSON body is refused):
  ``POST /auth/realms/J1p-integrations/protocol/openid-connect/token`` answers Keycloak JSON
  (``access_token``, ``expires_in`` SECONDS, ``refresh_expires_in``, ``token_type``, ``not-before-policy``,
  ``scope``); ``POST /esop/jint/api/public/v1/tokens`` answers the legacy gateway's ``token``, ``expire_on``,
  ``expire_in`` (MILLISECONDS). Tokens expire (``expires_in``, on the injectable ``clock``);
  ``token_uses`` lets each token serve only that many API calls (a token that lapses mid-pass), and
  ``revoke_tokens()`` ends them all. A refused token gets HTTP 401 with a plain-text body, a
  ``Content-Type: ; charset=UTF-8`` header without media type and no ``WWW-Authenticate`` (reference §4).
- Lists: ``start`` (1-based) and a server-chosen page size (``page_size``); answers carry ``returnCode``,
  ``returnMessage``, ``totRecords``, ``returnedRecords``, ``startAt`` and the list under its envelope key.
  ``flt`` is FIQL (``==``, ``>=``, ``<=``, ``=in=(a,b)``, ``;`` = AND) over each object's own fields; an
  unknown field or a badly formatted time is an error INSIDE HTTP 200 (``returnCode`` != 0).
- Company profiles (``ja/v1/companyprofiles``): ``LASTMODTIME`` as ``YYYYMMDDHHMMSS``; POST
  ``{"operationCode": "CREATE"|"UPDATE", "company": {"companyInfo": {...}}}``; a CREATE whose ``extCode`` is
  already used is refused (returnCode), an UPDATE needs the ``bravoId``.
- Requisitions (POST, GET by ``externalRequisitionNumber``: NOT unique, as nothing says JAGGAER enforces it),
  purchase orders with revisions and invoices (``lastUpdate`` ISO 8601 Z).
- ``fail_next(method, path_part, ...)``: the next matching request gets HTTP 200 with ``returnCode`` != 0 and
  takes no effect. 429 and 5xx come from the server's fault plan (sandbox/server.py).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from mlconnector.sandbox.server import Request, Response, json_response

CLIENT_ID = "sandbox-jaggaer-client"
CLIENT_SECRET = "sandbox-jaggaer-secret"
KEYCLOAK_TOKEN = "/auth/realms/J1p-integrations/protocol/openid-connect/token"
LEGACY_TOKEN = "/esop/jint/api/public/v1/tokens"
SUPPLIERS = "/j1p/api/public/ja/v1/companyprofiles"
REQUISITIONS = "/j1p/api/public/jp/v1/requisitions"
PURCHASE_ORDERS = "/j1p/api/public/jp/v1/purchaseorders"
INVOICES = "/j1p/api/public/ji/v1/invoices"
ISO = "%Y-%m-%dT%H:%M:%SZ"
COMPACT = "%Y%m%d%H%M%S"
CLAUSE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)(==|>=|<=|=in=)(.*)$")


class JaggaerSim:
    """Callable app. Test controls: ``add_supplier``, ``change_supplier``, ``add_po``, ``revise_po``,
    ``add_invoice``, ``fail_next``, ``revoke_tokens``; counters ``token_requests``, ``calls`` and ``writes``."""

    def __init__(self, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET, expires_in: int = 300,
                 page_size: int = 2, clock: Callable[[], float] = time.time) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.page_size = page_size
        # How list counts are written: "int" (the samples), "str" (numbers in quotes, as some gateways send
        # them) or "garbage" (an unreadable count): the client must page the first and refuse the last.
        self.count_style = "int"
        self.clock = clock
        self.token_uses: int | None = None
        self.tokens: dict[str, list[float]] = {}  # token -> [expiry, uses left (or -1)]
        self.token_requests = 0
        self.calls: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        self.suppliers: dict[str, dict[str, Any]] = {}
        self.requisitions: dict[int, dict[str, Any]] = {}
        self.pos: dict[str, dict[str, Any]] = {}
        self.invoices: dict[int, dict[str, Any]] = {}
        self.failures: list[dict[str, Any]] = []
        self._bravo = itertools.count(7001)
        self._req = itertools.count(1)
        self._inv = itertools.count(90001)
        self._tick = 0.0
        self._lock = threading.RLock()

    # -- time ------------------------------------------------------------------------------------
    def _now(self) -> datetime:
        # Every change gets a later stamp than the one before, even within one clock second.
        with self._lock:
            t = max(self.clock(), self._tick + 1.0)
            self._tick = t
        return datetime.fromtimestamp(int(t), UTC)

    # -- test controls ---------------------------------------------------------------------------
    def add_supplier(self, name: str, *, ext_code: str = "", city: str = "Austin", country: str = "US",
                     status: str = "ACTIVE") -> dict[str, Any]:
        with self._lock:
            bid = str(next(self._bravo))
            s = {"bravoId": bid, "extCode": ext_code, "companyName": name, "fiscalCode": "", "city": city,
                 "isoCountry": country, "status": status, "type": "SELLER",
                 "lastModTime": self._now().strftime(COMPACT)}
            self.suppliers[bid] = s
            return dict(s)

    def change_supplier(self, bravo_id: str, **changes: Any) -> None:
        with self._lock:
            self.suppliers[bravo_id].update(changes, lastModTime=self._now().strftime(COMPACT))

    def add_po(self, po_number: str, supplier_id: str, lines: list[dict[str, Any]], *, business_unit: str = "BU01",
               currency: str = "USD", status: str = "Approved") -> dict[str, Any]:
        """A PO; each line: description, quantity, unitPrice, unitOfMeasure, accountCode."""
        with self._lock:
            sup = self.suppliers[supplier_id]
            po = {"header": {"poNumber": po_number, "poId": len(self.pos) + 1, "revision": 0, "status": status,
                             "businessUnit": business_unit, "currency": currency,
                             "supplier": {"id": sup["bravoId"], "name": sup["companyName"],
                                          "supplierNumber": sup["extCode"]},
                             "lastUpdate": self._now().strftime(ISO)},
                  "lines": [self._line(n, ln) for n, ln in enumerate(lines, 1)]}
            self.pos[po_number] = po
            return po

    @staticmethod
    def _line(n: int, ln: dict[str, Any]) -> dict[str, Any]:
        return {"lineNumber": n, "description": ln.get("description", f"Line {n}"),
                "quantity": float(Decimal(str(ln.get("quantity", 1)))),
                "unitPrice": {"currency": ln.get("currency", "USD"), "money": float(Decimal(str(ln["unitPrice"])))},
                "unitOfMeasure": ln.get("unitOfMeasure", "EA"), "accountCode": ln.get("accountCode", "6100")}

    def revise_po(self, po_number: str, *, lines: list[dict[str, Any]] | None = None, **header: Any) -> None:
        """A revision: the same poNumber, ``revision`` + 1, a later ``lastUpdate``."""
        with self._lock:
            po = self.pos[po_number]
            if lines is not None:
                po["lines"] = [self._line(n, ln) for n, ln in enumerate(lines, 1)]
            po["header"].update(header)
            po["header"]["revision"] += 1
            po["header"]["lastUpdate"] = self._now().strftime(ISO)

    def add_invoice(self, po_number: str, supplier_invoice_number: str, *, lines: list[dict[str, Any]] | None = None,
                    invoice_date: str = "2026-11-30") -> dict[str, Any]:
        """An invoice against a PO (lines default to the PO's lines, in full)."""
        with self._lock:
            po = self.pos[po_number]
            inv_id = next(self._inv)
            src = lines if lines is not None else [
                {"quantity": ln["quantity"], "unitPrice": ln["unitPrice"]["money"], "poLineNumber": ln["lineNumber"],
                 "description": ln["description"]} for ln in po["lines"]]
            out_lines = []
            total = Decimal(0)
            for n, ln in enumerate(src, 1):
                amount = Decimal(str(ln["quantity"])) * Decimal(str(ln["unitPrice"]))
                total += amount
                out_lines.append({"lineNumber": n, "poLineNumber": ln.get("poLineNumber", n),
                                  "description": ln.get("description", ""), "quantity": float(ln["quantity"]),
                                  "unitPrice": {"currency": po["header"]["currency"],
                                                "money": float(Decimal(str(ln["unitPrice"])))},
                                  "extendedPrice": {"currency": po["header"]["currency"], "money": float(amount)}})
            sup = po["header"]["supplier"]
            inv = {"header": {"invoiceId": inv_id, "invoiceNumber": f"JI-{inv_id}",
                              "supplierInvoiceNumber": supplier_invoice_number, "invoiceType": "Invoice",
                              "invoiceLineType": "PO", "invoiceSource": "Supplier Portal",
                              "invoiceDate": f"{invoice_date}T00:00:00Z", "workflowStatus": "Approved",
                              "businessUnit": po["header"]["businessUnit"], "poNumber": po_number,
                              "supplier": {"id": sup["id"], "name": sup["name"],
                                           "supplierNumber": sup["supplierNumber"]},
                              "total": {"currency": po["header"]["currency"], "value": float(total)},
                              "lastUpdate": self._now().strftime(ISO)},
                   "lines": out_lines}
            self.invoices[inv_id] = inv
            return inv

    def fail_next(self, method: str, path_part: str, *, code: int = -1, message: str = "Business rule violation",
                  count: int = 1) -> None:
        """The next ``count`` requests whose path contains ``path_part`` answer HTTP 200 with ``returnCode`` =
        ``code`` and take no effect."""
        with self._lock:
            self.failures.append({"method": method.upper(), "path": path_part, "code": code, "message": message,
                                  "count": count})

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def requisitions_by_ext(self, ext: str) -> list[dict[str, Any]]:
        return [r for r in self.requisitions.values() if r.get("externalRequisitionNumber") == ext]

    # -- HTTP ------------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        if request.path in (KEYCLOAK_TOKEN, LEGACY_TOKEN):
            return self._token(request)
        auth = request.header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        with self._lock:
            slot = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            ok = slot is not None and self.clock() < slot[0] and slot[1] != 0
            if ok and slot is not None and slot[1] > 0:
                slot[1] -= 1
        if not ok:
            # As the Advantage gateway: no media type, no WWW-Authenticate, not JSON.
            return Response(401, b"Unauthorized", {"Content-Type": "; charset=UTF-8"})
        with self._lock:
            self.calls[f"{request.method} {request.path}"] += 1
            for f in self.failures:
                if f["count"] > 0 and f["method"] == request.method and f["path"] in request.path:
                    f["count"] -= 1
                    return json_response(200, {"returnCode": f["code"], "returnMessage": f["message"]})
        routes = {SUPPLIERS: self._suppliers, REQUISITIONS: self._requisitions, PURCHASE_ORDERS: self._pos,
                  INVOICES: self._invoices}
        handler = routes.get(request.path)
        if handler is None:
            return json_response(404, {"returnCode": 404, "returnMessage": f"No resource at {request.path}"})
        with self._lock:
            return handler(request)

    def _token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        if request.method != "POST":
            return json_response(405, {"error": "method_not_allowed"})
        if not (request.header("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            return json_response(400, {"error": "invalid_request", "error_description": "Form body required"})
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8")).items()}
        if form.get("grant_type") != "client_credentials":
            return json_response(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return json_response(401, {"error": "unauthorized_client", "error_description": "Invalid client secret"})
        token = secrets.token_urlsafe(24)
        with self._lock:
            expiry = self.clock() + self.expires_in
            self.tokens[token] = [expiry, float(self.token_uses) if self.token_uses is not None else -1.0]
        if request.path == KEYCLOAK_TOKEN:
            return json_response(200, {"access_token": token, "expires_in": self.expires_in,
                                       "refresh_expires_in": 0, "token_type": "Bearer", "not-before-policy": 0,
                                       "scope": "profile email"})
        return json_response(200, {"token": token, "token_type": "Bearer", "resource": "jint",
                                   "expire_on": datetime.fromtimestamp(expiry, UTC).strftime(ISO),
                                   "expire_in": self.expires_in * 1000})

    # -- lists -----------------------------------------------------------------------------------
    def _list(self, request: Request, rows: list[dict[str, Any]], fields: dict[str, Callable[[dict[str, Any]], Any]],
              times: dict[str, str], envelope: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> Response:
        flt = request.arg("flt") or ""
        try:
            start = int(request.arg("start") or "1")
        except ValueError:
            return json_response(200, {"returnCode": 2, "returnMessage": "start must be a number"})
        if start < 1:
            return json_response(200, {"returnCode": 2, "returnMessage": "start is 1-based"})
        keep = rows
        for clause in _split(flt, ";"):
            m = CLAUSE.match(clause)
            if not m or m.group(1) not in fields:
                return json_response(200, {"returnCode": 3, "returnMessage": f"Invalid filter: {clause!r}"})
            name, op, raw = m.group(1), m.group(2), _unquote(m.group(3))
            get = fields[name]
            if name in times:
                try:
                    datetime.strptime(raw, times[name])
                except ValueError:
                    return json_response(200, {"returnCode": 3, "returnMessage":
                                               f"Invalid date {raw!r} for {name}; expected {times[name]}"})
            if op == "==":
                keep = [r for r in keep if str(get(r)) == raw]
            elif op == "=in=":
                options = {_unquote(o) for o in _split(raw.strip("()"), ",")}
                keep = [r for r in keep if str(get(r)) in options]
            elif op == ">=":
                keep = [r for r in keep if str(get(r)) >= raw]
            else:
                keep = [r for r in keep if str(get(r)) <= raw]
        page = keep[start - 1: start - 1 + self.page_size]
        counts: tuple[Any, Any] = (len(keep), len(page))
        if self.count_style == "str":
            counts = (str(len(keep)), str(len(page)))
        elif self.count_style == "garbage":
            counts = (f"{len(keep)} rows", f"{len(page)} rows")
        body = {"returnCode": 0, "returnMessage": "OK", "totRecords": counts[0], "returnedRecords": counts[1],
                "startAt": start, **envelope([json.loads(json.dumps(r)) for r in page])}
        return json_response(200, body)

    def _suppliers(self, request: Request) -> Response:
        if request.method == "GET":
            rows = sorted(self.suppliers.values(), key=lambda s: (s["lastModTime"], s["bravoId"]))
            return self._list(request, rows, {"LASTMODTIME": lambda s: s["lastModTime"], "TYPE": lambda s: s["type"],
                                              "BRAVOID": lambda s: s["bravoId"], "extCode": lambda s: s["extCode"],
                                              "extUniqueCode": lambda s: s.get("extUniqueCode", ""),
                                              "fiscalCode": lambda s: s["fiscalCode"]},
                              {"LASTMODTIME": COMPACT}, lambda page: {"returnCompanyData": page})
        if request.method != "POST":
            return json_response(405, {"returnCode": 405, "returnMessage": "Method not allowed"})
        body = request.json() or {}
        op = body.get("operationCode")
        info = (body.get("company") or {}).get("companyInfo") or {}
        if op == "CREATE":
            ext = str(info.get("extCode") or "")
            if ext and any(s["extCode"] == ext for s in self.suppliers.values()):
                return json_response(200, {"returnCode": -4, "returnMessage": f"extCode {ext} already in use"})
            if not info.get("companyName"):
                return json_response(200, {"returnCode": -2, "returnMessage": "companyName is mandatory"})
            s = self.add_supplier(str(info["companyName"]), ext_code=ext, city=str(info.get("city", "")),
                                  country=str(info.get("isoCountry", "")))
            self.writes["supplier_create"] += 1
            return json_response(200, {"returnCode": 0, "returnMessage": "OK", "bravoId": s["bravoId"]})
        if op == "UPDATE":
            bid = str(info.get("bravoId") or "")
            if bid not in self.suppliers:
                return json_response(200, {"returnCode": -3, "returnMessage": f"Company {bid!r} not found"})
            changes = {k: v for k, v in info.items() if k in ("companyName", "city", "isoCountry", "status",
                                                               "fiscalCode", "extCode")}
            self.change_supplier(bid, **changes)
            self.writes["supplier_update"] += 1
            return json_response(200, {"returnCode": 0, "returnMessage": "OK", "bravoId": bid})
        return json_response(200, {"returnCode": -1, "returnMessage": f"Unknown operationCode {op!r}"})

    def _requisitions(self, request: Request) -> Response:
        if request.method == "GET":
            rows = sorted(self.requisitions.values(), key=lambda r: (r["lastUpdate"], r["requisitionId"]))
            return self._list(request, rows, {"lastUpdate": lambda r: r["lastUpdate"],
                                              "externalRequisitionNumber": lambda r: r["externalRequisitionNumber"],
                                              "requisitionId": lambda r: r["requisitionId"]},
                              {"lastUpdate": ISO}, lambda page: {"requisitionList": {"requisition": page}})
        if request.method != "POST":
            return json_response(405, {"returnCode": 405, "returnMessage": "Method not allowed"})
        body = (request.json() or {}).get("requisition") or {}
        for k in ("externalRequisitionNumber", "businessUnit", "lines"):
            if not body.get(k):
                return json_response(200, {"returnCode": -2, "returnMessage": f"{k} is mandatory"})
        for ln in body["lines"]:
            if Decimal(str(ln.get("quantity", 0))) <= 0:
                return json_response(200, {"returnCode": -2, "returnMessage": "quantity must be positive"})
        rid = next(self._req)
        self.requisitions[rid] = {**body, "requisitionId": rid, "lastUpdate": self._now().strftime(ISO)}
        self.writes["requisition_create"] += 1
        return json_response(200, {"returnCode": 0, "returnMessage": "OK", "requisitionId": rid})

    def _pos(self, request: Request) -> Response:
        if request.method != "GET":
            return json_response(405, {"returnCode": 405, "returnMessage": "Method not allowed"})
        rows = sorted(self.pos.values(), key=lambda p: (p["header"]["lastUpdate"], p["header"]["poNumber"]))
        return self._list(request, rows, {"lastUpdate": lambda p: p["header"]["lastUpdate"],
                                          "poNumber": lambda p: p["header"]["poNumber"],
                                          "status": lambda p: p["header"]["status"]},
                          {"lastUpdate": ISO}, lambda page: {"purchaseOrderList": {"purchaseOrder": page}})

    def _invoices(self, request: Request) -> Response:
        if request.method != "GET":
            return json_response(405, {"returnCode": 405, "returnMessage": "Method not allowed"})
        rows = sorted(self.invoices.values(), key=lambda i: (i["header"]["lastUpdate"], i["header"]["invoiceId"]))
        return self._list(request, rows, {"lastUpdate": lambda i: i["header"]["lastUpdate"],
                                          "invoiceId": lambda i: i["header"]["invoiceId"],
                                          "workflowStatus": lambda i: i["header"]["workflowStatus"]},
                          {"lastUpdate": ISO}, lambda page: {"jiinvoiceList": {"jiinvoice": page}})


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside single quotes and parentheses."""
    out, cur, quoted, depth, esc = [], [], False, 0, False
    for ch in text:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            esc = True
        elif ch == "'":
            quoted = not quoted
            cur.append(ch)
        elif ch == "(" and not quoted:
            depth += 1
            cur.append(ch)
        elif ch == ")" and not quoted:
            depth -= 1
            cur.append(ch)
        elif ch == sep and not quoted and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return [c for c in out if c]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value

