"""The REST server's own process (raftkvd/http/process.py, worker.py): it lives and dies with
its node, comes back if it crashes, and /metrics joins the node's registry with its own."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import ProcCluster, wait_for
from http_helpers import call, http_child, http_port, put, wait_status

pytestmark = pytest.mark.timeout(120)


def gone(pid: int) -> bool:
    """The process has exited (a zombie still waiting for its parent counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def follower_and_its_http_process(cluster: ProcCluster) -> tuple[int, int]:
    """Start the cluster; a follower's id and the pid of its HTTP process."""
    leader = cluster.start_all()
    node = next(i for i in cluster.ids if i != leader)
    child = http_child(cluster, node)
    assert child is not None
    return node, child


def test_a_node_killed_with_sigkill_takes_its_http_process_along(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    node, child = follower_and_its_http_process(cluster)
    cluster.kill(node)
    wait_for(f"HTTP process {child} of killed node {node} to exit", lambda: gone(child), 10.0)
    cluster.start(node)  # its port is free again: the restarted node serves HTTP
    assert wait_status(http_port(cluster, node), "/ready", 200).json()["node_id"] == node


def test_a_stopped_node_stops_its_http_process(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    node, child = follower_and_its_http_process(cluster)
    assert cluster.stop(node) == 0
    assert gone(child)
    assert "node_gone" not in cluster.log_tail(node), "a clean stop is not a dead node"


def test_a_crashed_http_process_is_restarted_by_its_node(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.start_all()
    port = http_port(cluster, leader)
    first = http_child(cluster, leader)
    assert first is not None
    os.kill(first, signal.SIGKILL)  # our own node's child, by pid
    wait_for("a new HTTP process", lambda: http_child(cluster, leader) not in (None, first), 10.0)
    wait_status(port, "/health", 200)
    assert put(port, "after-crash", "v").status == 200
    assert "event=http_process_exited" in cluster.log_tail(leader)


def test_metrics_join_the_node_registry_and_the_http_registry(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.start_all()
    port = http_port(cluster, leader)
    assert put(port, "m", "v").status == 200
    text = call(port, "GET", "/metrics").body.decode()
    assert "raftkvd_server_is_leader 1.0" in text  # from the node process
    assert 'raftkvd_client_requests_total{code="ok",op="put"}' in text
    assert 'raftkvd_http_requests_total{code="200",method="PUT",route="/kv/{key}"}' in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names)), "a metric family appears twice"
