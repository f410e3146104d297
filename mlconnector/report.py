"""What the user sees: rich tables and progress on a terminal, quiet plain text for cron, JSON for machines."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import typer

COLUMNS = ("read", "remapped", "created", "adopted", "updated", "unchanged", "transitioned", "commented", "posted",
           "failed", "queued")


def is_tty() -> bool:
    return sys.stdout.isatty()


@contextlib.contextmanager
def progress_for(as_json: bool) -> Iterator[Any]:
    if as_json or not is_tty():
        yield lambda *a, **k: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("starting", total=None)
        totals: dict[str, int] = {}

        def progress(event: str, **data: Any) -> None:
            if event == "kind":
                bar.update(task, description=f"reading {data['kind']}")
            elif event == "read":
                totals[data["kind"]] = totals.get(data["kind"], 0) + data["n"]
                bar.update(task, description=f"{data['kind']}: {totals[data['kind']]} rows")

        yield progress


def plan_lines(plan: list[dict[str, Any]]) -> list[str]:
    """One line per planned action: `create purchase_orders US001|0000000123 (label ..., status Approved)`."""
    out = []
    for p in plan:
        detail = {k: v for k, v in p.items() if k not in ("kind", "key", "action")}
        shown = ", ".join(f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in detail.items())
        out.append(f"{p['action']} {p['kind']} {p['key']}" + (f" ({shown})" if shown else ""))
    return out


def print_result(result: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    _print_summary(result)
    if result.dry_run:
        lines = plan_lines(result.plan)
        for line in lines:
            typer.echo(line)
        typer.echo(f"PLAN: {len(lines)} action(s); nothing was written." if lines else
                   "PLAN: nothing to do; nothing was written.")


def _print_summary(result: Any) -> None:
    counts = {k: asdict(v) for k, v in result.counts.items()}
    prefix = "DRY RUN (nothing written): " if result.dry_run else ""
    if is_tty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{prefix}sync {result.pair}")
        table.add_column("kind")
        for c in COLUMNS:
            table.add_column(c, justify="right")
        for kind, c in counts.items():
            table.add_row(kind, *[str(c[col]) for col in COLUMNS])
        console = Console()
        console.print(table)
        for f in result.failures[:20]:
            console.print(f"[yellow]failed[/] {f['kind']} {f['key']}: {f['error']}", markup=True, highlight=False)
        if len(result.failures) > 20:
            console.print(f"... and {len(result.failures) - 20} more (mlconnector replay list)")
        if result.fatal:
            console.print(f"[red]Pass stopped:[/] {result.fatal}", highlight=False)
        console.print(f"{result.queue_size} item(s) in the replay queue; {result.seconds:.1f} s.")
        return
    # Plain, for cron, which mails whatever is printed: nothing at all when nothing changed and nothing failed;
    # otherwise one line per kind that changed, failures grouped by cause, and the stop reason.
    lines = [f"{prefix}{kind}: " + ", ".join(f"{col} {c[col]}" for col in COLUMNS if c[col])
             for kind, c in counts.items() if any(c[col] for col in COLUMNS if col not in QUIET)]
    lines += failure_groups(result.failures)
    for line in lines:
        typer.echo(line)
    for e in result.errors[1:]:
        typer.echo(f"Error ({e['kind']}): {e['error']}", err=True)
    if result.fatal:
        typer.echo(f"Error: {result.fatal}", err=True)
    if result.stopped:
        typer.echo(result.stopped)
    if lines and result.queue_size:
        typer.echo(f"{result.queue_size} item(s) in the replay queue; the full list: mlconnector replay list.")


# Counts that alone mean nothing happened (a pass re-reads its overlap every time).
QUIET = ("read", "unchanged")
EXAMPLES = 3


def failure_groups(failures: list[dict[str, str]]) -> list[str]:
    """One line per cause: how many records failed for it, and a few of their keys. The cause is the message
    with the record's own key taken out, so 500 records refused for one reason read as one problem."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for f in failures:
        key = f["key"]
        cause = f["error"]
        for form in {key, key.replace("|", "/"), key.replace("|", "-"), key.replace("|", " ")}:
            if form:
                cause = cause.replace(form, "<key>")
        groups.setdefault((f["kind"], f.get("what", "record"), cause), []).append(key)
    out = []
    for (kind, what, cause), keys in sorted(groups.items(), key=lambda g: -len(g[1])):
        shown = ", ".join(keys[:EXAMPLES]) + (f" and {len(keys) - EXAMPLES} more" if len(keys) > EXAMPLES else "")
        out.append(f"failed {len(keys)} {kind} {what}(s) ({shown}): {cause}")
    return out


def print_checks(checks: list[Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"ok": not any(c.blocking for c in checks), "checks": [asdict(c) for c in checks]}))
        return
    if is_tty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title="mlconnector ping")
        for col in ("system", "check", "result", "detail / fix"):
            table.add_column(col)
        for c in checks:
            table.add_row(c.system, c.name, "[green]ok[/]" if c.ok else "[yellow]WARNING[/]" if c.warning else
                          "[red]FAILED[/]",
                          c.detail if c.ok else f"{c.detail}\nFix: {c.fix}" if c.fix else c.detail)
        Console().print(table)
        return
    for c in checks:
        line = f"{'ok    ' if c.ok else 'WARN  ' if c.warning else 'FAILED'} {c.system}: {c.name}"
        if c.detail:
            line += f" - {c.detail}"
        if not c.ok and c.fix:
            line += f" Fix: {c.fix}"
        typer.echo(line)


def print_queue(items: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in i.items() if k not in ("row", "raw")} for i in items],
                              ensure_ascii=False))
        return
    if not items:
        typer.echo("The replay queue is empty.")
        return
    for i in items:
        typer.echo(f"{i['id']}  {i['kind']:<16} {i.get('what', 'record'):<8} {i['key']:<28} attempts "
                   f"{i['attempts']}  last {i['last_failed'][:19]}  {i['error'][:100]}")


def print_item(item: dict[str, Any], as_json: bool) -> None:
    from mlconnector.audit import redact

    item = {k: redact(v) if isinstance(v, str) else v for k, v in item.items()}
    if as_json:
        typer.echo(json.dumps(item, ensure_ascii=False))
        return
    for k in ("id", "what", "kind", "key", "attempts", "first_failed", "last_failed", "error"):
        typer.echo(f"{k}: {item.get(k)}")
    typer.echo("row: " + json.dumps(item.get("row"), ensure_ascii=False))
    if item.get("raw"):
        typer.echo("raw remote answer:\n" + item["raw"])


def print_replay(result: Any, ok: int, bad: int, as_json: bool) -> None:
    if as_json:
        d = result.to_dict()
        d.update(succeeded=ok, still_failing=bad)
        typer.echo(json.dumps(d, ensure_ascii=False))
        return
    typer.echo(f"Replayed {ok} item(s); {bad} still failing; {result.queue_size} left in the queue.")
    for f in result.failures[:50]:
        typer.echo(f"failed {f['kind']} {f['key']}: {f['error']}")
    if result.fatal:
        typer.echo(f"Error: {result.fatal}", err=True)


def print_secrets(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        mark = "needed" if r["needed"] else "      "
        typer.echo(f"{r['name']:<26} {mark}  {r['source']:<22} (env {r['env']})")
