"""What a random seed does to a cluster: a fault schedule with every fault kind, and clients.

`run_seed` is the whole simulation of one seed: faults and clients for `ticks` ticks, checked
after every event, then the faults stop and the cluster must elect a leader, commit each new
proposal within a bound, and converge, with every acknowledged write in every final state.
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field

from raftkv.protocol import Op
from raftkvd.raft.messages import StateRole

from .clients import Outcome
from .cluster import (
    CRASH_AFTER_PERSIST,
    CRASH_BEFORE_PERSIST,
    CRASH_CLEAN,
    CRASH_MID_WRITE,
    NetFaults,
    RaftKnobs,
    SimCluster,
)

FAULT_KINDS = (
    "partition",
    "one-way",
    "isolate-leader",
    "crash-clean",
    "crash-before-persist",
    "crash-mid-write",
    "crash-after-persist",
    "bounce",
    "figure8",
    "drop",
    "duplicate",
    "delay",
    "reorder",
    "skew",
    "transfer",
    "membership",
    "compact",
)
ELECTION_TICK = 10
LIVENESS_ELECTION_TICKS = 20 * ELECTION_TICK
"""After the faults stop, a leader that committed in its term must exist within this many ticks."""
LIVENESS_COMMIT_TICKS = 2 * ELECTION_TICK
"""...and then every proposal must commit within this many ticks."""
LIVENESS_CONVERGE_TICKS = 50 * ELECTION_TICK
"""...and every member catches up (snapshots in 64-byte chunks take a while) within this many."""
LIVENESS_PROPOSALS = 5
REQUEST_TIMEOUT_TICKS = 100
COMPACT_LAG = 8
CLIENTS = (4, 16)
"""Workload clients (drawn per seed), each with its own session and one request in flight:
many of them load followers enough that applying lags behind committing."""
LIVENESS_SESSION = "liveness"
CATCH_UP_TRANSFER = 0.3
"""Chance that a heal or restart is followed by a transfer to the voter lagging most."""


@dataclass
class SeedResult:
    seed: int
    nodes: int
    ticks: int
    ok: bool
    error: str = ""
    kind: str = ""
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)

    def replay_command(self) -> str:
        return replay_command(self.seed, self.nodes, self.ticks)


def replay_command(seed: int, nodes: int, ticks: int) -> str:
    return f".venv/bin/python -m tests.sim.run --seed {seed} --nodes {nodes} --ticks {ticks} -v"


def knobs_for(rng: random.Random) -> RaftKnobs:
    """Raft knobs drawn from the seed: small messages and windows exercise batching and chunking."""
    return RaftKnobs(
        election_tick=ELECTION_TICK,
        heartbeat_tick=rng.choice((1, 2, 3, 3, 3)),
        max_size_per_msg=rng.choice((64, 64, 256, 1 << 20)),
        max_inflight_msgs=rng.choice((1, 1, 4, 256)),
        max_apply_bytes=rng.choice((64, 8 << 20)),
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        snapshot_threshold=rng.choice((1 << 30, 1 << 30, 20, 60)),
        compaction_keep=rng.choice((2, 10)),
        readies_per_turn=rng.choice((1, 2, 8)),
    )


class RandomWorkload:
    """The nemesis and the clients, driven from the cluster's tick hook."""

    def __init__(self, rng: random.Random, n: int, ticks: int) -> None:
        self.rng = rng
        self.n = n
        self.base = NetFaults(
            drop=rng.choice((0.0, 0.0, 0.01, 0.05)),
            duplicate=rng.choice((0.0, 0.01, 0.05)),
            delay_max=rng.choice((0, 1, 2)),
        )
        self.clients_n = rng.choice(CLIENTS)
        self.write_rate = rng.choice((0.1, 0.3, 0.6))
        self.read_rate = rng.choice((0.05, 0.2))
        self.compact_rate = rng.choice((0.0, 0.01, 0.05))
        self.schedule: list[tuple[int, int, str, int]] = []
        self.repairs: list[tuple[int, int, str, int]] = []
        self.seq = 0
        self.counts: dict[str, int] = {}
        self.figure8_until = 0
        self.figure8_next = 0
        start, end = 20, max(40, ticks - 60)
        extra = ticks // 50
        kinds = list(FAULT_KINDS) + [rng.choice(FAULT_KINDS) for _ in range(extra)]
        for kind in kinds:
            self._push(self.schedule, rng.randint(start, end), kind)

    def _push(self, heap: list[tuple[int, int, str, int]], at: int, kind: str, arg: int = 0) -> None:
        self.seq += 1
        heapq.heappush(heap, (at, self.seq, kind, arg))

    def install(self, cluster: SimCluster) -> None:
        cluster.net.faults = NetFaults(**vars(self.base))
        cluster.on_tick = self

    # ---- each tick --------------------------------------------------------------------------
    def __call__(self, cluster: SimCluster) -> None:
        now = cluster.now
        while self.schedule and self.schedule[0][0] <= now:
            _, _, kind, _ = heapq.heappop(self.schedule)
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.inject(cluster, kind)
        while self.repairs and self.repairs[0][0] <= now:
            _, _, kind, arg = heapq.heappop(self.repairs)
            self.repair(cluster, kind, arg)
        if now < self.figure8_until:
            self.figure8_round(cluster)
        self.clients(cluster)

    def figure8_round(self, cluster: SimCluster) -> None:
        """6.5840 TestFigure8: propose, let it spread a little (or not), crash the leader, keep a
        majority up by restarting others; entries of old terms end up on minorities (§5.4.2)."""
        rng = self.rng
        if cluster.now < self.figure8_next:
            return
        self.figure8_next = cluster.now + (rng.randint(0, 2) if rng.random() < 0.9 else rng.randint(0, 6))
        leader = cluster.leader()
        if leader is not None:
            cluster.propose(leader)
            if rng.random() < 0.5:
                cluster.crash(leader, rng.choice((CRASH_CLEAN, CRASH_BEFORE_PERSIST)))
        down = [node.id for node in cluster.nodes.values() if not node.up and not node.removed]
        if down and len(cluster.nodes) - len(down) < (len(cluster.nodes) // 2) + 1:
            cluster.restart(rng.choice(down))

    def clients(self, cluster: SimCluster) -> None:
        rng = self.rng
        for n in range(self.clients_n):
            session = f"client{n}"
            if session in cluster.clients.busy:
                continue
            roll = rng.random() * 4
            if roll < self.write_rate:
                kind = Op.DELETE if rng.random() < 0.1 else Op.PUT
            elif roll < self.write_rate + self.read_rate:
                kind = Op.GET
            else:
                continue
            target = rng.choice(list(cluster.nodes)) if rng.random() < 0.1 else None
            cluster.clients.start(session, kind, target)
        if self.compact_rate and rng.random() < self.compact_rate * len(cluster.nodes):
            node = cluster.nodes[rng.choice(list(cluster.nodes))]
            if node.up and node.applied - node.storage.first_index() >= COMPACT_LAG:
                cluster.compact(node.id)
        if cluster.now % 50 == 0:
            cluster.expire_requests(REQUEST_TIMEOUT_TICKS)

    # ---- faults --------------------------------------------------------------------------------
    def _victim(self, cluster: SimCluster) -> int | None:
        live = [node.id for node in cluster.live() if not node.removed]
        if not live:
            return None
        leader = cluster.leader()
        if leader is not None and self.rng.random() < 0.4:
            return leader
        return self.rng.choice(live)

    def inject(self, cluster: SimCluster, kind: str) -> None:
        rng = self.rng
        ids = sorted(cluster.nodes)
        duration = rng.randint(10, 250)
        at = cluster.now + duration
        faults = cluster.net.faults
        if kind == "partition":
            size = rng.randint(1, max(1, len(ids) // 2))
            side = set(rng.sample(ids, size))
            cluster.partition(side, set(ids) - side)
            self._push(self.repairs, at, "heal")
        elif kind == "one-way":
            frm = set(rng.sample(ids, rng.randint(1, 2)))
            to = set(rng.sample(ids, rng.randint(1, len(ids) - 1))) - frm
            cluster.cut_one_way(frm, to)
            self._push(self.repairs, at, "heal")
        elif kind == "isolate-leader":
            leader = cluster.leader()
            if leader is not None:
                cluster.isolate(leader)
                self._push(self.repairs, at, "heal")
        elif kind.startswith("crash"):
            victim = self._victim(cluster)
            if victim is not None:
                mode = {
                    "crash-clean": CRASH_CLEAN,
                    "crash-before-persist": CRASH_BEFORE_PERSIST,
                    "crash-mid-write": CRASH_MID_WRITE,
                    "crash-after-persist": CRASH_AFTER_PERSIST,
                }[kind]
                cluster.crash(victim, mode)
                self._push(self.repairs, cluster.now + rng.randint(1, 150), "restart", victim)
        elif kind == "bounce":
            victim = self._victim(cluster)
            if victim is not None:
                cluster.crash(victim, rng.choice((CRASH_CLEAN, CRASH_BEFORE_PERSIST, CRASH_MID_WRITE,
                                                  CRASH_AFTER_PERSIST)))
                self._push(self.repairs, cluster.now + rng.randint(1, 6), "restart", victim)
        elif kind == "figure8":
            self.figure8_until = cluster.now + rng.randint(50, 300)
            self._push(self.repairs, self.figure8_until, "restart-all")
        elif kind == "drop":
            faults.drop = rng.uniform(0.05, 0.3)
            self._push(self.repairs, at, "drop")
        elif kind == "duplicate":
            faults.duplicate = rng.uniform(0.05, 0.3)
            self._push(self.repairs, at, "duplicate")
        elif kind == "delay":
            faults.delay_max = rng.randint(2, 10)
            self._push(self.repairs, at, "delay")
        elif kind == "reorder":
            faults.long_delay = rng.uniform(0.02, 0.1)
            faults.long_delay_max = rng.randint(20, 100)
            self._push(self.repairs, at, "reorder")
        elif kind == "skew":
            for node in cluster.nodes.values():
                node.tick_rate = rng.uniform(0.5, 1.5)
            self._push(self.repairs, at, "skew")
        elif kind == "transfer":
            self.transfer(cluster)
        elif kind == "membership":
            self.change_membership(cluster)
        elif kind == "compact":
            for node in cluster.live():
                cluster.compact(node.id)

    def transfer(self, cluster: SimCluster, to_lagging: float = 0.5) -> None:
        """Hand leadership to a random voter, or (with chance `to_lagging`, as a nemesis aiming
        at weak spots) to the voter furthest behind the leader in applying: a leader that has
        not applied what was committed must still answer reads as of its read index."""
        voters = sorted(cluster.voters())
        leader = cluster.leader()
        if not voters or leader is None:
            return
        commit = cluster.raft(leader).log.committed
        lagging = [(commit - node.applied, node.id) for node in cluster.live()
                   if node.id in voters and node.id != leader and commit > node.applied]
        if lagging and self.rng.random() < to_lagging:
            cluster.transfer_leadership(max(lagging)[1])
        else:
            cluster.transfer_leadership(self.rng.choice(voters))

    def change_membership(self, cluster: SimCluster) -> None:
        """Remove a voter (maybe the leader), or add a new server as a learner (the leader's own
        administration then makes it a voter once it has caught up)."""
        leader = cluster.leader()
        if leader is None:
            return
        conf = cluster.raft(leader).conf
        if conf.learners:
            return  # a promotion is under way: one change at a time
        if len(conf.voters) > self.n - 1 and (len(conf.voters) > self.n or self.rng.random() < 0.5):
            cluster.remove(self.rng.choice(sorted(conf.voters)))
        else:
            cluster.add_learner(cluster.new_node())

    def repair(self, cluster: SimCluster, kind: str, arg: int) -> None:
        faults = cluster.net.faults
        if kind in ("heal", "restart") and self.rng.random() < CATCH_UP_TRANSFER:
            # whoever is catching up now may lead next, before it has applied what it got
            self._push(self.repairs, cluster.now + self.rng.randint(1, 10), "transfer")
        if kind == "heal":
            cluster.heal()
        elif kind == "restart":
            cluster.restart(arg)
        elif kind == "transfer":
            self.transfer(cluster, to_lagging=1.0)
        elif kind == "restart-all":
            for node in list(cluster.nodes.values()):
                if not node.removed:
                    cluster.restart(node.id)
        elif kind == "drop":
            faults.drop = self.base.drop
        elif kind == "duplicate":
            faults.duplicate = self.base.duplicate
        elif kind == "delay":
            faults.delay_max = self.base.delay_max
        elif kind == "reorder":
            faults.long_delay = 0.0
        elif kind == "skew":
            for node in cluster.nodes.values():
                node.tick_rate = 1.0


# ---- after the faults ---------------------------------------------------------------------------------
def has_working_leader(cluster: SimCluster) -> bool:
    """A live leader, a voter of its own membership, that has committed an entry of its term."""
    leader = cluster.leader()
    if leader is None:
        return False
    raft = cluster.raft(leader)
    return (
        raft.role is StateRole.LEADER
        and leader in raft.conf.voters
        and raft.log.term(raft.log.committed) == raft.term
    )


def stop_faults(cluster: SimCluster) -> None:
    """Heal the network, stop skew, bring every non-removed server back."""
    cluster.on_tick = None
    cluster.net.faults = NetFaults(delay_max=1)
    cluster.heal()
    for node in cluster.nodes.values():
        node.tick_rate = 1.0
        node.crash_mode = None
        node.store.crash = None
        if not node.removed:
            cluster.restart(node.id)


def check_liveness(cluster: SimCluster, proposals: int = LIVENESS_PROPOSALS) -> dict[str, int]:
    """After the faults stop: a leader emerges, every member catches up, and then each new
    proposal commits within a bound; finally all states are equal and hold every acked write."""
    stop_faults(cluster)
    stats = {
        "elect_ticks": cluster.tick_until(
            lambda: has_working_leader(cluster), LIVENESS_ELECTION_TICKS, "a leader"
        )
    }

    def converged() -> bool:
        leader = cluster.leader()
        if leader is None:
            return False
        log = cluster.raft(leader).log
        target = log.committed
        return target == log.last_index() and all(
            cluster.nodes[i].applied == target for i in cluster.live_members()
        )

    stats["converge_ticks"] = cluster.tick_until(converged, LIVENESS_CONVERGE_TICKS, "convergence")
    worst = 0
    for _ in range(proposals):
        started = cluster.now
        op = cluster.clients.write_retrying(LIVENESS_SESSION)
        cluster.tick_until(lambda op=op: op.outcome is Outcome.DONE, LIVENESS_COMMIT_TICKS,
                           "commit of a write")
        worst = max(worst, cluster.now - started)
    stats["commit_ticks_max"] = worst
    cluster.tick_until(converged, LIVENESS_CONVERGE_TICKS, "convergence")
    cluster.ensure_same()
    cluster.ensure_acked_durable()
    cluster.ensure_log_matching()
    return stats


def run_seed(seed: int, nodes: int = 3, ticks: int = 2000, verbose: bool = False) -> SeedResult:
    """Simulate one seed; never raises for a safety or liveness failure (it is in the result)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    knobs = knobs_for(rng)
    cluster = SimCluster(nodes, seed, knobs)
    workload = RandomWorkload(random.Random(seed * 2 + 1), nodes, ticks)
    workload.install(cluster)
    result = SeedResult(seed, nodes, ticks, ok=True)
    try:
        cluster.tick(ticks)
        stats = check_liveness(cluster)
    except Exception as exc:  # noqa: BLE001 - a safety violation, a liveness failure or a crash of the core
        result.ok = False
        result.kind = type(exc).__name__
        result.error = f"{type(exc).__name__}: {exc}"
        if verbose:
            result.error += "\n" + cluster.describe()
        stats = {}
    result.seconds = time.perf_counter() - started
    result.stats = {
        "events": cluster.events,
        "checks": cluster.checker.checks,
        "messages": cluster.net.message_count(),
        "acked": len(cluster.acked_writes),
        "reads": cluster.clients.reads_served,
        "reads_checked": cluster.checker.reads_checked,
        "snapshots": cluster.snapshots_installed,
        "terms": max(cluster.checker.leaders, default=0),
        "faults": sum(workload.counts.values()),
        **stats,
    }
    return result
