"""CurveZMQ on every peer link and client endpoint (SPEC §8), with real processes: a secured
cluster serves raftctl and REST; a key that is not a member's, or no CURVE at all, cannot
vote, append or write and is counted; raftctl without an accepted key says so in one line
with exit 2; client keys follow SIGHUP and member keys follow membership; no key in a log."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from cluster import RAFTCTL, ProcCluster, run_cli, wait_for
from curve_keys import follow_keys, ops_key, secure

from raftkv.curve import (
    CLIENTS_DIR,
    KeyPair,
    keygen,
    load_public,
    load_secret,
    node_key_name,
    node_public_path,
)
from raftkvd.net.peerwire import encode_message
from raftkvd.raft.messages import Message, MessageType

pytestmark = pytest.mark.timeout(120)

REFUSAL_DEADLINE_S = 3.0
"""raftctl --timeout in the refusal tests: a refusal must come well before it."""


def raftctl(cluster: ProcCluster, key: Path | None, *args: str, timeout: float = 5.0):
    keyed = ["--key", str(key)] if key is not None else []
    return run_cli(RAFTCTL, "--config", str(cluster.config_path), "--timeout", str(timeout), *keyed,
                   *args)


def rejected(cluster: ProcCluster, node_id: int, endpoint: str) -> float:
    """The node's raftkvd_security_rejected_total{endpoint=...}."""
    text = cluster.ok_reply(node_id, "metrics", 2.0)["text"]
    found = re.search(rf'^raftkvd_security_rejected_total{{endpoint="{endpoint}"}} (\S+)$', text, re.M)
    assert found, "the node exports no raftkvd_security_rejected_total"
    return float(found.group(1))


@pytest.fixture
def secured(make_cluster: Callable[..., ProcCluster]) -> tuple[ProcCluster, Path]:
    cluster = make_cluster()
    curve_dir = secure(cluster)
    cluster.start_all()
    return cluster, curve_dir


def test_a_secured_cluster_serves_raftctl_and_rest_through_the_forwarder(
    secured: tuple[ProcCluster, Path],
) -> None:
    cluster, curve_dir = secured
    key = ops_key(curve_dir)
    assert raftctl(cluster, key, "put", "k", "v1").stdout.strip() == "OK"
    assert raftctl(cluster, key, "get", "k").stdout.strip() == "v1"
    status = raftctl(cluster, key, "-o", "json", "status")
    assert status.returncode == 0, status.stderr
    assert all(node["reachable"] for node in json.loads(status.stdout)), status.stdout
    assert raftctl(cluster, key, "del", "k").stdout.strip() == "deleted"
    bench = raftctl(cluster, key, "-o", "json", "bench", "put", "--clients", "2", "--total", "40")
    assert bench.returncode == 0 and json.loads(bench.stdout)["ops"] == 40, bench.stderr
    follower = next(i for i in cluster.ids if i != cluster.wait_for_leader())
    base = f"http://127.0.0.1:{cluster.specs[follower].http_port}"
    put = urllib.request.Request(f"{base}/kv/r", data=b'{"value": "rest"}', method="PUT")
    with urllib.request.urlopen(put, timeout=10) as response:  # forwarded to the leader
        assert response.status == 200
    with urllib.request.urlopen(f"{base}/kv/r", timeout=10) as response:
        assert json.loads(response.read())["value"] == "rest"


def _send_raft(cluster: ProcCluster, node_id: int, frm: int, term: int,
               curve: tuple[KeyPair, bytes] | None) -> None:
    """A heartbeat and a vote request in `frm`'s name at `term`, as a peer would send them
    (the project's own wire encoder), over a DEALER with `curve` keys or plain (NULL)."""
    sock = cluster.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, str(frm).encode())
    if curve is not None:
        sock.curve_secretkey, sock.curve_publickey = curve[0].secret, curve[0].public
        sock.curve_serverkey = curve[1]
    sock.connect(cluster.specs[node_id].raft)
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for kind in (MessageType.HEARTBEAT, MessageType.VOTE):
                try:
                    sock.send(encode_message(Message(kind, to=node_id, frm=frm, term=term, index=10**6,
                                                     log_term=term)), zmq.NOBLOCK)
                except zmq.Again:
                    pass
            sock.poll(50)
    finally:
        sock.close(0)


@pytest.mark.parametrize("mechanism", ["unknown curve key", "plain NULL"])
def test_a_peer_without_a_members_key_cannot_raise_the_term_and_is_counted(
    secured: tuple[ProcCluster, Path], mechanism: str,
) -> None:
    cluster, curve_dir = secured
    leader = cluster.wait_for_leader()
    target = next(i for i in cluster.ids if i != leader)
    term = cluster.status(target)["term"]
    before = rejected(cluster, target, "raft")
    stranger = KeyPair(*zmq.curve_keypair())
    server_key = load_public(node_public_path(curve_dir, target))
    _send_raft(cluster, target, leader, term + 100,
               (stranger, server_key) if mechanism == "unknown curve key" else None)
    assert max(cluster.status(i)["term"] for i in cluster.ids) == term
    assert cluster.wait_for_leader() == leader
    assert cluster.status(target)["malformed_frames"] == 0  # nothing of it reached the node
    wait_for("the refusal to be counted", lambda: rejected(cluster, target, "raft") > before, 5.0)
    assert "event=security_rejected endpoint=raft" in cluster.log_tail(target, 200)


