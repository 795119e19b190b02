"""A deterministic Raft cluster in one process (after hashicorp/raft testing.go and etcd raft_test.go).

Everything random comes from the seed: the network's drops, duplicates and delays, every
node's election timeouts, and whatever drives the cluster (tests/sim/workload.py). Time is a
virtual tick counter. Each node is driven exactly as raftkvd/raft/API.md prescribes. Its
durable state is a MemoryStorage plus the application state (applied value sequence, applied
index, membership) that the real daemon keeps in one LMDB transaction; a crash keeps that
and loses everything else, a restart builds a new RaftNode from it.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from raftkvd.raft import MemoryStorage, ProposalDropped, RaftConfig, RaftNode
from raftkvd.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    Message,
    MessageType,
    ReadState,
    Ready,
    StateRole,
    apply_conf_change,
)

from .checker import Checker, SafetyViolation

CRASH_CLEAN = "clean"
CRASH_BEFORE_PERSIST = "before-persist"
"""Crash after sending a Ready's early messages but before its write: thesis §10.2.1's window."""
CRASH_BEFORE_APPLY = "before-apply"
"""Crash after the write and the acknowledgements, before applying the committed entries."""
CRASH_WAIT_TICKS = 30
"""A crash waiting for a Ready to strike in falls back to a clean crash after this long."""
MAX_EVENTS_PER_TICK = 200_000
SNAPSHOT_SEPARATOR = b","
TRACE_LEN = 60


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
class AppState:
    """The durable application state, written atomically with the applied index."""

    values: list[bytes]
    applied: int
    conf: ConfState


@dataclass
class PendingWrite:
    value: bytes
    node: int
    incarnation: int
    index: int
    issued: int


@dataclass
class PendingRead:
    ctx: bytes
    node: int
    incarnation: int
    issued: int
    acked_max_index: int
    acked_max_pos: int


def encode_values(values: list[bytes]) -> bytes:
    return SNAPSHOT_SEPARATOR.join(values)


def decode_values(data: bytes) -> list[bytes]:
    return data.split(SNAPSHOT_SEPARATOR) if data else []


@dataclass
class RaftKnobs:
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_apply_bytes: int = 8 << 20
    pre_vote: bool = True
    check_quorum: bool = True


class SimNode:
    """One server: durable state that survives crashes, and the RaftNode while it is up."""

    def __init__(self, node_id: int, peers: tuple[int, ...], knobs: RaftKnobs, seed: int) -> None:
        self.id = node_id
        self.peers = peers
        self.knobs = knobs
        self.storage = MemoryStorage()
        self.app = AppState([], 0, ConfState(frozenset(peers)))
        if peers:
            self.storage.set_conf_state(self.app.conf)
        self.rng = random.Random(seed * 7919 + node_id)
        self.raft: RaftNode | None = None
        self.incarnation = 0
        self.crash_mode: str | None = None
        self.crash_deadline = 0
        self.read_states: list[ReadState] = []
        self.proposals: dict[int, PendingWrite] = {}
        self.tick_rate = 1.0
        self.tick_credit = 0.0
        self.removed = False

    @property
    def up(self) -> bool:
        return self.raft is not None

    def start(self) -> None:
        k = self.knobs
        config = RaftConfig(
            id=self.id,
            peers=self.peers,
            election_tick=k.election_tick,
            heartbeat_tick=k.heartbeat_tick,
            applied=self.app.applied,
            max_size_per_msg=k.max_size_per_msg,
            max_inflight_msgs=k.max_inflight_msgs,
            max_apply_bytes=k.max_apply_bytes,
            pre_vote=k.pre_vote,
            check_quorum=k.check_quorum,
        )
        self.incarnation += 1
        self.raft = RaftNode(config, self.storage, self.rng)


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
    """n nodes, one network, one clock, one checker. See make_cluster()."""

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
        self.pending_writes: dict[bytes, PendingWrite] = {}
        self.reads: dict[bytes, PendingRead] = {}
        self.acked_writes: dict[bytes, int] = {}
        self.failed_writes = 0
        self.reads_served = 0
        self.value_seq = 0
        self.read_seq = 0
        self.events = 0
        self.snapshots_installed = 0
        self.crash_later: list[int] = []
        peers = tuple(range(1, n + 1))
        self.initial_peers = peers
        for node_id in peers:
            self.nodes[node_id] = SimNode(node_id, peers, self.knobs, seed)
        for node in self.nodes.values():
            self._start(node)

    # ---- queries ------------------------------------------------------------------------------
    def live(self) -> list[SimNode]:
        return [node for node in self.nodes.values() if node.raft is not None]

    def leader(self) -> int | None:
        """The live leader with the highest term, if any."""
        best, best_term = None, -1
        for node in self.nodes.values():
            raft = node.raft
            if raft is not None and raft.role is StateRole.LEADER and raft.term > best_term:
                best, best_term = node.id, raft.term
        return best

    def raft(self, node_id: int) -> RaftNode:
        raft = self.nodes[node_id].raft
        assert raft is not None, f"node {node_id} is down"
        return raft

    def members(self) -> frozenset[int]:
        """Voters and learners according to the node that applied the most (the latest membership)."""
        best = max(self.nodes.values(), key=lambda nd: (not nd.removed, nd.app.applied))
        return best.app.conf.ids()

    def voters(self) -> frozenset[int]:
        best = max(self.nodes.values(), key=lambda nd: (not nd.removed, nd.app.applied))
        return best.app.conf.voters

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
        """Kill the node; it keeps only its durable state. Other modes strike inside its next Ready."""
        node = self.nodes[node_id]
        if node.raft is None:
            return
        if mode == CRASH_CLEAN:
            self._crash_now(node)
        else:
            node.crash_mode = mode
            node.crash_deadline = self.now + CRASH_WAIT_TICKS

    def _crash_now(self, node: SimNode) -> None:
        self.trace.append((self.now, "crash", node.id, node.crash_mode))
        if self.check:
            self.checker.observe(node)
            self.checker.on_crash(node)
        node.raft = None
        node.crash_mode = None
        node.read_states = []
        node.proposals = {}

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.raft is not None or node.removed:
            return
        self._start(node)

    def _start(self, node: SimNode) -> None:
        node.start()
        self.trace.append((self.now, "start", node.id, node.incarnation))
        if self.check:
            self.checker.on_restart(node)
        self._after_event(node)

    # ---- clients ---------------------------------------------------------------------------------
    def propose(self, node_id: int | None = None, value: bytes | None = None) -> bytes | None:
        """A client write at `node_id` (default: the leader); None when the node refused it."""
        if node_id is None:
            node_id = self.leader()
            if node_id is None:
                return None
        node = self.nodes[node_id]
        raft = node.raft
        if raft is None:
            return None
        if value is None:
            self.value_seq += 1
            value = b"%d" % self.value_seq
        try:
            index = raft.propose(value)
        except ProposalDropped:
            return None
        pending = PendingWrite(value, node_id, node.incarnation, index, self.now)
        self.pending_writes[value] = pending
        node.proposals[index] = pending
        self.trace.append((self.now, "propose", node_id, index, value))
        self._after_event(node)
        return value

    def read(self, node_id: int) -> bytes | None:
        """A linearizable read issued at `node_id` (ReadIndex); None when refused."""
        node = self.nodes[node_id]
        raft = node.raft
        if raft is None:
            return None
        self.read_seq += 1
        ctx = b"r%d" % self.read_seq
        try:
            raft.read_index(ctx)
        except ProposalDropped:
            return None
        c = self.checker
        self.reads[ctx] = PendingRead(
            ctx, node_id, node.incarnation, self.now, c.acked_max_index, c.acked_max_pos
        )
        self._after_event(node)
        return ctx

    def expire_requests(self, max_age: int) -> None:
        """Clients give up on requests older than `max_age` ticks (their outcome stays unknown)."""
        horizon = self.now - max_age
        for ctx in [c for c, r in self.reads.items() if r.issued < horizon]:
            del self.reads[ctx]
        for value in [v for v, w in self.pending_writes.items() if w.issued < horizon]:
            w = self.pending_writes.pop(value)
            node = self.nodes[w.node]
            if node.proposals.get(w.index) is w:
                del node.proposals[w.index]

    def is_acked(self, value: bytes) -> bool:
        return value in self.acked_writes

    def applied_count(self, value: bytes) -> int:
        """How many live servers applied the acknowledged write `value`."""
        index = self.acked_writes.get(value)
        if index is None:
            return 0
        return sum(
            1
            for node in self.nodes.values()
            if node.up and node.app.applied >= index and value in node.app.values
        )

    def one(self, expected: int, max_ticks: int = 300, value: bytes | None = None) -> bytes:
        """Agreement (6.5840 `one`): propose through the leader, retrying, until `expected` servers
        applied the write; the written value. Raises LivenessFailure after `max_ticks`."""
        deadline = self.now + max_ticks
        attempt_ticks = 2 * self.knobs.election_tick
        while self.now < deadline:
            written = self.propose(value=value)
            if written is None:
                self.tick()
                continue
            value = written
            until = min(deadline, self.now + attempt_ticks)
            while self.now < until:
                if self.applied_count(written) >= expected:
                    return written
                self.tick()
            if self.applied_count(written) >= expected:
                return written
            value = None
        raise LivenessFailure(
            f"no agreement of {expected} servers within {max_ticks} ticks (seed {self.seed})"
        )

    # ---- membership --------------------------------------------------------------------------------
    def new_node(self) -> int:
        """A fresh, empty server that is not a member: it waits for a leader to contact it.

        Like every server it starts from the cluster's initial membership (the state "at index
        0"), so replaying the log from index 1 rebuilds the right membership; a snapshot
        replaces it wholesale.
        """
        node_id = max(self.nodes) + 1
        node = SimNode(node_id, self.initial_peers, self.knobs, self.seed)
        self.nodes[node_id] = node
        self._start(node)
        return node_id

    def change_membership(self, cc: ConfChange) -> int | None:
        """Propose `cc` at the leader; the index, or None when refused."""
        leader = self.leader()
        if leader is None:
            return None
        node = self.nodes[leader]
        assert node.raft is not None
        try:
            index = node.raft.propose_conf_change(cc)
        except ProposalDropped:
            return None
        self.trace.append((self.now, "conf", leader, index, cc.type.name, cc.node_id))
        self._after_event(node)
        return index

    def add_learner(self, node_id: int) -> int | None:
        return self.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, node_id))

    def add_voter(self, node_id: int) -> int | None:
        return self.change_membership(ConfChange(ConfChangeType.ADD_NODE, node_id))

    def remove(self, node_id: int) -> int | None:
        return self.change_membership(ConfChange(ConfChangeType.REMOVE_NODE, node_id))

    # ---- other node operations ----------------------------------------------------------------
    def transfer_leadership(self, to: int) -> None:
        leader = self.leader()
        if leader is not None:
            node = self.nodes[leader]
            assert node.raft is not None
            node.raft.transfer_leadership(to)
            self.trace.append((self.now, "transfer", leader, to))
            self._after_event(node)

    def campaign(self, node_id: int) -> None:
        node = self.nodes[node_id]
        assert node.raft is not None
        node.raft.campaign()
        self._after_event(node)

    def compact(self, node_id: int) -> bool:
        """Snapshot the node's application at its applied index and drop the log up to there."""
        node = self.nodes[node_id]
        app = node.app
        storage = node.storage
        if app.applied < storage.first_index() or app.applied > storage.last_index():
            return False
        storage.compact(app.applied, app.conf, encode_values(app.values))
        self.trace.append((self.now, "compact", node_id, app.applied))
        return True

    # ---- time ---------------------------------------------------------------------------------------
    def tick(self, n: int = 1) -> None:
        """Advance the clock: the workload hook, then each node in a random order ticks (rate-skewed)
        and what is due by now is delivered, so nodes are not in lockstep within a tick."""
        for _ in range(n):
            self.now += 1
            if self.on_tick is not None:
                self.on_tick(self)
            self.deliver()
            order = list(self.nodes.values())
            self.rng.shuffle(order)
            for node in order:
                raft = node.raft
                if raft is None:
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
                    raft.tick()
                    self._after_event(node)
                    if node.raft is None:
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
            if node is None or node.raft is None:
                self._unreachable(m)
                continue
            if blocked and (m.frm, m.to) in blocked:
                continue
            self.net.delivered += 1
            node.raft.step(m)
            self._after_event(node)

    def _unreachable(self, m: Message) -> None:
        """The transport of the sender notices a dead peer (as the daemon's does)."""
        sender = self.nodes.get(m.frm)
        if sender is not None and sender.raft is not None:
            if m.type in (MessageType.APPEND, MessageType.SNAPSHOT):
                sender.raft.report_unreachable(m.to)
                self._after_event(sender)

    def run_until_quiet(self, max_rounds: int = 1000) -> None:
        """Deliver messages without ticking until the network is empty (needs a zero-delay network)."""
        for _ in range(max_rounds):
            if not self.net.queue:
                return
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

    # ---- driving one node (API.md, the Ready contract) ----------------------------------------------
    def _after_event(self, node: SimNode) -> None:
        self.events += 1
        # Without a Ready, term, role and commit are unchanged (has_ready compares them): nothing to check.
        if self._process(node) and self.check and node.raft is not None:
            self.checker.observe(node)
        if self.crash_later:
            self._flush_decommissioned()

    def _process(self, node: SimNode) -> bool:
        """Handle Readies until there is none; False when there was none at all."""
        net, now = self.net, self.now
        handled = False
        while True:
            raft = node.raft
            if raft is None or not raft.has_ready():
                return handled
            handled = True
            rd = raft.ready()
            for m in rd.messages:
                net.send(m, now)
            if node.crash_mode == CRASH_BEFORE_PERSIST and rd.must_sync():
                self._crash_now(node)
                return True
            self._persist(node, rd)
            for m in rd.persisted_messages:
                net.send(m, now)
            if node.crash_mode == CRASH_BEFORE_APPLY and (rd.committed_entries or rd.must_sync()):
                self._crash_now(node)
                return True
            self._apply(node, rd)
            raft.advance(rd)

    def _persist(self, node: SimNode, rd: Ready) -> None:
        """One durable write: snapshot (with the application state it carries), entries, hard state."""
        storage = node.storage
        checker = self.checker if self.check else None
        if rd.snapshot is not None:
            snap = rd.snapshot
            values = decode_values(snap.data)
            if checker is not None:
                checker.on_restore(node, snap, values)
            storage.apply_snapshot(snap)
            node.app = AppState(values, snap.meta.index, snap.meta.conf)
            node.proposals = {i: w for i, w in node.proposals.items() if i > snap.meta.index}
            self.snapshots_installed += 1
            self.trace.append((self.now, "restore", node.id, snap.meta.index))
        if rd.entries:
            storage.append(rd.entries)
            if checker is not None:
                checker.on_persist(node, rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
            if checker is not None:
                checker.on_hard_state(node, rd.hard_state.commit)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        app = node.app
        checker = self.checker if self.check else None
        for entry in rd.committed_entries:
            if checker is not None:
                checker.on_apply(node, entry, len(app.values))
            if entry.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(entry.data)
                app.conf = apply_conf_change(app.conf, cc)
                node.storage.set_conf_state(app.conf)
                if cc.type == ConfChangeType.REMOVE_NODE:
                    self._decommission(cc.node_id)
            elif entry.data:
                app.values.append(entry.data)
            app.applied = entry.index
            pending = node.proposals.pop(entry.index, None) if node.proposals else None
            if pending is not None:
                self._settle_write(pending, entry.data, entry.index)
        if rd.read_states:
            node.read_states.extend(rd.read_states)
        if node.read_states:
            self._serve_reads(node)

    def _settle_write(self, pending: PendingWrite, data: bytes, index: int) -> None:
        if self.pending_writes.get(pending.value) is pending:
            del self.pending_writes[pending.value]
        if data == pending.value:
            self.acked_writes[pending.value] = index
            if self.check:
                self.checker.on_ack(pending.value, index)
        else:
            self.failed_writes += 1

    def _serve_reads(self, node: SimNode) -> None:
        applied = node.app.applied
        waiting = []
        for rs in node.read_states:
            if rs.index > applied:
                waiting.append(rs)
                continue
            read = self.reads.pop(rs.context, None)
            if read is None or read.node != node.id or read.incarnation != node.incarnation:
                continue
            self.reads_served += 1
            if self.check:
                self.checker.on_read(node, rs, read)
        node.read_states = waiting

    def _decommission(self, node_id: int) -> None:
        """Once a removal is applied anywhere, the operator shuts the removed server down for good."""
        node = self.nodes.get(node_id)
        if node is None or node.removed:
            return
        node.removed = True
        if node.raft is not None:
            self.crash_later.append(node_id)

    def _flush_decommissioned(self) -> None:
        while self.crash_later:
            node = self.nodes[self.crash_later.pop()]
            if node.raft is not None:
                node.crash_mode = None
                self._crash_now(node)

    # ---- end-of-run checks ----------------------------------------------------------------------------
    def ensure_log_matching(self) -> None:
        """Any two logs that share an (index, term) are equal up to there (full pairwise check)."""
        logs = {}
        for node in self.nodes.values():
            st = node.storage
            logs[node.id] = {e.index: e for e in st.ents[1:]}
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
        """All given nodes (default: live members) applied the same sequence."""
        ids = node_ids if node_ids is not None else self.live_members()
        states = {i: (self.nodes[i].app.applied, self.nodes[i].app.values) for i in ids}
        first = next(iter(states.values()))
        for i, state in states.items():
            if state != first:
                raise SafetyViolation(f"nodes differ: {i} applied {state[0]}, others {first[0]}")

    def live_members(self) -> list[int]:
        members = self.members()
        return [i for i in sorted(members) if self.nodes[i].up and not self.nodes[i].removed]

    def ensure_acked_durable(self, node_ids: list[int] | None = None) -> None:
        """Nothing reported committed is ever lost: every acknowledged write is in every final state."""
        ids = node_ids if node_ids is not None else self.live_members()
        for i in ids:
            have = set(self.nodes[i].app.values)
            missing = [v for v in self.acked_writes if v not in have]
            if missing:
                raise SafetyViolation(f"node {i} lost acknowledged writes {missing[:5]}")

    def describe(self) -> str:
        """The recent events and each node's state: printed when a seed fails."""
        lines = [f"seed={self.seed} now={self.now} events={self.events}"]
        for node in self.nodes.values():
            raft = node.raft
            if raft is None:
                lines.append(f"  node {node.id}: down removed={node.removed} applied={node.app.applied}")
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
    """A cluster of n fresh nodes with the given Raft knobs (RaftKnobs fields)."""
    cluster = SimCluster(n, seed, RaftKnobs(**knobs), faults, check)  # type: ignore[arg-type]
    return cluster
