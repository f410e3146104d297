"""The Procurify -> PeopleSoft sandbox: the Procurify simulator and the purchasing CI simulator on loopback,
seeded with vendors and approved requisitions, and the configuration that points at them."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlconnector.sandbox.peoplesoft_po_ci import PurchasingCI, PurchasingGateway
from mlconnector.sandbox.procurify_sim import CLIENT_ID, CLIENT_SECRET, ProcurifySim
from mlconnector.sandbox.server import Request, Response, SandboxServer, json_response, text_response

PS_USER = "ML_CONNECTOR"
PS_PASSWORD = "sandbox-ps-password"
NODE = "PSFT_EP"
# Procurify vendor id -> (PeopleSoft VENDOR_ID, name); the crosswalk of the example configuration.
VENDORS = {301: ("0000000042", "Acme Supply"), 302: ("0000000077", "Northwind Industrial")}
ACCOUNTS = {"6100|Facilities": "640000/FAC", "6200|IT": "641000/IT", "6300|Operations": "650000/OPS"}
UNITS = {"EA": "EA", "BOX": "BX", "HR": "HR"}
# The sandbox's GL accounts (ACCOUNT -> DESCR); those the example scope names become Procurify account codes.
GL_ACCOUNTS = {"640000": "Office supplies expense", "641000": "IT equipment expense", "650000": "Maintenance",
               "710000": "Travel"}


GL_QUERY = "ML_GL_ACCOUNTS"
VOUCHER_QUERY = "ML_PO_VOUCHERS"


class GLAccountQuery:
    """The PeopleSoft GL account table behind a QAS query without prompts (``ML_GL_ACCOUNTS``: ACCOUNT, DESCR,
    EFF_STATUS; GL_ACCOUNT_TBL has no change stamp). Basic auth as the CI simulator; columns come back with the
    query's alias prefix (``A.ACCOUNT``) and ``maxrows`` cuts the result silently, as QAS does. Any other path
    is a 404. Test controls: ``accounts`` (ACCOUNT -> {"DESCR", "EFF_STATUS"}); ``vouchers`` (rows of
    ``ML_PO_VOUCHERS``: BUSINESS_UNIT, PO_ID, VOUCHER_ID, GROSS_AMT; one per voucher on a PO)."""

    def __init__(self, node: str, users: dict[str, str]) -> None:
        self.node = node
        self.users = users
        self.accounts: dict[str, dict[str, str]] = {}
        self.vouchers: list[dict[str, Any]] = []
        self.calls = 0

    def __call__(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if parts[:3] != ["PSIGW", "RESTListeningConnector", self.node] or parts[3:4] != ["ExecuteQuery.v1"]:
            return text_response(404, "Not Found")
        scheme, _, cred = (request.header("Authorization") or "").partition(" ")
        try:
            user, _, password = base64.b64decode(cred.strip()).decode("utf-8").partition(":")
        except ValueError:
            user = password = ""
        if scheme.lower() != "basic" or self.users.get(user) != password:
            return text_response(401, '<IBResponse type="error"><MessageID>10</MessageID><DefaultMessage>Invalid '
                                      'user ID or password for security verification. (158,10)</DefaultMessage>'
                                      '</IBResponse>', "text/xml")
        if parts[4:5] != ["PUBLIC"] or parts[5:6] not in ([GL_QUERY], [VOUCHER_QUERY]):
            return text_response(200, '<IBResponse type="error"><MessageID>62</MessageID><DefaultMessage>Query '
                                      f'{"/".join(parts[5:6])} does not exist or the user does not have access. '
                                      '(262,62)</DefaultMessage></IBResponse>', "text/xml")
        self.calls += 1
        maxrows = int(request.arg("maxrows") or 0)
        if parts[5] == VOUCHER_QUERY:
            rows = [{f"A.{k}": v for k, v in r.items()} for r in self.vouchers]
        else:
            rows = [{"A.ACCOUNT": a, "A.DESCR": r["DESCR"], "A.EFF_STATUS": r["EFF_STATUS"]}
                    for a, r in sorted(self.accounts.items())]
        rows = rows[:maxrows] if maxrows else rows
        out = [{"attr:rownumber": i, **r} for i, r in enumerate(rows, 1)]
        return json_response(200, {"status": "success", "data": {"query": {"numrows": len(out),
                                                                           "queryname": parts[5], "rows": out}}})


@dataclass
class ProcurifyBox:
    """Both simulators and their servers; ``config_text`` describes them as an ml-connector configuration."""

    procurify: ProcurifySim
    purchasing: PurchasingCI
    procurify_server: SandboxServer
    ps_server: SandboxServer
    gl: GLAccountQuery = field(default_factory=lambda: GLAccountQuery(NODE, {PS_USER: PS_PASSWORD}))

    def stop(self) -> None:
        self.procurify_server.stop()
        self.ps_server.stop()

    def __enter__(self) -> ProcurifyBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def env() -> dict[str, str]:
        return {"MLCONNECTOR_PEOPLESOFT_PASSWORD": PS_PASSWORD, "MLCONNECTOR_PROCURIFY_CLIENT_SECRET": CLIENT_SECRET}

    def config_text(self, state_file: Path | None = None, *, accounts: dict[str, str] | None = None,
                    extra_pair: str = "") -> str:
        accounts = ACCOUNTS if accounts is None else accounts
        lines = ['instance = "procurify-sandbox"']
        if state_file is not None:
            lines.append(f'state_file = "{state_file.as_posix()}"')
        vendors = "\n".join(f'"{k}" = "{v[0]}"' for k, v in VENDORS.items())
        accts = "\n".join(f'"{k}" = "{v}"' for k, v in accounts.items())
        units = "\n".join(f'"{k}" = "{v}"' for k, v in UNITS.items())
        retry = "max_attempts = 3\nbackoff_initial = 0.05\nbackoff_max = 0.3\nread_timeout = 5\n"
        return "\n".join(lines) + f"""

