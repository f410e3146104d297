"""Loopback simulator of the Jira Cloud REST API v3 subset that ml-connector uses.

Host an instance with ``SandboxServer(JiraSim())``. The simulator keeps Jira's awkward parts on
purpose (ADF-only rich text, opaque search cursors, 0-based ``failedElementNumber``, times rendered
in the user's zone, ``~`` being a word match rather than a substring match, ``!=`` skipping empty
fields) so the connector meets them here before it meets them on a real site.
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime as dt
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from mlconnector.sandbox.server import Request, Response, json_response

API = "/rest/api/3"
CF = "com.atlassian.jira.plugin.system.customfieldtypes:"
BOT_ACCOUNT = "712020:5c1d-sync-bot"

ISSUE_TYPES = [("10001", "Purchase Requisition"), ("10002", "Purchase Order"), ("10003", "Vendor Invoice"),
               ("10004", "Task"), ("10005", "Work Order"), ("10006", "Change Order")]
PRIORITIES = [("1", "Highest"), ("2", "High"), ("3", "Medium"), ("4", "Low"), ("5", "Lowest")]
STATUS_CATEGORIES = {"new": (2, "To Do"), "indeterminate": (4, "In Progress"), "done": (3, "Done")}
STATUSES = [("10000", "To Do", "new"), ("10001", "Pending Approval", "indeterminate"),
            ("10002", "Approved", "indeterminate"), ("10003", "In Progress", "indeterminate"),
            ("10004", "Blocked", "indeterminate"), ("10005", "Denied", "done"), ("10006", "Done", "done"),
            ("10007", "Cancelled", "done")]
# Transition names deliberately differ from status names: clients must resolve by ``to``.
TRANSITIONS = [("11", "Reopen", "10000"), ("21", "Submit for approval", "10001"), ("31", "Approve", "10002"),
               ("41", "Start", "10003"), ("51", "Block", "10004"), ("61", "Deny", "10005"),
               ("71", "Complete", "10006"), ("81", "Cancel", "10007")]


@dataclass(frozen=True)
class WorkflowTransition:
    """One transition of a workflow: from these status ids (``None``: global, from any status) to one status.

    ``required`` names the screen fields Jira insists on (the transition answers 400 without them)."""

    id: str
    name: str
    sources: tuple[str, ...] | None
    to: str
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workflow:
    """A classic workflow: its start status (the ``Create`` transition's target) and its transitions."""

    name: str
    initial: str
    transitions: tuple[WorkflowTransition, ...]

    def statuses(self) -> list[str]:
        ids = {self.initial} | {t.to for t in self.transitions}
        ids |= {s for t in self.transitions for s in t.sources or ()}
        return [s[0] for s in STATUSES if s[0] in ids]

    def available(self, status: str) -> list[WorkflowTransition]:
        return [t for t in self.transitions
                if t.to != status and (t.sources is None or status in t.sources)]


_T = WorkflowTransition
# Procurement approval: no shortcut from To Do to Approved, Denied or Done (two hops each); blocking
# an issue needs a screen field. Work orders: To Do -> In Progress -> Done, Cancel from anywhere.
APPROVAL_WORKFLOW = Workflow("Procurement Approval", "10000", (
    _T("21", "Submit for approval", ("10000", "10002"), "10001"),
    _T("41", "Start", ("10000", "10002", "10004"), "10003"),
    _T("31", "Approve", ("10001",), "10002"), _T("61", "Deny", ("10001",), "10005"),
    _T("71", "Complete", ("10002", "10003"), "10006"), _T("51", "Block", ("10003",), "10004", ("resolution",)),
    _T("11", "Reopen", ("10001", "10005", "10006", "10007"), "10000"),
    _T("81", "Cancel", ("10000", "10001", "10002", "10003", "10004"), "10007")))
WORK_WORKFLOW = Workflow("Work Order Flow", "10000", (
    _T("41", "Start", ("10000", "10004"), "10003"), _T("51", "Block", ("10003",), "10004"),
    _T("71", "Complete", ("10003",), "10006"), _T("11", "Reopen", ("10006", "10007"), "10000"),
    _T("81", "Cancel", None, "10007")))
# Every status to every other in one hop, as the sandbox had before workflows (JiraSim(workflows="open")).
OPEN_WORKFLOW = Workflow("Open", "10000", tuple(_T(t, n, None, s) for t, n, s in TRANSITIONS))
WORKFLOW_SCHEMES: dict[str, dict[str, Workflow]] = {
    "multi-hop": {"10001": APPROVAL_WORKFLOW, "10002": APPROVAL_WORKFLOW, "10003": APPROVAL_WORKFLOW,
                  "10004": WORK_WORKFLOW, "10005": WORK_WORKFLOW, "10006": WORK_WORKFLOW},
    "open": {t: OPEN_WORKFLOW for t, _ in ISSUE_TYPES},
}
SCREEN_FIELD_NAMES = {"resolution": "Resolution"}
# (id, name, custom type, schema type, JQL clause names)
SYSTEM_FIELDS = [
    ("summary", "Summary", "string", ["summary"]), ("description", "Description", "string", ["description"]),
    ("issuetype", "Issue Type", "issuetype", ["issuetype", "type"]), ("project", "Project", "project", ["project"]),
    ("labels", "Labels", "array", ["labels"]), ("priority", "Priority", "priority", ["priority"]),
    ("duedate", "Due date", "date", ["due", "duedate"]), ("assignee", "Assignee", "user", ["assignee"]),
    ("status", "Status", "status", ["status"]), ("created", "Created", "datetime", ["created", "createdDate"]),
    ("updated", "Updated", "datetime", ["updated", "updatedDate"]),
    ("comment", "Comment", "comments-page", ["comment"]),
]
CUSTOM_FIELDS = [("customfield_10050", "ERP Key", "textfield"), ("customfield_10051", "Amount", "float"),
                 ("customfield_10052", "Vendor", "textfield"), ("customfield_10053", "Invoice Number", "textfield"),
                 ("customfield_10054", "Approval Status", "textfield"),
                 ("customfield_10055", "Vendor Details", "textarea"), ("customfield_10056", "Currency", "textfield"),
                 ("customfield_10057", "Requester", "textfield"), ("customfield_10058", "Order Date", "datepicker")]
CUSTOM_SCHEMA = {"textfield": "string", "textarea": "string", "float": "number", "datepicker": "date"}
SETTABLE = {"summary", "description", "issuetype", "project", "labels", "priority", "duedate", "assignee"}
USERS = {BOT_ACCOUNT: "ML Sync Bot", "user-floor-1": "Dana Floor", "user-floor-2": "Sam Buyer"}

NOT_ON_SCREEN = "Field '{}' cannot be set. It is not on the appropriate screen, or unknown."
NOT_ADF = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
NO_ISSUE = "Issue does not exist or you do not have permission to see it."


class ApiError(Exception):
    """Unwinds a handler into an ErrorCollection response."""

    def __init__(self, status: int, messages: Iterable[str] = (), errors: dict[str, str] | None = None):
        super().__init__(status, list(messages), errors or {})
        self.status, self.messages, self.errors = status, list(messages), errors or {}


def _error_body(messages: list[str], errors: dict[str, str]) -> dict[str, Any]:
    return {"errorMessages": messages, "errors": errors}


# -- ADF --------------------------------------------------------------------------------------------
_BLOCKS = {"paragraph", "heading", "bulletList", "orderedList", "blockquote", "codeBlock", "rule", "table", "panel"}
_INLINES = {"text", "hardBreak", "mention", "emoji", "inlineCard"}
_NESTED = {"paragraph", "bulletList", "orderedList", "codeBlock"}
_CHILDREN: dict[str, set[str]] = {
    "doc": _BLOCKS, "paragraph": _INLINES, "heading": _INLINES, "bulletList": {"listItem"},
    "orderedList": {"listItem"}, "listItem": _NESTED, "blockquote": _NESTED, "codeBlock": {"text"},
    "panel": _NESTED | {"heading", "rule"}, "table": {"tableRow"}, "tableRow": {"tableHeader", "tableCell"},
    "tableHeader": _BLOCKS - {"table"}, "tableCell": _BLOCKS - {"table"},
}
_NON_EMPTY = {"bulletList", "orderedList", "listItem", "blockquote", "panel", "table", "tableRow"}
_MARKS = {"strong", "em", "code", "link", "strike", "underline", "textColor", "subsup"}


def adf_problem(doc: Any) -> str | None:
    """Return why ``doc`` is not acceptable ADF, or None when it is."""
    if not isinstance(doc, dict) or doc.get("type") != "doc":
        return NOT_ADF
    if doc.get("version") != 1:
        return "INVALID_INPUT: doc.version must be 1"
    return _adf_node_problem(doc, None, "doc")


def _adf_node_problem(node: Any, parent: str | None, path: str) -> str | None:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return f"INVALID_INPUT: {path} is not an ADF node"
    kind = node["type"]
    if parent is not None and kind not in _CHILDREN.get(parent, set()):
        return f"INVALID_INPUT: {path}: node '{kind}' is not allowed inside '{parent}'"
    attrs = node.get("attrs") or {}
    if kind == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            return f"INVALID_INPUT: {path}: text nodes must have non-empty text"
        for mark in node.get("marks") or []:
            if not isinstance(mark, dict) or mark.get("type") not in _MARKS:
                return f"INVALID_INPUT: {path}: unsupported mark {mark!r}"
            if mark["type"] == "link" and not isinstance((mark.get("attrs") or {}).get("href"), str):
                return f"INVALID_INPUT: {path}: link marks need attrs.href"
    if kind == "heading" and attrs.get("level") not in range(1, 7):
        return f"INVALID_INPUT: {path}: heading attrs.level must be 1-6"
    content = node.get("content")
    if kind not in _CHILDREN:
        return f"INVALID_INPUT: {path}: '{kind}' cannot have content" if content else None
    if content is None and kind in ("paragraph", "heading", "codeBlock"):
        return None
    if not isinstance(content, list) or (kind in _NON_EMPTY and not content):
        return f"INVALID_INPUT: {path}.content must be a{' non-empty' if kind in _NON_EMPTY else 'n'} array"
    for i, child in enumerate(content):
        problem = _adf_node_problem(child, kind, f"{path}.content[{i}]")
        if problem:
            return problem
    return None


def adf_text(doc: Any) -> str:
    """Flatten ADF to plain text (changelog strings and ``~`` search)."""
    if not isinstance(doc, dict):
        return "" if doc is None else str(doc)
    if doc.get("type") == "text":
        return str(doc.get("text", ""))
    if doc.get("type") == "hardBreak":
        return "\n"
    parts = [adf_text(c) for c in doc.get("content") or []]
    return ("\n" if doc.get("type") in ("doc", "bulletList", "orderedList", "listItem") else "").join(parts)


def text_to_adf(text: str) -> dict[str, Any]:
    paras = [{"type": "paragraph", "content": [{"type": "text", "text": line}]}
             for line in text.splitlines() if line.strip()]
    return {"type": "doc", "version": 1, "content": paras}


# -- state --------------------------------------------------------------------------------------
@dataclass
class _Field:
    id: str
    name: str
    kind: str  # schema.type for system fields, the custom type suffix for custom ones
    custom: bool
    clauses: list[str]

    def meta(self) -> dict[str, Any]:
        if self.custom:
            num = int(self.id.rsplit("_", 1)[1])
            schema: dict[str, Any] = {"type": CUSTOM_SCHEMA[self.kind], "custom": CF + self.kind, "customId": num}
        else:
            schema = {"type": self.kind, "system": self.id}
            if self.kind == "array":
                schema["items"] = "string"
        return {"id": self.id, "key": self.id, "name": self.name, "custom": self.custom, "orderable": True,
                "navigable": True, "searchable": True, "clauseNames": self.clauses, "schema": schema}


@dataclass
class _Issue:
    id: str
    key: str
    num: int
    fields: dict[str, Any]  # stored values; references (issuetype, priority, assignee) by id
    status: str
    created: int  # epoch ms
    updated: int
    comments: list[dict[str, Any]] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    histories: list[dict[str, Any]] = field(default_factory=list)


class JiraSim:
    """A single-project Jira Cloud site; instances are ``app(request) -> Response`` callables.

    Workflows are per issue type (``workflows``: "multi-hop", the default, or "open", or a mapping of
    issue type id -> ``Workflow``): the transitions endpoint lists only the current status's way out, a
    transition not available from the current status is refused with 400, as is a create whose
    ``transition`` does not leave the workflow's start status, and a transition with required screen
    fields answers 400 naming them. The workflow graph itself is readable through the admin endpoints
    (``/workflowscheme/project``, ``/workflow/search``) only while ``workflow_admin`` is true (the sync
    user holding *Administer Jira*); otherwise they answer 403. ``priorities`` replaces the site's
    priority list (a misconfigured site lacks one the configuration names).
    """

    def __init__(self, email: str = "sync-bot@example.com", api_token: str = "sandbox-jira-token",
                 project_key: str = "PROC", bearer_tokens: set[str] | None = None,
                 request_validator: Callable[[Request], None] | None = None,
                 duplicate_field_name: str | None = None, time_zone: str = "Europe/Berlin",
                 clock: Callable[[], float] = time.time, workflows: str | dict[str, Workflow] = "multi-hop",
                 workflow_admin: bool = True, priorities: list[tuple[str, str]] | None = None,
                 search_lag: float = 0.0, create_cost: float = 0.0) -> None:
        self.email, self.api_token, self.project_key = email, api_token, project_key
        self.workflows = dict(WORKFLOW_SCHEMES[workflows] if isinstance(workflows, str) else workflows)
        self.workflow_admin = workflow_admin
        self.priorities = list(PRIORITIES if priorities is None else priorities)
        self.bearer_tokens = set(bearer_tokens or ())
        self.request_validator = request_validator
        self.tz = ZoneInfo(time_zone)
        self.time_zone = time_zone
        self.clock = clock
        # Jira's search index is eventually consistent: an issue created less than this many seconds ago
        # is not yet found by /search/jql (GET /issue/{key} sees it at once).
        self.search_lag = search_lag
        # Jira's own work per issue created (validation, indexing, events): a bulk create of n issues takes
        # n * create_cost seconds and creates them one after the other, so a client that gives up (or is
        # killed) mid-request still finds issues appearing after it. Paid outside the lock: concurrent
        # requests, creates included, are served in parallel as on a Jira Cloud cluster. 0 (the default)
        # keeps the unit tests instant; the benchmarks and the chaos harness set a realistic value.
        self.create_cost = create_cost
        self.project = {"id": "10000", "key": project_key, "name": "Procurement"}
        self.fields: dict[str, _Field] = {f[0]: _Field(f[0], f[1], f[2], False, f[3]) for f in SYSTEM_FIELDS}
        customs = list(CUSTOM_FIELDS)
        if duplicate_field_name:
            customs.append(("customfield_10059", duplicate_field_name, "textfield"))
        for fid, name, kind in customs:
            self.fields[fid] = _Field(fid, name, kind, True, [f"cf[{fid.rsplit('_', 1)[1]}]", name])
        self.writes = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.RLock()
        self._issues: dict[str, _Issue] = {}
        self._by_key: dict[str, str] = {}
        self._numbered = 0
        self._seq = 0
        self._next_id = 10000
        self._last_ms = 0
        self._cursors: dict[str, tuple[str, list[str], int]] = {}
        self._routes = [
            ("GET", "/myself", self._myself), ("GET", "/field", self._field_list),
            ("GET", "/project/{projectIdOrKey}", self._get_project),
            ("GET", "/project/{projectIdOrKey}/statuses", self._project_statuses),
            ("GET", "/issue/createmeta/{projectIdOrKey}/issuetypes", self._createmeta_types),
            ("GET", "/issue/createmeta/{projectIdOrKey}/issuetypes/{issueTypeId}", self._createmeta_fields),
            ("POST", "/issue", self._create), ("POST", "/issue/bulk", self._bulk_create),
            ("GET", "/issue/{issueIdOrKey}", self._get_issue), ("PUT", "/issue/{issueIdOrKey}", self._edit),
            ("GET", "/issue/{issueIdOrKey}/transitions", self._get_transitions),
            ("POST", "/issue/{issueIdOrKey}/transitions", self._do_transition),
            ("GET", "/issue/{issueIdOrKey}/comment", self._get_comments),
            ("POST", "/issue/{issueIdOrKey}/comment", self._add_comment),
            ("GET", "/issue/{issueIdOrKey}/properties", self._list_properties),
            ("GET", "/issue/{issueIdOrKey}/properties/{propertyKey}", self._get_property),
            ("PUT", "/issue/{issueIdOrKey}/properties/{propertyKey}", self._set_property),
            ("DELETE", "/issue/{issueIdOrKey}/properties/{propertyKey}", self._delete_property),
            ("GET", "/issue/{issueIdOrKey}/changelog", self._changelog),
            ("GET", "/workflowscheme/project", self._workflow_scheme),
            ("GET", "/workflow/search", self._workflow_search),
            ("GET", "/search/jql", self._search), ("POST", "/search/jql", self._search),
            ("GET", "/search", self._removed_search), ("POST", "/search", self._removed_search),
        ]
        self._compiled = [(m, API + t, re.compile("^" + re.sub(r"\{\w+\}", "([^/]+)", API + t) + "$"), h)
                          for m, t, h in self._routes]

    # -- dispatch -----------------------------------------------------------------------------
    def __call__(self, req: Request) -> Response:
        matched = [(m, tpl, rx.match(req.path), h) for m, tpl, rx, h in self._compiled]
        matched = [x for x in matched if x[2]]
        route = next((x for x in matched if x[0] == req.method), None)
        with self._lock:
            self.calls[f"{req.method} {route[1] if route else req.path}"] += 1
        if route is None:
            if matched:
                return json_response(405, _error_body(["Method Not Allowed"], {}))
            return json_response(404, _error_body([f"null for uri: {req.path}"], {}))
        if self._caller(req) is None:
            return json_response(401, _error_body(["Client must be authenticated to access this resource."], {}),
                                 {"WWW-Authenticate": 'Basic realm="protected-area"'})
        try:
            if self.request_validator is not None:
                try:
                    self.request_validator(req)
                except Exception as exc:  # any validator complaint is the client's fault, like Jira's 400s
                    raise ApiError(400, [str(exc)]) from exc
            body: Any = None
            if req.method in ("POST", "PUT") and req.body:
                if "json" not in (req.header("content-type") or ""):
                    raise ApiError(415, ["Unsupported Media Type: send application/json"])
                try:
                    body = req.json()
                except ValueError as exc:
                    raise ApiError(400, [f"Unexpected character in request body: {exc}"]) from exc
            args = [unquote(a) for a in route[2].groups()]
            if route[3] in (self._create, self._bulk_create):
                return route[3](req, body, *args)  # they take the lock per issue (see create_cost)
            with self._lock:
                return route[3](req, body, *args)
        except ApiError as err:
            return json_response(err.status, _error_body(err.messages, err.errors))

    def _caller(self, req: Request) -> str | None:
        auth = req.header("authorization") or ""
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "bearer" and cred.strip() in self.bearer_tokens:
            return BOT_ACCOUNT
        if scheme.lower() == "basic":
            try:
                user, _, token = base64.b64decode(cred.strip()).decode("utf-8").partition(":")
            except ValueError:
                return None
            if user == self.email and token == self.api_token:
                return BOT_ACCOUNT
        return None

    # -- small helpers ------------------------------------------------------------------------------
    def _tick(self) -> int:
        # Strictly increasing so that every write moves `updated` even within one millisecond.
        self._last_ms = max(int(self.clock() * 1000), self._last_ms + 1)
        return self._last_ms

    def _fmt_ts(self, ms: int) -> str:
        # Jira renders times in the caller's profile zone, not UTC; clients must honour the offset.
        moment = dt.datetime.fromtimestamp(ms / 1000, self.tz)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}" + moment.strftime("%z")

    @staticmethod
    def _user(account_id: str | None) -> dict[str, Any] | None:
        if account_id is None:
            return None
        return {"accountId": account_id, "displayName": USERS.get(account_id, account_id), "active": True,
                "accountType": "atlassian"}

    def _status(self, sid: str) -> dict[str, Any]:
        _, name, cat = next(s for s in STATUSES if s[0] == sid)
        cid, cname = STATUS_CATEGORIES[cat]
        return {"id": sid, "name": name, "untranslatedName": name, "description": "",
                "statusCategory": {"id": cid, "key": cat, "name": cname}}

    def _issue_type(self, tid: str) -> dict[str, Any]:
        name = dict(ISSUE_TYPES)[tid]
        return {"id": tid, "name": name, "subtask": False, "hierarchyLevel": 0, "description": ""}

    def _find(self, id_or_key: str) -> _Issue:
        iid = id_or_key if id_or_key in self._issues else self._by_key.get(id_or_key.upper())
        if iid is None:
            raise ApiError(404, [NO_ISSUE])
        return self._issues[iid]

    def _check_project(self, ref: str) -> None:
        if ref not in (self.project["id"], self.project_key) and ref.upper() != self.project_key:
            raise ApiError(404, [f"No project could be found with key '{ref}'."])

    @staticmethod
    def _paging(req: Request, default: int, limit: int | None = None) -> tuple[int, int]:
        try:
            start = int(req.arg("startAt", "0") or 0)
            size = int(req.arg("maxResults", str(default)) or default)
        except ValueError as exc:
            raise ApiError(400, ["startAt and maxResults must be integers."]) from exc
        if limit is not None and size > limit:
            raise ApiError(400, [f"Parameter 'maxResults' must not exceed the limit '{limit}'."])
        if start < 0 or size < 0:
            raise ApiError(400, ["startAt and maxResults must not be negative."])
        return start, size

    # -- metadata endpoints -------------------------------------------------------------------
    def _myself(self, req: Request, body: Any) -> Response:
        return json_response(200, {**(self._user(BOT_ACCOUNT) or {}), "emailAddress": self.email,
                                   "timeZone": self.time_zone, "locale": "en_US"})

    def _field_list(self, req: Request, body: Any) -> Response:
        return json_response(200, [f.meta() for f in self.fields.values()])

    def _get_project(self, req: Request, body: Any, ref: str) -> Response:
        self._check_project(ref)
        return json_response(200, {**self.project, "projectTypeKey": "business", "simplified": False,
                                   "issueTypes": [self._issue_type(t) for t, _ in ISSUE_TYPES]})

    def _project_statuses(self, req: Request, body: Any, ref: str) -> Response:
        self._check_project(ref)
        return json_response(200, [{**self._issue_type(t), "statuses": [self._status(s)
                                                                         for s in self.workflows[t].statuses()]}
                                   for t, _ in ISSUE_TYPES])

    def _createmeta_types(self, req: Request, body: Any, ref: str) -> Response:
        self._check_project(ref)
        start, size = self._paging(req, 50, 200)
        types = [self._issue_type(t) for t, _ in ISSUE_TYPES]
        return json_response(200, {"issueTypes": types[start:start + size], "startAt": start,
                                   "maxResults": size, "total": len(types)})

    def _createmeta_fields(self, req: Request, body: Any, ref: str, type_id: str) -> Response:
        self._check_project(ref)
        if type_id not in dict(ISSUE_TYPES):
            raise ApiError(400, ["The issue type ID provided is invalid or not associated with the project."])
        start, size = self._paging(req, 50, 200)
        out = []
        for f in self.fields.values():
            if f.id not in SETTABLE and not f.custom:
                continue
            meta = f.meta()
            entry: dict[str, Any] = {"fieldId": f.id, "key": f.id, "name": f.name, "schema": meta["schema"],
                                     "required": f.id in ("summary", "issuetype", "project"),
                                     "operations": ["add", "set", "remove"] if f.id == "labels" else ["set"],
                                     "hasDefaultValue": f.id == "priority"}
            if f.id == "priority":
                entry["allowedValues"] = [{"id": i, "name": n} for i, n in self.priorities]
                if "3" in dict(self.priorities):
                    entry["defaultValue"] = {"id": "3", "name": "Medium"}
            elif f.id == "issuetype":
                entry["allowedValues"] = [self._issue_type(type_id)]
            elif f.id == "project":
                entry["allowedValues"] = [self.project]
            out.append(entry)
        return json_response(200, {"fields": out[start:start + size], "startAt": start, "maxResults": size,
                                   "total": len(out)})

    # -- field validation ---------------------------------------------------------------------
    def _normalize(self, fid: str, value: Any, errors: dict[str, str]) -> Any:
        """Convert one API field value to its stored form; problems land in ``errors``."""
        f = self.fields[fid]
        kind = f.kind if f.custom else fid
        if kind == "summary":
            if not isinstance(value, str) or not value.strip():
                errors[fid] = "You must specify a summary of the issue."
            elif len(value) >= 255:
                errors[fid] = "Summary must be less than 255 characters."
            elif "\n" in value or "\r" in value:
                errors[fid] = "The summary is invalid because it contains newline characters."
            return value
        if value is None:
            return [] if kind == "labels" else None
        if kind in ("description", "textarea"):
            problem = adf_problem(value)
            if problem:
                errors[fid] = problem
            elif len(json.dumps(value)) > 32767:
                errors[fid] = "The entered text is too long. It exceeds the allowed limit of 32,767 characters."
            return value
        if kind == "textfield":
            if not isinstance(value, str):
                errors[fid] = "Operation value must be a string"
            elif len(value) > 255:
                errors[fid] = "The entered text is too long. It exceeds the allowed limit of 255 characters."
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                errors[fid] = "Operation value must be a number"
            return value
        if kind in ("duedate", "datepicker"):
            try:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
                    raise ValueError(value)
                dt.date.fromisoformat(value)
            except ValueError:
                errors[fid] = f"Error parsing date string: {value}"
            return value
        if kind == "labels":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors[fid] = "Labels must be a list of strings."
                return value
            for label in value:
                if not label or " " in label:
                    errors[fid] = f"The label '{label}' contains spaces which is invalid."
                elif len(label) > 255:
                    errors[fid] = "The label exceeds the limit of 255 characters."
            return list(dict.fromkeys(value))
        if kind in ("priority", "issuetype"):
            table = self.priorities if kind == "priority" else ISSUE_TYPES
            ref = value if isinstance(value, dict) else {}
            hit = [i for i, n in table if str(ref.get("id")) == i or ref.get("name") == n]
            if not hit:
                errors[fid] = f"The {'priority' if kind == 'priority' else 'issue type'} selected is invalid."
            return hit[0] if hit else None
        if kind == "project":
            ref = value if isinstance(value, dict) else {}
            if str(ref.get("id")) != self.project["id"] and ref.get("key") != self.project_key:
                errors[fid] = "Specify a valid project ID or key"
            return self.project_key
        if kind == "assignee":
            acc = (value.get("accountId") or value.get("id")) if isinstance(value, dict) else None
            if not isinstance(acc, str) or not acc:
                errors[fid] = "Specified user does not exist or you do not have required permissions"
            return acc
        raise AssertionError(fid)

    def _validate(self, raw: Any, creating: bool) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise ApiError(400, ["Field 'fields' must be an object."])
        errors: dict[str, str] = {}
        out: dict[str, Any] = {}
        for fid, value in raw.items():
            f = self.fields.get(fid)
            if f is None or not (f.custom or fid in SETTABLE) or (fid == "project" and not creating):
                errors[fid] = NOT_ON_SCREEN.format(fid)
                continue
            out[fid] = self._normalize(fid, value, errors)
        if creating:
            for fid, msg in (("project", "Specify a valid project ID or key"), ("issuetype", "Specify an issue type"),
                             ("summary", "You must specify a summary of the issue.")):
                if fid not in raw:
                    errors.setdefault(fid, msg)
        if errors:
            raise ApiError(400, [], errors)
        return out

    # -- changelog ------------------------------------------------------------------------------
    def _display(self, fid: str, value: Any) -> tuple[str | None, str | None]:
        if value is None or value == []:
            return None, None
        if fid == "priority":
            return value, dict(PRIORITIES).get(value, value)
        if fid == "issuetype":
            return value, dict(ISSUE_TYPES)[value]
        if fid == "assignee":
            return value, USERS.get(value, value)
        if fid == "labels":
            return None, " ".join(value)
        if isinstance(value, dict):
            return None, adf_text(value)
        return None, str(value)

    def _record(self, issue: _Issue, author: str, items: list[dict[str, Any]], now: int) -> None:
        self._seq += 1
        issue.histories.append({"id": str(10000 + self._seq), "author": self._user(author),
                                "created": now, "items": items})

    def _apply(self, issue: _Issue, values: dict[str, Any], author: str) -> bool:
        items = []
        for fid, new in values.items():
            old = issue.fields.get(fid)
            if old == new or (fid == "labels" and sorted(old or []) == sorted(new or [])):
                continue
            f = self.fields[fid]
            (frm, frm_s), (to, to_s) = self._display(fid, old), self._display(fid, new)
            items.append({"field": f.name if f.custom else fid, "fieldtype": "custom" if f.custom else "jira",
                          "fieldId": fid, "from": frm, "fromString": frm_s, "to": to, "toString": to_s})
            issue.fields[fid] = new
        if items:
            now = self._tick()
            issue.updated = now
            self._record(issue, author, items, now)
        return bool(items)

    def _set_status(self, issue: _Issue, sid: str, author: str) -> None:
        old = self._status(issue.status)
        now = self._tick()
        self._record(issue, author, [{"field": "status", "fieldtype": "jira", "fieldId": "status",
                                      "from": issue.status, "fromString": old["name"], "to": sid,
                                      "toString": self._status(sid)["name"]}], now)
        issue.status, issue.updated = sid, now

    def _history_json(self, h: dict[str, Any]) -> dict[str, Any]:
        return {**h, "created": self._fmt_ts(h["created"])}

    # -- rendering ----------------------------------------------------------------------------
    def _comment_json(self, req: Request | None, issue: _Issue, c: dict[str, Any]) -> dict[str, Any]:
        return {"id": c["id"], "self": self._url(req, f"/issue/{issue.id}/comment/{c['id']}"),
                "author": self._user(c["author"]), "updateAuthor": self._user(c["author"]), "body": c["body"],
                "created": self._fmt_ts(c["created"]), "updated": self._fmt_ts(c["created"]), "jsdPublic": True}

    @staticmethod
    def _url(req: Request | None, path: str) -> str:
        host = req.header("host", "127.0.0.1") if req else "127.0.0.1"
        return f"http://{host}{API}{path}"

    def _field_json(self, req: Request | None, issue: _Issue, fid: str) -> Any:
        v = issue.fields.get(fid)
        if fid == "status":
            return self._status(issue.status)
        if fid in ("created", "updated"):
            return self._fmt_ts(issue.created if fid == "created" else issue.updated)
        if fid == "project":
            return {**self.project, "self": self._url(req, f"/project/{self.project['id']}")}
        if fid == "issuetype":
            return self._issue_type(v)
        if fid == "priority":
            return {"id": v, "name": dict(PRIORITIES).get(v, v)} if v else None
        if fid == "assignee":
            return self._user(v)
        if fid == "labels":
            return list(v or [])
        if fid == "comment":
            cs = [self._comment_json(req, issue, c) for c in issue.comments]
            return {"comments": cs, "maxResults": len(cs), "total": len(cs), "startAt": 0}
        return copy.deepcopy(v)

    def _issue_json(self, req: Request | None, issue: _Issue, wanted: list[str] | None,
                    expand: str = "", props: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"expand": "renderedFields,names,schema,operations,changelog",
                               "id": issue.id, "key": issue.key, "self": self._url(req, f"/issue/{issue.id}")}
        if wanted is not None:
            out["fields"] = {fid: self._field_json(req, issue, fid) for fid in self._select(wanted)}
        expands = [e.strip() for e in expand.split(",")]
        if "transitions" in expands or "transitions.fields" in expands:
            out["transitions"] = self._transitions_json(issue, "transitions.fields" in expands)
        if "changelog" in [e.strip() for e in expand.split(",")]:
            hs = [self._history_json(h) for h in issue.histories[-100:]]
            out["changelog"] = {"startAt": 0, "maxResults": len(hs), "total": len(issue.histories), "histories": hs}
        if props:
            keys = issue.properties if props == "*all" else [p for p in props.split(",") if p in issue.properties]
            out["properties"] = {k: copy.deepcopy(issue.properties[k]) for k in keys}
        return out

    def _select(self, wanted: list[str]) -> list[str]:
        chosen: list[str] = []
        for w in wanted:
            if w in ("*all", "*navigable"):
                chosen += [f for f in self.fields if w == "*all" or f != "comment"]
            elif w in self.fields:
                chosen.append(w)
        excluded = {w[1:] for w in wanted if w.startswith("-")}
        return [f for f in dict.fromkeys(chosen) if f not in excluded]

    # -- issue endpoints ----------------------------------------------------------------------
    def _create_one(self, req: Request | None, payload: Any, author: str) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise ApiError(400, ["Request body must be an object with 'fields'."])
        values = self._validate(payload.get("fields"), creating=True)
        # A create may move the issue straight out of the start status (Jira: "Transitions may be applied"),
        # but only along a transition the workflow offers from that start status.
        workflow = self.workflows[values["issuetype"]]
        target_status = None
        transition = payload.get("transition")
        if transition is not None:
            tid = transition.get("id") if isinstance(transition, dict) else None
            chosen = self._available(workflow, workflow.initial, tid)
            self._check_screen(chosen, {})
            target_status = chosen.to
        props = payload.get("properties") or []
        if not isinstance(props, list) or any(not isinstance(p, dict) or not p.get("key") for p in props):
            raise ApiError(400, ["Issue properties must be a list of {key, value} objects."])
        if "3" in dict(self.priorities):
            values.setdefault("priority", "3")
        values.setdefault("labels", [])
        values.pop("project", None)
        iid, now = str(self._next_id), self._tick()
        self._next_id += 1
        self._numbered += 1  # never reused, also after an issue is deleted (as in Jira)
        num = self._numbered
        issue = _Issue(iid, f"{self.project_key}-{num}", num, values, workflow.initial, now, now)
        issue.properties = {p["key"]: copy.deepcopy(p.get("value")) for p in props}
        self._issues[iid] = issue
        self._by_key[issue.key] = iid
        if target_status is not None and target_status != issue.status:
            self._set_status(issue, target_status, author)
        return {"id": iid, "key": issue.key, "self": self._url(req, f"/issue/{iid}")}

    def _create_cost(self) -> None:
        """The server-side work of one issue; never called with the lock held (see create_cost)."""
        if self.create_cost > 0:
            time.sleep(self.create_cost)

    def _create(self, req: Request, body: Any) -> Response:
        self._create_cost()
        with self._lock:
            created = self._create_one(req, body, BOT_ACCOUNT)
            self.writes += 1
        return json_response(201, created)

    def _bulk_create(self, req: Request, body: Any) -> Response:
        updates = body.get("issueUpdates") if isinstance(body, dict) else None
        if not isinstance(updates, list) or not updates:
            raise ApiError(400, ["Field 'issueUpdates' must be a non-empty list."])
        if len(updates) > 50:
            raise ApiError(400, ["The number of issues to create exceeds the limit of 50."])
        issues, errors = [], []
        for n, payload in enumerate(updates):
            self._create_cost()
            with self._lock:
                try:
                    issues.append(self._create_one(req, payload, BOT_ACCOUNT))
                except ApiError as err:
                    errors.append({"status": err.status, "failedElementNumber": n,
                                   "elementErrors": _error_body(err.messages, err.errors)})
        with self._lock:
            if issues:
                self.writes += 1
        return json_response(201 if issues else 400, {"issues": issues, "errors": errors})

    def _get_issue(self, req: Request, body: Any, ref: str) -> Response:
        issue = self._find(ref)
        wanted = [w.strip() for v in req.query.get("fields", ["*all"]) for w in v.split(",") if w.strip()]
        return json_response(200, self._issue_json(req, issue, wanted or ["*all"], req.arg("expand", "") or "",
                                                   req.arg("properties", "") or ""))

    def _edit(self, req: Request, body: Any, ref: str) -> Response:
        issue = self._find(ref)
        if not isinstance(body, dict):
            raise ApiError(400, ["Can not deserialize the request body: expected an object."])
        raw = dict(body.get("fields") or {})
        values = self._validate(raw, creating=False)
        update = body.get("update") or {}
        if not isinstance(update, dict):
            raise ApiError(400, ["Field 'update' must be an object."])
        errors: dict[str, str] = {}
        for fid, ops in update.items():
            if fid in raw:
                errors[fid] = f"Field '{fid}' cannot be both set and updated in the same request."
                continue
            if fid not in self.fields or not (self.fields[fid].custom or fid in SETTABLE) or fid == "project":
                errors[fid] = NOT_ON_SCREEN.format(fid)
                continue
            current = list(issue.fields.get("labels") or []) if fid == "labels" else None
            for op in ops if isinstance(ops, list) else [None]:
                verb, arg = next(iter(op.items())) if isinstance(op, dict) and len(op) == 1 else ("?", None)
                if fid == "labels" and verb in ("add", "remove"):
                    self._normalize("labels", [arg], errors)
                    assert current is not None
                    if verb == "add" and arg not in current:
                        current.append(arg)
                    elif verb == "remove" and arg in current:
                        current.remove(arg)
                elif verb == "set":
                    current = self._normalize(fid, arg, errors)
                else:
                    errors[fid] = f"Operation '{verb}' is not supported for field '{fid}'."
            values[fid] = current
        if errors:
            raise ApiError(400, [], errors)
        self._apply(issue, values, BOT_ACCOUNT)
        for p in body.get("properties") or []:
            issue.properties[p["key"]] = copy.deepcopy(p.get("value"))
        self.writes += 1
        return Response(204)

    def _get_transitions(self, req: Request, body: Any, ref: str) -> Response:
        issue = self._find(ref)
        expand = [e.strip() for e in (req.arg("expand", "") or "").split(",")]
        return json_response(200, {"expand": "transitions",
                                   "transitions": self._transitions_json(issue, "transitions.fields" in expand)})

    def _transitions_json(self, issue: _Issue, with_fields: bool = False) -> list[dict[str, Any]]:
        """What Jira lists for the issue: the transitions out of its current status only."""
        out = []
        for t in self.workflows[issue.fields["issuetype"]].available(issue.status):
            item: dict[str, Any] = {"id": t.id, "name": t.name, "to": self._status(t.to),
                                    "hasScreen": bool(t.required), "isGlobal": t.sources is None,
                                    "isInitial": False, "isAvailable": True, "isConditional": False,
                                    "isLooped": False}
            if with_fields:
                item["fields"] = {f: {"required": True, "name": SCREEN_FIELD_NAMES.get(f, f), "key": f,
                                      "operations": ["set"], "hasDefaultValue": False,
                                      "schema": {"type": f, "system": f}} for f in t.required}
            out.append(item)
        return out

    @staticmethod
    def _available(workflow: Workflow, status: str, tid: Any) -> WorkflowTransition:
        if not re.fullmatch(r"\d+", str(tid or "")):
            raise ApiError(400, ["'transition' identifier must be an integer"])
        chosen = next((t for t in workflow.available(status) if t.id == str(tid)), None)
        if chosen is None:
            raise ApiError(400, [f"Transition id '{tid}' is not valid for this issue."])
        return chosen

    @staticmethod
    def _check_screen(t: WorkflowTransition, fields: Any) -> None:
        fields = fields if isinstance(fields, dict) else {}
        missing = {f: f"{SCREEN_FIELD_NAMES.get(f, f)} is required." for f in t.required if not fields.get(f)}
        if missing:
            raise ApiError(400, [], missing)
        extra = {f: NOT_ON_SCREEN.format(f) for f in fields if f not in t.required}
        if extra:
            raise ApiError(400, [], extra)

    def _do_transition(self, req: Request, body: Any, ref: str) -> Response:
        issue = self._find(ref)
        body = body if isinstance(body, dict) else {}
        transition = body.get("transition")
        tid = transition.get("id") if isinstance(transition, dict) else None
        chosen = self._available(self.workflows[issue.fields["issuetype"]], issue.status, tid)
        self._check_screen(chosen, body.get("fields"))
        target = chosen.to
        ops = (body.get("update") or {}).get("comment") or []
        comments = [(op.get("add") or {}).get("body") for op in ops if isinstance(op, dict)]
        for c in comments:
            problem = adf_problem(c)
            if problem:
                raise ApiError(400, [], {"comment": problem})
        self._set_status(issue, target, BOT_ACCOUNT)
        for c in comments:
            self._append_comment(issue, c, BOT_ACCOUNT)
        self.writes += 1
        return Response(204)

    def _append_comment(self, issue: _Issue, body: Any, author: str) -> dict[str, Any]:
        self._seq += 1
        now = self._tick()
        c = {"id": str(10000 + self._seq), "author": author, "body": copy.deepcopy(body), "created": now}
        issue.comments.append(c)
        issue.updated = now
        return c

    def _get_comments(self, req: Request, body: Any, ref: str) -> Response:
        issue = self._find(ref)
        start, size = self._paging(req, 5000)
        cs = issue.comments[::-1] if req.arg("orderBy") == "-created" else issue.comments
        page = [self._comment_json(req, issue, c) for c in cs[start:start + size]]
        return json_response(200, {"startAt": start, "maxResults": size, "total": len(cs), "comments": page})

    def _add_comment(self, req: Request, body: Any, ref: str) -> Response:
        issue = self._find(ref)
        doc = body.get("body") if isinstance(body, dict) else None
        if doc is None:
            raise ApiError(400, [], {"comment": "Comment body can not be empty!"})
        problem = adf_problem(doc)
        if problem:
            raise ApiError(400, [], {"comment": problem})
        c = self._append_comment(issue, doc, BOT_ACCOUNT)
        self.writes += 1
        return json_response(201, self._comment_json(req, issue, c))

    def _list_properties(self, req: Request, body: Any, ref: str) -> Response:
        issue = self._find(ref)
        return json_response(200, {"keys": [{"key": k, "self": self._url(req, f"/issue/{issue.id}/properties/{k}")}
                                            for k in issue.properties]})

    def _get_property(self, req: Request, body: Any, ref: str, key: str) -> Response:
        issue = self._find(ref)
        if key not in issue.properties:
            raise ApiError(404, [f"The property with key '{key}' does not exist."])
        return json_response(200, {"key": key, "value": copy.deepcopy(issue.properties[key])})

    def _set_property(self, req: Request, body: Any, ref: str, key: str) -> Response:
        issue = self._find(ref)
        if body is None or not req.body or len(req.body) > 32768 or len(key) > 255:
            raise ApiError(400, ["The property value must be non-empty JSON of at most 32768 characters."])
        existed = key in issue.properties
        issue.properties[key] = body
        self.writes += 1
        return Response(200 if existed else 201)

    def _delete_property(self, req: Request, body: Any, ref: str, key: str) -> Response:
        issue = self._find(ref)
        if issue.properties.pop(key, None) is None:
            raise ApiError(404, [f"The property with key '{key}' does not exist."])
        self.writes += 1
        return Response(204)

    def _changelog(self, req: Request, body: Any, ref: str) -> Response:
        issue = self._find(ref)
        start, size = self._paging(req, 100)
        page = [self._history_json(h) for h in issue.histories[start:start + size]]
        return json_response(200, {"self": self._url(req, f"/issue/{issue.key}/changelog"), "startAt": start,
                                   "maxResults": size, "total": len(issue.histories),
                                   "isLast": start + size >= len(issue.histories), "values": page})

    # -- workflows (admin) ------------------------------------------------------------------------
    def _require_admin(self) -> None:
        if not self.workflow_admin:
            raise ApiError(403, ["You are not authorized to perform this action. Administrator privileges are "
                                 "required."])

    def _workflow_scheme(self, req: Request, body: Any) -> Response:
        self._require_admin()
        ids = [i for v in req.query.get("projectId", []) for i in v.split(",") if i]
        if not ids:
            raise ApiError(400, ["projectId must be provided."])
        if self.project["id"] not in ids:
            return json_response(200, {"values": []})
        mapping = {t: wf.name for t, wf in self.workflows.items()}
        return json_response(200, {"values": [{"projectIds": [self.project["id"]], "workflowScheme": {
            "id": 10100, "name": f"{self.project_key} workflow scheme", "description": "",
            "defaultWorkflow": "jira", "issueTypeMappings": mapping}}]})

    def _workflow_search(self, req: Request, body: Any) -> Response:
        self._require_admin()
        names = [n for v in req.query.get("workflowName", []) for n in v.split(",") if n]
        expand = [e.strip() for e in (req.arg("expand", "") or "").split(",")]
        workflows = list({wf.name: wf for wf in self.workflows.values()}.values())
        if names:
            workflows = [wf for wf in workflows if wf.name in names]
        start, size = self._paging(req, 50)
        values = []
        for wf in workflows[start:start + size]:
            item: dict[str, Any] = {"id": {"name": wf.name, "entityId": wf.name.lower().replace(" ", "-")},
                                    "description": ""}
            if "transitions" in expand:
                item["transitions"] = [{"id": "1", "name": "Create", "description": "", "from": [],
                                        "to": wf.initial, "type": "initial"}]
                item["transitions"] += [{"id": t.id, "name": t.name, "description": "",
                                         "from": list(t.sources or ()), "to": t.to,
                                         "type": "global" if t.sources is None else "directed",
                                         **({"screen": {"id": "10010", "name": "Resolve screen"}}
                                            if t.required else {})} for t in wf.transitions]
            if "statuses" in expand:
                item["statuses"] = [{"id": sid, "name": self._status(sid)["name"]} for sid in wf.statuses()]
            values.append(item)
        return json_response(200, {"startAt": start, "maxResults": size, "total": len(workflows),
                                   "isLast": start + size >= len(workflows), "values": values})

    # -- search ---------------------------------------------------------------------------------
    def _removed_search(self, req: Request, body: Any) -> Response:
        return json_response(410, _error_body([
            "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
            "A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"],
            {}))

    def _search(self, req: Request, body: Any) -> Response:
        if req.method == "POST":
            p = body if isinstance(body, dict) else {}
            fields = p.get("fields")
            if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
                raise ApiError(400, ["'fields' must be a list of strings."])
            if not isinstance(p.get("expand", ""), str):
                raise ApiError(400, ["'expand' must be a comma-separated string."])
            jql, size, token, expand = p.get("jql"), p.get("maxResults", 50), p.get("nextPageToken"), p.get("expand")
            props = p.get("properties") or []
            if not (isinstance(props, list) and len(props) <= 5 and all(isinstance(x, str) for x in props)):
                raise ApiError(400, ["'properties' must be a list of at most 5 property keys."])
        else:
            fields = [f for v in req.query.get("fields", []) for f in v.split(",") if f] or None
            jql, token, expand = req.arg("jql"), req.arg("nextPageToken"), req.arg("expand")
            size = req.arg("maxResults", "50")
            props = [x for v in req.query.get("properties", []) for x in v.split(",") if x]
        try:
            size = min(max(int(size), 1), 100)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ApiError(400, ["'maxResults' must be an integer."]) from exc
        if not isinstance(jql, str):
            raise ApiError(400, ["Unbounded JQL queries are not allowed here. Please add a search restriction."])
        if token:
            cursor = self._cursors.get(token)
            if cursor is None or cursor[0] != jql:
                raise ApiError(400, ["The provided nextPageToken is invalid or expired, or the JQL has changed."])
            _, ids, offset = cursor
        else:
            # The result list is frozen on page one so that edits made while paging (including
            # the caller's own writes bumping `updated`) cannot skip or repeat issues.
            query = JqlQuery(self, jql)  # parsed (and refused) first, as before
            only = _KEY_IN_RX.fullmatch(jql)
            if only:  # Jira answers a search by keys from its index: the candidates are those issues only
                wanted = {self._by_key.get(k.strip().strip("'\"").upper()) for k in only.group(1).split(",")}
                visible = [self._issues[i] for i in wanted if i in self._issues]
            else:
                visible = list(self._issues.values())
            if self.search_lag:
                indexed_until = int((self.clock() - self.search_lag) * 1000)
                visible = [i for i in visible if i.created <= indexed_until]
            ids, offset = [i.id for i in query.run(visible)], 0
        page = [self._issues[i] for i in ids[offset:offset + size]]
        out: dict[str, Any] = {"issues": [self._issue_json(req, i, fields, expand or "", ",".join(props))
                                          for i in page]}
        if not fields:
            out["issues"] = [{"id": i["id"], "key": i["key"]} for i in out["issues"]]
        if offset + size < len(ids):
            nxt = secrets.token_urlsafe(18)
            self._cursors[nxt] = (jql, ids, offset + size)
            while len(self._cursors) > 2000:
                self._cursors.pop(next(iter(self._cursors)))
            out["nextPageToken"] = nxt
        out["isLast"] = "nextPageToken" not in out
        return json_response(200, out)

    # -- test-facing helpers ------------------------------------------------------------------
    def _view(self, issue: _Issue) -> dict[str, Any]:
        f = copy.deepcopy(issue.fields)
        f.update({"status": self._status(issue.status)["name"], "project": self.project_key,
                  "issuetype": dict(ISSUE_TYPES)[issue.fields["issuetype"]],
                  "priority": dict(PRIORITIES).get(issue.fields.get("priority") or ""),
                  "created": self._fmt_ts(issue.created), "updated": self._fmt_ts(issue.updated)})
        comments = [{**copy.deepcopy(c), "text": adf_text(c["body"]), "created": self._fmt_ts(c["created"])}
                    for c in issue.comments]
        return {"id": issue.id, "key": issue.key, "fields": f, "updated_ms": issue.updated, "comments": comments,
                "properties": copy.deepcopy(issue.properties),
                "changelog": [self._history_json(copy.deepcopy(h)) for h in issue.histories]}

    def all_issues(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._view(i) for i in sorted(self._issues.values(), key=lambda i: i.num)]

    def issue(self, key: str) -> dict[str, Any]:
        with self._lock:
            try:
                return self._view(self._find(key))
            except ApiError as exc:
                raise KeyError(key) from exc

    def find_by_field(self, field_id: str, value: Any) -> list[dict[str, Any]]:
        return [i for i in self.all_issues()
                if i["fields"].get(field_id) == value
                or (isinstance(i["fields"].get(field_id), list) and value in i["fields"][field_id])]

    def find_by_label(self, label: str) -> list[dict[str, Any]]:
        return self.find_by_field("labels", label)

    def transition_as_user(self, key: str, status_name: str, account_id: str = "user-floor-1") -> None:
        sid = next((s[0] for s in STATUSES if s[1].lower() == status_name.lower()), None)
        if sid is None:
            raise ValueError(f"unknown status {status_name!r}")
        with self._lock:
            issue = self._find(key)
            if issue.status != sid:
                self._set_status(issue, sid, account_id)

    def comment_as_user(self, key: str, text: str, account_id: str = "user-floor-1") -> dict[str, Any]:
        with self._lock:
            issue = self._find(key)
            return copy.deepcopy(self._append_comment(issue, text_to_adf(text), account_id))

    def create_as_user(self, fields: dict[str, Any], account_id: str = "user-floor-1") -> str:
        """Create an issue the way a person in the Jira UI would (validated, no `writes`); return its key."""
        with self._lock:
            return str(self._create_one(None, {"fields": fields}, account_id)["key"])

    def delete_as_user(self, key: str) -> None:
        """Delete an issue the way a person in the Jira UI would (its key is not reused)."""
        with self._lock:
            issue = self._find(key)
            del self._issues[issue.id]
            self._by_key.pop(issue.key, None)

    def delete_comment_as_user(self, key: str, comment_id: str) -> None:
        """Delete a comment the way a person in the Jira UI would."""
        with self._lock:
            issue = self._find(key)
            issue.comments[:] = [c for c in issue.comments if str(c.get("id")) != str(comment_id)]

    def edit_as_user(self, key: str, fields: dict[str, Any], account_id: str = "user-floor-1") -> None:
        """Change fields the way a person in the Jira UI would (validated, changelogged, no `writes`)."""
        with self._lock:
            issue = self._find(key)
            self._apply(issue, self._validate(fields, creating=False), account_id)


