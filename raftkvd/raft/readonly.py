"""ReadIndex bookkeeping (thesis §6.4, etcd read_only.go).

The leader records its commit index for each read request, then confirms it is
still leader with a heartbeat round carrying the request's context. Once a
majority acknowledges, that read and every read queued before it may be served
at the recorded index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import Message


@dataclass
class ReadIndexStatus:
    request: Message
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, request: Message) -> None:
        ctx = request.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(request, index)
        self.queue.append(ctx)

    def recv_ack(self, node_id: int, ctx: bytes) -> set[int] | None:
        status = self.pending.get(ctx)
        if status is None:
            return None
        status.acks.add(node_id)
        return status.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release `ctx` and every request queued before it (a later round confirms earlier ones)."""
        if ctx not in self.pending:
            return []
        position = self.queue.index(ctx) + 1
        released, self.queue = self.queue[:position], self.queue[position:]
        return [self.pending.pop(c) for c in released]

    def last_pending_context(self) -> bytes | None:
        return self.queue[-1] if self.queue else None
