"""Named scenarios (MIT 6.5840 ports and friends), each checked after every event by the checker."""

from __future__ import annotations

import pytest

from raftkv.protocol import Op
from raftkvd.kv import commands
from raftkvd.raft.messages import MessageType, StateRole

from .cluster import CRASH_CLEAN, NetFaults, SimCluster, addresses, make_cluster
from .scenarios import backup, churn, figure8
from .workload import has_working_leader

MT = MessageType
ELECTION = 10


def _leader(cluster: SimCluster) -> int:
    cluster.tick_until(lambda: has_working_leader(cluster), 20 * ELECTION, "a leader")
    leader = cluster.leader()
    assert leader is not None
    return leader


# ---- Figure 8 (§5.4.2) ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figure8_1000_rounds_on_5_nodes_never_loses_a_committed_entry(seed: int) -> None:
    cluster = figure8(seed, rounds=1000)
    assert max(cluster.checker.leaders) >= 20, "the leader must have crashed many times"
    cluster.ensure_same()
    cluster.ensure_acked_durable()
    cluster.ensure_log_matching()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figure8_with_long_reordering_never_loses_a_committed_entry(seed: int) -> None:
    cluster = figure8(seed, rounds=1000, unreliable=True)
    assert max(cluster.checker.leaders) >= 10
    cluster.ensure_same()
    cluster.ensure_acked_durable()
    cluster.ensure_log_matching()


def test_figure8_with_small_messages_and_one_inflight_append() -> None:
    """Catch-up appends split into many messages: where counting old-term replicas would bite."""
    for seed in range(10):
        cluster = figure8(seed, rounds=300, max_size_per_msg=64, max_inflight_msgs=1)
        cluster.ensure_same()


# ---- churn --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unreliable", [False, True], ids=["reliable", "unreliable"])
@pytest.mark.parametrize("seed", [1, 2])
def test_churn_every_acknowledged_write_is_in_the_final_log(seed: int, unreliable: bool) -> None:
    cluster = churn(seed, rounds=20, unreliable=unreliable, writers=3)
    assert len(cluster.acked_writes) >= 30
    cluster.ensure_same()
    cluster.ensure_acked_durable()
    for node in cluster.nodes.values():
        log_values = {v for e in node.storage.ents[1:] if (v := _put_value(e.data)) is not None}
        for value, index in cluster.acked_writes.items():
            if index >= node.storage.first_index():
                assert value in log_values, f"acknowledged {value!r} missing from node {node.id}'s log"
    assert set(cluster.acked_writes) <= cluster.applied_values()


def _put_value(data: bytes) -> bytes | None:
    cmd = commands.decode(data) if data else None
    return cmd.value.encode() if cmd is not None and isinstance(cmd.value, str) else None


# ---- backing up over conflicting entries (§5.3) ---------------------------------------------------------
def test_backup_over_50_conflicting_entries_twice() -> None:
    cluster, doomed = backup(seed=1, conflicting=50)
    assert len(doomed) == 100
    cluster.ensure_same(sorted(cluster.nodes))
    cluster.ensure_acked_durable(sorted(cluster.nodes))
    assert not doomed & cluster.applied_values(), "an entry that never reached a majority was applied"
    assert len(cluster.acked_writes) >= 101
    # Fast backtracking (thesis §5.3): a rejection skips a whole term, not one entry, so four
    # servers backing up over 50 entries each need a few rejections, not 200.
    assert cluster.net.rejected[MT.APPEND_RESP] <= 8


def test_backtracking_skips_a_term_per_rejection() -> None:
    """A follower 50 conflicting entries behind needs a handful of rejections, not 50."""
    cluster = make_cluster(3, seed=4, faults=NetFaults())
    leader = _leader(cluster)
    follower = next(i for i in sorted(cluster.nodes) if i != leader)
    other = next(i for i in sorted(cluster.nodes) if i not in (leader, follower))
    cluster.partition({leader, follower}, {other})
    cluster.isolate(leader)
    for _ in range(50):
        cluster.propose(leader)
    cluster.tick(2)
    cluster.heal()
    cluster.partition({leader}, {follower, other})
    for _ in range(5):
        cluster.one(expected=2)
    cluster.heal()
    rejects_before = _rejections(cluster)
    cluster.one(expected=3)
    cluster.tick(5)
    assert _rejections(cluster) - rejects_before <= 3
    cluster.ensure_same(sorted(cluster.nodes))


def _rejections(cluster: SimCluster) -> int:
    return cluster.net.rejected[MT.APPEND_RESP]


