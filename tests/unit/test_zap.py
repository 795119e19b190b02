"""The node's ZAP handler (raftkvd/net/zap.py) in one process: which keys get into which
domain, the User-Id a connection carries, one count per refused handshake whether ZAP or
the mechanism refused it, and at most one log line per source and minute."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from raftkv.curve import CLIENTS_DIR, KeyPair, as_client, keygen, load_secret, node_key_name
from raftkv.sockets import HANDSHAKE_FAILED
from raftkvd.net.nodekeys import NodeKeys
from raftkvd.net.zap import CLIENT_DOMAIN, RAFT_DOMAIN, Gate

DEADLINE_S = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def curve_dir(tmp_path: Path) -> Path:
    for node_id in (1, 2, 3):
        keygen(tmp_path, node_key_name(node_id))
    keygen(tmp_path / CLIENTS_DIR, "ops")
    return tmp_path


@dataclass
class Node:
    """Node 1's gate over a raft and a client ROUTER (members 1 and 2)."""

    gate: Gate
    routers: dict[str, zmq.Socket] = field(default_factory=dict)
    counted: list[str] = field(default_factory=list)
    """The refusals the gate counted, by domain."""
    clock: Clock = field(default_factory=Clock)


@pytest.fixture
def node(curve_dir: Path) -> Iterator[Node]:
    ctx = zmq.Context()
    counted: list[str] = []
    clock = Clock()
    made = Node(Gate(ctx, NodeKeys(curve_dir, 1), {1, 2}, counted.append, clock), {}, counted, clock)
    for domain in (RAFT_DOMAIN, CLIENT_DOMAIN):
        router = made.routers[domain] = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        made.gate.serve(router, domain)
        router.bind("tcp://127.0.0.1:*")
    made.gate.start()
    yield made
    for router in made.routers.values():
        router.close(0)
    made.gate.close()
    ctx.destroy(0)


def pair(curve_dir: Path, name: str) -> KeyPair:
    sub = curve_dir / CLIENTS_DIR if name == "ops" else curve_dir
    return load_secret(sub / f"{name}.key_secret")


def attempt(node: Node, domain: str, own: KeyPair | None) -> tuple[str | None, int]:
    """Connect to `domain`'s ROUTER and send once; (the User-Id the server saw, or None, the
    client's handshake failure events). Stops at the first answer or refusal."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 10_000)  # one attempt: no retries to count
    if own is not None:
        as_client(sock, own, node.gate.keys.own.public)
    monitor = sock.get_monitor_socket(HANDSHAKE_FAILED)
    router = node.routers[domain]
    sock.connect(router.getsockopt_string(zmq.LAST_ENDPOINT))
    sock.send(b"hello")
    failures = 0
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if router.poll(20):
                frames = router.recv_multipart(copy=False)
                return frames[-1].get("User-Id"), failures
            if monitor.poll(0):
                parse_monitor_message(monitor.recv_multipart())
                failures += 1
                return None, failures
        raise AssertionError("neither accepted nor refused")
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def wait_count(counted: list[str], n: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while len(counted) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_raft_domain_takes_current_members_only_named_by_their_key(node, curve_dir) -> None:
    counted = node.counted
    assert attempt(node, RAFT_DOMAIN, pair(curve_dir, "node2"))[0] == "node2"
    assert attempt(node, RAFT_DOMAIN, pair(curve_dir, "node3"))[0] is None
    assert attempt(node, RAFT_DOMAIN, pair(curve_dir, "ops"))[0] is None
    wait_count(counted, 2)
    assert counted == [RAFT_DOMAIN, RAFT_DOMAIN]


def test_the_raft_domain_follows_membership_changes(node, curve_dir) -> None:
    node.gate.follow(frozenset({1, 3}))
    assert attempt(node, RAFT_DOMAIN, pair(curve_dir, "node3"))[0] == "node3"
    assert attempt(node, RAFT_DOMAIN, pair(curve_dir, "node2"))[0] is None


def test_the_client_domain_takes_clients_members_and_the_nodes_own_key(node, curve_dir) -> None:
    for name in ("ops", "node1", "node2"):
        assert attempt(node, CLIENT_DOMAIN, pair(curve_dir, name))[0] == name
    stranger = KeyPair(*zmq.curve_keypair())
    assert attempt(node, CLIENT_DOMAIN, stranger)[0] is None


def test_new_client_keys_count_only_after_reload(node, curve_dir, tmp_path) -> None:
    public, secret = keygen(tmp_path / "elsewhere", "later")
    (curve_dir / CLIENTS_DIR / public.name).write_bytes(public.read_bytes())
    later = load_secret(secret)
    assert attempt(node, CLIENT_DOMAIN, later)[0] is None
    node.gate.reload_clients()
    assert attempt(node, CLIENT_DOMAIN, later)[0] == "later"


def test_a_plain_peer_is_counted_once_like_a_refused_key(node) -> None:
    counted = node.counted
    user, failures = attempt(node, RAFT_DOMAIN, None)
    assert user is None and failures == 1
    wait_count(counted, 1)
    time.sleep(0.2)  # a second count would come from the same thread within this
    assert counted == [RAFT_DOMAIN]


def test_refusals_are_logged_once_a_minute_per_source(node, curve_dir, caplog) -> None:
    counted = node.counted
    caplog.set_level(logging.WARNING, "raftkvd.net.zap")
    for _ in range(3):
        attempt(node, RAFT_DOMAIN, pair(curve_dir, "ops"))
    node.clock.now += 61
    attempt(node, RAFT_DOMAIN, pair(curve_dir, "ops"))
    wait_count(counted, 4)
    lines = [r.getMessage() for r in caplog.records if "security_rejected" in r.getMessage()]
    assert lines == ["node=1 event=security_rejected endpoint=raft source=127.0.0.1"] * 2
