"""The PeopleSoft <-> JAGGAER sandbox: the JAGGAER simulator, and one PeopleSoft web server carrying the QAS
simulator (vendors, requisitions) and the purchasing CIs, on loopback; seeded, with the configuration that
points at them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlconnector.sandbox.jaggaer_sim import CLIENT_ID, CLIENT_SECRET, JaggaerSim
from mlconnector.sandbox.peoplesoft_po_ci import PurchasingCI, PurchasingGateway
from mlconnector.sandbox.peoplesoft_sim import PeopleSoftSim
from mlconnector.sandbox.server import SandboxServer

PS_USER = "ML_CONNECTOR"
PS_PASSWORD = "sandbox-ps-password"
NODE = "PSFT_EP"
BUSINESS_UNITS = {"US001": "BU01", "US002": "BU02"}  # PeopleSoft BU -> JAGGAER business unit
ACCOUNTS = {"6100": "640000/FAC", "6200": "641000/IT", "6300": "650000/OPS"}  # JAGGAER code -> ACCOUNT/DEPTID
UNITS = {"EA": "EA", "BOX": "BX", "HR": "HR"}
COUNTS = {"vendors": 6, "requisitions": 10, "purchase_orders": 0, "vouchers": 0}


@dataclass
class JaggaerBox:
    """Both sides and their servers; ``config_text`` describes them as an ml-connector configuration.
    ``linked`` are JAGGAER supplier ids seeded with an extCode (PeopleSoft VENDOR_ID); ``jaggaer_only`` has none."""

    jaggaer: JaggaerSim
    ps: PeopleSoftSim
    purchasing: PurchasingCI
    jaggaer_server: SandboxServer
    ps_server: SandboxServer
    linked: dict[str, str]
    jaggaer_only: str
    accounting: Any = None  # the voucher CI simulator (sandbox/peoplesoft_ap_gl_ci.py) when this build has it

    def stop(self) -> None:
        self.jaggaer_server.stop()
        self.ps_server.stop()

    def __enter__(self) -> JaggaerBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def env() -> dict[str, str]:
        return {"MLCONNECTOR_PEOPLESOFT_PASSWORD": PS_PASSWORD, "MLCONNECTOR_JAGGAER_CLIENT_SECRET": CLIENT_SECRET}

    def config_text(self, state_file: Path | None = None, *, accounts: dict[str, str] | None = None,
                    extra_jaggaer: str = "", extra_pair: str = "", preflight: bool = True) -> str:
        accounts = ACCOUNTS if accounts is None else accounts
        lines = ['instance = "jaggaer-sandbox"']
        if not preflight:  # tests that do not test the first-pass checks skip them (they cost a ping)
            lines.append("preflight = false")
        if state_file is not None:
            lines.append(f'state_file = "{state_file.as_posix()}"')

        def table(d: dict[str, str]) -> str:
            return "\n".join(f'"{k}" = "{v}"' for k, v in d.items())

        retry = "max_attempts = 3\nbackoff_initial = 0.05\nbackoff_max = 0.3\nread_timeout = 5\n"
        return "\n".join(lines) + f"""

[jaggaer]
base_url = "{self.jaggaer_server.url}"
client_id = "{CLIENT_ID}"
initial_since = "2020-01-01"
token_cache = "file"
{retry}{extra_jaggaer}
[peoplesoft]
base_url = "{self.ps_server.url}"
node = "{NODE}"
user = "{PS_USER}"
db_utc_offset = "-06:00"
maxrows = 100
{retry}
[peoplesoft_jaggaer]
buyer_id = "BUYER1"
currencies = ["USD", "CAD", "EUR"]
requisition_statuses = ["A", "P"]
{extra_pair or "pending_grace_seconds = 0"}

[peoplesoft_jaggaer.business_units]
{table(BUSINESS_UNITS)}

[peoplesoft_jaggaer.accounts]
{table(accounts)}

[peoplesoft_jaggaer.units]
{table(UNITS)}
"""


def start_jaggaer_sandbox(*, seed: int = 7, pos: int = 3, invoices: int = 2, latency: float = 0.0,
                          jaggaer_port: int = 0, ps_port: int = 0, only_pos: int = 0) -> JaggaerBox:
    """Start both sides (127.0.0.1, port 0 unless given). PeopleSoft holds vendors and requisitions; JAGGAER holds
    two suppliers already keyed with a PeopleSoft VENDOR_ID, one JAGGAER-only supplier, ``pos`` approved POs for
    the keyed suppliers (plus ``only_pos`` for the JAGGAER-only one: they wait for its PeopleSoft vendor) and an
    invoice for each of the first ``invoices`` of them."""
    ps = PeopleSoftSim(node=NODE, users={PS_USER: PS_PASSWORD}, seed=seed, counts=COUNTS)
    purchasing = PurchasingCI(node=NODE, users={PS_USER: PS_PASSWORD}, seed=seed)
    purchasing.business_units |= set(BUSINESS_UNITS)
    vendors = ps.rows("vendors")
    for v in vendors:
        purchasing.add_vendor(v["VENDOR_ID"], v["NAME1"], status=v["VENDOR_STATUS"])
    active = [v for v in vendors if v["VENDOR_STATUS"] == "A"]
    jaggaer = JaggaerSim()
    linked: dict[str, str] = {}
    for v in active[:2]:
        s = jaggaer.add_supplier(v["NAME1"], ext_code=v["VENDOR_ID"], city="Old City")
        linked[s["bravoId"]] = v["VENDOR_ID"]
    only = jaggaer.add_supplier("Fresh Supplier Ltd")["bravoId"]
    codes = list(ACCOUNTS)
    bravo = list(linked)
    for n in range(pos):
        lines = [{"description": f"Item {n}-{j}", "quantity": 1 + j + n % 3, "unitPrice": f"{12.5 + j}",
                  "unitOfMeasure": "EA", "accountCode": codes[(n + j) % 3]} for j in range(1 + n % 2)]
        jaggaer.add_po(f"JP{1000 + n}", bravo[n % len(bravo)], lines, business_unit="BU01")
    for n in range(only_pos):
        jaggaer.add_po(f"JP{1900 + n}", only, [{"description": f"Valve {n}", "quantity": 2, "unitPrice": "40",
                                                 "unitOfMeasure": "EA", "accountCode": codes[n % 3]}],
                       business_unit="BU01")
    for n in range(min(invoices, pos)):
        jaggaer.add_invoice(f"JP{1000 + n}", f"INV-{7000 + n}")
    app: Any = PurchasingGateway(ps, purchasing)
    accounting = None
    try:
        from mlconnector.sandbox.peoplesoft_ap_gl_ci import AccountingCI, AccountingGateway
    except ImportError:  # a build without the voucher CI simulator: invoices are not posted
        pass
    else:
        accounting = AccountingCI(node=NODE, users={PS_USER: PS_PASSWORD}, seed=seed, purchasing=purchasing)
        app = AccountingGateway(app, accounting)
    jaggaer_server = SandboxServer(jaggaer, "jaggaer", port=jaggaer_port, latency=latency).start()
    ps_server = SandboxServer(app, "peoplesoft", port=ps_port, latency=latency).start()
    return JaggaerBox(jaggaer, ps, purchasing, jaggaer_server, ps_server, linked, only, accounting)
