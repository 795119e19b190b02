"""Named scenarios ported from the MIT 6.5840 Raft tests (REFERENCES.md §3), on the simulator.

Each function drives a SimCluster (checked after every event) and raises SafetyViolation or
LivenessFailure; tests/sim/test_scenarios.py and tests/sim/test_teeth.py call them.
Time: one tick stands for 6.5840's 100 ms heartbeat, so its 1 s election timeout is 10 ticks.
"""

from __future__ import annotations

import random

from .cluster import CRASH_BEFORE_PERSIST, CRASH_CLEAN, NetFaults, SimCluster, make_cluster

SHORT_SLEEP_TICKS = 1
"""6.5840 sleeps up to 13 ms between Figure 8 rounds: at most one tick here."""


def restart_all(cluster: SimCluster) -> None:
    cluster.heal()
    for node in cluster.nodes.values():
        node.crash_mode = None
        if not node.removed:
            cluster.restart(node.id)


def figure8(
    seed: int, rounds: int = 1000, unreliable: bool = False, nodes: int = 5, **knobs: int
) -> SimCluster:
    """TestFigure8 / TestFigure8Unreliable (§5.4.2): propose at every server, sleep a little, then
    crash (or, unreliable: cut off) the leader; keep three servers up. From round 200 of the
    unreliable variant most messages are delayed by up to two election timeouts (long reordering).
    At the end everyone returns and one more write must reach all servers."""
    rng = random.Random(seed)
    cluster = make_cluster(nodes, seed, faults=NetFaults(delay_max=1), **knobs)
    election = cluster.knobs.election_tick
    if unreliable:
        cluster.net.faults = NetFaults(drop=0.1, delay_max=2)
    cluster.one(expected=1)
    cut: set[int] = set()
    up = nodes
    for it in range(rounds):
        if unreliable and it == 200:
            cluster.net.faults.long_delay = 0.6
            cluster.net.faults.long_delay_max = 2 * election
        leader = None
        for node_id in sorted(cluster.nodes):
            if node_id not in cut and cluster.propose(node_id) is not None:
                leader = node_id
        if rng.random() < 0.1:
            cluster.tick(rng.randint(0, election // 2))
        else:
            cluster.tick(rng.randint(0, SHORT_SLEEP_TICKS))
        if leader is not None and (not unreliable or rng.random() < 0.5):
            if unreliable:
                cut.add(leader)
                _apply_cuts(cluster, cut)
            else:
                cluster.crash(leader, rng.choice((CRASH_CLEAN, CRASH_BEFORE_PERSIST)))
            up -= 1
        if up < 3:
            s = rng.choice(sorted(cluster.nodes))
            if unreliable and s in cut:
                cut.discard(s)
                _apply_cuts(cluster, cut)
                up += 1
            elif not unreliable and not cluster.nodes[s].up and cluster.nodes[s].crash_mode is None:
                cluster.restart(s)
                up += 1
        if not unreliable:
            up = sum(1 for node in cluster.nodes.values() if node.up and node.crash_mode is None)
    if unreliable:
        cluster.net.faults = NetFaults(delay_max=1)
    restart_all(cluster)
    cluster.one(expected=nodes, max_ticks=60 * election)
    return cluster


def _apply_cuts(cluster: SimCluster, cut: set[int]) -> None:
    cluster.heal()
    for node_id in cut:
        cluster.isolate(node_id)


def churn(
    seed: int, rounds: int = 20, unreliable: bool = False, nodes: int = 5, writers: int = 3
) -> SimCluster:
    """TestReliableChurn/TestUnreliableChurn: `writers` clients keep writing while servers are cut
    off, crashed and restarted at random for `rounds` rounds of 0.7 election timeouts; afterwards
    every write a client saw committed must be in every server's final state."""
    rng = random.Random(seed)
    faults = NetFaults(drop=0.1, delay_max=2) if unreliable else NetFaults(delay_max=1)
    cluster = make_cluster(nodes, seed, faults=faults)
    election = cluster.knobs.election_tick
    cut: set[int] = set()

    def clients(c: SimCluster) -> None:
        for _ in range(writers):
            target = c.leader() if rng.random() < 0.7 else rng.choice(sorted(c.nodes))
            if target is not None:
                c.propose(target)
        if c.now % 20 == 0:
            c.expire_requests(4 * election)

    cluster.on_tick = clients
    for _ in range(rounds):
        if rng.random() < 0.2:
            victim = rng.choice(sorted(cluster.nodes))
            cut.add(victim)
            _apply_cuts(cluster, cut)
        if rng.random() < 0.5:
            victim = rng.choice(sorted(cluster.nodes))
            if not cluster.nodes[victim].up:
                cluster.restart(victim)
            cut.discard(victim)
            _apply_cuts(cluster, cut)
        if rng.random() < 0.2:
            cluster.crash(rng.choice(sorted(cluster.nodes)), rng.choice((CRASH_CLEAN, CRASH_BEFORE_PERSIST)))
        cluster.tick(election * 7 // 10)
    cluster.on_tick = None
    cluster.net.faults = NetFaults(delay_max=1)
    restart_all(cluster)
    cluster.one(expected=nodes, max_ticks=60 * election)
    return cluster


def backup(seed: int, conflicting: int = 50) -> tuple[SimCluster, set[bytes]]:
    """TestBackup3B (5 servers): twice, a cut-off leader takes `conflicting` proposals that can never
    commit while the other side commits as many; when the sides swap, the stale servers must back
    up over all of them (thesis §5.3 fast backtracking). Returns the values that must never commit."""
    cluster = make_cluster(5, seed, faults=NetFaults())
    ids = sorted(cluster.nodes)
    cluster.one(expected=5)
    leader1 = cluster.leader()
    assert leader1 is not None
    pos = ids.index(leader1)
    r = [ids[(pos + k) % 5] for k in range(5)]
    doomed: set[bytes] = set()
    # leader1 and one follower are cut off; their proposals cannot commit
    cluster.partition({r[0], r[1]}, {r[2]}, {r[3]}, {r[4]})
    for _ in range(conflicting):
        value = cluster.propose(leader1)
        assert value is not None
        doomed.add(value)
    cluster.tick(cluster.knobs.election_tick // 2)
    # the other three elect a leader and commit
    cluster.partition({r[0]}, {r[1]}, {r[2], r[3], r[4]})
    for _ in range(conflicting):
        cluster.one(expected=3)
    leader2 = cluster.leader()
    assert leader2 in (r[2], r[3], r[4])
    other = r[2] if leader2 != r[2] else r[3]
    rest = ({r[2], r[3], r[4]} - {other, leader2}).pop()
    # leader2 keeps one follower; its proposals cannot commit either
    cluster.partition({r[0]}, {r[1]}, {other}, {leader2, rest})
    for _ in range(conflicting):
        value = cluster.propose(leader2)
        assert value is not None
        doomed.add(value)
    cluster.tick(cluster.knobs.election_tick // 2)
    # the original leader's pair returns with `other`: both back up over 50 conflicting entries
    cluster.partition({r[0], r[1], other}, {leader2}, {rest})
    for _ in range(conflicting):
        cluster.one(expected=3)
    # everyone: leader2 and its follower back up too
    cluster.heal()
    cluster.one(expected=5)
    return cluster, doomed
