"""A throwaway CA and server certificate for 127.0.0.1 (the `openssl` binary), HTTPS calls
that trust that CA, and a cluster with [security] TLS and/or tokens written in."""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cluster import HOST, ProcCluster
from http_helpers import TIMEOUT_S, Reply

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl binary")
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def make_pki(directory: Path) -> Pki:
    """A CA, and a server certificate it signed for IP 127.0.0.1 (key mode 0600)."""
    assert OPENSSL is not None
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "node.crt", directory / "node.key", directory / "node.csr"
    ext = directory / "node.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")

    def openssl(*args: str | Path) -> None:
        subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=30)

    openssl("req", "-x509", *EC_KEY, "-keyout", ca_key, "-out", ca, "-days", "2",
            "-subj", "/CN=raftkv test CA")
    openssl("req", *EC_KEY, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)
    os.chmod(key, 0o600)
    return Pki(ca, cert, key)


def use_tls(cluster: ProcCluster, pki: Pki) -> None:
    cluster.set_section_key("security", "tls_cert_file", f'"{pki.cert}"')
    cluster.set_section_key("security", "tls_key_file", f'"{pki.key}"')


def https_call(port: int, ca: Path, method: str, path: str, body: bytes | None = None,
               headers: dict[str, str] | None = None, timeout: float = TIMEOUT_S) -> Reply:
    """One HTTPS request on a fresh connection, trusting only `ca` (the host name is checked)."""
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=context)
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read(), time.monotonic() - started)
    finally:
        connection.close()


def bearer(token: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}