[procurify]
base_url = "{self.procurify_server.url}"
client_id = "{CLIENT_ID}"
initial_since = "2020-01-01"
token_cache = "file"
{retry}
[peoplesoft]
base_url = "{self.ps_server.url}"
node = "{NODE}"
user = "{PS_USER}"
{retry}
[procurify_peoplesoft]
business_unit = "US001"
buyer_id = "BUYER1"
currencies = ["USD", "CAD"]
{extra_pair or "pending_grace_seconds = 0"}

[procurify_peoplesoft.vendors]
{vendors}

[procurify_peoplesoft.accounts]
{accts}

[procurify_peoplesoft.units]
{units}
"""


def start_procurify_sandbox(*, seed: int = 7, requisitions: int = 3, latency: float = 0.0) -> ProcurifyBox:
    """Start both simulators (127.0.0.1, port 0) with the vendors and ``requisitions`` approved requisitions."""
    procurify = ProcurifySim()
    purchasing = PurchasingCI(node=NODE, users={PS_USER: PS_PASSWORD}, seed=seed)
    for pid, (vid, name) in VENDORS.items():
        procurify.add_vendor(name, vendor_id=pid)
        purchasing.add_vendor(vid, name)
    depts = [1, 2, 3]
    codes = ["6100", "6200", "6300"]
    for n in range(requisitions):
        vendor = 301 if n % 2 == 0 else 302
        lines = [{"name": f"Item {n}-{j}", "quantity": 1 + j + n % 3, "price": f"{12.5 + j}", "unit": "EA",
                  "account_code": codes[(n + j) % 3], "department_id": depts[(n + j) % 3]} for j in range(1 + n % 3)]
        procurify.add_requisition(vendor, lines)
    procurify_server = SandboxServer(procurify, "procurify", latency=latency).start()
    gl = GLAccountQuery(NODE, {PS_USER: PS_PASSWORD})
    gl.accounts = {a: {"DESCR": d, "EFF_STATUS": "A"} for a, d in GL_ACCOUNTS.items()}
    ps_server = SandboxServer(PurchasingGateway(gl, purchasing), "peoplesoft", latency=latency).start()
    return ProcurifyBox(procurify, purchasing, procurify_server, ps_server, gl)
