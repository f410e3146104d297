"""PeopleSoft Component Interface (CI) web services over SOAP, with zeep.

- WSDLs come from ``{base_url}/PSIGW/PeopleSoftServiceListeningConnector/{NODE}/CI_<NAME>.1.wsdl``
  through the shared HTTP policy (same session, timeouts, TLS settings and error translation as the
  QAS client). The raw WSDL and XSD bytes are kept on disk (``WsdlCache``) so a cron pass parses
  them locally and sends no WSDL request; they are fetched again on ``--refresh-wsdl`` or when older
  than ``wsdl_max_age_hours``.
- The WSDL's ``soap:address`` usually names the gateway's internal host, so the service is bound to
  the configured base URL with the binding QName read from the WSDL. Schema namespaces differ per
  install (``M<digits>.V1``) and are only ever taken from the WSDL; operations are recognised by
  their request element (``Find__CompIntfc__X``...), not their names, which PeopleSoft truncates.
- Basic auth is sent as a WS-Security UsernameToken (PasswordText, no timestamp); OAuth2 as a
  Bearer header through the shared auth object.
- Creates and updates are never retried blindly: after an ambiguous failure (timeout, dropped
  connection, 5xx without a SOAP answer) a Find/Get checks whether the first attempt took effect.
- SOAP faults (``CIFault``/``IBResponse``), HTTP 200 answers with ``notification`` 0, HTML routing
  pages and a wrong node each become a ``CIError`` naming the service operation and the admin action;
  the raw body stays on the exception (``raw``) for the audit trail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import requests
import zeep
import zeep.helpers
from lxml import etree
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from mlconnector.config import APP_NAME, PeopleSoftConfig
from mlconnector.errors import AmbiguousWriteError, AuthError, RemoteError
from mlconnector.http import RAW_LIMIT, HttpClient, short_body
from mlconnector.peoplesoft.qas import parse_ps_datetime
from mlconnector.private import open_private, private_dir

log = logging.getLogger("mlconnector.peoplesoft.ci")

SYSTEM = "PeopleSoft"
CACHE_ENV = "MLCONNECTOR_CACHE_DIR"
LISTENER = "/PSIGW/PeopleSoftServiceListeningConnector"
ADMIN_OPS = "PeopleTools > Integration Broker > Integration Setup > Service Operations"
ADMIN_CI = "PeopleTools > Integration Broker > Web Services > CI-Based Services"
STAMP = "LAST_DTTM_UPDATE"
# Request element prefix -> method code. Matched case-insensitively: PeopleSoft spells UpdateData's
# element "Updatedata__CompIntfc__X".
METHODS = {"find": "F", "get": "G", "create": "C", "updatedata": "UD", "update": "UP"}
METHOD_NAMES = {"F": "Find", "G": "Get", "C": "Create", "UD": "UpdateData", "UP": "Update"}
_parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


# -- errors ---------------------------------------------------------------------------------------
class CIError(RemoteError):
    """A CI service operation failed in a way PeopleSoft explained (or clearly did not)."""

    def __init__(self, message: str, *, operation: str = "", raw: str = "", status: int | None = None,
                 message_set: str = "", message_id: str = "", retryable: bool = False) -> None:
        super().__init__(message, system=SYSTEM, status=status, raw=raw[:RAW_LIMIT], retryable=retryable)
        self.operation = operation
        self.message_set = message_set
        self.message_id = message_id


class CIFaultError(CIError):
    """SOAP fault carrying a CIFault / IBResponse (PeopleSoft's own validation or security)."""


class CINotificationError(CIError):
    """HTTP 200, but the response's notification says the save failed (0)."""


class CIRoutingError(CIError):
    """The gateway answered with its HTML 'Unable to find a Routing' page: operation inactive."""


class CIWrongNodeError(CIError):
    """The node in the URL is not a node of this database (158,505)."""


class CIServiceMissingError(CIError):
    """No WSDL for the service, or it lacks an operation the connector needs."""


@dataclass
class IBMessage:
    default_message: str = ""
    message_set: str = ""
    message_id: str = ""
    faultstring: str = ""


def parse_ib_message(body: str) -> IBMessage | None:
    """DefaultMessage and MessageSetID/MessageID from a SOAP fault, CIFault or bare IBResponse."""
    try:
        root = etree.fromstring(body.encode("utf-8") if isinstance(body, str) else body, _parser)
    except (etree.XMLSyntaxError, ValueError):
        return None

    def first(name: str) -> str:
        # Namespace-agnostic: every install puts the fault in its own M<digits> namespace.
        found = root.xpath(f"//*[local-name()='{name}']")
        return " ".join((found[0].text or "").split()) if found else ""

    msg = IBMessage(first("DefaultMessage"), first("MessageSetID"), first("MessageID"), first("faultstring"))
    if not msg.message_set:
        m = re.search(r"\((\d+),(\d+)\)\s*$", msg.default_message)
        if m:
            msg.message_set, msg.message_id = m.group(1), m.group(2)
    return msg


# -- WSDL cache -----------------------------------------------------------------------------------
def default_cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "wsdl"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME)) / "wsdl"


