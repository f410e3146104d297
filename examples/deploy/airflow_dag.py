"""An Airflow DAG that runs one ml-connector pass per (configuration, pair) as its own task.

Copy into the DAGs folder and list your configurations below. Each task runs the CLI and fails on a
non-zero exit code (1 = records queued for replay, 3 = a system unreachable, 4 = another pass of the same
configuration still running: max_active_runs=1 avoids that). State, audit trail and the run lock live
beside each configuration's state file, so tasks of different configurations never share anything.
Secrets come from the worker's environment (MLCONNECTOR_<SYSTEM>_<NAME>), e.g. from an Airflow
connection or a secrets backend exported by the deployment, never from the DAG file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

# (configuration file, pair) per task; one configuration per customer instance and pair.
JOBS = [
    ("/etc/mlconnector/acme-psft-jira.toml", "peoplesoft-jira"),
    ("/etc/mlconnector/acme-jde-jira.toml", "jde-jira"),
]

with DAG(
    dag_id="mlconnector",
    start_date=datetime(2026, 1, 1),
    schedule=timedelta(minutes=10),
    catchup=False,  # a pass reads from its watermark: missed intervals need no backfill
    max_active_runs=1,
    default_args={"retries": 0},  # the next run is the retry; the state makes it safe
    tags=["integration"],
) as dag:
    for config, pair in JOBS:
        name = config.rsplit("/", 1)[-1].removesuffix(".toml")
        BashOperator(
            task_id=f"sync_{name}".replace("-", "_"),
            bash_command=f"mlconnector sync {pair} --config {config} --json",
            execution_timeout=timedelta(minutes=50),
        )
