"""A write retried after a leader change is applied once (SPEC §4, thesis §6.3): the client
resends the same (session, seq) to the new leader and gets the first result back.

The write is a compare-and-set increment, so a second application would fail its compare
(or bump the value twice); the store's revision, which grows by one per applied mutation,
shows how many mutations happened in all.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import zmq
from cluster import ProcCluster, wait_for

from raftkv.frames import encode_client

pytestmark = pytest.mark.timeout(120)

RETRY_DEADLINE_S = 10.0
SESSION = f"exactly-once-{uuid.uuid4().hex}"


def send(cluster: ProcCluster, node_id: int, request: dict[str, Any]) -> dict[str, Any]:
    reply = cluster.request(node_id, request, timeout=5.0)
    assert reply is not None, f"node {node_id} did not answer {request}"
    return reply


def resend_until_answered(cluster: ProcCluster, request: dict[str, Any], dead: int) -> dict[str, Any]:
    """What a client does after a leader change: the same request to whoever leads now."""
    deadline = time.monotonic() + RETRY_DEADLINE_S
    replies = []
    while time.monotonic() < deadline:
        leader = cluster.wait_for_leader(exclude=[dead])
        reply = cluster.request(leader, request, timeout=2.0)
        replies.append(reply)
        if reply is not None and reply["code"] not in ("not_leader", "unavailable"):
            return reply
    raise AssertionError(f"no leader took the retry: {replies[-3:]}")


def increment(expected: str | None, new: str, seq: int) -> dict[str, Any]:
    return {"op": "cas", "key": "counter", "expected": expected, "value": new,
            "session": SESSION, "seq": seq}


def probe_revision(cluster: ProcCluster) -> int:
    """The store's current revision, bumped by one write with its own session."""
    return cluster.client().put("probe", "x")


def settle(cluster: ProcCluster, old: int) -> int:
    cluster.start(old)
    leader = cluster.wait_for_leader()
    commit = cluster.status(leader)["commit"]
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, commit)
    return leader


def test_write_retried_after_leader_change_is_applied_once(cluster: ProcCluster) -> None:
    kv = cluster.client()
    # 1: the answer arrived; the client (say, unsure of it) retries on the new leader
    leader = cluster.wait_for_leader()
    first = send(cluster, leader, increment(None, "1", seq=1))
    assert first["code"] == "ok", first
    cluster.kill(leader)
    retried = resend_until_answered(cluster, increment(None, "1", seq=1), dead=leader)
    assert retried["code"] == "ok" and retried["revision"] == first["revision"], (
        f"the retry must return the first result {first}, got {retried}"
    )
    assert kv.get("counter") == "1"
    revision = probe_revision(cluster)
    assert revision == first["revision"] + 1, "exactly one mutation between the two revisions"

    # 2: the leader dies after replicating the write but before the client reads the answer
    leader = settle(cluster, leader)
    followers = [i for i in cluster.ids if i != leader]
    last = cluster.status(leader)["last_index"]
    send_only(cluster, leader, increment("1", "2", seq=2))
    wait_for("the write to reach both followers' logs",
             lambda: all((cluster.status(f) or {}).get("last_index", 0) > last for f in followers),
             5.0, cluster.describe)
    cluster.kill(leader)
    retried = resend_until_answered(cluster, increment("1", "2", seq=2), dead=leader)
    assert retried["code"] == "ok", f"the retry was applied a second time: {retried}"
    assert retried["revision"] == revision + 1
    assert kv.get("counter") == "2"
    revision = probe_revision(cluster)
    assert revision == retried["revision"] + 1, "exactly one mutation between the two revisions"

    # 3: the leader dies at once: the first copy may be lost or committed; either way, once
    leader = settle(cluster, leader)
    send_only(cluster, leader, increment("2", "3", seq=3))
    cluster.kill(leader)
    retried = resend_until_answered(cluster, increment("2", "3", seq=3), dead=leader)
    assert retried["code"] == "ok", f"the retry was applied a second time: {retried}"
    assert retried["revision"] == revision + 1
    assert kv.get("counter") == "3"
    assert probe_revision(cluster) == retried["revision"] + 1

    # an older seq of the same session is refused, never re-executed
    stale = send(cluster, cluster.wait_for_leader(), increment("3", "4", seq=2))
    assert stale["code"] == "invalid", stale
    assert kv.get("counter") == "3"


def send_only(cluster: ProcCluster, node_id: int, request: dict[str, Any]) -> None:
    """Send a request and never read its answer (as if the client lost it)."""
    sock = cluster.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(cluster.specs[node_id].client)
    sock.send(encode_client({"id": 1, **request}))
    sock.close()
