"""Jira Cloud REST v3 client: the calls the pairs need, nothing more.

Transitions are found by their target status, never by hard-coded ids (ids are per workflow).
Field names from the configuration are resolved through /rest/api/3/field once per pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from mlconnector.errors import AmbiguousWriteError, ConfigError, RemoteError
from mlconnector.http import HttpClient, HttpSettings
from mlconnector.jira.workflow import Edge, WorkflowGraph, edges_from_transitions

SYSTEM = "Jira"
API = "/rest/api/3"
MAX_PAGES = 10_000  # guard against a search that never ends (JRACLOUD-92184)
MAX_HOPS = 20  # transitions taken for one status change before giving up (a loop or an automation)


@dataclass(frozen=True)
class _Look:
    key: str
    current: str
    project: str
    project_id: str
    issue_type_id: str
    issue_type: str
    edges: list[Edge]


def _jql_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field_errors(exc: RemoteError) -> dict[str, str]:
    """The ``errors`` of Jira's ErrorCollection (field id -> message), {} when there are none."""
    import json

    try:
        body = json.loads(exc.raw)
    except (ValueError, TypeError):
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    return {str(k): str(v) for k, v in errors.items()} if isinstance(errors, dict) else {}


@dataclass(frozen=True)
class FieldInfo:
    id: str
    name: str
    type: str  # schema.type: string, number, date, datetime, option, array, user...
    custom: str  # schema.custom (textarea, textfield, float...), "" for system fields

    @property
    def is_rich_text(self) -> bool:
        return self.custom.endswith(":textarea") or self.id in ("description", "environment")


