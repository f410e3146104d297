"""Adversarial review of the engine refactor (sync/flows.py, jira/comments.py, jde/backflow.py) and of the
state guard (runner.claim_state / pairs_held). Each xfail test is a fault found on main; the passing tests
pin risks that were checked and held, where the suite did not cover them yet."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlconnector import config as config_mod
from mlconnector.audit import Audit, Redactor
from mlconnector.errors import AmbiguousWriteError, AuthError, RemoteError, StateError
from mlconnector.jira.adf import plain_text as adf_text
from mlconnector.jira.comments import CommentWriter
from mlconnector.runner import claim_state, open_state, pairs_held
from mlconnector.state import State
from mlconnector.sync import flows
from mlconnector.sync.engine import PassContext
from mlconnector.sync.keys import comment_key

ROOT = Path(__file__).resolve().parent.parent


def _procurify_config(tmp_path: Path, state_file: Path) -> config_mod.Config:
    """The shipped procurify-peoplesoft example, its state kept at ``state_file``."""
    text = (ROOT / "examples" / "procurify-peoplesoft.toml").read_text(encoding="utf-8")
    text = text.replace('instance = "acme-procurement"',
                        f'instance = "acme-procurement"\nstate_file = {json.dumps(str(state_file))}', 1)
    path = tmp_path / "procurify.toml"
    path.write_text(text, encoding="utf-8")
    return config_mod.load(path)


def _release_010_state(path: Path) -> None:
    """A state file as release 0.1.0 wrote it for peoplesoft-jira: neither sites nor pairs recorded."""
    old = State(path=path)
    old.set_entry("requisitions", "US001|0000000042", {"issue": "PROC-7", "ts": "2026-01-02T00:00:00+00:00"})
    old.watermarks["requisitions"] = "2026-01-02T00:00:00+00:00"
    old.dirty = True
    old.save()
    assert State.load(path).sites == {} and State.load(path).pairs == []


# -- the state guard ------------------------------------------------------------------------------
def test_a_release_010_state_is_refused_to_a_pair_that_was_not_in_that_release(tmp_path: Path) -> None:
    # User-visible consequence: a procurify-peoplesoft configuration pointed (same instance name or
    # state_file) at a peoplesoft-jira state of release 0.1.0 is NOT refused: the 0.1.0 requisitions links
    # and pending marks are taken as procurify-peoplesoft's own (a requisition "already linked" is never
    # sent to PeopleSoft, a pending mark is settled by the wrong pair) -- the exact case the guard exists for.
    state_file = tmp_path / "shared.json"
    _release_010_state(state_file)
    cfg = _procurify_config(tmp_path, state_file)
    state = open_state(cfg, locked=True)  # what runner.session does, right before claim_state
    with pytest.raises(StateError, match="peoplesoft-jira"):
        claim_state(state, "procurify-peoplesoft")


def test_the_010_rule_itself_attributes_a_siteless_state_to_peoplesoft_jira(tmp_path: Path) -> None:
    # Held: without the binding in between, the legacy rule names the right owner.
    _release_010_state(tmp_path / "s.json")
    assert pairs_held(State.load(tmp_path / "s.json")) == ["peoplesoft-jira"]


def test_state_export_and_import_keep_which_pair_the_state_belongs_to(tmp_path: Path) -> None:
    # User-visible consequence: after moving an installation (state export -> state import) the state no
    # longer says which pair owns it; the guard falls back to guessing from record names and the sites the
    # importing configuration binds. Imported with --rebind into another PeopleSoft-writing pair's
    # configuration (the wrong export file), peoplesoft-jaggaer's requisitions links and pending creates are
    # then accepted by procurify-peoplesoft as its own instead of being refused.
    from mlconnector.moving import import_state, write_export

    src_file = tmp_path / "jaggaer-state.json"
    jag = State(path=src_file, sites={"jaggaer": "https://acme.jaggaer.example", "peoplesoft":
                                      "https://psfin.acme.internal:8443 node PSFT_EP"},
                pairs=["peoplesoft-jaggaer"])
    jag.set_entry("requisitions", "US001|0000000042", {"id": "REQ-9", "ts": "2026-01-02T00:00:00+00:00"})
    jag.dirty = True
    jag.save()
    src_cfg = _procurify_config(tmp_path, src_file)  # write_export reads cfg.state_file only
    buf = io.BytesIO()
    write_export(src_cfg, buf, with_audit=False)
    doc = tmp_path / "export.json"
    doc.write_bytes(buf.getvalue())

    assert json.loads(doc.read_text(encoding="utf-8"))["state"]["pairs"] == ["peoplesoft-jaggaer"]

    (tmp_path / "dst").mkdir()
    dst_cfg = _procurify_config(tmp_path / "dst", tmp_path / "dst" / "state.json")
    with pytest.raises(StateError, match="peoplesoft-jaggaer") as err:  # the wrong export is refused at import
        import_state(dst_cfg, doc, replace=False, rebind=True)
    assert "Nothing was changed" in err.value.message and not dst_cfg.state_file.exists()


# -- comments (jira/comments.py) --------------------------------------------------------------------
@dataclass(frozen=True)
class _Comment:
    key: str
    parent_key: str
    comment_id: str
    ts: datetime
    ref: str
    body: dict[str, Any]


def _map_comment(_kind: str, row: dict[str, Any]) -> _Comment:
    ref = f"psft-comment {row['parent']}#{row['id']}"
    text = f"{row['text']}\n[{ref}]"
    return _Comment(f"{row['parent']}|{row['id']}", row["parent"], row["id"],
                    datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=int(row["id"])), ref,
                    {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
                        {"type": "text", "text": text}]}]})


class _FakeJira:
    """Jira's comment endpoints in memory: ``fail_lookup`` / ``fail_post`` raise once per listed error."""

    ME = "acc-connector"

    def __init__(self) -> None:
        self.posted: dict[str, list[dict[str, Any]]] = {}
        self.posts = 0
        self.fail_lookup: list[Exception] = []
        self.fail_post: list[Exception] = []
        self.after_post_fail: list[Exception] = []  # the post takes effect, then the answer is lost

    def myself(self) -> dict[str, Any]:
        return {"accountId": self.ME}

    def comments(self, issue: str) -> list[dict[str, Any]]:
        if self.fail_lookup:
            raise self.fail_lookup.pop(0)
        return list(self.posted.get(issue, []))

    def add_comment(self, issue: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail_post:
            raise self.fail_post.pop(0)
        self.posts += 1
        c = {"id": str(1000 + self.posts), "author": {"accountId": self.ME}, "body": body}
        self.posted.setdefault(issue, []).append(c)
        if self.after_post_fail:
            raise self.after_post_fail.pop(0)
        return c


def _comment_ctx(tmp_path: Path, *, dry_run: bool = False) -> PassContext:
    state = State(path=tmp_path / "state.json")
    state.set_entry("requisitions", "R1", {"issue": "PROC-1", "ts": "2026-01-01T00:00:00+00:00"})
    state.set_entry("requisitions", "R2", {"issue": "PROC-2", "ts": "2026-01-01T00:00:00+00:00"})
    if not dry_run:
        state.dirty = True
        state.save()
    return PassContext("peoplesoft-jira", state, Audit(None, Redactor(), "peoplesoft-jira"), dry_run=dry_run)


def _write(ctx: PassContext, jira: _FakeJira, rows: list[dict[str, Any]]) -> set[str]:
    cw = CommentWriter(ctx, jira, max_workers=2)  # type: ignore[arg-type]
    return cw.write("requisitions", rows, _map_comment, lambda row: str(row.get("id")),
                    lambda c: f"waits for {c.parent_key}")


def _row(parent: str, cid: str) -> dict[str, Any]:
    return {"parent": parent, "id": cid, "text": f"note {cid} on {parent}"}


def test_a_failed_lookup_of_a_pending_comment_never_leads_to_a_second_post(tmp_path: Path) -> None:
    # User-visible consequence: a pass killed right after Jira took a comment leaves it pending; if the
    # next pass cannot read the issue's comments (a 503, a 429 that outlasts the retries), the pending
    # mark is dropped and the comment queued, and the following pass posts it again: the approver sees
    # the same PeopleSoft comment twice on the issue.
    ctx = _comment_ctx(tmp_path)
    jira = _FakeJira()
    jira.after_post_fail.append(AmbiguousWriteError("Jira did not answer", system="Jira"))
    _write(ctx, jira, [_row("R1", "1")])  # posted, answer lost: pending, queued
    assert jira.posts == 1 and ctx.state.entry("requisitions", "R1")["comments"]["1"] == "pending"
    jira.fail_lookup.append(RemoteError("Jira answered 503", system="Jira", status=503))
    _write(ctx, jira, [_row("R1", "1")])  # the lookup fails: must stay pending (looked up next time)
    _write(ctx, jira, [_row("R1", "1")])  # Jira is back
    assert jira.posts == 1
    assert ctx.state.entry("requisitions", "R1")["comments"]["1"] == "1001"


def test_a_lost_answer_is_looked_up_and_linked_not_posted_again(tmp_path: Path) -> None:
    # Held: the pending mark is on disk before the post, and the retry finds the comment by its marker.
    ctx = _comment_ctx(tmp_path)
    jira = _FakeJira()
    jira.after_post_fail.append(AmbiguousWriteError("Jira did not answer", system="Jira"))
    assert _write(ctx, jira, [_row("R1", "1")]) == set()
    on_disk = State.load(ctx.state.path)
    assert on_disk.entry("requisitions", "R1")["comments"]["1"] == "pending"
    assert [i["key"] for i in on_disk.replay] == ["R1|1"]
    assert _write(ctx, jira, [_row("R1", "1")]) == {"R1|1"}
    assert jira.posts == 1 and ctx.state.entry("requisitions", "R1")["comments"]["1"] == "1001"
    assert ctx.state.replay == []


def test_a_lost_login_stops_an_issues_comments_in_order_and_saves_what_was_posted(tmp_path: Path) -> None:
    # Held: comments of one issue are posted in the source's order; a lost login stops the rest of them
    # (still pending, looked up next pass), the other issue's comments are not harmed, and what was
    # posted is saved before the error stops the pass.
    ctx = _comment_ctx(tmp_path)
    rows = [_row("R1", "3"), _row("R1", "1"), _row("R1", "2")]

    class FlakyOnSecond(_FakeJira):
        def add_comment(self, issue: str, body: dict[str, Any]) -> dict[str, Any]:
            if issue == "PROC-1" and self.posts == 1 and not getattr(self, "tripped", False):
                self.tripped = True
                raise AuthError("Jira refused the token")
            return super().add_comment(issue, body)

    jira = FlakyOnSecond()
    with pytest.raises(AuthError):
        _write(ctx, jira, rows)
    texts = [adf_text(c["body"]) for c in jira.posted["PROC-1"]]
    assert texts[0].startswith("note 1 ") and len(texts) == 1
    on_disk = State.load(ctx.state.path).entry("requisitions", "R1")["comments"]
    assert on_disk == {"1": "1001", "2": "pending", "3": "pending"}
    assert ctx.state.replay == []  # a lost login queues nothing: the next pass reads them again
    _write(ctx, jira, rows)
    assert [adf_text(c["body"]).split(" on ")[0] for c in jira.posted["PROC-1"]] == ["note 1", "note 2", "note 3"]


def test_a_dry_run_posts_and_saves_nothing_even_for_pending_comments(tmp_path: Path) -> None:
    ctx = _comment_ctx(tmp_path, dry_run=True)
    ctx.state.entry("requisitions", "R2")["comments"] = {"5": "pending"}
    jira = _FakeJira()
    _write(ctx, jira, [_row("R1", "1"), _row("R2", "5"), _row("R9", "2")])
    assert jira.posts == 0 and not ctx.state.path.exists()
    assert ctx.result.kind("requisitions").commented == 3 and ctx.state.replay == []


# -- the status back-flow (jde/backflow.py) ----------------------------------------------------------
JDE_TOML = """instance = "jde-review"
state_file = "{state}"

[jde]
base_url = "http://127.0.0.1:9/jderest"
environment = "JDV920"
role = "*ALL"
user = "JDEUSER"

[jde.work_orders]
initial_since = "2026-01-01"

[jira]
site = "http://127.0.0.1:9"
email = "bot@example.com"
project = "PROC"
"""


class _FakeAis:
    """AIS as the back-flow uses it: the order's status by browse, the orchestration that sets it."""

    def __init__(self, jde: Any, status: str) -> None:
        self.src = jde.sources["work_orders"]
        self.status = status
        self.calls: list[dict[str, str]] = []
        self.fail_browse: list[Exception] = []

    def browse(self, table: str, columns: list[str], conds: Any, order_by: Any = None,
               page_size: int = 0) -> list[dict[str, Any]]:
        if self.fail_browse:
            raise self.fail_browse.pop(0)
        return [{self.src.alias("order_number"): "5001", self.src.alias("status"): self.status}]

    def orchestrate(self, name: str, inputs: dict[str, str], fmt: str) -> dict[str, Any]:
        self.calls.append(inputs)
        self.status = "HD"
        return {}


def _backflow(tmp_path: Path, jde_status: str) -> tuple[PassContext, Any, _FakeAis]:
    from mlconnector.jde.backflow import StatusBackFlow

    cfg_path = tmp_path / "jde.toml"
    cfg_path.write_text(JDE_TOML.format(state=(tmp_path / "state.json").as_posix()), encoding="utf-8")
    cfg = config_mod.load(cfg_path)
    state = State(path=cfg.state_file)
    state.set_entry("work_orders", "5001|WO", {"issue": "PROC-3", "id": "10003", "status": "40"})
    ctx = PassContext("jde-jira", state, Audit(None, Redactor(), "jde-jira"))
    ais = _FakeAis(cfg.jde, jde_status)
    back = StatusBackFlow(ctx, ais, cfg.jde, state.extra.setdefault("jde-jira", {}), changes=None,  # type: ignore[arg-type]
                          me=lambda: "acc-connector", kind="jira_status", watermark="jde-jira.backflow")
    return ctx, back, ais


def _change(n: int) -> dict[str, Any]:
    return {"change_id": f"10003:{n}", "issue": "PROC-3", "source": "work_orders", "order": "5001|WO",
            "order_number": "5001", "order_type": "WO", "from": "In Progress", "to": "Blocked", "code": "HD",
            "author": "acc-planner", "created_ms": 1767225600000 + n}


def test_a_pending_post_that_jde_applied_and_a_jde_user_moved_on_is_not_posted_again(tmp_path: Path) -> None:
    # User-visible consequence: a pass is killed after the orchestration put work order 5001 on hold (HD) but
    # before the state was saved; before the next pass a planner closes the order in JDE (90). The next pass
    # finds the change pending, sees 90 (not HD) and calls the orchestration a second time: the closed work
    # order is put back on hold, undoing the planner's change, and JDE runs the orchestration twice.
    ctx, back, ais = _backflow(tmp_path, jde_status="90")
    back.book["posted"]["10003:1"] = {**_change(1), "state": "pending"}
    back.resolve_pending()
    assert ais.calls == [] and ais.status == "90"


def test_a_pending_post_jde_shows_is_settled_without_a_call_and_one_it_lacks_is_posted(tmp_path: Path) -> None:
    # Held: a kill after the call took effect is settled by reading JDE (no second call); a kill before the
    # call is posted once.
    (tmp_path / "took").mkdir()
    ctx, back, ais = _backflow(tmp_path / "took", jde_status="HD")
    back.book["posted"]["10003:1"] = {**_change(1), "state": "pending"}
    back.resolve_pending()
    assert ais.calls == [] and back.book["posted"]["10003:1"]["state"] == "done"
    assert State.load(ctx.state.path).extra["jde-jira"]["posted"]["10003:1"]["state"] == "done"
    (tmp_path / "not").mkdir()
    ctx, back, ais = _backflow(tmp_path / "not", jde_status="40")
    back.book["posted"]["10003:2"] = {**_change(2), "state": "pending"}
    back.resolve_pending()
    assert len(ais.calls) == 1 and back.book["posted"]["10003:2"]["state"] == "done"


def test_a_status_check_that_fails_during_replay_spares_the_other_queued_changes(tmp_path: Path) -> None:
    # User-visible consequence: `replay retry --all` (or a pass's auto-replay) meets a queued change left
    # pending by a lost answer; JDE's browse of that order fails (a 500, a busy AIS server): the whole
    # replay stops with an error, and every other queued status change waits for another run.
    ctx, back, ais = _backflow(tmp_path, jde_status="40")
    back.book["posted"]["10003:1"] = {**_change(1), "state": "pending"}
    back.book["posted"]["10003:2"] = {**_change(2), "state": "failed"}
    first = ctx.state.enqueue("jira_status", "10003:1", _change(1), "lost answer", "", what="status")
    second = ctx.state.enqueue("jira_status", "10003:2", _change(2), "refused", "", what="status")
    ais.fail_browse.append(RemoteError("AIS answered 500", system="JD Edwards", status=500))
    ok, bad = ctx.replay([first, second], back.retry)
    assert (ok, bad) == (1, 1) and len(ais.calls) == 1


def test_two_unmappable_comments_of_one_record_are_both_queued(tmp_path: Path) -> None:
    # User-visible consequence: two comments on purchase order PO1 arrive with a broken LAST_DTTM_UPDATE
    # (or a comments query without COMMENT_ID): `replay list` shows one item, the second overwrote the
    # first, and the window has moved past both; once the admin fixes the rows, `replay retry` brings
    # back at most one of them: the other comment never reaches the issue.
    from mlconnector.mapping import map_comment
    from mlconnector.pairs.peoplesoft_jira import _row_id, waiting

    ctx = _comment_ctx(tmp_path)
    ctx.state.set_entry("purchase_orders", "US001|PO1", {"issue": "PROC-9"})
    rows = [{"BUSINESS_UNIT": "US001", "PO_ID": "PO1", "COMMENT_ID": cid, "COMMENTS": f"note {cid}",
             "LAST_DTTM_UPDATE": "31/02/2026"} for cid in ("1", "2")]
    cw = CommentWriter(ctx, _FakeJira(), max_workers=1)  # type: ignore[arg-type]
    cw.write("purchase_orders", rows, map_comment, lambda row: _row_id(row, "purchase_orders"),
             lambda c: waiting("purchase_orders", c))
    assert ctx.result.kind("purchase_orders").failed == 2
    assert len([i for i in ctx.state.replay if i["what"] == "comment"]) == 2


# -- replay: rows read again before `replay retry` (sync/flows.py) ---------------------------------------
class _FakePs:
    """PS Query as the refresh reads it: ``read_window`` of a query, or a failure."""

    def __init__(self, rows: dict[str, list[dict[str, Any]]], fail: Exception | None = None) -> None:
        self.rows = rows
        self.fail = fail
        self.reads: list[tuple[str, datetime, datetime]] = []

    def read_window(self, query: str, start: datetime, end: datetime) -> Any:
        self.reads.append((query, start, end))
        if self.fail is not None:
            raise self.fail
        yield list(self.rows.get(query, [])), end


def _ps_pass(tmp_path: Path, ps: _FakePs) -> Any:
    from mlconnector.pairs import peoplesoft_jira

    text = (ROOT / "examples" / "config.toml").read_text(encoding="utf-8")
    text = text.replace('instance = "acme-prod"', f'instance = "acme-prod"\nstate_file = '
                        f'{json.dumps((tmp_path / "state.json").as_posix())}', 1)
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    cfg = config_mod.load(tmp_path / "config.toml")
    state = State(path=cfg.state_file)
    audit = Audit(tmp_path / "audit.jsonl", Redactor(), "peoplesoft-jira")
    return peoplesoft_jira.make_pass(cfg, (ps, object(), {}), state, audit)


def _po_comment(cid: str, text: str, stamp: str) -> dict[str, Any]:
    return {"BUSINESS_UNIT": "US001", "PO_ID": "PO1", "COMMENT_ID": cid, "COMMENTS": text, "OPRID": "VP1",
            "LAST_DTTM_UPDATE": stamp}


def test_replay_retry_sends_the_current_version_of_a_queued_comment(tmp_path: Path) -> None:
    # Held: the refresh keys comment rows as the comment writer queues them (record key + comment id), so a
    # comment edited in PeopleSoft after it failed is sent as it reads now, not as it was queued.
    old = _po_comment("7", "draft", "2026-03-01T10:00:00-0000")
    new = _po_comment("7", "final wording", "2026-03-02T10:00:00-0000")
    other = _po_comment("8", "another", "2026-03-02T11:00:00-0000")
    ps = _FakePs({"ML_PO_COMMENTS": [other, new]})
    steps = _ps_pass(tmp_path, ps)
    item = steps.ctx.state.enqueue("purchase_orders", comment_key("US001|PO1", "7"), old, "waits", what="comment")
    flows.before_replay(steps, [item])
    assert item["row"] == new
    [(query, start, _end)] = ps.reads
    assert query == "ML_PO_COMMENTS" and start < datetime(2026, 3, 1, 10, tzinfo=UTC)  # from the queued stamp


def test_replay_retry_goes_on_with_the_queued_rows_when_peoplesoft_cannot_be_read(tmp_path: Path) -> None:
    # Held: a refresh that fails is audited (redacted) and the rows are retried as they were queued.
    old = _po_comment("7", "draft", "2026-03-01T10:00:00-0000")
    steps = _ps_pass(tmp_path, _FakePs({}, fail=RemoteError("PeopleSoft answered 500", system="PeopleSoft")))
    item = steps.ctx.state.enqueue("purchase_orders", comment_key("US001|PO1", "7"), old, "waits", what="comment")
    flows.before_replay(steps, [item])
    steps.ctx.audit.close()
    assert item["row"] == old
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["action"] for x in lines] == ["refresh_failed"]
