"""Issue 14, findings 1, 10, 11, 13 and 17: the shared HTTP policy against small hostile servers.

Every server here is on 127.0.0.1, port 0; each test bounds its own time (deadlines of about a
second, servers stopped in ``finally``) and synchronises on events, not sleeps.
"""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hostile import RawServer, cut_chunked, drip, huge, recorder

from mlconnector.auth import BearerAuth
from mlconnector.config import from_dict
from mlconnector.errors import EXIT_UNREACHABLE, AmbiguousWriteError, RemoteError, UnreachableError
from mlconnector.http import HttpClient, HttpSettings

FAST = HttpSettings(connect_timeout=2, read_timeout=5, max_attempts=2, backoff_initial=0, backoff_max=0)


def _auth_headers(heads: list[bytes]) -> list[bytes]:
    return [line for h in heads for line in h.split(b"\r\n") if line.lower().startswith((b"authorization",
                                                                                         b"jde-ais-auth"))]


# -- 1: credentials only to their own origin ------------------------------------------------------
def test_basic_and_bearer_credentials_never_go_to_another_origin() -> None:
    with RawServer(recorder()) as home, RawServer(recorder()) as foreign:
        basic = HttpClient("PeopleSoft", home.url, FAST, sleep=lambda s: None)
        basic.request("GET", "/own.wsdl", auth=("PS", "s3cret-pw"))
        basic.request("GET", f"{foreign.url}/import.xsd", auth=("PS", "s3cret-pw"))
        bearer = HttpClient("PeopleSoft", home.url, FAST, auth=BearerAuth(lambda: "tok-123456"))
        bearer.request("GET", f"{foreign.url}/next", headers={"jde-AIS-Auth": "ais-token"})
        bearer.request("GET", "/own")
    assert len(_auth_headers(home.heads)) == 2  # the origin still gets them
    assert _auth_headers(foreign.heads) == [] and len(foreign.heads) == 2


def test_an_https_client_never_downgrades_to_http() -> None:
    with RawServer(recorder()) as plain:
        client = HttpClient("PeopleSoft", "https://127.0.0.1:1", FAST)
        with pytest.raises(RemoteError, match="plain http"):
            client.request("GET", f"{plain.url}/import.xsd", auth=("PS", "pw"))
    assert plain.heads == []


def _wsdl_importing(foreign_url: str) -> bytes:
    return f"""<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" targetNamespace="urn:t">
  <wsdl:import namespace="urn:evil" location="{foreign_url}/evil.wsdl"/>
</wsdl:definitions>""".encode()


def test_a_wsdl_import_on_another_host_gets_no_peoplesoft_password(tmp_path: Path) -> None:
    from mlconnector.peoplesoft.ci import CIClient

    with RawServer(recorder(body=b"<x/>")) as foreign:
        with RawServer(recorder(body=_wsdl_importing(foreign.url))) as home:
            cfg = from_dict({"peoplesoft": {"base_url": home.url, "node": "PSFT_EP", "user": "PS",
                                            "max_attempts": 1,
                                            "records": {"purchase_orders": {"transport": "ci", "ci": "X"}}},
                             "jira": {"site": "https://x.atlassian.net", "email": "a@b.c", "project": "P"}},
                            tmp_path / "c.toml").peoplesoft
            ci = CIClient(cfg, ("PS", "s3cret-pw"), cache_dir=tmp_path / "cache")
            with pytest.raises(RemoteError):
                ci.service("X")
            ci.close()
        assert foreign.heads, "the import was not fetched at all: the test proves nothing"
        secret = base64.b64encode(b"PS:s3cret-pw")
        assert not any(secret in h for h in foreign.heads) and _auth_headers(foreign.heads) == []
        assert any(secret in h for h in home.heads)


# -- 17: libxml2's limits stay on -------------------------------------------------------------------
def test_zeep_keeps_libxml2_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zeep

    from mlconnector.peoplesoft import ci as ci_mod

    seen: list[bool] = []
    real = zeep.Settings

    def spy(*args: object, **kwargs: object) -> object:
        settings = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(settings.xml_huge_tree)
        return settings

    monkeypatch.setattr(ci_mod.zeep, "Settings", spy)
    with RawServer(recorder(body=b"<not-a-wsdl/>")) as home:
        cfg = from_dict({"peoplesoft": {"base_url": home.url, "node": "N", "user": "PS", "max_attempts": 1,
                                        "records": {"purchase_orders": {"transport": "ci", "ci": "X"}}},
                         "jira": {"site": "https://x.atlassian.net", "email": "a@b.c", "project": "P"}},
                        tmp_path / "c.toml").peoplesoft
        with pytest.raises(RemoteError):
            ci_mod.CIClient(cfg, ("PS", "pw"), cache_dir=tmp_path / "cache").service("X")
    assert seen == [False]


