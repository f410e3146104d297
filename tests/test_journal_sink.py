"""JournalWriter against the journal CI simulator through the real CIClient (zeep, SOAP over 127.0.0.1).

The promises: each source document becomes one balanced journal, named by its reference field, its id handed
back; a second write sends nothing; an unbalanced journal is refused before any call; a lost answer, rerun,
never yields a second journal; PeopleSoft's refusal is one plain sentence with the raw fault audited.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mlconnector.audit import Audit, Redactor
from mlconnector.peoplesoft.ci import CIClient
from mlconnector.peoplesoft.journal_sink import (
    JournalLine,
    JournalNames,
    JournalWrite,
    JournalWriter,
    UnbalancedJournal,
    build_journal,
    check_balanced,
    journal_checks,
)
from mlconnector.sandbox.peoplesoft_ap_gl_ci import PS_PASSWORD, PS_USER, AccountingBox
from mlconnector.state import State
from mlconnector.sync.engine import PassContext

KIND = "direct_costs"
CREATE = "Create__CompIntfc__JOURNAL_ENTRY"


class Run:
    def __init__(self, box: AccountingBox, tmp: Path) -> None:
        self.box = box
        self.tmp = tmp

    def pass_(self, names: JournalNames | None = None) -> tuple[PassContext, JournalWriter]:
        state = State.load(self.tmp / "state.json")
        ctx = PassContext("test", state, Audit(self.tmp / "audit.jsonl", Redactor(), "test"))
        ci = CIClient(self.box.ps_config(), (PS_USER, PS_PASSWORD), cache_dir=self.tmp / "cache")
        writer = JournalWriter(ctx, ci, names)
        writer.resolve_pending(KIND)
        return ctx, writer

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in (self.tmp / "audit.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    with AccountingBox() as box:
        yield Run(box, tmp_path)


def cost(doc: int = 1234, amounts: tuple[str, ...] = ("1200.10", "99.95"), account: str = "640000",
         **kw: Any) -> JournalWrite:
    debits = [JournalLine(account, a, "OPS", "PRJ-100", f"cost line {i}") for i, a in enumerate(amounts, 1)]
    fields: dict[str, Any] = dict(key=str(doc), business_unit="US001", reference=f"procore-dc-{doc}",
                                  journal_date="2026-11-30", ledger="ACTUALS", currency="USD", debits=debits,
                                  offset=JournalLine("650000", 0, "OPS", "PRJ-100", "Procore offset"),
                                  title=f"Procore direct cost {doc}", row={"id": doc},
                                  header={"SOURCE": "PRC"})
    fields.update(kw)
    return build_journal(**fields)


def journals(box: AccountingBox, doc: int = 1234) -> list[dict[str, Any]]:
    return box.accounting.journals_with(f"procore-dc-{doc}")


def test_document_becomes_one_balanced_journal_named_by_its_reference(run: Run) -> None:
    ctx, w = run.pass_()
    posted = w.write(KIND, cost())
    assert posted is not None and posted.action == "created" and posted.id.startswith("GL")
    (journal,) = journals(run.box)
    assert journal["JOURNAL_ID"] == posted.id and posted.keys["JOURNAL_DATE"] == "2026-11-30"
    amounts = [Decimal(ln["MONETARY_AMOUNT"]) for ln in journal["JRNL_LN"]]
    assert amounts == [Decimal("1200.10"), Decimal("99.95"), Decimal("-1300.05")] and sum(amounts) == 0
    assert [ln["ACCOUNT"] for ln in journal["JRNL_LN"]] == ["640000", "640000", "650000"]
    assert {ln["PROJECT_ID"] for ln in journal["JRNL_LN"]} == {"PRJ-100"}
    assert ctx.result.counts[KIND].created == 1

    calls = sum(run.box.accounting.calls.values())
    ctx, w = run.pass_()
    again = w.write(KIND, cost())
    assert again is not None and again.id == posted.id and again.action == "unchanged"
    assert sum(run.box.accounting.calls.values()) == calls
    # A lost state: found by its reference, adopted, not entered again.
    (run.tmp / "state.json").unlink()
    ctx, w = run.pass_()
    adopted = w.write(KIND, cost())
    assert adopted is not None and adopted.id == posted.id and ctx.result.counts[KIND].adopted == 1
    assert len(journals(run.box)) == 1


def test_unbalanced_journal_is_refused_before_any_call(run: Run) -> None:
    with pytest.raises(UnbalancedJournal, match="a journal needs a debit and a credit"):
        check_balanced([JournalLine("640000", 5)], "doc 1")
    ctx, w = run.pass_()
    bad = JournalWrite("9", "US001", "procore-dc-9", "2026-11-30", "ACTUALS", "USD",
                       [JournalLine("640000", Decimal("10.00")), JournalLine("650000", Decimal("-9.99"))],
                       "Procore direct cost 9")
    assert w.write(KIND, bad) is None
    assert "does not balance (debits minus credits = 0.01)" in ctx.result.failures[0]["error"]
    assert sum(run.box.accounting.calls.values()) == 0 and not run.box.server.requests("POST")
    with pytest.raises(UnbalancedJournal, match="not an amount"):
        cost(amounts=("12.x",))


def test_decimal_arithmetic_keeps_cents_exact(run: Run) -> None:
    # 0.1 + 0.2 in floats is not 0.3; the offset must still balance the journal exactly.
    ctx, w = run.pass_()
    posted = w.write(KIND, cost(77, amounts=("0.1", "0.2")))
    assert posted is not None
    (journal,) = journals(run.box, 77)
    assert Decimal(journal["JRNL_LN"][-1]["MONETARY_AMOUNT"]) == Decimal("-0.3")


def test_lost_answer_then_rerun_gives_one_journal(run: Run) -> None:
    fault = run.box.server.faults.add(kind="drop_after", body_match=CREATE)
    ctx, w = run.pass_()
    assert w.write(KIND, cost()) is None
    assert fault.reached.is_set() and len(journals(run.box)) == 1
    assert w.write(KIND, cost()) is None  # same pass: never resent
    assert run.box.accounting.calls["CI_JOURNAL_ENTRY_C"] == 1
    ctx, w = run.pass_()
    posted = w.write(KIND, cost())
    assert posted is not None and posted.action == "adopted"
    assert posted.id == journals(run.box)[0]["JOURNAL_ID"]
    c = ctx.result.counts[KIND]
    assert (c.adopted, c.created, c.failed) == (1, 0, 0) and ctx.state.replay == []
    assert run.box.accounting.calls["CI_JOURNAL_ENTRY_C"] == 1 and len(journals(run.box)) == 1


def test_cifault_is_one_plain_sentence_and_raw_fault_is_audited(run: Run) -> None:
    ctx, w = run.pass_()
    assert w.write(KIND, cost(account="999999")) is None
    (failure,) = ctx.result.failures
    text = failure["error"]
    assert text.startswith("Procore direct cost 1234 was not posted: PeopleSoft refused the journal")
    assert "{ACCOUNT} value '999999'" in text and "\n" not in text and "Traceback" not in text
    (audited,) = [a for a in run.audit() if a["action"] == "failed"]
    assert "<CIFault" in audited["raw"]
    assert not ctx.state.pending(KIND)


def test_changed_document_after_its_journal_waits_for_a_person(run: Run) -> None:
    ctx, w = run.pass_()
    w.write(KIND, cost())
    ctx, w = run.pass_()
    assert w.write(KIND, cost(amounts=("1200.10", "100.00"))) is None
    assert "never changes a journal" in ctx.result.failures[0]["error"]
    assert len(journals(run.box)) == 1 and run.box.accounting.calls["CI_JOURNAL_ENTRY_C"] == 1


def test_configurable_names_and_ping_checks(tmp_path: Path) -> None:
    with AccountingBox(journal_ci="GL_JOURNAL_CI") as box:
        r = Run(box, tmp_path)
        names = JournalNames(ci="GL_JOURNAL_CI")
        ctx, w = r.pass_(names)
        assert w.write(KIND, cost()) is not None
        assert [c.ok for c in journal_checks(w.ci, names, "US001", "peoplesoft_procore")] == [True, True, True]
        bad = journal_checks(w.ci, JournalNames(ci="GL_JOURNAL_CI", reference="DESCR"), "US001", "peoplesoft_procore")
        assert not bad[-1].ok and "DESCR" in bad[-1].detail
