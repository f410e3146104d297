"""Injected faults against the real CLI: 5xx bursts, 429s, connection resets, rejections, slow answers,
and PeopleSoft error pages. Whatever happens, a record is either synced once or waiting in the replay
queue: never lost, never duplicated; and `replay retry` finishes the job once the fault is gone."""

from __future__ import annotations

import json
import time
from typing import Any

from conftest import Env

from mlconnector.errors import EXIT_OK, EXIT_RECORDS_FAILED, EXIT_UNREACHABLE
from mlconnector.mapping import record_label
from mlconnector.state import State

API = "/rest/api/3"
BULK = rf"{API}/issue/bulk$"
ISSUE = rf"{API}/issue/PROC-\d+$"
TRANSITIONS = rf"{API}/issue/PROC-\d+/transitions$"
COMMENT = rf"{API}/issue/PROC-\d+/comment$"
SEARCH = rf"{API}/search/jql$"
QUERY = r"/ExecuteQuery\.v1/"
COMMENT_KINDS = {"po_comments": ("psft-po", "PO_ID"), "req_comments": ("psft-req", "REQ_ID"),
                 "voucher_comments": ("psft-voucher", "VOUCHER_ID")}
ERROR_COLLECTION = json.dumps({"errorMessages": [],
                               "errors": {"customfield_10051": "Operation value must be a number."}})


# -- helpers ----------------------------------------------------------------------------------------
def _json(proc: Any) -> Any:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def _queue(env: Env) -> list[dict[str, Any]]:
    """The replay queue as `mlconnector replay list --json` shows it."""
    out = env.cli("replay", "list", "--json")
    assert out.returncode == EXIT_OK, out.stderr
    return _json(out)


def _queue_in_state(env: Env) -> list[dict[str, Any]]:
    """The replay queue read straight from the state file (cheaper than starting the CLI)."""
    return State.load(env.state_file).replay


def _no_duplicates(env: Env) -> dict[str, list[str]]:
    by_label = env.issues_by_label()
    dupes = {label: keys for label, keys in by_label.items() if len(keys) > 1}
    assert dupes == {}, f"duplicate issues: {dupes}"
    return by_label


def _synced_or_queued(env: Env, *, via_cli: bool = True) -> list[dict[str, Any]]:
    """Every source record has exactly one issue or is queued for replay; none lost, none duplicated."""
    by_label = _no_duplicates(env)
    queue = _queue(env) if via_cli else _queue_in_state(env)
    queued = {record_label(i["kind"], i["key"]) for i in queue if i["what"] == "record"}
    missing = env.source_labels() - set(by_label) - queued
    assert missing == set(), f"records neither in Jira nor queued: {sorted(missing)}"
    assert set(by_label) <= env.source_labels()
    return queue


def _all_synced_once(env: Env) -> None:
    by_label = _no_duplicates(env)
    assert set(by_label) == env.source_labels()


def _comments_once(env: Env) -> None:
    issues = {label: issue for issue in env.box.jira.all_issues() for label in issue["fields"].get("labels", [])}
    for ckind, (prefix, id_col) in COMMENT_KINDS.items():
        for row in env.box.ps.rows(ckind):
            ref = f"psft:{prefix[5:]}:{row['BUSINESS_UNIT']}/{row[id_col]}#{row['COMMENT_ID']}"
            issue = issues[f"{prefix}-{row['BUSINESS_UNIT']}-{row[id_col]}"]
            n = sum(ref in c["text"] for c in issue["comments"])
            assert n == 1, f"{ref} is {n} times on {issue['key']}"


def _retry_all_clears_queue(env: Env, *, list_via_cli: bool = False) -> None:
    env.box.jira_server.faults.clear()
    env.box.ps_server.faults.clear()
    retry = env.cli("replay", "retry", "--all", "--json")
    assert retry.returncode == EXIT_OK, retry.stdout + retry.stderr
    assert _json(retry)["queue_size"] == 0
    assert (_queue(env) if list_via_cli else _queue_in_state(env)) == []


