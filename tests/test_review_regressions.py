"""Regressions found by an adversarial review of the sync engine, the sink's lookups and the state's binding
and migration. Each test failed on the reviewed code; each docstring names the promise it broke.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import Env

from mlconnector.audit import Audit, Redactor
from mlconnector.errors import EXIT_OK, RecordError, StateError
from mlconnector.jira.sink import KEY_PROPERTY
from mlconnector.mapping import natural_key, record_label
from mlconnector.state import State
from mlconnector.sync.engine import PassContext

SYNC = ("sync", "peoplesoft-jira")
OLD_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")  # mapping.LABEL_SAFE as of 47e3a35


def _old_label(kind_prefix: str, key: str) -> str:
    """record_label as every version before today wrote it (47e3a35: mapping.record_label)."""
    return OLD_LABEL_SAFE.sub("_", f"{kind_prefix}-{key.replace('|', '-')}")[:255]


def _run(cfg: Path, run_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlconnector", *args, "--config", str(cfg)], capture_output=True,
                          text=True, env=run_env, timeout=120, stdin=subprocess.DEVNULL)


# -- 1. duplicates: issues made by earlier versions are not found by their label ----------------------
def test_state_loss_after_upgrade_duplicates_issues_whose_key_is_not_plain(sandbox_env: Env) -> None:
    """Promise broken: "a lost, deleted or older state file leads to adoption of the issues already in Jira,
    never to second issues" (jira/sink.py, README 'what state loss costs').

    Earlier versions labelled a record LABEL_SAFE.sub('_', 'psft-po-BU-PO-7'); today's handle() keeps that
    form only for keys made of [A-Za-z0-9_.] and gives every other key (a hyphen, a space, a slash, an
    accent...) a new '--<digest>' label. Labels are not in edit_fields, so the old issues keep the old label
    forever; the lookup before create searches only the new label, misses them and creates a second issue.
    """
    env = sandbox_env
    template = dict(env.box.ps.rows("purchase_orders")[0])
    template.pop("LAST_DTTM_UPDATE", None)
    bu = str(template["BUSINESS_UNIT"]).strip()
    env.box.ps.add("purchase_orders", {**template, "PO_ID": "PO-7"})  # a hyphen in a PeopleSoft id
    assert env.cli(*SYNC).returncode == EXIT_OK

    key = natural_key("purchase_orders", {"BUSINESS_UNIT": bu, "PO_ID": "PO-7"})
    new_label, old_label = record_label("purchase_orders", key), _old_label("psft-po", key)
    assert new_label != old_label  # the label changed for this key between versions
    [issue] = env.box.jira.find_by_label(new_label)
    # As the earlier version left it: its label, no key property.
    stored = env.box.jira._find(issue["key"])
    stored.fields["labels"] = sorted({*(x for x in stored.fields["labels"] if x != new_label), old_label})
    stored.properties.pop(KEY_PROPERTY, None)
    env.state_file.unlink()  # the state loss the lookups promise to survive

    assert env.cli(*SYNC).returncode == EXIT_OK
    mine = [i["key"] for i in env.box.jira.all_issues()
            if {old_label, new_label} & set(i["fields"].get("labels", []))]
    assert mine == [issue["key"]], f"second issue created for {key}: {mine}"


# -- 2. losses: same-stem configurations after the upgrade -------------------------------------------
def _plain_config(env: Env, folder: Path, jira_url: str | None = None) -> Path:
    """config.toml in ``folder`` with no instance and no state_file (the default location): as most installs."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line for line in env.box.config_text(None).splitlines()
                     if not line.startswith("state_file") and not line.startswith("instance"))
    if jira_url:
        text = text.replace(f'site = "{env.box.jira_server.url}"', f'site = "{jira_url}"')
    cfg = folder / "config.toml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def test_two_configs_named_config_toml_lose_the_second_ones_state_on_upgrade(sandbox_env: Env) -> None:
    """Promise broken: "state path follows the config's instance; legacy path migration" keeps every
    installation's state (nothing lost).

    Before today two configs /etc/x/acme/config.toml and /etc/x/beta/config.toml had their own states
    (config-<digest of path>.json). Now the default instance is the file's stem, so both map to config.json:
    the first run migrates acme's legacy file to it, and beta's legacy file is never migrated (new.exists()).
    Beta is then refused as "other sites"; following the advice (give it its own instance) makes it look for
    <instance>-<digest>.json, which does not exist either: beta starts from nothing and its replay queue
    (records whose watermark already moved past them) is gone.
    """
    env = sandbox_env
    run_env = {**env.env, "XDG_STATE_HOME": str(env.dir / "xdg-state")}
    state_dir = env.dir / "xdg-state" / "mlconnector"
    acme = _plain_config(env, env.dir / "etc" / "acme")
    beta_url = env.box.jira_server.url.replace("127.0.0.1", "localhost")  # beta's Jira: another site
    beta = _plain_config(env, env.dir / "etc" / "beta", jira_url=beta_url)

    # Yesterday: each ran on its own legacy state. Build them: run, then move to the legacy name.
    def digest(cfg: Path) -> str:
        return hashlib.sha256(str(cfg.resolve()).encode()).hexdigest()[:8]

    assert _run(beta, run_env, *SYNC).returncode == EXIT_OK
    (state_dir / "config.json").rename(state_dir / f"config-{digest(beta)}.json")
    legacy_beta = State.load(state_dir / f"config-{digest(beta)}.json")
    legacy_beta.replay.append({"id": "beta0001", "what": "record", "kind": "purchase_orders", "key": "US001|QUEUED",
                               "row": {"BUSINESS_UNIT": "US001", "PO_ID": "QUEUED"}, "error": "x", "raw": "",
                               "attempts": 5, "first_failed": "2024-01-01T00:00:00+00:00",
                               "last_failed": "2024-01-01T00:00:00+00:00"})
    legacy_beta.dirty = True
    legacy_beta.save()
    (state_dir / "config.audit.jsonl").unlink(missing_ok=True)
    assert _run(acme, run_env, *SYNC).returncode == EXIT_OK
    (state_dir / "config.json").rename(state_dir / f"config-{digest(acme)}.json")

    # Today, after the upgrade: acme runs first.
    assert _run(acme, run_env, *SYNC).returncode == EXIT_OK
    beta_run = _run(beta, run_env, *SYNC)
    if beta_run.returncode != EXIT_OK:
        # Refused as "other sites". Do what the message says: give beta its own instance name.
        assert "instance" in beta_run.stderr
        beta.write_text('instance = "beta"\n' + beta.read_text(), encoding="utf-8")
        assert _run(beta, run_env, *SYNC).returncode in (EXIT_OK, 1)
    queue = json.loads(_run(beta, run_env, "replay", "list", "--json").stdout)
    assert any(i["id"] == "beta0001" for i in queue), (
        f"beta's queued record was lost; its legacy state is stranded at "
        f"{state_dir / f'config-{digest(beta)}.json'} (exists: {(state_dir / f'config-{digest(beta)}.json').exists()})")


