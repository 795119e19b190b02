"""The node's own bookkeeping, on the simulator: what the replica counts and reports."""

from __future__ import annotations

import pytest

from .cluster import NetFaults, make_cluster
from .workload import has_working_leader

ELECTION = 10


def test_leader_changes_count_new_leaders_not_passes_through_none() -> None:
    """raftkvd_server_leader_changes_seen_total once counted "no leader" too (7 after 4
    elections); etcd counts the leaders a node has seen."""
    cluster = make_cluster(3, seed=21, faults=NetFaults())
    cluster.tick_until(lambda: has_working_leader(cluster), 20 * ELECTION, "a leader")
    for _ in range(2):
        leader = cluster.leader()
        target = next(i for i in sorted(cluster.nodes) if i != leader)
        cluster.transfer_leadership(target)
        cluster.tick_until(lambda t=target: cluster.leader() == t and has_working_leader(cluster),
                           5 * ELECTION, "the transfer")
        cluster.one(expected=3)
    counts = {node.id: node.replica.leader_changes for node in cluster.live()}
    assert counts == {1: 3, 2: 3, 3: 3}, counts


@pytest.mark.parametrize("who", ["leader", "follower"])
def test_a_removed_node_soon_reports_itself_unhealthy(monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    """A removed node's /health said healthy. The removed leader applies its own removal and
    says it is no member; a removed follower (which may never hear that its removal committed:
    the leader stops talking to it) loses its leader within a few election timeouts."""
    cluster = make_cluster(3, seed=22, faults=NetFaults())
    cluster.tick_until(lambda: has_working_leader(cluster), 20 * ELECTION, "a leader")
    monkeypatch.setattr(cluster, "_decommission", lambda node_id: None)  # the operator waits
    leader = cluster.leader()
    victim = leader if who == "leader" else next(i for i in sorted(cluster.nodes) if i != leader)
    replica = cluster.nodes[victim].replica
    assert replica.status()["healthy"]
    assert cluster.remove(victim)
    cluster.tick_until(lambda: not replica.status()["healthy"], 5 * ELECTION, "unhealthy")
    status = replica.status()
    assert not status["ready"]
    if who == "leader":
        assert status["member"] is False
