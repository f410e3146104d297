"""The [procurify] configuration section: where the tenant is, how to log in, how to poll.

Everything the public reference marks unverified (the vendor list's URL form, the page size limit, the
name of the date filter, extra list filters) is a key here with the documented value as its default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mlconnector.errors import ConfigError
from mlconnector.http import HttpSettings
from mlconnector.sections import HTTP_KEYS, Section, http_settings, parse_since, url

AUDIENCE = "https://api.procurify.com/"  # exactly, with the trailing slash (reference procurify.md §2, §6.7)
TOKEN_CACHES = ("file", "keyring", "none")


@dataclass
class ProcurifyConfig:
    """Typed [procurify] settings. ``base_url`` is ``https://<domain>.procurify.com`` unless given."""

    base_url: str
    client_id: str
    audience: str = AUDIENCE
    token_path: str = "/oauth/token"
    token_cache: str = "file"  # where the 24 h access token is kept between runs: file (0600) | keyring | none
    token_margin_minutes: float = 30.0  # a cached token is renewed this long before it expires
    page_size: int = 50
    overlap_hours: float = 24.0  # date filters are day-granular: re-read a day and dedupe by id + modified time
    initial_since: datetime = field(default_factory=lambda: datetime(2000, 1, 1))
    order_items_path: str = "/api/v3/order-items/"
    modified_filter: str = "last_modified"  # django-filter pair <name>_0 / <name>_1, YYYY-MM-DD
    order_item_filters: dict[str, str] = field(default_factory=dict)  # extra query parameters sent as given
    vendors_path: str = "/api/v3/vendors/"  # [U] some tenants answer only /api/v3/vendors/all/
    vendor_path: str = "/api/v3/vendors/"  # + "<id>/" for one vendor (GET / PATCH)
    account_codes_path: str = "/api/v3/account-codes/"  # + "<id>/" for PUT (no PATCH/DELETE)
    purchase_order_path: str = "/api/v2/purchase_orders/"  # + "<procurify_PO>/": one PO with its state
    close_po_path: str = "/api/v3/purchase-orders/"  # + "<procurify_PO>/close/"
    whoami_path: str = "/api/v3/users/me/"
    http: HttpSettings = field(default_factory=HttpSettings)

    def site(self) -> str:
        """The tenant a state file of this configuration describes (State.bind_sites)."""
        return self.base_url.lower()


KNOWN = HTTP_KEYS | {"domain", "base_url", "client_id", "audience", "token_path", "token_cache",
                     "token_margin_minutes", "page_size", "overlap_hours", "initial_since", "order_items_path",
                     "modified_filter", "order_item_filters", "vendors_path", "vendor_path", "whoami_path",
                     "account_codes_path", "purchase_order_path", "close_po_path"}


def _path(s: Section, name: str, default: str) -> str:
    v = s.str(name, default)
    if not v.startswith("/"):
        raise ConfigError(f"{s.key(name)} = {v!r} must be a path starting with '/', like {default!r} (keep the "
                          f"trailing slash: Procurify is a Django REST Framework service).")
    return v


def parse_procurify(s: Section) -> ProcurifyConfig:
    """Parse [procurify] (registered in registry.SECTIONS); every error names its key."""
    s = Section(s.data, s.prefix, KNOWN)
    if "base_url" in s.data:
        base_url = url(s, "base_url")
    else:
        domain = s.str("domain").strip()
        if not domain or "." in domain or "/" in domain:
            raise ConfigError(f"{s.key('domain')} = {domain!r}: write only the subdomain you log in with (acme "
                              f"for https://acme.procurify.com).")
        base_url = f"https://{domain}.procurify.com"
    audience = s.str("audience", AUDIENCE)
    page_size = s.num("page_size", 50, minimum=1, integer=True)
    if page_size > 200:
        # The disclaimer warns that oversized, timing-out requests can get API access suspended.
        raise ConfigError(f"{s.key('page_size')} = {page_size} is too large; keep pages moderate (50-100).")
    return ProcurifyConfig(
        base_url=base_url,
        client_id=s.str("client_id"),
        audience=audience,
        token_path=_path(s, "token_path", "/oauth/token"),
        token_cache=s.str("token_cache", "file", choices=TOKEN_CACHES),
        token_margin_minutes=s.num("token_margin_minutes", 30.0, minimum=0),
        page_size=page_size,
        overlap_hours=s.num("overlap_hours", 24.0, minimum=0),
        initial_since=parse_since(s, "initial_since", "2000-01-01"),
        order_items_path=_path(s, "order_items_path", "/api/v3/order-items/"),
        modified_filter=s.str("modified_filter", "last_modified"),
        order_item_filters=s.str_map("order_item_filters"),
        vendors_path=_path(s, "vendors_path", "/api/v3/vendors/"),
        vendor_path=_path(s, "vendor_path", "/api/v3/vendors/"),
        account_codes_path=_path(s, "account_codes_path", "/api/v3/account-codes/"),
        purchase_order_path=_path(s, "purchase_order_path", "/api/v2/purchase_orders/"),
        close_po_path=_path(s, "close_po_path", "/api/v3/purchase-orders/"),
        whoami_path=_path(s, "whoami_path", "/api/v3/users/me/"),
        http=http_settings(s),
    )