# -- 10: a configured ca_bundle is not replaced by the environment ---------------------------------
def _cert(tmp: Path, name: str) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_requests_ca_bundle_does_not_override_the_configured_ca(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import ssl

    rogue_cert, rogue_key = _cert(tmp_path, "rogue")
    internal_ca, _ = _cert(tmp_path, "internal-ca")

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(rogue_cert, rogue_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(rogue_cert))  # trusts the rogue certificate
        monkeypatch.setenv("CURL_CA_BUNDLE", str(rogue_cert))
        client = HttpClient("PeopleSoft", url, HttpSettings(max_attempts=1, verify=str(internal_ca)))
        with pytest.raises(UnreachableError, match="TLS handshake"):
            client.request("GET", "/")
        # Without a configured bundle the environment's is a legitimate trust source, and ping says so.
        assert HttpClient("PeopleSoft", url, HttpSettings(max_attempts=1)).request("GET", "/").status_code == 200
    finally:
        server.shutdown()
        server.server_close()
    from mlconnector.http import ca_source

    assert "REQUESTS_CA_BUNDLE" in ca_source(True) and ca_source(str(internal_ca)).startswith("ca_bundle ")


# -- 11: a wall-clock deadline per request, a size cap ----------------------------------------------
def test_a_dripping_server_is_cut_off_at_the_request_deadline() -> None:
    started = threading.Event()
    with RawServer(drip(started, step=0.05)) as srv:
        client = HttpClient("Jira", srv.url, HttpSettings(read_timeout=5, request_deadline=0.5, max_attempts=2,
                                                          backoff_initial=0, backoff_max=0), sleep=lambda s: None)
        t0 = time.monotonic()
        with pytest.raises(UnreachableError, match="request_deadline"):
            client.request("GET", "/rest/api/3/search")
        elapsed = time.monotonic() - t0
        with pytest.raises(AmbiguousWriteError, match="request_deadline"):
            client.request("POST", "/rest/api/3/issue", json={})
    assert started.is_set() and elapsed < 4  # two attempts of 0.5 s, not 100,000 bytes at a byte a step


def test_a_huge_answer_is_refused_not_buffered() -> None:
    with RawServer(huge(8 * 1024 * 1024)) as srv:
        client = HttpClient("Jira", srv.url, HttpSettings(max_attempts=1, max_response_bytes=1024 * 1024))
        with pytest.raises(RemoteError, match="more than 1 MB"):
            client.request("GET", "/")
        # A write the server answered too fully has taken effect: look it up, never resend blindly.
        with pytest.raises(AmbiguousWriteError, match="more than 1 MB"):
            client.request("POST", "/rest/api/3/issue/bulk", json={})


# -- 13: a body cut off mid-response is a transport error -------------------------------------------
def test_a_cut_off_body_is_retried_for_reads_and_ambiguous_for_writes() -> None:
    with RawServer(cut_chunked()) as srv:
        client = HttpClient("Jira", srv.url, FAST, sleep=lambda s: None)
        with pytest.raises(UnreachableError, match="cut off") as err:
            client.request("GET", "/rest/api/3/field")
        assert err.value.exit_code == EXIT_UNREACHABLE
        assert len(srv.heads) == 2  # read: retried
        with pytest.raises(AmbiguousWriteError):
            client.request("POST", "/rest/api/3/issue", json={})
        assert len(srv.heads) == 3  # write: not sent again blindly


def test_cli_reports_a_cut_off_body_as_unreachable_not_file_system_error(tmp_path: Path) -> None:
    with RawServer(cut_chunked()) as srv:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'instance = "t"\nstate_file = "{(tmp_path / "s.json").as_posix()}"\n'
                       f'[peoplesoft]\nbase_url = "{srv.url}"\nnode = "N"\nuser = "U"\nmax_attempts = 1\n'
                       f'[jira]\nsite = "{srv.url}"\nemail = "a@b.c"\nproject = "P"\nmax_attempts = 1\n',
                       encoding="utf-8")
        env = {"MLCONNECTOR_PEOPLESOFT_PASSWORD": "pw-123456", "MLCONNECTOR_JIRA_API_TOKEN": "tok-123456",
               "PATH": "", "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
        proc = subprocess.run([sys.executable, "-m", "mlconnector", "sync", "peoplesoft-jira", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    assert "File system error" not in proc.stderr and "Traceback" not in proc.stderr