# ---- snapshots (§7) -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["disconnected", "crashed"])
def test_snapshot_installs_on_a_follower_that_missed_compacted_entries(how: str) -> None:
    cluster = make_cluster(3, seed=7, faults=NetFaults(delay_max=1), max_size_per_msg=64)
    leader = _leader(cluster)
    victim = next(i for i in sorted(cluster.nodes) if i != leader)
    cluster.one(expected=3)
    if how == "disconnected":
        cluster.isolate(victim)
    else:
        cluster.crash(victim, CRASH_CLEAN)
    for _ in range(60):
        cluster.one(expected=2)
    for node in cluster.live():
        assert cluster.compact(node.id)
    leader = cluster.leader()
    assert leader is not None and cluster.nodes[leader].storage.first_index() > 60
    chunks_before = cluster.net.sent[MT.SNAPSHOT]
    if how == "disconnected":
        cluster.heal()
    else:
        cluster.restart(victim)
    cluster.one(expected=3, max_ticks=40 * ELECTION)
    snapshot_bytes = len(cluster.nodes[victim].storage.snap.data)
    assert snapshot_bytes > 2 * 64
    assert cluster.net.sent[MT.SNAPSHOT] - chunks_before >= snapshot_bytes // 64, "sent in chunks"
    assert cluster.nodes[victim].storage.snap.meta.index >= 60
    cluster.ensure_same()
    cluster.ensure_acked_durable()


def test_snapshot_transfer_survives_compaction_during_the_transfer() -> None:
    """The leader compacts past the snapshot it is sending: the follower gets a newer one after."""
    cluster = make_cluster(3, seed=8, faults=NetFaults(delay_max=1), max_size_per_msg=64)
    leader = _leader(cluster)
    victim = next(i for i in sorted(cluster.nodes) if i != leader)
    cluster.isolate(victim)
    for _ in range(150):
        cluster.one(expected=2)
    for node in cluster.live():
        cluster.compact(node.id)
    first_snapshot = cluster.nodes[leader].storage.snap.meta.index
    cluster.heal()
    cluster.tick_until(
        lambda: cluster.raft(leader).prs[victim].transfer is not None, 5 * ELECTION, "transfer"
    )
    for _ in range(5):
        cluster.propose(leader)
    cluster.tick(2)
    for node in cluster.live():
        if node.id != victim:
            cluster.compact(node.id)
    assert cluster.raft(leader).prs[victim].transfer is not None, "still sending the older snapshot"
    cluster.one(expected=3, max_ticks=60 * ELECTION)
    assert cluster.nodes[victim].storage.snap.meta.index > first_snapshot, "then the newer one"
    cluster.ensure_same()


# ---- leadership transfer (thesis §3.10) ---------------------------------------------------------------
@pytest.mark.parametrize("lagging", [False, True], ids=["up-to-date", "lagging"])
def test_leadership_transfer_hands_over_within_an_election_timeout(lagging: bool) -> None:
    cluster = make_cluster(5, seed=9, faults=NetFaults(delay_max=1))
    leader = _leader(cluster)
    target = next(i for i in sorted(cluster.nodes) if i != leader)
    cluster.one(expected=5)
    if lagging:
        cluster.isolate(target)
        for _ in range(20):
            cluster.one(expected=4)
        cluster.heal()
        cluster.tick(2)  # heard from again: the leader refuses a transfer to a silent node
    term = cluster.raft(leader).term
    cluster.transfer_leadership(target)
    assert cluster.raft(leader).lead_transferee == target
    assert cluster.propose(leader) is None, "proposals are refused while a transfer is under way"
    used = cluster.tick_until(lambda: cluster.leader() == target, ELECTION, "transfer")
    assert used <= ELECTION
    assert cluster.raft(target).term == term + 1
    assert cluster.raft(leader).role is StateRole.FOLLOWER
    cluster.one(expected=5)
    cluster.ensure_acked_durable()


def test_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout() -> None:
    cluster = make_cluster(3, seed=10, faults=NetFaults())
    leader = _leader(cluster)
    target = next(i for i in sorted(cluster.nodes) if i != leader)
    cluster.isolate(target)
    cluster.transfer_leadership(target)
    assert cluster.propose(leader) is None
    cluster.tick(ELECTION + 1)
    assert cluster.leader() == leader and cluster.raft(leader).lead_transferee == 0
    assert cluster.propose(leader) is not None


# ---- membership (thesis §4.1) -------------------------------------------------------------------------
def test_add_and_remove_servers_including_the_leader() -> None:
    """Through the leader's own administration (`raftctl member add/remove`): a learner catches
    up and is promoted by the leader; removing the leader hands over to the others."""
    cluster = make_cluster(3, seed=11, faults=NetFaults(delay_max=1))
    leader = _leader(cluster)
    cluster.one(expected=3)
    # add a learner: it catches up, then the leader makes it a voter by itself
    new = cluster.new_node()
    assert cluster.add_learner(new)
    cluster.tick_until(lambda: new in cluster.raft(cluster.leader() or leader).conf.ids(), 50, "learner")
    cluster.one(expected=4)
    assert cluster.raft(new).role is StateRole.FOLLOWER
    cluster.tick_until(lambda: all(new in n.conf.voters for n in cluster.live()), 100, "promotion")
    cluster.one(expected=4)
    # remove the leader: it steps down once the removal commits, the others elect a new one
    old_leader = cluster.leader()
    assert old_leader is not None
    assert cluster.remove(old_leader)
    cluster.tick_until(lambda: cluster.nodes[old_leader].removed, 50, "removal")
    new_leader = _leader(cluster)
    assert new_leader != old_leader
    assert old_leader not in cluster.raft(new_leader).conf.ids()
    cluster.one(expected=3)
    # remove a follower, add another server
    follower = next(i for i in cluster.live_members() if i != new_leader)
    assert cluster.remove(follower)
    cluster.tick_until(lambda: cluster.nodes[follower].removed, 50, "removal")
    another = cluster.new_node()
    cluster.tick_until(lambda: cluster.add_learner(another), 50, "add")
    cluster.tick_until(lambda: another in cluster.members(), 100, "learner applied")
    cluster.tick_until(lambda: another in cluster.voters(), 100, "promoted and applied")
    cluster.one(expected=3)
    assert len(cluster.voters()) == 3
    cluster.ensure_same()
    cluster.ensure_acked_durable()


