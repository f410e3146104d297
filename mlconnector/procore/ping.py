"""`mlconnector ping` for Procore: a token, the company's installation, each project the pair names, and the
tools the pair uses on them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mlconnector.checks import Check
from mlconnector.errors import AuthError, ConnectorError
from mlconnector.procore.client import APP_MANAGEMENT, SECRET, ProcoreClient, ProcoreToken, token_cache_for
from mlconnector.procore.config import ProcoreConfig

SYSTEM = "Procore"


def open_client(cfg: ProcoreConfig, instance: str, secret: str) -> ProcoreClient:
    return ProcoreClient(cfg, ProcoreToken(cfg, secret, token_cache_for(cfg, instance)))


def procore_checks(cfg: ProcoreConfig, instance: str, secret: str, projects: Iterable[int] = ()) -> list[Check]:
    """Token (from the cache or fetched), the company in the app's company list, each project permitted, and
    one small read of each tool (directory vendors; cost codes and commitments per project)."""
    client = open_client(cfg, instance, secret)
    out: list[Check] = []
    try:
        try:
            client.token.get()
            out.append(Check(SYSTEM, "token", True, f"client {cfg.client_id} "
                                                    f"({'fetched' if client.token.fetches else 'from the cache'})"))
        except ConnectorError as exc:
            return [Check(SYSTEM, "token", False, exc.message,
                          f"Check client_id and login_url in [procore] and mlconnector secrets set {SECRET}.")]
        try:
            ids = {int(c.get("id", 0)) for c in client.companies()}
        except ConnectorError as exc:
            return out + [Check(SYSTEM, "company installed", False, exc.message,
                                f"A company admin installs the app under {APP_MANAGEMENT}.")]
        ok = cfg.company_id in ids
        out.append(Check(SYSTEM, "company installed", ok, f"company {cfg.company_id}" if ok else
                         f"company {cfg.company_id} has not installed the app (installed: "
                         f"{', '.join(map(str, sorted(ids))) or 'none'})",
                         f"Check company_id in [procore]; a company admin installs the app under {APP_MANAGEMENT}."))
        if not ok:
            return out
        try:
            permitted = {int(p.get("id", 0)) for p in client.projects()}
        except ConnectorError as exc:
            return out + [Check(SYSTEM, "projects", False, exc.message, f"See {APP_MANAGEMENT}.")]
        probes: list[tuple[str, Callable[[], Any]]] = [
            ("tool Directory (vendors)", lambda: next(client.pages(cfg.vendors_path, {"company_id": cfg.company_id,
                                                                                     "per_page": 1}), []))]
        for pid in projects:
            allowed = pid in permitted
            out.append(Check(SYSTEM, f"project {pid} permitted", allowed, "permitted" if allowed else
                             "not among the app's permitted projects",
                             f"A company admin adds project {pid} to the app's permitted projects under "
                             f"{APP_MANAGEMENT} (an app update or reinstall makes them pick the projects again)."))
            if allowed:
                probes.append((f"project {pid} tool Admin (cost codes)",
                               lambda pid=pid: next(client.pages(cfg.cost_codes_path, {"project_id": pid}), [])))
                probes.append((f"project {pid} tool Commitments",
                               lambda pid=pid: next(client.pages(cfg.commitments_path, {"project_id": pid}), [])))
        for name, probe in probes:
            try:
                probe()
                out.append(Check(SYSTEM, name, True, "answered"))
            except AuthError as exc:
                out.append(Check(SYSTEM, name, False, exc.message, f"See {APP_MANAGEMENT}."))
                return out
            except ConnectorError as exc:
                out.append(Check(SYSTEM, name, False, exc.message,
                                 "Enable the tool on the project and grant the app's service account access to it "
                                 "(the app manifest's tool permissions)."))
        try:
            body = client.get_json("/rest/v1.0/webhooks/resources", {"company_id": cfg.company_id})
            known = {str(r.get("name")) for r in body if isinstance(r, dict)} if isinstance(body, list) else set()
            unknown = [r for r in cfg.webhook_resources if r not in known]
            out.append(Check(SYSTEM, "webhook trigger resources", not unknown,
                             ", ".join(cfg.webhook_resources) if not unknown else
                             f"Procore knows no webhook resource {', '.join(repr(u) for u in unknown)}",
                             "Set webhook_resources in [procore] to names GET /rest/v1.0/webhooks/resources lists "
                             "(polling still reads every change meanwhile).", warning=True))
        except ConnectorError as exc:
            out.append(Check(SYSTEM, "webhook trigger resources", False, exc.message,
                             "Webhooks are optional: polling reads every change.", warning=True))
        if client.rate.limit is not None:
            out.append(Check(SYSTEM, "rate limit", True, f"{client.rate.remaining} of {client.rate.limit} calls left "
                                                         f"in the tightest window"))
    finally:
        client.close()
    return out
