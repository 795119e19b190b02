"""Leadership transfer (thesis §3.10): catch the target up, then TimeoutNow; abandon after a timeout."""

from __future__ import annotations

import pytest

from raftkvd.raft import ProposalDropped
from raftkvd.raft.messages import ConfChange, ConfChangeType, Message, StateRole

from .raftnet import MT, Net

KNOBS = {"pre_vote": True, "check_quorum": True}


def test_transfer_to_an_up_to_date_follower_sends_timeout_now_and_it_wins() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    term = net.node(1).term
    net.node(1).transfer_leadership(2)
    sent = net.stabilize()
    assert any(m.type == MT.TIMEOUT_NOW and m.to == 2 for m in sent)
    assert net.node(2).role is StateRole.LEADER and net.node(2).term == term + 1
    assert net.node(1).role is StateRole.FOLLOWER


def test_transfer_to_a_lagging_follower_first_brings_its_log_up_to_date() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"w%d" % i)
    net.recover()
    net.node(1).transfer_leadership(3)
    assert net.node(1).lead_transferee == 3
    net.stabilize()
    assert net.node(3).role is StateRole.LEADER
    assert net.node(3).log.last_index() >= 6


def test_proposals_are_refused_while_a_transfer_is_under_way() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.isolate(2)
    net.node(1).transfer_leadership(2)
    with pytest.raises(ProposalDropped):
        net.node(1).propose(b"x")
    with pytest.raises(ProposalDropped):
        net.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 9))


def test_transfer_that_does_not_finish_within_an_election_timeout_is_abandoned() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.isolate(2)
    net.node(1).transfer_leadership(2)
    net.tick(1, net.node(1).cfg.election_tick)
    net.stabilize()
    assert net.node(1).lead_transferee == 0
    assert net.node(1).propose(b"again") > 0


@pytest.mark.parametrize("target", [1, 9])
def test_transfer_to_itself_or_to_a_stranger_is_ignored(target: int) -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.node(1).transfer_leadership(target)
    assert net.node(1).lead_transferee == 0


def test_follower_forwards_a_transfer_request_to_the_leader() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.node(3).transfer_leadership(3)
    net.stabilize()
    assert net.node(3).role is StateRole.LEADER


def test_timeout_now_makes_a_follower_campaign_at_once_without_pre_vote() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    term = net.node(1).term
    net.node(2).step(Message(MT.TIMEOUT_NOW, to=2, frm=1, term=term))
    assert net.node(2).role is StateRole.CANDIDATE and net.node(2).term == term + 1
    votes = [m for m in net.peers[2].handle() if m.type == MT.VOTE]
    assert votes and all(m.context == b"transfer" for m in votes)


def test_repeated_transfer_to_the_same_target_is_a_no_op() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.isolate(2)
    net.node(1).transfer_leadership(2)
    net.stabilize()
    before = len(net.peers[1].handle())
    net.node(1).transfer_leadership(2)
    assert len(net.peers[1].handle()) == before == 0
