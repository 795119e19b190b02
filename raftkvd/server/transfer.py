"""Leadership transfer (thesis §3.10): the leader brings the target up to date and tells it to
campaign at once. On request, the request is answered when a new leader is known, or after
TRANSFER_TIMEOUT_S; a target that cannot take over is refused at once, naming why. A leader
that is stopping hands off to its most caught-up live voter by itself (`hand_off`), so a
rolling restart costs clients a redirect, not an election timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raftkv.protocol import Code

from ..net.clientendpoint import Request
from ..raft import RaftNode
from ..raft.messages import NONE, StateRole
from .seams import Clock, Replies

TRANSFER_TIMEOUT_S = 3.0


@dataclass(slots=True)
class _Pending:
    request: Request | None
    """None for a hand-off the node started itself."""
    target: int
    deadline: float


class Transfers:
    """At most one transfer in flight, on the leader."""

    def __init__(self, core: RaftNode, replies: Replies, clock: Clock,
                 last_heard: dict[int, float], silent_after_s: float,
                 redirect: Callable[[Request], None]) -> None:
        self.core = core
        self.replies = replies
        self.clock = clock
        self.last_heard = last_heard
        self.silent_after_s = silent_after_s
        self.redirect = redirect
        self.pending: _Pending | None = None

    def handle(self, request: Request) -> None:
        if self.core.role != StateRole.LEADER:
            self.redirect(request)
            return
        if self.pending is not None:
            self._answer(request, Code.UNAVAILABLE, "a leadership transfer is already in progress")
            return
        asked = request.body.get("to") or NONE
        target = asked or self._best_transferee()
        if target == self.core.id:
            self.replies.respond(request, {"code": Code.OK.value, "leader_id": self.core.id})
            return
        if target == NONE:
            self._answer(request, Code.INVALID, "no other voter is reachable to take over")
            return
        if target not in self.core.status().conf.voters:
            self._answer(request, Code.INVALID, f"node {target} is not a voter of this cluster")
            return
        silence = self._silence(target)
        if silence is not None:
            self._answer(request, Code.UNAVAILABLE, f"node {target} is unreachable ({silence})")
            return
        self.core.transfer_leadership(target)
        self.pending = _Pending(request, target, self.clock() + TRANSFER_TIMEOUT_S)

    def hand_off(self) -> int:
        """On a leader about to stop: start a transfer to the most caught-up live voter.
        Returns the target, or NONE when there is nobody to hand over to (or we do not lead)."""
        if self.core.role != StateRole.LEADER:
            return NONE
        target = self._best_transferee()
        if target != NONE:
            self.core.transfer_leadership(target)
            if self.pending is None:
                self.pending = _Pending(None, target, self.clock() + TRANSFER_TIMEOUT_S)
        return target

    def role_changed(self, leader: int) -> None:
        """A new leader is known: the transfer (whoever won) is over."""
        pending = self.pending
        if pending is not None and leader not in (NONE, self.core.id):
            self.pending = None
            if pending.request is not None:
                self.replies.respond(pending.request, {"code": Code.OK.value, "leader_id": leader})

    def expire(self) -> None:
        pending = self.pending
        if pending is not None and self.clock() > pending.deadline:
            self.pending = None
            if pending.request is not None:
                self._answer(pending.request, Code.UNAVAILABLE,
                             f"leadership transfer to node {pending.target} did not finish within "
                             f"{TRANSFER_TIMEOUT_S:g}s")

    def _best_transferee(self) -> int:
        """The most caught-up voter that is alive."""
        status = self.core.status()
        candidates = [
            (p.match, pid) for pid, p in status.progress.items()
            if pid != self.core.id and pid in status.conf.voters and self._silence(pid) is None
        ]
        return max(candidates)[1] if candidates else NONE

    def _silence(self, peer: int) -> str | None:
        """Why `peer` counts as unreachable, or None when it was heard from lately."""
        heard = self.last_heard.get(peer)
        if heard is None:
            return "never heard from since this node started"
        quiet = self.clock() - heard
        return f"last heard {quiet:.1f}s ago" if quiet > self.silent_after_s else None

    def _answer(self, request: Request, code: Code, message: str) -> None:
        self.replies.respond(request, {"code": code.value, "error": message})
