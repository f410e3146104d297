"""`reconcile <pair>`: both sides compared record by record against the sandbox, read-only; each class is made
to happen here and named by the report, and the money totals are checked against sums computed by hand."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import test_jde_sync
import test_procurify_peoplesoft
from conftest import Env
from test_jde_sync import JdeEnv
from test_procurify_peoplesoft import PEnv

from mlconnector import config as config_mod
from mlconnector import runner
from mlconnector.errors import EXIT_CONFIG, EXIT_NOT_IN_STEP, EXIT_OK
from mlconnector.mapping import record_label
from mlconnector.reconcile import reconcile
from mlconnector.state import State
from mlconnector.sync.keys import encode_key
from mlconnector.sync.links import mark_pending

jde_env = test_jde_sync.jde_env  # the JD Edwards sandbox fixture
penv = test_procurify_peoplesoft.penv  # the Procurify + PeopleSoft purchasing sandbox fixture

SYNC = ("sync", "peoplesoft-jira")
RECONCILE = ("reconcile", "peoplesoft-jira")
AMOUNT = "customfield_10051"  # the sandbox's "Amount" field
KEYS = {"requisitions": "REQ_ID", "purchase_orders": "PO_ID", "vouchers": "VOUCHER_ID"}
MONEY = {"purchase_orders": "PO_AMT", "vouchers": "GROSS_AMT"}


def _rows(env: Env, kind: str) -> list[dict[str, Any]]:
    return [r for r in env.box.ps.rows(kind) if str(r.get("BUSINESS_UNIT") or "").strip()
            and str(r.get(KEYS[kind]) or "").strip()]


def _issue_of(env: Env, kind: str, row: dict[str, Any]) -> str:
    [issue] = env.box.jira.find_by_label(record_label(kind, f"{row['BUSINESS_UNIT']}|{row[KEYS[kind]]}"))
    return str(issue["key"])


def _sum(values: list[Any]) -> str:
    return str(sum((Decimal(str(v)) for v in values if v not in (None, "")), Decimal(0)).quantize(Decimal("0.01")))


def _reconcile(env: Env, *args: str) -> tuple[int, dict[str, Any]]:
    out = env.cli(*RECONCILE, "--json", *args)
    assert not out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout)


def _in_process(env: Env, monkeypatch: pytest.MonkeyPatch, *, sync: bool = False, **kwargs: Any) -> dict[str, Any]:
    """A pass (``sync``) or a reconcile run in this process (no interpreter start-up): the report as --json."""
    for k, v in env.env.items():
        if k.startswith("MLCONNECTOR_"):
            monkeypatch.setenv(k, v)
    if sync:
        assert runner.sync("peoplesoft-jira", env.load_config()).exit_code == EXIT_OK
        return {}
    return json.loads(json.dumps(reconcile("peoplesoft-jira", env.load_config(), **kwargs).to_dict()))


def _records(report: dict[str, Any], cls: str, comments: bool = False) -> list[dict[str, Any]]:
    return [r for r in report["records"] if r["class"] == cls and r["kind"].endswith(".comments") == comments]


def _totals(report: dict[str, Any], comments: bool = False) -> dict[str, int]:
    """The counts per class over the record entities (or over their comments)."""
    out: dict[str, int] = {}
    for kind, counts in report["counts"].items():
        if kind.endswith(".comments") == comments:
            for cls, n in counts.items():
                out[cls] = out.get(cls, 0) + n
    return out


def _comment_rows(env: Env) -> list[dict[str, Any]]:
    return [r for kind in ("req_comments", "po_comments", "voucher_comments") for r in env.box.ps.rows(kind)]


def test_after_a_pass_everything_is_in_step_and_nothing_is_written(sandbox_env: Env) -> None:
    env = sandbox_env
    assert env.cli(*SYNC).returncode == EXIT_OK
    writes, state_before, audit_before = env.box.jira.writes, env.state_file.read_bytes(), env.audit_file.read_bytes()

    code, report = _reconcile(env)
    assert code == EXIT_OK and report["status"] == "in_step"
    assert _totals(report)["in_step"] == len(env.source_labels())
    assert _totals(report, comments=True)["in_step"] == len(_comment_rows(env)) > 0  # each posted once, as it is
    assert sum(report["totals"].values()) == report["totals"]["in_step"] and report["records"] == []
    for kind, column in MONEY.items():  # hand-computed from the PeopleSoft rows
        expected = _sum([r[column] for r in _rows(env, kind)])
        assert report["money"][kind]["source"] == report["money"][kind]["target"] == expected
        assert report["money"][kind]["difference"] == "0.00"
    # Read-only: no Jira write, no state save, no audit line.
    assert env.box.jira.writes == writes
    assert env.state_file.read_bytes() == state_before and env.audit_file.read_bytes() == audit_before


def test_each_class_is_named_and_the_money_difference_is_the_edit(sandbox_env: Env) -> None:
    env = sandbox_env
    ps, jira = env.box.ps, env.box.jira
    bad_req = _rows(env, "requisitions")[0]
    ps.corrupt("requisitions", (bad_req["BUSINESS_UNIT"], bad_req["REQ_ID"]), "AMOUNT", "twelve")
    assert env.cli(*SYNC).returncode == 1  # the requisition is queued: waiting

    pos, vouchers = _rows(env, "purchase_orders"), _rows(env, "vouchers")
    edited, touched = pos[0], pos[1]
    jira.edit_as_user(_issue_of(env, "purchase_orders", edited), {AMOUNT: float(edited["PO_AMT"]) + 250})  # drifted
    ps.touch("purchase_orders", (touched["BUSINESS_UNIT"], touched["PO_ID"]), DESCR254="Changed at the source")
    gone = vouchers[0]
    jira.delete_as_user(_issue_of(env, "vouchers", gone))  # missing
    po_type = jira.issue(_issue_of(env, "purchase_orders", pos[2]))["fields"]["issuetype"]
    orphan = jira.create_as_user({"project": {"key": jira.project_key}, "issuetype": {"name": po_type},
                                  "summary": "Purchase order copied by hand", AMOUNT: 99.5,
                                  "labels": ["psft-po", "ml-connector"]})  # orphaned
    new = ps.add("purchase_orders", {**{k: v for k, v in pos[3].items() if k != "LAST_DTTM_UPDATE"},
                                     "PO_ID": "PENDING01"})
    new_key = f"{new['BUSINESS_UNIT']}|PENDING01"
    state = State.load(env.state_file)  # a pass killed between its pending mark and the create
    state.set_entry("purchase_orders", new_key, mark_pending(
        {"label": record_label("purchase_orders", new_key), "hash": None, "ts": None, "status": None}))
    state.save()
    writes = jira.writes

    code, report = _reconcile(env)
    assert code == EXIT_NOT_IN_STEP and report["status"] == "differences", report
    assert jira.writes == writes
    assert _totals(report) == {"in_step": len(env.source_labels()) - 1 - 2 - 1 - 1, "missing": 1, "drifted": 2,
                                "orphaned": 1, "waiting": 1, "pending": 1, "deleted": 0}
    [waiting] = _records(report, "waiting")
    assert waiting["kind"] == "requisitions" and "twelve" in waiting["reason"]
    [pending] = _records(report, "pending")
    assert pending["key"] == new_key
    [missing] = _records(report, "missing")
    assert missing["kind"] == "vouchers" and "no longer exists" in missing["reason"]
    drifted = {r["key"]: r for r in _records(report, "drifted")}
    by_target = drifted[f"{edited['BUSINESS_UNIT']}|{edited['PO_ID']}"]
    assert by_target["fields"] == ["amount"] and by_target["changed"] == "target"
    by_source = drifted[f"{touched['BUSINESS_UNIT']}|{touched['PO_ID']}"]
    assert "summary" in by_source["fields"] and by_source["changed"] == "source"
    [orphaned] = _records(report, "orphaned")
    assert orphaned["issue"] == orphan and orphaned["target_amount"] == 99.5

    # Money: PeopleSoft's sums against Jira's, computed by hand.
    po_source = _sum([r["PO_AMT"] for r in _rows(env, "purchase_orders")])
    po_target = _sum([r["PO_AMT"] for r in pos if r["PO_ID"] != "PENDING01"] + [250, 99.5])
    assert report["money"]["purchase_orders"]["source"] == po_source
    assert report["money"]["purchase_orders"]["target"] == po_target
    assert Decimal(report["money"]["purchase_orders"]["difference"]) == Decimal(po_source) - Decimal(po_target)
    v = report["money"]["vouchers"]
    assert v["source"] == _sum([r["GROSS_AMT"] for r in vouchers])
    assert v["target"] == _sum([r["GROSS_AMT"] for r in vouchers[1:]])
    assert v["difference"] == _sum([gone["GROSS_AMT"]])

    # A queued record dropped from the queue is no longer explained: it is missing, with the reason.
    [item] = [i for i in json.loads(env.cli("replay", "list", "--json").stdout)
              if i["key"] == waiting["key"] and i.get("what", "record") == "record"]
    assert env.cli("replay", "drop", item["id"]).returncode == EXIT_OK
    _, after = _reconcile(env, "--entity", "requisitions")
    [dropped] = _records(after, "missing")
    assert dropped["key"] == waiting["key"] and "cannot be mapped" in dropped["reason"]
    assert set(after["counts"]) == {"requisitions", "requisitions.comments"}


def test_waiting_and_pending_alone_exit_0_and_plain_text_and_csv_name_them(sandbox_env: Env) -> None:
    env = sandbox_env
    bad = _rows(env, "vouchers")[0]
    env.box.ps.corrupt("vouchers", (bad["BUSINESS_UNIT"], bad["VOUCHER_ID"]), "GROSS_AMT", "n/a")
    assert env.cli(*SYNC).returncode == 1
    sheet = env.dir / "reconcile.csv"
    out = env.cli(*RECONCILE, "--csv", str(sheet))
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("reconcile peoplesoft-jira") and "nothing was written" in lines[0]
    assert any(ln.startswith(f"waiting vouchers {bad['BUSINESS_UNIT']}|{bad['VOUCHER_ID']}") for ln in lines)
    assert any(ln.startswith("money vouchers") for ln in lines)
    assert lines[-1].startswith("RECONCILE: both sides agree") and "queue" in lines[-1]
    rows = [r for r in csv.DictReader(sheet.open(encoding="utf-8")) if not r["kind"].endswith(".comments")]
    assert len(rows) == len(env.source_labels())
    assert [r["class"] for r in rows].count("waiting") == 1


def test_bad_pair_entity_or_date_is_a_clear_usage_error(sandbox_env: Env) -> None:
    env = sandbox_env
    for args, words in ((("reconcile", "nosuch-pair"), "not a pair reconcile covers"),
                        ((*RECONCILE, "--entity", "invoices"), "--entity 'invoices'"),
                        ((*RECONCILE, "--since", "last tuesday"), "is not a date")):
        out = env.cli(*args)
        assert out.returncode == EXIT_CONFIG and words in out.stderr and "Traceback" not in out.stderr
    assert not env.state_file.exists() and not env.audit_file.exists()


def test_jde_jira_in_step_then_drifted_and_missing_without_money(jde_env: JdeEnv) -> None:
    env = jde_env
    assert env.cli("sync", "jde-jira").returncode == EXIT_OK
    out = env.cli("reconcile", "jde-jira", "--json")
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["totals"]["in_step"] == len(env.source_labels()) and report["money"] == {}

    orders = env.box.jde.rows()
    first, second = orders[0], orders[1]
    jira = env.box.jira
    jira.edit_as_user(env.issue_for(first["DOCO"], first["DCTO"])["key"], {"summary": "Edited in Jira"})
    jira.delete_as_user(env.issue_for(second["DOCO"], second["DCTO"])["key"])
    writes = jira.writes
    out = env.cli("reconcile", "jde-jira", "--json")
    assert out.returncode == EXIT_NOT_IN_STEP and jira.writes == writes
    report = json.loads(out.stdout)
    [drifted] = _records(report, "drifted")
    assert drifted["fields"] == ["summary"] and drifted["changed"] == "target"
    assert drifted["key"] == f"{first['DOCO']}|{first['DCTO']}"
    [missing] = _records(report, "missing")
    assert missing["key"] == f"{second['DOCO']}|{second['DCTO']}" and "no longer exists" in missing["reason"]


def test_fix_shows_the_pass_plan_for_missing_and_drifted_records_and_writes_nothing(sandbox_env: Env) -> None:
    env = sandbox_env
    ps, jira = env.box.ps, env.box.jira
    assert env.cli(*SYNC).returncode == EXIT_OK
    pos = _rows(env, "purchase_orders")
    edited, touched, deleted = pos[0], pos[1], pos[2]
    jira.edit_as_user(_issue_of(env, "purchase_orders", edited), {"summary": "Edited in Jira"})
    ps.touch("purchase_orders", (touched["BUSINESS_UNIT"], touched["PO_ID"]), DESCR254="Changed at the source")
    jira.delete_as_user(_issue_of(env, "purchase_orders", deleted))
    new = ps.add("purchase_orders", {**{k: v for k, v in pos[3].items() if k != "LAST_DTTM_UPDATE"},
                                     "PO_ID": "NEW0001"})
    writes, state_before, audit_before = jira.writes, env.state_file.read_bytes(), env.audit_file.read_bytes()

    code, report = _reconcile(env, "--fix", "--entity", "purchase_orders")
    assert code == EXIT_NOT_IN_STEP, report
    assert jira.writes == writes
    assert env.state_file.read_bytes() == state_before and env.audit_file.read_bytes() == audit_before
    fixes = {r["key"]: r["fix"] for r in report["records"] if r["kind"] == "purchase_orders"}
    assert fixes[f"{new['BUSINESS_UNIT']}|NEW0001"] == "create"
    assert fixes[f"{touched['BUSINESS_UNIT']}|{touched['PO_ID']}"] == "update"
    for left in (edited, deleted):  # a pass would leave these alone: the report says so
        assert fixes[f"{left['BUSINESS_UNIT']}|{left['PO_ID']}"].startswith("none: ")
    assert {p["action"] for p in report["fix_plan"]} == {"create", "update"}

    plain = env.cli(*RECONCILE, "--fix", "--entity", "purchase_orders")
    assert plain.returncode == EXIT_NOT_IN_STEP
    assert any(ln.startswith(f"fix plan: create purchase_orders {new['BUSINESS_UNIT']}|NEW0001")
               for ln in plain.stdout.splitlines())
    assert "FIX PLAN: 2 action(s)" in plain.stdout and "nothing was written" in plain.stdout
    assert jira.writes == writes and env.state_file.read_bytes() == state_before


def test_comments_missing_in_jira_or_edited_at_the_source_are_named(sandbox_env: Env,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    env = sandbox_env
    ps, jira = env.box.ps, env.box.jira
    _in_process(env, monkeypatch, sync=True)
    po_comments = ps.rows("po_comments")
    edited, deleted = po_comments[0], po_comments[1]
    ps.touch("po_comments", (edited["BUSINESS_UNIT"], edited["PO_ID"], edited["COMMENT_ID"]),
             COMMENTS="Edited in PeopleSoft after it was posted")
    parent = f"{deleted['BUSINESS_UNIT']}|{deleted['PO_ID']}"
    entry = State.load(env.state_file).entry("purchase_orders", parent)
    assert entry is not None
    jira.delete_comment_as_user(entry["issue"], entry["comments"][str(deleted["COMMENT_ID"])])
    added = ps.add_comment("vouchers", (_rows(env, "vouchers")[0]["BUSINESS_UNIT"],
                                        _rows(env, "vouchers")[0]["VOUCHER_ID"]), "A new remark")
    writes = jira.writes

    report = _in_process(env, monkeypatch)
    assert report["exit_code"] == EXIT_NOT_IN_STEP and jira.writes == writes
    assert _totals(report)["in_step"] == len(env.source_labels())  # the records themselves agree
    [drifted] = _records(report, "drifted", comments=True)
    assert drifted["kind"] == "purchase_orders.comments" and drifted["fields"] == ["body"]
    assert drifted["key"].startswith(f"{edited['BUSINESS_UNIT']}|{edited['PO_ID']}")
    missing = {r["kind"]: r for r in _records(report, "missing", comments=True)}
    assert set(missing) == {"purchase_orders.comments", "vouchers.comments"}
    assert missing["purchase_orders.comments"]["issue"] == entry["issue"]
    assert "no longer exists" in missing["purchase_orders.comments"]["reason"]
    assert "not posted" in missing["vouchers.comments"]["reason"]
    assert missing["vouchers.comments"]["key"].startswith(f"{added['BUSINESS_UNIT']}|{added['VOUCHER_ID']}")


def test_a_record_deleted_at_the_source_is_its_own_class_and_stays_in_the_money(
        sandbox_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = sandbox_env
    ps, jira = env.box.ps, env.box.jira
    _in_process(env, monkeypatch, sync=True)
    pos = _rows(env, "purchase_orders")
    gone = pos[0]
    issue = _issue_of(env, "purchase_orders", gone)
    ps.delete("purchase_orders", (gone["BUSINESS_UNIT"], gone["PO_ID"]))

    report = _in_process(env, monkeypatch, entity="purchase_orders")
    assert report["exit_code"] == EXIT_OK  # reported, not a failure: a pass never deletes in Jira
    [deleted] = _records(report, "deleted")
    assert deleted["key"] == f"{gone['BUSINESS_UNIT']}|{gone['PO_ID']}" and deleted["issue"] == issue
    assert "no longer in the source" in deleted["reason"]
    m = report["money"]["purchase_orders"]  # the PO is still in Jira: on the target side, named by class
    assert m["source"] == _sum([r["PO_AMT"] for r in pos[1:]])
    assert m["target"] == _sum([r["PO_AMT"] for r in pos])
    assert m["by_class"]["deleted"] == {"source": "0.00", "target": _sum([gone["PO_AMT"]])}
    plain = env.cli(*RECONCILE, "--entity", "purchase_orders")
    assert plain.returncode == EXIT_OK and "deleted at the source" in plain.stdout.splitlines()[-1]

    # Read from a later date, the source is not read in full: no record is taken for deleted.
    later = _in_process(env, monkeypatch, entity="purchase_orders", since=datetime(2099, 1, 1, tzinfo=UTC))
    assert _records(later, "deleted") == []

    # Once the issue is gone too, both sides agree that it is gone; still named, as such.
    jira.delete_as_user(issue)
    after = _in_process(env, monkeypatch, entity="purchase_orders")
    [both] = _records(after, "deleted")
    assert "gone too" in both["reason"] and "target_amount" not in both


# -- procurify-peoplesoft: requisition groups against their PeopleSoft POs ----------------------------------
def _po_total(po: dict[str, Any]) -> Decimal:
    return sum((Decimal(str(d["MERCHANDISE_AMT"])) for ln in po["PO_LINE"] for d in ln["PO_LINE_DISTRIB"]),
               Decimal(0))


def _req_total(penv: PEnv, req: int) -> Decimal:
    return sum((Decimal(i["approved_quantity"]) * Decimal(i["approved_price"])
                for i in penv.box.procurify.items_of(req) if i["status"] == 0), Decimal(0))


def _po_of(penv: PEnv, req: int) -> tuple[tuple[str, str], dict[str, Any]]:
    [(key, po)] = [(k, p) for k, p in penv.box.purchasing.pos.items() if p["PO_REF"].startswith(f"PRC-{req}-")]
    return key, po


def test_procurify_peoplesoft_every_class_and_po_amounts_both_sides(penv: PEnv) -> None:
    import copy

    sim, ps = penv.box.procurify, penv.box.purchasing

    def group(req: int) -> str:  # group_by = "requisition_vendor": (requisition, Procurify vendor id)
        return encode_key((str(req), str(sim.items_of(req)[0]["pref_vendor"]["id"])))

    assert penv.sync().exit_code == EXIT_OK
    reqs = sorted({i["orderNum"] for i in sim.items.values()})
    report = reconcile("procurify-peoplesoft", config_mod.load(penv.config))
    assert report.exit_code == EXIT_OK and report.totals["in_step"] == len(reqs) == 4
    m = report.money_dict()["requisitions"]
    expected = str(sum((_req_total(penv, r) for r in reqs), Decimal(0)).quantize(Decimal("0.01")))
    assert m["source"] == m["target"] == expected and m["difference"] == "0.00"

    edited, changed, deleted = reqs[0], reqs[1], reqs[2]
    _, po = _po_of(penv, edited)  # edited in PeopleSoft: the first line's amount
    dist = po["PO_LINE"][0]["PO_LINE_DISTRIB"][0]
    dist["MERCHANDISE_AMT"] = str(Decimal(str(dist["MERCHANDISE_AMT"])) + 100)
    gone_key, gone_po = _po_of(penv, deleted)
    del ps.pos[gone_key]  # purged in PeopleSoft
    copied = copy.deepcopy(gone_po)  # a PO keyed by hand with one of our handles, for no requisition
    copied.update(PO_ID="0009999001", PO_REF="PRC-999")
    ps.pos[("US001", "0009999001")] = copied
    waits = sim.add_requisition(301, [{"name": "Rope", "quantity": 2, "price": "3", "unit": "M",
                                       "account_code": "6100", "department_id": 1}])
    assert penv.sync().exit_code != EXIT_OK  # unit M is not in the crosswalk: the requisition waits
    sim.change_item(sim.items_of(changed)[0]["id"], quantity=9)  # changed in Procurify, not synced yet
    fresh = sim.add_requisition(302, [{"name": "Cable", "quantity": 2, "price": "7.5", "account_code": "6200",
                                       "department_id": 2}])  # not synced yet: missing
    late = sim.add_requisition(301, [{"name": "Late", "quantity": 1, "price": "2", "account_code": "6100",
                                      "department_id": 1}])
    state = penv.state()  # a pass killed between its pending mark and the Create
    state.set_entry("requisitions", group(late), mark_pending(
        {"handle": f"PRC-{late}-301", "vendor": "0000000042", "business_unit": "US001", "hash": ""}))
    state.save()
    writes, state_before = penv.writes(), penv.state_file.read_bytes()

    report = reconcile("procurify-peoplesoft", config_mod.load(penv.config), fix=True)
    assert penv.writes() == writes and penv.state_file.read_bytes() == state_before  # read-only
    assert report.exit_code == EXIT_NOT_IN_STEP
    by = {f.key: f for f in report.findings if f.cls != "orphaned"}
    assert {k: f.cls for k, f in by.items()} == {
        group(reqs[3]): "in_step", group(edited): "drifted", group(changed): "drifted", group(deleted): "missing",
        group(fresh): "missing", group(waits): "waiting", group(late): "pending"}
    assert by[group(edited)].changed == "target" and by[group(edited)].fields == ["line 1 MERCHANDISE_AMT"]
    assert by[group(edited)].fix.startswith("none: ")  # a pass does not mend a PO edited in PeopleSoft
    assert by[group(changed)].changed == "source" and "line 1 QTY_PO" in by[group(changed)].fields
    assert by[group(changed)].fix == "update" and by[group(fresh)].fix == "create"
    assert "no longer exists in PeopleSoft" in by[group(deleted)].reason
    assert by[group(deleted)].issue == "/".join(gone_key)
    assert "unit 'M'" in by[group(waits)].reason
    [orphan] = [f for f in report.findings if f.cls == "orphaned"]
    assert orphan.issue == "US001/0009999001" and "PRC-999" in orphan.reason

    # PO amounts, both sides, by hand: Procurify's approved quantity x price of every group that maps (the
    # waiting one does not), PeopleSoft's distribution amounts of every PO carrying our handle.
    m = report.money_dict()["requisitions"]
    source = sum((_req_total(penv, r) for r in (*reqs, fresh, late)), Decimal(0)).quantize(Decimal("0.01"))
    target = sum((_po_total(p) for p in ps.pos.values()), Decimal(0)).quantize(Decimal("0.01"))
    assert (m["source"], m["target"]) == (str(source), str(target))
    assert Decimal(m["difference"]) == source - target
    assert m["by_class"]["orphaned"] == {"source": "0.00", "target": str(_po_total(copied).quantize(Decimal("0.01")))}
