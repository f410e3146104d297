"""`mlconnector demo`: real sync passes of every pair against the loopback sandbox, narrated.

sync peoplesoft-jira:
1. first pass: every requisition, PO and voucher becomes an issue;
2. second pass: nothing changed in PeopleSoft, so nothing is written to Jira;
3. a buyer approves a PO, edits another and adds a comment in PeopleSoft: the third pass
   transitions one issue, updates one and posts one comment.
sync procurify-peoplesoft:
1. first pass: every approved requisition becomes one PeopleSoft purchase order per vendor;
2. second pass: nothing changed, nothing written (not a single PeopleSoft call);
3. a buyer approves one more requisition: the third pass posts exactly one more PO.
sync peoplesoft-jaggaer:
1. first pass: vendors reach JAGGAER, requisitions become JAGGAER requisitions, JAGGAER POs become PeopleSoft POs;
2. second pass: nothing changed, nothing written on either side;
3. a buyer revises a JAGGAER PO: the third pass updates that one PeopleSoft PO.
sync jde-jira:
1. first pass: every work order and change order becomes an issue;
2. a planner blocks a work order's issue in Jira: the second pass puts the order on hold in JD Edwards
   (one orchestration call);
3. third pass: nothing to do on either side.
sync peoplesoft-procore:
1. first pass: vendors and GL accounts land in Procore (directory, cost codes), a project PO becomes a commitment;
2. a project manager approves a commitment and a direct cost in Procore: the second pass makes one PeopleSoft PO
   and posts one balanced GL journal;
3. third pass: nothing changed, nothing written on either side (the new PO is not echoed back).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlconnector import config as config_mod
from mlconnector.runner import sync
from mlconnector.sandbox.jde_sim import start_jde_sandbox
from mlconnector.sandbox.run import start_sandbox


@contextmanager
def _env(values: dict[str, str]) -> Any:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _line(result: Any) -> str:
    # Vendors are context for the issues, not issues: count them apart so "updated" means Jira updates.
    issues = [c for kind, c in result.counts.items() if kind != "vendors"]
    total = {c: sum(getattr(k, c) for k in issues)
             for c in ("read", "created", "updated", "unchanged", "transitioned", "commented", "failed")}
    vendors = result.counts.get("vendors")
    extra = f"; vendor master rows refreshed {vendors.updated}" if vendors and vendors.updated else ""
    return ", ".join(f"{k} {v}" for k, v in total.items()) + extra


def run_demo(*, as_json: bool = False, echo: Callable[[str], None] = print) -> int:
    import json

    out: dict[str, Any] = {"passes": []}
    say = (lambda s: None) if as_json else echo
    with tempfile.TemporaryDirectory(prefix="mlconnector-demo-") as tmp, start_sandbox() as box, _env(box.env()):
        cfg_path = Path(tmp) / "sandbox.toml"
        cfg_path.write_text(box.config_text(Path(tmp) / "state.json"), encoding="utf-8")
        cfg = config_mod.load(cfg_path)
        say(f"Sandbox up: PeopleSoft simulator {box.ps_server.url}, Jira simulator {box.jira_server.url}")
        say(f"Config: {cfg_path} (state and audit trail next to it)\n")

        def one(title: str) -> Any:
            writes = box.jira.writes
            result = sync("peoplesoft-jira", cfg)
            jira_writes = box.jira.writes - writes
            say(f"{title}\n  {_line(result)}; Jira write requests: {jira_writes}; exit code {result.exit_code}")
            out["passes"].append({"title": title, "jira_writes": jira_writes, **result.to_dict()})
            return result, jira_writes

        first, _ = one("Pass 1: first sync")
        second, second_writes = one("Pass 2: nothing changed in PeopleSoft")

        po = next(r for r in box.ps.rows("purchase_orders") if r["PO_STATUS"] == "PA")
        po_key = (po["BUSINESS_UNIT"], po["PO_ID"])
        box.ps.touch("purchase_orders", po_key, PO_STATUS="A")
        other = next(r for r in box.ps.rows("purchase_orders") if (r["BUSINESS_UNIT"], r["PO_ID"]) != po_key)
        box.ps.touch("purchase_orders", (other["BUSINESS_UNIT"], other["PO_ID"]), PO_AMT=float(other["PO_AMT"]) + 100)
        box.ps.add_comment("purchase_orders", po_key, "Approved by finance; dispatch today please.", "MGARCIA")
        say(f"\nIn PeopleSoft: PO {'/'.join(po_key)} approved (PA -> A) with a comment; PO "
            f"{other['BUSINESS_UNIT']}/{other['PO_ID']} amount raised by 100.")
        third, _ = one("Pass 3: after those changes")

        from mlconnector.state import State

        entry = State.load(cfg.state_file).entry("purchase_orders", "|".join(po_key)) or {}
        issue = box.jira.issue(entry.get("issue", "")) if entry.get("issue") else {}
        if issue:
            say(f"\n{issue['key']}: {issue['fields'].get('summary')} -> status {issue['fields'].get('status')}, "
                f"{len(issue.get('comments', []))} comment(s)")
        po3 = third.counts.get("purchase_orders")
        # The approved PO changes twice (its Approval Status field and its workflow status), the other once.
        ok = (first.exit_code == 0 and second_writes == 0 and po3 is not None and po3.transitioned == 1
              and po3.updated == 2 and po3.commented == 1)
    ok = _jde_demo(say, out) and ok
    ok = _procurify_demo(say, out) and ok
    ok = _jaggaer_demo(say, out) and ok
    ok = _procore_demo(say, out) and ok
    out["ok"] = ok
    if as_json:
        echo(json.dumps(out, ensure_ascii=False))
    else:
        say("\nDemo " + ("passed: each pair's first pass created, the next ones wrote only what changed, on "
                         "each side, once." if ok else "did NOT behave as expected; see the figures above."))
    return 0 if ok else 1


def _jde_demo(say: Callable[[str], None], out: dict[str, Any]) -> bool:
    from mlconnector.state import State
    from mlconnector.sync.keys import encode_key

    with tempfile.TemporaryDirectory(prefix="mlconnector-demo-jde-") as tmp, start_jde_sandbox() as box, \
            _env(box.env()):
        cfg_path = Path(tmp) / "sandbox-jde.toml"
        cfg_path.write_text(box.config_text(Path(tmp) / "state.json"), encoding="utf-8")
        cfg = config_mod.load(cfg_path)
        say(f"\nJD Edwards AIS simulator {box.jde_server.url}, Jira simulator {box.jira_server.url}")

        def one(title: str) -> Any:
            writes, calls = box.jira.writes, len(box.jde.calls)
            result = sync("jde-jira", cfg)
            orders = [c for kind, c in result.counts.items() if kind != "jira_status"]
            posted = result.counts["jira_status"].posted if "jira_status" in result.counts else 0
            say(f"{title}\n  orders read {sum(c.read for c in orders)}, created {sum(c.created for c in orders)}, "
                f"updated {sum(c.updated for c in orders)}; status changes posted to JD Edwards {posted}; Jira "
                f"write requests {box.jira.writes - writes}, orchestration calls {len(box.jde.calls) - calls}; "
                f"exit code {result.exit_code}")
            out["passes"].append({"title": f"jde-jira: {title}", **result.to_dict()})
            return result, box.jira.writes - writes, len(box.jde.calls) - calls

        first, _, _ = one("Pass 1: first sync jde-jira")
        wo = box.jde.rows(order_type="WO")[0]
        entry = State.load(cfg.state_file).entry("work_orders", encode_key((str(wo["DOCO"]), "WO"))) or {}
        if entry.get("issue"):
            box.jira.transition_as_user(entry["issue"], "Blocked")
            say(f"\nIn Jira: {entry['issue']} (work order {wo['DOCO']}) moved to Blocked by a planner.")
        second, _, calls2 = one("Pass 2: after that change")
        third, writes3, calls3 = one("Pass 3: nothing changed")
        on_hold = box.jde.order(wo["DOCO"])["SRST"] == "HD"
        if on_hold:
            say(f"Work order {wo['DOCO']} in JD Edwards: status HD (on hold).")
        return (first.exit_code == 0 and bool(entry.get("issue")) and calls2 == 1 and on_hold
                and second.exit_code == 0 and writes3 == 0 and calls3 == 0)


def _procurify_demo(say: Callable[[str], None], out: dict[str, Any]) -> bool:
    from mlconnector.sandbox.procurify_run import start_procurify_sandbox

    with tempfile.TemporaryDirectory(prefix="mlconnector-demo-procurify-") as tmp, \
            start_procurify_sandbox(requisitions=4) as box, _env(box.env()), \
            _env({"MLCONNECTOR_CACHE_DIR": str(Path(tmp) / "cache")}):
        cfg_path = Path(tmp) / "sandbox-procurify.toml"
        cfg_path.write_text(box.config_text(Path(tmp) / "state.json"), encoding="utf-8")
        cfg = config_mod.load(cfg_path)
        say(f"\nProcurify simulator {box.procurify_server.url}, PeopleSoft purchasing CIs {box.ps_server.url}")

        def one(title: str) -> tuple[Any, int]:
            before = len(box.purchasing.pos)
            result = sync("procurify-peoplesoft", cfg)
            made = len(box.purchasing.pos) - before
            c = result.counts
            say(f"{title}\n  POs in PeopleSoft +{made} (created {sum(k.created for k in c.values())}, updated "
                f"{sum(k.updated for k in c.values())}, unchanged {sum(k.unchanged for k in c.values())}); "
                f"PeopleSoft requests {result.requests.get('peoplesoft', 0)}; exit code {result.exit_code}")
            out["passes"].append({"title": f"procurify-peoplesoft: {title}", **result.to_dict()})
            return result, made

        first, made1 = one("Pass 1: first sync procurify-peoplesoft")
        second, made2 = one("Pass 2: nothing changed")
        box.procurify.add_requisition(301, [{"name": "Safety gloves", "quantity": 10, "price": "4.20", "unit": "BOX",
                                             "account_code": "6300", "department_id": 3}])
        say("\nIn Procurify: one more requisition approved (10 boxes of safety gloves).")
        third, made3 = one("Pass 3: after that")
        return (first.exit_code == 0 and made1 > 0 and second.exit_code == 0 and made2 == 0
                and second.requests.get("peoplesoft", 0) == 0 and third.exit_code == 0 and made3 == 1)


def _jaggaer_demo(say: Callable[[str], None], out: dict[str, Any]) -> bool:
    from mlconnector.sandbox.jaggaer_run import start_jaggaer_sandbox

    with tempfile.TemporaryDirectory(prefix="mlconnector-demo-jaggaer-") as tmp, start_jaggaer_sandbox() as box, \
            _env(box.env()), _env({"MLCONNECTOR_CACHE_DIR": str(Path(tmp) / "cache")}):
        cfg_path = Path(tmp) / "sandbox-jaggaer.toml"
        cfg_path.write_text(box.config_text(Path(tmp) / "state.json"), encoding="utf-8")
        cfg = config_mod.load(cfg_path)
        say(f"\nJAGGAER simulator {box.jaggaer_server.url}, PeopleSoft QAS + purchasing CIs {box.ps_server.url}")

        def one(title: str) -> tuple[Any, int, int]:
            jw = sum(box.jaggaer.writes.values())
            pw = box.purchasing.calls["CI_PO_EXPRESS_C"] + box.purchasing.calls["CI_PO_EXPRESS_UD"]
            result = sync("peoplesoft-jaggaer", cfg)
            jw = sum(box.jaggaer.writes.values()) - jw
            pw = box.purchasing.calls["CI_PO_EXPRESS_C"] + box.purchasing.calls["CI_PO_EXPRESS_UD"] - pw
            c = result.counts
            parts = ", ".join(f"{k} +{v.created} ~{v.updated}" for k, v in c.items() if k != "jaggaer_suppliers")
            waiting = [f["key"] for f in result.failures]
            say(f"{title}\n  {parts}; JAGGAER writes {jw}, PeopleSoft PO writes {pw}"
                + (f"; waiting: {len(waiting)} (the JAGGAER-only supplier, until it is mapped)" if waiting else ""))
            out["passes"].append({"title": f"peoplesoft-jaggaer: {title}", **result.to_dict()})
            return result, jw, pw

        first, jw1, pw1 = one("Pass 1: first sync peoplesoft-jaggaer")
        second, jw2, pw2 = one("Pass 2: nothing changed")
        box.jaggaer.revise_po("JP1000", lines=[{"description": "Item 0-0", "quantity": 5, "unitPrice": "12.5",
                                                "accountCode": "6100"}])
        say("\nIn JAGGAER: PO JP1000 revised (quantity 5).")
        third, jw3, pw3 = one("Pass 3: after that")
        return (first.fatal is None and jw1 > 0 and pw1 == 3 and jw2 == 0 and pw2 == 0 and jw3 == 0 and pw3 == 1
                and third.counts["purchase_orders"].updated == 1)


def _procore_demo(say: Callable[[str], None], out: dict[str, Any]) -> bool:
    from mlconnector.sandbox.procore_run import PROJECTS, start_procore_sandbox
    from mlconnector.sync.keys import handle

    with tempfile.TemporaryDirectory(prefix="mlconnector-demo-procore-") as tmp, \
            start_procore_sandbox(vendors=6) as box, _env(box.env()), \
            _env({"MLCONNECTOR_CACHE_DIR": str(Path(tmp) / "cache")}):
        cfg_path = Path(tmp) / "sandbox-procore.toml"
        cfg_path.write_text(box.config_text(Path(tmp) / "state.json"), encoding="utf-8")
        cfg = config_mod.load(cfg_path)
        say(f"\nProcore simulator {box.procore_server.url}, PeopleSoft (queries + purchasing CIs) {box.ps_server.url}")
        active = [r["VENDOR_ID"] for r in box.ps.rows("vendors") if r["VENDOR_STATUS"] == "A"]
        box.add_po("0000000501", active[0], [{"descr": "Rebar #5", "qty": 10, "price": "25.50", "account": "640000"},
                                             {"descr": "Crane day", "qty": 2, "price": "1200", "account": "641000"}])

        def one(title: str) -> tuple[Any, int]:
            writes = sum(box.procore.writes.values())
            before = len(box.purchasing.pos)
            result = sync("peoplesoft-procore", cfg)
            made = len(box.purchasing.pos) - before
            c = result.counts
            say(f"{title}\n  Procore rows written {sum(box.procore.writes.values()) - writes} (vendors "
                f"{c['vendors'].created + c['vendors'].updated}, cost codes {c['cost_codes'].created}, commitments "
                f"{c['purchase_orders'].created + c['purchase_orders'].updated}); PeopleSoft POs +{made}; requests "
                f"Procore {result.requests.get('procore', 0)}, PeopleSoft {result.requests.get('peoplesoft', 0)}; "
                f"exit code {result.exit_code}")
            out["passes"].append({"title": f"peoplesoft-procore: {title}", **result.to_dict()})
            return result, sum(box.procore.writes.values()) - writes + made

        first, _ = one("Pass 1: first sync peoplesoft-procore")
        project = int(next(iter(PROJECTS)))
        [vendor] = box.procore.by_origin(box.procore.vendors, handle("psft-vendor", ("SHARE", active[0])))
        [code] = box.procore.by_origin(box.procore.cost_codes, handle("psft-acct", (str(project), "650000")))
        c = box.procore.add_commitment(project, vendor["id"], number="PM-17", title="Site fencing", lines=[
            {"cost_code_id": code["id"], "description": "Fencing crew", "quantity": "3", "unit_cost": "850"}])
        dc = box.procore.add_direct_cost(project, vendor["id"], invoice_number="INV-4410", lines=[
            {"cost_code_id": code["id"], "amount": "1840.00", "description": "Traffic control, week 47"}])
        say(f"\nIn Procore: a project manager approves commitment PM-17 ({vendor['name']}, site fencing) and direct "
            f"cost INV-4410 (traffic control, 1,840.00).")
        second, _ = one("Pass 2: after that")
        journals = box.accounting.journals_with(f"procore-dc-{dc['id']}")
        if journals:
            say(f"PeopleSoft journal {journals[0]['JOURNAL_ID']}: "
                + ", ".join(f"{ln['ACCOUNT']} {ln['MONETARY_AMOUNT']}" for ln in journals[0]["JRNL_LN"]))
        third, writes3 = one("Pass 3: nothing changed")
        made = box.purchasing.pos_with_ref(f"PCO-{c['id']}")
        if made:
            say(f"PeopleSoft PO {made[0]['PO_ID']} carries PO_REF PCO-{c['id']}.")
        return (first.exit_code == 0 and len(box.procore.contracts) == 2 and second.exit_code == 0
                and len(made) == 1 and len(journals) == 1 and third.exit_code == 0 and writes3 == 0)
