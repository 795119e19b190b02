"""Removed members stop (SPEC §3): a node the log removed logs one line and exits 0, so that
its supervisor leaves it down (systemd's Restart=on-failure does not restart an exit 0), and
it never moves the cluster's term meanwhile. Real processes: a follower removed while it was
SIGSTOPped (it missed its removal: the others tell it once it contacts them), a running
follower, and a restart of a removed node's data dir."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable

import pytest
from cluster import RAFTCTL, ProcCluster, run_cli, wait_for

pytestmark = pytest.mark.timeout(120)

EXIT_WITHIN_S = 20.0


def remove(cluster: ProcCluster, node_id: int, via: list[int]) -> None:
    result = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints(via)), "member", "remove", str(node_id))
    assert result.returncode == 0, result.stderr
    assert f"removed node {node_id}" in result.stdout


def exit_code(cluster: ProcCluster, node_id: int, timeout: float = EXIT_WITHIN_S) -> tuple[int, float]:
    """Wait for the node to exit on its own; its exit code and the seconds it took."""
    started = time.monotonic()
    try:
        code = cluster.procs[node_id].wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"node {node_id} still runs {timeout}s after its removal:\n"
                             f"{cluster.log_tail(node_id)}") from None
    return code, time.monotonic() - started


def cluster_and_follower(make_cluster: Callable[..., ProcCluster]) -> tuple[ProcCluster, int, list[int]]:
    """A running 3-node cluster, a follower to remove, and the others."""
    cluster = make_cluster()
    leader = cluster.start_all()
    victim = next(i for i in cluster.ids if i != leader)
    return cluster, victim, [i for i in cluster.ids if i != victim]


def terms(cluster: ProcCluster, ids: list[int]) -> dict[int, int]:
    out = {}
    for node_id in ids:
        status = cluster.status(node_id)
        assert status is not None, f"node {node_id} does not answer"
        out[node_id] = status["term"]
    return out


def test_a_follower_removed_while_stopped_exits_0_when_resumed_and_no_term_moves(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster, victim, rest = cluster_and_follower(make_cluster)
    cluster.client(cluster.endpoints(rest)).put("before", "1")
    cluster.pause(victim)
    remove(cluster, victim, rest)
    before = terms(cluster, rest)
    cluster.resume(victim)
    code, took = exit_code(cluster, victim)
    print(f"\nfollower removed while SIGSTOPped: exit {code} {took:.2f} s after SIGCONT")
    assert code == 0, cluster.log_tail(victim)
    log = cluster.log_tail(victim)
    assert log.count("event=removed_from_cluster") == 1 and "told_by=" in log, log
    assert terms(cluster, rest) == before
    kv = cluster.client(cluster.endpoints(rest))
    kv.put("after", "2")
    assert kv.get("before") == "1" and kv.get("after") == "2"


def test_a_running_follower_removed_exits_0_and_stays_down_on_restart(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster, victim, rest = cluster_and_follower(make_cluster)
    before = terms(cluster, rest)
    remove(cluster, victim, rest)
    code, took = exit_code(cluster, victim)
    print(f"\nrunning follower removed: exit {code} {took:.2f} s after the answer")
    assert code == 0, cluster.log_tail(victim)
    assert terms(cluster, rest) == before
    # started again on its old data dir (a supervisor that restarts anything): it stops at once
    cluster.start(victim)
    code, _ = exit_code(cluster, victim)
    assert code == 0
    assert cluster.log_tail(victim).count("event=removed_from_cluster") == 2
    assert terms(cluster, rest) == before


def test_a_removed_id_can_be_added_again_with_a_fresh_data_dir(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    """The remembered removal does not stop the id's next life: the new node has applied past it."""
    cluster, victim, rest = cluster_and_follower(make_cluster)
    remove(cluster, victim, rest)
    assert exit_code(cluster, victim)[0] == 0
    spec = cluster.specs[victim]
    shutil.rmtree(spec.data_dir)
    result = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints(rest)), "member", "add", str(victim),
                     spec.raft, spec.client, f"127.0.0.1:{spec.http_port}")
    assert result.returncode == 0, result.stderr
    cluster.start(victim, join=True)
    cluster.client(cluster.endpoints(rest)).put("again", "yes")
    wait_for(f"node {victim} back as a voter holding the new key",
             lambda: (st := cluster.status(victim)) is not None and victim in st["voters"]
             and st["keys"] == 1, 30.0, cluster.describe)
    assert cluster.is_running(victim)
