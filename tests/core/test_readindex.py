"""Linearizable reads by ReadIndex (thesis §6.4), on the leader and forwarded from followers."""

from __future__ import annotations

import pytest

from raftkvd.raft import ProposalDropped
from raftkvd.raft.messages import Message, ReadState

from .raftnet import MT, Driven, Net, leader_with_log, make_node

KNOBS = {"pre_vote": True, "check_quorum": True}


def test_leader_serves_a_read_at_its_commit_index_after_a_heartbeat_quorum() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.propose(1, b"w")
    net.node(1).read_index(b"ctx-1")
    sent = net.peers[1].handle()
    beats = [m for m in sent if m.type == MT.HEARTBEAT]
    assert {m.context for m in beats} == {b"ctx-1"}, "leadership is confirmed by a heartbeat round"
    assert net.peers[1].read_states == []
    net.queue.extend(sent)
    net.stabilize()
    assert net.peers[1].read_states == [ReadState(2, b"ctx-1")]


def test_read_waits_until_the_leader_has_committed_an_entry_of_its_term() -> None:
    node, storage, _ = leader_with_log()
    driven = Driven(node, storage)
    node.read_index(b"early")
    assert not [m for m in driven.handle() if m.context == b"early"], "no read round before the no-op commits"
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term, index=1))
    out = driven.handle()
    assert {m.to for m in out if m.type == MT.HEARTBEAT and m.context == b"early"} == {2, 3}
    node.step(Message(MT.HEARTBEAT_RESP, to=1, frm=2, term=node.term, context=b"early"))
    driven.handle()
    assert driven.read_states == [ReadState(1, b"early")]


def test_follower_read_is_forwarded_to_the_leader_and_answered_with_its_read_index() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.propose(1, b"w")
    net.node(2).read_index(b"from-2")
    forwarded = [m for m in net.peers[2].handle() if m.type == MT.READ_INDEX]
    assert [(m.to, m.context) for m in forwarded] == [(1, b"from-2")]
    net.queue.extend(forwarded)
    net.stabilize()
    assert net.peers[2].read_states == [ReadState(2, b"from-2")]
    assert any(m.type == MT.READ_INDEX_RESP and m.to == 2 for m in net.delivered)


def test_read_on_a_node_that_knows_no_leader_is_refused() -> None:
    node, _ = make_node()
    with pytest.raises(ProposalDropped):
        node.read_index(b"x")


def test_single_voter_serves_reads_without_a_round() -> None:
    net = Net(1, **KNOBS)
    net.elect(1)
    net.stabilize()
    net.node(1).read_index(b"solo")
    net.stabilize()
    assert net.peers[1].read_states == [ReadState(1, b"solo")]


def test_a_later_read_round_releases_earlier_pending_reads() -> None:
    node, storage, _ = leader_with_log()
    driven = Driven(node, storage)
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term, index=1))
    driven.handle()
    node.read_index(b"a")
    node.read_index(b"b")
    node.read_index(b"b")  # a duplicate context joins the existing request
    driven.handle()
    node.step(Message(MT.HEARTBEAT_RESP, to=1, frm=3, term=node.term, context=b"b"))
    driven.handle()
    assert [rs.context for rs in driven.read_states] == [b"a", b"b"]


def test_isolated_leader_cannot_confirm_a_read() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.isolate(1)
    net.node(1).read_index(b"stale?")
    net.stabilize()
    net.tick(1, 3)
    net.stabilize()
    assert net.peers[1].read_states == []


def test_acks_for_unknown_rounds_are_ignored() -> None:
    node, storage, _ = leader_with_log()
    driven = Driven(node, storage)
    node.step(Message(MT.HEARTBEAT_RESP, to=1, frm=2, term=node.term, context=b"nobody-asked"))
    driven.handle()
    assert driven.read_states == []


def test_pending_heartbeats_carry_the_newest_read_context() -> None:
    node, storage, _ = leader_with_log(heartbeat_tick=1)
    driven = Driven(node, storage)
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term, index=1))
    driven.handle()
    node.read_index(b"r1")
    node.read_index(b"r2")
    driven.handle()
    node.tick()
    beats = [m for m in driven.handle() if m.type == MT.HEARTBEAT]
    assert beats and {m.context for m in beats} == {b"r2"}


def test_read_index_includes_every_write_committed_before_the_request() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    for i in range(5):
        net.propose(1, b"w%d" % i)
    committed = net.node(1).log.committed
    net.node(3).read_index(b"r")
    net.stabilize()
    (rs,) = net.peers[3].read_states
    assert rs.index >= committed