# -- 3. losses: a comment marker quoted anywhere counts as the comment posted -------------------------
def test_a_pending_comment_quoted_by_a_person_is_never_posted(sandbox_env: Env) -> None:
    """Promise broken: nothing lost (each PeopleSoft comment reaches its issue once).

    A pending comment (or any comment of an adopted issue) is looked up by `"[ref]" in plain_text(body)`
    over every comment on the issue, whoever wrote it and wherever the marker sits. A person's comment (or a
    PeopleSoft comment text) that quotes the marker makes the connector take it for its own post: the
    PeopleSoft comment is marked posted with the person's comment id and never sent.
    """
    from mlconnector.state import State as S

    env = sandbox_env
    assert env.cli(*SYNC).returncode == EXIT_OK
    bu, po = env.box.ps.keys("purchase_orders")[0]
    row = env.box.ps.add_comment("purchase_orders", (bu, po), "Receiving dock changed to bay 4.")
    cid = str(row["COMMENT_ID"])
    [issue] = env.box.jira.find_by_label(f"psft-po-{bu}-{po}")
    env.box.jira.comment_as_user(issue["key"], f"Waiting for the dock note [psft:po:{bu}/{po}#{cid}] from purchasing")
    state = S.load(env.state_file)
    state.entry("purchase_orders", f"{bu}|{po}").setdefault("comments", {})[cid] = "pending"  # a killed post
    state.dirty = True
    state.save()

    assert env.cli(*SYNC).returncode == EXIT_OK
    texts = [c["text"] for c in env.box.jira.issue(issue["key"])["comments"]]
    assert any("Receiving dock changed to bay 4." in t for t in texts), texts


# -- 4. duplicates in the queue: comment keys "parent#cid" are not injective --------------------------
def test_comment_queue_keys_of_two_comments_collide(tmp_path: Path) -> None:
    """Promise broken: "injective record keys" / nothing lost. encode_key escapes '|' and '\\' but the
    comment key f"{parent_key}#{comment_id}" (peoplesoft_jira.py process_comments, refresh_items) does not
    escape '#': parent (US001, "A#1") comment 2 and parent (US001, "A") comment "1#2" share one replay item,
    so the second failure overwrites the first one's row (enqueue keeps one item per key): a comment is lost.
    """
    from mlconnector.mapping import map_comment

    state = State(path=tmp_path / "s.json")
    audit = Audit(tmp_path / "a.jsonl", Redactor(), "t")
    ctx = PassContext("t", state, audit)
    base = {"BUSINESS_UNIT": "US001", "LAST_DTTM_UPDATE": "2024-03-05T14:02:11-0600", "COMMENTS": "x"}
    c1 = map_comment("purchase_orders", {**base, "PO_ID": "A#1", "COMMENT_ID": "2"})
    c2 = map_comment("purchase_orders", {**base, "PO_ID": "A", "COMMENT_ID": "1#2"})
    for c in (c1, c2):
        ctx.fail("purchase_orders", c.key, {"c": c.comment_id},
                 RecordError("waits for its record"), what="comment")
    audit.close()
    assert len(state.replay) == 2, state.replay


