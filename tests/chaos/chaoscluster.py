"""ChaosCluster: a ProcCluster whose peer links all run through a FaultNet.

Every node advertises (in the one shared cluster file) a front port of the fault proxy as its
`raft` address, and binds its Raft ROUTER on a private port instead (node_main.py passes the
bind address into the node). So every peer message crosses the proxy, while each node's membership
table -- which snapshots copy from node to node -- holds the same addresses on every node.
Client (`client`) and REST (`http`) endpoints are direct: faults there are kills and pauses.

`secure=True` turns on what SPEC §8 has: CurveZMQ on the peer links and the client endpoints
(keys for every node and one client, `chaos`, whose key the harness, the nemesis and the
workload all use), HTTPS with a throwaway CA, and a `write` bearer token for REST (`rest`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cluster import DEFAULT_MAX_VALUE_BYTES, DEV_PORTS, HOST, ProcCluster
from faultproxy import FaultNet

from raftkv.curve import CLIENTS_DIR, ClientCurve, ServerKeys, keygen, load_secret, node_key_name
from raftkvd.http.tokens import Role, add_token

NODE_MAIN = Path(__file__).with_name("node_main.py")
FORBIDDEN_PORTS = frozenset(DEV_PORTS) | frozenset(range(8080, 8083))
"""The dev cluster of conf/cluster.toml (raft, client and http ports): never listen there."""
HASH_TIMEOUT_S = 2.0
STABLE_PORTS_FROM = 20000
"""Nodes listen below the kernel's ephemeral range: a port freed by kill -9 cannot be taken by
some outgoing connection (the clients open hundreds a second) before the node restarts on it."""

CLIENT_KEY = "chaos"
TOKEN_NAME = "chaos"
OPENSSL_TIMEOUT_S = 30.0
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Rest:
    """How a chaos client speaks to the REST API: plain, or HTTPS trusting `ca` with a token."""

    ca: Path | None = None
    token: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self.ca is None else ssl.create_default_context(cafile=str(self.ca))

    def headers(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for IP 127.0.0.1, its key) made with `openssl`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("a secured chaos run needs the openssl binary (HTTPS certificates)")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "node.crt", directory / "node.key", directory / "node.csr"
    ext = directory / "node.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")

    def run(*args: str | Path) -> None:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=OPENSSL_TIMEOUT_S)

    run("req", "-x509", *EC_KEY, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=raftkv chaos CA")
    run("req", *EC_KEY, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    os.chmod(key, 0o600)
    return ca, cert, key


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def stable_port(taken: set[int], rng: random.Random) -> int:
    """A free loopback port below the ephemeral range, not in `taken` nor a dev cluster port."""
    high = _ephemeral_low()
    while True:
        port = rng.randrange(STABLE_PORTS_FROM, high)
        if port in taken or port in FORBIDDEN_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        taken.add(port)
        return port


class ChaosCluster(ProcCluster):
    """Real raftkvd processes with a fault proxy on every directed peer link (`net`)."""

    harness_name = "chaos"

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        seed: int | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        snapshot_threshold: int | None = None,
        unsafe_local_reads: bool = False,
        secure: bool = False,
        log_level: str = "info",
    ) -> None:
        super().__init__(root, size, max_value_bytes=max_value_bytes, snapshot_threshold=snapshot_threshold,
                         log_level=log_level)
        self.unsafe_local_reads = unsafe_local_reads
        self.secure = secure
        self.rest = Rest()
        self.net = FaultNet(HOST, seed=seed, avoid_ports=FORBIDDEN_PORTS)
        self.bind_ports: dict[int, int] = {}
        rng, taken = random.Random(), set[int]()
        try:
            for node_id, spec in self.specs.items():
                spec.client_port, spec.http_port = stable_port(taken, rng), stable_port(taken, rng)
                self.bind_ports[node_id] = stable_port(taken, rng)
                spec.raft_port = self.net.add_node(node_id, self.bind_ports[node_id])
            if secure:
                self._secure()
        except BaseException:
            self.close()
            raise
        # Rewritten: peers now dial the proxy fronts.
        self.config_path.write_text(self._toml(max_value_bytes, snapshot_threshold))

    def _secure(self) -> None:
        """[security]: CurveZMQ keys, HTTPS and a token (SPEC §8); the harness's own requests
        (`request`, `status`, `client`) then use the client key, REST clients `rest`."""
        curve_dir = self.root / "curve"
        for node_id in self.ids:
            keygen(curve_dir, node_key_name(node_id))
        keygen(curve_dir / CLIENTS_DIR, CLIENT_KEY)
        ca, cert, key = make_tls(self.root / "tls")
        tokens_file = self.root / "tokens"
        token = add_token(tokens_file, TOKEN_NAME, Role.WRITE)
        for name, path in (("curve_dir", curve_dir), ("tls_cert_file", cert), ("tls_key_file", key),
                           ("tokens_file", tokens_file)):
            self.set_section_key("security", name, json.dumps(str(path)))
        self.curve = ClientCurve(load_secret(curve_dir / CLIENTS_DIR / f"{CLIENT_KEY}.key_secret"),
                                 ServerKeys(curve_dir, {s.client: i for i, s in self.specs.items()}))
        self.rest = Rest(ca, token)

    def bind_endpoint(self, node_id: int) -> str:
        return f"tcp://{HOST}:{self.bind_ports[node_id]}"

    def node_command(self, node_id: int) -> list[str]:
        """Each node's Raft ROUTER binds behind the proxy, and the node dials its peers from its
        own source address (and maybe serves reads unsafely)."""
        command = [sys.executable, str(NODE_MAIN), "--raft-bind", self.bind_endpoint(node_id),
                   "--raft-source", self.net.source(node_id)]
        return command + (["--unsafe-local-reads"] if self.unsafe_local_reads else [])

    def kv_hash(self, node_id: int, timeout: float = HASH_TIMEOUT_S) -> tuple[str, int] | None:
        """(sha256 of the node's kv state, its applied index), read in one loop turn; None if silent."""
        reply = self.ok_reply(node_id, "hash", timeout)
        return None if reply is None else (str(reply["hash"]), int(reply["applied"]))

    def close(self) -> None:
        try:
            super().close()
        finally:
            net = getattr(self, "net", None)
            if net is not None:
                net.close()
