"""Jira Cloud REST v3 client: the calls the pairs need, nothing more.

Transitions are found by their target status, never by hard-coded ids (ids are per workflow).
Field names from the configuration are resolved through /rest/api/3/field once per pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from mlconnector.errors import AmbiguousWriteError, ConfigError, RemoteError
from mlconnector.http import HttpClient, HttpSettings

SYSTEM = "Jira"
API = "/rest/api/3"
MAX_PAGES = 10_000  # guard against a search that never ends (JRACLOUD-92184)


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
        self._transitions_cache: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self.http.close()

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

    def bulk_create(self, items: list[dict[str, Any]]) -> tuple[dict[int, dict[str, Any]], dict[int, RemoteError]]:
        """Create up to 50 issues from IssueUpdateDetails ({"fields": ..., "transition": ...}); return
        ({index: created}, {index: error}). Not atomic: the caller reconciles each element."""
        resp = self.http.request("POST", f"{API}/issue/bulk", json={"issueUpdates": items}, allow=(400,))
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
        body = self.http.request("GET", f"{API}/issue/{quote(key)}",
                                 params={"fields": "status", "expand": "transitions"}).json()
        current = str(((body.get("fields") or {}).get("status") or {}).get("name", ""))
        targets: dict[str, str] = {}
        for t in body.get("transitions", []) or []:
            name = str((t.get("to") or {}).get("name", "")).lower()
            targets.setdefault(name, str(t["id"]))
        return current, targets

    def do_transition(self, key: str, transition_id: str) -> None:
        # Not retried blindly: a repeat after a lost answer fails with 400 (the issue already moved).
        self.http.request("POST", f"{API}/issue/{quote(key)}/transitions",
                          json={"transition": {"id": str(transition_id)}}, idempotent=False)

    def transition_to(self, key: str, status_name: str, known_id: str | None = None) -> bool:
        """Move the issue to ``status_name``; False if it is already there. Raises if no transition leads there.

        ``known_id`` skips the lookup when the caller knows the issue's status (it created it moments ago).
        """
        if known_id is not None:
            try:
                return self._move(key, known_id, status_name)
            except AmbiguousWriteError:
                raise
            except RemoteError as exc:
                if exc.status != 400:
                    raise
                # Someone moved it meanwhile: fall back to looking first.
        current, targets = self.current_transitions(key)
        if current.lower() == status_name.lower():
            return False
        tid = targets.get(status_name.lower())
        if tid is None:
            raise RemoteError(
                f"Jira's workflow has no transition from {current or 'the current status'} to {status_name!r} for "
                f"{key} (reachable: {', '.join(sorted(targets)) or 'none'}). Add the transition in the workflow, or "
                f"map the PeopleSoft status to a reachable status in [jira.status_map].", system=SYSTEM, status=400)
        return self._move(key, tid, status_name)

    def _move(self, key: str, tid: str, status_name: str) -> bool:
        try:
            self.do_transition(key, tid)
        except AmbiguousWriteError:
            # The answer was lost: the status says whether the transition happened.
            current, _ = self.current_transitions(key)
            if current.lower() == status_name.lower():
                return True
            self.do_transition(key, tid)
        return True

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
