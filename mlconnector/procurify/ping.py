"""`mlconnector ping` for Procurify: a token, the endpoints the pairs read, and who the API user is."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mlconnector.checks import Check
from mlconnector.errors import AuthError, ConnectorError
from mlconnector.procurify.client import SECRET, ProcurifyClient, ProcurifyToken, token_cache_for
from mlconnector.procurify.config import ProcurifyConfig

SYSTEM = "Procurify"


def open_client(cfg: ProcurifyConfig, instance: str, secret: str) -> ProcurifyClient:
    return ProcurifyClient(cfg, ProcurifyToken(cfg, secret, token_cache_for(cfg, instance)))


def procurify_checks(cfg: ProcurifyConfig, instance: str, secret: str) -> list[Check]:
    """Token (from the cache or fetched), then each endpoint with one small page."""
    from mlconnector.state import utcnow

    client = open_client(cfg, instance, secret)
    out: list[Check] = []
    try:
        try:
            client.token.get()
            out.append(Check(SYSTEM, "token", True, f"client {cfg.client_id}, audience {cfg.audience} "
                                                    f"({'fetched' if client.token.fetches else 'from the cache'})"))
        except ConnectorError as exc:
            return [Check(SYSTEM, "token", False, exc.message,
                          f"Check base_url/domain, client_id and audience in [procurify] and mlconnector secrets set "
                          f"{SECRET}.")]
        now = utcnow()
        probes: list[tuple[str, Any]] = [
            (f"GET {cfg.whoami_path}", lambda: client.whoami()),
            (f"GET {cfg.order_items_path}", lambda: next(iter(client.order_items(now - timedelta(days=1), now)), [])),
            (f"GET {cfg.vendors_path}", lambda: next(iter(client.pages(cfg.vendors_path)), [])),
        ]
        for name, probe in probes:
            try:
                probe()
                out.append(Check(SYSTEM, name, True, "answered"))
            except AuthError as exc:
                out.append(Check(SYSTEM, name, False, exc.message, "Use an active service user with the "
                                                                   "Superuser role for the API application."))
                return out
            except ConnectorError as exc:
                out.append(Check(SYSTEM, name, False, exc.message,
                                 "Check the path in [procurify] (the reference marks some forms unverified, e.g. "
                                 "vendors_path = \"/api/v3/vendors/all/\"), and the user's role."))
    finally:
        client.close()
    return out
