"""Loopback simulator of the Procore REST API, as strict as reference procore.md.

- ``POST /oauth/token``: form body only (a JSON body is refused), grant ``client_credentials`` with the right
  id and secret; answers ``{"access_token", "token_type": "bearer", "expires_in": 5400, "created_at"}``; tokens
  expire and ``expire_tokens()`` revokes them all (the next call gets 401).
- Every ``/rest`` call needs ``Authorization: Bearer`` and ``Procore-Company-Id`` (without it: 400 "Missing
  Procore-Company-Id header!"); a company that has not installed the app (``uninstall()``) answers 403 "App is
  not connected to this company"; a project that is not permitted, or whose tool is disabled, answers 403.
- Two rate-limit windows, hourly and spike (10 s); every answer, failed ones included, counts and carries
  ``X-Rate-Limit-Limit/-Remaining/-Reset`` (Unix seconds) of the window closer to exhaustion; an exhausted
  window answers 429 with the same headers.
- Lists page with ``page``/``per_page`` and ``Link: <...>; rel="next"`` (+ ``Total``, ``Per-Page``).
- Sync actions (``PATCH .../sync``, ``{"updates": [...]}``, at most 1000 items): always HTTP 200 with
  ``entities[]`` and ``errors[]``; no id and unknown origin_id -> create; known origin_id -> update; unknown id
  -> error; rows failing validation (or named in ``refuse``) are errors, the others are written.
- Resources: company vendors, project cost codes, purchase order contracts with line items; ``origin_id`` is
  unique per company and resource.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlencode

from mlconnector.sandbox.server import Request, Response, json_response

CLIENT_ID = "sandbox-procore-client"
CLIENT_SECRET = "sandbox-procore-secret"
COMPANY_ID = 4264807
SYNC_MAX = 1000
NOT_CONNECTED = "App is not connected to this company"


def _money(value: Any) -> str:
    return f"{Decimal(str(value)):.2f}"


class _Window:
    """A fixed rate-limit window: ``limit`` calls per ``seconds`` from its first call."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self.start = 0.0
        self.used = 0

    def roll(self, now: float) -> None:
        if now >= self.start + self.seconds:
            self.start, self.used = now, 0

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self) -> dict[str, str]:
        return {"X-Rate-Limit-Limit": str(self.limit), "X-Rate-Limit-Remaining": str(self.remaining),
                "X-Rate-Limit-Reset": str(int(self.start + self.seconds))}


