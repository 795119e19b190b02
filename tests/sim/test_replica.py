"""The node's own bookkeeping, on the simulator: what the replica counts and reports."""

from __future__ import annotations

import pytest

from raftkvd.net.peerwire import RemovedNotice

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


@pytest.mark.parametrize("who", ["leader", "follower"])
def test_a_removed_node_learns_it_and_says_it_stops_without_moving_any_term(
        monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    """SPEC §3, removed members stop: the leader learns it by applying its own removal; a
    follower may never see that commit (the leader stops talking to it at once), so the
    members it keeps contacting tell it, naming the entry that removed it. Meanwhile its
    messages never reach their cores, and no term moves."""
    cluster = make_cluster(3, seed=23, faults=NetFaults())
    cluster.tick_until(lambda: has_working_leader(cluster), 20 * ELECTION, "a leader")
    monkeypatch.setattr(cluster, "_decommission", lambda node_id: None)  # the operator waits
    leader = cluster.leader()
    victim = leader if who == "leader" else next(i for i in sorted(cluster.nodes) if i != leader)
    others = [cluster.nodes[i] for i in sorted(cluster.nodes) if i != victim]
    replica = cluster.nodes[victim].replica
    assert cluster.remove(victim)
    cluster.tick_until(lambda: all(n.replica.sm.removed_at(victim) for n in others), 5 * ELECTION,
                       "the removal applied by the others")
    removal_index = others[0].replica.sm.removed_at(victim)

    def told() -> list[tuple[int, int]]:
        return [t for n in others for t in n.replica.removal.transport.told_removed if t[0] == victim]

    cluster.tick_until(lambda: replica.removal.removed or told(), 10 * ELECTION, "the news")
    if not replica.removal.removed:
        assert who == "follower"
        assert told()[0] == (victim, removal_index)
        sender = next(n.id for n in others)
        replica.step(RemovedNotice(victim, sender, removal_index))
    assert replica.removal.removed and replica.removal.removed_by in (removal_index, 0)
    terms = {n.id: n.replica.core.term for n in others}
    cluster.tick(10 * ELECTION)
    assert {n.id: n.replica.core.term for n in others} == terms


def test_a_notice_for_an_entry_already_applied_or_from_a_stranger_is_ignored() -> None:
    """A node removed and added again has applied past its removal: a member that lags
    behind the re-add must not stop it; nor may a node that is no member."""
    cluster = make_cluster(3, seed=24, faults=NetFaults())
    cluster.tick_until(lambda: has_working_leader(cluster), 20 * ELECTION, "a leader")
    cluster.one(expected=3)
    replica = cluster.nodes[1].replica
    applied = replica.sm.applied_index()
    replica.step(RemovedNotice(1, 2, applied))
    replica.step(RemovedNotice(1, 9, applied + 100))
    assert not replica.removal.removed
    replica.step(RemovedNotice(1, 2, applied + 1))
    assert replica.removal.removed
