"""Loopback simulator of the Procurify REST API, as strict as reference procurify.md.

- ``POST /oauth/token``: JSON body only (a form body is refused), ``audience`` exactly
  ``https://api.procurify.com/``, ``grant_type`` client_credentials, the right client id and secret;
  answers ``{"access_token", "expires_in": 86400, "token_type": "Bearer", "scope"}``. Tokens expire
  (``expires_in``) and ``expire_tokens()`` revokes them all (the next call gets 401).
- Every API call needs ``Authorization: Bearer`` and ``X-Procurify-Client: api``; every answer carries an
  ``x-request-id``.
- Lists use the ``{"metadata": {"pagination": {...next...}}, "data": [...]}`` envelope, ``page`` (1-based)
  and ``page_size``; ``next`` is an absolute URL carrying every query parameter.
- ``GET /api/v3/order-items/`` filters ``last_modified_0/_1`` by DAY (``YYYY-MM-DD``, both days included;
  anything else is a 400), plus ``status``; decimals are strings with up to 8 places.
- ``GET /api/v3/vendors/``, ``PATCH /api/v3/vendors/{id}/`` (JSON, known keys only),
  ``GET /api/v3/users/me/``, ``/api/v3/departments/``.
- Account codes: ``GET /api/v3/account-codes/`` (filters ``code``, ``active``), ``POST`` (required ``code`` and
  ``description``; a ``code`` already taken is a 400), ``PUT /api/v3/account-codes/{id}/`` (the whole record:
  ``code`` and ``description`` required); no PATCH or DELETE (405): a code is deactivated with ``active``.
- Purchase orders: ``GET /api/v2/purchase_orders/{procurify_PO}/`` (with ``state``: 0 purchased, 1 cancelled,
  3 closed, 5 reopened) and ``POST /api/v3/purchase-orders/{procurify_PO}/close/`` (no body; a PO already
  closed or cancelled is a 400). ``add_purchase_order`` puts a requisition's items on a PO as a buyer would.
429 and 5xx come from the server's fault plan or rate limit (sandbox/server.py).
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from mlconnector.sandbox.server import Request, Response, json_response

AUDIENCE = "https://api.procurify.com/"
CLIENT_ID = "sandbox-procurify-client"
CLIENT_SECRET = "sandbox-procurify-secret"


def _money(value: Any) -> str:
    return f"{Decimal(str(value)):.8f}"


class ProcurifySim:
    """Callable app. Test controls: ``add_requisition``, ``change_item``, ``add_vendor``, ``expire_tokens``;
    counters ``token_requests`` and ``calls`` (path -> GETs)."""

    def __init__(self, *, domain: str = "sandbox", client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET,
                 expires_in: int = 86400, clock: Any = time.time) -> None:
        self.domain = domain
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.clock = clock
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self.token_requests = 0
        self.calls: Counter[str] = Counter()
        self.items: dict[int, dict[str, Any]] = {}
        self.vendor_patches = 0
        self.vendors: dict[int, dict[str, Any]] = {}
        self.account_codes: dict[int, dict[str, Any]] = {}
        for code, descr in (("6100", "Office supplies"), ("6200", "IT equipment"), ("6300", "Maintenance")):
            self._new_code(code, descr)
        self.account_code_writes = 0
        self.pos: dict[int, dict[str, Any]] = {}
        self.po_closes = 0
        self.departments = {1: "Facilities", 2: "IT", 3: "Operations"}
        self._ids = itertools.count(1001)
        self._reqs = itertools.count(5001)
        self._lock = threading.Lock()
        self._rid = itertools.count(1)

    # -- test controls ---------------------------------------------------------------------------
    def add_vendor(self, name: str, *, external_id: str = "", vendor_id: int | None = None,
                   **fields: Any) -> dict[str, Any]:
        with self._lock:
            vid = vendor_id or (max(self.vendors, default=300) + 1)
            v = {"id": vid, "name": name, "external_id": external_id, "active": True, "type": 3,
                 "email": [f"orders@{vid}.example.com"], "addressLineOne": "", "addressLineTwo": "", "city": "",
                 "state_province": "", "postalCode": "", "country": "", "dateModified": self._now_text(), **fields}
            self.vendors[vid] = v
            return v

    def add_requisition(self, vendor_id: int, lines: list[dict[str, Any]], *, status: int = 0,
                        currency: str = "USD", order_num: int | None = None) -> int:
        """Add an approved requisition; each line: name, quantity, price, unit, account_code, department_id."""
        with self._lock:
            num = order_num or next(self._reqs)
            vendor = self.vendors[vendor_id]
            for n, line in enumerate(lines, 1):
                iid = next(self._ids)
                dept = int(line.get("department_id", 1))
                self.items[iid] = {
                    "id": iid, "orderNum": num, "num": n, "name": line["name"], "sku": line.get("sku", ""),
                    "unit": line.get("unit", "EA"), "quantity": _money(line["quantity"]),
                    "price": _money(line["price"]), "approved_quantity": _money(line["quantity"]),
                    "approved_price": _money(line["price"]), "currency": line.get("currency", currency),
                    "accountCode": line.get("account_code", "6100"),
                    "account": {"id": 70000 + dept, "account_code": line.get("account_code", "6100"),
                                "department": {"id": dept, "name": self.departments.get(dept, f"Dept {dept}")}},
                    "department": {"id": dept, "name": self.departments.get(dept, f"Dept {dept}")},
                    "pref_vendor": {"id": vendor["id"], "name": vendor["name"], "external_id": vendor["external_id"]},
                    "status": status, "type": 0, "approved_datetime": self._now_text(),
                    "last_modified": self._now_text(), "created_at": self._now_text(), "lineComment": "",
                }
            return num

    def change_item(self, item_id: int, **changes: Any) -> None:
        """Change an order item as a buyer would; amounts are re-rendered as 8-decimal strings."""
        with self._lock:
            item = self.items[item_id]
            for k, v in changes.items():
                if k in ("quantity", "price"):
                    item[k] = item[f"approved_{k}"] = _money(v)
                else:
                    item[k] = v
            item["last_modified"] = self._now_text()

    def items_of(self, order_num: int) -> list[dict[str, Any]]:
        return sorted((i for i in self.items.values() if i["orderNum"] == order_num), key=lambda i: i["num"])

    def _new_code(self, code: str, description: str, **fields: Any) -> dict[str, Any]:
        cid = max(self.account_codes, default=0) + 1
        row = {"id": cid, "code": code, "description": description, "active": True, "account_type": None,
               "parent": None, "departments": [], **fields}
        self.account_codes[cid] = row
        return row

    def add_purchase_order(self, order_num: int) -> int:
        """Put every item of requisition ``order_num`` on a new Procurify PO (state 0); its number."""
        with self._lock:
            number = max(self.pos, default=200) + 1
            items = [i for i in self.items.values() if i["orderNum"] == order_num]
            total = sum(Decimal(i["approved_quantity"]) * Decimal(i["approved_price"]) for i in items)
            self.pos[number] = {"procurify_PO": number, "uuid": secrets.token_hex(16), "PO_Num": "", "version": 1,
                                "state": 0, "total": _money(total), "last_modified": self._now_text()}
            for n, item in enumerate(sorted(items, key=lambda i: i["num"]), 1):
                item.update(purchase_order=number, PO_line_num=n, status=2, last_modified=self._now_text())
            return number

    def codes(self, code: str) -> list[dict[str, Any]]:
        """The account codes carrying ``code`` (a test sees a duplicate as a list of two)."""
        with self._lock:
            return [dict(r) for r in self.account_codes.values() if r["code"] == code]

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def _now_text(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    # -- HTTP ------------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        resp = self._route(request)
        resp.headers["x-request-id"] = f"req-{next(self._rid):06d}-{secrets.token_hex(4)}"
        return resp

    def _route(self, request: Request) -> Response:
        if request.path == "/oauth/token":
            return self._token(request)
        if not request.path.endswith("/"):
            return json_response(404, {"detail": "Not found."})  # Django REST: the trailing slash matters
        auth = request.header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        with self._lock:
            expiry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or self.clock() >= expiry:
            return json_response(401, {"detail": "Authentication credentials were not provided or have expired."})
        if request.header("X-Procurify-Client") != "api":
            return json_response(400, {"detail": "X-Procurify-Client: api header is required."})
        with self._lock:
            self.calls[request.path if request.method == "GET" else f"{request.method} {request.path}"] += 1
        if request.method == "PATCH" and request.path.startswith("/api/v3/vendors/"):
            return self._patch_vendor(request)
        if request.path.startswith("/api/v3/purchase-orders/"):
            return self._close_po(request)
        if request.path.startswith("/api/v3/account-codes/") and request.method != "GET":
            return self._write_account_code(request)
        if request.method != "GET":
            return json_response(405, {"detail": f'Method "{request.method}" not allowed.'})
        if request.path == "/api/v3/order-items/":
            return self._order_items(request)
        if request.path.startswith("/api/v2/purchase_orders/"):
            tail = request.path[len("/api/v2/purchase_orders/"):].strip("/")
            with self._lock:
                po = self.pos.get(int(tail)) if tail.isdigit() else None
                if po is None:
                    return json_response(404, {"detail": "Not found."})
                return json_response(200, {"metadata": {}, "data": dict(po)})
        if request.path == "/api/v3/vendors/":
            with self._lock:
                rows = [dict(v) for v in sorted(self.vendors.values(), key=lambda v: v["id"])]
            return self._page(request, rows)
        if request.path == "/api/v3/users/me/":
            return json_response(200, {"metadata": {}, "data": {"id": 1, "email": "integration@example.com",
                                                                 "domain": self.domain}})
        if request.path == "/api/v3/account-codes/":
            code, active = request.arg("code"), request.arg("active")
            with self._lock:
                rows = [dict(r) for _, r in sorted(self.account_codes.items())
                        if (code is None or r["code"] == code)
                        and (active is None or str(r["active"]).lower() == active.lower())]
            return self._page(request, rows)
        if request.path == "/api/v3/departments/":
            rows = [{"id": i, "name": n, "active": True} for i, n in sorted(self.departments.items())]
            return self._page(request, rows)
        return json_response(404, {"detail": "Not found."})

    VENDOR_KEYS = {"name", "email", "type", "overall_score", "addressLineOne", "addressLineTwo", "postalCode", "city",
                   "state_province", "country", "phoneOne", "phoneTwo", "fax", "contact", "url", "external_id",
                   "currency", "payment_term_ref", "shipping_term_ref", "payment_method_ref", "tax",
                   "is_1099_eligible", "active"}

    def _patch_vendor(self, request: Request) -> Response:
        tail = request.path[len("/api/v3/vendors/"):].strip("/")
        if not tail.isdigit():
            return json_response(404, {"detail": "Not found."})
        if not (request.header("Content-Type") or "").startswith("application/json"):
            return json_response(415, {"detail": "Unsupported media type in request."})
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return json_response(400, {"detail": "JSON parse error."})
        if not isinstance(body, dict):
            return json_response(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        unknown = sorted(set(body) - self.VENDOR_KEYS)
        if unknown:
            return json_response(400, {unknown[0]: ["Unknown field."]})
        if "name" in body and not str(body["name"]).strip():
            return json_response(400, {"name": ["This field may not be blank."]})
        with self._lock:
            v = self.vendors.get(int(tail))
            if v is None:
                return json_response(404, {"detail": "Not found."})
            v.update(body)
            v["dateModified"] = self._now_text()
            self.vendor_patches += 1
            return json_response(200, {"metadata": {}, "data": dict(v)})

    def _close_po(self, request: Request) -> Response:
        parts = request.path[len("/api/v3/purchase-orders/"):].strip("/").split("/")
        if len(parts) != 2 or parts[1] != "close" or not parts[0].isdigit():
            return json_response(404, {"detail": "Not found."})
        if request.method != "POST":
            return json_response(405, {"detail": f'Method "{request.method}" not allowed.'})
        with self._lock:
            po = self.pos.get(int(parts[0]))
            if po is None:
                return json_response(404, {"detail": "Not found."})
            if po["state"] in (1, 3):
                return json_response(400, {"detail": "This purchase order is already closed or cancelled."})
            po.update(state=3, version=po["version"] + 1, last_modified=self._now_text())
            self.po_closes += 1
            return json_response(200, {"metadata": {}, "data": dict(po)})

    CODE_KEYS = {"code", "description", "active", "parent", "account_type", "departments"}

    def _write_account_code(self, request: Request) -> Response:
        tail = request.path[len("/api/v3/account-codes/"):].strip("/")
        if request.method not in ("POST", "PUT") or (request.method == "POST") != (tail == ""):
            return json_response(405, {"detail": f'Method "{request.method}" not allowed.'})
        if tail and not tail.isdigit():
            return json_response(404, {"detail": "Not found."})
        if not (request.header("Content-Type") or "").startswith("application/json"):
            return json_response(415, {"detail": "Unsupported media type in request."})
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return json_response(400, {"detail": "JSON parse error."})
        if not isinstance(body, dict):
            return json_response(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        unknown = sorted(set(body) - self.CODE_KEYS)
        if unknown:
            return json_response(400, {unknown[0]: ["Unknown field."]})
        for key in ("code", "description"):  # required on POST, and on PUT (a whole-record update)
            if key not in body:
                return json_response(400, {key: ["This field is required."]})
            if not isinstance(body[key], str) or not body[key].strip():
                return json_response(400, {key: ["This field may not be blank."]})
        if "active" in body and not isinstance(body["active"], bool):
            return json_response(400, {"active": ["Must be a valid boolean."]})
        with self._lock:
            cid = int(tail) if tail else None
            if cid is not None and cid not in self.account_codes:
                return json_response(404, {"detail": "Not found."})
            if any(r["code"] == body["code"] and k != cid for k, r in self.account_codes.items()):
                return json_response(400, {"code": ["Account code with this code already exists."]})
            self.account_code_writes += 1
            if cid is None:
                row = self._new_code(body["code"], body["description"],
                                     **{k: v for k, v in body.items() if k not in ("code", "description")})
                return json_response(201, {"metadata": {}, "data": dict(row)})
            self.account_codes[cid].update(body)
            return json_response(200, {"metadata": {}, "data": dict(self.account_codes[cid])})

    def _token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        if request.method != "POST":
            return json_response(405, {"detail": "Method not allowed."})
        if not (request.header("Content-Type") or "").startswith("application/json"):
            return json_response(400, {"error": "invalid_request", "error_description": "Body must be JSON."})
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return json_response(400, {"error": "invalid_request", "error_description": "Body must be JSON."})
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            return json_response(400, {"error": "unsupported_grant_type"})
        if body.get("audience") != AUDIENCE:
            return json_response(403, {"error": "access_denied",
                                       "error_description": f"Service not found: {body.get('audience')}"})
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            return json_response(401, {"error": "access_denied", "error_description": "Unauthorized"})
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = self.clock() + self.expires_in
        return json_response(200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer",
                                   "scope": f"urn:procurify-api:domain:{self.domain} "
                                            f"urn:procurify-api:email:integration@example.com"})

    def _order_items(self, request: Request) -> Response:
        lo, hi = request.arg("last_modified_0"), request.arg("last_modified_1")
        try:
            lo_d = date.fromisoformat(lo) if lo else None
            hi_d = date.fromisoformat(hi) if hi else None
        except ValueError:
            return json_response(400, {"last_modified": ["Enter a valid date (YYYY-MM-DD)."]})
        if (lo and len(lo) != 10) or (hi and len(hi) != 10):
            return json_response(400, {"last_modified": ["Enter a valid date (YYYY-MM-DD)."]})
        status = request.arg("status")
        with self._lock:
            rows = []
            for item in sorted(self.items.values(), key=lambda i: (i["last_modified"], i["id"])):
                day = datetime.fromisoformat(item["last_modified"].replace("Z", "+00:00")).date()
                if (lo_d and day < lo_d) or (hi_d and day > hi_d):
                    continue
                if status is not None and str(item["status"]) not in status.split(","):
                    continue
                rows.append(json.loads(json.dumps(item)))
        return self._page(request, rows)

    def _page(self, request: Request, rows: list[dict[str, Any]]) -> Response:
        try:
            page = int(request.arg("page", "1") or 1)
            size = int(request.arg("page_size", "10") or 10)
        except ValueError:
            return json_response(404, {"detail": "Invalid page."})
        if page < 1 or size < 1 or size > 100:
            return json_response(404 if page < 1 else 400, {"detail": "Invalid page."})
        pages = max(1, -(-len(rows) // size))
        if page > pages:
            return json_response(404, {"detail": "Invalid page."})
        host = request.header("Host") or "127.0.0.1"

        def link(n: int) -> str | None:
            if n < 1 or n > pages:
                return None
            q = {k: v[0] for k, v in request.query.items()}
            q.update(page=str(n), page_size=str(size))
            return f"http://{host}{request.path}?{urlencode(q)}"

        return json_response(200, {"metadata": {"pagination": {
            "count": len(rows), "next": link(page + 1), "previous": link(page - 1), "page_size": size,
            "num_pages": pages, "current_page": page}}, "data": rows[(page - 1) * size: page * size]})