# -- 5. site binding does not protect any state written before today ---------------------------------
def test_a_state_without_sites_is_bound_to_whatever_the_config_names(tmp_path: Path) -> None:
    """Promise broken: bind_sites "refuses a config that points at other sites". A state written by an
    earlier version has no 'sites', and the first bind adopts the configuration's sites whatever they are:
    a production state copied to a staging host (or a config edited to another project) is accepted and its
    links (issue keys of project PROC) are applied to project OPS. Every state in the field is such a state.
    """
    state = State(path=tmp_path / "s.json")
    state.set_entry("purchase_orders", "US001|1", {"issue": "PROC-17", "hash": "h", "ts": None, "status": "A"})
    state.save()  # as written before sites existed (sites empty)
    loaded = State.load(tmp_path / "s.json")
    try:
        loaded.bind_sites({"jira": "https://staging.example.com project OPS"})
    except StateError:
        return
    raise AssertionError("a state whose links name project PROC was bound to project OPS on another site")


# -- 6. legacy migration ignores the lock of a run still on the legacy path ---------------------------
def test_legacy_state_is_moved_away_under_a_run_that_still_holds_the_legacy_lock(sandbox_env: Env) -> None:
    """Promise broken: nothing lost across the upgrade; one run per configuration at a time (run lock).

    adopt_legacy_state runs under the lock of the NEW path only. A pass of the earlier version (started by cron
    just before the upgrade) holds <legacy>.lock and will save to the legacy path when it ends; the new version
    moves the legacy file from under it. The old run's save then recreates the legacy file, which the new version
    never reads again (new.exists()): every link and queued record that run made is lost (its issues are only
    found again by label: duplicates for the keys of finding 1 and under search lag).
    """
    from filelock import FileLock

    env = sandbox_env
    run_env = {**env.env, "XDG_STATE_HOME": str(env.dir / "xdg-state")}
    state_dir = env.dir / "xdg-state" / "mlconnector"
    cfg = _plain_config(env, env.dir / "etc" / "acme")
    assert _run(cfg, run_env, *SYNC).returncode == EXIT_OK
    digest = hashlib.sha256(str(cfg.resolve()).encode()).hexdigest()[:8]
    legacy = state_dir / f"config-{digest}.json"
    (state_dir / "config.json").rename(legacy)

    old_run = FileLock(str(legacy) + ".lock", timeout=0)  # as held by the earlier version's pass
    old_run.acquire()
    try:
        run = _run(cfg, run_env, *SYNC)
        moved = not legacy.exists()
    finally:
        old_run.release()
    assert not moved, (f"the legacy state was migrated while an earlier version's run held its lock "
                       f"(exit {run.returncode}); that run's final save will go to a file nobody reads")


# -- 7. secrets: a whole-entity failure writes the remote answer to the audit trail unredacted -----------
def test_kind_error_redacts_the_raw_answer_like_a_record_failure(tmp_path: Path) -> None:
    """Promise broken: secrets never leaked. PassContext.fail redacts ``raw`` before the audit line is
    serialised; kind_error (engine.py) passes ``exc.raw`` as is. The line is redacted only after json.dumps,
    so a secret that the answer holds JSON-escaped (a password with '"' or '\\' echoed in a JSON error body)
    is escaped twice in the line and no needle matches it.
    """
    from mlconnector.errors import RemoteError

    secret = 'Tr0ub"le\\pw'
    redactor = Redactor()
    redactor.add(secret)
    audit = Audit(tmp_path / "a.jsonl", redactor, "t")
    ctx = PassContext("t", State(path=tmp_path / "s.json"), audit)
    raw = json.dumps({"errorMessages": ["bad request"], "echo": {"password": secret}})
    ctx.kind_error("purchase_orders", RemoteError("Jira failed", system="Jira", status=500, raw=raw))
    ctx.fail("vouchers", "US001|1", {}, RemoteError("Jira failed", system="Jira", status=500, raw=raw))
    audit.close()
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    leaked = [x["action"] for x in lines if secret in json.loads(x.get("raw") or "{}").get("echo", {}).get(
        "password", "")]
    assert leaked == [], f"secret in the audit trail of: {leaked}"


# -- 8. a dry run writes the audit trail ----------------------------------------------------------------
def test_dry_run_writes_nothing_not_even_audit_lines(sandbox_env: Env) -> None:
    """Promise broken: `--dry-run`: "Read and map only: no writes anywhere, no state change" (cli.py help).
    The session opens the audit trail whatever the mode and IssueWriter.write / PassContext.fail append
    'read' and 'failed' lines without a dry-run mark, and without the run lock, interleaved with a real pass:
    the trail then shows records as read/failed by a run that did nothing.
    """
    env = sandbox_env
    run = env.cli(*SYNC, "--dry-run")
    assert run.returncode == EXIT_OK, run.stdout + run.stderr
    assert env.box.jira.writes == 0
    lines = env.audit_file.read_text().splitlines() if env.audit_file.exists() else []
    assert lines == [], f"{len(lines)} audit lines written by a dry run, e.g. {lines[:1]}"
