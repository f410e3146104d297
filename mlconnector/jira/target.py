"""Resolving a configuration's Jira names (fields, project, issue types, statuses) against Jira's metadata,
once per pass before anything is written: any mismatch is a ConfigError naming the config key."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mlconnector.errors import ConfigError
from mlconnector.jira.client import FieldInfo, JiraClient, resolve_field


@dataclass(frozen=True)
class Resolved:
    """Ids for the names of a configuration: fields by their logical name, the key field, issue types by
    entity."""

    fields: dict[str, FieldInfo]
    key_field: FieldInfo | None
    issue_type_ids: dict[str, str]


@dataclass(frozen=True)
class IssueTypeName:
    """The issue type an entity's issues get, as configured: the config key that names it, and the name."""

    config_key: str
    name: str


def resolve(jira: JiraClient, project_key: str, *, fields: dict[str, tuple[str, str]], key_field: str,
            issue_types: dict[str, IssueTypeName], missing_project: str,
            statuses: Callable[[str], Iterable[tuple[str, str]]], type_hint: str = "") -> Resolved:
    """Resolve ``fields`` (logical name -> (configured name, config key)), ``key_field`` (empty: none) and
    ``issue_types`` in ``project_key``; ``missing_project`` is the error when Jira shows no such project.
    ``statuses(entity)`` yields (status, what names it) for the statuses the entity's issues must have; each
    is checked against the issue type's workflow where Jira tells it. ``type_hint`` ends an unknown issue
    type's message."""
    all_fields = jira.fields()
    resolved = {name: resolve_field(all_fields, wanted, config_key) for name, (wanted, config_key) in fields.items()}
    key = resolve_field(all_fields, key_field, "jira.key_field") if key_field else None
    project = jira.project(project_key)
    if project is None:
        raise ConfigError(missing_project)
    types = {str(t.get("name")): str(t.get("id")) for t in project.get("issueTypes", [])}
    ids: dict[str, str] = {}
    for entity, it in issue_types.items():
        if it.name not in types:
            raise ConfigError(f"{it.config_key} = {it.name!r} is not an issue type of project {project_key} "
                              f"(it has: {', '.join(sorted(types))}).{type_hint}")
        ids[entity] = types[it.name]
    known_by_type = jira.project_statuses(project_key)
    for entity, it in issue_types.items():
        known = known_by_type.get(it.name, set())
        for status, named_by in statuses(entity):
            if known and status not in known:
                raise ConfigError(f"{named_by} is not a status of issue type {it.name!r} in {project_key} "
                                  f"(it has: {', '.join(sorted(known))}).")
    return Resolved(resolved, key, ids)
