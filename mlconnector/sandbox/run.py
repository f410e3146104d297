"""Start the simulators together and describe them as an ml-connector configuration.

Used by `mlconnector sandbox serve`, `mlconnector demo`, the tests and the benchmarks, so they all
exercise the same setup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlconnector.sandbox.accounts import JIRA_EMAIL as JIRA_EMAIL
from mlconnector.sandbox.accounts import JIRA_TOKEN as JIRA_TOKEN
from mlconnector.sandbox.accounts import settle_for as settle_for
from mlconnector.sandbox.jira_sim import JiraSim
from mlconnector.sandbox.peoplesoft_sim import PeopleSoftSim
from mlconnector.sandbox.peoplesoft_soap import PeopleSoftGateway, PeopleSoftSoap
from mlconnector.sandbox.server import SandboxServer

PS_USER = "ML_CONNECTOR"
PS_PASSWORD = "sandbox-ps-password"
NODE = "PSFT_EP"


@dataclass
class Sandbox:
    ps: PeopleSoftSim
    jira: JiraSim
    ps_server: SandboxServer
    jira_server: SandboxServer
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    soap: PeopleSoftSoap | None = None  # CI web services on ps_server, over the same data as ps
    search_lag: float = 0.0  # seconds Jira's search trails its writes (see JiraSim)
    create_cost: float = 0.0  # seconds of Jira's work per issue created (see JiraSim)

    def stop(self) -> None:
        self.ps_server.stop()
        self.jira_server.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def env() -> dict[str, str]:
        """Secrets for the sandbox, as the environment overrides a headless host would use."""
        return {"MLCONNECTOR_PEOPLESOFT_PASSWORD": PS_PASSWORD, "MLCONNECTOR_JIRA_API_TOKEN": JIRA_TOKEN}

    def config_text(self, state_file: Path | None = None, *, extra_ps: str = "", extra_jira: str = "",
                    fast_retries: bool = True) -> str:
        since = (self.started - timedelta(days=90)).date().isoformat()
        retry = ("max_attempts = 4\nbackoff_initial = 0.05\nbackoff_max = 0.5\nread_timeout = 10\n"
                 if fast_retries else "")
        lines = ['instance = "sandbox"']
        if fast_retries:  # the tests' setting: each test that wants the first-pass checks turns them on
            lines.append("preflight = false")
        if state_file is not None:
            lines.append(f'state_file = "{state_file.as_posix()}"')
        return "\n".join(lines) + f"""

