"""The [procore] configuration section: which Procore environment and company, how to log in, how to page.

Hosts differ per environment (production, developer sandbox, monthly sandbox), so both the token host and
the API host are keys. Resource paths are keys too, with the v1.x paths of the public reference as defaults;
the page size default stays well under the advised maximum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlconnector.errors import ConfigError
from mlconnector.http import HttpSettings
from mlconnector.sections import HTTP_KEYS, Section, http_settings, str_list, url

TOKEN_CACHES = ("file", "keyring", "none")
SYNC_MAX = 1000  # items per sync action call (reference procore.md section 6)


@dataclass
class ProcoreConfig:
    """Typed [procore] settings. ``company_id`` is the company that installed the app (its DMSA)."""

    client_id: str
    company_id: int
    base_url: str = "https://api.procore.com"
    login_url: str = "https://login.procore.com"
    token_path: str = "/oauth/token"
    token_cache: str = "file"  # where the 90 min token waits between runs: file (0600) | keyring | none
    token_margin_minutes: float = 5.0  # renewed this long before created_at + expires_in
    page_size: int = 100
    sync_batch: int = SYNC_MAX  # items per sync action call (the API's maximum by default)
    # Calls kept in hand in each rate-limit window: at or below this many remaining, the client waits for the
    # window's reset (X-Rate-Limit-Reset) instead of spending the last calls and meeting a 429.
    spare_calls: int = 2
    companies_path: str = "/rest/v1.0/companies"
    projects_path: str = "/rest/v1.0/projects"
    vendors_path: str = "/rest/v1.0/vendors"
    cost_codes_path: str = "/rest/v1.0/cost_codes"
    commitments_path: str = "/rest/v1.0/purchase_order_contracts"
    # Project cost reads ({project_id} and {id} are filled in); the change order detail carries its line_items [U].
    direct_costs_path: str = "/rest/v1.1/projects/{project_id}/direct_costs"
    direct_cost_lines_path: str = "/rest/v1.0/projects/{project_id}/direct_costs/{id}/line_items"
    direct_costs_sync_path: str = "/rest/v1.0/projects/{project_id}/direct_costs/sync"
    change_orders_path: str = "/rest/v1.0/projects/{project_id}/commitment_change_orders"
    # Webhooks (`mlconnector webhook procore-register`): one hook per integration, named by its namespace.
    webhook_namespace: str = "ml-connector"
    webhook_api_version: str = "v2"
    webhook_resources: list[str] = field(default_factory=lambda: ["Purchase Order Contracts", "Direct Costs"])
    webhook_events: list[str] = field(default_factory=lambda: ["create", "update"])
    http: HttpSettings = field(default_factory=HttpSettings)

    def site(self) -> str:
        """The company a state file of this configuration describes (State.bind_sites)."""
        return f"{self.base_url.lower()} company {self.company_id}"


KNOWN = HTTP_KEYS | {"client_id", "company_id", "base_url", "login_url", "token_path", "token_cache",
                     "token_margin_minutes", "page_size", "sync_batch", "spare_calls", "companies_path",
                     "projects_path", "vendors_path", "cost_codes_path", "commitments_path", "webhook_namespace",
                     "webhook_api_version", "webhook_resources", "webhook_events", "direct_costs_path",
                     "direct_cost_lines_path", "direct_costs_sync_path", "change_orders_path"}


def _path(s: Section, name: str, default: str) -> str:
    v = s.str(name, default)
    if not v.startswith("/") or v.endswith("/"):
        raise ConfigError(f"{s.key(name)} = {v!r} must be a path starting with '/' and without a trailing slash, "
                          f"like {default!r}.")
    return v


def parse_procore(s: Section) -> ProcoreConfig:
    """Parse [procore] (registered in registry.SECTIONS); every error names its key."""
    s = Section(s.data, s.prefix, KNOWN)
    company = s.data.get("company_id")
    if isinstance(company, str) and company.strip().isdigit():
        company = int(company.strip())
    if isinstance(company, bool) or not isinstance(company, int) or company <= 0:
        raise ConfigError(f"{s.key('company_id')} must be the numeric id of the company that installed the app "
                          f"(Company Admin > App Management shows it in the URL), got {company!r}.")
    page_size = s.num("page_size", 100, minimum=1, integer=True)
    if page_size > 2000:
        raise ConfigError(f"{s.key('page_size')} = {page_size}: Procore advises at most 2000 per page; large "
                          f"unfiltered pages can time out (HTTP 408). Use 100-1000.")
    batch = s.num("sync_batch", SYNC_MAX, minimum=1, integer=True)
    if batch > SYNC_MAX:
        raise ConfigError(f"{s.key('sync_batch')} = {batch}: a sync action takes at most {SYNC_MAX} items per call.")
    return ProcoreConfig(
        client_id=s.str("client_id"),
        company_id=company,
        base_url=url(s, "base_url") if "base_url" in s.data else "https://api.procore.com",
        login_url=url(s, "login_url") if "login_url" in s.data else "https://login.procore.com",
        token_path=_path(s, "token_path", "/oauth/token"),
        token_cache=s.str("token_cache", "file", choices=TOKEN_CACHES),
        token_margin_minutes=s.num("token_margin_minutes", 5.0, minimum=0),
        page_size=page_size,
        sync_batch=batch,
        spare_calls=s.num("spare_calls", 2, minimum=0, integer=True),
        companies_path=_path(s, "companies_path", "/rest/v1.0/companies"),
        projects_path=_path(s, "projects_path", "/rest/v1.0/projects"),
        vendors_path=_path(s, "vendors_path", "/rest/v1.0/vendors"),
        cost_codes_path=_path(s, "cost_codes_path", "/rest/v1.0/cost_codes"),
        commitments_path=_path(s, "commitments_path", "/rest/v1.0/purchase_order_contracts"),
        direct_costs_path=s.str("direct_costs_path", "/rest/v1.1/projects/{project_id}/direct_costs"),
        direct_cost_lines_path=s.str("direct_cost_lines_path",
                                     "/rest/v1.0/projects/{project_id}/direct_costs/{id}/line_items"),
        direct_costs_sync_path=s.str("direct_costs_sync_path", "/rest/v1.0/projects/{project_id}/direct_costs/sync"),
        change_orders_path=s.str("change_orders_path", "/rest/v1.0/projects/{project_id}/commitment_change_orders"),
        webhook_namespace=_namespace(s),
        webhook_api_version=s.str("webhook_api_version", "v2"),
        webhook_resources=str_list(s, "webhook_resources") if "webhook_resources" in s.data
        else ["Purchase Order Contracts", "Direct Costs"],
        webhook_events=str_list(s, "webhook_events") if "webhook_events" in s.data else ["create", "update"],
        http=http_settings(s),
    )


def _namespace(s: Section) -> str:
    import re

    v = s.str("webhook_namespace", "ml-connector")
    if not re.fullmatch(r"[a-z0-9-]+", v):
        raise ConfigError(f"{s.key('webhook_namespace')} = {v!r}: Procore takes lowercase letters, digits and dashes "
                          f"only, like \"ml-connector\".")
    return v
