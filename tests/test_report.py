"""What cron mails: nothing when nothing happened; a handful of lines naming each cause otherwise."""

from __future__ import annotations

import pytest

from mlconnector import report
from mlconnector.sync.engine import PassResult


@pytest.fixture(autouse=True)
def _not_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "is_tty", lambda: False)


def test_a_pass_that_only_re_read_its_overlap_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    result = PassResult(pair="peoplesoft-jira", queue_size=2)  # old queue items alone are no news
    result.kind("purchase_orders").read = 40
    result.kind("purchase_orders").unchanged = 40
    report.print_result(result, as_json=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_five_hundred_failures_of_one_cause_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = PassResult(pair="peoplesoft-jira", queue_size=501, exit_code=1)
    result.kind("purchase_orders").failed = 501
    for n in range(500):
        key = f"US001|{n:010d}"
        result.failures.append({"kind": "purchase_orders", "key": key, "what": "record",
                                "error": f"Purchase order {key.replace('|', '/')}: Jira rejected the issue: "
                                         f"priority 'Urgent' is not valid."})
    result.failures.append({"kind": "purchase_orders", "key": "US002|77", "what": "record",
                            "error": "Purchase order US002/77: column PO_AMT holds 'abc', which is not a number."})
    report.print_result(result, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 4, lines
    assert lines[1].startswith("failed 500 purchase_orders record(s) (US001|0000000000, US001|0000000001, "
                               "US001|0000000002 and 497 more)")
    assert "priority 'Urgent' is not valid" in lines[1]
    assert lines[2].startswith("failed 1 purchase_orders record(s) (US002|77)") and "PO_AMT" in lines[2]
    assert "replay list" in lines[-1]