[peoplesoft]
base_url = "{self.ps_server.url}"
node = "{NODE}"
user = "{PS_USER}"
db_utc_offset = "-06:00"
initial_since = "{since}"
maxrows = 100
{retry}{extra_ps}
[jira]
site = "{self.jira_server.url}"
email = "{JIRA_EMAIL}"
project = "PROC"
settle_seconds = {settle_for(self.search_lag, self.create_cost)}
{retry}{extra_jira}
"""


def start_sandbox(*, seed: int = 7, counts: dict[str, int] | None = None, latency: float = 0.0,
                  ps_port: int = 0, jira_port: int = 0, rate_limit: float | None = None,
                  request_validator: Callable[[Any], None] | None = None, search_lag: float = 0.0,
                  create_cost: float = 0.0) -> Sandbox:
    ps = PeopleSoftSim(node=NODE, users={PS_USER: PS_PASSWORD}, seed=seed, counts=counts)
    jira = JiraSim(email=JIRA_EMAIL, api_token=JIRA_TOKEN, request_validator=request_validator,
                   search_lag=search_lag, create_cost=create_cost)
    # QAS REST and CI SOAP share one PeopleSoft web server, as on a real gateway (split by path).
    soap = PeopleSoftSoap(ps)
    ps_server = SandboxServer(PeopleSoftGateway(ps, soap), "peoplesoft", port=ps_port, latency=latency).start()
    jira_server = SandboxServer(jira, "jira", port=jira_port, latency=latency, rate_limit=rate_limit).start()
    return Sandbox(ps, jira, ps_server, jira_server, soap=soap, search_lag=search_lag, create_cost=create_cost)


def serve(*, ps_port: int, jira_port: int, write_config: Path | None, latency: float,
          echo: Callable[[str], None], jde_port: int = 0) -> None:
    """Serve every simulated system (PeopleSoft QAS + CIs, JD Edwards AIS, one Jira) until Ctrl-C, and describe
    a configuration per pair that points at them."""
    import signal

    from mlconnector.sandbox.jde_sim import JdeSandbox, JdeSim

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and a TERM from a supervisor, stop the servers cleanly, also where the parent process started us
    # with SIGINT ignored (a background job, a test runner's worker).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    box = start_sandbox(ps_port=ps_port, jira_port=jira_port, latency=latency)
    jde = JdeSim()
    jde_box = JdeSandbox(jde, box.jira, SandboxServer(jde, "jde", port=jde_port, latency=latency).start(),
                         box.jira_server)
    from mlconnector.sandbox.procurify_run import start_procurify_sandbox

    procurify_box = start_procurify_sandbox(latency=latency)
    from mlconnector.sandbox.jaggaer_run import start_jaggaer_sandbox

    jaggaer_box = start_jaggaer_sandbox(latency=latency)
    from mlconnector.sandbox.procore_run import start_procore_sandbox

    procore_box = start_procore_sandbox(latency=latency)
    try:
        echo(f"PeopleSoft (QAS REST) simulator: {box.ps_server.url}  node {NODE}, user {PS_USER}")
        echo(f"PeopleSoft CI (SOAP) services:   {box.ps_server.url}/PSIGW/PeopleSoftServiceListeningConnector/"
             f"{NODE}/CI_<name>.1.wsdl  (PO_EXPRESS_CI, REQ_CI, VOUCHER_CI, VENDOR_CI)")
        echo(f"JD Edwards AIS simulator:        {jde_box.jde_server.url}")
        echo(f"Jira Cloud simulator:            {box.jira_server.url}  {JIRA_EMAIL}, project PROC")
        echo(f"JAGGAER simulator:               {jaggaer_box.jaggaer_server.url}  (its PeopleSoft: "
             f"{jaggaer_box.ps_server.url})")
        echo(f"Procurify simulator:             {procurify_box.procurify_server.url}  (with PeopleSoft PO_EXPRESS and "
             f"VNDR_ID CIs at {procurify_box.ps_server.url})")
        echo(f"Procore simulator:               {procore_box.procore_server.url}  (its PeopleSoft: "
             f"{procore_box.ps_server.url})")
        if write_config:
            procurify_config = write_config.with_name(write_config.stem + "-procurify" + write_config.suffix)
            procurify_config.write_text(procurify_box.config_text(), encoding="utf-8")
            echo(f"Wrote {procurify_config} (sync procurify-peoplesoft).")
        else:
            echo("Configuration for `sync procurify-peoplesoft` against these simulators:")
            echo(procurify_box.config_text())
        if write_config:
            jde_config = write_config.with_name(write_config.stem + "-jde" + write_config.suffix)
            write_config.write_text(box.config_text(), encoding="utf-8")
            jde_config.write_text(jde_box.config_text(), encoding="utf-8")
            jaggaer_config = write_config.with_name(write_config.stem + "-jaggaer" + write_config.suffix)
            jaggaer_config.write_text(jaggaer_box.config_text(), encoding="utf-8")
            procore_config = write_config.with_name(write_config.stem + "-procore" + write_config.suffix)
            procore_config.write_text(procore_box.config_text(), encoding="utf-8")
            echo(f"Wrote {write_config} (sync peoplesoft-jira), {jde_config} (sync jde-jira), {jaggaer_config} "
                 f"(sync peoplesoft-jaggaer) and {procore_config} (sync peoplesoft-procore). Secrets for them "
                 f"(environment):")
        else:
            echo("Secrets for configs pointing here (environment):")
        for k, v in {**box.env(), **jde_box.env(), **procurify_box.env(), **jaggaer_box.env(),
                     **procore_box.env()}.items():
            echo(f"  export {k}={v}")
        echo("Press Ctrl-C to stop.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        echo("Stopped.")
    finally:
        procurify_box.stop()
        jaggaer_box.stop()
        procore_box.stop()
        jde_box.jde_server.stop()
        box.stop()
