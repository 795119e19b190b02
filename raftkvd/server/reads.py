"""Reads: serializable ones from this node's state at once; linearizable ones on the leader,
after a ReadIndex round (thesis §6.4) or within a leader lease (§6.4.1), and once the state
machine has applied that index.

Every linearizable read that arrives in one loop turn shares one ReadIndex round: one
heartbeat to a quorum answers them all. A round that a quorum answered also proves that no
other leader can exist until LEASE_FRACTION of an election timeout after it started: each
of that quorum heard from us after the start, and with CheckQuorum refuses to vote for one
election timeout after hearing from a leader (a restarted node too: core.py `_fresh`).
While that lease lasts, reads are served at the commit index at once, with no round; a
round in the background renews the lease before it runs out. Clocks may drift: the lease
uses half the election timeout, and this node's monotonic clock, which goes on while the
process is stopped, while peers count ticks, which never run ahead of real time. A
leadership transfer ends the lease for the rest of the term: its target campaigns without
waiting, whenever its TimeoutNow arrives.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.protocol import CONSISTENCY_SERIALIZABLE, Code, Op

from ..net.clientendpoint import Request
from ..raft import ProposalDropped, RaftNode
from ..raft.messages import NONE, ReadState, StateRole
from .seams import Clock, Replies, StateMachine

LEASE_FRACTION = 0.5
"""The lease, as a share of the shortest election timeout: covers peers' clocks running up to
twice as fast as ours (the simulator skews tick rates by up to 1.5)."""


@dataclass
class ReadBatch:
    """Linearizable reads that share one ReadIndex round."""

    requests: list[Request] = field(default_factory=list)
    index: int = 0
    started: float = 0.0
    """When its round began: a lease it grants counts from here."""


class Reads:
    """Owned by the replica's loop. Tests may subclass it to break the read path on purpose
    (tests/chaos passes one that skips ReadIndex, which the checker must catch)."""

    def __init__(self, core: RaftNode, sm: StateMachine, replies: Replies,
                 redirect: Callable[[Request], None], clock: Clock, tick_s: float,
                 lease: bool = True) -> None:
        """`tick_s`: seconds per core tick, which sets the lease; `lease`: whether to lease at
        all (never without CheckQuorum: peers would not keep their part)."""
        self.core = core
        self.sm = sm
        self.replies = replies
        self.redirect = redirect
        self.clock = clock
        self.batch = ReadBatch()
        self.by_ctx: dict[bytes, ReadBatch] = {}
        self.waiting: list[ReadBatch] = []
        self._ids = itertools.count(1)
        cfg = core.cfg
        self.lease_s = LEASE_FRACTION * cfg.election_tick * tick_s if lease and cfg.check_quorum else 0.0
        self._lease_until = 0.0
        self._no_lease_term = 0
        """A term in which this node began a leadership transfer: no lease in it any more."""
        self._renewing = False
        """A round without reads is out to renew the lease."""

    def handle(self, request: Request) -> None:
        if request.body.get("consistency") == CONSISTENCY_SERIALIZABLE:
            self.serve(request)
        elif self.core.role != StateRole.LEADER:
            self.redirect(request)
        else:
            self.linearizable(request)

    def linearizable(self, request: Request) -> None:
        """On the leader: join this turn's batch (one ReadIndex round, or the lease)."""
        self.batch.requests.append(request)

    def flush(self) -> None:
        """One ReadIndex round for every linearizable read that arrived this turn, or none
        while the lease lasts (then at most a renewal round)."""
        self._end_lease_on_transfer()
        if not self.batch.requests:
            return
        batch, self.batch = self.batch, ReadBatch()
        now = self.clock()
        if now < self._lease_until and self.core.role == StateRole.LEADER:
            batch.index = self.core.log.committed
            self.waiting.append(batch)
            self.serve_ready()
            if not self._renewing and self._lease_until - now < self.lease_s / 2:
                self._renewing = self._round(ReadBatch(), now)
            return
        self._round(batch, now)

    def _round(self, batch: ReadBatch, now: float) -> bool:
        """Start a ReadIndex round for `batch`; False when the core refused it."""
        ctx = f"{self.core.id}:{next(self._ids)}".encode()
        batch.started = now
        try:
            self.core.read_index(ctx)
        except ProposalDropped as exc:
            for request in batch.requests:
                self.replies.respond(request, {"code": Code.UNAVAILABLE.value, "error": str(exc)})
            return False
        self.by_ctx[ctx] = batch
        return True

    def read_states(self, states: list[ReadState]) -> None:
        for state in states:
            batch = self.by_ctx.pop(state.context, None)
            if batch is None:
                continue
            if not batch.requests:  # the renewal round (a later round releases it too)
                self._renewing = False
            if self.core.term != self._no_lease_term:
                self._lease_until = max(self._lease_until, batch.started + self.lease_s)
            if batch.requests:
                batch.index = state.index
                self.waiting.append(batch)

    def _end_lease_on_transfer(self) -> None:
        """Seen in the turn a transfer begins, before its TimeoutNow leaves (in the Ready)."""
        if self.core.lead_transferee != NONE:
            self._no_lease_term = self.core.term
            self._end_lease()

    def _end_lease(self) -> None:
        self._lease_until = 0.0
        self._renewing = False

    def serve_ready(self) -> None:
        """Serve the batches whose read index the state machine has applied."""
        if not self.waiting:
            return
        applied = self.sm.applied_index()
        still_waiting = []
        for batch in self.waiting:
            if batch.index <= applied:
                for request in batch.requests:
                    self.serve(request)
            else:
                still_waiting.append(batch)
        self.waiting = still_waiting

    def serve(self, request: Request) -> None:
        body = request.body
        if request.op == Op.GET:
            found = self.sm.get(body["key"])
            if found is None:
                self.replies.respond(request, {"code": Code.NOT_FOUND.value,
                                               "error": f"key not found: {body['key']}"})
            else:
                self.replies.respond(request, {"code": Code.OK.value, "value": found[0],
                                               "revision": found[1]})
        else:
            items = self.sm.list(body.get("prefix") or "", body.get("limit"))
            self.replies.respond(request, {"code": Code.OK.value, "items": [list(i) for i in items],
                                           "revision": self.sm.revision()})

    def take_all(self) -> list[Request]:
        """Leadership is gone: hand back every read not yet served, to be redirected."""
        self._end_lease()
        batches = [self.batch, *self.by_ctx.values(), *self.waiting]
        self.batch, self.by_ctx, self.waiting = ReadBatch(), {}, []
        return [request for batch in batches for request in batch.requests]