def error_text(exc: RemoteError) -> str:
    """Jira's ErrorCollection flattened to one line ('field: message; message')."""
    import json

    try:
        body = json.loads(exc.raw)
    except (ValueError, TypeError):
        return exc.message
    parts: list[str] = []
    if isinstance(body, dict):
        parts += [str(m) for m in body.get("errorMessages", []) or []]
        parts += [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
    return "; ".join(parts) or exc.message


class JiraClient:
    def __init__(self, api_base: str, auth: Any, settings: HttpSettings | None = None) -> None:
        self.http = HttpClient(SYSTEM, api_base, settings, auth=auth,
                               config_hint="the [jira] section of the configuration")
        # (project key, issue type id) -> workflow graph: learned as issues are looked at, for this pass
        self._graphs: dict[tuple[str, str], WorkflowGraph] = {}
        self._definitions: dict[tuple[str, str], WorkflowGraph | None] = {}
        self._workflows_denied = False
        self._sampled: dict[tuple[str, str], set[str]] = {}

    def close(self) -> None:
        self.http.close()

    def allow_connections(self, n: int) -> None:
        """Keep up to ``n`` connections to Jira open for reuse (requests' default keeps 10): a writer with more
        requests in flight than that would otherwise open (and, over TLS, handshake) a new one per request."""
        for adapter in self.http.session.adapters.values():
            if isinstance(adapter, requests.adapters.HTTPAdapter) and adapter._pool_maxsize < n:
                adapter._pool_maxsize = n
                adapter.init_poolmanager(adapter._pool_connections, n, block=adapter._pool_block)

    # -- metadata --------------------------------------------------------------------------------
    def myself(self) -> dict[str, Any]:
        return self.http.request("GET", f"{API}/myself").json()

    def fields(self) -> list[FieldInfo]:
        out = []
        for f in self.http.request("GET", f"{API}/field").json():
            schema = f.get("schema") or {}
            out.append(FieldInfo(str(f["id"]), str(f.get("name", "")), str(schema.get("type", "")),
                                 str(schema.get("custom", ""))))
        return out

    def project(self, key: str) -> dict[str, Any] | None:
        resp = self.http.request("GET", f"{API}/project/{quote(key)}", allow=(404,))
        return None if resp.status_code == 404 else resp.json()

    def project_statuses(self, key: str) -> dict[str, set[str]]:
        """Issue type name -> status names available in the project's workflows."""
        out: dict[str, set[str]] = {}
        for it in self.http.request("GET", f"{API}/project/{quote(key)}/statuses").json():
            out[str(it.get("name"))] = {str(s.get("name")) for s in it.get("statuses", [])}
        return out

    def create_fields_meta(self, project: str, issue_type_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = 0
        while True:
            body = self.http.request(
                "GET", f"{API}/issue/createmeta/{quote(project)}/issuetypes/{quote(issue_type_id)}",
                params={"startAt": start, "maxResults": 200}).json()
            page = body.get("fields") or body.get("values") or []
            out += page
            start += len(page)
            if not page or start >= int(body.get("total", start)):
                return out

    # -- issues ----------------------------------------------------------------------------------
    def create_issue(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self.http.request("POST", f"{API}/issue", json={"fields": fields}).json()

    def bulk_create(self, items: list[dict[str, Any]], before_send: Callable[[], None] | None = None,
                    ) -> tuple[dict[int, dict[str, Any]], dict[int, RemoteError]]:
        """Create up to 50 issues from IssueUpdateDetails ({"fields": ..., "transition": ...}); return
        ({index: created}, {index: error}). Not atomic: the caller reconciles each element. ``before_send``
        runs right before each attempt is sent (see HttpClient.request)."""
        resp = self.http.request("POST", f"{API}/issue/bulk", json={"issueUpdates": items}, allow=(400,),
                                 before_send=before_send)
        body = resp.json()
        errors: dict[int, RemoteError] = {}
        import json

        if not isinstance(body, dict) or not isinstance(body.get("errors", []), list):
            # A request-level rejection (an ErrorCollection), not per-element errors: every element failed.
            err = RemoteError("Jira rejected the bulk create", system=SYSTEM, status=resp.status_code, raw=resp.text)
            err.message = f"Jira rejected the issue: {error_text(err)}"
            raise err
        for e in body.get("errors", []) or []:
            idx = int(e.get("failedElementNumber", -1))
            raw = json.dumps(e.get("elementErrors") or {})
            err = RemoteError(f"Jira rejected the issue (HTTP {e.get('status', 400)})", system=SYSTEM,
                              status=int(e.get("status", 400)), raw=raw)
            err.message = f"Jira rejected the issue: {error_text(err)}"
            errors[idx] = err
        created: dict[int, dict[str, Any]] = {}
        issues = body.get("issues", []) or []
        # Jira lists created issues in request order, skipping the failed elements.
        ok_indexes = [i for i in range(len(items)) if i not in errors]
        for idx, issue in zip(ok_indexes, issues, strict=False):
            created[idx] = issue
        if resp.status_code == 400 and not errors:
            raise RemoteError(f"Jira rejected the bulk create: {resp.text[:300]}", system=SYSTEM, status=400,
                              raw=resp.text)
        return created, errors

    def edit_issue(self, key: str, fields: dict[str, Any]) -> None:
        self.http.request("PUT", f"{API}/issue/{quote(key)}", json={"fields": fields},
                          params={"notifyUsers": "false"})

    def get_issue(self, key: str, fields: str = "status,labels,updated") -> dict[str, Any] | None:
        resp = self.http.request("GET", f"{API}/issue/{quote(key)}", params={"fields": fields}, allow=(404,))
        return None if resp.status_code == 404 else resp.json()

    def current_transitions(self, key: str) -> tuple[str, dict[str, str]]:
        """(current status name, {target status name lower-cased: transition id}) in one request."""
        look = self._look(key)
        return look.current, {e.to.lower(): e.id for e in look.edges}

    def _look(self, key: str) -> _Look:
        """The issue's status, issue type, project and live transitions, in one request; the workflow graph of
        its (project, issue type) learns the way out of that status."""
        body = self.http.request("GET", f"{API}/issue/{quote(key)}",
                                 params={"fields": "status,issuetype,project", "expand": "transitions"}).json()
        f = body.get("fields") or {}
        status = f.get("status") or {}
        look = _Look(key, str(status.get("name", "")), str((f.get("project") or {}).get("key", "")),
                     str((f.get("project") or {}).get("id", "")), str((f.get("issuetype") or {}).get("id", "")),
                     str((f.get("issuetype") or {}).get("name", "")),
                     edges_from_transitions(body.get("transitions", []) or []))
        graph = self.graph(look.project, look.issue_type_id)
        graph.learn(look.current, look.edges)
        category = str((status.get("statusCategory") or {}).get("key", ""))
        if category:
            graph.categories[look.current.lower()] = category
        return look

    def graph(self, project: str, issue_type_id: str) -> WorkflowGraph:
        """The workflow graph of (project, issue type) as known so far in this pass."""
        return self._graphs.setdefault((project, issue_type_id), WorkflowGraph())

    def workflow_graph(self, project: str, issue_type_id: str, project_id: str = "") -> WorkflowGraph | None:
        """The complete workflow of (project, issue type) from its definition, or None when this user may not
        read workflow definitions (they need *Administer Jira*). Merged into ``graph()``; read once per pass."""
        cache_key = (project, issue_type_id)
        if cache_key in self._definitions:
            return self._definitions[cache_key]
        result: WorkflowGraph | None = None
        if not self._workflows_denied:
            result = self._read_workflow(project, issue_type_id, project_id)
        self._definitions[cache_key] = result
        if result is not None:
            graph = self.graph(project, issue_type_id)
            live = {s: dict(edges) for s, edges in graph.out.items()}
            result.categories.update(graph.categories)
            graph.out, graph.names, graph.complete = result.out, {**result.names, **graph.names}, True
            graph.initial, graph.name, graph.categories = result.initial, result.name, result.categories
            graph.out.update(live)  # what Jira listed live for this user wins
        return result

    def _read_workflow(self, project: str, issue_type_id: str, project_id: str) -> WorkflowGraph | None:
        denied = (401, 403, 404)
        if not project_id:
            info = self.project(project)
            project_id = str((info or {}).get("id", ""))
            if not project_id:
                return None
        resp = self.http.request("GET", f"{API}/workflowscheme/project", params={"projectId": project_id},
                                 allow=denied)
        if resp.status_code in denied:
            self._workflows_denied = True
            return None
        schemes = resp.json().get("values") or []
        scheme = (schemes[0].get("workflowScheme") or {}) if schemes else {}
        name = (scheme.get("issueTypeMappings") or {}).get(issue_type_id) or scheme.get("defaultWorkflow") or "jira"
        resp = self.http.request("GET", f"{API}/workflow/search",
                                 params={"workflowName": name, "expand": "transitions,statuses"}, allow=denied)
        if resp.status_code in denied:
            self._workflows_denied = True
            return None
        found = [w for w in resp.json().get("values") or [] if (w.get("id") or {}).get("name") == name]
        return WorkflowGraph.from_definition(found[0]) if found else None

    def do_transition(self, key: str, transition_id: str) -> None:
        # Not retried blindly: a repeat after a lost answer fails with 400 (the issue already moved).
        self.http.request("POST", f"{API}/issue/{quote(key)}/transitions",
                          json={"transition": {"id": str(transition_id)}}, idempotent=False)

    def transition_to(self, key: str, status_name: str, known_id: str | None = None) -> bool:
        """Move the issue to ``status_name`` along the shortest path its workflow allows; False if it is
        already there. Raises a one-paragraph RemoteError when no path exists or a hop needs screen fields.

        Each hop is taken from what Jira lists for the issue's current status, so a pass killed between two
        hops simply continues from wherever the issue is on the next call. ``known_id`` is a transition
        from the issue's current status straight to ``status_name`` that the caller already knows (it
        created the issue moments ago); it saves the first look-up.
        """
        if known_id is not None:
            try:
                self.do_transition(key, known_id)
                return True
            except AmbiguousWriteError:
                pass  # the walk below reads the status first: done if the transition happened
            except RemoteError as exc:
                if exc.status != 400:
                    raise
                # Someone moved it meanwhile (or a screen wants fields): look first, then walk.
        return self._walk(key, status_name, moved=known_id is not None)

    def transition_from(self, key: str, current: str, goal: str, project: str, issue_type_id: str) -> bool:
        """Move an issue whose status the caller knows (it created the issue moments ago) along the shortest
        path of the workflow's definition, one request per hop and no look first; without the definition, or
        at any surprise (a hop refused, an answer lost), fall back to ``transition_to``, which looks first."""
        if current.lower() == goal.lower():
            return False
        graph = self.workflow_graph(project, issue_type_id)
        path = graph.path(current, goal) if graph is not None and graph.complete else None
        if not path:
            return self.transition_to(key, goal)
        for n, edge in enumerate(path):
            try:
                self.do_transition(key, edge.id)
            except AmbiguousWriteError:
                return self._walk(key, goal, moved=True)
            except RemoteError as exc:
                if exc.status != 400:
                    raise
                return self._walk(key, goal, moved=n > 0)
        return True

    def _walk(self, key: str, goal: str, moved: bool = False) -> bool:
        visited: set[str] = set()
        look = self._look(key)
        started = look.current
        current = look.current
        fresh = True  # ``current`` and its edges come from a live read
        for _ in range(MAX_HOPS):
            if current.lower() == goal.lower():
                return moved or started.lower() != goal.lower()
            graph = self.graph(look.project, look.issue_type_id)
            visited.add(current.lower())
            if goal.lower() not in graph.out.get(current.lower(), {}) and not graph.complete:
                # Not one hop away: read the workflow's definition if this user may (once per pass), else
                # learn the way out of the statuses in between from issues already sitting in them.
                self.workflow_graph(look.project, look.issue_type_id, look.project_id)
                if not graph.complete and graph.path(current, goal) is None:
                    self._discover(look, graph, current, goal)
            edge = graph.next_hop(current, goal, visited)
            if edge is None:
                if not fresh:
                    look, fresh = self._look(key), True
                    current = look.current
                    continue
                raise self._no_path(key, look, goal, graph)
            try:
                self.do_transition(key, edge.id)
            except AmbiguousWriteError:
                look, fresh = self._look(key), True  # the status says whether the hop happened
                current = look.current
                continue
            except RemoteError as exc:
                if exc.status != 400:
                    raise
                fields = _field_errors(exc)
                if fields:
                    raise self._needs_fields(key, current, edge, fields, graph) from None
                if fresh:
                    raise
                look, fresh = self._look(key), True  # the graph was out of date: look and plan again
                current = look.current
                continue
            moved = True
            current, fresh = edge.to, False
            if current.lower() != goal.lower() and not graph.explored(current):
                look, fresh = self._look(key), True
                current = look.current
        raise RemoteError(f"Moving {key} to {goal!r} took more than {MAX_HOPS} transitions and was stopped "
                          f"(now in {current!r}). Check the workflow of its issue type for a loop or automation "
                          f"that moves issues back, or map to a nearer status in [jira.status_map].",
                          system=SYSTEM, status=400)

    def _discover(self, look: _Look, graph: WorkflowGraph, current: str, goal: str) -> None:
        """Read-only exploration: for each status reachable but not explored yet, nearest first, find one issue
        of the same project and type in it and read its transitions. Nothing is moved; statuses without an
        issue stay unexplored (each is searched once per pass)."""
        tried = self._sampled.setdefault((look.project, look.issue_type_id), set())
        while graph.path(current, goal) is None:
            todo = [s for s in sorted(graph.reachable(current)) if not graph.explored(s) and s not in tried]
            if not todo:
                return
            status = todo[0]
            tried.add(status)
            jql = (f"project = {_jql_str(look.project)} AND issuetype = {look.issue_type_id} AND status = "
                   f"{_jql_str(graph.names.get(status, status))}")
            sample = next(iter(self.search(jql, ["status"], page_size=1)), None)
            if sample is not None:
                self._look(str(sample["key"]))

    def _no_path(self, key: str, look: _Look, goal: str, graph: WorkflowGraph) -> RemoteError:
        offered = ", ".join(sorted(e.to for e in look.edges)) or "none"
        where = f"issue type {look.issue_type or look.issue_type_id} in project {look.project}"
        known = graph.names.get(goal.lower())
        if known is None and graph.complete:
            why = f"{goal!r} is not a status of that workflow"
        elif graph.complete:
            why = f"the workflow {graph.name!r} has no path from {look.current} to {goal!r}"
        else:
            why = (f"no path from {look.current} to {goal!r} was found among the transitions this user sees "
                   f"(statuses explored: {', '.join(sorted(graph.names[s] for s in graph.out)) or 'none'})")
        return RemoteError(
            f"Cannot move {key} ({where}) to {goal!r}: {why}; from {look.current} Jira offers: {offered}. The "
            f"missing transition is {look.current} -> {goal}: add it (or a path) to the workflow in Jira "
            f"(Settings > Issues > Workflows), or map the source status to a reachable status in "
            f"[jira.status_map].", system=SYSTEM, status=400)

    @staticmethod
    def _needs_fields(key: str, current: str, edge: Edge, fields: dict[str, str],
                      graph: WorkflowGraph) -> RemoteError:
        said = "; ".join(f"{k}: {v}" for k, v in fields.items())
        workflow = f" of workflow {graph.name!r}" if graph.name else ""
        return RemoteError(
            f"Jira refused transition {edge.name!r} ({current} -> {edge.to}) on {key}: its screen requires "
            f"field(s) {', '.join(sorted(fields))} ({said}), which the connector does not fill. Make the field(s) "
            f"optional or remove the screen from transition {edge.name!r}{workflow} (Settings > Issues > "
            f"Workflows), or map the source status to a status reachable without it in [jira.status_map].",
            system=SYSTEM, status=400)

    def _paged(self, path: str, items: str) -> Iterator[dict[str, Any]]:
        """startAt/maxResults paging, ended by an empty page, `total` or `isLast`, whichever the endpoint gives."""
        start = 0
        while True:
            body = self.http.request("GET", path, params={"startAt": start, "maxResults": 100}).json()
            page = body.get(items, []) or []
            yield from page
            start += len(page)
            if not page or body.get("isLast") is True or start >= int(body.get("total", start + 1)):
                return

    def comments(self, key: str) -> Iterator[dict[str, Any]]:
        return self._paged(f"{API}/issue/{quote(key)}/comment", "comments")

    def add_comment(self, key: str, adf_body: dict[str, Any]) -> dict[str, Any]:
        return self.http.request("POST", f"{API}/issue/{quote(key)}/comment", json={"body": adf_body}).json()

    def changelog(self, key: str) -> Iterator[dict[str, Any]]:
        return self._paged(f"{API}/issue/{quote(key)}/changelog", "values")

    # -- search ----------------------------------------------------------------------------------
    def search(self, jql: str, fields: list[str], page_size: int = 100, expand: str = "",
               properties: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every issue matching ``jql`` (enhanced search, nextPageToken paging, guarded against loops).
        ``expand`` is Jira's comma-separated string (e.g. "changelog": the latest 100 histories per issue);
        ``properties`` names issue properties to return (at most 5). Eventually consistent: an issue written
        moments ago may be missing."""
        token: str | None = None
        seen_tokens: set[str] = set()
        for _ in range(MAX_PAGES):
            body: dict[str, Any] = {"jql": jql, "fields": fields, "maxResults": page_size}
            if token:
                body["nextPageToken"] = token
            if expand:
                body["expand"] = expand
            if properties:
                body["properties"] = properties
            # A search changes nothing, so it is safe to retry like a GET.
            page = self.http.request("POST", f"{API}/search/jql", json=body, idempotent=True).json()
            issues = page.get("issues", []) or []
            yield from issues
            token = page.get("nextPageToken")
            if not issues or not token or page.get("isLast") is True or token in seen_tokens:
                return
            seen_tokens.add(token)


def resolve_field(all_fields: list[FieldInfo], wanted: str, config_key: str) -> FieldInfo:
    """A field by id (customfield_10050, duedate) or by name; two fields with one name is an error."""
    by_id = [f for f in all_fields if f.id == wanted]
    if by_id:
        return by_id[0]
    by_name = [f for f in all_fields if f.name.lower() == wanted.lower()]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        ids = ", ".join(f.id for f in by_name)
        raise ConfigError(f"{config_key} = {wanted!r} matches {len(by_name)} Jira fields ({ids}). Write the id of "
                          f"the one you mean instead of the name.")
    custom = sorted(f.name for f in all_fields if f.id.startswith("customfield_"))
    raise ConfigError(f"{config_key} = {wanted!r}: Jira has no field with that name or id (visible to this user). "
                      f"Create the field or fix the name. Custom fields Jira shows: {', '.join(custom) or 'none'}.")
