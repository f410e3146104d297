"""`mlconnector ping` for JAGGAER: a token in either format, then each configured list path with one page
(its ``returnCode`` checked: an HTTP 200 carrying an error is a failed check)."""

from __future__ import annotations

from datetime import timedelta

from mlconnector.checks import Check
from mlconnector.errors import AuthError, ConnectorError
from mlconnector.jaggaer.client import SECRET, JaggaerError, open_client
from mlconnector.jaggaer.config import JaggaerConfig

SYSTEM = "JAGGAER"


def jaggaer_checks(cfg: JaggaerConfig, instance: str, secret: str) -> list[Check]:
    """Token (cached or fetched, either format), then one filtered page of every configured endpoint."""
    from mlconnector.state import utcnow

    client = open_client(cfg, instance, secret)
    out: list[Check] = []
    try:
        try:
            client.token.get()
            how = f"{client.token.format_seen} format, fetched" if client.token.fetches else "from the cache"
            out.append(Check(SYSTEM, "token", True, f"client {cfg.client_id} at {cfg.token_path} ({how})"))
        except ConnectorError as exc:
            return [Check(SYSTEM, "token", False, exc.message,
                          f"Check base_url, token_path, token_format and client_id in [jaggaer] and "
                          f"mlconnector secrets set {SECRET}.")]
        since = utcnow() - timedelta(days=1)
        for name, ep in (("suppliers", cfg.suppliers), ("requisitions", cfg.requisitions),
                         ("purchase_orders", cfg.purchase_orders), ("invoices", cfg.invoices)):
            label = f"GET {ep.path}"
            try:
                next(iter(client.changed(ep, since)), [])
                out.append(Check(SYSTEM, label, True, f"answered with returnCode 0 ({name})"))
            except AuthError as exc:
                out.append(Check(SYSTEM, label, False, exc.message,
                                 "Ask JAGGAER to grant the integration client this module."))
                return out
            except JaggaerError as exc:
                out.append(Check(SYSTEM, label, False, exc.message,
                                 f"HTTP 200 carried returnCode {exc.return_code}: check modified_field, time_format "
                                 f"and filter in [jaggaer.{name}] against the tenant's API documentation."))
            except ConnectorError as exc:
                out.append(Check(SYSTEM, label, False, exc.message,
                                 f"Check path and list_key in [jaggaer.{name}]: JAGGAER does not publish these "
                                 f"paths, the tenant's onboarding documentation names them."))
    finally:
        client.close()
    return out
