"""Membership: who the members are and where they listen, and the changes an operator asks for.

Thesis §4.1: one server at a time; a new server joins as a learner and the leader makes it a
voter once its log has caught up, so adding a server never leaves the cluster waiting on an
empty log. The state machine owns the durable membership (conf state and addresses, updated
when a conf change is applied); this module is its one in-memory view, refreshed after every
change, and keeps the peer links in step with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgpack

from raftkv.protocol import Code

from ..net.clientendpoint import Request
from ..raft import ProposalDropped, RaftNode
from ..raft.messages import ConfChange, ConfChangeType, ConfState, StateRole
from .seams import PeerTransport, Replies, StateMachine
from .writes import Writes

log = logging.getLogger(__name__)

ADDRESS_FIELDS = ("raft", "client", "http")
Addresses = dict[int, dict[str, str]]


def _host_port(address: str) -> str:
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    return f"{host.lower()}:{port}"


class Membership:
    """The members, their addresses, and the administration of changes (on the leader)."""

    def __init__(self, core: RaftNode, sm: StateMachine, transport: PeerTransport,
                 writes: Writes, replies: Replies, founders: Addresses,
                 redirect: Callable[[Request], None]) -> None:
        """`founders`: the cluster file's nodes, used only for what the log has not told yet
        (a joining node's first contacts)."""
        self.core = core
        self.sm = sm
        self.transport = transport
        self.writes = writes
        self.replies = replies
        self.founders = founders
        self.redirect = redirect
        self.addresses: Addresses = {}
        self.member_ids: frozenset[int] = frozenset()
        """The conf's voters and learners as of the last refresh (a set lookup per message)."""
        self.refresh()

    # ---- the view --------------------------------------------------------------------------
    @property
    def conf(self) -> ConfState:
        return self.core.conf

    def ids(self) -> frozenset[int]:
        """Current members (voters and learners); the file's nodes while we know none."""
        return self.conf.ids() or frozenset(self.founders)

    def is_member(self) -> bool:
        """False once this node's own removal is known (it then knows no leader to follow)."""
        conf = self.conf
        return not conf.ids() or self.core.id in conf.ids()

    def client_endpoint(self, node_id: int) -> str:
        return self.addresses.get(node_id, {}).get("client", "")

    def member_clients(self) -> dict[int, str]:
        """Client endpoints of the current members (a removed node lists the cluster it left)."""
        ids = self.ids()
        return {i: a["client"] for i, a in self.addresses.items() if i in ids and "client" in a}

    def refresh(self) -> None:
        """Re-read the addresses and bring the peer links in line with the membership."""
        self.addresses = {**self.founders, **self.sm.members()}
        self.member_ids = self.conf.ids()
        wanted = {i: self.addresses[i]["raft"] for i in self.ids()
                  if i != self.core.id and "raft" in self.addresses.get(i, {})}
        current = self.transport.peers
        for peer in set(current) - set(wanted):
            self.transport.remove_peer(peer)
        for peer, endpoint in wanted.items():
            if current.get(peer) != endpoint:
                self.transport.add_peer(peer, endpoint)

    # ---- changes ---------------------------------------------------------------------------------
    def add(self, request: Request) -> None:
        if self.core.role != StateRole.LEADER:
            self.redirect(request)
            return
        body = request.body
        node_id = body["node_id"]
        if node_id in self.conf.ids():
            self._refuse(request, f"node {node_id} is already a member")
            return
        conflict = self._address_conflict(body)
        if conflict:
            self._refuse(request, conflict)
            return
        context = msgpack.packb({k: body[k] for k in ADDRESS_FIELDS})
        self._propose(request, ConfChange(ConfChangeType.ADD_LEARNER, node_id, context))

    def remove(self, request: Request) -> None:
        if self.core.role != StateRole.LEADER:
            self.redirect(request)
            return
        node_id = request.body["node_id"]
        if node_id not in self.conf.ids():
            self._refuse(request, f"node {node_id} is not a member")
            return
        self._propose(request, ConfChange(ConfChangeType.REMOVE_NODE, node_id))

    def promote_caught_up_learners(self) -> None:
        """On the leader: make a learner a voter once its match reaches the commit index."""
        if self.core.role != StateRole.LEADER:
            return
        st = self.core.status()
        for learner in sorted(st.conf.learners):
            progress = st.progress.get(learner)
            if progress is None or progress.match < st.commit:
                continue
            try:
                index = self.core.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, learner))
            except ProposalDropped:
                return  # another change is still pending: one at a time
            log.info("node=%d event=promote_learner member=%d match=%d index=%d", self.core.id,
                     learner, progress.match, index)
            return

    def _address_conflict(self, body: dict[str, str]) -> str | None:
        """Two members on one address would steal each other's traffic: refuse it."""
        asked = [(name, _host_port(body[name])) for name in ADDRESS_FIELDS]
        if len({address for _, address in asked}) < len(asked):
            return "the raft, client and http addresses of a node must differ"
        for member in sorted(self.conf.ids()):
            taken = {_host_port(a) for a in self.addresses.get(member, {}).values()}
            for name, address in asked:
                if address in taken:
                    return f"{name} address {body[name]} is already used by node {member}"
        return None

    def _propose(self, request: Request, change: ConfChange) -> None:
        """Answered once the change is applied, like a write."""
        try:
            index = self.core.propose_conf_change(change)
        except ProposalDropped as exc:
            self.replies.respond(request, {"code": Code.UNAVAILABLE.value, "error": str(exc)})
            return
        log.info("node=%d event=member_change type=%s member=%d index=%d", self.core.id,
                 change.type.name, change.node_id, index)
        self.writes.track(index, request)

    def _refuse(self, request: Request, message: str) -> None:
        self.replies.respond(request, {"code": Code.INVALID.value, "error": message})
