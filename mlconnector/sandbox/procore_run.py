"""The PeopleSoft <-> Procore sandbox: the Procore simulator, and one PeopleSoft web server holding the PS Query
service (vendor master), the project PO distribution query and the purchasing CIs, all on loopback, seeded with
vendors, projects and POs, and the configuration that points at them.

The project PO query (``ML_PO_PROJECT_DISTRIB``, one row per distribution, prompts BIND1/BIND2 on
LAST_DTTM_UPDATE) is answered from the purchasing CI's own purchase orders, so a PO made through the CI comes
back through the query exactly as it would from PeopleSoft's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from mlconnector.sandbox.peoplesoft_ap_gl_ci import AccountingCI, AccountingGateway
from mlconnector.sandbox.peoplesoft_po_ci import PurchasingCI, PurchasingGateway
from mlconnector.sandbox.peoplesoft_sim import PeopleSoftSim, _ib_error, _xmlp
from mlconnector.sandbox.procore_sim import CLIENT_ID, CLIENT_SECRET, COMPANY_ID, ProcoreSim
from mlconnector.sandbox.server import Request, Response, SandboxServer, json_response, text_response

PS_USER = "ML_CONNECTOR"
PS_PASSWORD = "sandbox-ps-password"
NODE = "PSFT_EP"
PO_QUERY = "ML_PO_PROJECT_DISTRIB"
# Procore project id -> (PROJECT_ID, DEPTID): the project crosswalk of the example configuration.
PROJECTS = {"562949953425001": ("PRJ-TOWER", "FAC"), "562949953425002": ("PRJ-BRIDGE", "OPS")}
ACCOUNTS = {"640000": "Materials", "641000": "Equipment rental", "650000": "Subcontract labour"}
OFFSET_ACCOUNT = "200100"  # accrued project costs: the credit side of every journal
COLUMNS = ("BUSINESS_UNIT", "PO_ID", "PO_REF", "PO_STATUS", "PO_DT", "VENDOR_SETID", "VENDOR_ID", "LINE_NBR",
           "DESCR254_MIXED", "UNIT_OF_MEASURE", "QTY_PO", "PRICE_PO", "DISTRIB_LINE_NUM", "ACCOUNT", "DEPTID",
           "PROJECT_ID", "MERCHANDISE_AMT", "LAST_DTTM_UPDATE")


class ProjectPOQuery:
    """The PS Query service: ``ML_PO_PROJECT_DISTRIB`` from the purchasing CI's POs, everything else from the
    PeopleSoft simulator (vendor master)."""

    def __init__(self, ps: PeopleSoftSim, purchasing: PurchasingCI) -> None:
        self.ps = ps
        self.purchasing = purchasing
        self.calls = 0

    def __call__(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if len(parts) >= 6 and parts[3] == "ExecuteQuery.v1" and parts[5] == PO_QUERY:
            return self._po_query(request)
        return self.ps(request)

    def _po_query(self, request: Request) -> Response:
        if self.ps._authenticate(request) is None:
            return _ib_error(401, 10, "Invalid user ID or password for security verification. (158,10)")
        window = self.ps._prompt_window(request)
        if isinstance(window, str):
            return _ib_error(500, 32, f"{window} (262,32)")
        lo, hi = window
        self.calls += 1
        rows = []
        with self.purchasing._lock:
            for (bu, po_id), po in sorted(self.purchasing.pos.items()):
                stamp = datetime.fromisoformat(po["LAST_DTTM_UPDATE"])
                epoch = int(stamp.timestamp())
                if not lo <= epoch <= hi:
                    continue
                ts = stamp.astimezone(self.ps.tz).strftime("%Y-%m-%dT%H:%M:%S%z")
                for line in po.get("PO_LINE", []):
                    for d in line.get("PO_LINE_DISTRIB", []):
                        rows.append({"BUSINESS_UNIT": bu, "PO_ID": po_id, "PO_REF": po.get("PO_REF", ""),
                                     "PO_STATUS": po.get("PO_STATUS", ""), "PO_DT": str(po.get("PO_DT", "")),
                                     "VENDOR_SETID": po.get("VENDOR_SETID", ""), "VENDOR_ID": po.get("VENDOR_ID", ""),
                                     "LINE_NBR": line.get("LINE_NBR"), "DESCR254_MIXED": line.get("DESCR254_MIXED"),
                                     "UNIT_OF_MEASURE": line.get("UNIT_OF_MEASURE"), "QTY_PO": line.get("QTY_PO"),
                                     "PRICE_PO": line.get("PRICE_PO"), "DISTRIB_LINE_NUM": d.get("DISTRIB_LINE_NUM"),
                                     "ACCOUNT": d.get("ACCOUNT"), "DEPTID": d.get("DEPTID"),
                                     "PROJECT_ID": d.get("PROJECT_ID", ""),
                                     "MERCHANDISE_AMT": d.get("MERCHANDISE_AMT"), "LAST_DTTM_UPDATE": ts})
        if (request.arg("json_resp") or "").lower() == "true":
            out = [{"attr:rownumber": i, **{f"A.{c}": v for c, v in r.items()}} for i, r in enumerate(rows, 1)]
            return json_response(200, {"status": "success", "data": {"query": {
                "numrows": len(out), "queryname": PO_QUERY, "rows": out}}})
        return text_response(200, _xmlp(PO_QUERY, rows), "text/xml; charset=UTF-8")


@dataclass
class ProcoreBox:
    """The simulators and their servers; ``config_text`` describes them as an ml-connector configuration."""

    procore: ProcoreSim
    ps: PeopleSoftSim
    purchasing: PurchasingCI
    accounting: AccountingCI
    procore_server: SandboxServer
    ps_server: SandboxServer

    def stop(self) -> None:
        self.procore_server.stop()
        self.ps_server.stop()

    def __enter__(self) -> ProcoreBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def env() -> dict[str, str]:
        return {"MLCONNECTOR_PEOPLESOFT_PASSWORD": PS_PASSWORD, "MLCONNECTOR_PROCORE_CLIENT_SECRET": CLIENT_SECRET}

    def add_po(self, po_id: str, vendor_id: str, lines: list[dict[str, Any]], *, status: str = "A",
               bu: str = "US001", project: str = "PRJ-TOWER", deptid: str = "FAC", po_ref: str = "") -> None:
        """A purchase order keyed in PeopleSoft by a buyer; each line: descr, qty, price, account."""
        self.purchasing.pos[(bu, po_id)] = {
            "BUSINESS_UNIT": bu, "PO_ID": po_id, "PO_REF": po_ref, "VENDOR_SETID": "SHARE", "VENDOR_ID": vendor_id,
            "BUYER_ID": "BUYER1", "PO_DT": "2026-11-02", "CURRENCY_CD": "USD", "PO_STATUS": status,
            "LAST_DTTM_UPDATE": datetime.now(UTC).isoformat(timespec="seconds"),
            "PO_LINE": [{"LINE_NBR": str(n), "DESCR254_MIXED": ln["descr"], "UNIT_OF_MEASURE": "EA",
                         "QTY_PO": str(ln["qty"]), "PRICE_PO": str(ln["price"]),
                         "PO_LINE_DISTRIB": [{"DISTRIB_LINE_NUM": "1", "ACCOUNT": ln["account"], "DEPTID": deptid,
                                              "PROJECT_ID": project, "QTY_PO": str(ln["qty"]),
                                              "MERCHANDISE_AMT": str((Decimal(str(ln["qty"])) *
                                                                      Decimal(str(ln["price"]))).quantize(
                                                  Decimal("0.001")))}]}
                        for n, ln in enumerate(lines, 1)]}

    def change_po(self, key: tuple[str, str], **line_changes: Any) -> None:
        """A buyer edits line 1 of a PO (qty / price / descr) in PeopleSoft."""
        po = self.purchasing.pos[key]
        line = po["PO_LINE"][0]
        if "descr" in line_changes:
            line["DESCR254_MIXED"] = line_changes["descr"]
        if "qty" in line_changes or "price" in line_changes:
            line["QTY_PO"] = str(line_changes.get("qty", line["QTY_PO"]))
            line["PRICE_PO"] = str(line_changes.get("price", line["PRICE_PO"]))
            d = line["PO_LINE_DISTRIB"][0]
            d["QTY_PO"] = line["QTY_PO"]
            d["MERCHANDISE_AMT"] = str((Decimal(line["QTY_PO"]) * Decimal(line["PRICE_PO"])).quantize(Decimal("0.001")))
        po["LAST_DTTM_UPDATE"] = datetime.now(UTC).isoformat(timespec="seconds")

    def config_text(self, state_file: Path | None = None, *, extra_pair: str = "", extra_procore: str = "") -> str:
        lines = ['instance = "procore-sandbox"']
        if state_file is not None:
            lines.append(f'state_file = "{state_file.as_posix()}"')
        projects = "\n".join(f'"{k}" = "{v[0]}/{v[1]}"' for k, v in PROJECTS.items())
        accounts = "\n".join(f'"{k}" = "{v}"' for k, v in ACCOUNTS.items())
        retry = "max_attempts = 3\nbackoff_initial = 0.05\nbackoff_max = 0.3\nread_timeout = 5\n"
        return "\n".join(lines) + f"""