def test_only_one_membership_change_is_pending_at_a_time() -> None:
    cluster = make_cluster(3, seed=12, faults=NetFaults())
    _leader(cluster)
    first, second = cluster.new_node(), cluster.new_node()
    assert cluster.add_learner(first)
    assert not cluster.add_learner(second), "refused at once: a change is still pending"
    cluster.tick(3)
    assert cluster.add_learner(second)


def test_a_member_address_already_in_use_is_refused() -> None:
    """Two members on one address would steal each other's traffic (`raftctl member add 5`
    with node 1's addresses)."""
    cluster = make_cluster(3, seed=13, faults=NetFaults())
    leader = _leader(cluster)
    answer = cluster.admin(leader, Op.MEMBER_ADD, node_id=5, **addresses(1))
    assert answer is not None and answer["code"] == "invalid", answer
    assert "already used by node 1" in answer["error"]
    assert 5 not in cluster.raft(leader).conf.ids()


def test_a_newcomer_starts_from_a_snapshot_whoever_leads_when_it_connects() -> None:
    """The founding membership is not in the log: every node compacts as it applies the
    newcomer's addition, so a leader elected after that never sends it the log from index 1
    (found by the simulator: a newcomer replayed the log from 1 with an empty membership)."""
    cluster = make_cluster(3, seed=14, faults=NetFaults(delay_max=1))
    leader = _leader(cluster)
    cluster.one(expected=3)
    new = cluster.new_node()
    cluster.isolate(new)  # it hears nothing until leadership has moved
    assert cluster.add_learner(new)
    cluster.tick_until(lambda: all(new in n.conf.ids() for n in cluster.live() if n.id != new), 50, "added")
    assert all(n.storage.first_index() > 1 for n in cluster.live() if n.id != new)
    cluster.crash(leader)
    successor = _leader(cluster)
    assert successor != leader
    cluster.heal()
    cluster.tick_until(lambda: cluster.nodes[new].applied > 0, 100, "the newcomer catches up")
    assert cluster.snapshots_installed >= 1
    cluster.restart(leader)
    cluster.one(expected=4)
    cluster.tick(20)
    cluster.ensure_same()


# ---- message counts (6.5840 TestCount3B) -----------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_message_counts_on_3_nodes(seed: int) -> None:
    """Elect in <= 30 messages, commit 10 entries in <= 42, and only heartbeats when idle."""
    cluster = make_cluster(3, seed, faults=NetFaults())
    _leader(cluster)
    elect = cluster.net.message_count()
    assert elect <= 30, dict(cluster.net.sent)
    cluster.run_until_quiet()
    before = cluster.net.message_count()
    for _ in range(10):
        value = cluster.propose()
        assert value is not None
        cluster.run_until_quiet()
        assert cluster.is_acked(value)
    assert cluster.net.message_count() - before <= 42
    cluster.tick()
    cluster.run_until_quiet()
    sent = dict(cluster.net.sent)
    idle_ticks = 10 * ELECTION
    cluster.tick(idle_ticks)
    delta = {t: n - sent.get(t, 0) for t, n in cluster.net.sent.items() if n != sent.get(t, 0)}
    assert set(delta) == {MT.HEARTBEAT, MT.HEARTBEAT_RESP}
    assert sum(delta.values()) <= 2 * 2 * idle_ticks // cluster.knobs.heartbeat_tick


# ---- whole-cluster crashes (6.5840 3C/3D persistence) ------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2])
def test_crashing_every_server_and_restarting_loses_no_acknowledged_write(seed: int) -> None:
    cluster = make_cluster(5, seed, faults=NetFaults(delay_max=1), max_size_per_msg=256)
    _leader(cluster)
    for round_ in range(4):
        for _ in range(15):
            cluster.one(expected=3)
        if round_ % 2:
            for node in cluster.live():
                cluster.compact(node.id)
        applied = {i: cluster.nodes[i].applied for i in cluster.nodes}
        cluster.propose()  # in flight while everyone dies
        for node_id in sorted(cluster.nodes):
            cluster.crash(node_id, CRASH_CLEAN)
        for node_id in sorted(cluster.nodes):
            cluster.restart(node_id)
            assert cluster.raft(node_id).status().applied == applied[node_id], "applied never goes back"
    cluster.one(expected=5)
    assert len(cluster.acked_writes) >= 60
    cluster.ensure_same()
    cluster.ensure_acked_durable()
