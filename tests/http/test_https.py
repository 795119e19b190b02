"""HTTPS on the http address (SPEC §8) with a real node, tokens on too: curl and Python
trusting a test CA get /health, the web view, /metrics and (with a token) keys; plain HTTP to
the same port fails at once; the container health check asks over HTTPS; a certificate or
key that cannot be loaded stops the start with one line naming the file (exit 2, like any
config error); neither the token nor the key reaches the log."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import HOST, RAFTKVD, ProcCluster, run_cli
from http_helpers import http_port
from tls_helpers import OPENSSL, Pki, bearer, https_call, make_pki, needs_openssl, use_tls

from raftkvd.http.tokens import Role, add_token
from raftkvd.settings import SecuritySettings

pytestmark = [pytest.mark.timeout(120), needs_openssl]

PLAIN_FAILS_WITHIN_S = 3.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


WRITER: list[str] = []
"""The write token of the TLS node (tokens on too, as in a deployment)."""


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ProcCluster]:
    cluster = ProcCluster(tmp_path_factory.mktemp("https"), size=1)
    use_tls(cluster, pki)
    tokens_file = cluster.root / "tokens"
    WRITER.append(add_token(tokens_file, "writer", Role.WRITE))
    cluster.set_section_key("security", "tokens_file", f'"{tokens_file}"')
    with cluster:  # closed (every process killed) however the module ends
        cluster.start_all()
        yield cluster


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_trusting_the_ca_gets_health_over_https(tls_cluster: ProcCluster, pki: Pki) -> None:
    url = f"https://{HOST}:{http_port(tls_cluster, 1)}/health"
    done = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca), url],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert '"node_id": 1' in done.stdout


def test_the_web_view_metrics_and_kv_are_served_over_https(tls_cluster: ProcCluster,
                                                           pki: Pki) -> None:
    port = http_port(tls_cluster, 1)
    page = https_call(port, pki.ca, "GET", "/")
    assert page.status == 200 and b"<html" in page.body.lower()
    metrics = https_call(port, pki.ca, "GET", "/metrics")
    assert metrics.status == 200 and b"# TYPE" in metrics.body
    assert https_call(port, pki.ca, "PUT", "/kv/tls", b'{"value": "v"}').status == 401
    put = https_call(port, pki.ca, "PUT", "/kv/tls", b'{"value": "over tls"}', bearer(WRITER[0]))
    assert put.status == 200, put.body
    assert https_call(port, pki.ca, "GET", "/kv/tls", headers=bearer(WRITER[0])).json()["value"] == "over tls"


def test_plain_http_to_the_tls_port_fails_quickly(tls_cluster: ProcCluster) -> None:
    """The TLS handshake fails on a plain request and the server closes: no HTTP answer, and
    no hang."""
    started = time.monotonic()
    with socket.create_connection((HOST, http_port(tls_cluster, 1)), timeout=PLAIN_FAILS_WITHIN_S) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert time.monotonic() - started < PLAIN_FAILS_WITHIN_S
    assert b"HTTP/1.1" not in received and b"healthy" not in received


def test_the_healthcheck_asks_over_https(tls_cluster: ProcCluster) -> None:
    done = subprocess.run([sys.executable, "-m", "raftkvd.healthcheck", "--config",
                           str(tls_cluster.config_path), "--id", "1"],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "200" in done.stdout


def _start_fails(tmp_path: Path, pki: Pki, cert: Path, key: Path) -> str:
    """Start a node with `cert` and `key`: it must exit 2 at once; its stderr."""
    cluster = ProcCluster(tmp_path / "bad", size=1)
    try:
        use_tls(cluster, Pki(pki.ca, cert, key))
        done = run_cli(RAFTKVD, "run", "--config", str(cluster.config_path), "--id", "1", timeout=30)
    finally:
        cluster.close()
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_a_certificate_that_is_not_one_fails_the_start_naming_it(tmp_path: Path, pki: Pki) -> None:
    bogus = tmp_path / "bogus.crt"
    bogus.write_text("not a certificate\n")
    stderr = _start_fails(tmp_path, pki, bogus, pki.key)
    assert f"tls_cert_file {bogus}" in stderr and "not a PEM certificate" in stderr


def test_a_key_of_another_certificate_fails_the_start_naming_it(tmp_path: Path, pki: Pki) -> None:
    other = make_pki(tmp_path / "other")
    stderr = _start_fails(tmp_path, pki, pki.cert, other.key)
    assert f"tls_key_file {other.key} is not the key of certificate {pki.cert}" in stderr
    assert "PRIVATE KEY" not in stderr


def test_a_missing_key_fails_the_start_naming_it(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "missing.key"
    stderr = _start_fails(tmp_path, pki, pki.cert, missing)
    assert str(missing) in stderr


def test_an_encrypted_key_fails_the_start_without_a_prompt(tmp_path: Path, pki: Pki) -> None:
    cert, key = tmp_path / "enc.crt", tmp_path / "enc.key"
    assert OPENSSL is not None
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-passout", "pass:secret", "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=30)
    key.chmod(0o600)
    stderr = _start_fails(tmp_path, pki, cert, key)
    assert f"tls_key_file {key}: not an unencrypted PEM private key" in stderr


def test_the_http_process_says_which_file_it_cannot_load_on_its_handshake_line(
        tmp_path: Path, pki: Pki) -> None:
    """The node checks first; a restarted HTTP process (a file changed since) says it too."""
    bogus = tmp_path / "bogus.crt"
    bogus.write_text("not a certificate\n")
    security = SecuritySettings(tls_cert_file=bogus, tls_key_file=pki.key)
    done = subprocess.run([sys.executable, "-m", "raftkvd.http.worker", "--node-id", "1",
                           "--address", f"{HOST}:0", "--client", "tcp://127.0.0.1:1",
                           "--max-value-bytes", "1024", "--security", security.to_json()],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert done.stdout == f"error security.tls_cert_file {bogus}: not a PEM certificate\n"


def test_no_token_or_key_appears_in_the_tls_nodes_log(tls_cluster: ProcCluster, pki: Pki) -> None:
    """Last of the module's tests on the TLS node."""
    text = tls_cluster.specs[1].log_path.read_text(errors="replace")
    assert WRITER[0] not in text and "Bearer" not in text
    key_lines = pki.key.read_text().splitlines()[1:-1]
    assert key_lines and not [line for line in key_lines if line in text]
    assert "PRIVATE KEY" not in text