def test_a_member_cannot_speak_in_another_members_name(secured: tuple[ProcCluster, Path]) -> None:
    cluster, curve_dir = secured
    leader = cluster.wait_for_leader()
    target, other = (i for i in cluster.ids if i != leader)
    term = cluster.status(target)["term"]
    others_pair = load_secret(curve_dir / f"{node_key_name(other)}.key_secret")
    _send_raft(cluster, target, leader, term + 100,
               (others_pair, load_public(node_public_path(curve_dir, target))))
    assert max(cluster.status(i)["term"] for i in cluster.ids) == term
    assert cluster.wait_for_leader() == leader


def test_raftctl_without_an_accepted_key_exits_2_in_one_line_before_its_timeout(
    secured: tuple[ProcCluster, Path],
) -> None:
    cluster, curve_dir = secured
    keygen(cluster.root / "strangers", "stranger")
    endpoints = ",".join(cluster.endpoints())
    runs = {
        "no --key": run_cli(RAFTCTL, "-e", endpoints, "--timeout", str(REFUSAL_DEADLINE_S), "get", "k"),
        "no --key, --config": raftctl(cluster, None, "get", "k", timeout=REFUSAL_DEADLINE_S),
        "unknown key": raftctl(cluster, cluster.root / "strangers" / "stranger.key_secret", "get", "k",
                               timeout=REFUSAL_DEADLINE_S),
        "--key without --config": run_cli(RAFTCTL, "-e", endpoints, "--key", str(ops_key(curve_dir)),
                                          "get", "k"),
    }
    for case, result in runs.items():
        assert result.returncode == 2, f"{case}: {result.returncode} {result.stderr}"
        assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout, case
    started = time.monotonic()
    raftctl(cluster, cluster.root / "strangers" / "stranger.key_secret", "get", "k", timeout=30)
    assert time.monotonic() - started < 10, "a refused key must not wait out the timeout"
    assert rejected(cluster, 1, "client") > 0


def test_a_client_key_added_to_clients_is_accepted_after_sighup_and_not_before(
    secured: tuple[ProcCluster, Path],
) -> None:
    cluster, curve_dir = secured
    new_public, new_secret = keygen(cluster.root / "later", "later")
    (curve_dir / CLIENTS_DIR / new_public.name).write_bytes(new_public.read_bytes())
    before = raftctl(cluster, new_secret, "put", "later", "x", timeout=REFUSAL_DEADLINE_S)
    assert before.returncode == 2, before.stderr
    for node_id in cluster.ids:
        cluster.reload(node_id)
    wait_for("the new key to be accepted after SIGHUP",
             lambda: raftctl(cluster, new_secret, "put", "later", "x").returncode == 0, 10.0,
             cluster.describe)
    assert cluster.client().get("later") == "x"


def test_a_member_added_with_its_key_joins_and_a_removed_members_key_is_refused(
    secured: tuple[ProcCluster, Path],
) -> None:
    cluster, curve_dir = secured
    key = ops_key(curve_dir)
    for n in range(20):
        cluster.client().put(f"m/{n:02d}", str(n))
    new = cluster.add_spec()
    keygen(curve_dir, node_key_name(new.id))
    follow_keys(cluster, curve_dir)
    added = raftctl(cluster, key, "member", "add", str(new.id), new.raft, new.client,
                    f"127.0.0.1:{new.http_port}")
    assert added.returncode == 0, added.stderr
    cluster.start(new.id, join=True)
    wait_for(f"node {new.id} to catch up as a voter",
             lambda: (s := cluster.status(new.id)) is not None and s["keys"] == 20
             and new.id in s["voters"], 40.0, cluster.describe)

    leader = cluster.wait_for_leader()
    gone = next(i for i in cluster.ids if i not in (leader, new.id))
    removed = raftctl(cluster, key, "member", "remove", str(gone))
    assert removed.returncode == 0, removed.stderr
    wait_for(f"node {gone} to exit", lambda: not cluster.is_running(gone), 20.0)
    term = cluster.status(leader)["term"]
    old_pair = load_secret(curve_dir / f"{node_key_name(gone)}.key_secret")
    before = rejected(cluster, new.id, "raft")
    _send_raft(cluster, new.id, leader, term + 100,
               (old_pair, load_public(node_public_path(curve_dir, new.id))))
    wait_for("the removed member's key to be refused",
             lambda: rejected(cluster, new.id, "raft") > before, 5.0)
    assert cluster.status(new.id)["term"] == term


def test_no_key_appears_in_any_node_log(secured: tuple[ProcCluster, Path]) -> None:
    cluster, curve_dir = secured
    raftctl(cluster, ops_key(curve_dir), "put", "k", "v")
    stranger = KeyPair(*zmq.curve_keypair())
    _send_raft(cluster, 1, 2, 1, (stranger, load_public(node_public_path(curve_dir, 1))))
    secrets = set()
    for path in curve_dir.rglob("*.key_secret"):
        pair = load_secret(path)
        secrets |= {pair.public, pair.secret}
    secrets |= {stranger.public, stranger.secret}
    logs = {i: s.log_path.read_bytes() for i, s in cluster.specs.items()}
    assert any(b"event=security_rejected" in text for text in logs.values())
    for node_id, text in logs.items():
        for key in secrets:
            assert key not in text, f"node {node_id}'s log holds a key"