class ProcoreSim:
    """Callable app. Test controls: ``add_project``, ``permit``, ``disable_tool``, ``uninstall``, ``expire_tokens``,
    ``add_commitment``, ``change_commitment``, ``refuse`` (origin_id -> message for sync rows); counters
    ``token_requests``, ``calls`` (method + path) and ``writes`` (resource -> rows created/updated)."""

    def __init__(self, *, company_id: int = COMPANY_ID, client_id: str = CLIENT_ID,
                 client_secret: str = CLIENT_SECRET, expires_in: int = 5400, hourly_limit: int = 3600,
                 spike_limit: int = 1000, clock: Any = time.time) -> None:
        self.company_id = company_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.clock = clock
        self.installed = True
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.calls: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        self.hourly = _Window(hourly_limit, 3600)
        self.spike = _Window(spike_limit, 10)
        self.projects: dict[int, dict[str, Any]] = {}
        self.permitted: set[int] = set()
        self.disabled: set[tuple[int, str]] = set()
        self.vendors: dict[int, dict[str, Any]] = {}
        self.cost_codes: dict[int, dict[str, Any]] = {}
        self.contracts: dict[int, dict[str, Any]] = {}
        self.line_items: dict[int, dict[str, Any]] = {}
        self.refuse: dict[str, str] = {}
        self.direct_costs: dict[int, dict[str, Any]] = {}
        self.direct_cost_lines: dict[int, dict[str, Any]] = {}
        self.change_orders: dict[int, dict[str, Any]] = {}
        self.hooks: dict[int, dict[str, Any]] = {}
        self.triggers: dict[int, dict[str, Any]] = {}
        self.webhook_resources = ["Purchase Order Contracts", "Work Order Contracts", "Company Vendors",
                                  "Direct Costs", "Direct Cost Line Items", "Commitment Change Orders"]
        self.expire_after: int | None = None  # revoke every token once this many more API calls were answered
        self._ids = itertools.count(562949953421312)  # ids beyond 32 bits, as in Procore
        self._lock = threading.RLock()
        self._rid = itertools.count(1)

    # -- test controls ---------------------------------------------------------------------------
    def add_project(self, project_id: int, name: str, *, permitted: bool = True) -> None:
        with self._lock:
            self.projects[project_id] = {"id": project_id, "name": name, "company": {"id": self.company_id}}
            if permitted:
                self.permitted.add(project_id)

    def permit(self, project_id: int, allowed: bool = True) -> None:
        with self._lock:
            (self.permitted.add if allowed else self.permitted.discard)(project_id)

    def disable_tool(self, project_id: int, tool: str) -> None:
        """``tool``: "cost_codes" or "commitments"."""
        with self._lock:
            self.disabled.add((project_id, tool))

    def uninstall(self) -> None:
        with self._lock:
            self.installed = False

    def install(self) -> None:
        with self._lock:
            self.installed = True

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def add_commitment(self, project_id: int, vendor_id: int, *, number: str, title: str, status: str = "Approved",
                       lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A purchase order contract made by a person in Procore (no origin_id); each line: cost_code_id,
        description, quantity, unit_cost (amount = quantity x unit_cost), uom."""
        with self._lock:
            rec = self._new_contract(project_id, {"vendor_id": vendor_id, "number": number, "title": title,
                                                  "status": status})
            for ln in lines or []:
                self._new_line(rec["id"], project_id, ln)
            return dict(rec)

    def change_commitment(self, contract_id: int, *, lines: list[dict[str, Any]] | None = None,
                          **changes: Any) -> None:
        """A person edits a commitment (header fields, and line fields by line id)."""
        with self._lock:
            rec = self.contracts[contract_id]
            rec.update(changes)
            for ln in lines or []:
                li = self.line_items[ln["id"]]
                li.update({k: (_money(v) if k in ("quantity", "unit_cost", "amount") else v) for k, v in ln.items()})
                li["amount"] = _money(Decimal(li["quantity"]) * Decimal(li["unit_cost"]))
            rec["updated_at"] = self._now()

    def lines_of(self, contract_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(li) for li in self.line_items.values() if li["contract_id"] == contract_id]

    def by_origin(self, table: dict[int, dict[str, Any]], origin_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in table.values() if r.get("origin_id") == origin_id]

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- HTTP ------------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        if request.path == "/oauth/token":
            return self._token(request)
        with self._lock:
            now = self.clock()
            self.hourly.roll(now)
            self.spike.roll(now)
            tight = min((self.hourly, self.spike), key=lambda w: w.remaining)
            if tight.remaining <= 0:
                resp = json_response(429, {"errors": "Rate limit exceeded"})
            else:
                self.hourly.used += 1
                self.spike.used += 1
                self.calls[f"{request.method} {request.path}"] += 1
                resp = self._route(request)
                if self.expire_after is not None:
                    self.expire_after -= 1
                    if self.expire_after <= 0:
                        self.tokens.clear()  # the token runs out mid-pass
                        self.expire_after = None
            tight = min((self.hourly, self.spike), key=lambda w: w.remaining)
            resp.headers.update(tight.headers())
            resp.headers["X-Request-Id"] = f"{next(self._rid):08x}-{secrets.token_hex(4)}"
            return resp

    def _token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        if request.method != "POST":
            return json_response(405, {"error": "method_not_allowed"})
        if not (request.header("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            return json_response(400, {"error": "invalid_request",
                                       "error_description": "The request is missing a required parameter."})
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8")).items()}
        if form.get("grant_type") != "client_credentials":
            return json_response(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return json_response(401, {"error": "invalid_client", "error_description": "Client authentication "
                                                                                       "failed."})
        token = secrets.token_urlsafe(32)
        with self._lock:
            created = int(self.clock())
            self.tokens[token] = created + self.expires_in
        return json_response(200, {"access_token": token, "token_type": "bearer", "expires_in": self.expires_in,
                                   "created_at": created})

    def _route(self, request: Request) -> Response:
        auth = request.header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        expiry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or self.clock() >= expiry:
            return json_response(401, {"errors": "The access token is invalid or has expired"})
        if not request.header("Procore-Company-Id"):
            return json_response(400, {"errors": "Missing Procore-Company-Id header!"})
        if request.header("Procore-Company-Id") != str(self.company_id) or not self.installed:
            return json_response(403, {"errors": NOT_CONNECTED})
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] != ["rest"] or len(parts) < 3 or parts[1] not in ("v1.0", "v1.1"):
            return json_response(404, {"errors": "Not found"})
        version, parts = parts[1], parts[2:]
        if version == "v1.1" and not (len(parts) >= 3 and parts[0] == "projects" and parts[2] == "direct_costs"):
            return json_response(404, {"errors": "Not found"})
        body = request.json() if request.method in ("PATCH", "POST") and request.body else {}
        if parts == ["companies"] and request.method == "GET":
            return self._list(request, [{"id": self.company_id, "name": "Sandbox Builders", "is_active": True}])
        if parts == ["projects"] and request.method == "GET":
            if request.arg("company_id") != str(self.company_id):
                return json_response(400, {"errors": "company_id is required"})
            return self._list(request, [dict(p) for pid, p in sorted(self.projects.items()) if pid in self.permitted])
        if len(parts) >= 3 and parts[0] == "projects" and parts[2] in ("direct_costs", "commitment_change_orders"):
            return self._project_costs(request, parts, body, version)
        if parts[0] == "webhooks":
            return self._webhooks(request, parts[1:], body)
        if parts[0] == "vendors":
            return self._vendors(request, parts[1:], body)
        if parts[0] == "cost_codes":
            return self._cost_codes(request, parts[1:], body)
        if parts[0] == "purchase_order_contracts":
            return self._contracts(request, parts[1:], body)
        return json_response(404, {"errors": "Not found"})

    def _project(self, request: Request, body: dict[str, Any], tool: str) -> int | Response:
        raw = body.get("project_id") if request.method == "PATCH" else request.arg("project_id")
        try:
            pid = int(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return json_response(400, {"errors": "project_id is required"})
        if pid not in self.projects:
            return json_response(404, {"errors": "Project not found"})
        if pid not in self.permitted:
            return json_response(403, {"errors": "You do not have access to this project"})
        if (pid, tool) in self.disabled:
            return json_response(403, {"errors": f"The {tool} tool is not enabled on this project"})
        return pid

    def _list(self, request: Request, rows: list[dict[str, Any]]) -> Response:
        try:
            page = int(request.arg("page", "1") or 1)
            per = int(request.arg("per_page", "100") or 100)
        except ValueError:
            return json_response(400, {"errors": "page and per_page must be numbers"})
        if page < 1 or per < 1 or per > 10000:
            return json_response(400, {"errors": "invalid page"})
        pages = max(1, -(-len(rows) // per))
        headers = {"Total": str(len(rows)), "Per-Page": str(per)}
        if page < pages:
            q = {k: v[0] for k, v in request.query.items()}
            q.update(page=str(page + 1), per_page=str(per))
            host = request.header("Host") or "127.0.0.1"
            headers["Link"] = f'<http://{host}{request.path}?{urlencode(q)}>; rel="next"'
        return json_response(200, rows[(page - 1) * per: page * per], headers)

    @staticmethod
    def _filtered(request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]] | str:
        origin = request.arg("filters[origin_id]")
        if origin is not None:
            rows = [r for r in rows if r.get("origin_id") == origin]
        status = request.arg("filters[status]")
        if status is not None:
            rows = [r for r in rows if r.get("status") == status]
        rng = request.arg("filters[updated_at]")
        if rng is not None:
            lo, sep, hi = rng.partition("...")
            try:
                lo_t = datetime.fromisoformat(lo.replace("Z", "+00:00"))
                hi_t = datetime.fromisoformat(hi.replace("Z", "+00:00"))
            except ValueError:
                return "filters[updated_at] must be two ISO 8601 times joined by '...'"
            if not sep:
                return "filters[updated_at] must be a range"
            rows = [r for r in rows if lo_t <= datetime.fromisoformat(r["updated_at"].replace("Z", "+00:00"))
                    <= hi_t]
        return rows

    # -- sync actions ----------------------------------------------------------------------------
    def _sync(self, body: dict[str, Any], table: dict[int, dict[str, Any]], resource: str,
              make: Any, check: Any, scope: Any = None) -> Response:
        updates = body.get("updates")
        if not isinstance(updates, list):
            return json_response(400, {"errors": "updates must be a list"})
        if len(updates) > SYNC_MAX:
            return json_response(400, {"errors": f"at most {SYNC_MAX} updates per request"})
        entities: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for row in updates:
            if not isinstance(row, dict):
                errors.append({"errors": {"base": ["must be an object"]}})
                continue
            origin = row.get("origin_id")
            target = None
            if row.get("id") is not None:
                target = table.get(int(row["id"])) if str(row["id"]).isdigit() else None
                if target is None or (scope is not None and not scope(target)):
                    errors.append({**row, "errors": {"id": ["not found"]}})
                    continue
            elif origin:
                found = [r for r in table.values() if r.get("origin_id") == origin and (scope is None or scope(r))]
                target = found[0] if found else None
            problem = self.refuse.get(str(origin)) if origin else None
            problem = problem or check(row, target)
            if problem:
                errors.append({**row, "errors": problem if isinstance(problem, dict) else {"base": [problem]}})
                continue
            if target is None:
                target = make(row)
            else:
                target.update({k: v for k, v in row.items() if k != "id"})
                target["updated_at"] = self._now()
            self.writes[resource] += 1
            entities.append(dict(target))
        return json_response(200, {"entities": entities, "errors": errors})

    def _stamp(self, rec: dict[str, Any]) -> dict[str, Any]:
        rec["id"] = next(self._ids)
        rec["created_at"] = rec["updated_at"] = self._now()
        return rec

    # -- vendors ---------------------------------------------------------------------------------
    def _vendors(self, request: Request, rest: list[str], body: dict[str, Any]) -> Response:
        if rest == ["sync"] and request.method == "PATCH":
            if body.get("company_id") != self.company_id:
                return json_response(400, {"errors": "company_id is required"})

            def check(row: dict[str, Any], target: Any) -> str | dict[str, Any] | None:
                if target is None and not str(row.get("name") or "").strip():
                    return {"name": ["can't be blank"]}
                cc = row.get("country_code")
                if cc is not None and (not isinstance(cc, str) or len(cc) != 2):
                    return {"country_code": ["is not a valid ISO-3166 alpha-2 code"]}
                return None

            def make(row: dict[str, Any]) -> dict[str, Any]:
                rec = self._stamp({"is_active": True, **{k: v for k, v in row.items() if k != "id"}})
                self.vendors[rec["id"]] = rec
                return rec

            return self._sync(body, self.vendors, "vendors", make, check)
        if not rest and request.method == "GET":
            if request.arg("company_id") != str(self.company_id):
                return json_response(400, {"errors": "company_id is required"})
            rows = self._filtered(request, [dict(v) for _, v in sorted(self.vendors.items())])
            return json_response(400, {"errors": rows}) if isinstance(rows, str) else self._list(request, rows)
        return json_response(404, {"errors": "Not found"})

    # -- cost codes ------------------------------------------------------------------------------
    def _cost_codes(self, request: Request, rest: list[str], body: dict[str, Any]) -> Response:
        pid = self._project(request, body, "cost_codes")
        if isinstance(pid, Response):
            return pid
        if rest == ["sync"] and request.method == "PATCH":
            def check(row: dict[str, Any], target: Any) -> dict[str, Any] | None:
                if target is None and not (str(row.get("code") or "").strip() and str(row.get("name") or "").strip()):
                    return {"code": ["and name can't be blank"]}
                return None

            def make(row: dict[str, Any]) -> dict[str, Any]:
                rec = self._stamp({**{k: v for k, v in row.items() if k != "id"}, "project_id": pid})
                rec["full_code"] = rec.get("code")
                self.cost_codes[rec["id"]] = rec
                return rec

            return self._sync(body, self.cost_codes, "cost_codes", make, check,
                              scope=lambda r: r.get("project_id") == pid)
        if not rest and request.method == "GET":
            rows = self._filtered(request, [dict(c) for _, c in sorted(self.cost_codes.items())
                                            if c["project_id"] == pid])
            return json_response(400, {"errors": rows}) if isinstance(rows, str) else self._list(request, rows)
        return json_response(404, {"errors": "Not found"})

    # -- commitments -----------------------------------------------------------------------------
    def _new_contract(self, pid: int, row: dict[str, Any]) -> dict[str, Any]:
        rec = self._stamp({"status": "Draft", **{k: v for k, v in row.items() if k != "id"}, "project_id": pid,
                           "project": {"id": pid}})
        rec["vendor"] = {"id": rec.get("vendor_id")}
        self.contracts[rec["id"]] = rec
        return rec

    def _new_line(self, contract_id: int, pid: int, row: dict[str, Any]) -> dict[str, Any]:
        rec = self._stamp({k: v for k, v in row.items() if k != "id"})
        rec.update(contract_id=contract_id, project_id=pid)
        for k in ("quantity", "unit_cost", "amount"):
            if rec.get(k) is not None:
                rec[k] = _money(rec[k])
        if rec.get("amount") is None:
            rec["amount"] = _money(Decimal(rec.get("quantity") or 0) * Decimal(rec.get("unit_cost") or 0))
        self.line_items[rec["id"]] = rec
        return rec

    def _contracts(self, request: Request, rest: list[str], body: dict[str, Any]) -> Response:
        pid = self._project(request, body, "commitments")
        if isinstance(pid, Response):
            return pid
        if rest == ["sync"] and request.method == "PATCH":
            def check(row: dict[str, Any], target: Any) -> dict[str, Any] | None:
                vid = row.get("vendor_id", target.get("vendor_id") if target else None)
                if vid is None or int(vid) not in self.vendors:
                    return {"vendor_id": ["must be a vendor in the company directory"]}
                if target is not None and target.get("status") in ("Approved", "Complete") and \
                        row.get("vendor_id") not in (None, target.get("vendor_id")):
                    return {"vendor_id": ["cannot change on an approved commitment"]}
                return None

            def make(row: dict[str, Any]) -> dict[str, Any]:
                return self._new_contract(pid, row)

            resp = self._sync(body, self.contracts, "commitments", make, check,
                              scope=lambda r: r.get("project_id") == pid)
            return resp
        if not rest and request.method == "GET":
            rows = self._filtered(request, [dict(c) for _, c in sorted(self.contracts.items())
                                            if c["project_id"] == pid])
            return json_response(400, {"errors": rows}) if isinstance(rows, str) else self._list(request, rows)
        try:
            cid = int(rest[0])
        except (ValueError, IndexError):
            return json_response(404, {"errors": "Not found"})
        contract = self.contracts.get(cid)
        if contract is None or contract["project_id"] != pid:
            return json_response(404, {"errors": "Not found"})
        if len(rest) == 1 and request.method == "GET":
            return json_response(200, dict(contract))
        if rest[1:] == ["line_items"] and request.method == "GET":
            return self._list(request, [dict(li) for _, li in sorted(self.line_items.items())
                                        if li["contract_id"] == cid])
        if rest[1:] == ["line_items", "sync"] and request.method == "PATCH":
            def check_line(row: dict[str, Any], target: Any) -> dict[str, Any] | None:
                cc = row.get("cost_code_id", target.get("cost_code_id") if target else None)
                code = self.cost_codes.get(int(cc)) if cc is not None and str(cc).isdigit() else None
                if code is None or code["project_id"] != pid:
                    return {"cost_code_id": ["must be a cost code of this project"]}
                for k in ("quantity", "unit_cost", "amount"):
                    if row.get(k) is not None:
                        try:
                            Decimal(str(row[k]))
                        except InvalidOperation:
                            return {k: ["is not a number"]}
                        if not isinstance(row[k], str):
                            return {k: ["must be sent as a string"]}
                return None

            def make_line(row: dict[str, Any]) -> dict[str, Any]:
                return self._new_line(cid, pid, row)

            resp = self._sync(body, {k: v for k, v in self.line_items.items() if v["contract_id"] == cid},
                              "line_items", make_line, check_line)
            contract["updated_at"] = self._now()
            return resp
        return json_response(404, {"errors": "Not found"})

    # -- webhooks --------------------------------------------------------------------------------
    def _webhooks(self, request: Request, rest: list[str], body: dict[str, Any]) -> Response:
        company = body.get("company_id") if request.method in ("POST", "PATCH") else request.arg("company_id")
        if str(company) != str(self.company_id):
            return json_response(400, {"errors": "company_id is required"})
        if rest == ["resources"] and request.method == "GET":
            return json_response(200, [{"name": n} for n in self.webhook_resources])
        if rest[:1] != ["hooks"]:
            return json_response(404, {"errors": "Not found"})
        if rest == ["hooks"] and request.method == "GET":
            ns = request.arg("namespace")
            return json_response(200, [dict(h) for h in self.hooks.values() if ns in (None, "*", h["namespace"])])
        if rest == ["hooks"] and request.method == "POST":
            hook = body.get("hook") or {}
            ns = str(hook.get("namespace") or "")
            if not ns or not all(c.islower() or c.isdigit() or c == "-" for c in ns):
                return json_response(422, {"errors": {"namespace": ["is invalid"]}})
            rec = self._stamp({**hook, "company_id": self.company_id})
            self.hooks[rec["id"]] = rec
            return json_response(201, dict(rec))
        try:
            hid = int(rest[1])
        except (IndexError, ValueError):
            return json_response(404, {"errors": "Not found"})
        hook_rec = self.hooks.get(hid)
        if hook_rec is None:
            return json_response(404, {"errors": "Not found"})
        if len(rest) == 2 and request.method == "PATCH":
            hook_rec.update(body.get("hook") or {})
            return json_response(200, dict(hook_rec))
        if rest[2:] == ["triggers"] and request.method == "GET":
            return json_response(200, [dict(t) for t in self.triggers.values() if t["hook_id"] == hid])
        if rest[2:] == ["triggers"] and request.method == "POST":
            trig = body.get("trigger") or {}
            if trig.get("resource_name") not in self.webhook_resources or trig.get("event_type") not in (
                    "create", "update", "delete"):
                return json_response(422, {"errors": {"resource_name": ["is not a webhook resource"]}})
            rec = self._stamp({**trig, "hook_id": hid})
            self.triggers[rec["id"]] = rec
            return json_response(201, dict(rec))
        return json_response(404, {"errors": "Not found"})

    def delivery(self, resource_name: str, resource_id: int, project_id: int | None, event_type: str = "update",
                 ) -> dict[str, Any]:
        """The body Procore would POST for one event (v2 payload); send it twice to model a retried delivery."""
        return {"id": next(self._ids), "ulid": secrets.token_hex(13).upper(), "timestamp": self._now(),
                "metadata": {"source_user_id": 1, "source_company_id": self.company_id,
                             "source_project_id": project_id, "source_application_id": None},
                "user_id": 1, "company_id": self.company_id, "project_id": project_id, "api_version": "v2",
                "event_type": event_type, "resource_name": resource_name, "resource_id": resource_id}

    # -- direct costs and commitment change orders ------------------------------------------------
    def add_direct_cost(self, project_id: int, vendor_id: int | None, *, invoice_number: str, status: str = "approved",
                        lines: list[dict[str, Any]] | None = None, direct_cost_date: str = "2026-11-20"
                        ) -> dict[str, Any]:
        """A direct cost entered in Procore; each line: cost_code_id, amount, description, line_item_type_id."""
        with self._lock:
            rec = self._stamp({"direct_cost_type": "invoice", "vendor_id": vendor_id, "invoice_number": invoice_number,
                               "status": status, "direct_cost_date": direct_cost_date, "project_id": project_id})
            self.direct_costs[rec["id"]] = rec
            for ln in lines or []:
                li = self._stamp({**ln, "amount": _money(ln["amount"]), "direct_cost_id": rec["id"]})
                self.direct_cost_lines[li["id"]] = li
            return dict(rec)

    def add_change_order(self, project_id: int, contract_id: int, *, number: str, status: str = "approved",
                         lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A commitment change order (1- or 2-tier project); each line: cost_code_id, amount, description."""
        with self._lock:
            rec = self._stamp({"contract_id": contract_id, "number": number, "title": f"CO {number}", "status": status,
                               "project_id": project_id, "due_date": "2026-11-25",
                               "line_items": [{"id": next(self._ids), **ln, "amount": _money(ln["amount"])}
                                              for ln in lines or []]})
            self.change_orders[rec["id"]] = rec
            return dict(rec)

    def _project_costs(self, request: Request, parts: list[str], body: dict[str, Any], version: str) -> Response:
        try:
            pid = int(parts[1])
        except ValueError:
            return json_response(404, {"errors": "Not found"})
        if pid not in self.projects:
            return json_response(404, {"errors": "Project not found"})
        if pid not in self.permitted:
            return json_response(403, {"errors": "You do not have access to this project"})
        rest = parts[3:]
        if parts[2] == "commitment_change_orders":
            if request.method != "GET":
                return json_response(404, {"errors": "Not found"})
            if not rest:
                rows = [{k: v for k, v in c.items() if k != "line_items"} for _, c in sorted(self.change_orders.items())
                        if c["project_id"] == pid]
                return self._list(request, rows)
            co = self.change_orders.get(int(rest[0])) if rest[0].isdigit() else None
            if co is None or co["project_id"] != pid:
                return json_response(404, {"errors": "Not found"})
            return json_response(200, dict(co))
        if not rest and request.method == "GET" and version == "v1.1":
            rows = self._filtered(request, [dict(d) for _, d in sorted(self.direct_costs.items())
                                            if d["project_id"] == pid])
            return json_response(400, {"errors": rows}) if isinstance(rows, str) else self._list(request, rows)
        if len(rest) == 1 and rest[0].isdigit() and request.method == "GET" and version == "v1.1":
            dc = self.direct_costs.get(int(rest[0]))
            if dc is None or dc["project_id"] != pid:
                return json_response(404, {"errors": "Not found"})
            return json_response(200, dict(dc))
        if rest == ["sync"] and request.method == "PATCH" and version == "v1.0":
            def check(row: dict[str, Any], target: Any) -> dict[str, Any] | None:
                return None if target is not None else {"id": ["is required to update a direct cost"]}

            return self._sync(body, self.direct_costs, "direct_costs", lambda row: None, check,
                              scope=lambda r: r.get("project_id") == pid)
        if len(rest) == 2 and rest[1] == "line_items" and request.method == "GET" and version == "v1.0":
            dc = self.direct_costs.get(int(rest[0])) if rest[0].isdigit() else None
            if dc is None or dc["project_id"] != pid:
                return json_response(404, {"errors": "Not found"})
            return self._list(request, [dict(li) for _, li in sorted(self.direct_cost_lines.items())
                                        if li["direct_cost_id"] == dc["id"]])
        return json_response(404, {"errors": "Not found"})
