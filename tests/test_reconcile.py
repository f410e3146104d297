"""`reconcile <pair>`: both sides compared record by record against the sandbox, read-only."""

from __future__ import annotations

import json

from conftest import Env

from mlconnector.errors import EXIT_NOT_IN_STEP, EXIT_OK

SYNC = ("sync", "peoplesoft-jira")
RECONCILE = ("reconcile", "peoplesoft-jira")


def test_after_a_pass_everything_is_in_step(sandbox_env: Env) -> None:
    env = sandbox_env
    assert env.cli(*SYNC).returncode == EXIT_OK
    out = env.cli(*RECONCILE, "--json")
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    report = json.loads(out.stdout)
    print(json.dumps(report, indent=1)[:3000])
    assert report["totals"]["in_step"] == len(env.source_labels())