# -- JQL --------------------------------------------------------------------------------------
_KEY_IN_RX = re.compile(r"\s*key\s+in\s*\(([^()]*)\)\s*", re.I)  # a search by keys alone
_TOKEN_RX = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<op>!=|!~|>=|<=|=|~|>|<)
                          |(?P<punct>[(),])|(?P<word>[\w.\-\[\]*/:+]+))""", re.X)
_KEYWORDS = {"and", "or", "not", "in", "is", "empty", "null", "order", "by", "asc", "desc"}
_SPECIAL = {"key": "key", "issuekey": "key", "issue": "key", "id": "id", "statuscategory": "statusCategory"}
_OPS = {"key": {"=", "!=", "in", "not in"}, "id": {"=", "!=", "in", "not in"},
        "enum": {"=", "!=", "in", "not in", "is", "is not"}, "labels": {"=", "!=", "in", "not in", "is", "is not"},
        "text": {"~", "!~", "is", "is not"}, "textfield": {"=", "!=", "in", "not in", "~", "!~", "is", "is not"},
        "number": {"=", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "is not"}}
_OPS["date"] = _OPS["number"]


@dataclass
class _Tok:
    kind: str  # str | op | punct | word | kw | end
    text: str
    pos: int


class JqlQuery:
    """Parses the JQL subset the connector needs into a predicate plus an ordering.

    Supported: AND/OR/NOT with parentheses; =, !=, ~, !~, <, <=, >, >=, IN, NOT IN, IS [NOT] EMPTY on
    project, key, id, status, statusCategory, issuetype, priority, labels, summary, description,
    assignee, created, updated, duedate and custom fields (cf[N], customfield_N or their name); ORDER BY.
    """

    def __init__(self, sim: JiraSim, jql: str) -> None:
        self.sim, self.jql = sim, jql
        self.toks = self._lex(jql)
        self.i = 0
        self.pred: Callable[[_Issue], bool] | None = None
        if self.toks[0].kind != "end" and not self._at_kw("order"):
            self.pred = self._or()
        self.order: list[tuple[str, bool]] = []
        if self._at_kw("order"):
            self.i += 1
            self._expect_kw("by")
            while True:
                ref = self._field_ref(self._next())
                desc = self._at_kw("desc")
                if desc or self._at_kw("asc"):
                    self.i += 1
                self.order.append((ref[0], desc))
                if not self._at_punct(","):
                    break
                self.i += 1
        if self.toks[self.i].kind != "end":
            self._fail(f"Expecting 'AND', 'OR' or 'ORDER BY' but got '{self.toks[self.i].text}'")
        if self.pred is None:
            raise ApiError(400, ["Unbounded JQL queries are not allowed here. Please add a search restriction to "
                                 "your query."])

    def run(self, issues: list[_Issue]) -> list[_Issue]:
        assert self.pred is not None
        hits = sorted((i for i in issues if self.pred(i)), key=lambda i: -int(i.id))  # Jira: newest first
        for fid, desc in reversed(self.order):
            hits.sort(key=lambda i, f=fid: self._sort_key(i, f), reverse=desc)
        return hits

    # -- lexing / parsing helpers
    def _fail(self, msg: str, pos: int | None = None) -> None:
        pos = self.toks[self.i].pos if pos is None else pos
        raise ApiError(400, [f"Error in the JQL Query: {msg}. (line 1, character {pos + 1})"])

    def _lex(self, jql: str) -> list[_Tok]:
        toks, pos = [], 0
        while jql[pos:].strip():
            m = _TOKEN_RX.match(jql, pos)
            if not m or m.end() == pos:
                start = len(jql) - len(jql[pos:].lstrip())
                raise ApiError(400, [f"Error in the JQL Query: The character '{jql[start]}' is a reserved JQL "
                                     f"character. You must enclose it in a string. (line 1, character {start + 1})"])
            kind = m.lastgroup or "word"
            text = m.group(kind)
            start = m.start(kind)
            if kind == "str":
                text = re.sub(r"\\(.)", r"\1", text[1:-1])
            elif kind == "word" and text.lower() in _KEYWORDS:
                kind, text = "kw", text.lower()
            toks.append(_Tok(kind, text, start))
            pos = m.end()
        toks.append(_Tok("end", "<end>", len(jql)))
        return toks

    def _next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def _at_kw(self, word: str) -> bool:
        return self.toks[self.i].kind == "kw" and self.toks[self.i].text == word

    def _at_punct(self, ch: str) -> bool:
        return self.toks[self.i].kind == "punct" and self.toks[self.i].text == ch

    def _expect_kw(self, word: str) -> None:
        if not self._at_kw(word):
            self._fail(f"Expecting '{word.upper()}' but got '{self.toks[self.i].text}'")
        self.i += 1

    def _or(self) -> Callable[[_Issue], bool]:
        parts = [self._and()]
        while self._at_kw("or"):
            self.i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else lambda i: any(p(i) for p in parts)

    def _and(self) -> Callable[[_Issue], bool]:
        parts = [self._unary()]
        while self._at_kw("and"):
            self.i += 1
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else lambda i: all(p(i) for p in parts)

    def _unary(self) -> Callable[[_Issue], bool]:
        if self._at_kw("not"):
            self.i += 1
            inner = self._unary()
            return lambda i: not inner(i)
        if self._at_punct("("):
            self.i += 1
            inner = self._or()
            if not self._at_punct(")"):
                self._fail("Expecting ')'")
            self.i += 1
            return inner
        return self._clause()

    def _field_ref(self, tok: _Tok) -> tuple[str, str, list[str]]:
        """Map a clause name to (label, kind, field ids); a name shared by two fields yields both."""
        if tok.kind not in ("word", "str"):
            self._fail(f"Expecting a field name but got '{tok.text}'", tok.pos)
        name = tok.text.lower()
        if name in _SPECIAL:
            return _SPECIAL[name], _SPECIAL[name] if name != "statuscategory" else "enum", [_SPECIAL[name]]
        m = re.fullmatch(r"(?:cf\[(\d+)\]|customfield_(\d+))", name)
        ids = ([f"customfield_{m.group(1) or m.group(2)}"] if m else
               [f.id for f in self.sim.fields.values() if name in (c.lower() for c in f.clauses)])
        ids = [i for i in ids if i in self.sim.fields and i != "comment"]
        if not ids:
            raise ApiError(400, [f"Field '{tok.text}' does not exist or you do not have permission to view it."])
        f = self.sim.fields[ids[0]]
        kinds = {"textfield": "textfield", "textarea": "text", "float": "number", "datepicker": "date",
                 "summary": "text", "description": "text", "labels": "labels", "duedate": "date",
                 "created": "date", "updated": "date"}
        return ids[0], kinds.get(f.kind if f.custom else f.id, "enum"), ids

    def _value(self) -> tuple[str | None, int]:
        tok = self._next()
        if tok.kind == "kw" and tok.text in ("empty", "null"):
            return None, tok.pos
        if tok.kind not in ("word", "str"):
            self._fail(f"Expecting either a value, list or function but got '{tok.text}'", tok.pos)
        return tok.text, tok.pos

    def _clause(self) -> Callable[[_Issue], bool]:
        name_tok = self._next()
        label, kind, ids = self._field_ref(name_tok)
        tok = self._next()
        op = tok.text
        if tok.kind == "kw" and op == "not" and self._at_kw("in"):
            self.i += 1
            op = "not in"
        elif tok.kind == "kw" and op == "is":
            op = "is not" if self._at_kw("not") else "is"
            if op == "is not":
                self.i += 1
        elif not (tok.kind == "op" or (tok.kind == "kw" and op == "in")):
            self._fail(f"Expecting operator but got '{op}'. The valid operators are '=', '!=', '<', '>', '<=', "
                       "'>=', '~', '!~', 'IN', 'NOT IN', 'IS' and 'IS NOT'", tok.pos)
        if op not in _OPS.get(kind, _OPS["enum"]):
            raise ApiError(400, [f"The operator '{op.upper()}' is not supported by the '{name_tok.text}' field."])
        if op in ("in", "not in"):
            if not self._at_punct("("):
                self._fail("Expecting '(' after IN")
            self.i += 1
            raw = [self._value()]
            while self._at_punct(","):
                self.i += 1
                raw.append(self._value())
            if not self._at_punct(")"):
                self._fail("Expecting ')' to close the IN list")
            self.i += 1
        else:
            raw = [self._value()]
        if op in ("is", "is not"):
            if raw[0][0] is not None:
                self._fail("Expecting 'EMPTY' after IS")
            empty = op == "is"
            return lambda i: all(self._get(i, f) in (None, []) for f in ids) == empty
        if any(v is None for v, _ in raw):
            self._fail("EMPTY can only be used with IS and IS NOT")
        vals = [self._coerce(label, kind, v, name_tok.text) for v, _ in raw]  # type: ignore[arg-type]
        test = self._matcher(kind, op, vals)
        negative = op in ("!=", "not in", "!~")
        if negative:
            # Like Jira, negative operators never match issues whose field is empty.
            return lambda i: all(self._get(i, f) not in (None, []) and test(self._get(i, f)) for f in ids)
        return lambda i: any(test(self._get(i, f)) for f in ids)

    def _coerce(self, label: str, kind: str, value: str, shown: str) -> Any:
        bad = f"The value '{value}' does not exist for the field '{shown}'."
        if label == "key":
            iid = self.sim._by_key.get(value.upper())
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*-\d+", value):
                raise ApiError(400, [f"The issue key '{value}' for field '{shown}' is invalid."])
            if iid is None:
                raise ApiError(400, [f"An issue with key '{value}' does not exist for field '{shown}'."])
            return iid
        if kind == "number":
            try:
                return float(value)
            except ValueError:
                raise ApiError(400, [f"The value '{value}' is not a valid number for the field '{shown}'."]) from None
        if kind == "date":
            return self._when(value, shown, label in ("created", "updated"))
        table = {"project": [(self.sim.project["id"], self.sim.project_key), ("", self.sim.project["name"])],
                 "status": [(s[0], s[1]) for s in STATUSES], "issuetype": ISSUE_TYPES, "priority": self.sim.priorities,
                 "statusCategory": [(k, v[1]) for k, v in STATUS_CATEGORIES.items()]}.get(label)
        if table is not None:
            hit = [i for i, n in table if value.lower() in (i.lower(), n.lower())]
            if not hit:
                raise ApiError(400, [bad])
            return hit[0] or self.sim.project["id"]
        return value

    def _when(self, value: str, shown: str, timestamp: bool) -> Any:
        """Epoch ms when ``timestamp`` (created/updated), else a date; literals are in the user's zone."""
        tz = self.sim.tz
        if re.fullmatch(r"\d{9,}", value):
            moment = dt.datetime.fromtimestamp(int(value) / 1000, tz)
        elif m := re.fullmatch(r"([-+]?)(\d+)([wdhm])", value):
            unit = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}[m.group(3)]
            delta = dt.timedelta(**{unit: int(m.group(2))})
            now = dt.datetime.fromtimestamp(self.sim.clock(), tz)
            moment = now - delta if m.group(1) == "-" else now + delta
        else:
            for fmt in ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d"):
                try:
                    moment = dt.datetime.strptime(value, fmt).replace(tzinfo=tz)
                    break
                except ValueError:
                    continue
            else:
                raise ApiError(400, [f"Date value '{value}' for field '{shown}' is invalid. Valid formats include: "
                                     "'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a "
                                     "period format e.g. '-5d', '4w 2d'."])
        return int(moment.timestamp() * 1000) if timestamp else moment.date().isoformat()

    @staticmethod
    def _words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def _matcher(self, kind: str, op: str, vals: list[Any]) -> Callable[[Any], bool]:
        if op in ("~", "!~"):
            # Jira text search is a word match, not a substring match: "PO-45" also hits "PO-45-B".
            needles = [(w, w.endswith("*")) for v in vals for w in re.findall(r"[a-z0-9]+\*?", str(v).lower())]

            def contains(value: Any) -> bool:
                hay = self._words(adf_text(value) if isinstance(value, dict) else str(value or ""))
                return all(any(h.startswith(w.rstrip("*")) if star else h == w for h in hay) for w, star in needles)
            return contains if op == "~" else (lambda v: not contains(v))
        if kind in ("labels", "enum"):
            low = [str(v).lower() for v in vals]

            def member(value: Any) -> bool:
                items = value if isinstance(value, list) else [value]
                return any(str(x).lower() in low for x in items if x is not None)
            return member if op in ("=", "in") else (lambda v: not member(v))
        cmp: dict[str, Callable[[Any, Any], bool]] = {
            "=": lambda a, b: a == b, "in": lambda a, b: a == b, "!=": lambda a, b: a != b,
            "not in": lambda a, b: a != b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
        fn = cmp[op]
        if op in ("!=", "not in"):
            return lambda v: v is not None and all(fn(v, x) for x in vals)
        return lambda v: v is not None and any(fn(v, x) for x in vals)

    def _get(self, issue: _Issue, fid: str) -> Any:
        if fid == "key" or fid == "id":
            return issue.id
        if fid in ("created", "updated"):
            return issue.created if fid == "created" else issue.updated
        if fid == "status":
            return issue.status
        if fid == "statusCategory":
            return self.sim._status(issue.status)["statusCategory"]["key"]
        if fid == "project":
            return self.sim.project["id"]
        return issue.fields.get(fid)

    def _sort_key(self, issue: _Issue, fid: str) -> tuple[bool, Any]:
        if fid in ("key", "id"):
            return False, issue.num
        value = self._get(issue, fid)
        if fid in ("status", "priority"):
            value = int(value) if value else None
        elif isinstance(value, list):
            value = " ".join(sorted(value))
        elif isinstance(value, dict):
            value = adf_text(value)
        return value is None, value if value is not None else 0
