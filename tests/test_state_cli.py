"""`mlconnector state`: where things are, what the state holds, and moving a watermark back on purpose."""

from __future__ import annotations

import json

from conftest import Env

from mlconnector.errors import EXIT_CONFIG, EXIT_OK
from mlconnector.state import State

SYNC = ("sync", "peoplesoft-jira")


def test_show_set_watermark_and_forget(sandbox_env: Env) -> None:
    env = sandbox_env
    assert env.cli(*SYNC).returncode == EXIT_OK
    shown = json.loads(env.cli("state", "show", "--json").stdout)
    assert shown["links"]["purchase_orders"] == len(env.box.ps.keys("purchase_orders"))
    assert "purchase_orders" in shown["watermarks"] and shown["pending"] == {} and shown["queue"] == {}
    assert set(shown["sites"]) == {"jira", "peoplesoft"}

    moved = env.cli("state", "set-watermark", "purchase_orders", "2020-01-01")
    assert moved.returncode == EXIT_OK, moved.stderr
    assert State.load(env.state_file).watermarks["purchase_orders"].startswith("2020-01-01")
    reread = json.loads(env.cli(*SYNC, "--json").stdout)
    assert reread["counts"]["purchase_orders"]["read"] == len(env.box.ps.keys("purchase_orders"))
    assert reread["counts"]["purchase_orders"]["created"] == 0  # a re-read finds everything in step

    assert env.cli("state", "forget", "vouchers").returncode == EXIT_OK
    assert "vouchers" not in State.load(env.state_file).watermarks
    unknown = env.cli("state", "set-watermark", "nonsense", "2020-01-01")
    assert unknown.returncode == EXIT_CONFIG and "purchase_orders" in unknown.stderr
    assert "Traceback" not in unknown.stderr
