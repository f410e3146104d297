"""Command line: a thin layer over runner/ping/replay. Heavy modules are imported inside commands so
`mlconnector --help` stays fast (no requests, zeep or tenacity at start-up)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mlconnector import __version__
from mlconnector.errors import (
    EXIT_CODES,
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_UNREACHABLE,
    ConfigError,
    ConnectorError,
)

app = typer.Typer(
    name="mlconnector",
    help="Keeps PeopleSoft and JD Edwards in step with Jira. Each 'sync' runs one pass and exits (made for cron).",
    epilog="Exit codes: " + "; ".join(f"{code} = {meaning}" for code, meaning in EXIT_CODES.items()) + ".",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    # Plain help: rich's help renderer alone costs ~150 ms of start-up.
    rich_markup_mode=None,
)
sync_app = typer.Typer(help="Run one sync pass for an integration pair.", no_args_is_help=True)
replay_app = typer.Typer(help="List, show, retry or drop records queued after a failure.", no_args_is_help=True)
secrets_app = typer.Typer(help="Store secrets in the OS keyring (never in the config file).", no_args_is_help=True)
sandbox_app = typer.Typer(help="Loopback simulators of PeopleSoft, JD Edwards and Jira, to try a configuration.",
                          no_args_is_help=True)
auth_app = typer.Typer(help="One-time authorization steps.", no_args_is_help=True)
app.add_typer(sync_app, name="sync")
app.add_typer(replay_app, name="replay")
app.add_typer(secrets_app, name="secrets")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(auth_app, name="auth")
webhook_app = typer.Typer(help="Jira webhook receiver for near-real-time back-flow (polling stays the safety net).",
                          no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")
cxml_app = typer.Typer(help="JAGGAER cXML receiver (OrderRequest / InvoiceDetailRequest pushed instead of REST).",
                       no_args_is_help=True)
app.add_typer(cxml_app, name="cxml")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Config file (default: $MLCONNECTOR_CONFIG, "
                                                 "else config.toml in the user config dir).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log each HTTP request and record action.")]
RefreshWsdlOpt = Annotated[bool, typer.Option("--refresh-wsdl", help="Fetch the WSDLs of PeopleSoft CI services again "
                                              "instead of using the on-disk cache.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlconnector {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colour on a terminal (as NO_COLOR=1 does).")] = False,
) -> None:
    """ml-connector: ERP <-> Jira, one idempotent pass at a time."""
    if no_color:
        import os

        os.environ["NO_COLOR"] = "1"  # rich honours it everywhere


def _setup_logging(verbose: bool) -> None:
    from mlconnector.audit import GLOBAL, RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(GLOBAL))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])


def _fail(exc: ConnectorError, as_json: bool) -> NoReturn:
    from mlconnector.audit import redact

    message = redact(exc.message)
    if as_json:
        typer.echo(json.dumps({"status": "error", "exit_code": exc.exit_code, "error": message}))
    else:
        typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(exc.exit_code)


def _load(config: Path | None) -> Any:
    from mlconnector import config as config_mod

    return config_mod.load(config)


def _parse_since(since: str | None) -> datetime | None:
    if since is None:
        return None
    try:
        d = datetime.fromisoformat(since)
    except ValueError:
        raise ConfigError(f"--since {since!r} is not a date; write it as YYYY-MM-DD or YYYY-MM-DDTHH:MM.") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _guard(as_json: bool, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Run fn; turn any ConnectorError into its message and exit code, never a traceback."""
    try:
        return fn(*args, **kwargs)
    except ConnectorError as exc:
        _fail(exc, as_json)
    except KeyboardInterrupt:
        typer.echo("Interrupted. The state file holds everything finished so far; the next run goes on from there.",
                   err=True)
        raise typer.Exit(130) from None
    except OSError as exc:
        if type(exc).__module__.split(".")[0] in ("requests", "urllib3"):
            # requests' exceptions are OSErrors: one that slipped past the HTTP policy is a network
            # failure, not a disk problem.
            _fail(ConnectorError(f"Network error: {exc.__class__.__name__}. Check the address, the network path "
                                 f"and any proxy; the next run goes on from the last saved state.",
                                 exit_code=EXIT_UNREACHABLE), as_json)
        _fail(ConnectorError(f"File system error: {exc}. Check that the state and audit directories are writable "
                             f"and the disk is not full.", exit_code=EXIT_CONFIG), as_json)


