"""Loopback simulator of the JD Edwards AIS Server subset that ml-connector uses.

Host an instance with ``SandboxServer(JdeSim())``. It keeps AIS's awkward parts on purpose (reference
jde-ais.md): tokens at userInfo.token bound to a device name, HTTP 444 for an expired or unknown
token, F4801 rows keyed ``F4801_DOCO`` with space-padded strings and dates rendered as ``yyyyMMdd``
while they are stored as Julian CYYDDD, condition literals in the user's date format (MM/dd/yyyy),
``maxPageSize`` with ``moreRecords`` and next-page links bound to the session, result sets that
expire (HTTP 500, JAS_MSG347), and an orchestration endpoint that records calls and can fail.
"""

from __future__ import annotations

import base64
import copy
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

from mlconnector.jde.julian import date_to_julian, julian_to_date, parse_date_literal, time_to_jde
from mlconnector.sandbox.server import Request, Response, json_response

USER = "JDE_SYNC"
PASSWORD = "sandbox-jde-password"
ENVIRONMENT = "JPD920"
ROLE = "*ALL"
ORCHESTRATION = "ML_JIRA_STATUS_UPDATE"
DATE_COLUMNS = {"UPMJ", "DRQJ", "STRT", "TRDJ"}
PADDED = {"DL01": 30, "MMCU": 12}  # right/left padding like the real tables
DESCRIPTIONS = ["Rebuild pump", "Machine housing", "Weld frame", "Paint line 2", "Replace bearings", "Assemble gearbox",
                "Calibrate press", "Cut sheet stock", "Overhaul compressor", "Drill manifold"]
ECO_DESCRIPTIONS = ["Change bolt spec", "New gasket material", "Revise drawing rev C", "Substitute motor"]
ASSIGNEES = [6001, 6002, 6003]


@dataclass
class _Token:
    value: str
    user: str
    device: str
    expires: float
    uses: int = 0


@dataclass
class _ResultSet:
    rows: list[dict[str, Any]]
    offset: int
    page_size: int
    table: str
    columns: list[str]
    token: str
    created: float


@dataclass
class OrchestrationCall:
    name: str
    inputs: dict[str, str]
    user: str