# -- 1. bursts, rate limits and resets during a first pass -------------------------------------------
def test_bursts_rate_limits_and_resets_lose_and_duplicate_nothing(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    jf, pf = box.jira_server.faults, box.ps_server.faults
    # Jira creates: a reset after Jira created the chunk, a 503 (unknown outcome), a 429 with
    # Retry-After: 0, then a chunk refused twice (it stays pending and is queued).
    jf.add(kind="drop_after", path=BULK, method="POST", count=1)
    jf.add(kind="status", status=503, path=BULK, method="POST", count=1)
    jf.add(kind="status", status=429, retry_after=0, path=BULK, method="POST", count=1)
    jf.add(kind="status", status=502, path=BULK, method="POST", count=2)
    # Searches (the look-up after an unknown outcome) and status reads: retried.
    jf.add(kind="status", status=503, path=SEARCH, method="POST", count=1)
    jf.add(kind="drop_before", path=SEARCH, method="POST", count=1)
    jf.add(kind="status", status=500, path=ISSUE, method="GET", count=2)
    # Transitions: a burst, then a reset after Jira moved the issue.
    jf.add(kind="status", status=503, path=TRANSITIONS, method="POST", count=2)
    jf.add(kind="drop_after", path=TRANSITIONS, method="POST", count=1)
    # Comments: 429 with Retry-After: 1 on the look-up, resets before and after the post, a 503.
    jf.add(kind="status", status=429, retry_after=1, path=COMMENT, method="GET", count=1)
    jf.add(kind="drop_before", path=COMMENT, method="POST", count=1)
    jf.add(kind="drop_after", path=COMMENT, method="POST", count=1)
    jf.add(kind="status", status=503, path=COMMENT, method="POST", count=1)
    # PeopleSoft queries: each burst stays inside the retry budget (max_attempts = 4).
    pf.add(kind="status", status=503, path=r"ML_VENDOR_ALL", count=2)
    pf.add(kind="drop_before", path=r"ML_REQ_CHANGED", count=1)
    pf.add(kind="status", status=429, retry_after=0, path=r"ML_PO_CHANGED", count=1)
    pf.add(kind="drop_after", path=r"ML_PO_COMMENTS", count=1)
    pf.add(kind="status", status=502, path=r"ML_VOUCHER_CHANGED", count=1)

    first = env.cli("sync", "peoplesoft-jira", "--json")
    assert first.returncode in (EXIT_OK, EXIT_RECORDS_FAILED), first.stdout + first.stderr
    summary = _json(first)
    assert summary["fatal"] is None
    assert box.jira_server.faults.hits >= 12 and box.ps_server.faults.hits == 6  # the faults really happened
    queue = _synced_or_queued(env)
    assert summary["queue_size"] == len(queue)
    assert (first.returncode == EXIT_RECORDS_FAILED) == bool(queue)
    # The chunk refused twice is in the queue, every item with its error.
    assert any(i["what"] == "record" for i in queue)
    assert all(i["error"] for i in queue)

    # A second pass with changed rows: faults on edits, transitions and comments again.
    ps = box.ps
    for key in ps.keys("purchase_orders")[:6]:
        ps.touch("purchase_orders", key, PO_STATUS="A", DESCR254="Changed after the first pass")
        ps.add_comment("purchase_orders", key, f"Second-pass note for {key[1]}.", "FAULTS")
    jf.add(kind="status", status=503, path=ISSUE, method="PUT", count=2)
    jf.add(kind="drop_after", path=ISSUE, method="PUT", count=1)
    jf.add(kind="status", status=429, retry_after=0, path=ISSUE, method="PUT", count=1)
    jf.add(kind="drop_before", path=TRANSITIONS, method="POST", count=1)
    jf.add(kind="drop_after", path=COMMENT, method="POST", count=1)
    second = env.cli("sync", "peoplesoft-jira", "--json")
    assert second.returncode in (EXIT_OK, EXIT_RECORDS_FAILED), second.stdout + second.stderr
    assert _json(second)["fatal"] is None
    _synced_or_queued(env, via_cli=False)

    _retry_all_clears_queue(env, list_via_cli=True)
    _all_synced_once(env)
    _comments_once(env)
    for key in ps.keys("purchase_orders")[:6]:
        [issue] = box.jira.find_by_label(f"psft-po-{key[0]}-{key[1]}")
        assert issue["fields"]["status"] == "Approved"
        assert issue["fields"]["summary"].endswith("Changed after the first pass")
    state = State.load(env.state_file)
    assert all(not state.pending(kind) for kind in state.kinds())


def test_reset_after_a_transition_took_effect_is_not_a_failure(sandbox_env: Env) -> None:
    """The docstring promises transitions are idempotent: a reset after Jira applied one must not fail
    the record (cron would mail a failure and exit 1 for a record that is in the right state)."""
    env = sandbox_env
    box = env.box
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_OK
    key = next((r["BUSINESS_UNIT"], r["PO_ID"]) for r in box.ps.rows("purchase_orders") if r["PO_STATUS"] == "PA")
    box.ps.touch("purchase_orders", key, PO_STATUS="A")
    box.jira_server.faults.add(kind="drop_after", path=TRANSITIONS, method="POST", count=1)
    out = env.cli("sync", "peoplesoft-jira", "--json")
    [issue] = box.jira.find_by_label(f"psft-po-{key[0]}-{key[1]}")
    assert issue["fields"]["status"] == "Approved"
    assert out.returncode == EXIT_OK, out.stdout
    assert _json(out)["failures"] == []
    assert _queue_in_state(env) == []


# -- 2. a record Jira rejects; a row that cannot be mapped -----------------------------------------------
def test_jira_400_on_bulk_create_is_queued_with_raw_body_then_replayed(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    # Jira answers a bulk create with a plain ErrorCollection (a request-level 400).
    box.jira_server.faults.add(kind="status", status=400, path=BULK, method="POST", count=1,
                               body=ERROR_COLLECTION)
    first = env.cli("sync", "peoplesoft-jira", "--json")
    assert "Traceback" not in first.stderr and "Internal error" not in first.stderr, first.stderr
    assert first.returncode == EXIT_RECORDS_FAILED, first.stdout + first.stderr
    queue = _synced_or_queued(env)
    rejected = [i for i in queue if i["what"] == "record"]
    assert rejected, queue
    assert all("Operation value must be a number" in i["error"] for i in rejected)

    show = env.cli("replay", "show", rejected[0]["id"])
    assert show.returncode == EXIT_OK, show.stderr
    assert rejected[0]["key"] in show.stdout
    assert "Operation value must be a number." in show.stdout
    assert '"customfield_10051"' in show.stdout  # Jira's own answer, verbatim

    _retry_all_clears_queue(env)
    _all_synced_once(env)
    _comments_once(env)


def test_unmappable_row_is_queued_and_goes_through_after_the_fix_in_peoplesoft(sandbox_env: Env) -> None:
    env = sandbox_env
    ps = env.box.ps
    key = ps.keys("purchase_orders")[3]
    ps.corrupt("purchase_orders", key, "PO_AMT", "12,3O0.00")
    first = env.cli("sync", "peoplesoft-jira", "--json")
    assert first.returncode == EXIT_RECORDS_FAILED, first.stdout + first.stderr
    [item] = [i for i in _synced_or_queued(env) if i["what"] == "record"]
    assert item["kind"] == "purchase_orders" and item["key"] == "|".join(key)
    assert "PO_AMT" in item["error"] and "12,3O0.00" in item["error"] and "not a number" in item["error"]
    show = env.cli("replay", "show", item["id"])
    assert show.returncode == EXIT_OK and "12,3O0.00" in show.stdout  # the source row as read

    # The buyer corrects the amount in PeopleSoft; the admin retries as the README says.
    ps.touch("purchase_orders", key, PO_AMT=12300.0)
    _retry_all_clears_queue(env)
    [issue] = env.box.jira.find_by_label(f"psft-po-{key[0]}-{key[1]}")
    assert issue["fields"]["customfield_10051"] == 12300.0
    _all_synced_once(env)


# -- 3. dropping a queued item ------------------------------------------------------------------------
def test_replay_drop_removes_one_item_and_audits_it(sandbox_env: Env) -> None:
    env = sandbox_env
    ps = env.box.ps
    bad = ps.keys("vouchers")[:2]
    for key in bad:
        ps.corrupt("vouchers", key, "INVOICE_DT", "31/02/2024")
    assert env.cli("sync", "peoplesoft-jira").returncode == EXIT_RECORDS_FAILED
    queue = [i for i in _queue(env) if i["what"] == "record"]
    assert sorted(i["key"] for i in queue) == sorted("|".join(k) for k in bad)
    victim, keep = queue

    out = env.cli("replay", "drop", victim["id"])
    assert out.returncode == EXIT_OK, out.stderr
    assert "Dropped 1" in out.stdout
    left = _queue_in_state(env)
    assert victim["id"] not in {i["id"] for i in left}
    assert keep["id"] in {i["id"] for i in left}
    audit = [json.loads(x) for x in env.audit_file.read_text().splitlines()]
    dropped = [x for x in audit if x["action"] == "dropped"]
    assert [(x["kind"], x["key"]) for x in dropped] == [("vouchers", victim["key"])]

    unknown = env.cli("replay", "drop", "nosuchid")
    assert unknown.returncode != EXIT_OK and "nosuchid" in unknown.stderr
    assert {i["id"] for i in _queue_in_state(env)} == {i["id"] for i in left}


# -- 4. answers slower than read_timeout ---------------------------------------------------------------
def test_answers_slower_than_the_timeout_complete_or_queue_without_duplicates(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    text = box.config_text(env.state_file)
    jira_part = text.index("[jira]")
    text = text[:jira_part] + text[jira_part:].replace("read_timeout = 10", "read_timeout = 1")
    env.write_config(text=text)
    box.jira_server.faults.add(kind="delay", delay=2, path=BULK, method="POST", count=2)
    box.jira_server.faults.add(kind="delay", delay=2, path=ISSUE, method="GET", count=2)
    first = env.cli("sync", "peoplesoft-jira", "--json")
    assert first.returncode in (EXIT_OK, EXIT_RECORDS_FAILED), first.stdout + first.stderr
    assert _json(first)["fatal"] is None
    # Requests the client gave up on (after 1 s) still finish in Jira (after 2 s), as on a slow site.
    time.sleep(1.5)
    _synced_or_queued(env, via_cli=False)

    box.jira_server.faults.clear()
    again = env.cli("sync", "peoplesoft-jira", "--json")
    assert again.returncode == EXIT_OK, again.stdout + again.stderr
    _all_synced_once(env)
    assert _queue_in_state(env) == []


def test_replay_after_creates_answered_past_the_timeout_duplicates_nothing(sandbox_env: Env) -> None:
    """`replay retry` right after such a pass looks the pending creates up first, as a sync pass does."""
    env = sandbox_env
    box = env.box
    text = box.config_text(env.state_file)
    jira_part = text.index("[jira]")
    env.write_config(text=text[:jira_part] + text[jira_part:].replace("read_timeout = 10", "read_timeout = 1"))
    box.jira_server.faults.add(kind="delay", delay=2, path=BULK, method="POST", count=2)
    first = env.cli("sync", "peoplesoft-jira", "--json")
    assert first.returncode in (EXIT_OK, EXIT_RECORDS_FAILED), first.stdout + first.stderr
    time.sleep(1.5)  # the requests the client gave up on finish in Jira
    box.jira_server.faults.clear()
    replay = env.cli("replay", "retry", "--all", "--json")
    assert replay.returncode == EXIT_OK, replay.stdout + replay.stderr
    assert _queue_in_state(env) == []
    _all_synced_once(env)


def test_lone_surrogate_in_source_text_is_shown_not_fatal(sandbox_env: Env) -> None:
    env = sandbox_env
    row = env.box.ps.rows("purchase_orders")[0]
    key = (row["BUSINESS_UNIT"], row["PO_ID"])
    env.box.ps.touch("purchase_orders", key, DESCR254="tab\there\x00nul\x1besc \ud800 lone")
    out = env.cli("sync", "peoplesoft-jira", "--json")
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    [issue] = env.box.jira.find_by_label(record_label("purchase_orders", "|".join(key)))
    assert "\ufffd lone" in issue["fields"]["summary"]
    assert State.load(env.state_file).entry("purchase_orders", "|".join(key))["issue"] == issue["key"]


# -- 5. PeopleSoft answers 200 with an error page or broken JSON -----------------------------------------
IB_ERROR = ("<?xml version=\"1.0\"?><IBResponse type=\"error\"><DefaultTitle>Integration Broker Response"
            "</DefaultTitle><StatusCode>20</StatusCode><MessageID>10</MessageID><DefaultMessage><![CDATA["
            "Integration Gateway: unexpected failure of the query engine. (158,999)]]></DefaultMessage>"
            "</IBResponse>")


def test_peoplesoft_error_body_or_broken_json_fails_the_pass_cleanly(sandbox_env: Env) -> None:
    env = sandbox_env
    box = env.box
    # The first query of the pass gets an IBResponse error page with HTTP 200.
    box.ps_server.faults.add(kind="body", path=QUERY, method="GET", count=1, body=IB_ERROR,
                             headers={"Content-Type": "text/xml"})
    first = env.cli("sync", "peoplesoft-jira")
    assert first.returncode == EXIT_UNREACHABLE, first.stdout + first.stderr
    assert "PeopleSoft" in first.stderr and "unexpected failure of the query engine" in first.stderr
    assert "Traceback" not in first.stderr and "Internal error" not in first.stderr
    _no_duplicates(env)

    # Broken JSON on the purchase order query.
    box.ps_server.faults.add(kind="body", path=r"ML_PO_CHANGED", method="GET", count=1,
                             body='{"status": "success", "data": {"query": {"rows": [',
                             headers={"Content-Type": "application/json"})
    second = env.cli("sync", "peoplesoft-jira")
    assert second.returncode == EXIT_UNREACHABLE, second.stdout + second.stderr
    assert "PeopleSoft" in second.stderr and "ML_PO_CHANGED" in second.stderr
    assert "malformed JSON" in second.stderr
    assert "Traceback" not in second.stderr and "Internal error" not in second.stderr
    _no_duplicates(env)

    # The fault is gone: the next pass catches up on everything, once.
    third = env.cli("sync", "peoplesoft-jira", "--json")
    assert third.returncode == EXIT_OK, third.stdout + third.stderr
    _all_synced_once(env)
    _comments_once(env)
    # The vendor query was the one that failed first: issues still carry the vendor master data.
    wrong = []
    for po in box.ps.rows("purchase_orders"):
        vendor = box.ps.get("vendors", (po["VENDOR_SETID"], po["VENDOR_ID"]))
        [issue] = box.jira.find_by_label(f"psft-po-{po['BUSINESS_UNIT']}-{po['PO_ID']}")
        if issue["fields"].get("customfield_10052") != vendor["NAME1"]:
            wrong.append((issue["key"], issue["fields"].get("customfield_10052"), vendor["NAME1"]))
    assert wrong == [], f"issues without their vendor's name: {wrong[:5]}"