# -- sync -----------------------------------------------------------------------------------------
def _sync_command(spec: Any) -> Any:
    """`sync <pair>`: one command per registered pair, all with the same options."""

    def command(
        config: ConfigOpt = None,
        dry_run: Annotated[bool, typer.Option("--plan", "--dry-run", help="Read both sides and show per record "
                                              "what a pass would do; write nothing anywhere (no state, no audit "
                                              "line).")] = False,
        since: Annotated[str | None, typer.Option("--since", help="Re-read from this date (YYYY-MM-DD) instead of the "
                                                  "watermark; other watermarks are not touched.")] = None,
        # A default rather than an annotation: annotations are evaluated later, without this closure.
        kind: list[str] | None = typer.Option(None, "--kind", help=f"Only these entities: {', '.join(spec.kinds)} "
                                              f"(repeatable)."),
        as_json: JsonOpt = False,
        verbose: VerboseOpt = False,
        refresh_wsdl: RefreshWsdlOpt = False,
    ) -> None:
        _setup_logging(verbose)
        from mlconnector import report

        def run() -> Any:
            from mlconnector.runner import sync

            cfg = _load(config)
            for k in kind or []:
                if k not in spec.kinds:
                    raise ConfigError(f"--kind {k!r} is not an entity of {spec.name}; use one of: "
                                      f"{', '.join(spec.kinds)}.")
            with report.progress_for(as_json) as progress:
                return sync(spec.name, cfg, dry_run=dry_run, since=_parse_since(since), kinds=kind or None,
                            progress=progress, refresh_wsdl=refresh_wsdl)

        result = _guard(as_json, run)
        report.print_result(result, as_json)
        raise typer.Exit(result.exit_code)

    command.__doc__ = spec.help
    return command


def _register_sync_commands() -> None:
    from mlconnector.registry import PAIRS

    for spec in PAIRS.values():
        sync_app.command(spec.name)(_sync_command(spec))


_register_sync_commands()


@webhook_app.command("serve")
def webhook_serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (put a TLS reverse proxy in front).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0-65535; 0: any free port).",
                                      min=0, max=65535)] = 8765,
    path: Annotated[str, typer.Option(help="URL path Jira posts to.")] = "/jira/webhook",
    verbose: VerboseOpt = False,
) -> None:
    """Receive Jira webhooks (X-Hub-Signature verified) and queue them for the next sync jde-jira pass."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlconnector.webhook import serve

    _guard(False, lambda: serve(_load(config), host=host, port=port, path=path, echo=typer.echo))


@webhook_app.command("procore-serve")
def webhook_procore_serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (put a TLS reverse proxy in front).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0-65535; 0: any free port).",
                                      min=0, max=65535)] = 8766,
    path: Annotated[str, typer.Option(help="URL path Procore posts to.")] = "/procore/webhook",
    verbose: VerboseOpt = False,
) -> None:
    """Receive Procore webhooks (shared-secret Authorization header) and queue the records they name for the next
    sync peoplesoft-procore pass."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlconnector.procore.webhook import serve

    _guard(False, lambda: serve(_load(config), host=host, port=port, path=path, echo=typer.echo))


