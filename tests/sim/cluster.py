"""A deterministic raftkv cluster in one process (after hashicorp/raft testing.go and etcd raft_test.go).

Every node is the daemon's own replica (raftkvd/server/replica.py: the core, the driver, the
request handlers, membership administration), with in-memory twins of its storage, transport
and client endpoint (twins.py). Everything random comes from the seed: the network's drops,
duplicates and delays, every node's election timeouts, and whatever drives the cluster
(tests/sim/workload.py). Time is a virtual tick counter, and the replicas' clock reads it.
A crash keeps a node's durable twins and loses everything else; a restart builds a new
replica from them, as the daemon does from LMDB.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftkv.protocol import Code, Op
from raftkvd.kv import commands
from raftkvd.metrics import NodeMetrics
from raftkvd.net.clientendpoint import Request
from raftkvd.raft import RaftConfig
from raftkvd.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    StateRole,
)
from raftkvd.server.replica import Replica

from .checker import Ack, Checker, SafetyViolation
from .clients import Clients, Outcome
from .twins import (
    CollectingReplies,
    CollectingTransport,
    CrashPoint,
    MemoryKV,
    MemoryLogStore,
    MemoryStore,
    SimCrash,
)

CRASH_CLEAN = "clean"
CRASH_BEFORE_PERSIST = CrashPoint.BEFORE_WRITE
"""Crash after sending a Ready's early messages but before its write: thesis §10.2.1's window."""
CRASH_MID_WRITE = CrashPoint.BEFORE_COMMIT
"""Crash inside the write, after committed writes were answered, before it committed."""
CRASH_AFTER_PERSIST = CrashPoint.AFTER_COMMIT
"""Crash after the write, before the acknowledgements left and before the core advanced."""
CRASH_WAIT_TICKS = 30
"""A crash waiting for a Ready to strike in falls back to a clean crash after this long."""
MAX_EVENTS_PER_TICK = 200_000
TRACE_LEN = 60
TICK_S = 0.01
"""Seconds per tick for the replicas' clock (the daemon ticks every 10 ms)."""
SCENARIO_CLIENT = "scenario"


class LivenessFailure(AssertionError):
    """The cluster did not make progress within a bound after the faults stopped."""


