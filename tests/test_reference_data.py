"""Reference data without a change stamp (the vendor master read in full and diffed) and the documents
that show it (re-mapped from the state and written in the same pass, once)."""

from __future__ import annotations

import json
import signal
from datetime import timedelta
from typing import Any

import pytest
from conftest import Env
from test_crash_safety import _kill, _start, _wait_for

from mlconnector.errors import EXIT_CONFIG, EXIT_OK
from mlconnector.keymap import KeyMap
from mlconnector.mapping import record_label
from mlconnector.peoplesoft.qas import parse_ps_datetime
from mlconnector.state import State, iso, utcnow
from mlconnector.sync import reference

ISSUE_PUT = r"/rest/api/3/issue/PROC-\d+$"
VENDOR_FIELD = "customfield_10052"  # "Vendor" in the sandbox Jira
EVERY_PASS = "[peoplesoft.records.vendors]\nfull_read_every_hours = 0\n"
KEYS = {"requisitions": ("BUSINESS_UNIT", "REQ_ID"), "purchase_orders": ("BUSINESS_UNIT", "PO_ID"),
        "vouchers": ("BUSINESS_UNIT", "VOUCHER_ID")}
OPEN = {"requisitions": lambda r: r["REQ_STATUS"] not in ("C", "X"),
        "purchase_orders": lambda r: r["PO_STATUS"] not in ("C", "X"), "vouchers": lambda r: True}


