"""A tiny hand-driven network of RaftNodes for unit tests (etcd raft_test.go `network` style).

Nothing moves unless a test says so: `handle` runs a node's Readies through the daemon's own
driver (raftkvd/server/driver.py: send, persist, send after persist, apply, advance) with
in-memory parts, and returns what it sent; `Net` delivers those messages until quiet,
optionally cutting or dropping links.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable

from sim.twins import Batch, MemoryStore

from raftkvd.metrics import NodeMetrics
from raftkvd.raft import MemoryStorage, RaftConfig, RaftNode
from raftkvd.raft.messages import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    StateRole,
    apply_conf_change,
)
from raftkvd.server.driver import Driver
from raftkvd.server.tracing import Traces

MT = MessageType
IDS3 = (1, 2, 3)
IDS5 = (1, 2, 3, 4, 5)
PAPER = {"pre_vote": False, "check_quorum": False}
"""Knobs for the paper's rules as written: no PreVote, no CheckQuorum (etcd raft_paper_test.go)."""


def config(node_id: int = 1, peers: Iterable[int] = IDS3, **knobs: object) -> RaftConfig:
    return RaftConfig(id=node_id, peers=tuple(peers), **knobs)  # type: ignore[arg-type]


def make_node(
    node_id: int = 1,
    peers: Iterable[int] = IDS3,
    storage: MemoryStorage | None = None,
    seed: int = 0,
    **knobs: object,
) -> tuple[RaftNode, MemoryStorage]:
    storage = storage if storage is not None else MemoryStorage()
    return RaftNode(config(node_id, peers, **knobs), storage, random.Random(seed)), storage


def storage_with(
    entries: list[tuple[int, int]], term: int = 0, vote: int = 0, commit: int = 0
) -> MemoryStorage:
    """A MemoryStorage holding entries given as (index, term) pairs from index 1."""
    from raftkvd.raft.messages import HardState

    storage = MemoryStorage()
    storage.append([Entry(i, t, EntryType.NORMAL, b"x%d" % i) for i, t in entries])
    storage.set_hard_state(HardState(term, vote, commit))
    return storage


class _RecordingApp:
    """The state machine of a core test: it keeps the applied entries and the membership."""

    def __init__(self, storage: MemoryStorage, conf: ConfState) -> None:
        self.storage = storage
        self.conf = conf
        self.entries: list[Entry] = []
        self.applied = storage.snapshot().meta.index

    def apply(self, entries: list[Entry], batch: Batch | None = None) -> list[dict]:
        for entry in entries:
            self.entries.append(entry)
            self.applied = entry.index
            if entry.type == EntryType.CONF_CHANGE:
                self.conf = apply_conf_change(self.conf, ConfChange.decode(entry.data))
                self.storage.set_conf_state(self.conf)
        return [{} for _ in entries]

    def restore(self, data: bytes, batch: Batch | None = None) -> None:
        snap = self.storage.snapshot()
        self.applied, self.conf = snap.meta.index, snap.meta.conf

    def applied_index(self) -> int:
        return self.applied

    def conf_state(self) -> ConfState:
        return self.conf


class _MemoryLog:
    """The given MemoryStorage, written the way the driver writes a Ready."""

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.storage.initial_state()

    def first_index(self) -> int:
        return self.storage.first_index()

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None = None,
             batch: Batch | None = None) -> None:
        if snapshot is not None:
            self.storage.apply_snapshot(snapshot)
        self.storage.append(entries)
        if hard_state is not None:
            self.storage.set_hard_state(hard_state)

    def compact(self, index: int, batch: Batch | None = None) -> None:
        raise AssertionError("core tests compact their MemoryStorage themselves (storage.compact)")


