"""Check requests sent to the Jira simulator against Atlassian's OpenAPI 3.0.1 spec (request side only).

Hook an instance of :class:`JiraRequestChecker` into the Jira simulator: every request whose path starts
with ``/rest/api/3/`` must match an operation of the spec (path template + method), its path and query
parameters must validate against the parameter schemas (types, enums, required) and its JSON body against
the operation's ``requestBody`` schema. Anything else raises :class:`SpecViolation` (an ``AssertionError``)
and is also appended to ``checker.violations`` -- the simulator turns hook exceptions into HTTP 500, which a
retrying client may swallow, so tests should assert ``checker.violations == []`` at the end.

Security (auth headers) and responses are not checked. Other paths (OAuth token endpoint,
``/rest/atlassian-connect/...``) are ignored and not counted.

Own matcher on top of ``jsonschema`` (Draft 4 + OpenAPI 3.0 dialect): ``nullable`` is turned into a
``"null"`` type, ``readOnly`` properties must not be sent, ``int32``/``int64`` ranges are enforced, and
``discriminator``/``xml``/``example`` are dropped. Validators are compiled lazily, once per operation.
The spec is loaded once per process by :func:`load_checker`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft4Validator, FormatChecker, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend
from referencing import Registry
from referencing.jsonschema import DRAFT4

from mlconnector.sandbox.server import Request

SPEC_ENV = "MLCONNECTOR_JIRA_SPEC"
SPEC_PATH = Path(
    os.environ.get(SPEC_ENV)
    or Path(__file__).resolve().parents[2] / "shared" / "specs" / "jira-cloud-platform-v3.openapi.json"
)
API_PREFIX = "/rest/api/3/"

_URI = "urn:jira-cloud-platform-v3"  # base URI the converted spec is registered under
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_MAX_ERRORS = 5  # schema errors listed per violation message


class SpecViolation(AssertionError):
    """A request the Jira OpenAPI spec does not allow."""


# ---------------------------------------------------------------------------------------------------------
# OpenAPI 3.0 schema -> JSON Schema Draft 4
# ---------------------------------------------------------------------------------------------------------

_SUBSCHEMA_MAPS = ("properties", "patternProperties")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not")
_DROPPED = frozenset({"nullable", "discriminator", "xml", "example", "externalDocs", "deprecated",
                      "writeOnly", "description"})


def _to_draft4(schema: Any) -> Any:
    """Convert one OpenAPI 3.0 Schema Object (recursively) to Draft 4; refs point into ``_URI``."""
    if not isinstance(schema, dict):
        return schema  # booleans of additionalProperties
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = _URI + value
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _to_draft4(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [_to_draft4(sub) for sub in value]
        elif key in _SUBSCHEMA_ONE:
            out[key] = [_to_draft4(s) for s in value] if isinstance(value, list) else _to_draft4(value)
        else:
            out[key] = value
    # readOnly properties are response-only: never required in a request
    props = out.get("properties")
    if isinstance(out.get("required"), list) and isinstance(props, dict):
        required = [n for n in out["required"]
                    if not (isinstance(props.get(n), dict) and props[n].get("readOnly") is True)]
        if required:
            out["required"] = required
        else:
            del out["required"]
    if schema.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"] if "null" not in types else types
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        elif any(k in out for k in ("$ref", *_SUBSCHEMA_LISTS, "enum")):
            extra = {k: out.pop(k) for k in ("readOnly",) if k in out}
            out = {"anyOf": [{"type": "null"}, out], **extra}
    return out


def _read_only(validator: Any, value: Any, instance: Any,
               schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if value is True:
        yield ValidationError("is readOnly in the spec (response-only) and must not be sent in a request")


def _int_range(bits: int) -> Any:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def check(value: object) -> bool:
        return not isinstance(value, int) or isinstance(value, bool) or lo <= value <= hi

    return check


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("int32")(_int_range(32))
_FORMATS.checks("int64")(_int_range(64))

_RequestValidator: type[Validator] = extend(Draft4Validator, {"readOnly": _read_only})
_LenientValidator: type[Validator] = Draft4Validator


# ---------------------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Param:
    name: str
    location: str  # "path" | "query" | "header" | "cookie"
    required: bool
    schema: dict[str, Any]
    validator: Validator
    is_array: bool
    scalar_type: str | None  # the type strings are coerced to (items type for arrays)


@dataclass
class _Operation:
    method: str
    template: str
    operation_id: str
    deprecated: bool
    raw: dict[str, Any]
    path_params: list[str]
    compiled: bool = False
    params: list[_Param] = field(default_factory=list)
    body_required: bool = False
    body_content: dict[str, Validator | None] | None = None  # None: operation takes no body

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.template} ({self.operation_id})"


@dataclass
class _Template:
    template: str
    segments: tuple[str | None, ...]  # literal segment, or None for a {parameter}
    names: tuple[str | None, ...]
    operations: dict[str, _Operation]

    @property
    def specificity(self) -> tuple[int, ...]:
        return tuple(1 if s is None else 0 for s in self.segments)  # literal segments first = smaller


_PARAM_SEGMENT = re.compile(r"^\{([^{}/]+)\}$")
_INT = re.compile(r"^[+-]?\d+$")


class JiraRequestChecker:
    """Callable hook: validates one simulator :class:`Request` against the spec, raising on violation."""

    def __init__(self, spec: Mapping[str, Any], *, allow_unknown_query: bool = False,
                 allow_read_only: bool = False) -> None:
        self.allow_unknown_query = allow_unknown_query
        self.checked = 0
        self.violations: list[str] = []
        self.operations_seen: Counter[str] = Counter()  # operationId -> requests seen
        self.deprecated_calls: list[str] = []  # labels of deprecated operations used (not violations)
        self._lock = threading.Lock()  # counters of this instance
        self._compile_lock = threading.Lock()  # shared with fresh() copies, like the compiled operations
        self._spec = spec
        self._validator_cls = _LenientValidator if allow_read_only else _RequestValidator
        components = spec.get("components", {})
        converted = {
            "components": {
                "schemas": {n: _to_draft4(s) for n, s in components.get("schemas", {}).items()},
            }
        }
        self._registry: Registry[Any] = Registry().with_resource(_URI, DRAFT4.create_resource(converted))
        self._by_length: dict[int, list[_Template]] = {}
        for template, item in spec.get("paths", {}).items():
            if not template.startswith(API_PREFIX):
                continue
            parts = template.split("/")
            segs: list[str | None] = []
            names: list[str | None] = []
            for part in parts:
                m = _PARAM_SEGMENT.match(part)
                segs.append(None if m else part)
                names.append(m.group(1) if m else None)
            ops = {
                method: _Operation(method, template, op.get("operationId", f"{method} {template}"),
                                   bool(op.get("deprecated")), {"item": item, "op": op},
                                   [n for n in names if n is not None])
                for method, op in item.items() if method in _METHODS
            }
            self._by_length.setdefault(len(parts), []).append(
                _Template(template, tuple(segs), tuple(names), ops))
        for templates in self._by_length.values():
            templates.sort(key=lambda t: t.specificity)

    # -- public -------------------------------------------------------------------------------------------

    def __call__(self, req: Request) -> None:
        if not req.path.startswith(API_PREFIX):
            return
        with self._lock:
            self.checked += 1
        problems, op = self._check(req)
        if op is not None:
            with self._lock:
                self.operations_seen[op.operation_id] += 1
                if op.deprecated:
                    self.deprecated_calls.append(op.label)
        if problems:
            where = op.label if op is not None else "no operation"
            msg = f"{req.method.upper()} {req.path} -> {where}: " + "; ".join(problems)
            with self._lock:
                self.violations.append(msg)
            raise SpecViolation(msg)

    @property
    def spec(self) -> Mapping[str, Any]:
        """The parsed OpenAPI document (read-only by convention: it is shared)."""
        return self._spec

    def fresh(self) -> JiraRequestChecker:
        """A checker sharing this one's parsed spec and compiled validators but with zeroed counters."""
        clone = copy.copy(self)
        clone.checked = 0
        clone.violations = []
        clone.operations_seen = Counter()
        clone.deprecated_calls = []
        clone._lock = threading.Lock()
        return clone

    def operation_for(self, method: str, path: str) -> str | None:
        """operationId the spec routes ``method path`` to, or None."""
        found = self._match(method, path)
        return found[0].operation_id if isinstance(found, tuple) else None

    def request_body_schema(self, method: str, template: str) -> Any:
        """The raw (unconverted) requestBody JSON schema of an operation, for inspection."""
        op = self._spec["paths"][template][method.lower()]
        return op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")

    # -- matching -----------------------------------------------------------------------------------------

    def _match(self, method: str, path: str) -> tuple[_Operation, dict[str, str]] | str:
        parts = path.split("/")
        candidates: list[tuple[_Template, dict[str, str]]] = []
        for tpl in self._by_length.get(len(parts), []):
            values: dict[str, str] = {}
            for seg, name, part in zip(tpl.segments, tpl.names, parts, strict=True):
                if seg is None:
                    if not part:
                        break
                    values[name or ""] = unquote(part)
                elif seg != part:
                    break
            else:
                candidates.append((tpl, values))
        if not candidates:
            return "no path template in the spec matches this path"
        best = candidates[0][0].specificity
        m = method.lower()
        for tpl, values in candidates:
            if tpl.specificity == best and m in tpl.operations:
                return tpl.operations[m], values
        allowed = sorted({k.upper() for tpl, _ in candidates
                          if tpl.specificity == best for k in tpl.operations})
        return (f"path matches {candidates[0][0].template} but the spec defines no {method.upper()} there "
                f"(allowed: {', '.join(allowed)})")

    # -- compiling ----------------------------------------------------------------------------------------

    def _resolve(self, node: Any) -> Any:
        """Follow local ``$ref``s in the raw spec (parameters, request bodies, schemas)."""
        seen = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            target: Any = self._spec
            for part in node["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
            seen += 1
            if seen > 50:
                raise ValueError(f"$ref loop at {node!r}")
        return node

    def _validator(self, raw_schema: Any) -> Validator:
        return self._validator_cls(_to_draft4(raw_schema), registry=self._registry, format_checker=_FORMATS)

    def _scalar_type(self, schema: Any) -> str | None:
        schema = self._resolve(schema)
        if not isinstance(schema, dict):
            return None
        t = schema.get("type")
        if isinstance(t, str):
            return t
        for key in _SUBSCHEMA_LISTS:
            for sub in schema.get(key, []) or []:
                st = self._scalar_type(sub)
                if st is not None:
                    return st
        return None

    def _compile(self, op: _Operation) -> None:
        with self._compile_lock:
            if op.compiled:
                return
            item, raw = op.raw["item"], op.raw["op"]
            merged: dict[tuple[str, str], dict[str, Any]] = {}
            for ref in [*item.get("parameters", []), *raw.get("parameters", [])]:
                param = self._resolve(ref)
                merged[(param["name"], param["in"])] = param  # operation-level overrides path-level
            for p in merged.values():
                schema: Any = p.get("schema")
                content: Any = p.get("content")
                if schema is None and isinstance(content, dict) and content:
                    schema = next(iter(content.values())).get("schema")
                schema = schema or {}
                resolved = self._resolve(schema)
                is_array = isinstance(resolved, dict) and resolved.get("type") == "array"
                scalar = self._scalar_type(resolved.get("items", {}) if is_array else resolved)
                op.params.append(_Param(p["name"], p["in"], bool(p.get("required")) or p["in"] == "path",
                                        schema, self._validator(schema), is_array, scalar))
            body = raw.get("requestBody")
            if body is not None:
                body = self._resolve(body)
                op.body_required = bool(body.get("required"))
                op.body_content = {
                    ctype.lower(): (self._validator(media["schema"]) if "schema" in media else None)
                    for ctype, media in (body.get("content") or {}).items()
                }
            op.compiled = True

    # -- checking -----------------------------------------------------------------------------------------

    def _check(self, req: Request) -> tuple[list[str], _Operation | None]:
        found = self._match(req.method, req.path)
        if isinstance(found, str):
            return [found], None
        op, path_values = found
        if not op.compiled:
            self._compile(op)
        problems: list[str] = []
        known_query: set[str] = set()
        for param in op.params:
            if param.location == "path":
                problems += self._check_param(param, [path_values.get(param.name, "")])
            elif param.location == "query":
                known_query.add(param.name)
                values = req.query.get(param.name)
                if values is None:
                    if param.required:
                        problems.append(f"missing required query parameter {param.name!r}")
                    continue
                problems += self._check_param(param, values)
            elif param.location == "header" and param.required and param.name.lower() not in req.headers:
                problems.append(f"missing required header {param.name!r}")
        if not self.allow_unknown_query:
            unknown = sorted(set(req.query) - known_query)
            if unknown:
                allowed = ", ".join(sorted(known_query)) or "none"
                problems.append(f"query parameter(s) {unknown} not defined by the spec (allowed: {allowed})")
        problems += self._check_body(op, req)
        return problems, op

    def _check_param(self, param: _Param, values: list[str]) -> list[str]:
        kind = "path" if param.location == "path" else "query"
        if not param.is_array and len(values) > 1:
            return [f"{kind} parameter {param.name!r} given {len(values)} times but is not an array"]
        coerced = [_coerce(v, param.scalar_type) for v in values]
        instance: Any = coerced if param.is_array else coerced[0]
        errors = list(param.validator.iter_errors(instance))
        if not errors:
            return []
        hint = ""
        if param.scalar_type == "boolean" and any(v not in ("true", "false") for v in values):
            hint = " (send lowercase 'true'/'false'; requests encodes Python True as 'True')"
        return [f"{kind} parameter {param.name}={values if param.is_array else values[0]!r}: "
                f"{_format_errors(errors, with_path=False)}{hint}"]

    def _check_body(self, op: _Operation, req: Request) -> list[str]:
        has_body = bool(req.body and req.body.strip())
        if op.body_content is None:
            return ["the operation takes no request body but one was sent"] if has_body else []
        if not has_body:
            return ["request body is required"] if op.body_required else []
        ctype_header = req.headers.get("content-type")
        if not ctype_header:
            return [f"request body sent without Content-Type (spec accepts {sorted(op.body_content)})"]
        ctype = ctype_header.split(";", 1)[0].strip().lower()
        media = _pick_media(ctype, op.body_content)
        if media is None:
            return [f"Content-Type {ctype!r} not accepted (spec accepts {sorted(op.body_content)})"]
        validator = op.body_content[media]
        if not (ctype == "application/json" or ctype.endswith("+json")):
            return []  # multipart/text bodies: media type checked, content not
        try:
            instance = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return [f"request body is not valid JSON: {exc}"]
        if validator is None:
            return []
        errors = list(validator.iter_errors(instance))
        return [f"request body: {_format_errors(errors, with_path=True)}"] if errors else []


def _coerce(value: str, scalar_type: str | None) -> Any:
    """Turn a query/path string into the JSON value its schema type expects; leave it if it does not parse."""
    if scalar_type == "integer" and _INT.match(value):
        return int(value)
    if scalar_type == "number":
        try:
            return float(value) if not _INT.match(value) else int(value)
        except ValueError:
            return value
    if scalar_type == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


def _pick_media(ctype: str, content: Mapping[str, Any]) -> str | None:
    if ctype in content:
        return ctype
    major = ctype.split("/", 1)[0]
    for candidate in (f"{major}/*", "*/*"):
        if candidate in content:
            return candidate
    return None


def _format_errors(errors: Iterable[ValidationError], *, with_path: bool) -> str:
    """Most relevant error first, then the others, each prefixed by its JSON path when ``with_path``."""
    errs = list(errors)
    first = best_match(errs)
    ordered = [first, *[e for e in errs if e is not first]]
    parts = [f"{err.json_path}: {err.message}" if with_path else err.message for err in ordered[:_MAX_ERRORS]]
    more = f" (+{len(errs) - _MAX_ERRORS} more)" if len(errs) > _MAX_ERRORS else ""
    return "; ".join(parts) + more


# ---------------------------------------------------------------------------------------------------------
# Loading (once per process)
# ---------------------------------------------------------------------------------------------------------

_CACHE: dict[Path, JiraRequestChecker] = {}
_CACHE_LOCK = threading.Lock()


def spec_path() -> Path:
    """The spec file in use: ``$MLCONNECTOR_JIRA_SPEC`` if set (read at call time), else :data:`SPEC_PATH`."""
    env = os.environ.get(SPEC_ENV)
    return Path(env) if env else SPEC_PATH


def load_checker(path: Path | None = None) -> JiraRequestChecker | None:
    """A checker over the spec at ``path`` (default :func:`spec_path`), or None when the file is absent.

    The parsed spec and its index are cached per process; the returned checker is shared, so counters and
    ``violations`` accumulate across callers -- use :meth:`JiraRequestChecker.fresh` for isolated counters.
    """
    resolved = (path or spec_path()).resolve()
    with _CACHE_LOCK:
        checker = _CACHE.get(resolved)
        if checker is None:
            if not resolved.is_file():
                return None
            with resolved.open(encoding="utf-8") as fh:
                checker = JiraRequestChecker(json.load(fh))
            _CACHE[resolved] = checker
        return checker
