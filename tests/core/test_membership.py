"""Membership changes one server at a time (thesis §4.1); learners catch up without voting."""

from __future__ import annotations

import pytest

from raftkvd.raft import ProposalDropped
from raftkvd.raft.messages import ConfChange, ConfChangeType, ConfState, Message, StateRole

from .raftnet import MT, Net

KNOBS = {"pre_vote": True, "check_quorum": True}
ADD, LEARNER, REMOVE = ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER, ConfChangeType.REMOVE_NODE


def change(net: Net, leader: int, kind: ConfChangeType, node_id: int) -> int:
    index = net.node(leader).propose_conf_change(ConfChange(kind, node_id))
    net.stabilize()
    return index


def test_learner_receives_the_log_but_is_not_counted_for_commit() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.add(4, peers=(1, 2, 3))
    change(net, 1, LEARNER, 4)
    assert net.node(1).conf == ConfState(frozenset((1, 2, 3)), frozenset((4,)))
    net.propose(1, b"x")
    assert net.node(4).log.last_index() == net.node(1).log.last_index()
    net.isolate(2)
    net.isolate(3)
    net.cut -= {(1, 4), (4, 1)}
    index = net.node(1).propose(b"needs a voter")
    net.stabilize()
    assert net.node(4).log.last_index() >= index
    assert net.node(1).log.committed < index, "a learner's copy does not count"


def test_learner_never_campaigns() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.add(4, peers=(1, 2, 3))
    change(net, 1, LEARNER, 4)
    net.isolate(4)
    for _ in range(5 * net.node(4).cfg.election_tick):
        net.node(4).tick()
    assert net.node(4).role is StateRole.FOLLOWER and not net.peers[4].handle()


def test_learner_promoted_to_voter_counts_for_quorum() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.add(4, peers=(1, 2, 3))
    change(net, 1, LEARNER, 4)
    change(net, 1, ADD, 4)
    assert net.node(1).conf.voters == {1, 2, 3, 4} and not net.node(1).conf.learners
    net.isolate(3)
    net.isolate(2)
    net.cut -= {(1, 4), (4, 1)}
    index = net.node(1).propose(b"two of four")
    net.stabilize()
    assert net.node(1).log.committed < index, "two of four voters are no majority"
    net.recover()
    net.stabilize()
    net.tick(1)
    net.stabilize()
    assert net.node(1).log.committed >= index


def test_only_one_membership_change_may_be_pending_at_a_time() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.isolate(2)
    net.isolate(3)
    net.node(1).propose_conf_change(ConfChange(LEARNER, 4))
    with pytest.raises(ProposalDropped):
        net.node(1).propose_conf_change(ConfChange(LEARNER, 5))
    net.recover()
    net.stabilize()
    net.tick(1)
    net.stabilize()
    net.node(1).propose_conf_change(ConfChange(LEARNER, 5))


def test_new_leader_accepts_no_change_until_it_has_applied_its_predecessors_entries() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.isolate(1)
    net.node(1).propose_conf_change(ConfChange(LEARNER, 4))  # uncommitted, maybe in others' logs
    net.recover()
    net.node(2).campaign()
    net.node(2).step(Message(MT.PRE_VOTE_RESP, to=2, frm=3, term=net.node(2).term + 1))
    net.node(2).step(Message(MT.VOTE_RESP, to=2, frm=3, term=net.node(2).term))
    assert net.node(2).role is StateRole.LEADER
    with pytest.raises(ProposalDropped):
        net.node(2).propose_conf_change(ConfChange(LEARNER, 5))


def test_removed_leader_steps_down_once_its_removal_is_applied() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    change(net, 1, REMOVE, 1)
    net.tick(1)
    net.stabilize()
    assert net.node(1).role is StateRole.FOLLOWER
    assert 1 not in net.node(1).conf.voters
    for _ in range(5 * net.node(1).cfg.election_tick):
        net.node(1).tick()
    assert net.node(1).role is StateRole.FOLLOWER, "a removed server never campaigns"
    net.isolate(1)
    for _ in range(3 * net.node(2).cfg.election_tick):
        net.tick_all()
    leaders = [i for i in (2, 3) if net.node(i).role is StateRole.LEADER]
    assert len(leaders) == 1
    assert net.node(leaders[0]).conf.voters == {2, 3}


def test_removing_a_follower_shrinks_the_quorum() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    change(net, 1, REMOVE, 3)
    assert 3 not in net.node(1).prs
    net.isolate(3)
    index = net.node(1).propose(b"two of two")
    net.stabilize()
    assert net.node(1).log.committed >= index


def test_last_voter_cannot_be_removed_and_a_voter_cannot_be_demoted() -> None:
    net = Net(1, **KNOBS)
    net.elect(1)
    net.stabilize()
    with pytest.raises(ProposalDropped):
        net.node(1).propose_conf_change(ConfChange(REMOVE, 1))
    with pytest.raises(ProposalDropped):
        net.node(1).propose_conf_change(ConfChange(LEARNER, 1))


def test_follower_cannot_propose_a_membership_change() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    with pytest.raises(ProposalDropped):
        net.node(2).propose_conf_change(ConfChange(LEARNER, 4))


def test_added_server_catches_up_from_an_empty_log() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    for i in range(5):
        net.propose(1, b"w%d" % i)
    net.add(4, peers=(1, 2, 3))
    change(net, 1, LEARNER, 4)
    net.tick(1)
    net.stabilize()
    assert [e.data for e in net.peers[4].applied] == [e.data for e in net.peers[1].applied]
    assert net.peers[4].conf.learners == {4}
