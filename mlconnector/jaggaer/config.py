"""The [jaggaer] configuration section: where the tenant is, how to log in, which paths and envelopes to read.

JAGGAER does not publish its procure-to-pay REST reference, so every path, list envelope key, modified-date
filter field and token format is a key here. The defaults are the shapes seen in public client code (J1P
Keycloak token, ``ja/v1/companyprofiles``, ``ji/v1/invoices``); requisition and purchase-order paths are
placeholders the customer's tenant documentation must confirm (``mlconnector ping`` tries each one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mlconnector.errors import ConfigError
from mlconnector.http import HttpSettings
from mlconnector.sections import HTTP_KEYS, Section, http_settings, parse_since, url

TOKEN_FORMATS = ("auto", "keycloak", "legacy")
TOKEN_CACHES = ("file", "keyring", "none")
KEYCLOAK_TOKEN_PATH = "/auth/realms/J1p-integrations/protocol/openid-connect/token"
LEGACY_TOKEN_PATH = "/esop/jint/api/public/v1/tokens"


@dataclass(frozen=True)
class Endpoint:
    """One list endpoint: its path, the dotted key of the record list in the answer, the FIQL field its
    modified-time filter compares, the time format that field takes, and extra FIQL clauses always sent."""

    path: str
    list_key: str
    modified_field: str
    time_format: str = "%Y-%m-%dT%H:%M:%SZ"
    filter: str = ""


@dataclass
class JaggaerConfig:
    """Typed [jaggaer] settings (see the module docstring)."""

    base_url: str
    client_id: str
    token_format: str = "auto"  # auto: whichever of the two documented shapes the token endpoint answers
    token_path: str = KEYCLOAK_TOKEN_PATH
    token_cache: str = "file"
    token_margin_seconds: float = 30.0  # a token is renewed this long before it expires (public clients: ~30 s)
    legacy_token_minutes: float = 10.0  # lifetime assumed when a legacy answer carries no expire_in
    overlap_minutes: float = 10.0  # each pass re-reads this much before its watermark; dedupe absorbs it
    initial_since: datetime = field(default_factory=lambda: datetime(2000, 1, 1))
    suppliers: Endpoint = field(default_factory=lambda: Endpoint(
        "/j1p/api/public/ja/v1/companyprofiles", "returnCompanyData", "LASTMODTIME", "%Y%m%d%H%M%S", "TYPE==SELLER"))
    purchase_orders: Endpoint = field(default_factory=lambda: Endpoint(
        "/j1p/api/public/jp/v1/purchaseorders", "purchaseOrderList.purchaseOrder", "lastUpdate"))
    invoices: Endpoint = field(default_factory=lambda: Endpoint(
        "/j1p/api/public/ji/v1/invoices", "jiinvoiceList.jiinvoice", "lastUpdate"))
    requisitions: Endpoint = field(default_factory=lambda: Endpoint(
        "/j1p/api/public/jp/v1/requisitions", "requisitionList.requisition", "lastUpdate"))
    http: HttpSettings = field(default_factory=HttpSettings)

    def site(self) -> str:
        """The tenant a state file of this configuration describes (State.bind_sites)."""
        return self.base_url.lower()


KNOWN = HTTP_KEYS | {"base_url", "client_id", "token_format", "token_path", "token_cache", "token_margin_seconds",
                     "legacy_token_minutes", "overlap_minutes", "initial_since", "suppliers", "purchase_orders",
                     "invoices", "requisitions"}
ENDPOINT_KEYS = {"path", "list_key", "modified_field", "time_format", "filter"}


def _path(s: Section, name: str, default: str) -> str:
    v = s.str(name, default)
    if not v.startswith("/"):
        raise ConfigError(f"{s.key(name)} = {v!r} must be a path starting with '/', like {default!r}.")
    return v


def _endpoint(s: Section, name: str, default: Endpoint) -> Endpoint:
    t = s.table(name, ENDPOINT_KEYS)
    fmt = t.str("time_format", default.time_format)
    try:
        datetime(2020, 1, 2, 3, 4, 5).strftime(fmt)
    except ValueError:
        raise ConfigError(f"{t.key('time_format')} = {fmt!r} is not a strftime format (like \"%Y%m%d%H%M%S\")."
                          ) from None
    return Endpoint(path=_path(t, "path", default.path), list_key=t.str("list_key", default.list_key),
                    modified_field=t.str("modified_field", default.modified_field), time_format=fmt,
                    filter=t.str("filter", default.filter))


def parse_jaggaer(s: Section) -> JaggaerConfig:
    """Parse [jaggaer] (registered in registry.SECTIONS); every error names its key."""
    s = Section(s.data, s.prefix, KNOWN)
    token_format = s.str("token_format", "auto", choices=TOKEN_FORMATS)
    default_path = LEGACY_TOKEN_PATH if token_format == "legacy" else KEYCLOAK_TOKEN_PATH
    d = JaggaerConfig("", "")
    return JaggaerConfig(
        base_url=url(s, "base_url"),
        client_id=s.str("client_id"),
        token_format=token_format,
        token_path=_path(s, "token_path", default_path),
        token_cache=s.str("token_cache", "file", choices=TOKEN_CACHES),
        token_margin_seconds=s.num("token_margin_seconds", 30.0, minimum=0),
        legacy_token_minutes=s.num("legacy_token_minutes", 10.0, minimum=0.1),
        overlap_minutes=s.num("overlap_minutes", 10.0, minimum=0),
        initial_since=parse_since(s, "initial_since", "2000-01-01"),
        suppliers=_endpoint(s, "suppliers", d.suppliers),
        purchase_orders=_endpoint(s, "purchase_orders", d.purchase_orders),
        invoices=_endpoint(s, "invoices", d.invoices),
        requisitions=_endpoint(s, "requisitions", d.requisitions),
        http=http_settings(s),
    )
