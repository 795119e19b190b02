"""Reads: serializable ones from this node's state at once; linearizable ones on the leader,
after a ReadIndex round (thesis §6.4) and once the state machine has applied that index.

Every linearizable read that arrives in one loop turn shares one ReadIndex round: one
heartbeat to a quorum answers them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.protocol import CONSISTENCY_SERIALIZABLE, Code, Op

from ..net.clientendpoint import Request
from ..raft import ProposalDropped, RaftNode
from ..raft.messages import ReadState, StateRole
from .seams import Replies, StateMachine


@dataclass
class ReadBatch:
    """Linearizable reads that share one ReadIndex round."""

    requests: list[Request] = field(default_factory=list)
    index: int = 0


class Reads:
    """Owned by the replica's loop. Tests may subclass it to break the read path on purpose
    (tests/chaos passes one that skips ReadIndex, which the checker must catch)."""

    def __init__(self, core: RaftNode, sm: StateMachine, replies: Replies,
                 redirect: Callable[[Request], None]) -> None:
        self.core = core
        self.sm = sm
        self.replies = replies
        self.redirect = redirect
        self.batch = ReadBatch()
        self.by_ctx: dict[bytes, ReadBatch] = {}
        self.waiting: list[ReadBatch] = []
        self._ids = itertools.count(1)

    def handle(self, request: Request) -> None:
        if request.body.get("consistency") == CONSISTENCY_SERIALIZABLE:
            self.serve(request)
        elif self.core.role != StateRole.LEADER:
            self.redirect(request)
        else:
            self.linearizable(request)

    def linearizable(self, request: Request) -> None:
        """On the leader: join this turn's ReadIndex round."""
        self.batch.requests.append(request)

    def flush(self) -> None:
        """One ReadIndex round for every linearizable read that arrived this turn."""
        if not self.batch.requests:
            return
        ctx = f"{self.core.id}:{next(self._ids)}".encode()
        batch, self.batch = self.batch, ReadBatch()
        try:
            self.core.read_index(ctx)
        except ProposalDropped as exc:
            for request in batch.requests:
                self.replies.respond(request, {"code": Code.UNAVAILABLE.value, "error": str(exc)})
            return
        self.by_ctx[ctx] = batch

    def read_states(self, states: list[ReadState]) -> None:
        for state in states:
            batch = self.by_ctx.pop(state.context, None)
            if batch is not None:
                batch.index = state.index
                self.waiting.append(batch)

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
            self.replies.respond(request, {"code": Code.OK.value, "items": [list(i) for i in items]})

    def take_all(self) -> list[Request]:
        """Leadership is gone: hand back every read not yet served, to be redirected."""
        batches = [self.batch, *self.by_ctx.values(), *self.waiting]
        self.batch, self.by_ctx, self.waiting = ReadBatch(), {}, []
        return [request for batch in batches for request in batch.requests]
