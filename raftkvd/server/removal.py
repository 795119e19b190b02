"""Removed members stop (SPEC §3): a node that learns the log removed it says so once and exits 0.

It learns it in one of two ways. It applies its own removal, as a leader removing itself and a
follower that saw the commit do. Or, because the leader stops talking to a removed node at
once, it may never see that commit (stopped, partitioned, or simply last to hear): then the
members it keeps contacting answer with a RemovedNotice naming the entry that removed it, as
etcd's peers answer a removed member. Meanwhile PreVote keeps its campaigns from moving any
term. A notice counts only for an entry this node has not applied: a node removed and added
again later has applied past its removal, so a member that lags behind the re-add cannot
stop it.
"""

from __future__ import annotations

import logging

from ..net.peerwire import RemovedNotice
from ..raft.messages import Message
from .membership import Membership
from .seams import Clock, PeerTransport, StateMachine

log = logging.getLogger(__name__)

NOTICE_INTERVAL_S = 1.0
"""At most one notice per removed node per interval: its messages come every tick or so."""


class Removal:
    """Whether this node was removed, and the notices it owes removed nodes that contact it."""

    def __init__(self, node_id: int, sm: StateMachine, transport: PeerTransport,
                 membership: Membership, clock: Clock) -> None:
        self.id = node_id
        self.sm = sm
        self.transport = transport
        self.membership = membership
        self.clock = clock
        self.removed_by: int | None = None
        """The index of the entry that removed this node, once it knows (0: index unknown)."""
        self._told: dict[int, float] = {}
        self.membership_changed()  # a node restarted after its removal stops at once

    @property
    def removed(self) -> bool:
        return self.removed_by is not None

    def admit(self, msg: Message) -> bool:
        """Whether `msg` goes to the core: a removed member's message is answered with a
        notice instead (the core would only reject its campaigns, for ever)."""
        frm = msg.frm
        if frm in self.membership.member_ids:
            return True
        index = self.sm.removed_at(frm)
        if index is None:
            return True  # a member this node has yet to hear of, or a stranger: the core judges
        now = self.clock()
        if now - self._told.get(frm, float("-inf")) >= NOTICE_INTERVAL_S:
            self._told[frm] = now
            self.transport.tell_removed(frm, index)
            log.info("node=%d event=told_removed member=%d index=%d", self.id, frm, index)
        return False

    def notified(self, notice: RemovedNotice) -> None:
        """A member says the entry at `notice.index` removed us."""
        if self.removed or notice.frm not in self.membership.ids():
            return
        if notice.index <= self.sm.applied_index():
            return  # we applied past that entry (and so an add after it): not us any more
        self._stop(notice.index, f"told_by={notice.frm}")

    def membership_changed(self) -> None:
        """After a change of membership was applied (or at start): is this node still in it?"""
        if not self.removed and not self.membership.is_member():
            self._stop(self.sm.removed_at(self.id) or 0, "applied=true")

    def _stop(self, index: int, how: str) -> None:
        self.removed_by = index
        log.info("node=%d event=removed_from_cluster index=%d %s action=exiting", self.id,
                    index, how)
