"""ChaosCluster: a ProcCluster whose peer links all run through a FaultNet.

Every node advertises (in the one shared cluster file) a front port of the fault proxy as its
`raft` address, and binds its Raft ROUTER on a private port instead (node_main.py passes the
bind address into the node). So every peer message crosses the proxy, while each node's membership
table -- which snapshots copy from node to node -- holds the same addresses on every node.
Client (`client`) and REST (`http`) endpoints are direct: faults there are kills and pauses.
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path

from cluster import DEFAULT_MAX_VALUE_BYTES, DEV_PORTS, HOST, ProcCluster
from faultproxy import FaultNet

NODE_MAIN = Path(__file__).with_name("node_main.py")
FORBIDDEN_PORTS = frozenset(DEV_PORTS) | frozenset(range(8080, 8083))
"""The dev cluster of conf/cluster.toml (raft, client and http ports): never listen there."""
HASH_TIMEOUT_S = 2.0
STABLE_PORTS_FROM = 20000
"""Nodes listen below the kernel's ephemeral range: a port freed by kill -9 cannot be taken by
some outgoing connection (the clients open hundreds a second) before the node restarts on it."""


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
        log_level: str = "info",
    ) -> None:
        super().__init__(root, size, max_value_bytes=max_value_bytes, snapshot_threshold=snapshot_threshold,
                         log_level=log_level)
        self.unsafe_local_reads = unsafe_local_reads
        self.net = FaultNet(HOST, seed=seed, avoid_ports=FORBIDDEN_PORTS)
        self.bind_ports: dict[int, int] = {}
        rng, taken = random.Random(), set[int]()
        try:
            for node_id, spec in self.specs.items():
                spec.client_port, spec.http_port = stable_port(taken, rng), stable_port(taken, rng)
                self.bind_ports[node_id] = stable_port(taken, rng)
                spec.raft_port = self.net.add_node(node_id, self.bind_ports[node_id])
        except BaseException:
            self.close()
            raise
        # Rewritten: peers now dial the proxy fronts.
        self.config_path.write_text(self._toml(max_value_bytes, snapshot_threshold))

    def bind_endpoint(self, node_id: int) -> str:
        return f"tcp://{HOST}:{self.bind_ports[node_id]}"

    def node_command(self, node_id: int) -> list[str]:
        """Each node's Raft ROUTER binds behind the proxy (and maybe serves reads unsafely)."""
        command = [sys.executable, str(NODE_MAIN), "--raft-bind", self.bind_endpoint(node_id)]
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
