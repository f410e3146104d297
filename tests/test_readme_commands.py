"""README truth: every `mlconnector ...` command the README shows exists with the options it shows, and every
command line of its ```sh blocks, then every command of its prose that names ``acme.toml``, runs against the
sandbox (``acme.toml`` replaced by a sandbox config), in README order, except the few listed in SKIPPED with
the reason they cannot run here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer.main
from conftest import Env

from mlconnector.cli import app
from mlconnector.errors import EXIT_OK, EXIT_RECORDS_FAILED
from mlconnector.state import State

README = Path(__file__).parent.parent / "README.md"

# Command lines of the ```sh blocks that cannot run in a test, by their first words, and why.
SKIPPED = {
    "mlconnector secrets set": "needs a TTY for its hidden prompt and writes to the real OS keyring",
    "python3 -m venv": "creates a virtual environment and installs from the network; the demo it ends with is "
                       "test_cli_basics.py::test_the_quick_start_demo_runs_every_pair_and_passes",
}


def _sh_lines() -> list[str]:
    """Every line of a ```sh block that runs mlconnector, without its trailing comment."""
    text = README.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if "mlconnector" in line:
                out.append(line)
    return out


def _inline_commands() -> list[str]:
    """Every `mlconnector ...` code span of the README's prose (outside code blocks)."""
    prose = re.sub(r"```.*?```", "", README.read_text(encoding="utf-8"), flags=re.S)
    return sorted(set(re.findall(r"`(mlconnector [^`]*)`", prose)))


def _resolve(words: list[str]) -> str | None:
    """Why ``mlconnector WORDS`` is not a command of this CLI (a missing command or option), or None."""
    cmd: Any = typer.main.get_command(app)  # a click command (click is vendored by typer)
    path = ["mlconnector"]
    rest = list(words)
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        if name.startswith("<") or name == "...":
            return None  # a placeholder (`sync <pair>`): any subcommand
        sub = cmd.commands.get(name)
        if sub is None:
            return f"{' '.join(path)} has no command {name!r}"
        cmd, path = sub, [*path, name]
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("-") and word != "-" and word.split("=")[0] not in known:
            return f"{' '.join(path)} has no option {word}"
    return None


def test_every_readme_command_and_option_exists() -> None:
    commands = _inline_commands() + [line.split("mlconnector", 1)[1].join(("mlconnector", ""))
                                     for line in _sh_lines()]
    assert len(commands) > 20
    stale = {c: why for c in commands if (why := _resolve(shlex.split(c.split("mlconnector", 1)[1])))}
    assert stale == {}


def _enqueue(env: Env) -> str:
    state = State.load(env.state_file)
    item = state.enqueue("purchase_orders", "US001|README", {"BUSINESS_UNIT": "US001", "PO_ID": "README"},
                         "queued by the README test")
    state.save()
    return str(item["id"])


def _queued(env: Env) -> str:
    return str(State.load(env.state_file).replay[0]["id"])


def _fix_vouchers(env: Env, originals: dict[tuple[str, ...], object]) -> dict[str, str]:
    for key, value in originals.items():  # the buyer corrects the dates in PeopleSoft
        env.box.ps.touch("vouchers", key, INVOICE_DT=value)
    return {}


def _new_host(env: Env) -> None:
    env.state_file.unlink()
    env.audit_file.unlink()


def test_every_readme_command_line_runs_against_the_sandbox(sandbox_env: Env) -> None:
    env = sandbox_env
    workdir = env.dir / "cwd"
    workdir.mkdir()
    env_vars = {**env.env, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}  # never the real keyring
    # What the README's set-up steps lead to: a first pass, with two vouchers PeopleSoft sent malformed.
    bad = env.box.ps.keys("vouchers")[:2]
    originals = {tuple(r[k] for k in ("BUSINESS_UNIT", "VOUCHER_ID")): r["INVOICE_DT"]
                 for r in env.box.ps.rows("vouchers")}
    originals = {tuple(k): originals[tuple(k)] for k in bad}
    for key in bad:
        env.box.ps.corrupt("vouchers", key, "INVOICE_DT", "31/02/2024")
    first = env.cli("sync", "peoplesoft-jira")
    assert first.returncode == EXIT_RECORDS_FAILED, first.stderr

    # Set-up a line needs before it runs (keyed by its first words), and the words put in for placeholders.
    before: dict[str, Callable[[Env], dict[str, str]]] = {
        "mlconnector replay show": lambda e: {"ID": _queued(e)},
        "mlconnector replay retry": lambda e: _fix_vouchers(e, originals),
        "mlconnector replay drop": lambda e: {"ID": _enqueue(e)},
        "mlconnector state import": lambda e: (_new_host(e), {})[1],
    }
    ran, skipped = [], []
    # Then the prose's commands that name the example configuration (the others need a browser, serve until
    # Ctrl-C, or are placeholders; test_every_readme_command_and_option_exists checks those exist).
    inline = [c for c in _inline_commands() if c.endswith("--config acme.toml") or "--config acme.toml " in c]
    for line in _sh_lines() + [c for c in inline if "serve" not in c]:
        head = next((k for k in SKIPPED if line.startswith(k)), None)
        if head is not None:
            skipped.append(line)
            continue
        assert line.startswith("mlconnector "), f"not a command line the test knows how to run: {line}"
        words = shlex.split(line)[1:]
        subs = next((fn(env) for k, fn in before.items() if line.startswith(k)), {})
        words = [str(env.config) if w == "acme.toml" else subs.get(w, w) for w in words]
        proc = subprocess.run([sys.executable, "-m", "mlconnector", *words], capture_output=True, text=True,
                              env=env_vars, cwd=workdir, timeout=180, stdin=subprocess.DEVNULL)
        assert proc.returncode == EXIT_OK, f"README line failed ({proc.returncode}): {line}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        ran.append(line)
    assert len(ran) >= 17 and all(any(line.startswith(k) for line in skipped) for k in SKIPPED), (ran, skipped)


@pytest.mark.parametrize("head", sorted(SKIPPED))
def test_every_skip_is_still_needed(head: str) -> None:
    """A skip whose line left the README goes too (the list stays the list of what cannot run here)."""
    assert any(line.startswith(head) for line in _sh_lines())
