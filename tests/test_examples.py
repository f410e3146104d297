"""The shipped examples are what admins copy: they must stay valid."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from mlconnector import config as config_mod

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_example_config_is_valid_and_names_no_secret() -> None:
    cfg = config_mod.load(EXAMPLES / "config.toml")
    assert cfg.peoplesoft.base_url == "https://psfin.acme.internal:8443"
    assert cfg.peoplesoft.node == "PSFT_EP" and cfg.jira.project == "PROC"
    assert set(cfg.jira.issue_types) == {"requisitions", "purchase_orders", "vouchers"}
    text = (EXAMPLES / "config.toml").read_text(encoding="utf-8")
    assert "mlconnector secrets set" in text


def test_scheduler_examples_run_one_pass_with_a_config() -> None:
    cron = (EXAMPLES / "crontab").read_text(encoding="utf-8")
    assert "sync peoplesoft-jira --config" in cron
    task = ET.fromstring((EXAMPLES / "windows-task.xml").read_bytes())
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    args = task.find("t:Actions/t:Exec/t:Arguments", ns)
    assert args is not None and args.text is not None and "sync peoplesoft-jira --config" in args.text
    policy = task.find("t:Settings/t:MultipleInstancesPolicy", ns)
    assert policy is not None and policy.text == "IgnoreNew"


DEPLOY = EXAMPLES / "deploy"
ROOT = EXAMPLES.parent


def _dockerfile_env() -> dict[str, str]:
    """The ENV block of the Dockerfile, as the container's process sees it."""
    import re
    import shlex

    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    block = text.split("\nENV ", 1)[1].split("\n\n", 1)[0]
    lines = [ln.rstrip("\\").strip() for ln in block.splitlines() if not ln.strip().startswith("#")]
    pairs = shlex.split(" ".join(lines))
    return dict(p.split("=", 1) for p in pairs if re.match(r"^[A-Z_]+=", p))


def test_the_image_runs_as_non_root_with_state_on_a_volume_and_secrets_from_the_environment() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "\nUSER 10001" in text and 'ENTRYPOINT ["mlconnector"]' in text
    assert 'VOLUME ["/var/lib/mlconnector"]' in text and "constraints.txt" in text
    env = _dockerfile_env()
    assert env["XDG_STATE_HOME"] == "/var/lib/mlconnector"
    assert env["PYTHON_KEYRING_BACKEND"] == "keyring.backends.null.Keyring"


def test_the_image_entry_point_pings_the_sandbox_with_its_environment(sandbox_env, tmp_path: Path) -> None:
    """What `docker run IMAGE ping` does, without docker: the image's environment, no keyring, the config
    at MLCONNECTOR_CONFIG, the state under XDG_STATE_HOME. (Building the image needs a container engine
    and the python base image, which this machine's network does not serve.)"""
    import os
    import subprocess
    import sys

    env_box = sandbox_env
    image_env = _dockerfile_env()
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    config.write_text(env_box.box.config_text(None), encoding="utf-8")
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("MLCONNECTOR_")}
    run_env.update(image_env)
    run_env.update(env_box.box.env())  # the Kubernetes Secret, as environment variables
    run_env.update({"MLCONNECTOR_CONFIG": str(config), "XDG_STATE_HOME": str(tmp_path / "state"),
                    "XDG_CACHE_HOME": str(tmp_path / "state" / "cache")})
    ping = subprocess.run([sys.executable, "-m", "mlconnector", "ping"], env=run_env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    sync = subprocess.run([sys.executable, "-m", "mlconnector", "sync", "peoplesoft-jira"], env=run_env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert (tmp_path / "state" / "mlconnector" / "sandbox.json").exists()


def test_the_image_builds_where_a_container_engine_is_available() -> None:
    import shutil
    import subprocess

    import pytest

    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "image", "inspect", "python:3.11-slim"], capture_output=True,
                                        timeout=30).returncode != 0:
        pytest.skip("no container engine with the python:3.11-slim base image on this machine")
    built = subprocess.run([docker, "build", "-q", "-t", "mlconnector-test", str(ROOT)], capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    version = subprocess.run([docker, "run", "--rm", "mlconnector-test", "--version"], capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("mlconnector ")


def test_the_kubernetes_cronjob_forbids_overlap_and_takes_secrets_from_a_secret() -> None:
    import yaml

    job = yaml.safe_load((DEPLOY / "kubernetes-cronjob.yaml").read_text(encoding="utf-8"))
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:2] == ["sync", "peoplesoft-jira"]
    assert container["envFrom"][0]["secretRef"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in volumes["state"] and "configMap" in volumes["config"]


def test_the_airflow_dag_runs_one_task_per_configuration_and_pair() -> None:
    import ast

    tree = ast.parse((DEPLOY / "airflow_dag.py").read_text(encoding="utf-8"))
    jobs = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "JOBS")
    pairs = [elt.elts[1].value for elt in jobs.value.elts]  # type: ignore[attr-defined]
    from mlconnector.registry import PAIRS

    assert pairs and all(p in PAIRS for p in pairs)
    text = (DEPLOY / "airflow_dag.py").read_text(encoding="utf-8")
    assert "max_active_runs=1" in text and "mlconnector sync {pair} --config {config}" in text


def test_the_systemd_timer_runs_the_oneshot_pass() -> None:
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((DEPLOY / "mlconnector-sync@.service").read_text(encoding="utf-8"))
    assert unit["Service"]["Type"] == "oneshot" and " sync " in unit["Service"]["ExecStart"]
    assert unit["Service"]["User"] != "root"
    timer = configparser.ConfigParser(strict=False, interpolation=None)
    timer.read_string((DEPLOY / "mlconnector-sync@.timer").read_text(encoding="utf-8"))
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"


def test_procurify_example_config_is_valid_and_needs_no_jira() -> None:
    cfg = config_mod.load(EXAMPLES / "procurify-peoplesoft.toml")
    assert cfg.jira is None
    assert cfg.sections["procurify"].base_url == "https://acme.procurify.com"
    pair = cfg.sections["procurify_peoplesoft"]
    assert pair.po_ci == "PO_EXPRESS" and pair.po.handle == "PO_REF"
    assert "procurify.client_secret" in (EXAMPLES / "procurify-peoplesoft.toml").read_text(encoding="utf-8")