@dataclass
class JdeSim:
    users: dict[str, str] = field(default_factory=lambda: {USER: PASSWORD})
    environment: str = ENVIRONMENT
    seed: int = 11
    work_orders: int = 12
    change_orders: int = 4
    token_ttl: float = 3600.0  # seconds
    result_set_ttl: float = 60.0
    page_cap: int = 2000  # jas.ini DB fetch limit: "No Max" and big pages are capped here
    orchestrations: tuple[str, ...] = (ORCHESTRATION,)
    utc_offset: timezone = UTC
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self.tokens: dict[str, _Token] = {}
        self.result_sets: dict[str, _ResultSet] = {}
        self.tables: dict[str, list[dict[str, Any]]] = {"F4801": []}
        self.calls: list[OrchestrationCall] = []
        self.logins = 0
        self.logouts = 0
        self.data_requests = 0
        self.fail_orchestration_next = 0  # answer this many calls with HTTP 500 (nothing applied)
        self.error_orchestration_next = 0  # answer this many with HTTP 200 + jde__status ERROR
        self.expire_tokens_after_requests: int | None = None  # one-shot: invalidate all tokens after N data calls
        self.expire_result_sets_next = 0  # the next N next-page calls find their result set expired
        self.basic_allowed = True
        rng = random.Random(self.seed)
        base = self.now().date() - timedelta(days=30)
        doco = 500100
        for i in range(self.work_orders + self.change_orders):
            eco = i >= self.work_orders
            doco += 1
            upd = base + timedelta(days=rng.randrange(0, 29))
            self.tables["F4801"].append({
                "DOCO": doco, "DCTO": "EN" if eco else "WO", "SFXO": "000", "KCOO": "00001",
                "DL01": rng.choice(ECO_DESCRIPTIONS if eco else DESCRIPTIONS),
                "SRST": rng.choice(["10", "40", "45"]) if not eco else rng.choice(["10", "40"]),
                "PRTS": rng.choice(["1", "2", "3", "4"]), "TYPS": "1",
                "DRQJ": date_to_julian(upd + timedelta(days=rng.randrange(5, 40))),
                "TRDJ": date_to_julian(upd), "STRT": date_to_julian(upd),
                "ANP": rng.choice(ASSIGNEES), "MMCU": "M30", "REAS": "C1" if eco else "",
                "UPMJ": date_to_julian(upd),
                "TDAY": rng.randrange(6, 18) * 10000 + rng.randrange(60) * 100 + rng.randrange(60),
                "USER": "SCHED01", "PID": "P48013",
            })

    # -- clock / data helpers (test-facing) ---------------------------------------------------
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), self.utc_offset)

    def _stamp(self, row: dict[str, Any]) -> None:
        now = self.now()
        jd, hhmmss = date_to_julian(now.date()), time_to_jde(now.time())
        # Two updates within one second would share (UPMJ, TDAY); keep them ordered like a real audit stamp.
        if (jd, hhmmss) <= (row.get("UPMJ", 0), row.get("TDAY", 0)):
            jd, hhmmss = row["UPMJ"], row["TDAY"] + 1
        row["UPMJ"], row["TDAY"] = jd, hhmmss

    def rows(self, table: str = "F4801", order_type: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.tables[table] if order_type is None or r.get("DCTO") == order_type]

    def order(self, doco: int, dcto: str = "WO") -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._order(doco, dcto))

    def _order(self, doco: int, dcto: str) -> dict[str, Any]:
        for r in self.tables["F4801"]:
            if int(r["DOCO"]) == int(doco) and r["DCTO"] == dcto:
                return r
        raise KeyError((doco, dcto))

    def touch(self, doco: int, dcto: str = "WO", **changes: Any) -> None:
        """Change an order the way a scheduler in JDE would: new values and a new UPMJ/TDAY."""
        with self._lock:
            row = self._order(doco, dcto)
            row.update(changes)
            self._stamp(row)

    def add_orders(self, n: int, dcto: str = "WO") -> list[int]:
        with self._lock:
            start = max(int(r["DOCO"]) for r in self.tables["F4801"]) + 1
            out = []
            for i in range(n):
                row = {"DOCO": start + i, "DCTO": dcto, "SFXO": "000", "KCOO": "00001", "DL01": f"Bulk order {i}",
                       "SRST": "10", "PRTS": "3", "TYPS": "1", "DRQJ": date_to_julian(self.now().date()),
                       "TRDJ": 0, "STRT": 0, "ANP": 0, "MMCU": "M30", "REAS": "", "UPMJ": 0, "TDAY": 0,
                       "USER": "SCHED01", "PID": "P48013"}
                self._stamp(row)
                self.tables["F4801"].append(row)
                out.append(start + i)
            return out

    def expire_all_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()
            self.result_sets.clear()

    def calls_for(self, order_number: int | str) -> list[OrchestrationCall]:
        with self._lock:
            return [c for c in self.calls if str(c.inputs.get("OrderNumber")) == str(order_number)]

    # -- dispatch -----------------------------------------------------------------------------
    def __call__(self, req: Request) -> Response:
        path = req.path
        routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/jderest/v2/defaultconfig"): self._defaultconfig,
            ("POST", "/jderest/v2/tokenrequest"): self._tokenrequest,
            ("POST", "/jderest/v2/tokenrequest/logout"): self._logout,
            ("POST", "/jderest/v2/tokenrequest/validate"): self._validate,
            ("POST", "/jderest/v2/dataservice"): self._dataservice,
            ("POST", "/jderest/v2/dataservice/next"): self._next,
            ("GET", "/jderest/discover"): self._discover,
        }
        with self._lock:
            handler = routes.get((req.method, path))
            if handler is not None:
                return handler(req)
            for prefix in ("/jderest/v3/orchestrator/", "/jderest/v2/orchestrator/", "/jderest/orchestrator/"):
                if path.startswith(prefix) and req.method == "POST":
                    return self._orchestrate(req, unquote(path[len(prefix):]))
        return _error(404, f"No AIS service at {req.method} {path}")

    # -- auth ---------------------------------------------------------------------------------
    def _defaultconfig(self, req: Request) -> Response:
        return json_response(200, {"aisVersion": "9.2.8.3", "defaultEnvironment": self.environment,
                                   "defaultRole": ROLE, "sessionTimeout": "30", "timeToLive": "720",
                                   "requiredCapabilityMissing": False,
                                   "capabilityList": [{"name": n, "shortDescription": n} for n in
                                                      ("dataservice", "orchestrator", "processingOption")]})

    def _tokenrequest(self, req: Request) -> Response:
        if "json" not in (req.header("content-type") or ""):
            return _error(415, "Content-Type must be application/json")
        body = req.json() or {}
        user, pw = body.get("username"), body.get("password")
        if self.users.get(str(user)) != pw or body.get("environment", self.environment) != self.environment:
            return _error(403, "Authorization Failure")
        device = str(body.get("deviceName") or "")
        tok = _Token("044" + secrets.token_hex(24), str(user), device, self.clock() + self.token_ttl)
        self.tokens[tok.value] = tok
        self.logins += 1
        return json_response(200, {
            "username": user, "environment": self.environment, "role": body.get("role", ROLE),
            "jasserver": "http://jas.sandbox:8080",
            "userInfo": {"token": tok.value, "langPref": "  ", "locale": "en", "dateFormat": "MDE",
                         "dateSeperator": "/", "simpleDateFormat": "MM/dd/yyyy", "decimalFormat": ".",
                         "addressNumber": 6000, "alphaName": "Jira Service", "appsRelease": "E920",
                         "username": user, "timeZoneOffset": 0},
            "userAuthorized": False, "version": None, "aisSessionCookie": secrets.token_hex(8),
            "adminAuthorized": False, "deprecated": False})

    def _logout(self, req: Request) -> Response:
        token = str((req.json() or {}).get("token") or req.header("jde-ais-auth") or "")
        if self.tokens.pop(token, None) is None:
            return _error(444, "Invalid Token")
        self.logouts += 1
        for rid in [r for r, rs in self.result_sets.items() if rs.token == token]:
            del self.result_sets[rid]
        return json_response(200, {"status": "Success"})

    def _validate(self, req: Request) -> Response:
        who = self._caller(req)
        return json_response(200, {"isValidSession": True}) if isinstance(who, str) else who

    def _caller(self, req: Request) -> str | Response:
        """The user behind a request, or the error response AIS would send."""
        auth = req.header("authorization") or ""
        if auth.lower().startswith("basic "):
            if not self.basic_allowed:
                return _error(403, "Basic authentication is not enabled on this AIS server")
            try:
                user, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except ValueError:
                return _error(403, "Authorization Failure")
            return user if self.users.get(user) == pw else _error(403, "Authorization Failure")
        value = req.header("jde-ais-auth") or ""
        tok = self.tokens.get(value)
        if tok is None or tok.expires <= self.clock():
            self.tokens.pop(value, None)
            return _error(444, "Invalid Token")
        if tok.device and req.header("jde-ais-auth-device") != tok.device:
            # A token requested with a deviceName is bound to it (reference 2.2).
            return _error(444, "Invalid Token: device mismatch")
        tok.uses += 1
        return tok.user

    def _count_data_request(self) -> None:
        self.data_requests += 1
        n = self.expire_tokens_after_requests
        if n is not None and self.data_requests >= n:
            self.expire_tokens_after_requests = None
            self.expire_all_tokens()  # the session dies mid-pass, as after an AIS restart or timeout

    # -- data service -------------------------------------------------------------------------
    def _dataservice(self, req: Request) -> Response:
        who = self._caller(req)
        if not isinstance(who, str):
            return who
        body = req.json() or {}
        if body.get("dataServiceType", "BROWSE") != "BROWSE":
            return _error(400, "Only BROWSE is simulated")
        table = str(body.get("targetName") or "")
        if table not in self.tables:
            return _error(500, f"Table {table} not found", sys_error=f"Invalid table {table}")
        cols = [c.split(".", 1)[1] for c in str(body.get("returnControlIDs") or "").split("|") if "." in c]
        known = set(self.tables[table][0]) if self.tables[table] else set()
        bad = [c for c in cols if c not in known]
        if bad:
            return _error(500, f"Invalid column {table}.{bad[0]}", sys_error=f"Invalid alias {bad[0]}")
        try:
            pred = self._query(table, body.get("query") or {})
        except ValueError as exc:
            return _error(400, str(exc))
        rows = [r for r in self.tables[table] if pred(r)]
        for spec in reversed((body.get("aggregation") or {}).get("orderBy") or []):
            col = str(spec.get("column", "")).split(".", 1)[-1]
            rows.sort(key=lambda r, c=col: r.get(c, 0), reverse=spec.get("direction") == "DESC")
        raw_size = str(body.get("maxPageSize") or "100")  # AIS default is 100 rows (pitfall 4)
        size = self.page_cap if raw_size == "No Max" else min(int(raw_size), self.page_cap)
        rows = [copy.deepcopy(r) for r in rows]
        token = req.header("jde-ais-auth") or ""
        paging = bool(body.get("enableNextPageProcessing")) and bool(token)
        rs = _ResultSet(rows, 0, size, table, cols or sorted(known), token, self.clock())
        self._count_data_request()
        return self._page_response(req, rs, paging)

    def _next(self, req: Request) -> Response:
        who = self._caller(req)
        if not isinstance(who, str):
            return who
        rid = req.arg("rid") or ""
        rs = self.result_sets.get(rid)
        expired = rs is None or self.clock() - rs.created > self.result_set_ttl
        if not expired and self.expire_result_sets_next > 0:
            self.expire_result_sets_next -= 1
            expired = True
        if expired or rs is None or rs.token != (req.header("jde-ais-auth") or ""):
            self.result_sets.pop(rid, None)
            return _error(500, "The query results expired", sys_error="JAS_MSG347: The query results expired. "
                                                                      "Please try the query again.")
        self._count_data_request()
        return self._page_response(req, rs, True, rid)

    def _page_response(self, req: Request, rs: _ResultSet, paging: bool, rid: str | None = None) -> Response:
        page = rs.rows[rs.offset:rs.offset + rs.page_size]
        rs.offset += len(page)
        more = rs.offset < len(rs.rows)
        links: list[dict[str, str]] = []
        if rid is not None:
            self.result_sets.pop(rid, None)
        if more and paging:
            rid = secrets.token_hex(6)
            rs.created = self.clock()
            self.result_sets[rid] = rs
            host = req.header("host", "127.0.0.1")
            links.append({"rel": "next", "href": f"http://{host}/jderest/v2/dataservice/next?stackId=1&stateId=1"
                                                 f"&rid={rid}&fullGridId=1&formOID=DATABROWSE_{rs.table}"
                                                 f"&outputType=GRID_DATA"})
        t = rs.table
        rowset = [{f"{t}_{c}": _render(c, r.get(c)) for c in rs.columns} for r in page]
        return json_response(200, {
            f"fs_DATABROWSE_{t}": {
                "title": f"Data Browser - {t}",
                "data": {"gridData": {"id": 1, "fullGridId": "1",
                                      "columns": {f"{t}_{c}": c for c in rs.columns},
                                      "rowset": rowset, "summary": {"records": len(rowset), "moreRecords": more}}},
                "errors": [], "warnings": []},
            "stackId": 1, "stateId": 1, "rid": rid or "", "currentApp": f"DATABROWSE_{t}", "sysErrors": [],
            "links": links})

    def _query(self, table: str, query: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
        conds = []
        for c in query.get("condition") or []:
            col = str(c.get("controlId", "")).split(".", 1)[-1]
            op = str(c.get("operator", ""))
            vals = [str(v.get("content", "")) for v in c.get("value") or []]
            conds.append(self._condition(col, op, vals))
        for sub in query.get("complexQuery") or []:
            conds.append(self._query(table, sub.get("query") or {}))
        if query.get("matchType", "MATCH_ALL") == "MATCH_ANY":
            return lambda r: any(p(r) for p in conds) if conds else True
        return lambda r: all(p(r) for p in conds)

    def _condition(self, col: str, op: str, vals: list[str]) -> Callable[[dict[str, Any]], bool]:
        def conv(v: str) -> Any:
            if col in DATE_COLUMNS:
                # Literals are read in the user's date format (MDE here), as the reference expects.
                try:
                    return date_to_julian(parse_date_literal(v, "MM/dd/yyyy"))
                except ValueError:
                    raise ValueError(f"Invalid date literal {v!r} for {col}; expected MM/dd/yyyy") from None
            return v

        cv = [conv(v) for v in vals]

        def cell(r: dict[str, Any]) -> Any:
            x = r.get(col)
            return x if col in DATE_COLUMNS else ("" if x is None else str(x).strip())

        def num(a: Any) -> Any:
            try:
                return float(a)
            except (TypeError, ValueError):
                return a

        ops: dict[str, Callable[[dict[str, Any]], bool]] = {
            "EQUAL": lambda r: num(cell(r)) == num(cv[0]),
            "NOT_EQUAL": lambda r: num(cell(r)) != num(cv[0]),
            "GREATER": lambda r: num(cell(r)) > num(cv[0]),
            "GREATER_EQUAL": lambda r: num(cell(r)) >= num(cv[0]),
            "LESS": lambda r: num(cell(r)) < num(cv[0]),
            "LESS_EQUAL": lambda r: num(cell(r)) <= num(cv[0]),
            "BETWEEN": lambda r: num(cv[0]) <= num(cell(r)) <= num(cv[1]),
            "LIST": lambda r: cell(r) in [str(x) for x in cv],
        }
        if op not in ops:
            raise ValueError(f"Unsupported operator {op}")
        return ops[op]

    # -- orchestrations -----------------------------------------------------------------------
    def _discover(self, req: Request) -> Response:
        who = self._caller(req)
        if not isinstance(who, str):
            return who
        return json_response(200, {"orchestrations": [{"name": n, "version": "v3", "description": ""}
                                                      for n in self.orchestrations]})

    def _orchestrate(self, req: Request, name: str) -> Response:
        who = self._caller(req)
        if not isinstance(who, str):
            return who
        if name not in self.orchestrations:
            return _error(404, f"Orchestration {name} not found")
        body = req.json() or {}
        if isinstance(body, dict) and isinstance(body.get("inputs"), list):
            inputs = {str(i.get("name")): str(i.get("value")) for i in body["inputs"]}
        else:
            inputs = {str(k): str(v) for k, v in (body or {}).items()}
        if self.fail_orchestration_next > 0:
            self.fail_orchestration_next -= 1
            return _error(500, "Orchestration failed", user_text="Work order is locked by another user")
        self.calls.append(OrchestrationCall(name, inputs, who))
        if self.error_orchestration_next > 0:
            self.error_orchestration_next -= 1
            return json_response(200, {"WO Update": {"fs_P48013_W48013A": {
                "errors": [{"CODE": "0002", "TITLE": "Invalid status", "DESC": "Status code is not valid"}],
                "warnings": []}}, "jde__status": "ERROR"})
        try:
            row = self._order(int(inputs.get("OrderNumber", "0")), inputs.get("OrderType", "WO"))
        except (KeyError, ValueError):
            return _error(500, "Order not found", user_text=f"Work order {inputs.get('OrderNumber')} not found")
        row["SRST"] = inputs.get("NewStatus", row["SRST"])
        self._stamp(row)
        return json_response(200, {"WO Update": {"fs_P48013_W48013A": {"errors": [], "warnings": []}},
                                   "jde__status": "SUCCESS", "jde__simpleMessage": "Work order status updated",
                                   "jde__serverExecutionSeconds": 0.01})


def _render(col: str, value: Any) -> Any:
    if col in DATE_COLUMNS:
        d: date | None = julian_to_date(value or 0)
        return d.strftime("%Y%m%d") if d else ""
    if col in PADDED and isinstance(value, str):
        return value.rjust(PADDED[col]) if col == "MMCU" else value.ljust(PADDED[col])
    return value


def _error(status: int, message: str, *, sys_error: str | None = None, user_text: str | None = None) -> Response:
    body: dict[str, Any] = {"message": message, "exception": "Exception", "status": "ERROR",
                            "timeStamp": datetime.now(UTC).isoformat()}
    if sys_error:
        body["sysErrors"] = [{"CODE": sys_error.split(":")[0], "TITLE": sys_error, "DESC": sys_error}]
    if user_text:
        body["userDefinedErrorText"] = user_text
    return json_response(status, body)


# -- a JDE + Jira sandbox, as the tests and the demo use it ----------------------------------------
@dataclass
class JdeSandbox:
    jde: JdeSim
    jira: Any  # JiraSim
    jde_server: Any  # SandboxServer
    jira_server: Any
    search_lag: float = 0.0  # seconds Jira's search trails its writes (see JiraSim)
    create_cost: float = 0.0  # seconds of Jira's work per issue created (see JiraSim)

    def stop(self) -> None:
        self.jde_server.stop()
        self.jira_server.stop()

    def __enter__(self) -> JdeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def env() -> dict[str, str]:
        from mlconnector.sandbox.accounts import JIRA_TOKEN

        return {"MLCONNECTOR_JDE_PASSWORD": PASSWORD, "MLCONNECTOR_JIRA_API_TOKEN": JIRA_TOKEN,
                "MLCONNECTOR_JIRA_WEBHOOK_SECRET": "sandbox-webhook-secret"}

    def config_text(self, state_file: Any = None, *, extra_jde: str = "", extra_jira: str = "",
                    fast_retries: bool = True) -> str:
        from mlconnector.sandbox.accounts import JIRA_EMAIL, settle_for

        retry = ("max_attempts = 3\nbackoff_initial = 0.02\nbackoff_max = 0.2\nread_timeout = 10\n"
                 if fast_retries else "")
        since = (self.jde.now().date() - timedelta(days=90)).isoformat()
        lines = ['instance = "jde-sandbox"']
        if fast_retries:  # the tests' setting: each test that wants the first-pass checks turns them on
            lines.append("preflight = false")
        if state_file is not None:
            lines.append(f'state_file = "{state_file.as_posix()}"')
        return "\n".join(lines) + f"""

[jde]
base_url = "{self.jde_server.url}"
environment = "{ENVIRONMENT}"
role = "{ROLE}"
user = "{USER}"
max_page_size = 5
{retry}{extra_jde}
[jde.work_orders]
initial_since = "{since}"

[jde.change_orders]
initial_since = "{since}"

[jde.assignee_map]
6001 = "user-floor-1"
6002 = "user-floor-2"

[jira]
site = "{self.jira_server.url}"
email = "{JIRA_EMAIL}"
project = "PROC"
settle_seconds = {settle_for(self.search_lag, self.create_cost)}
{retry}{extra_jira}
"""


def start_jde_sandbox(*, seed: int = 11, work_orders: int = 12, change_orders: int = 4, latency: float = 0.0,
                      request_validator: Callable[[Any], None] | None = None,
                      search_lag: float = 0.0, create_cost: float = 0.0) -> JdeSandbox:
    from mlconnector.sandbox.accounts import JIRA_EMAIL, JIRA_TOKEN
    from mlconnector.sandbox.jira_sim import JiraSim
    from mlconnector.sandbox.server import SandboxServer

    jde = JdeSim(seed=seed, work_orders=work_orders, change_orders=change_orders)
    jira = JiraSim(email=JIRA_EMAIL, api_token=JIRA_TOKEN, request_validator=request_validator,
                   search_lag=search_lag, create_cost=create_cost)
    jde_server = SandboxServer(jde, "jde", latency=latency).start()
    jira_server = SandboxServer(jira, "jira", latency=latency).start()
    return JdeSandbox(jde, jira, jde_server, jira_server, search_lag=search_lag, create_cost=create_cost)
