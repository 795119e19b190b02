"""A tiny hand-driven network of RaftNodes for unit tests (etcd raft_test.go `network` style).

Nothing moves unless a test says so: `handle` runs a node's Readies through the API.md driver
loop (send, persist, send after persist, apply, advance) and returns what it sent; `Net`
delivers those messages until quiet, optionally cutting or dropping links.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable

from raftkvd.raft import MemoryStorage, RaftConfig, RaftNode
from raftkvd.raft.messages import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
    StateRole,
    apply_conf_change,
)

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


class Driven:
    """One node plus what its driver persisted and applied."""

    def __init__(self, node: RaftNode, storage: MemoryStorage) -> None:
        self.node = node
        self.storage = storage
        self.applied: list[Entry] = []
        self.read_states: list[ReadState] = []
        self.conf = storage.initial_state()[1] or ConfState(frozenset(node.cfg.peers))

    def handle(self) -> list[Message]:
        """Every pending Ready through the API.md loop; the messages in the order they left."""
        node, storage = self.node, self.storage
        out: list[Message] = []
        while node.has_ready():
            rd = node.ready()
            out.extend(rd.messages)
            if rd.snapshot is not None:
                storage.apply_snapshot(rd.snapshot)
                self.conf = rd.snapshot.meta.conf
            storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
            out.extend(rd.persisted_messages)
            for entry in rd.committed_entries:
                self.applied.append(entry)
                if entry.type == EntryType.CONF_CHANGE:
                    self.conf = apply_conf_change(self.conf, ConfChange.decode(entry.data))
                    storage.set_conf_state(self.conf)
            self.read_states.extend(rd.read_states)
            node.advance(rd)
        return out

    def restart(self, seed: int = 0) -> None:
        """A crash and restart: a new RaftNode from what was persisted."""
        cfg = self.node.cfg
        applied = self.applied[-1].index if self.applied else 0
        applied = max(applied, self.storage.snapshot().meta.index)
        new_cfg = dataclasses.replace(cfg, applied=applied)
        self.node = RaftNode(new_cfg, self.storage, random.Random(seed))


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
