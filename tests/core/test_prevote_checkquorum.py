"""PreVote (thesis §9.6) and CheckQuorum / leader lease (thesis §4.2.3, §6.2)."""

from __future__ import annotations

from raftkvd.raft.messages import NONE, Message, StateRole

from .raftnet import MT, Driven, Net, make_node, storage_with

PRE = {"pre_vote": True, "check_quorum": False}
CQ = {"pre_vote": False, "check_quorum": True}
BOTH = {"pre_vote": True, "check_quorum": True}


def test_pre_candidate_asks_for_votes_of_the_next_term_without_changing_its_own() -> None:
    node, storage = make_node(**PRE)
    node.campaign()
    assert node.role is StateRole.PRE_CANDIDATE and node.term == 0 and node.vote == NONE
    rd = node.ready()
    assert rd.hard_state is None, "a pre-vote persists nothing"
    pre_votes = [m for m in rd.persisted_messages if m.type == MT.PRE_VOTE]
    assert sorted(m.to for m in pre_votes) == [2, 3] and {m.term for m in pre_votes} == {1}


def test_granting_a_pre_vote_changes_neither_term_nor_vote() -> None:
    node, storage = make_node(storage=storage_with([], term=2), **PRE)
    driven = Driven(node, storage)
    node.step(Message(MT.PRE_VOTE, to=1, frm=2, term=3))
    (resp,) = driven.handle()
    assert resp.type == MT.PRE_VOTE_RESP and not resp.reject and resp.term == 3
    assert (node.term, node.vote, node.role) == (2, NONE, StateRole.FOLLOWER)


def test_pre_vote_majority_starts_the_real_election() -> None:
    node, _ = make_node(**PRE)
    node.campaign()
    node.step(Message(MT.PRE_VOTE_RESP, to=1, frm=2, term=1))
    assert node.role is StateRole.CANDIDATE and node.term == 1 and node.vote == 1


def test_pre_candidate_that_a_majority_refuses_returns_to_follower() -> None:
    node, _ = make_node(storage=storage_with([], term=2), **PRE)
    node.campaign()
    node.step(Message(MT.PRE_VOTE_RESP, to=1, frm=2, term=2, reject=True))
    assert node.role is StateRole.PRE_CANDIDATE
    node.step(Message(MT.PRE_VOTE_RESP, to=1, frm=3, term=2, reject=True))
    assert node.role is StateRole.FOLLOWER and node.term == 2


def test_pre_vote_rejection_from_a_higher_term_updates_the_term() -> None:
    node, _ = make_node(**PRE)
    node.campaign()
    node.step(Message(MT.PRE_VOTE_RESP, to=1, frm=2, term=7, reject=True))
    assert node.role is StateRole.FOLLOWER and node.term == 7


def test_pre_vote_is_refused_to_a_candidate_with_an_older_log() -> None:
    storage = storage_with([(1, 1), (2, 2)], term=2)
    node, _ = make_node(storage=storage, **PRE)
    driven = Driven(node, storage)
    node.step(Message(MT.PRE_VOTE, to=1, frm=2, term=3, index=1, log_term=1))
    (resp,) = driven.handle()
    assert resp.reject and resp.term == 2 and node.term == 2


def test_stale_pre_vote_gets_a_rejection_carrying_our_term() -> None:
    node, storage = make_node(storage=storage_with([], term=5), **PRE)
    driven = Driven(node, storage)
    node.step(Message(MT.PRE_VOTE, to=1, frm=2, term=3))
    (resp,) = driven.handle()
    assert resp.type == MT.PRE_VOTE_RESP and resp.reject and resp.term == 5


def test_partitioned_node_with_pre_vote_does_not_disrupt_the_cluster_when_it_returns() -> None:
    net = Net(3, **BOTH)
    net.elect(1)
    term = net.node(1).term
    net.isolate(3)
    for _ in range(100):
        net.tick_all()
    assert net.node(3).term == term, "pre-votes that fail never bump the term"
    net.recover()
    net.tick_all(3)
    assert net.node(1).role is StateRole.LEADER and net.node(1).term == term


def test_without_pre_vote_a_returning_partitioned_node_forces_a_new_term() -> None:
    """The contrast: why PreVote exists (thesis §9.6)."""
    net = Net(3, pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net.node(1).term
    net.isolate(3)
    for _ in range(40):
        net.tick_all()
    assert net.node(3).term > term
    net.recover()
    net.tick_all(25)
    assert max(net.node(i).term for i in (1, 2, 3)) > term


def test_leader_steps_down_when_a_quorum_was_not_heard_for_an_election_timeout() -> None:
    net = Net(3, **CQ)
    net.elect(1)
    net.isolate(1)
    for _ in range(2 * net.node(1).cfg.election_tick):
        net.tick(1)
        net.stabilize()
    assert net.node(1).role is StateRole.FOLLOWER


def test_leader_with_an_active_quorum_stays_leader() -> None:
    net = Net(3, **CQ)
    net.elect(1)
    for _ in range(5 * net.node(1).cfg.election_tick):
        net.tick(1)
        net.stabilize()
    assert net.node(1).role is StateRole.LEADER


def test_follower_that_heard_from_a_leader_recently_ignores_vote_requests() -> None:
    net = Net(3, **CQ)
    net.elect(1)
    term = net.node(1).term
    net.node(3).step(Message(MT.VOTE, to=3, frm=2, term=term + 1, index=99, log_term=99))
    assert net.peers[3].handle() == []
    assert net.node(3).term == term, "the lease holds (thesis §4.2.3)"


def test_follower_grants_votes_again_once_its_lease_has_expired() -> None:
    net = Net(3, **CQ)
    net.elect(1)
    term = net.node(1).term
    net.tick(3, 2 * net.node(3).cfg.election_tick)  # without hearing the leader
    net.node(3).step(Message(MT.VOTE, to=3, frm=2, term=term + 1, index=99, log_term=99))
    out = net.peers[3].handle()
    assert any(m.type == MT.VOTE_RESP and not m.reject for m in out) or net.node(3).term == term + 1


def test_transfer_campaign_bypasses_the_lease() -> None:
    net = Net(3, **CQ)
    net.elect(1)
    term = net.node(1).term
    net.node(3).step(Message(MT.VOTE, to=3, frm=2, term=term + 1, index=99, log_term=99, context=b"transfer"))
    out = net.peers[3].handle()
    assert net.node(3).term == term + 1
    assert [m.reject for m in out if m.type == MT.VOTE_RESP] == [False]


def test_deposed_leader_learns_the_new_term_from_a_stale_append_answer() -> None:
    net = Net(3, **BOTH)
    net.elect(1)
    net.isolate(1)
    for _ in range(3 * net.node(2).cfg.election_tick):
        net.tick(2)
        net.tick(3)
        net.stabilize()
    new_leader = next(i for i in (2, 3) if net.node(i).role is StateRole.LEADER)
    net.recover()
    net.node(1).step(Message(MT.APPEND_RESP, to=1, frm=new_leader, term=net.node(new_leader).term))
    assert net.node(1).role is StateRole.FOLLOWER