class _Outbox:
    """The transport: what the node sends, in the order it leaves."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, msg: Message) -> bool:
        self.sent.append(msg)
        return True


class _Listener:
    """What the driver tells about each Ready: core tests keep only the read states."""

    def __init__(self) -> None:
        self.read_states: list[ReadState] = []

    def role_changed(self, role: StateRole, leader: int) -> None:
        pass

    def applied(self, entries: list[Entry], results: list[dict]) -> None:
        pass

    def reads_ready(self, states: list[ReadState]) -> None:
        self.read_states.extend(states)

    def advanced(self, membership_changed: bool) -> None:
        pass


class Driven:
    """One node plus what its driver persisted and applied."""

    def __init__(self, node: RaftNode, storage: MemoryStorage) -> None:
        self.storage = storage
        self.app = _RecordingApp(storage, storage.initial_state()[1] or ConfState(frozenset(node.cfg.peers)))
        self.listener = _Listener()
        self._attach(node)

    def _attach(self, node: RaftNode) -> None:
        self.node = node
        self.outbox = _Outbox()
        self.driver = Driver(node, MemoryStore(), _MemoryLog(self.storage), self.app, self.outbox,
                             self.listener, NodeMetrics(lambda: None), clock=lambda: 0.0,
                             compaction=None, traces=Traces(lambda: 0.0))

    @property
    def applied(self) -> list[Entry]:
        return self.app.entries

    @property
    def conf(self) -> ConfState:
        return self.app.conf

    @property
    def read_states(self) -> list[ReadState]:
        return self.listener.read_states

    def handle(self) -> list[Message]:
        """Every pending Ready through the driver; the messages in the order they left."""
        while self.node.has_ready():
            self.driver.process_ready()
        sent, self.outbox.sent = self.outbox.sent, []
        return sent

    def restart(self, seed: int = 0) -> None:
        """A crash and restart: a new RaftNode from what was persisted."""
        cfg = self.node.cfg
        applied = max(self.app.applied, self.storage.snapshot().meta.index)
        new_cfg = dataclasses.replace(cfg, applied=applied)
        self._attach(RaftNode(new_cfg, self.storage, random.Random(seed)))


class Net:
    """n nodes; `stabilize` delivers messages until none are left (or `max_steps`)."""

    def __init__(self, n: int = 3, ids: Iterable[int] | None = None, **knobs: object) -> None:
        ids = tuple(ids) if ids is not None else tuple(range(1, n + 1))
        self.ids = ids
        self.peers: dict[int, Driven] = {}
        for i in ids:
            node, storage = make_node(i, ids, seed=i, **knobs)
            self.peers[i] = Driven(node, storage)
        self.queue: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.drop_if: Callable[[Message], bool] | None = None
        self.delivered: list[Message] = []

    def node(self, i: int) -> RaftNode:
        return self.peers[i].node

    def add(self, i: int, peers: Iterable[int] = ()) -> Driven:
        node, storage = make_node(i, tuple(peers), seed=i, **self._knobs())
        self.peers[i] = Driven(node, storage)
        return self.peers[i]

    def _knobs(self) -> dict[str, object]:
        cfg = next(iter(self.peers.values())).node.cfg
        return {
            "election_tick": cfg.election_tick,
            "heartbeat_tick": cfg.heartbeat_tick,
            "pre_vote": cfg.pre_vote,
            "check_quorum": cfg.check_quorum,
            "max_size_per_msg": cfg.max_size_per_msg,
            "max_inflight_msgs": cfg.max_inflight_msgs,
        }

    def flush(self) -> None:
        for driven in self.peers.values():
            self.queue.extend(driven.handle())

    def isolate(self, i: int) -> None:
        for j in self.peers:
            if j != i:
                self.cut.update({(i, j), (j, i)})

    def recover(self) -> None:
        self.cut.clear()
        self.drop_if = None

    def stabilize(self, max_steps: int = 100_000) -> list[Message]:
        """Deliver until quiet; the messages delivered."""
        delivered: list[Message] = []
        self.flush()
        steps = 0
        while self.queue:
            m = self.queue.pop(0)
            steps += 1
            assert steps < max_steps, "network did not quiesce"
            if (m.frm, m.to) in self.cut or m.to not in self.peers:
                continue
            if self.drop_if is not None and self.drop_if(m):
                continue
            self.peers[m.to].node.step(m)
            delivered.append(m)
            self.queue.extend(self.peers[m.to].handle())
        self.delivered.extend(delivered)
        return delivered

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.peers[i].node.tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for driven in self.peers.values():
                driven.node.tick()
            self.stabilize()

    def elect(self, i: int) -> None:
        self.node(i).campaign()
        self.stabilize()
        assert self.node(i).role is StateRole.LEADER, f"{i} did not win: {self.node(i).role}"

    def propose(self, i: int, data: bytes = b"v") -> int:
        index = self.node(i).propose(data)
        self.stabilize()
        return index


def entries_of(msgs: Iterable[Message], kind: MessageType) -> list[Message]:
    return [m for m in msgs if m.type == kind]


def leader_with_log(
    peers: Iterable[int] = IDS3, **knobs: object
) -> tuple[RaftNode, MemoryStorage, list[Message]]:
    """Node 1 elected leader of `peers` by hand (paper rules): (node, storage, messages it sent)."""
    knobs = {**PAPER, **knobs}
    node, storage = make_node(1, peers, **knobs)
    driven = Driven(node, storage)
    node.campaign()
    driven.handle()
    for p in peers:
        if p != 1:
            node.step(Message(MT.VOTE_RESP, to=1, frm=p, term=node.term))
    sent = driven.handle()
    assert node.role is StateRole.LEADER
    return node, storage, sent