def _json(proc: Any) -> dict[str, Any]:
    assert proc.stdout.strip(), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _documents_of(env: Env, vendor: tuple[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {kind: [r for r in env.box.ps.rows(kind) if (r.get("VENDOR_SETID"), r.get("VENDOR_ID")) == vendor]
            for kind in KEYS}


def _issue(env: Env, kind: str, row: dict[str, Any]) -> dict[str, Any]:
    [issue] = env.box.jira.find_by_label(record_label(kind, "|".join(row[k] for k in KEYS[kind])))
    return issue


def _busiest_vendor(env: Env) -> tuple[str, str]:
    """The vendor with the most documents, one of its purchase orders (last changed days ago, so no pass
    re-reads it in its overlap window) closed before the first pass."""
    vendors = env.box.ps.keys("vendors")
    vendor = max(vendors, key=lambda v: sum(len(d) for d in _documents_of(env, v).values()))
    old = iso(utcnow() - timedelta(days=2))
    po = next(r for r in _documents_of(env, vendor)["purchase_orders"]
              if iso(parse_ps_datetime(r["LAST_DTTM_UPDATE"])) < old)
    env.box.ps.corrupt("purchase_orders", (po["BUSINESS_UNIT"], po["PO_ID"]), "PO_STATUS", "C")
    return vendor


def test_a_renamed_vendor_reaches_its_open_documents_in_the_same_pass_once(sandbox_env: Env) -> None:
    env = sandbox_env
    env.write_config(extra_ps=EVERY_PASS)
    vendor = _busiest_vendor(env)
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    box = env.box
    box.ps.touch("vendors", vendor, NAME1="Renamed Supply Co")  # the documents' own rows do not change
    docs = _documents_of(env, vendor)
    open_docs = {(k, r[KEYS[k][1]]) for k, rows in docs.items() for r in rows if OPEN[k](r)}
    closed = [(k, r) for k, rows in docs.items() for r in rows if not OPEN[k](r)]
    assert open_docs and closed
    box.ps_server.clear_log()
    box.jira_server.clear_log()

    out = _json(env.cli("sync", "peoplesoft-jira", "--json"))
    assert out["exit_code"] == EXIT_OK
    assert out["counts"]["vendors"]["updated"] == 1
    assert sum(out["counts"][k]["remapped"] for k in KEYS) == len(open_docs)
    assert sum(out["counts"][k]["updated"] for k in KEYS) == len(open_docs)  # and nothing else
    for kind, rows in docs.items():
        for r in rows:
            shown = _issue(env, kind, r)["fields"][VENDOR_FIELD]
            if OPEN[kind](r):
                assert shown == "Renamed Supply Co"
            else:
                assert shown != "Renamed Supply Co"  # a closed document keeps the vendor it closed with
    # Once: one edit per open document, none for anything else.
    puts = [r.path.rsplit("/", 1)[1] for r in box.jira_server.requests("PUT", ISSUE_PUT)]
    assert len(puts) == len(set(puts)) == len(open_docs)
    assert not box.jira_server.requests("POST", r"/issue/bulk$")
    # Without re-reading their source: the same PeopleSoft queries as any pass (one per kind and comments).
    queries = [r.path.split("/")[6] for r in box.ps_server.requests("GET", r"/ExecuteQuery\.v1/")]
    assert sorted(queries) == sorted(["ML_VENDOR_ALL", "ML_REQ_CHANGED", "ML_PO_CHANGED", "ML_VOUCHER_CHANGED",
                                      "ML_REQ_COMMENTS", "ML_PO_COMMENTS", "ML_VOUCHER_COMMENTS"])
    # Nothing left to re-map; a pass after it writes nothing.
    assert reference.REFRESH not in State.load(env.state_file).extra
    box.jira_server.clear_log()
    again = _json(env.cli("sync", "peoplesoft-jira", "--json"))
    assert again["counts"]["vendors"]["updated"] == 0 and sum(again["counts"][k]["remapped"] for k in KEYS) == 0
    assert not box.jira_server.requests("PUT") and not box.jira_server.requests("POST", r"/issue")


def test_a_document_changed_in_the_same_pass_as_its_vendor_is_written_once(sandbox_env: Env) -> None:
    env = sandbox_env
    env.write_config(extra_ps=EVERY_PASS)
    vendor = _busiest_vendor(env)
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    po = next(r for r in _documents_of(env, vendor)["purchase_orders"] if OPEN["purchase_orders"](r))
    env.box.ps.touch("vendors", vendor, PYMNT_TERMS_CD="N90")
    env.box.ps.touch("purchase_orders", (po["BUSINESS_UNIT"], po["PO_ID"]), DESCR254="Changed at the source")
    env.box.jira_server.clear_log()
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    issue = _issue(env, "purchase_orders", po)
    assert issue["fields"]["summary"].endswith("Changed at the source")
    assert "N90" in json.dumps(issue["fields"]["customfield_10055"])  # Vendor Details
    puts = [r.path for r in env.box.jira_server.requests("PUT", ISSUE_PUT) if r.path.endswith("/" + issue["key"])]
    assert len(puts) == 1


def test_between_full_reads_a_pass_reads_no_vendor_and_a_due_read_without_change_writes_nothing(
        sandbox_env: Env) -> None:
    env = sandbox_env  # the default cadence: the vendor master is read in full at most once an hour
    box = env.box
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    assert box.ps.calls["ML_VENDOR_ALL"] == 1
    vendor = box.ps.keys("vendors")[0]
    box.ps.touch("vendors", vendor, NAME1="Renamed Later")
    box.jira_server.clear_log()
    quiet = _json(env.cli("sync", "peoplesoft-jira", "--json"))
    assert box.ps.calls["ML_VENDOR_ALL"] == 1 and quiet["counts"].get("vendors", {}).get("read", 0) == 0
    assert not box.jira_server.requests("PUT")
    # Undo the rename: when the cadence comes round, the full read finds the table as it was: reads only.
    box.ps.touch("vendors", vendor, NAME1=State.load(env.state_file).entry("vendors", "|".join(vendor))["v"]["name"])
    _age_full_read(env, hours=2)
    due = _json(env.cli("sync", "peoplesoft-jira", "--json"))
    assert box.ps.calls["ML_VENDOR_ALL"] == 2
    assert due["counts"]["vendors"]["read"] == len(box.ps.keys("vendors"))
    assert due["counts"]["vendors"]["updated"] == 0
    assert not box.jira_server.requests("PUT") and not box.jira_server.requests("POST", r"/issue")
    # A real change waits for the next due read, then reaches Jira.
    box.ps.touch("vendors", vendor, NAME1="Renamed Later")
    _age_full_read(env, hours=2)
    changed = _json(env.cli("sync", "peoplesoft-jira", "--json"))
    assert changed["counts"]["vendors"]["updated"] == 1
    assert sum(changed["counts"][k]["updated"] for k in KEYS) >= 1


def _age_full_read(env: Env, hours: float) -> None:
    st = State.load(env.state_file)
    st.watermarks["vendors.full"] = iso(utcnow() - timedelta(hours=hours))
    st.save()


def test_a_stamped_vendor_view_is_read_by_window_and_its_changes_reach_the_documents(sandbox_env: Env) -> None:
    env = sandbox_env
    env.box.ps.vendor_stamp = True
    env.write_config(extra_ps='[peoplesoft.records.vendors]\nread = "stamped"\n')
    vendor = _busiest_vendor(env)
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    assert env.box.ps.calls["ML_VENDOR_CHANGED"] >= 1 and env.box.ps.calls["ML_VENDOR_ALL"] == 0
    env.box.ps.touch("vendors", vendor, NAME1="Stamped Rename")
    out = _json(env.cli("sync", "peoplesoft-jira", "--json"))
    assert out["counts"]["vendors"]["updated"] == 1
    for kind, rows in _documents_of(env, vendor).items():
        for r in rows:
            if OPEN[kind](r):
                assert _issue(env, kind, r)["fields"][VENDOR_FIELD] == "Stamped Rename"


def test_a_stamped_read_of_a_query_without_the_stamp_names_the_setting(sandbox_env: Env) -> None:
    env = sandbox_env
    env.write_config(extra_ps='[peoplesoft.records.vendors]\nread = "stamped"\nquery = "ML_VENDOR_ALL"\n')
    out = env.cli("sync", "peoplesoft-jira", "--json")
    assert out.returncode == EXIT_CONFIG
    error = _json(out)["error"]
    assert "no LAST_DTTM_UPDATE" in error and 'read = "full"' in error and "ML_VENDOR_ALL" in error
    assert env.box.jira.writes == 0  # documents wait for their vendors
    assert State.load(env.state_file).replay == []  # not one queued item per vendor


def test_a_full_read_cut_off_at_max_maxrows_is_refused_naming_the_key(sandbox_env: Env) -> None:
    env = sandbox_env
    env.write_config(extra_ps="max_maxrows = 5\n")
    out = env.cli("sync", "peoplesoft-jira", "--json")
    assert out.returncode == EXIT_CONFIG
    assert "max_maxrows" in _json(out)["error"]
    assert State.load(env.state_file).entry("vendors", "|".join(env.box.ps.keys("vendors")[0])) is None


def test_full_read_is_for_reference_tables_only(sandbox_env: Env) -> None:
    env = sandbox_env
    env.write_config(extra_ps='[peoplesoft.records.purchase_orders]\nread = "full"\n')
    out = env.cli("ping")
    assert out.returncode == EXIT_CONFIG and "Traceback" not in out.stderr
    assert "peoplesoft.records.purchase_orders.read" in out.stdout + out.stderr


def test_a_pass_stopped_after_the_vendor_diff_re_maps_on_the_next_pass(sandbox_env: Env) -> None:
    env = sandbox_env
    env.write_config(extra_ps=EVERY_PASS)
    vendor = _busiest_vendor(env)
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    env.box.ps.touch("vendors", vendor, NAME1="Marked Then Stopped")
    # The vendor pass alone: the change is stored and the documents are marked, then the pass ends.
    assert env.cli("sync", "peoplesoft-jira", "--kind", "vendors").returncode == EXIT_OK
    assert reference.marked(State.load(env.state_file), "purchase_orders")
    out = _json(env.cli("sync", "peoplesoft-jira", "--json"))
    assert out["counts"]["vendors"]["updated"] == 0  # already stored: the marks carried the change over
    for kind, rows in _documents_of(env, vendor).items():
        for r in rows:
            if OPEN[kind](r):
                assert _issue(env, kind, r)["fields"][VENDOR_FIELD] == "Marked Then Stopped"


def test_a_pass_killed_while_re_mapping_loses_no_vendor_change_and_creates_nothing(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    env.write_config(extra_ps=EVERY_PASS, extra_jira="max_workers = 1\n")
    vendor = _busiest_vendor(env)
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    issues = len(box.jira.all_issues())
    box.ps.touch("vendors", vendor, NAME1="Killed Mid Refresh")
    open_docs = [(k, r) for k, rows in _documents_of(env, vendor).items() for r in rows if OPEN[k](r)]
    assert len(open_docs) >= 2
    box.jira_server.faults.add(kind="hang_after", path=ISSUE_PUT, method="PUT", count=1, delay=30)
    proc = _start(env, "sync", "peoplesoft-jira")
    try:
        _wait_for(lambda: any(i["fields"].get(VENDOR_FIELD) == "Killed Mid Refresh" for i in box.jira.all_issues()),
                  30, "the first re-mapped edit", proc)
        assert _kill(proc) == -signal.SIGKILL
    finally:
        _kill(proc)
    box.jira_server.faults.clear()
    box.jira_server.clear_log()
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    for kind, r in open_docs:
        assert _issue(env, kind, r)["fields"][VENDOR_FIELD] == "Killed Mid Refresh"
    assert len(box.jira.all_issues()) == issues
    assert all(len(v) == 1 for v in env.issues_by_label().values())
    # The rerun edits only what the killed pass had not recorded (the edit in flight at most once more).
    assert len(box.jira_server.requests("PUT", ISSUE_PUT)) <= len(open_docs)
    assert reference.REFRESH not in State.load(env.state_file).extra


def test_vendors_through_a_ci_are_read_in_full(sandbox_env: Env) -> None:
    env = sandbox_env
    env.write_config(extra_ps='[peoplesoft.records.vendors]\ntransport = "ci"\nci = "VENDOR_CI"\n'
                              "full_read_every_hours = 0\n")
    vendor = _busiest_vendor(env)
    cache = {**env.env, "MLCONNECTOR_CACHE_DIR": str(env.dir / "cache")}
    first = _json(env.cli("sync", "peoplesoft-jira", "--json", env=cache))
    assert first["exit_code"] == EXIT_OK and first["counts"]["vendors"]["read"] == len(env.box.ps.keys("vendors"))
    env.box.ps.touch("vendors", vendor, NAME1="Via CI")
    second = _json(env.cli("sync", "peoplesoft-jira", "--json", env=cache))
    assert second["counts"]["vendors"]["updated"] == 1
    po = next(r for r in _documents_of(env, vendor)["purchase_orders"] if OPEN["purchase_orders"](r))
    assert _issue(env, "purchase_orders", po)["fields"][VENDOR_FIELD] == "Via CI"


def test_a_dry_run_reads_the_vendor_master_but_stores_nothing(sandbox_env: Env) -> None:
    env = sandbox_env
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    before = env.state_file.read_bytes()
    env.box.ps.touch("vendors", env.box.ps.keys("vendors")[0], NAME1="Dry")
    out = _json(env.cli("sync", "peoplesoft-jira", "--json", "--dry-run", "--since", "2000-01-01"))
    assert out["counts"]["vendors"]["updated"] == 1
    assert env.state_file.read_bytes() == before


def test_a_vendor_cache_of_an_earlier_version_moves_into_the_key_map(sandbox_env: Env) -> None:
    env = sandbox_env
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    st = State.load(env.state_file)
    vk = "|".join(env.box.ps.keys("vendors")[0])
    entry = st.entry("vendors", vk)
    assert entry is not None
    st.vendors[vk] = {**entry["v"], "name": "From The Header", "ts": "2000-01-01T00:00:00+00:00"}
    st.drop_entry("vendors", vk)
    st.save()
    env.box.jira_server.clear_log()
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK  # not due: the header's copy is used
    again = State.load(env.state_file)
    assert again.vendors == {} and again.entry("vendors", vk)["v"]["name"] == "From The Header"


# -- units -------------------------------------------------------------------------------------------
def test_find_by_scans_saved_and_touched_entries(tmp_path) -> None:
    st = State(path=tmp_path / "s.json")
    for i in range(50):
        st.set_entry("purchase_orders", f"US001|{i:04d}", {"issue": f"PROC-{i}", "ref.vendors": f"SHARE|{i % 5}"})
    st.set_entry("purchase_orders", "US001|odd\"key", {"issue": "PROC-99", "ref.vendors": 'SHARE|we"ird\\'})
    st.save()
    got = st.find_by("purchase_orders", "ref.vendors", {"SHARE|1", 'SHARE|we"ird\\'})
    assert sorted(got) == sorted([f"US001|{i:04d}" for i in range(1, 50, 5)] + ["US001|odd\"key"])
    entry = st.entry("purchase_orders", "US001|0001")
    assert entry is not None
    entry["ref.vendors"] = "SHARE|2"  # touched since the save: judged by the touched entry
    assert "US001|0001" not in st.find_by("purchase_orders", "ref.vendors", {"SHARE|1"})
    assert st.find_by("purchase_orders", "ref.vendors", set()) == []
    assert KeyMap().find_by("purchase_orders", "ref.vendors", {"x"}) == []


def test_marks_handled_are_cleared_and_marks_added_since_stay(tmp_path) -> None:
    st = State(path=tmp_path / "s.json")
    store = reference.ReferenceStore(st, "vendors", ["purchase_orders"])
    assert store.store("SHARE|1", {"name": "A"}) and not store.store("SHARE|1", {"name": "A"})
    seen = reference.marked(st, "purchase_orders")
    assert seen == {"vendors": {"SHARE|1"}}
    store.store("SHARE|2", {"name": "B"})
    reference.clear(st, "purchase_orders", seen)
    assert reference.marked(st, "purchase_orders") == {"vendors": {"SHARE|2"}}
    reference.clear(st, "purchase_orders", {"vendors": {"SHARE|2"}})
    assert reference.REFRESH not in st.extra


@pytest.mark.parametrize("hours, due", [(0, True), (1, False), (0.5, True)])
def test_full_read_cadence(tmp_path, hours: float, due: bool) -> None:
    st = State(path=tmp_path / "s.json")
    now = utcnow()
    rule = reference.FullRead(timedelta(hours=hours))
    assert rule.due(st, "vendors", now)
    rule.done(st, "vendors", now - timedelta(minutes=40))
    assert rule.due(st, "vendors", now) is due
    assert rule.due(st, "vendors", now, forced=True)
