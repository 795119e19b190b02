"""The driver: turns each Ready of the consensus core into storage, transport and state-machine
calls, in the order raftkvd/raft/API.md prescribes. The one implementation of that loop: the
production node and the simulator both run it, each with its own parts behind the seams.

Per Ready: leader replication and heartbeats leave first (thesis §10.2.1); then one write
transaction holds the new entries, the hard state, a received snapshot, the applied entries
and the applied index, durable before votes and acknowledgements leave (SPEC §7). Committed
writes are answered inside that transaction, before its fsync: they are durable on a
majority already, and a crash before the commit re-applies them identically. A transaction
that only applies committed entries skips the final meta-page flush (`needs_durability`):
a crash can at worst undo it, and the log redoes it.

A follower whose Ready appends and also commits many entries (SPLIT_APPLY_AT) writes twice
instead: its new entries and hard state first, then its acknowledgement leaves, then it
applies (API.md's order). Under load its ack then waits for one small write, not for a long
apply too, and more often reaches the leader before the leader's own write of the same
entries is done, so the leader commits them in the same loop turn (docs/perf.md). A small
apply is cheaper than the extra flush, so it stays in the one transaction; leaders always
keep it, their applies answer clients.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from ..errors import NoSpaceError
from ..metrics import NodeMetrics
from ..raft import RaftNode
from ..raft.log import RaftLogError
from ..raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
    Ready,
    StateRole,
)
from .seams import Batch, Clock, LogStore, PeerTransport, Result, StateMachine, Store
from .tracing import Traces

log = logging.getLogger(__name__)

MAX_READIES_PER_TURN = 8
"""Readies handled per call of `process_ready`: bounds the latency of one loop turn."""
SPLIT_APPLY_AT = 16
"""A follower applies in a transaction of its own once the apply costs more than the extra
flush (~16 entries at ~20 µs each against ~0.3 ms); smaller applies ride with the entries."""
COMPACTION_KEEP = 1000
"""Entries kept behind an automatic compaction so slightly lagging followers need no snapshot."""


class ReadyListener(Protocol):
    """What the rest of the replica learns from each Ready (requests, membership)."""

    def role_changed(self, role: StateRole, leader: int) -> None: ...

    def applied(self, entries: list, results: list[Result]) -> None: ...

    def reads_ready(self, states: list[ReadState]) -> None: ...

    def advanced(self, membership_changed: bool) -> None: ...


def needs_durability(rd: Ready, durable_term_vote: tuple[int, int]) -> bool:
    """Entries, a snapshot, a new term or vote must survive any crash before we act on
    them. A commit index and applied entries need not: they are redone from the log."""
    if rd.entries or rd.snapshot is not None:
        return True
    hs = rd.hard_state
    return hs is not None and (hs.term, hs.vote) != durable_term_vote


class Driver:
    """Owns the core; not thread-safe (the node's loop, or the simulator, calls it)."""

    def __init__(self, core: RaftNode, store: Store, logstore: LogStore, sm: StateMachine,
                 transport: PeerTransport, listener: ReadyListener, metrics: NodeMetrics,
                 clock: Clock, compaction: Compaction | None, traces: Traces,
                 readies_per_turn: int = MAX_READIES_PER_TURN) -> None:
        """`compaction`: the policy of automatic compaction (None: never). `traces`: the
        traced writes, stamped as their entries pass each stage (tracing.py)."""
        self.core = core
        self.store = store
        self.logstore = logstore
        self.sm = sm
        self.transport = transport
        self.listener = listener
        self.metrics = metrics
        self.clock = clock
        self.compaction = compaction
        self.traces = traces
        self.readies_per_turn = readies_per_turn
        hard_state, _ = logstore.initial_state()
        self._durable_term_vote = (hard_state.term, hard_state.vote)
        self._seen_commit = core.status().commit
        self.last_heard: dict[int, float] = {}
        """When each peer was last heard from: whether a transfer target is alive."""

    # ---- inputs --------------------------------------------------------------------------------
    def step(self, msg: Message) -> None:
        self.last_heard[msg.frm] = now = self.clock()
        if msg.type == MessageType.HEARTBEAT_RESP:
            self.metrics.peer_rtt.heartbeat_answered(msg.frm, now)
        elif msg.type == MessageType.APPEND_RESP and self.traces.open and not msg.reject:
            self.traces.reached("follower_acked", msg.index)
        try:
            self.core.step(msg)
        except RaftLogError as exc:  # a message contradicting committed state: drop it
            log.error("node=%d event=message_rejected type=%s frm=%d error=%s",
                      self.core.id, msg.type.name, msg.frm, exc)

    def process_ready(self) -> None:
        for _ in range(self.readies_per_turn):
            if not self.core.has_ready():
                return
            self._handle_ready(self.core.ready())

    def compact_to_applied(self) -> int:
        """Snapshot now: drop the log up to the applied index. Returns that index."""
        applied = self.sm.applied_index()
        with self.store.write() as batch:
            self.logstore.compact(applied, batch=batch)
        return applied

    # ---- one Ready -----------------------------------------------------------------------------
    def _handle_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self.listener.role_changed(rd.soft_state.role, rd.soft_state.leader)
        traced = bool(self.traces.open)
        if traced:
            self._stamp_start(rd)
        self._send_all(rd.messages)
        durable = needs_durability(rd, self._durable_term_vote)
        if (durable and len(rd.committed_entries) >= SPLIT_APPLY_AT
                and self.core.role != StateRole.LEADER):
            self._persist_and_apply(rd, durable=True, apply=False)
            self._send_all(rd.persisted_messages)
            self._persist_and_apply(rd, durable=False, persist=False)
        else:
            if rd.must_sync() or rd.committed_entries:
                self._persist_and_apply(rd, durable)
            if traced and rd.entries:
                self.traces.reached("leader_persisted", rd.entries[-1].index)
            self._send_all(rd.persisted_messages)
        if rd.hard_state is not None and rd.hard_state.commit > self._seen_commit:
            self.metrics.proposals_committed.inc(rd.hard_state.commit - self._seen_commit)
            self._seen_commit = rd.hard_state.commit
        membership_changed = rd.snapshot is not None
        if rd.committed_entries:
            self.metrics.proposals_applied.inc(len(rd.committed_entries))
            membership_changed |= any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)
        if rd.read_states:
            self.listener.reads_ready(rd.read_states)
        self.core.advance(rd)
        self.listener.advanced(membership_changed)  # after advance: the core applies conf changes there

    def _stamp_start(self, rd: Ready) -> None:
        if rd.entries:
            self.traces.reached("ready", rd.entries[-1].index)
        if rd.hard_state is not None:
            self.traces.reached("committed", rd.hard_state.commit)

    def _send_all(self, messages: list[Message]) -> None:
        for msg in messages:
            if msg.type == MessageType.HEARTBEAT:
                self.metrics.peer_rtt.heartbeat_sent(msg.to, self.clock())
            if not self.transport.send(msg):
                self.core.report_unreachable(msg.to)  # stop streaming into a full or dead link

    def _persist_and_apply(self, rd: Ready, durable: bool, persist: bool = True,
                           apply: bool = True) -> None:
        """One write transaction with what the Ready persists, what it applies, or both."""
        started = time.perf_counter()
        try:
            with self.store.write(durable=durable) as batch:
                if persist:
                    self.logstore.save(rd.hard_state, rd.entries, rd.snapshot, batch=batch)
                    if rd.snapshot is not None:
                        self.sm.restore(rd.snapshot.data, batch=batch)
                if apply and rd.committed_entries:
                    apply_started = time.perf_counter()
                    results = self.sm.apply(rd.committed_entries, batch=batch)
                    self.metrics.apply_txn.observe(time.perf_counter() - apply_started)
                    self.listener.applied(rd.committed_entries, results)
                    self._maybe_compact(rd.committed_entries, batch)
        except NoSpaceError:
            # Nothing of this Ready reached disk; acknowledging it would lie. Stop cleanly
            # (the supervisor restarts us) rather than run with memory ahead of disk.
            log.critical("node=%d event=storage_full action=stopping", self.core.id)
            raise
        if persist:
            if rd.hard_state is not None:
                self._durable_term_vote = (rd.hard_state.term, rd.hard_state.vote)
            self.metrics.log_fsync.observe(time.perf_counter() - started)

    def _maybe_compact(self, applied: list[Entry], batch: Batch) -> None:
        if self.compaction is not None:
            index = self.compaction.index(applied, self.logstore.first_index())
            if index is not None:
                self.logstore.compact(index, batch=batch)


@dataclass(frozen=True, slots=True)
class Compaction:
    """When the driver compacts the log, as it applies entries (in the same transaction)."""

    threshold: int
    """Keep the log within threshold + keep entries."""
    keep: int = COMPACTION_KEEP

    def index(self, applied: list[Entry], first: int) -> int | None:
        """Where to compact after applying `applied` to a log that starts at `first`, if at all.

        At once when a learner is added to a log that still starts at index 1: the founding
        membership is not in the log (it came from the cluster file), so a newcomer must start
        from a snapshot, which carries it. Every node does this as it applies the change,
        before its core knows the learner, so whichever node leads later never sends the
        newcomer the log from index 1.
        """
        last = applied[-1].index
        if first <= 1 and any(_adds_learner(entry) for entry in applied):
            return last
        if last - first > self.threshold + self.keep:
            return last - self.keep
        return None


def _adds_learner(entry: Entry) -> bool:
    return (entry.type == EntryType.CONF_CHANGE
            and ConfChange.decode(entry.data).type == ConfChangeType.ADD_LEARNER)