@webhook_app.command("procore-register")
def webhook_procore_register(
    url: Annotated[str, typer.Option(help="The public https URL of the receiver (your TLS proxy).")],
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Create (or update) the Procore hook of [procore] webhook_namespace and its triggers; safe to run again."""
    _setup_logging(verbose)

    def go() -> dict[str, Any]:
        from mlconnector.credentials import SecretStore
        from mlconnector.procore.client import SECRET as CLIENT_SECRET
        from mlconnector.procore.ping import open_client
        from mlconnector.procore.webhook import SECRET, register

        cfg = _load(config)
        if "procore" not in cfg.sections:
            from mlconnector.errors import ConfigError

            raise ConfigError(f"{cfg.path} has no [procore] section; copy it from examples/peoplesoft-procore.toml.")
        pcfg = cfg.sections["procore"]
        store = SecretStore(cfg.instance)
        client = open_client(pcfg, cfg.instance, store.get(CLIENT_SECRET))
        try:
            return register(client, url, store.get(SECRET), namespace=pcfg.webhook_namespace,
                            api_version=pcfg.webhook_api_version, resources=pcfg.webhook_resources,
                            events=pcfg.webhook_events)
        finally:
            client.close()

    out = _guard(False, go)
    typer.echo(f"Procore hook {out['hook']} ({'created' if out['created'] else 'already there, secret updated'}); "
               f"{out['triggers_added']} trigger(s) added.")


@cxml_app.command("serve")
def cxml_serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (put a TLS reverse proxy in front).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0-65535; 0: any free port).",
                                      min=0, max=65535)] = 8766,
    path: Annotated[str, typer.Option(help="URL path JAGGAER posts cXML to.")] = "/jaggaer/cxml",
    verbose: VerboseOpt = False,
) -> None:
    """Receive JAGGAER cXML (SharedSecret verified) and spool it for the next sync peoplesoft-jaggaer pass."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlconnector.jaggaer.cxml import serve

    _guard(False, lambda: serve(_load(config), host=host, port=port, path=path, echo=typer.echo))


# -- ping -----------------------------------------------------------------------------------------
@app.command()
def ping(config: ConfigOpt = None, as_json: JsonOpt = False, verbose: VerboseOpt = False,
         refresh_wsdl: RefreshWsdlOpt = False) -> None:
    """Check each configured system: reachability, credentials, queries, Jira project, fields, statuses."""
    _setup_logging(verbose)
    from mlconnector import report
    from mlconnector.ping import run_ping

    checks = _guard(as_json, lambda: run_ping(_load(config), refresh_wsdl=refresh_wsdl))
    report.print_checks(checks, as_json)
    raise typer.Exit(3 if any(c.blocking for c in checks) else 0)


# -- replay ---------------------------------------------------------------------------------------
def _state(config: Path | None) -> Any:
    from mlconnector.runner import open_state

    cfg = _load(config)
    return cfg, open_state(cfg, locked=False)


@replay_app.command("list")
def replay_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show the queued records."""
    from mlconnector import report

    _cfg, state = _guard(as_json, _state, config)
    report.print_queue(state.replay, as_json)


@replay_app.command("show")
def replay_show(item_id: Annotated[str, typer.Argument(help="Queue item id (from 'replay list').")],
                config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show one queued record with its error and the raw remote answer."""
    from mlconnector import report

    _cfg, state = _guard(as_json, _state, config)
    item = state.find_replay(item_id)
    if item is None:
        _fail(ConfigError(f"No queued item {item_id!r}. 'mlconnector replay list' shows the ids."), as_json)
    report.print_item(item, as_json)


@replay_app.command("retry")
def replay_retry(item_ids: Annotated[list[str] | None, typer.Argument(help="Item ids; none with --all.")] = None,
                 all_: Annotated[bool, typer.Option("--all", help="Retry every queued item.")] = False,
                 config: ConfigOpt = None, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Retry queued records now (all, or the ones named)."""
    _setup_logging(verbose)
    from mlconnector import report

    if not item_ids and not all_:
        _fail(ConfigError("Name the items to retry (ids from 'mlconnector replay list') or pass --all."), as_json)

    def run() -> Any:
        from mlconnector.runner import replay_items

        return replay_items(_load(config), None if all_ else list(item_ids or []))

    result, ok, bad = _guard(as_json, run)
    report.print_replay(result, ok, bad, as_json)
    raise typer.Exit(result.exit_code)


@replay_app.command("drop")
def replay_drop(item_ids: Annotated[list[str] | None, typer.Argument(help="Item ids; none with --all.")] = None,
                all_: Annotated[bool, typer.Option("--all", help="Drop every queued item.")] = False,
                config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Remove queued records without retrying them (the drop is written to the audit trail)."""
    if not item_ids and not all_:
        _fail(ConfigError("Name the items to drop (ids from 'mlconnector replay list') or pass --all."), as_json)

    def run() -> int:
        from mlconnector.audit import Audit, Redactor
        from mlconnector.runner import open_state
        from mlconnector.state import run_lock

        cfg = _load(config)
        with run_lock(cfg.state_file):
            state = open_state(cfg, locked=True)
            keep, dropped = [], []
            for item in state.replay:
                (dropped if all_ or item["id"] in (item_ids or []) else keep).append(item)
            missing = set(item_ids or []) - {i["id"] for i in dropped}
            if missing:
                raise ConfigError(f"No queued item {sorted(missing)[0]!r}; nothing was dropped. See 'replay list'.")
            audit = Audit(cfg.audit_file, Redactor(), "peoplesoft-jira")
            for item in dropped:
                audit.write("dropped", item["kind"], item["key"], what=item.get("what", "record"))
            audit.close()
            state.replay = keep
            state.save()
            return len(dropped)

    n = _guard(as_json, run)
    typer.echo(json.dumps({"status": "ok", "dropped": n}) if as_json else f"Dropped {n} queued item(s).")


# -- state ----------------------------------------------------------------------------------------
state_app = typer.Typer(help="Where the state lives, what it holds; moving, rebuilding and binding it.",
                        no_args_is_help=True)
app.add_typer(state_app, name="state")


@state_app.command("path")
def state_path(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print where the state file and the audit trail of this configuration are."""
    cfg = _guard(as_json, _load, config)
    paths = {"state_file": str(cfg.state_file), "audit_file": str(cfg.audit_file), "instance": cfg.instance}
    typer.echo(json.dumps(paths) if as_json else "\n".join(f"{k}: {v}" for k, v in paths.items()))


@state_app.command("show")
def state_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show the pairs, sites, watermarks, link and pending counts and the queue summary of this configuration."""
    from mlconnector.runner import pairs_held

    _cfg, state = _guard(as_json, _state, config)
    info = state.summary()
    info["pairs"] = pairs_held(state)  # as recorded, or as a state of an earlier release shows them
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"state: {info['path']}")
    typer.echo(f"pairs: {', '.join(info['pairs']) or 'none'}")
    for title in ("sites", "watermarks", "links", "pending", "queue"):
        typer.echo(f"{title}:" + ("" if info[title] else " none"))
        for k, v in info[title].items():
            typer.echo(f"  {k}: {v}")


def _edit_state(config: Path | None, change: Any) -> Any:
    """Change the state under the run lock (no pass runs meanwhile) and save it atomically."""
    from mlconnector.runner import open_state
    from mlconnector.state import run_lock

    cfg = _load(config)
    with run_lock(cfg.state_file):
        state = open_state(cfg, locked=True)
        out = change(state)
        state.save()
        return out


@state_app.command("set-watermark")
def state_set_watermark(
    name: Annotated[str, typer.Argument(help="A watermark from 'state show' (e.g. purchase_orders, jde.work_orders).")],
    when: Annotated[str, typer.Argument(help="The new watermark: YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC unless an "
                                             "offset is given).")],
    config: ConfigOpt = None, as_json: JsonOpt = False,
) -> None:
    """Move a watermark (back, to re-read a period; records already in step are found unchanged)."""
    from mlconnector.state import iso

    def change(state: Any) -> str:
        if name not in state.watermarks:
            known = ", ".join(sorted(state.watermarks)) or "none yet (run a pass first)"
            raise ConfigError(f"No watermark {name!r} in this state. Known: {known}.")
        old = state.watermarks[name]
        state.watermarks[name] = iso(_parse_since(when))  # type: ignore[arg-type]
        return old

    old = _guard(as_json, _edit_state, config, change)
    typer.echo(json.dumps({"status": "ok", "watermark": name, "was": old}) if as_json
               else f"{name}: {old} -> {when}. The next pass reads from there (less the overlap).")


@state_app.command("forget")
def state_forget(
    name: Annotated[str, typer.Argument(help="A watermark from 'state show'.")],
    config: ConfigOpt = None, as_json: JsonOpt = False,
) -> None:
    """Drop a watermark: the next pass reads that entity again from initial_since (links are kept, so records
    already in step are found unchanged, and lookups prevent duplicates)."""

    def change(state: Any) -> str:
        if name not in state.watermarks:
            raise ConfigError(f"No watermark {name!r} in this state. Known: {', '.join(sorted(state.watermarks))}.")
        return state.watermarks.pop(name)

    old = _guard(as_json, _edit_state, config, change)
    typer.echo(json.dumps({"status": "ok", "forgot": name, "was": old}) if as_json
               else f"Forgot {name} (was {old}); the next pass reads it from initial_since.")


@state_app.command("unlink")
def state_unlink(
    item_id: Annotated[str, typer.Argument(help="The queued record's item id (from 'replay list').")],
    config: ConfigOpt = None, as_json: JsonOpt = False,
) -> None:
    """Forget the link of one queued record whose target document was deleted on purpose: the item stays
    queued, and its next retry treats the record as new (a lookup of its handle still precedes the create,
    so a document that does exist is adopted, never made twice). Written to the audit trail."""

    def change(state: Any) -> dict[str, str]:
        from mlconnector.audit import Audit, Redactor

        item = state.find_replay(item_id)
        if item is None:
            raise ConfigError(f"No queued item {item_id!r}; nothing was unlinked. See 'mlconnector replay list'.")
        if state.entry(item["kind"], item["key"]) is None:
            raise ConfigError(f"Queued item {item_id!r} ({item['kind']} {item['key']}) has no link to forget; "
                              f"'mlconnector replay retry {item_id}' writes it.")
        state.drop_entry(item["kind"], item["key"])
        audit = Audit(_load(config).audit_file, Redactor(), "state")
        audit.write("unlinked", item["kind"], item["key"], why="state unlink")
        audit.close()
        return {"kind": item["kind"], "key": item["key"]}

    done = _guard(as_json, _edit_state, config, change)
    typer.echo(json.dumps({"status": "ok", "unlinked": done}) if as_json
               else f"Unlinked {done['kind']} {done['key']}; 'mlconnector replay retry {item_id}' writes it again.")


@state_app.command("rebind")
def state_rebind(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Bind the state to the sites this configuration names now (after a deliberate move of a site's URL)."""

    def run() -> dict[str, str]:
        from mlconnector.runner import open_state
        from mlconnector.state import State, run_lock

        cfg = _load(config)
        with run_lock(cfg.state_file):
            old = dict(State.load(cfg.state_file).sites) if cfg.state_file.exists() else {}
            state = open_state(cfg, locked=True, rebind=True)
            state.save()
            return {k: f"{old.get(k, '(none)')} -> {v}" for k, v in state.sites.items() if old.get(k) != v}

    moved = _guard(as_json, run)
    if as_json:
        typer.echo(json.dumps({"status": "ok", "rebound": moved}))
    else:
        typer.echo("\n".join(f"{k}: {v}" for k, v in moved.items()) or "The state already names these sites.")


@state_app.command("export")
def state_export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (a 0600 file, replaced "
                                                "atomically) instead of standard output.")] = None,
    audit: Annotated[bool, typer.Option("--audit", help="Include the audit trail's lines.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Write the state (watermarks, links, queue, sites) as one JSON document, to move an installation.

    Not exported: secrets and the Jira OAuth token (set them again on the new host), and the webhook queue
    (run a pass first, which drains it)."""

    def run() -> dict[str, Any]:
        from mlconnector.moving import export_state

        return export_state(_load(config), output, with_audit=audit)

    info = _guard(False, run)
    if output is not None:
        links = sum(info["links"].values())
        extra = f", {info['audit_lines']} audit line(s)" if audit else ""
        typer.echo(f"Exported {info['state_file']} to {output}: {info['watermarks']} watermark(s), {links} "
                   f"link(s), {info['queue']} queued{extra}. On the new host: mlconnector state import {output}")


@state_app.command("import")
def state_import(
    source: Annotated[Path, typer.Argument(help="A file written by 'state export' ('-' for standard input).",
                                           show_default=False)],
    replace: Annotated[bool, typer.Option("--replace", help="Replace a state that already holds watermarks, "
                                          "links or a queue.")] = False,
    rebind: Annotated[bool, typer.Option("--rebind", help="Bind the imported state to the sites this "
                                         "configuration names (a deliberate move to new URLs).")] = False,
    config: ConfigOpt = None, as_json: JsonOpt = False,
) -> None:
    """Make an exported state this configuration's state: checked as a pass reads it (schema, layout, sites),
    then written atomically under the run lock."""

    def run() -> dict[str, Any]:
        from mlconnector.moving import import_state

        return import_state(_load(config), None if str(source) == "-" else source, replace=replace, rebind=rebind)

    info = _guard(as_json, run)
    if as_json:
        typer.echo(json.dumps({"status": "ok", **info}))
        return
    audit_note = f"; {info['audit_lines']} audit line(s) written to {info['audit_file']}" if info["audit_file"] else ""
    typer.echo(f"Imported into {info['state_file']}: {info['watermarks']} watermark(s), "
               f"{sum(info['links'].values())} link(s), {info['queue']} queued{audit_note}. "
               f"Run 'mlconnector ping' next, then a pass.")


@state_app.command("rebuild")
def state_rebuild(
    pair: Annotated[str, typer.Argument(help="The pair whose links to rebuild (as in 'sync <pair>').",
                                        show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", help="Do it: forget the pair's watermarks and run one pass.")] = False,
    config: ConfigOpt = None, as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Recreate a pair's links from the handles on its targets (the answer to a lost state): re-read everything
    from initial_since; each record found on the target is adopted, not created again. Without --yes, only the
    plan (nothing written)."""
    _setup_logging(verbose)
    from mlconnector import report
    from mlconnector.registry import PAIRS

    if pair not in PAIRS:
        _fail(ConfigError(f"No pair {pair!r}; use one of: {', '.join(PAIRS)}."), as_json)

    def run() -> Any:
        from mlconnector.moving import rebuild

        cfg = _load(config)
        with report.progress_for(as_json) as progress:
            return rebuild(pair, cfg, execute=yes, progress=progress)

    result, forgotten = _guard(as_json, run)
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "forgotten_watermarks": forgotten}, ensure_ascii=False))
        raise typer.Exit(result.exit_code)
    from mlconnector.moving import plan_lines

    what = f"forgot {len(forgotten)} watermark(s) ({', '.join(forgotten)})" if forgotten else "no watermark to forget"
    if not yes:
        typer.echo(f"Rebuild plan for {pair} ({what.replace('forgot', 'would forget')}; a full re-read from "
                   f"initial_since):")
        plan_lines(result, typer.echo)
        for line in report.failure_groups(result.failures):
            typer.echo(line)
        if result.fatal:
            typer.echo(f"Error: {result.fatal}", err=True)
        typer.echo(f"Nothing was written. To do it: mlconnector state rebuild {pair} --yes"
                   + ("" if config is None else f" --config {config}"))
    else:
        typer.echo(f"Rebuilt {pair}: {what}; one pass re-read everything from initial_since:")
        plan_lines(result, typer.echo)
        for line in report.failure_groups(result.failures):
            typer.echo(line)
        if result.fatal:
            typer.echo(f"Error: {result.fatal}", err=True)
    raise typer.Exit(result.exit_code)


# -- secrets --------------------------------------------------------------------------------------
def _store(config: Path | None) -> Any:
    from mlconnector.credentials import SecretStore

    return SecretStore(_load(config).instance)


@secrets_app.command("set")
def secrets_set(name: Annotated[str, typer.Argument(help="peoplesoft.password, jira.api_token, ...")],
                config: ConfigOpt = None,
                value_stdin: Annotated[bool, typer.Option("--stdin", help="Read the value from standard input "
                                                          "instead of a hidden prompt.")] = False) -> None:
    """Store a secret in the OS keyring (hidden prompt)."""
    from mlconnector.credentials import check_name

    _guard(False, check_name, name)
    store = _guard(False, _store, config)
    if value_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = typer.prompt(f"{name}", hide_input=True, confirmation_prompt=True)
    if not value:
        _fail(ConfigError(f"An empty value was given for {name}; nothing was stored."), False)
    _guard(False, store.set, name, value)
    typer.echo(f"Stored {name} for instance {store.instance!r} in the OS keyring.")


@secrets_app.command("delete")
def secrets_delete(name: Annotated[str, typer.Argument()], config: ConfigOpt = None) -> None:
    """Remove a secret from the OS keyring."""
    store = _guard(False, _store, config)
    removed = _guard(False, store.delete, name)
    typer.echo(f"Deleted {name}." if removed else f"{name} was not in the keyring.")


@secrets_app.command("list")
def secrets_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Which secrets are set and where they come from (never their values)."""
    from mlconnector import report
    from mlconnector.credentials import KNOWN_SECRETS, env_name, required_secrets

    def run() -> list[dict[str, Any]]:
        cfg = _load(config)
        from mlconnector.credentials import SecretStore

        store = SecretStore(cfg.instance)
        needed = set(required_secrets(cfg))
        return [{"name": n, "needed": n in needed, "source": store.where(n), "env": env_name(n),
                 "description": d} for n, d in KNOWN_SECRETS.items()]

    report.print_secrets(_guard(as_json, run), as_json)


# -- auth -----------------------------------------------------------------------------------------
@auth_app.command("jira")
def auth_jira(config: ConfigOpt = None,
              no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the address.")] = False,
              ) -> None:
    """Consent to Jira OAuth 2.0 (3LO) once; the refresh token goes to the keyring."""

    def run() -> str:
        from mlconnector.credentials import SecretStore
        from mlconnector.jira.oauth import consent, token_file_for
        from mlconnector.state import run_lock

        cfg = _load(config)
        if cfg.jira is None:
            raise ConfigError(f"{cfg.path} has no [jira] section, so there is no Jira to authorize. Copy it from "
                              f"examples/config.toml (auth = \"oauth2\", client_id, cloud_id) if this "
                              f"configuration syncs to Jira.")
        with run_lock(cfg.state_file):  # no pass may refresh the old token meanwhile
            return consent(cfg.jira, SecretStore(cfg.instance), open_browser=not no_browser, echo=typer.echo,
                           token_file=token_file_for(cfg.state_file))

    scopes = _guard(False, run)
    typer.echo(f"Jira authorized ({scopes or 'scopes not reported'}); the refresh token is stored (the keyring, "
               f"or a 0600 file next to the state file on a host without one).")


# -- sandbox and demo -----------------------------------------------------------------------------
@sandbox_app.command("serve")
def sandbox_serve(
    ps_port: Annotated[int, typer.Option(help="PeopleSoft simulator port (0 = any free port).")] = 0,
    jira_port: Annotated[int, typer.Option(help="Jira simulator port (0 = any free port).")] = 0,
    jde_port: Annotated[int, typer.Option(help="JD Edwards AIS simulator port (0 = any free port).")] = 0,
    write_config: Annotated[Path | None, typer.Option(help="Write a config file per pair pointing at the sandbox "
                                                      "(NAME.toml for peoplesoft-jira, NAME-jde.toml, "
                                                      "NAME-procurify.toml, NAME-jaggaer.toml, NAME-procore.toml).")
                                  ] = None,
    latency: Annotated[float, typer.Option(help="Seconds of latency added to every request.")] = 0.0,
) -> None:
    """Run the simulators of every system (PeopleSoft, JD Edwards, Jira, Procurify, JAGGAER, Procore) on
    127.0.0.1 until Ctrl-C."""
    from mlconnector.sandbox.run import serve

    _guard(False, serve, ps_port=ps_port, jira_port=jira_port, write_config=write_config, latency=latency,
           echo=typer.echo, jde_port=jde_port)


@app.command()
def demo(as_json: JsonOpt = False) -> None:
    """Start the sandbox and run real sync passes against it: create, no-change, status change."""
    from mlconnector.sandbox.demo import run_demo

    code = _guard(as_json, run_demo, as_json=as_json, echo=typer.echo)
    raise typer.Exit(code or EXIT_OK)


# -- reconcile ------------------------------------------------------------------------------------
@app.command()
def reconcile(
    pair: Annotated[str, typer.Argument(help="The pair to compare: peoplesoft-jira, jde-jira, "
                                                    "procurify-peoplesoft, peoplesoft-jaggaer, "
                                                    "peoplesoft-procore.")],
    config: ConfigOpt = None,
    since: Annotated[str | None, typer.Option("--since", help="Compare the records changed since this date "
                                              "(YYYY-MM-DD); default: each entity's initial_since.")] = None,
    entity: Annotated[str | None, typer.Option("--entity", help="Only this entity (purchase_orders, ...).")] = None,
    as_json: JsonOpt = False,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Also write every record's class to this CSV "
                                                  "file (for a spreadsheet).")] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Also show what a normal pass would do for the missing and "
                                      "drifted records (a plan: nothing is written; run the pass to take it).")
                   ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compare both sides of a pair record by record (read-only: writes nothing, takes no lock). Exit 0 when
    every record is in step or explained by the replay queue, 6 when records are missing, drifted or orphaned."""
    _setup_logging(verbose)
    from mlconnector import report as report_mod

    def run() -> Any:
        from mlconnector.reconcile import reconcilable
        from mlconnector.reconcile import reconcile as run_reconcile

        pairs = reconcilable()
        if pair not in pairs:
            raise ConfigError(f"reconcile {pair!r}: not a pair reconcile covers; use one of: {', '.join(pairs)}.")
        out = run_reconcile(pair, _load(config), since=_parse_since(since), entity=entity, fix=fix)
        if csv_file is not None:
            with csv_file.open("w", encoding="utf-8", newline="") as f:
                out.write_csv(f)
        return out

    from mlconnector.reconcile import print_report

    result = _guard(as_json, run)
    print_report(result, as_json=as_json, tty=report_mod.is_tty(), echo=typer.echo)
    raise typer.Exit(result.exit_code)


def _crash_report() -> str:
    """Write the traceback, redacted, to a new 0600 file of its own; return the sentence naming it.

    mkstemp creates a unique name with O_EXCL, so a file or symbolic link planted in the shared
    temporary directory is never followed or overwritten.
    """
    import os
    import tempfile
    import traceback

    from mlconnector.audit import redact

    try:
        fd, name = tempfile.mkstemp(prefix="mlconnector-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(redact(traceback.format_exc()))
    except OSError:
        return ""
    return f" The details were written to {name}."


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # a bug: still one paragraph for the user, the traceback kept in a file
        where = _crash_report()
        typer.echo(f"Internal error: {exc.__class__.__name__}. This is a bug in ml-connector, not in your setup; "
                   f"nothing beyond the last saved state was lost.{where} Please report it with that file.", err=True)
        raise SystemExit(EXIT_INTERNAL) from None