class WsdlCache:
    """zeep cache (``get``/``add``) holding one WSDL and the XSDs it imports as one bundle on disk.

    The bundle is fresh or stale as a whole, keyed on the WSDL URL: a WSDL re-generated by the admin
    comes with new message namespaces, so mixing a new WSDL with old XSDs would break. ``commit()``
    writes what was fetched; files carry a generation stamp and the manifest is replaced last, so a
    concurrent reader sees the old bundle or the new one, never half of each.
    """

    def __init__(self, root: Path, wsdl_url: str, max_age: float, *, refresh: bool = False,
                 clock: Any = time.time) -> None:
        self.dir = root / hashlib.sha256(wsdl_url.encode("utf-8")).hexdigest()[:24]
        self.wsdl_url = wsdl_url
        self.max_age = max_age
        self.clock = clock
        self.hits = 0
        self.fetched: dict[str, bytes] = {}
        self._files: dict[str, str] = {}
        self.fresh = False
        self.age: float | None = None
        manifest = self._manifest()
        if manifest and not refresh:
            self.age = clock() - float(manifest.get("fetched_at", 0))
            files = manifest.get("files", {})
            if (0 <= self.age < max_age and isinstance(files, dict)
                    and all((self.dir / f).is_file() for f in files.values())):
                self.fresh = True
                self._files = files

    def _manifest(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("wsdl") == self.wsdl_url else None

    def get(self, url: str) -> bytes | None:
        name = self._files.get(url) if self.fresh else None
        if name is None:
            return None
        try:
            content = (self.dir / name).read_bytes()
        except OSError:
            return None
        self.hits += 1
        return content

    def add(self, url: str, content: bytes) -> None:
        self.fetched[url] = bytes(content)

    def commit(self) -> None:
        """Store the documents fetched while loading the WSDL (no-op when all came from disk)."""
        if not self.fetched:
            return
        private_dir(self.dir)
        gen = f"{time.time_ns():x}"
        files = dict(self._files) if self.fresh else {}
        for url, content in self.fetched.items():
            name = f"{gen}-{hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]}.xml"
            _atomic_write(self.dir / name, content)
            files[url] = name
        fetched_at = self.clock() - (self.age or 0.0) if self.fresh else self.clock()
        manifest = {"wsdl": self.wsdl_url, "fetched_at": fetched_at, "files": files}
        _atomic_write(self.dir / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))
        keep = set(files.values()) | {"manifest.json"}
        for p in self.dir.iterdir():
            if p.name not in keep and not p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
        self.fetched.clear()
        self._files, self.fresh = files, True


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open_private(tmp, "wb") as f:  # 0600: the cache describes the ERP's services
        f.write(data)
    os.replace(tmp, path)


# -- transport ------------------------------------------------------------------------------------
def _looks_like_soap(body: bytes) -> bool:
    head = body[:2000].lstrip()
    return head.startswith(b"<") and b"Envelope" in head and b"<html" not in head.lower()


class _PolicyTransport(Transport):
    """zeep transport that sends every request through the shared ``HttpClient`` policy."""

    def __init__(self, owner: CIClient, cache: WsdlCache) -> None:
        ua = owner.http.session.headers.get("User-Agent")
        super().__init__(cache=cache, session=owner.http.session)
        if ua:  # zeep stamps its own User-Agent on the session it is given; keep ours
            owner.http.session.headers["User-Agent"] = ua
        self.owner = owner
        self._local = threading.local()

    @property
    def last_body(self) -> str:
        return getattr(self._local, "body", "")

    def _load_remote_data(self, url: str) -> bytes:
        o = self.owner
        o.wsdl_requests += 1
        try:
            resp = o.http.request("GET", url, auth=o.wsdl_auth)
        except AuthError:
            raise AuthError(
                f"PeopleSoft refused the credentials of {o.cfg.user or 'the OAuth2 client'} when fetching {url} "
                f"(HTTP 401). Check user in [peoplesoft] and the secret (mlconnector secrets set "
                f"{'peoplesoft.password' if o.cfg.auth == 'basic' else 'peoplesoft.client_secret'})."
            ) from None
        except RemoteError as exc:
            raise o.explain_wsdl(url, exc.status, exc.raw) from None
        head = resp.content[:2000].lstrip().lower()
        if not head.startswith(b"<") or b"<html" in head:
            raise o.explain_wsdl(url, resp.status_code, resp.text)
        return resp.content

    def post(self, address: str, message: bytes | str, headers: dict[str, str]) -> requests.Response:
        o = self.owner
        op = (headers.get("SOAPAction") or "").strip('"').rsplit(".", 1)[0] or "(unknown operation)"
        # Find and Get only read: safe to send again. Create/Update may have taken effect.
        idempotent = op.endswith(("_F", "_G"))
        self._local.body = ""
        try:
            resp = o.http.request("POST", address, data=message, headers=headers, idempotent=idempotent)
        except AmbiguousWriteError:
            raise
        except AuthError:
            raise o.auth_error(op, "HTTP 401") from None
        except RemoteError as exc:
            if exc.raw:
                raise o.explain(op, exc.status, exc.raw) from None
            raise
        if not _looks_like_soap(resp.content):
            raise o.explain(op, resp.status_code, resp.text)
        self._local.body = resp.text[:RAW_LIMIT]
        return resp