@dataclass
class NetFaults:
    """What the network does to each message; all zero means a perfect network."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay_min: int = 0
    delay_max: int = 0
    long_delay: float = 0.0
    """Chance of a long delay, which reorders the message far behind later ones."""
    long_delay_max: int = 0


@dataclass
class RaftKnobs:
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_apply_bytes: int = 8 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_threshold: int = 1 << 30
    """Automatic compaction (the driver's) once this many entries are applied past the log's start."""
    compaction_keep: int = 1000
    readies_per_turn: int = 8
    """Readies a replica handles per loop turn: fewer means applying lags committing longer."""
    read_lease: bool = True
    """Leaders serve linearizable reads within a lease (raftkvd/server/reads.py)."""


def addresses(node_id: int) -> dict[str, str]:
    """A node's made-up addresses: distinct per node, as membership administration requires."""
    return {"raft": f"tcp://n{node_id}:1", "client": f"tcp://n{node_id}:2", "http": f"n{node_id}:3"}


class SimNode:
    """One server: durable twins that survive crashes, and the replica while it is up."""

    def __init__(self, cluster: SimCluster, node_id: int, founders: tuple[int, ...],
                 bootstrap: bool) -> None:
        self.id = node_id
        self.cluster = cluster
        self.founders = {i: addresses(i) for i in founders}
        self.kv = MemoryKV(probe=self)
        self.logstore = MemoryLogStore(self.kv, probe=self)
        self.store = MemoryStore()
        if bootstrap:
            self.kv.bootstrap(ConfState(frozenset(founders)), self.founders)
        self.rng = random.Random(cluster.seed * 7919 + node_id)
        self.replica: Replica | None = None
        self.incarnation = 0
        self.crash_mode: str | None = None
        self.crash_deadline = 0
        self.tick_rate = 1.0
        self.tick_credit = 0.0
        self.removed = False

    @property
    def up(self) -> bool:
        return self.replica is not None

    @property
    def raft(self):  # noqa: ANN201 - the RaftNode, or None while down
        return self.replica.core if self.replica is not None else None

    @property
    def storage(self):  # noqa: ANN201 - the durable log (a MemoryStorage)
        return self.logstore.mem

    @property
    def applied(self) -> int:
        return self.kv.applied_index()

    @property
    def conf(self) -> ConfState:
        return self.kv.conf_state()

    def start(self) -> None:
        k = self.cluster.knobs
        config = RaftConfig(
            id=self.id, election_tick=k.election_tick, heartbeat_tick=k.heartbeat_tick,
            applied=self.kv.applied_index(), max_size_per_msg=k.max_size_per_msg,
            max_inflight_msgs=k.max_inflight_msgs, max_apply_bytes=k.max_apply_bytes,
            pre_vote=k.pre_vote, check_quorum=k.check_quorum,
        )
        self.incarnation += 1
        self.store.crash = CrashPoint.NONE
        self.replica = Replica(
            config, store=self.store, logstore=self.logstore, sm=self.kv,
            transport=CollectingTransport(self.cluster.net_sender(self.id), self.cluster.linked_to(self.id)),
            replies=CollectingReplies(self.cluster.clients.answered), clock=self.cluster.clock,
            metrics=NodeMetrics(lambda: None), founders=self.founders,
            snapshot_threshold=k.snapshot_threshold, compaction_keep=k.compaction_keep,
            readies_per_turn=k.readies_per_turn,
            silent_after_s=4 * k.election_tick * TICK_S, rng=self.rng, tick_s=TICK_S,
            read_lease=k.read_lease,
        )

    # ---- the checker's probe: what the twins tell as their writes commit -----------------------
    def on_persist(self, entries: list[Entry]) -> None:
        if self.cluster.check:
            self.cluster.checker.on_persist(self, entries)

    def on_hard_state(self, hard_state: HardState) -> None:
        if self.cluster.check:
            self.cluster.checker.on_hard_state(self, hard_state)

    def on_restore(self, snapshot: Snapshot, digest: str) -> None:
        self.cluster.snapshots_installed += 1
        self.cluster.trace.append((self.cluster.now, "restore", self.id, snapshot.meta.index))
        if self.cluster.check:
            self.cluster.checker.on_restore(self, snapshot, digest)

    def on_apply(self, entry: Entry, applied_before: int) -> None:
        if self.cluster.check:
            self.cluster.checker.on_apply(self, entry, applied_before)
        self.cluster.on_apply(self, entry)

    def on_state(self, index: int, digest: str) -> None:
        if self.cluster.check:
            self.cluster.checker.on_state(self, index, digest)


class Network:
    """Messages in flight, ordered by delivery time; drops, duplicates, delays, partitions."""

    def __init__(self, rng: random.Random, faults: NetFaults | None = None) -> None:
        self.rng = rng
        self.faults = faults or NetFaults()
        self.queue: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.blocked: set[tuple[int, int]] = set()
        self.sent: Counter[MessageType] = Counter()
        self.rejected: Counter[MessageType] = Counter()
        self.delivered = 0

    def send(self, m: Message, now: int) -> None:
        self.sent[m.type] += 1
        if m.reject:
            self.rejected[m.type] += 1
        f = self.faults
        rng = self.rng
        if f.drop and rng.random() < f.drop:
            return
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        spread = f.delay_max - f.delay_min + 1
        for _ in range(copies):
            delay = f.delay_min
            if spread > 1:
                delay += int(rng.random() * spread)
            if f.long_delay and rng.random() < f.long_delay:
                delay += 1 + int(rng.random() * f.long_delay_max)
            self.seq += 1
            heapq.heappush(self.queue, (now + delay, self.seq, m))

    def message_count(self) -> int:
        return sum(self.sent.values())


class SimCluster:
    """n nodes, one network, one clock, one checker, and the clients. See make_cluster()."""

    def __init__(
        self,
        n: int,
        seed: int,
        knobs: RaftKnobs | None = None,
        faults: NetFaults | None = None,
        check: bool = True,
    ) -> None:
        self.seed = seed
        self.knobs = knobs or RaftKnobs()
        self.rng = random.Random(seed)
        self.net = Network(random.Random(seed * 31 + 17), faults)
        self.now = 0
        self.nodes: dict[int, SimNode] = {}
        self.checker = Checker(self.nodes)
        self.check = check
        self.trace: deque[tuple] = deque(maxlen=TRACE_LEN)
        self.on_tick: Callable[[SimCluster], None] | None = None
        self.clients = Clients(self)
        self.acked_writes: dict[bytes, int] = {}
        """Values of acknowledged writes -> the index their answer named."""
        self.events = 0
        self.snapshots_installed = 0
        self.crash_later: list[int] = []
        peers = tuple(range(1, n + 1))
        self.initial_peers = peers
        for node_id in peers:
            self.nodes[node_id] = SimNode(self, node_id, peers, bootstrap=True)
        for node in self.nodes.values():
            self._start(node)

    def clock(self) -> float:
        return self.now * TICK_S

    def net_sender(self, node_id: int) -> Callable[[Message], None]:
        return lambda m: self.net.send(m, self.now)

    def linked_to(self, node_id: int) -> Callable[[int], bool]:
        """Whether `other` (up) keeps a link to `node_id`, so an answer can go back over it."""

        def linked(other: int) -> bool:
            node = self.nodes.get(other)
            return node is not None and node.replica is not None and \
                node_id in node.replica.driver.transport.peers

        return linked

    # ---- queries ------------------------------------------------------------------------------
    def live(self) -> list[SimNode]:
        return [node for node in self.nodes.values() if node.up]

    def leader(self) -> int | None:
        """The live leader with the highest term, if any."""
        best, best_term = None, -1
        for node in self.nodes.values():
            raft = node.raft
            if raft is not None and raft.role is StateRole.LEADER and raft.term > best_term:
                best, best_term = node.id, raft.term
        return best

    def raft(self, node_id: int):  # noqa: ANN201 - the node's RaftNode
        raft = self.nodes[node_id].raft
        assert raft is not None, f"node {node_id} is down"
        return raft

    def _latest(self) -> SimNode:
        return max(self.nodes.values(), key=lambda nd: (not nd.removed, nd.applied))

    def members(self) -> frozenset[int]:
        """Voters and learners according to the node that applied the most (the latest membership)."""
        return self._latest().conf.ids()

    def voters(self) -> frozenset[int]:
        return self._latest().conf.voters

    # ---- the network ---------------------------------------------------------------------------
    def partition(self, *groups: set[int] | frozenset[int] | list[int]) -> None:
        """Cut every link between different groups (both ways); links inside a group work."""
        self.heal()
        sets = [set(g) for g in groups]
        for a, ga in enumerate(sets):
            for b, gb in enumerate(sets):
                if a != b:
                    self.net.blocked.update((x, y) for x in ga for y in gb)
        self.trace.append((self.now, "partition", groups))

    def cut_one_way(self, frm: set[int] | list[int], to: set[int] | list[int]) -> None:
        """Messages from `frm` to `to` are lost; the other direction still works."""
        self.net.blocked.update((x, y) for x in frm for y in to if x != y)
        self.trace.append((self.now, "cut", tuple(frm), tuple(to)))

    def isolate(self, node_id: int) -> None:
        others = [x for x in self.nodes if x != node_id]
        self.cut_one_way([node_id], others)
        self.cut_one_way(others, [node_id])

    def heal(self) -> None:
        self.net.blocked.clear()
        self.trace.append((self.now, "heal"))

    # ---- crash and restart ---------------------------------------------------------------------
    def crash(self, node_id: int, mode: str = CRASH_CLEAN) -> None:
        """Kill the node; it keeps only its durable state. Other modes strike inside its next write."""
        node = self.nodes[node_id]
        if node.replica is None:
            return
        if mode == CRASH_CLEAN:
            self._crash_now(node)
        else:
            node.crash_mode = mode
            node.store.crash = mode
            node.crash_deadline = self.now + CRASH_WAIT_TICKS

    def _crash_now(self, node: SimNode) -> None:
        self.trace.append((self.now, "crash", node.id, node.crash_mode))
        if self.check:
            self.checker.observe(node)
            self.checker.on_crash(node)
        node.replica = None
        node.crash_mode = None
        node.store.crash = CrashPoint.NONE

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.replica is not None or node.removed:
            return
        self._start(node)

    def _start(self, node: SimNode) -> None:
        node.start()
        self.trace.append((self.now, "start", node.id, node.incarnation))
        if self.check:
            self.checker.on_restart(node)
        self._after_event(node)

    # ---- clients -------------------------------------------------------------------------------
    def send_request(self, node_id: int, request: Request) -> bool:
        """A client request reaches `node_id` (False: the node is down, nobody answers)."""
        node = self.nodes.get(node_id)
        if node is None or node.replica is None:
            return False
        self._input(node, node.replica.handle, request)
        return True

    def propose(self, node_id: int | None = None, value: bytes | None = None) -> bytes | None:
        """One client write at `node_id` (default: the leader), not retried; its value, or None
        when the node refused it at once (not the leader, a transfer under way, down)."""
        target = node_id if node_id is not None else self.leader()
        if target is None:
            return None
        op = self.clients.write_once(SCENARIO_CLIENT, target, value)
        return op.value.encode() if op.outcome is not Outcome.REFUSED else None

    def read(self, node_id: int) -> bool:
        """One linearizable read at `node_id`, checked when answered; False when refused at once."""
        op = self.clients.read_once(SCENARIO_CLIENT, node_id)
        return op.outcome is not Outcome.REFUSED

    def admin(self, target: int, op: Op, **fields: Any) -> dict[str, Any] | None:
        """An administrative request to `target`; its answer when it came at once, else None."""
        return self.clients.admin(target, op, fields)

    def expire_requests(self, max_age: int) -> None:
        """Clients give up on one-shot requests older than `max_age` ticks (their outcome stays unknown)."""
        self.clients.expire(max_age)

    def is_acked(self, value: bytes) -> bool:
        return value in self.acked_writes

    def on_ack(self, ack: Ack) -> None:
        if ack.value is not None:
            self.acked_writes[ack.value.encode()] = ack.index
        if self.check:
            self.checker.on_ack(ack)

    def on_apply(self, node: SimNode, entry: Entry) -> None:
        """Once a removal is applied anywhere, the operator shuts the removed server down for good."""
        if entry.type == EntryType.CONF_CHANGE:
            change = ConfChange.decode(entry.data)
            if change.type == ConfChangeType.REMOVE_NODE:
                self._decommission(change.node_id)

    def applied_values(self) -> set[bytes]:
        """The values of every write any node applied (the checker's history)."""
        values = set()
        for record in self.checker.history[1:]:
            cmd = commands.decode(record[2]) if record is not None and record[2] else None
            if cmd is not None and isinstance(cmd.value, str):
                values.add(cmd.value.encode())
        return values

    def applied_count(self, value: bytes) -> int:
        """How many live servers applied the acknowledged write `value`."""
        index = self.acked_writes.get(value)
        if index is None:
            return 0
        return sum(1 for node in self.nodes.values() if node.up and node.applied >= index)

    def one(self, expected: int, max_ticks: int = 300, value: bytes | None = None) -> bytes:
        """Agreement (6.5840 `one`): write through the leader (the client retries as raftctl's
        does) until `expected` servers applied it; the value. LivenessFailure after `max_ticks`."""
        deadline = self.now + max_ticks
        op = self.clients.write_retrying(SCENARIO_CLIENT, value)
        written = op.value.encode()
        while self.now < deadline:
            if self.applied_count(written) >= expected:
                return written
            self.tick()
        if self.applied_count(written) >= expected:
            return written
        raise LivenessFailure(
            f"no agreement of {expected} servers within {max_ticks} ticks (seed {self.seed})")

    # ---- membership (through the leader's own administration) ---------------------------------
    def new_node(self) -> int:
        """A fresh, empty server that is not a member: it waits for a leader to contact it
        (`raftkvd run --join`), knowing every server's address."""
        node_id = max(self.nodes) + 1
        node = SimNode(self, node_id, tuple(sorted(self.nodes)) + (node_id,), bootstrap=False)
        self.nodes[node_id] = node
        self._start(node)
        return node_id

    def add_learner(self, node_id: int) -> bool:
        """`raftctl member add`: at the leader; False when refused at once. The leader makes the
        learner a voter by itself once it has caught up."""
        return self._member_change(Op.MEMBER_ADD, node_id=node_id, **addresses(node_id))

    def remove(self, node_id: int) -> bool:
        return self._member_change(Op.MEMBER_REMOVE, node_id=node_id)

    def _member_change(self, op: Op, **fields: Any) -> bool:
        leader = self.leader()
        if leader is None:
            return False
        answer = self.admin(leader, op, **fields)
        self.trace.append((self.now, op.value, leader, fields.get("node_id"), answer))
        return answer is None or answer.get("code") == Code.OK.value

    # ---- other node operations ----------------------------------------------------------------
    def transfer_leadership(self, to: int) -> None:
        leader = self.leader()
        if leader is not None:
            self.trace.append((self.now, "transfer", leader, to))
            self.admin(leader, Op.TRANSFER, to=to)

    def campaign(self, node_id: int) -> None:
        node = self.nodes[node_id]
        assert node.replica is not None
        self._input(node, node.replica.core.campaign)

    def compact(self, node_id: int) -> bool:
        """`raftctl snapshot ID`: the node compacts its log up to its applied index; True if it
        dropped any entry."""
        node = self.nodes[node_id]
        if not node.up or node.applied < node.storage.first_index():
            return False
        before = node.storage.first_index()
        self.admin(node_id, Op.SNAPSHOT)
        self.trace.append((self.now, "compact", node_id, node.applied))
        return node.storage.first_index() > before

    # ---- time ---------------------------------------------------------------------------------------
    def tick(self, n: int = 1) -> None:
        """Advance the clock: the workload hook, the clients, then each node in a random order ticks
        (rate-skewed) and what is due by now is delivered, so nodes are not in lockstep within a tick."""
        for _ in range(n):
            self.now += 1
            if self.on_tick is not None:
                self.on_tick(self)
            self.clients.step()
            self.deliver()
            order = list(self.nodes.values())
            self.rng.shuffle(order)
            for node in order:
                replica = node.replica
                if replica is None:
                    continue
                if node.crash_mode is not None and self.now >= node.crash_deadline:
                    node.crash_mode = CRASH_CLEAN
                    self._crash_now(node)
                    continue
                if node.tick_rate == 1.0:
                    ticks = 1
                else:
                    node.tick_credit += node.tick_rate
                    ticks = int(node.tick_credit)
                    node.tick_credit -= ticks
                for _ in range(ticks):
                    self._input(node, replica.tick)
                    if node.replica is None:
                        break
                    self._input(node, replica.periodic)
                    if node.replica is None:
                        break
                self.deliver()

    def deliver(self) -> None:
        """Deliver every message due by now, including replies that are due at once."""
        queue = self.net.queue
        nodes = self.nodes
        blocked = self.net.blocked
        budget = MAX_EVENTS_PER_TICK
        while queue and queue[0][0] <= self.now:
            _, _, m = heapq.heappop(queue)
            budget -= 1
            if budget == 0:
                raise LivenessFailure(f"more than {MAX_EVENTS_PER_TICK} messages in one tick")
            node = nodes.get(m.to)
            if node is None or node.replica is None:
                self._unreachable(m)
                continue
            if blocked and (m.frm, m.to) in blocked:
                continue
            self.net.delivered += 1
            self._input(node, node.replica.step, m)

    def _unreachable(self, m: Message) -> None:
        """The transport of the sender notices a dead peer (as the daemon's does)."""
        sender = self.nodes.get(m.frm)
        if sender is not None and sender.replica is not None:
            if m.type in (MessageType.APPEND, MessageType.SNAPSHOT):
                self._input(sender, sender.replica.core.report_unreachable, m.to)

    def run_until_quiet(self, max_rounds: int = 1000) -> None:
        """Deliver messages without ticking until the network is empty and no replica has a
        Ready left for its next turn (needs a zero-delay network)."""
        for _ in range(max_rounds):
            busy = [n for n in self.live() if n.replica is not None and n.replica.core.has_ready()]
            if not self.net.queue and not busy:
                return
            for node in busy:
                self._after_event(node)
            if self.net.queue:
                self.now = max(self.now, self.net.queue[0][0])
                self.deliver()
        raise LivenessFailure("network did not quiesce")

    def tick_until(self, pred: Callable[[], bool], max_ticks: int, what: str = "condition") -> int:
        """Tick until `pred()` holds; the ticks it took. Raises LivenessFailure after `max_ticks`."""
        for used in range(max_ticks + 1):
            if pred():
                return used
            self.tick()
        raise LivenessFailure(f"{what} not reached within {max_ticks} ticks (seed {self.seed})")

    # ---- driving one node: the replica's own loop turn ---------------------------------------------
    def _input(self, node: SimNode, fn: Callable[..., Any], *args: Any) -> None:
        """One input to the node's replica, then the rest of its loop turn; a write that
        crashes (twins.CrashPoint) kills the node wherever it strikes."""
        try:
            fn(*args)
        except SimCrash:
            self._crash_now(node)
            return
        self._after_event(node)

    def _after_event(self, node: SimNode) -> None:
        """After an input, the replica ends its turn as the daemon's loop does: one ReadIndex
        round, then at most MAX_READIES_PER_TURN Readies (the rest waits for the next turn, so
        applying may lag committing, as under load); a write that crashes kills the node there."""
        self.events += 1
        replica = node.replica
        if replica is None:
            return
        if not (replica.core.has_ready() or replica.reads.batch.requests):
            return
        try:
            replica.end_turn()
        except SimCrash:
            self._crash_now(node)
            return
        if self.check:
            self.checker.observe(node)
        if self.crash_later:
            self._flush_decommissioned()

    def _decommission(self, node_id: int) -> None:
        node = self.nodes.get(node_id)
        if node is None or node.removed:
            return
        node.removed = True
        if node.replica is not None:
            self.crash_later.append(node_id)

    def _flush_decommissioned(self) -> None:
        while self.crash_later:
            node = self.nodes[self.crash_later.pop()]
            if node.replica is not None:
                node.crash_mode = None
                self._crash_now(node)

    # ---- end-of-run checks ----------------------------------------------------------------------------
    def ensure_log_matching(self) -> None:
        """Any two logs that share an (index, term) are equal up to there (full pairwise check)."""
        logs = {}
        for node in self.nodes.values():
            logs[node.id] = {e.index: e for e in node.storage.ents[1:]}
        ids = sorted(logs)
        for a_pos, a in enumerate(ids):
            for b in ids[a_pos + 1 :]:
                la, lb = logs[a], logs[b]
                common = sorted(set(la) & set(lb), reverse=True)
                agree_from = None
                for index in common:
                    if la[index].term == lb[index].term:
                        agree_from = index
                        break
                if agree_from is None:
                    continue
                for index in common:
                    if index <= agree_from and la[index] != lb[index]:
                        raise SafetyViolation(
                            f"Log Matching: nodes {a} and {b} agree at {agree_from} but differ at {index}"
                        )

    def ensure_same(self, node_ids: list[int] | None = None) -> None:
        """All given nodes (default: live members) applied the same entries to the same state."""
        ids = node_ids if node_ids is not None else self.live_members()
        states = {i: (self.nodes[i].applied, self.nodes[i].kv.hash()) for i in ids}
        first = next(iter(states.values()))
        for i, state in states.items():
            if state != first:
                raise SafetyViolation(f"nodes differ: {i} applied {state[0]}, others {first[0]}")

    def live_members(self) -> list[int]:
        members = self.members()
        return [i for i in sorted(members) if self.nodes[i].up and not self.nodes[i].removed]

    def ensure_acked_durable(self, node_ids: list[int] | None = None) -> None:
        """Nothing reported committed is ever lost: every acknowledged write is in the log where
        its answer said and took effect, and every final state is the one the history makes."""
        ids = node_ids if node_ids is not None else self.live_members()
        final = {i: {k: v[0] for k, v in self.nodes[i].kv.state.kv.items()} for i in ids}
        self.checker.ensure_acks_in_history(final, {i: self.nodes[i].applied for i in ids})

    def describe(self) -> str:
        """The recent events and each node's state: printed when a seed fails."""
        lines = [f"seed={self.seed} now={self.now} events={self.events}"]
        for node in self.nodes.values():
            raft = node.raft
            if raft is None:
                lines.append(f"  node {node.id}: down removed={node.removed} applied={node.applied}")
                continue
            st = raft.status()
            lines.append(
                f"  node {node.id}: {st.role.value} term={st.term} vote={st.vote} commit={st.commit} "
                f"applied={st.applied} log=[{st.first_index},{st.last_index}] conf={sorted(st.conf.voters)}"
                f"+{sorted(st.conf.learners)} removed={node.removed}"
            )
        lines.append("  recent events:")
        lines.extend(f"    {event}" for event in self.trace)
        return "\n".join(lines)


def make_cluster(
    n: int = 3,
    seed: int = 0,
    *,
    faults: NetFaults | None = None,
    check: bool = True,
    **knobs: int | bool,
) -> SimCluster:
    """A cluster of n fresh nodes with the given knobs (RaftKnobs fields)."""
    return SimCluster(n, seed, RaftKnobs(**knobs), faults, check)  # type: ignore[arg-type]
