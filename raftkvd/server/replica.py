"""One node's replica: the consensus core, its driver and the request handlers, without a loop.

The production node (node.py) feeds it from ZeroMQ sockets and the wall clock; the simulator
(tests/sim) feeds it from an in-memory network and a virtual clock. Both call the same four
inputs (`step`, `tick`, `handle`, `end_turn`) and get the same behaviour, so the seeds cover
the node's own request handling, not only the core.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from raftkv.protocol import WRITE_OPS, Code, Op

from ..kv.commands import Command
from ..metrics import NodeMetrics
from ..net.clientendpoint import Request
from ..net.peerwire import RemovedNotice
from ..raft import RaftConfig, RaftNode
from ..raft.messages import NONE, Entry, Message, ReadState, StateRole
from . import status
from .driver import COMPACTION_KEEP, MAX_READIES_PER_TURN, Compaction, Driver
from .membership import Addresses, Membership
from .reads import Reads
from .removal import Removal
from .seams import Clock, LogStore, PeerTransport, Replies, Result, StateMachine, Store
from .tracing import Traces
from .transfer import Transfers
from .writes import Writes

log = logging.getLogger(__name__)

NO_SPACE_FRACTION = 0.95
"""Writes are refused above this share of the LMDB map, so committed entries always fit."""


class Replica:
    """Not thread-safe: one loop (or the simulator) drives it."""

    def __init__(self, config: RaftConfig, *, store: Store, logstore: LogStore, sm: StateMachine,
                 transport: PeerTransport, replies: Replies, clock: Clock, metrics: NodeMetrics,
                 founders: Addresses, snapshot_threshold: int, silent_after_s: float,
                 compaction_keep: int = COMPACTION_KEEP, readies_per_turn: int = MAX_READIES_PER_TURN,
                 rng: random.Random | None = None, reads: type[Reads] = Reads,
                 tick_s: float, read_lease: bool = True) -> None:
        """`reads`: the read path; tests pass a deliberately broken one to prove a checker.
        `tick_s`: seconds per tick of the core (the leader lease is measured in seconds);
        `read_lease`: whether linearizable reads may be served within a leader lease."""
        self.id = config.id
        self.store = store
        self.sm = sm
        self.replies = replies
        self.clock = clock
        self.metrics = metrics
        self.core = RaftNode(config, logstore, rng or random.Random())
        traces = Traces(clock)
        self.driver = Driver(self.core, store, logstore, sm, transport, self, metrics, clock,
                             Compaction(snapshot_threshold, compaction_keep), traces, readies_per_turn)
        self.writes = Writes(self.core, replies, metrics, traces)
        self.reads = reads(self.core, sm, replies, self.redirect, clock, tick_s, read_lease)
        self.transfers = Transfers(self.core, replies, clock, self.driver.last_heard, silent_after_s,
                                   self.redirect)
        self.membership = Membership(self.core, sm, transport, self.writes, replies, founders,
                                     self.redirect)
        self.removal = Removal(self.id, sm, transport, self.membership, clock)
        self.leader_changes = 0
        """New leaders seen since start (etcd's leader_changes_seen: not passes through none)."""
        self._space_checked = False
        self._no_space = False
        self._last_leader = NONE
        self._start_commit = self.core.status().commit
        self._caught_up = False

    # ---- inputs --------------------------------------------------------------------------------
    def step(self, msg: Message | RemovedNotice) -> None:
        if type(msg) is RemovedNotice:
            self.removal.notified(msg)
        elif self.removal.admit(msg):
            self.driver.step(msg)

    def tick(self) -> None:
        self.core.tick()

    def handle(self, request: Request) -> None:
        """A validated client request; every one is answered, now or later."""
        op = request.op
        if op == Op.STATUS:
            self.replies.respond(request, {"code": Code.OK.value, "status": self.status()})
        elif op in (Op.GET, Op.LIST):
            self.reads.handle(request)
        elif op in WRITE_OPS:
            self._write(request)
        elif op == Op.TRANSFER:
            self.transfers.handle(request)
        elif op == Op.SNAPSHOT:
            index = self.driver.compact_to_applied()
            self.replies.respond(request, {"code": Code.OK.value, "index": index})
        elif op == Op.MEMBER_ADD:
            self.membership.add(request)
        elif op == Op.MEMBER_REMOVE:
            self.membership.remove(request)
        elif op == Op.HASH:  # scans every key: on request only, never in status()
            self.replies.respond(request, {"code": Code.OK.value, "hash": self.sm.hash(),
                                           "applied": self.sm.applied_index()})
        else:
            self.replies.respond(request, {"code": Code.INVALID.value,
                                           "error": f"op {op.value} is not served here"})

    def end_turn(self) -> None:
        """After a turn's inputs: one ReadIndex round for its reads, then every Ready."""
        self._space_checked = False
        self.reads.flush()
        self.driver.process_ready()

    def hand_off(self) -> int:
        """This node is stopping: if it leads, hand leadership to the most caught-up live voter
        (the target, or NONE when there is none to hand to)."""
        return self.transfers.hand_off()

    def periodic(self) -> None:
        """Now and then (the node: every status publish): timeouts and learner promotion."""
        self.transfers.expire()
        self.membership.promote_caught_up_learners()

    # ---- answers -------------------------------------------------------------------------------
    def redirect(self, request: Request) -> None:
        """Point the client at the leader, or say there is none it could use."""
        leader = self.core.leader_id
        if not self.membership.is_member():
            self.replies.respond(request, {"code": Code.NO_LEADER.value,
                                           "error": "this node was removed from the cluster"})
        elif leader in (NONE, self.id):
            self.replies.respond(request, {"code": Code.NO_LEADER.value, "error": "no leader"})
        else:
            self.replies.respond(request, {
                "code": Code.NOT_LEADER.value, "error": "not the leader", "leader_id": leader,
                "leader": self.membership.client_endpoint(leader)})

    def _write(self, request: Request) -> None:
        if self.core.role != StateRole.LEADER:
            self.redirect(request)
        elif self.no_space():
            self.writes.fail(request, Code.NO_SPACE, "storage full: writes are refused, reads still work")
        else:
            self.writes.propose(request, Command.from_request(request.body).encode())

    def no_space(self) -> bool:
        """Whether the map is nearly full; looked up at most once a turn, and only in turns
        that need it (two LMDB calls)."""
        if not self._space_checked:
            self._no_space = self.store.used_bytes() > NO_SPACE_FRACTION * self.store.map_size
            self._space_checked = True
        return self._no_space

    # ---- what each Ready tells (driver.ReadyListener) ------------------------------------------
    def role_changed(self, role: StateRole, leader: int) -> None:
        if leader != self._last_leader and leader != NONE:
            self.leader_changes += 1
            self._last_leader = leader
            log.info("node=%d term=%d event=leader_changed leader=%d role=%s",
                     self.id, self.core.term, leader, role.value)
        if role != StateRole.LEADER:
            for request in [*self.writes.take_all(), *self.reads.take_all()]:
                self.redirect(request)  # clients retry elsewhere; their sessions dedup
        self.transfers.role_changed(leader)

    def applied(self, entries: list[Entry], results: list[Result]) -> None:
        self.writes.applied(entries, results)
        self.replies.flush()  # now, before the apply transaction's fsync

    def reads_ready(self, states: list[ReadState]) -> None:
        self.reads.read_states(states)

    def advanced(self, membership_changed: bool) -> None:
        if membership_changed:
            self.membership.refresh()
            self.removal.membership_changed()
        self.reads.serve_ready()

    # ---- status ---------------------------------------------------------------------------------
    def ready(self) -> bool:
        """/ready: a leader is known, and what was committed when this node started has been
        applied (latched: once caught up, only the leader decides)."""
        if not self._caught_up and self.sm.applied_index() >= self._start_commit:
            self._caught_up = True
        return self._caught_up and self.core.leader_id != NONE and self.membership.is_member()

    def status(self) -> dict[str, Any]:
        return status.replica_status(self)
