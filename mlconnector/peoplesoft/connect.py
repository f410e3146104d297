"""PeopleSoft wiring: the authenticator, the PS Query client and the Component Interface readers."""

from __future__ import annotations

from typing import Any

from mlconnector.config import Config
from mlconnector.credentials import SecretStore


def peoplesoft_auth(cfg: Config, secrets: SecretStore) -> Any:
    """Basic (OPRID + password) or OAuth 2.0 client credentials; reads the secret now."""
    ps = cfg.peoplesoft
    if ps.auth == "basic":
        return (ps.user, secrets.get("peoplesoft.password"))
    from mlconnector.auth import ClientCredentialsAuth

    return ClientCredentialsAuth("PeopleSoft", ps.token_url, ps.client_id, secrets.get("peoplesoft.client_secret"),
                                 ps.scope, ps.http)


def ci_readers(cfg: Config, auth: Any, *, refresh_wsdl: bool = False) -> tuple[dict[str, Any], Any]:
    """Readers for the record kinds configured with transport = "ci", and the CI client they share."""
    wanted = {k: rs for k, rs in cfg.peoplesoft.records.items() if rs.enabled and rs.transport == "ci"}
    if not wanted:
        return {}, None
    from mlconnector.peoplesoft.ci import CIClient, CIReader  # zeep is heavy: import it only when used

    client = CIClient(cfg.peoplesoft, auth, refresh=refresh_wsdl)
    return {k: CIReader(client, rs.ci) for k, rs in wanted.items()}, client
