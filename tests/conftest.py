"""Shared fixtures: a sandbox (PeopleSoft + Jira simulators on 127.0.0.1, port 0), a config file
pointing at it, and helpers that run the real CLI as a subprocess or in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from jira_openapi import load_checker  # noqa: E402

from mlconnector import config as config_mod  # noqa: E402
from mlconnector.sandbox.run import Sandbox, start_sandbox  # noqa: E402

SMALL = {"vendors": 12, "requisitions": 15, "purchase_orders": 30, "vouchers": 20}


@dataclass
class Env:
    """A sandbox plus a config file and a working directory for state and audit."""

    box: Sandbox
    dir: Path
    config: Path
    checker: Any

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}
        env.update(self.box.env())
        env["PYTHONIOENCODING"] = "utf-8"
        return env

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def audit_file(self) -> Path:
        return self.dir / "state.audit.jsonl"

    def write_config(self, extra_ps: str = "", extra_jira: str = "", text: str | None = None) -> Path:
        self.config.write_text(text if text is not None else
                               self.box.config_text(self.state_file, extra_ps=extra_ps, extra_jira=extra_jira),
                               encoding="utf-8")
        return self.config

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
            config: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `python -m mlconnector ARGS --config <config>` as cron would (stdout not a TTY)."""
        cmd = [sys.executable, "-m", "mlconnector", *args]
        if config:
            cmd += ["--config", str(self.config)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env if env is not None else self.env,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def load_config(self) -> config_mod.Config:
        return config_mod.load(self.config)

    def issues_by_label(self) -> dict[str, list[str]]:
        """Natural-key label -> issue keys carrying it (more than one would be a duplicate)."""
        out: dict[str, list[str]] = {}
        for issue in self.box.jira.all_issues():
            for label in issue["fields"].get("labels", []):
                if label.count("-") >= 3 and label.startswith("psft-"):
                    out.setdefault(label, []).append(issue["key"])
        return out

    def source_labels(self) -> set[str]:
        from mlconnector.mapping import record_label

        labels = set()
        for kind, keys in (("requisitions", ("BUSINESS_UNIT", "REQ_ID")),
                           ("purchase_orders", ("BUSINESS_UNIT", "PO_ID")),
                           ("vouchers", ("BUSINESS_UNIT", "VOUCHER_ID"))):
            for row in self.box.ps.rows(kind):
                parts = [str(row.get(k) or "").strip() for k in keys]
                if all(parts):  # a row with a blank key part is refused by the mapping: it has no issue
                    labels.add(record_label(kind, "|".join(parts)))
        return labels


def sandbox_environ(monkeypatch: pytest.MonkeyPatch, box_env: dict[str, str], cache_dir: Path | None = None) -> None:
    """A test's environment as a sandbox's CLI passes see it: no MLCONNECTOR_* of the developer's shell, the
    sandbox's secrets, and (``cache_dir``) a token and WSDL cache of the test's own."""
    for k in list(os.environ):
        if k.startswith("MLCONNECTOR_"):
            monkeypatch.delenv(k)
    for k, v in box_env.items():
        monkeypatch.setenv(k, v)
    if cache_dir is not None:
        monkeypatch.setenv("MLCONNECTOR_CACHE_DIR", str(cache_dir))


@pytest.fixture
def sandbox_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    checker = load_checker()
    validator = checker.fresh() if checker is not None else None
    box = start_sandbox(counts=SMALL, request_validator=validator)
    sandbox_environ(monkeypatch, box.env())
    env = Env(box, tmp_path, tmp_path / "config.toml", validator)
    env.write_config()
    try:
        yield env
    finally:
        box.stop()