def _soap_answer(resp: requests.Response) -> bool:
    # A SOAP fault or IB error page is PeopleSoft's definite answer: resending cannot change it, and
    # for a write it proves nothing was saved, so it is never reported as ambiguous.
    body = resp.content[:4000]
    return b"Envelope" in body or b"IBResponse" in body or b"Routing" in body


# -- services -------------------------------------------------------------------------------------
@dataclass
class CIService:
    """One loaded CI service: the zeep proxy and what the WSDL says about it."""

    ci: str
    client: Any  # zeep.Client
    proxy: Any  # zeep ServiceProxy bound to the configured address
    binding: str  # binding QName, from the WSDL
    operations: dict[str, str]  # method code (F, G, C, UD, UP) -> operation name
    inputs: dict[str, list[str]]  # method code -> request element children, in order
    keys: list[str]  # Get keys: [peoplesoft.records.<kind>] get_keys, else the Get request's required elements
    date_range: tuple[str, str] | None  # Find keys bounding the update time, if the CI has them
    from_cache: bool = False
    all_operations: list[str] = field(default_factory=list)
    required: dict[str, list[str]] = field(default_factory=dict)  # method code -> required request elements
    find_returns: list[str] = field(default_factory=list)  # the fields of a Find result row
    find_values: dict[str, str] = field(default_factory=dict)  # configured find_keys: sent with every Find
    config_key: str = "peoplesoft.records.<kind>"  # where this CI's key settings live

    def find_request(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """A Find request: the given values, then the configured find_keys, then every other required key
        element empty (PeopleSoft reads an empty search key as "any value")."""
        request: dict[str, Any] = dict(self.find_values)
        request.update({k: v for k, v in given.items() if v is not None})
        for name in self.required.get("F", []):
            request.setdefault(name, "")
        return request

    def key_problems(self) -> list[str]:
        """Why Find and Get cannot be built from the WSDL and the configuration (empty when they can).
        Checked by ``ping`` without sending anything."""
        out = []
        for method, what, names in (("F", "find_keys", list(self.find_values)), ("G", "get_keys", self.keys)):
            have = self.inputs.get(method, [])
            if method not in self.operations:
                continue
            for name in names:
                if name not in have:
                    out.append(f"{self.config_key}.{what} names {name}, which the {METHOD_NAMES[method]} request of "
                               f"CI_{self.ci} does not have (it has: {', '.join(have) or 'nothing'}). Fix or remove "
                               f"it.")
        if "F" in self.operations and "G" in self.operations:
            for name in self.keys:
                if name not in self.find_returns and name not in self.find_values:
                    out.append(f"Get of CI_{self.ci} needs key {name}, which its Find does not return (Find rows "
                               f"have: {', '.join(self.find_returns) or 'nothing'}). Set {self.config_key}."
                               f"find_keys.{name} to the value to use, or {self.config_key}.get_keys to the keys "
                               f"Get really needs, or ask the PeopleSoft admin to add {name} to the component's "
                               f"search record ({ADMIN_CI}).")
        return out

    def op(self, method: str) -> str:
        try:
            return self.operations[method]
        except KeyError:
            raise CIServiceMissingError(
                f"Service CI_{self.ci} has no {METHOD_NAMES[method]} operation in its WSDL (it has: "
                f"{', '.join(self.all_operations) or 'none'}). Ask the PeopleSoft admin to include the "
                f"{METHOD_NAMES[method]} method when generating the CI-based service ({ADMIN_CI}), then run "
                f"with --refresh-wsdl.", operation=f"CI_{self.ci}") from None


def _range_keys(names: list[str]) -> tuple[str, str] | None:
    """A pair of Find keys <FIELD>_FROM / <FIELD>_TO, preferring LAST_DTTM_UPDATE."""
    pairs = [(n, n[:-5] + "_TO") for n in names if n.upper().endswith("_FROM") and n[:-5] + "_TO" in names]
    pairs.sort(key=lambda p: not p[0].upper().startswith(STAMP))
    return pairs[0] if pairs else None


def _plain(value: Any) -> Any:
    """zeep objects -> plain dicts/lists, with simpleContent ``_value_1`` unwrapped."""
    if isinstance(value, dict):
        if "_value_1" in value and all(k == "_value_1" or not isinstance(v, dict | list) for k, v in value.items()):
            return _plain(value["_value_1"])
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    if a is None:
        a = ""
    if b is None:
        b = ""
    if isinstance(a, date | datetime):
        a = a.isoformat()
    if isinstance(b, date | datetime):
        b = b.isoformat()
    try:
        if not isinstance(a, bool) and not isinstance(b, bool) and str(a) and str(b):
            return Decimal(str(a)) == Decimal(str(b))
    except InvalidOperation:
        pass
    return str(a).strip() == str(b).strip()


def _deep_same(have: Any, want: Any) -> bool:
    """Whether PeopleSoft's value ``have`` shows everything ``want`` set: fields compared by value (``_same``);
    a collection shows each wanted row when one of its rows shows every field of it (UpdateData leaves rows
    it was not given in place, and PeopleSoft returns rows in key order, not the order sent)."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return False
        return all(_deep_same(have.get(k), v) for k, v in want.items())
    if isinstance(want, list | tuple):
        rows = have if isinstance(have, list) else ([] if have in (None, "") else [have])
        return all(any(_deep_same(h, w) for h in rows) for w in want)
    return _same(have, want)


class CIClient:
    """Typed access to CI services: find, get, create, update."""

    def __init__(self, cfg: PeopleSoftConfig, auth: Any, *, cache_dir: Path | None = None,
                 refresh: bool = False, max_age_hours: float | None = None,
                 http: HttpClient | None = None) -> None:
        self.cfg = cfg
        self.refresh = refresh
        self.max_age = 3600.0 * (cfg.wsdl_max_age_hours if max_age_hours is None else max_age_hours)
        self.cache_root = cache_dir if cache_dir is not None else default_cache_root()
        self.wsdl_requests = 0
        self.wsse: UsernameToken | None = None
        self.wsdl_auth: Any = None
        session_auth: Any = None
        if isinstance(auth, tuple):
            # Basic: the password travels once, in the UsernameToken (PeopleSoft's documented path
            # for SOAP); WSDL/XSD GETs get HTTP Basic for gateways that protect them.
            self.wsse = UsernameToken(auth[0], auth[1])
            self.wsdl_auth = auth
        else:
            session_auth = auth  # BearerAuth: the Authorization header goes on every request
        self.http = http or HttpClient(SYSTEM, cfg.base_url, cfg.http, auth=session_auth, is_permanent=_soap_answer,
                                       config_hint="the [peoplesoft] section of the configuration")
        self._services: dict[str, CIService] = {}
        self._transports: dict[str, _PolicyTransport] = {}

    def close(self) -> None:
        self.http.close()

    @property
    def endpoint(self) -> str:
        return f"{self.cfg.base_url}{LISTENER}/{self.cfg.node}"

    def wsdl_url(self, ci: str) -> str:
        return f"{self.endpoint}/CI_{ci}.1.wsdl"

    # -- loading ---------------------------------------------------------------------------------
    def service(self, ci: str) -> CIService:
        svc = self._services.get(ci)
        if svc is None:
            svc = self._services[ci] = self._load(ci)
        return svc

    def _load(self, ci: str) -> CIService:
        url = self.wsdl_url(ci)
        cache = WsdlCache(self.cache_root, url, self.max_age, refresh=self.refresh)
        transport = _PolicyTransport(self, cache)
        # libxml2 keeps its depth and size limits: WSDLs, XSDs and SOAP answers are small, and a huge or
        # deeply nested document from a broken or hostile server must not cost unbounded memory.
        settings = zeep.Settings(strict=True, xml_huge_tree=False)
        try:
            client = zeep.Client(url, transport=transport, wsse=self.wsse, settings=settings)
        except (etree.XMLSyntaxError, zeep.exceptions.Error, ValueError) as exc:
            raise CIServiceMissingError(
                f"The WSDL of service CI_{ci} at {url} could not be read ({short_body(str(exc), 200)}). Ask the "
                f"PeopleSoft admin to re-publish it (Provide Web Service wizard), then run with --refresh-wsdl.",
                operation=f"CI_{ci}") from None
        fetched = len(cache.fetched)
        try:
            cache.commit()
        except OSError as exc:  # a read-only cache costs speed, not correctness
            log.warning("could not write the WSDL cache at %s: %s", cache.dir, exc)
        self._transports[ci] = transport
        binding = None
        for service in client.wsdl.services.values():
            for port in service.ports.values():
                if hasattr(port.binding, "_operations") and type(port.binding).__name__.startswith("Soap"):
                    binding = port.binding
                    break
            if binding is not None:
                break
        if binding is None:
            raise CIServiceMissingError(f"The WSDL of service CI_{ci} ({url}) has no SOAP port. Ask the PeopleSoft "
                                        f"admin to re-publish it.", operation=f"CI_{ci}")
        operations: dict[str, str] = {}
        inputs: dict[str, list[str]] = {}
        required: dict[str, list[str]] = {}
        find_returns: list[str] = []
        for name, op in binding._operations.items():
            element = op.input.body.qname.localname if op.input is not None and op.input.body is not None else ""
            prefix = element.split("__CompIntfc__", 1)[0].lower()
            method = METHODS.get(prefix)
            if method and method not in operations:
                operations[method] = name
                inputs[method] = [n for n, _ in op.input.body.type.elements]
                required[method] = [n for n, el in op.input.body.type.elements if getattr(el, "min_occurs", 0) >= 1]
                if method == "F":
                    find_returns = _row_fields(op)
        # The WSDL's soap:address is the gateway's own idea of its host (often internal): bind to ours.
        proxy = client.create_service(binding.name.text, self.endpoint)
        settings = next((rs for rs in self.cfg.records.values() if rs.ci == ci and rs.transport == "ci"), None)
        get_keys = list(settings.get_keys) if settings is not None and settings.get_keys else \
            (required.get("G") or inputs.get("G", []))
        svc = CIService(ci=ci, client=client, proxy=proxy, binding=binding.name.text, operations=operations,
                        inputs=inputs, keys=get_keys, date_range=_range_keys(inputs.get("F", [])),
                        from_cache=fetched == 0, all_operations=sorted(binding._operations), required=required,
                        find_returns=find_returns, find_values=dict(settings.find_keys) if settings else {},
                        config_key=f"peoplesoft.records.{settings.kind if settings else '<kind>'}")
        log.debug("loaded CI_%s (%s): operations %s, %d document(s) from cache", ci, svc.binding, operations,
                  cache.hits)
        return svc

    # -- calls -----------------------------------------------------------------------------------
    def _call(self, svc: CIService, method: str, values: Mapping[str, Any]) -> Any:
        op = svc.op(method)
        allowed = svc.inputs.get(method, [])
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise CIServiceMissingError(
                f"Service operation {op} has no field {unknown[0]} (it has: {', '.join(allowed)}). Check the column "
                f"names against the CI, or ask the admin to expose the field on the component interface.",
                operation=op)
        # Unset fields are left out rather than sent empty: an empty element can blank a field.
        args = {k: v for k, v in values.items() if v is not None}
        try:
            result = svc.proxy[op](**args)
        except zeep.exceptions.Fault as exc:  # only if the body slipped past the transport's check
            raise self.explain(op, 500, etree.tostring(exc.detail).decode() if exc.detail is not None
                               else str(exc.message)) from None
        except (zeep.exceptions.ValidationError, TypeError) as exc:
            raise CIServiceMissingError(f"Request for {op} does not fit the WSDL: {exc}. Run with --refresh-wsdl if "
                                        f"the admin changed the service.", operation=op) from None
        except (zeep.exceptions.XMLParseError, etree.XMLSyntaxError) as exc:
            raise CIError(f"PeopleSoft answered {op} with XML that does not match its WSDL ({exc}). Run with "
                          f"--refresh-wsdl if the service was re-generated.", operation=op,
                          raw=self._transports[svc.ci].last_body) from None
        return _plain(zeep.helpers.serialize_object(result, dict))

    def _check_notification(self, svc: CIService, method: str, result: Any, keys: Mapping[str, Any]) -> None:
        if isinstance(result, dict) and str(result.get("notification", "1")).strip() == "0":
            op = svc.op(method)
            raw = self._transports[svc.ci].last_body
            ib = parse_ib_message(raw) if raw else None
            said = f" PeopleSoft said: {ib.default_message}" if ib and ib.default_message else ""
            raise CINotificationError(
                f"PeopleSoft did not save {op} for {_keytext(keys)}: HTTP 200, but the response's notification is 0 "
                f"(failure).{said} Fix the value it names, or ask the PeopleSoft admin to look the request up in "
                f"the Integration Broker message monitor (PeopleTools > Integration Broker > Service Operations "
                f"Monitor) for the CI's PeopleCode errors.",
                operation=op, raw=raw, status=200, message_set=ib.message_set if ib else "",
                message_id=ib.message_id if ib else "")

    def find(self, ci: str, keys: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Find: partial key values (and a date range where the CI has one) -> matching key rows."""
        svc = self.service(ci)
        result = self._call(svc, "F", svc.find_request(keys))
        key_names = set(svc.inputs.get("F", [])) | set(svc.keys)
        return [r for r in _find_rows(result, ci) if key_names & set(r)]

    def get(self, ci: str, keys: Mapping[str, Any]) -> dict[str, Any]:
        svc = self.service(ci)
        keys = {**{k: v for k, v in svc.find_values.items() if k in svc.inputs.get("G", [])},
                **{k: v for k, v in keys.items() if v is not None}}
        missing = [k for k in svc.required.get("G", []) if k not in keys]
        if missing:
            raise CIServiceMissingError(
                f"Cannot build {svc.op('G')}: its required key(s) {', '.join(missing)} have no value (have: "
                f"{_keytext(keys)}). Set {svc.config_key}.find_keys.{missing[0]} to the value to send, or "
                f"{svc.config_key}.get_keys to the keys Get really needs; `mlconnector ping` checks this.",
                operation=svc.op("G"))
        result = self._call(svc, "G", keys)
        if not isinstance(result, dict):
            raise CIError(f"PeopleSoft answered {svc.op('G')} for {_keytext(keys)} without a record.",
                          operation=svc.op("G"), raw=self._transports[ci].last_body)
        return result

    def exists(self, ci: str, keys: Mapping[str, Any]) -> bool:
        svc = self.service(ci)
        if "F" in svc.operations and set(keys) <= set(svc.inputs.get("F", [])):
            # Find matches prefixes: keep exact matches only.
            return any(all(_same(r.get(k), v) for k, v in keys.items()) for r in self.find(ci, keys))
        try:
            self.get(ci, keys)
            return True
        except CIFaultError as exc:
            if (exc.message_set, exc.message_id) == ("91", "50"):  # "No rows exist for the specified keys."
                return False
            raise

    def create(self, ci: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create; return the keys PeopleSoft saved (it may assign them, e.g. NEXT)."""
        svc = self.service(ci)
        op = svc.op("C")
        keys = {k: record.get(k) for k in svc.keys}
        verifiable = all(v not in (None, "", "NEXT") for v in keys.values())
        last: AmbiguousWriteError | None = None
        for attempt in range(1, max(1, self.http.settings.max_attempts) + 1):
            try:
                result = self._call(svc, "C", record)
            except AmbiguousWriteError as exc:
                last = exc
                if not verifiable:
                    raise AmbiguousWriteError(
                        f"{op} for a new record with PeopleSoft-assigned keys ({_keytext(keys)}) may or may not have "
                        f"been saved ({exc.message}). It was not sent again, since it cannot be looked up by key: "
                        f"check in PeopleSoft before re-running.", system=SYSTEM, raw=exc.raw, retryable=False,
                    ) from None
                if self._took_effect(lambda: self.exists(ci, keys), exc):
                    log.info("%s for %s took effect despite %s; not sent again", op, _keytext(keys), exc.message)
                    return keys
                log.info("%s for %s did not take effect (attempt %d); sending again", op, _keytext(keys), attempt)
                continue
            self._check_notification(svc, "C", result, keys)
            saved = _find_keys(result, svc.keys)
            return saved if all(saved.get(k) not in (None, "") for k in svc.keys) else keys
        assert last is not None
        raise last

    def update(self, ci: str, keys: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """UpdateData (``_UD``), or Update (``_UP``) where the install generated only that."""
        svc = self.service(ci)
        method = "UD" if "UD" in svc.operations else "UP"
        op = svc.op(method)
        request = {**changes, **keys}
        last: AmbiguousWriteError | None = None
        for attempt in range(1, max(1, self.http.settings.max_attempts) + 1):
            try:
                result = self._call(svc, method, request)
            except AmbiguousWriteError as exc:
                last = exc

                def applied() -> bool:
                    current = self.get(ci, keys)
                    return all(_deep_same(current.get(k), v) for k, v in changes.items())

                if self._took_effect(applied, exc):
                    log.info("%s for %s took effect despite %s; not sent again", op, _keytext(keys), exc.message)
                    return
                log.info("%s for %s did not take effect (attempt %d); sending again", op, _keytext(keys), attempt)
                continue
            self._check_notification(svc, method, result, keys)
            return
        assert last is not None
        raise last

    @staticmethod
    def _took_effect(check: Any, original: AmbiguousWriteError) -> bool:
        try:
            return bool(check())
        except (RemoteError, AuthError) as exc:
            # Cannot tell: report the write as ambiguous rather than risk a duplicate.
            raise AmbiguousWriteError(f"{original.message} Checking whether it took effect failed too "
                                      f"({exc.message}); it was not sent again.", system=SYSTEM, raw=original.raw,
                                      retryable=True) from None

    # -- error translation -----------------------------------------------------------------------
    def auth_error(self, op: str, detail: str) -> AuthError:
        c = self.cfg
        how = (f"WS-Security UsernameToken of user {c.user}" if self.wsse is not None
               else "OAuth2 bearer token")
        secret = "peoplesoft.password" if c.auth == "basic" else "peoplesoft.client_secret"
        return AuthError(f"PeopleSoft refused the {how} on service operation {op} ({detail}). Check user in "
                         f"[peoplesoft] and the secret (mlconnector secrets set {secret}), that the account is not "
                         f"locked, and that the operation's security allows a UsernameToken ({ADMIN_OPS}).")

    def explain(self, op: str, status: int | None, body: str) -> Exception:
        node = self.cfg.node
        if re.search(r"Unable to find a Routing", body, re.I):
            return CIRoutingError(
                f"PeopleSoft has no active routing for service operation {op} on node {node}: it answered with its "
                f"HTML 'Unable to find a Routing' page. Ask the PeopleSoft admin to set the service operation {op} "
                f"Active and to activate its any-to-local routing ({ADMIN_OPS}).", operation=op, raw=body,
                status=status)
        ib = parse_ib_message(body)
        if ib is None or body.lstrip()[:200].lower().startswith(("<html", "<!doctype")):
            # A proxy's or web server's own error page, say: worth another try on the next run if 5xx.
            return CIError(f"PeopleSoft answered {op} with something that is not SOAP (HTTP {status}): "
                           f"{short_body(body, 200)}", operation=op, raw=body, status=status,
                           retryable=(status or 0) >= 500)
        code = (ib.message_set, ib.message_id)
        msg = ib.default_message or ib.faultstring or "(no message)"
        kw: dict[str, Any] = {"operation": op, "raw": body, "status": status, "message_set": ib.message_set,
                              "message_id": ib.message_id}
        if code == ("158", "505"):
            return CIWrongNodeError(
                f"PeopleSoft did not recognise node {node} on service operation {op}: {msg} Set node in "
                f"[peoplesoft] to the database's default local node (PeopleTools > Integration Broker > Integration "
                f"Setup > Nodes, the row flagged Default Local; FSCM ships PSFT_EP).", **kw)
        if code in (("158", "10"), ("158", "55")):
            return self.auth_error(op, msg)
        if code == ("158", "536"):
            return CIFaultError(
                f"PeopleSoft user {self.cfg.user or '(token user)'} may not invoke service operation {op}: {msg} Ask "
                f"the PeopleSoft admin to add {op} to one of the user's permission lists (Web Services tab) and to "
                f"grant the component interface's methods (Component Interfaces tab).", **kw)
        where = f" (message set {ib.message_set}, number {ib.message_id})" if ib.message_set else ""
        return CIFaultError(
            f"PeopleSoft refused service operation {op}: {msg}{where}. This is the component interface's own "
            f"validation: correct the data it names, or ask the PeopleSoft admin to look the message up in the "
            f"Message Catalog (PeopleTools > Utilities > Administration > Message Catalog).", **kw)

    def explain_wsdl(self, url: str, status: int | None, body: str) -> Exception:
        service = url.rsplit("/", 1)[-1].removesuffix(".1.wsdl").removesuffix(".V1.xsd")
        ib = parse_ib_message(body) if body else None
        if ib is not None and (ib.message_set, ib.message_id) == ("158", "505"):
            return CIWrongNodeError(
                f"PeopleSoft did not recognise node {self.cfg.node} when fetching the WSDL of {service}: "
                f"{ib.default_message} Set node in [peoplesoft] to the database's default local node "
                f"(PeopleTools > Integration Broker > Integration Setup > Nodes, the row flagged Default Local).",
                operation=service, raw=body, status=status)
        said = f": {ib.default_message}" if ib and ib.default_message else f" (HTTP {status})"
        return CIServiceMissingError(
            f"PeopleSoft has no WSDL for {service} at {url}{said}. Check ci in [peoplesoft.records.<kind>] (the "
            f"component interface name, without the CI_ prefix of the service), and ask the PeopleSoft admin to "
            f"generate the CI-based service with Find and Get ({ADMIN_CI}) and publish its WSDL (Provide Web "
            f"Service wizard).", operation=service, raw=body, status=status)


def _row_fields(op: Any) -> list[str]:
    """Field names of one Find result row (the response's repeating element), from the WSDL."""
    try:
        out: list[str] = []
        for _, el in op.output.body.type.elements:
            inner = getattr(el.type, "elements", None)
            out += [n for n, _ in inner] if inner else [el.name]
        return out
    except AttributeError:
        return []


def _keytext(keys: Mapping[str, Any]) -> str:
    return "/".join(str(v) for v in keys.values()) or "(no keys)"


def _find_rows(result: Any, ci: str) -> list[dict[str, Any]]:
    """Key rows from a Find response, however zeep unwrapped it (list, {ci: [...]}, one dict, None)."""
    if result is None:
        return []
    if isinstance(result, list):
        return [r for r in result if isinstance(r, dict)]
    if isinstance(result, dict):
        if ci in result:
            return _find_rows(result[ci], ci)
        if len(result) == 1 and isinstance(next(iter(result.values())), list | dict | type(None)):
            return _find_rows(next(iter(result.values())), ci)
        return [result]
    return []


def _find_keys(result: Any, names: list[str]) -> dict[str, Any]:
    """Key values anywhere in a Create response (directly or under ``detail``)."""
    out: dict[str, Any] = {}
    if isinstance(result, dict):
        for k, v in result.items():
            if k in names and not isinstance(v, dict | list):
                out[k] = v
        for v in result.values():
            if isinstance(v, dict | list):
                for k, val in _find_keys(v, names).items():
                    out.setdefault(k, val)
    elif isinstance(result, list):
        for v in result:
            for k, val in _find_keys(v, names).items():
                out.setdefault(k, val)
    return out


# -- reader for the pass --------------------------------------------------------------------------
def to_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A Get record in the QAS row format: date text, numbers as floats, datetimes with their offset."""
    row: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict | list):
            continue  # collections (scroll levels) are not part of a flat query row
        if isinstance(v, datetime):
            row[k] = v.strftime("%Y-%m-%dT%H:%M:%S%z") if v.tzinfo else v.strftime("%Y-%m-%dT%H:%M:%S")
        elif isinstance(v, date):
            row[k] = v.isoformat()
        elif isinstance(v, Decimal):
            row[k] = float(v)
        elif v is None:
            row[k] = ""  # PeopleSoft character fields are blank, never null
        else:
            row[k] = v
    return row


class CIReader:
    """``read_window`` over one CI, with the QAS reader's contract and row format.

    Find by the CI's date-range find keys (``<FIELD>_FROM``/``<FIELD>_TO``) where it has them, else
    Find everything and keep the rows updated in the window; then Get each record. Rows are yielded
    in update-time order in batches; each batch's ``covered_until`` is the update time of the next
    row, so a pass that stops between batches resumes without a gap.
    """

    def __init__(self, client: CIClient, ci: str, *, batch: int = 200) -> None:
        self.client = client
        self.ci = ci
        self.batch = batch
        self.gets = 0

    def read_window(self, query_or_ci_name: str, start: datetime, end: datetime) -> Iterator[
            tuple[list[dict[str, Any]], datetime]]:
        # The pass hands over the kind's PS Query name; this reader was built for its configured CI.
        ci = self.ci or query_or_ci_name
        svc = self.client.service(ci)
        if svc.date_range:
            lo, hi = svc.date_range
            found = self.client.find(ci, {lo: start, hi: end})
        else:
            found = self.client.find(ci, {})
        stamped: list[tuple[datetime, dict[str, Any]]] = []
        for keys in found:
            wanted = {k: keys.get(k, svc.find_values.get(k)) for k in svc.keys}
            try:
                record = self.client.get(ci, wanted)
            except CIFaultError as exc:
                if (exc.message_set, exc.message_id) == ("91", "50"):
                    continue  # deleted between Find and Get
                raise
            self.gets += 1
            row = to_row(record)
            try:
                ts = parse_ps_datetime(row.get(STAMP))
            except ValueError:
                stamped.append((start, row))  # the pass reports the bad timestamp for this record
                continue
            if svc.date_range or start <= ts < end:
                stamped.append((ts, row))
        stamped.sort(key=lambda p: p[0])
        batch: list[dict[str, Any]] = []
        last: datetime | None = None
        for ts, row in stamped:
            if len(batch) >= self.batch and last is not None and ts > last:
                yield batch, ts
                batch = []
            batch.append(row)
            last = ts
        yield batch, end
