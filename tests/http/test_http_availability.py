"""Readiness and availability over REST (SPEC §5): /ready before and after a leader, 503 with
Retry-After when there is no leader, and forwarding that follows a new leader."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from cluster import HOST, ProcCluster, wait_for
from http_helpers import call, http_port, put, wait_status

pytestmark = pytest.mark.timeout(120)

NO_LEADER_ANSWER_S = 4.0
"""A request with no leader is answered within the forwarder's wait (1 s) plus slack."""


def test_ready_and_health_are_503_until_a_leader_is_known_then_200(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    cluster.start(1)  # alone: no quorum, so no leader
    port = http_port(cluster, 1)
    not_ready = wait_status(port, "/ready", 503)
    assert not_ready.json()["status"] == "not ready" and not_ready.is_json_error()
    health = call(port, "GET", "/health")
    assert health.status == 503 and health.json()["status"] == "unhealthy"
    assert health.json()["leader_id"] is None and health.is_json_error()
    write = put(port, "early", "v")
    assert write.status == 503 and write.is_json_error() and write.headers["Retry-After"]

    cluster.start(2)
    ready = wait_status(port, "/ready", 200)
    assert ready.json()["status"] == "ready" and ready.json()["leader_id"] in (1, 2)
    assert wait_status(port, "/health", 200).json()["status"] == "healthy"
    assert put(port, "later", "v").status == 200


def test_a_restarted_node_is_ready_once_it_knows_a_leader(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.start_all()
    node = next(i for i in cluster.ids if i != leader)
    for n in range(50):
        assert put(http_port(cluster, leader), f"r/{n}", "v").status == 200
    committed = cluster.wait_applied(node, cluster.status(leader)["commit"])["applied"]
    cluster.restart(node)  # kill -9: what it had applied was committed when it restarts
    ready = wait_status(http_port(cluster, node), "/ready", 200)
    assert ready.json()["applied"] >= committed
    reply = call(http_port(cluster, node), "GET", "/kv/r/49?consistency=serializable")
    assert reply.status == 200 and reply.json()["value"] == "v"


def test_without_a_leader_writes_and_linearizable_reads_are_503_with_retry_after(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.start_all()
    survivor = next(i for i in cluster.ids if i != leader)
    port = http_port(cluster, survivor)
    assert put(port, "kept", "value").status == 200
    wait_for("the survivor to apply the write", lambda: call(
        port, "GET", "/kv/kept?consistency=serializable").status == 200, 10.0)
    for node_id in cluster.ids:
        if node_id != survivor:
            assert cluster.stop(node_id) == 0, "SIGTERM must stop a node (and its REST server) cleanly"

    unhealthy = wait_status(port, "/health", 503)
    assert unhealthy.json()["status"] == "unhealthy" and unhealthy.json()["node_id"] == survivor
    assert unhealthy.json()["leader_id"] is None and unhealthy.headers["Retry-After"]
    assert wait_status(port, "/ready", 503).is_json_error()
    for method, path, body in [("PUT", "/kv/lost", {"value": "v"}), ("DELETE", "/kv/kept", None),
                               ("GET", "/kv/kept", None), ("GET", "/kv?prefix=k", None)]:
        reply = call(port, method, path, body)
        assert reply.status == 503, (method, path, reply.body)
        assert reply.is_json_error() and int(reply.headers["Retry-After"]) >= 1
        assert reply.seconds < NO_LEADER_ANSWER_S
    stale = call(port, "GET", "/kv/kept?consistency=serializable")
    assert stale.status == 200 and stale.json() == {"key": "kept", "value": "value"}
    assert call(port, "GET", "/metrics").status == 200
    # the membership is the leader's to tell: 503, with this node's own view for the web view
    view = call(port, "GET", "/cluster")
    assert view.status == 503 and int(view.headers["Retry-After"]) >= 1, view.body
    assert [node["id"] for node in view.json()["nodes"]] == [survivor]


def test_a_follower_forwards_to_the_new_leader_after_the_old_one_dies(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    old = cluster.start_all()
    node = next(i for i in cluster.ids if i != old)
    port = http_port(cluster, node)
    assert put(port, "before", "1").status == 200  # the forwarder now knows the old leader
    cluster.kill(old)
    cluster.wait_for_leader(exclude=[old])

    def written() -> bool:
        return put(port, "after", "2").status == 200

    wait_for("a write through the follower after failover", written, 20.0)
    assert call(port, "GET", "/kv/before").json()["value"] == "1"
    assert call(port, "GET", "/kv/after").json()["value"] == "2"


def test_a_taken_http_address_stops_the_node_with_one_clear_line(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster(size=1)
    with socket.socket() as squatter:
        squatter.bind((HOST, http_port(cluster, 1)))
        squatter.listen()
        proc = cluster.start(1)
        assert proc.wait(timeout=20) == 1
    log = cluster.log_tail(1)
    assert "Traceback" not in log
    assert f"cannot serve http on {HOST}:{http_port(cluster, 1)}" in log
