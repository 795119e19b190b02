"""Leader-lease reads (raftkvd/server/reads.py): a linearizable read on a leader whose lease
holds is answered in the turn it arrives, with no ReadIndex round; without a lease it waits
for one. The lease runs out after half an election timeout, ends with the leadership, and
never returns in a term in which the leader began a transfer, and a restarted follower
does not vote it away. Each rule has a case here that fails without it: the random seeds
(tests/sim/test_sim_seeds.py, `make sim`) check the lease under partitions, drifting
clocks, crashes and restarts too, but reach these timings rarely."""

from __future__ import annotations

import pytest

from raftkvd.raft.messages import MessageType, StateRole
from raftkvd.server import reads

from .checker import SafetyViolation
from .clients import KEYS, Outcome
from .cluster import NetFaults, SimCluster, make_cluster
from .workload import has_working_leader

ELECTION = 10
MT = MessageType


def _settled(seed: int = 0, read_lease: bool = True) -> tuple[SimCluster, int]:
    cluster = make_cluster(3, seed, faults=NetFaults(), election_tick=ELECTION, read_lease=read_lease)
    cluster.tick_until(lambda: has_working_leader(cluster), 20 * ELECTION, "a leader")
    cluster.run_until_quiet()
    leader = cluster.leader()
    assert leader is not None
    return cluster, leader


def _read(cluster: SimCluster, node: int) -> Outcome:
    """A linearizable read at `node`: whether it was answered at once (DONE) or waits."""
    return cluster.clients.read_once("lease-test", node).outcome


def test_a_read_in_the_lease_is_answered_at_once_without_a_round() -> None:
    cluster, leader = _settled()
    assert _read(cluster, leader) is Outcome.PENDING, "no lease yet: this read needs a round"
    cluster.run_until_quiet()
    heartbeats = cluster.net.sent.get(MT.HEARTBEAT, 0)
    for _ in range(5):
        assert _read(cluster, leader) is Outcome.DONE
    cluster.run_until_quiet()
    assert cluster.net.sent.get(MT.HEARTBEAT, 0) == heartbeats, "no round for reads in the lease"


def test_the_lease_runs_out_after_half_an_election_timeout() -> None:
    cluster, leader = _settled()
    _read(cluster, leader)
    cluster.run_until_quiet()
    assert _read(cluster, leader) is Outcome.DONE
    cluster.tick(ELECTION // 2 + 1)  # no reads meanwhile: nothing renewed the lease
    assert _read(cluster, leader) is Outcome.PENDING


def test_reads_keep_the_lease_renewed() -> None:
    cluster, leader = _settled()
    _read(cluster, leader)
    cluster.run_until_quiet()
    for _ in range(3 * ELECTION):  # three election timeouts of reads, each answered at once
        assert _read(cluster, leader) is Outcome.DONE
        cluster.tick()
        cluster.run_until_quiet()


def test_no_lease_in_a_term_with_a_leadership_transfer() -> None:
    cluster, leader = _settled(seed=10)
    _read(cluster, leader)
    cluster.run_until_quiet()
    target = next(i for i in sorted(cluster.nodes) if i != leader)
    cluster.isolate(target)  # the transfer cannot finish: the leader abandons it
    cluster.transfer_leadership(target)
    assert _read(cluster, leader) is Outcome.PENDING, "a transfer ends the lease at once"
    cluster.tick(ELECTION + 1)
    assert cluster.leader() == leader and cluster.raft(leader).lead_transferee == 0
    for _ in range(3):  # rounds still answer reads, but grant no lease in this term
        assert _read(cluster, leader) is Outcome.PENDING
        cluster.run_until_quiet()


def test_a_new_leader_starts_without_a_lease() -> None:
    cluster, leader = _settled()
    _read(cluster, leader)
    cluster.run_until_quiet()
    cluster.crash(leader)
    cluster.tick_until(lambda: has_working_leader(cluster), 20 * ELECTION, "a new leader")
    cluster.run_until_quiet()
    new = cluster.leader()
    assert new is not None and new != leader
    assert _read(cluster, new) is Outcome.PENDING


def test_without_read_lease_every_read_waits_for_a_round() -> None:
    cluster, leader = _settled(read_lease=False)
    for _ in range(3):
        assert _read(cluster, leader) is Outcome.PENDING
        cluster.run_until_quiet()


def test_a_restarted_follower_does_not_vote_the_lease_away() -> None:
    """The lease's one trap: a follower that answered the leader's round, crashes and comes
    straight back would, with no memory of the leader, vote at once for a rival that then
    commits writes, while the old leader, cut off but in its lease, still answers reads.
    A restarted node waits an election timeout before it votes (core.py `_fresh`)."""
    cluster, leader = _settled(seed=3)
    follower, rival = (i for i in sorted(cluster.nodes) if i != leader)
    cluster.isolate(rival)
    cluster.tick(2 * ELECTION)  # the rival's term climbs with its campaigns (PreVote keeps it honest)
    _read(cluster, leader)
    cluster.run_until_quiet()  # the round: leader and follower, a quorum; the lease begins
    assert _read(cluster, leader) is Outcome.DONE
    cluster.crash(follower)
    cluster.restart(follower)
    cluster.partition({leader}, {follower, rival})
    cluster.campaign(rival)
    cluster.run_until_quiet()
    assert cluster.raft(rival).role is not StateRole.LEADER, "the restarted follower voted"
    assert cluster.propose(rival) is None
    assert _read(cluster, leader) is Outcome.DONE, "the old leader is still in its lease"
    cluster.run_until_quiet()


def _stale_reads_after_a_partition(cluster: SimCluster, leader: int) -> set[Outcome]:
    """Cut the leasing leader off, let the others elect a leader and write every key, then
    read at the old leader: how its reads were answered."""
    _read(cluster, leader)
    cluster.run_until_quiet()  # the lease begins
    others = [i for i in sorted(cluster.nodes) if i != leader]
    cluster.partition({leader}, set(others))
    cluster.tick_until(lambda: cluster.leader() in others and has_working_leader(cluster),
                       10 * ELECTION, "a leader on the other side")
    new = cluster.leader()
    for _ in range(4 * len(KEYS)):  # keys are drawn at random: this changes every one
        value = cluster.propose(new)
        cluster.run_until_quiet()
        assert value is not None and cluster.is_acked(value)
    return {_read(cluster, leader) for _ in range(2 * len(KEYS))}


def test_the_lease_ends_before_the_others_can_elect_a_leader() -> None:
    cluster, leader = _settled()
    assert _stale_reads_after_a_partition(cluster, leader) == {Outcome.PENDING}


def test_a_lease_longer_than_the_peers_wait_is_caught_as_a_stale_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reads, "LEASE_FRACTION", 4.0)
    cluster, leader = _settled()
    with pytest.raises(SafetyViolation, match="linearizable read"):
        _stale_reads_after_a_partition(cluster, leader)
