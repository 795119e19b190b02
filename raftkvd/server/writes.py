"""Client writes on the leader: propose, remember, answer once the entry is applied.

A pending write is keyed by the index its entry got and remembers the term it was proposed
in. When that index is applied, the entry there is ours only if its term is that term: a
new leader may have put another entry at the same index, and answering with its result as
if ours had committed would be a lie (the client retries; its session dedups).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.protocol import Code

from ..metrics import NodeMetrics
from ..net.clientendpoint import Request
from ..raft import ProposalDropped, RaftNode
from ..raft.messages import Entry
from .seams import Replies, Result
from .tracing import Traces


@dataclass(slots=True)
class PendingWrite:
    request: Request
    term: int


class Writes:
    """Proposals of this node's term waiting for their entries to apply."""

    def __init__(self, core: RaftNode, replies: Replies, metrics: NodeMetrics, traces: Traces) -> None:
        self.core = core
        self.replies = replies
        self.metrics = metrics
        self.traces = traces
        self.pending: dict[int, PendingWrite] = {}

    def propose(self, request: Request, data: bytes) -> None:
        """Propose `data` for `request` (the caller checked we lead); answered once applied."""
        try:
            index = self.core.propose(data)
        except ProposalDropped as exc:
            self.fail(request, Code.UNAVAILABLE, str(exc))
            return
        self.track(index, request)
        if request.body.get("trace") is True:
            self.traces.start(index, request.received)

    def track(self, index: int, request: Request) -> None:
        """Answer `request` when the entry at `index`, of the current term, is applied."""
        self.pending[index] = PendingWrite(request, self.core.term)

    def fail(self, request: Request, code: Code, message: str) -> None:
        self.metrics.proposals_failed.inc()
        self.replies.respond(request, {"code": code.value, "error": message})

    def applied(self, entries: list[Entry], results: list[Result]) -> None:
        """Answer the pending writes among `entries` (inside the apply transaction)."""
        if not self.pending:
            return
        for entry, result in zip(entries, results, strict=True):
            pending = self.pending.pop(entry.index, None)
            if pending is None:
                continue
            if pending.term != entry.term:
                self.fail(pending.request, Code.UNAVAILABLE, "leadership changed; retry")
                continue
            answer = {**result, "index": entry.index}
            if self.traces.open:
                trace = self.traces.finish(entry.index)
                if trace is not None:
                    answer["trace"] = trace
            self.replies.respond(pending.request, answer)

    def take_all(self) -> list[Request]:
        """Leadership is gone: hand back every pending request, to be redirected."""
        requests = [p.request for p in self.pending.values()]
        self.metrics.proposals_failed.inc(len(requests))
        self.pending.clear()
        self.traces.drop_all()
        return requests
