"""The Procurify -> PeopleSoft sandbox: the Procurify simulator and the purchasing CI simulator on loopback,
seeded with vendors and approved requisitions, and the configuration that points at them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlconnector.sandbox.peoplesoft_po_ci import PurchasingCI, PurchasingGateway
from mlconnector.sandbox.procurify_sim import CLIENT_ID, CLIENT_SECRET, ProcurifySim
from mlconnector.sandbox.server import Request, Response, SandboxServer, text_response

PS_USER = "ML_CONNECTOR"
PS_PASSWORD = "sandbox-ps-password"
NODE = "PSFT_EP"
# Procurify vendor id -> (PeopleSoft VENDOR_ID, name); the crosswalk of the example configuration.
VENDORS = {301: ("0000000042", "Acme Supply"), 302: ("0000000077", "Northwind Industrial")}
ACCOUNTS = {"6100|Facilities": "640000/FAC", "6200|IT": "641000/IT", "6300|Operations": "650000/OPS"}
UNITS = {"EA": "EA", "BOX": "BX", "HR": "HR"}


def _nothing(_: Request) -> Response:
    return text_response(404, "Not Found")


@dataclass
class ProcurifyBox:
    """Both simulators and their servers; ``config_text`` describes them as an ml-connector configuration."""

    procurify: ProcurifySim
    purchasing: PurchasingCI
    procurify_server: SandboxServer
    ps_server: SandboxServer

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
    ps_server = SandboxServer(PurchasingGateway(_nothing, purchasing), "peoplesoft", latency=latency).start()
    return ProcurifyBox(procurify, purchasing, procurify_server, ps_server)