[procore]
base_url = "{self.procore_server.url}"
login_url = "{self.procore_server.url}"
client_id = "{CLIENT_ID}"
company_id = {self.procore.company_id}
token_cache = "file"
{retry}{extra_procore}
[peoplesoft]
base_url = "{self.ps_server.url}"
node = "{NODE}"
user = "{PS_USER}"
db_utc_offset = "-06:00"
prompt_format = "datetime"
{retry}
[peoplesoft.records.vendors]
full_read_every_hours = 0

[peoplesoft_procore]
business_unit = "US001"
buyer_id = "BUYER1"
initial_since = "2020-01-01"
overlap_minutes = 5
offset_account = "{OFFSET_ACCOUNT}"
{extra_pair or "pending_grace_seconds = 0"}

[peoplesoft_procore.projects]
{projects}

[peoplesoft_procore.accounts]
{accounts}
"""


def start_procore_sandbox(*, vendors: int = 6, seed: int = 7, latency: float = 0.0, hourly_limit: int = 3600,
                          spike_limit: int = 1000, clock: Any = None) -> ProcoreBox:
    """Start both servers (127.0.0.1, port 0): ``vendors`` PeopleSoft vendors (also known to the purchasing CI),
    the Procore projects of the crosswalk, and no POs (tests add them)."""
    import time

    procore = ProcoreSim(hourly_limit=hourly_limit, spike_limit=spike_limit, clock=clock or time.time)
    for pid, (ps_project, _) in PROJECTS.items():
        procore.add_project(int(pid), ps_project.title())
    ps = PeopleSoftSim(node=NODE, users={PS_USER: PS_PASSWORD}, seed=seed,
                       counts={"vendors": vendors, "requisitions": 0, "purchase_orders": 0, "vouchers": 0})
    purchasing = PurchasingCI(node=NODE, users={PS_USER: PS_PASSWORD}, seed=seed)
    for row in ps.rows("vendors"):
        purchasing.add_vendor(row["VENDOR_ID"], row["NAME1"], status=row["VENDOR_STATUS"])
    purchasing.deptids |= {d for _, d in PROJECTS.values()}
    purchasing.accounts |= {*ACCOUNTS, OFFSET_ACCOUNT}
    accounting = AccountingCI(node=NODE, users={PS_USER: PS_PASSWORD}, seed=seed, purchasing=purchasing)
    accounting.projects |= {p for p, _ in PROJECTS.values()}
    # One web server serves one CIFault schema: both CI simulators must name it with the same namespace, or the
    # WSDL of whichever does not serve it imports a schema whose namespace does not match.
    accounting._ns["CIFault"] = purchasing._ns["CIFault"]
    procore_server = SandboxServer(procore, "procore", latency=latency).start()
    inner = PurchasingGateway(ProjectPOQuery(ps, purchasing), purchasing)
    ps_server = SandboxServer(AccountingGateway(inner, accounting), "peoplesoft", latency=latency).start()
    return ProcoreBox(procore, ps, purchasing, accounting, procore_server, ps_server)


__all__ = ["COMPANY_ID", "ProcoreBox", "start_procore_sandbox"]
