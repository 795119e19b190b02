"""One test per rule of the Raft paper (etcd raft_paper_test.go style); each runs in milliseconds.

Sections: §5.1 terms, §5.2 leader election, §5.3 log replication, §5.4 safety, plus the
persistence contract of the driver loop (thesis §10.2.1). PreVote and CheckQuorum are off here
(`PAPER`) so the rules apply exactly as the paper states them.
"""

from __future__ import annotations

import random

import pytest

from raftkvd.raft import MemoryStorage, ProposalDropped, RaftConfig, RaftNode
from raftkvd.raft.messages import NONE, Entry, EntryType, HardState, Message, StateRole

from .raftnet import IDS3, IDS5, MT, PAPER, Driven, Net, entries_of, leader_with_log, make_node, storage_with

FOLLOWER, CANDIDATE, LEADER = StateRole.FOLLOWER, StateRole.CANDIDATE, StateRole.LEADER


def append(frm: int, to: int, term: int, index: int, log_term: int, entries=(), commit: int = 0) -> Message:
    return Message(
        MT.APPEND,
        to=to,
        frm=frm,
        term=term,
        index=index,
        log_term=log_term,
        entries=tuple(entries),
        commit=commit,
    )


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    return [Entry(i, t, EntryType.NORMAL, b"x%d" % i) for i, t in pairs]


def leader_over_uncommitted_term_1_entries() -> tuple[RaftNode, Driven]:
    """Node 1 elected at term 2 (by node 2's vote) over entries 1-2 of term 1 it never committed:
    the §5.4.2 / Figure 8 setup, where commits of older-term entries can only ride along."""
    storage = storage_with([(1, 1), (2, 1)], term=1)
    node, _ = make_node(storage=storage, **PAPER)
    driven = Driven(node, storage)
    node.campaign()
    driven.handle()
    node.step(Message(MT.VOTE_RESP, to=1, frm=2, term=2))
    driven.handle()
    assert node.role is LEADER and node.term == 2 and node.log.committed == 0
    return node, driven


def leader_with_entry_1_committed() -> tuple[RaftNode, MemoryStorage]:
    """`leader_with_log` once both followers acked its election entry: index 1 is committed and
    applied, so a test's next proposal is index 2 and starts from an idle leader."""
    node, storage, _ = leader_with_log()
    driven = Driven(node, storage)
    for p in (2, 3):
        node.step(Message(MT.APPEND_RESP, to=1, frm=p, term=node.term, index=1))
    driven.handle()
    assert node.log.committed == 1 and [e.index for e in driven.applied] == [1]
    return node, storage


# ==== §5.1 terms ==================================================================================
def test_node_starts_as_follower_with_no_leader() -> None:
    node, _ = make_node(**PAPER)
    assert node.role is FOLLOWER and node.term == 0 and node.leader_id == NONE


@pytest.mark.parametrize("role", [FOLLOWER, CANDIDATE, LEADER])
def test_server_with_smaller_term_adopts_the_larger_one_and_becomes_follower(role: StateRole) -> None:
    if role is LEADER:
        node, _, _ = leader_with_log()
    else:
        node, _ = make_node(**PAPER)
        if role is CANDIDATE:
            node.campaign()
    term = node.term
    node.step(append(2, 1, term + 5, 0, 0))
    assert node.term == term + 5
    assert node.role is FOLLOWER
    assert node.leader_id == 2


def test_request_with_stale_term_is_rejected() -> None:
    node, storage = make_node(storage=storage_with([], term=5), **PAPER)
    driven = Driven(node, storage)
    node.step(append(2, 1, 3, 0, 0, ents((1, 3))))
    out = driven.handle()
    assert node.term == 5 and node.log.last_index() == 0
    # the stale leader hears our term so it can step down
    assert [(m.type, m.term, m.reject) for m in out] == [(MT.APPEND_RESP, 5, False)]
    node.step(Message(MT.VOTE, to=1, frm=3, term=4, index=10, log_term=4))
    assert driven.handle() == [] and node.vote == NONE


def test_leader_learning_of_a_higher_term_from_a_response_steps_down() -> None:
    node, _, _ = leader_with_log()
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term + 1))
    assert node.role is FOLLOWER and node.leader_id == NONE


# ==== §5.2 leader election ========================================================================
def test_leader_broadcasts_a_heartbeat_every_heartbeat_tick() -> None:
    node, storage, _ = leader_with_log(heartbeat_tick=2)
    driven = Driven(node, storage)
    node.tick()
    assert entries_of(driven.handle(), MT.HEARTBEAT) == []
    node.tick()
    beats = entries_of(driven.handle(), MT.HEARTBEAT)
    assert sorted(m.to for m in beats) == [2, 3]
    assert all(m.term == node.term and m.commit == 0 for m in beats)


def test_follower_starts_an_election_when_it_hears_nothing_for_an_election_timeout() -> None:
    node, storage = make_node(**PAPER)
    driven = Driven(node, storage)
    for _ in range(2 * node.cfg.election_tick):
        node.tick()
    assert node.role is CANDIDATE and node.term == 1 and node.vote == 1
    rd = node.ready()
    assert rd.hard_state == HardState(1, 1, 0)
    votes = [m for m in rd.persisted_messages if m.type == MT.VOTE]
    assert sorted(m.to for m in votes) == [2, 3] and rd.messages == []
    node.advance(rd)
    assert driven.handle() == []


def test_candidate_starts_a_new_election_when_its_election_times_out() -> None:
    node, _ = make_node(**PAPER)
    node.campaign()
    for _ in range(2 * node.cfg.election_tick):
        node.tick()
    assert node.role is CANDIDATE and node.term == 2 and node.vote == 1


@pytest.mark.parametrize(
    "size, votes, role",
    [
        (1, {}, LEADER),
        (3, {2: True, 3: True}, LEADER),
        (3, {2: True}, LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, LEADER),
        (5, {2: True, 3: True}, LEADER),
        (3, {2: False, 3: False}, FOLLOWER),
        (5, {2: False, 3: False, 4: False}, FOLLOWER),
        (5, {2: True}, CANDIDATE),
        (5, {2: True, 3: False, 4: False}, CANDIDATE),
        (3, {}, CANDIDATE),
    ],
)
def test_candidate_wins_with_votes_from_a_majority_and_loses_when_a_majority_refuses(
    size: int, votes: dict[int, bool], role: StateRole
) -> None:
    node, _ = make_node(1, tuple(range(1, size + 1)), **PAPER)
    node.campaign()
    for voter, granted in votes.items():
        node.step(Message(MT.VOTE_RESP, to=1, frm=voter, term=1, reject=not granted))
    assert node.role is role
    assert node.term == 1


@pytest.mark.parametrize(
    "vote, candidate, granted", [(NONE, 2, True), (NONE, 3, True), (2, 2, True), (2, 3, False)]
)
def test_follower_votes_for_at_most_one_candidate_per_term(vote: int, candidate: int, granted: bool) -> None:
    node, storage = make_node(storage=storage_with([], term=1, vote=vote), **PAPER)
    driven = Driven(node, storage)
    node.step(Message(MT.VOTE, to=1, frm=candidate, term=1))
    (resp,) = driven.handle()
    assert resp.type == MT.VOTE_RESP and resp.reject is not granted
    assert node.vote == (candidate if granted else vote)


def test_vote_is_persisted_before_it_is_sent() -> None:
    node, _ = make_node(**PAPER)
    node.step(Message(MT.VOTE, to=1, frm=2, term=3))
    rd = node.ready()
    assert rd.messages == [] and [m.type for m in rd.persisted_messages] == [MT.VOTE_RESP]
    assert rd.hard_state == HardState(3, 2, 0) and rd.must_sync()


def test_candidate_returns_to_follower_when_a_leader_of_its_term_appends() -> None:
    node, _ = make_node(**PAPER)
    node.campaign()
    node.step(append(2, 1, 1, 0, 0))
    assert node.role is FOLLOWER and node.leader_id == 2 and node.term == 1


@pytest.mark.parametrize("start_as_candidate", [False, True])
def test_election_timeouts_are_randomized_between_election_tick_and_twice_that(
    start_as_candidate: bool,
) -> None:
    seen = set()
    for seed in range(200):
        node, _ = make_node(seed=seed, **PAPER)
        if start_as_candidate:
            node.campaign()
        ticks = 0
        term = node.term
        while node.term == term:
            node.tick()
            ticks += 1
        seen.add(ticks)
    et = 10
    assert min(seen) >= et and max(seen) < 2 * et and len(seen) >= et // 2


def test_randomized_election_timeouts_rarely_conflict() -> None:
    """§5.2: randomization makes it unlikely that two servers time out in the same tick."""
    conflicts, rounds = 0, 300
    rng = random.Random(7)
    for _ in range(rounds):
        timeouts = []
        for node_id in IDS5:
            node, _ = make_node(node_id, IDS5, seed=rng.randrange(1 << 30), **PAPER)
            timeouts.append(node.randomized_election_timeout)
        if timeouts.count(min(timeouts)) > 1:
            conflicts += 1
    assert conflicts / rounds < 0.3


def test_new_leader_appends_a_no_op_entry_of_its_own_term() -> None:
    node, storage, sent = leader_with_log()
    assert storage.last_index() == 1 and storage.term(1) == node.term and storage.ents[1].data == b""
    appends = entries_of(sent, MT.APPEND)
    assert sorted(m.to for m in appends) == [2, 3]
    assert all([e.index for e in m.entries] == [1] for m in appends)


# ==== §5.3 log replication ========================================================================
def test_leader_appends_a_proposal_to_its_log_and_replicates_it() -> None:
    node, storage = leader_with_entry_1_committed()
    index = node.propose(b"some data")
    assert index == 2
    rd = node.ready()
    assert [e.index for e in rd.entries] == [2] and rd.entries[0].term == node.term
    appends = entries_of(rd.messages, MT.APPEND)
    assert sorted(m.to for m in appends) == [2, 3]
    for m in appends:
        assert (m.index, m.log_term, m.commit) == (1, node.term, 1)
        assert [e.data for e in m.entries] == [b"some data"]


def test_leader_commits_an_entry_once_a_majority_stored_it_and_hands_it_to_apply() -> None:
    node, storage, _ = leader_with_log()
    driven = Driven(node, storage)
    assert node.log.committed == 0
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term, index=1))
    assert node.log.committed == 1
    driven.handle()
    assert [e.index for e in driven.applied] == [1]


@pytest.mark.parametrize(
    "size, acks, committed",
    [
        (1, set(), True),
        (3, set(), False),
        (3, {2}, True),
        (3, {2, 3}, True),
        (5, set(), False),
        (5, {2}, False),
        (5, {2, 3}, True),
        (5, {2, 3, 4, 5}, True),
    ],
)
def test_leader_commits_when_a_majority_including_itself_acknowledged(
    size: int, acks: set[int], committed: bool
) -> None:
    node, storage, _ = leader_with_log(tuple(range(1, size + 1)))
    for p in acks:
        node.step(Message(MT.APPEND_RESP, to=1, frm=p, term=node.term, index=1))
    assert (node.log.committed == 1) is committed


def test_committing_an_entry_commits_every_entry_before_it() -> None:
    node, driven = leader_over_uncommitted_term_1_entries()
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=2, index=3))
    driven.handle()
    assert node.log.committed == 3
    assert [e.index for e in driven.applied] == [1, 2, 3]


def test_follower_commits_up_to_the_leader_commit_it_has_entries_for() -> None:
    node, storage = make_node(**PAPER)
    driven = Driven(node, storage)
    node.step(append(2, 1, 1, 0, 0, ents((1, 1), (2, 1)), commit=1))
    driven.handle()
    assert node.log.committed == 1 and [e.index for e in driven.applied] == [1]
    node.step(append(2, 1, 1, 2, 1, (), commit=5))
    driven.handle()
    assert node.log.committed == 2 and [e.index for e in driven.applied] == [1, 2]


@pytest.mark.parametrize(
    "index, log_term, accepted, hint",
    [
        (0, 0, True, 0),
        (2, 2, True, 0),
        (1, 1, True, 0),
        (2, 1, False, 1),  # same index, other term
        (3, 3, False, 2),  # past our last entry
    ],
)
def test_follower_rejects_an_append_whose_previous_entry_it_does_not_hold(
    index: int, log_term: int, accepted: bool, hint: int
) -> None:
    storage = storage_with([(1, 1), (2, 2)], term=2)
    node, _ = make_node(storage=storage, **PAPER)
    driven = Driven(node, storage)
    node.step(append(2, 1, 2, index, log_term))
    (resp,) = driven.handle()
    assert resp.type == MT.APPEND_RESP and resp.reject is not accepted
    if not accepted:
        assert resp.index == index and resp.reject_hint == hint


@pytest.mark.parametrize(
    "index, log_term, new, expect",
    [
        (2, 2, [(3, 3)], [(1, 1), (2, 2), (3, 3)]),
        (1, 1, [(2, 3), (3, 4)], [(1, 1), (2, 3), (3, 4)]),
        (0, 0, [(1, 1)], [(1, 1), (2, 2)]),
        (0, 0, [(1, 3)], [(1, 3)]),
    ],
)
def test_follower_deletes_conflicting_entries_and_appends_the_new_ones(
    index: int, log_term: int, new: list[tuple[int, int]], expect: list[tuple[int, int]]
) -> None:
    storage = storage_with([(1, 1), (2, 2)], term=2)
    node, _ = make_node(storage=storage, **PAPER)
    Driven(node, storage).handle()
    node.step(append(2, 1, 4, index, log_term, ents(*new)))
    Driven(node, storage).handle()
    assert [(e.index, e.term) for e in storage.ents[1:]] == expect


FIGURE7_LEADER = [(i, t) for i, t in enumerate([1, 1, 1, 4, 4, 5, 5, 6, 6, 6], start=1)]
FIGURE7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIGURE7_FOLLOWERS))
def test_leader_brings_every_follower_log_in_line_with_its_own(case: str) -> None:
    """Figure 7: whatever the follower holds, it ends with exactly the leader's log."""
    follower_log = [(i, t) for i, t in enumerate(FIGURE7_FOLLOWERS[case], start=1)]
    net = Net(3, **PAPER)
    for i, log in ((1, FIGURE7_LEADER), (2, follower_log), (3, [])):
        st = storage_with(log, term=8)
        node, _ = make_node(i, IDS3, storage=st, seed=i, **PAPER)
        net.peers[i] = Driven(node, st)
    net.node(1).campaign()
    net.stabilize()
    assert net.node(1).role is LEADER, "node 3 (empty log) votes for the leader"
    net.propose(1, b"new")
    leader_log = [(e.index, e.term, e.data) for e in net.peers[1].storage.ents[1:]]
    assert [(e.index, e.term, e.data) for e in net.peers[2].storage.ents[1:]] == leader_log


def test_rejection_hint_lets_the_leader_skip_a_whole_term_at_once() -> None:
    """Thesis §5.3: the follower answers with the last index of a term <= the probe's term."""
    storage = storage_with([(1, 1)] + [(i, 2) for i in range(2, 52)], term=3)
    node, _ = make_node(storage=storage, **PAPER)
    driven = Driven(node, storage)
    node.step(append(2, 1, 5, 60, 4))
    (resp,) = driven.handle()
    assert resp.reject and resp.index == 60
    assert (resp.reject_hint, resp.log_term) == (51, 2)


def test_follower_acknowledges_an_append_only_after_persisting_it() -> None:
    node, _ = make_node(**PAPER)
    node.step(append(2, 1, 1, 0, 0, ents((1, 1))))
    rd = node.ready()
    assert [e.index for e in rd.entries] == [1]
    assert rd.messages == [] and [m.type for m in rd.persisted_messages] == [MT.APPEND_RESP]


def test_leader_sends_appends_before_its_own_write_is_durable() -> None:
    """Thesis §10.2.1: replication goes out in `messages`, before the leader's own fsync."""
    node, storage = leader_with_entry_1_committed()
    index = node.propose(b"x")
    rd = node.ready()
    assert [e.index for e in rd.entries] == [index]
    assert {m.to for m in rd.messages if m.type == MT.APPEND} == {2, 3}


def test_leader_own_write_counts_toward_commit_only_once_persisted() -> None:
    node, storage = leader_with_entry_1_committed()
    index = node.propose(b"x")
    rd = node.ready()  # not yet persisted
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term, index=index))
    assert node.log.committed == index - 1, "one follower plus an unpersisted leader is no majority"
    storage.append(rd.entries)
    node.advance(rd)
    assert node.log.committed == index


def test_entry_commits_on_followers_acks_while_the_leader_write_is_in_flight() -> None:
    node, storage, _ = leader_with_log()
    index = node.propose(b"x")
    node.ready()
    for p in (2, 3):
        node.step(Message(MT.APPEND_RESP, to=1, frm=p, term=node.term, index=index))
    assert node.log.committed == index


def test_duplicate_append_is_idempotent() -> None:
    node, storage = make_node(**PAPER)
    driven = Driven(node, storage)
    m = append(2, 1, 1, 0, 0, ents((1, 1), (2, 1)), commit=1)
    node.step(m)
    first = driven.handle()
    node.step(m)
    second = driven.handle()
    assert [e.index for e in storage.ents[1:]] == [1, 2] and node.log.committed == 1
    assert [(r.type, r.index, r.reject) for r in first] == [(MT.APPEND_RESP, 2, False)]
    assert [(r.type, r.reject) for r in second] == [(MT.APPEND_RESP, False)]


def test_append_below_the_commit_index_is_answered_with_the_commit_index() -> None:
    node, storage = make_node(**PAPER)
    driven = Driven(node, storage)
    node.step(append(2, 1, 1, 0, 0, ents((1, 1), (2, 1), (3, 1)), commit=3))
    driven.handle()
    node.step(append(2, 1, 1, 1, 1, ents((2, 1))))
    (resp,) = driven.handle()
    assert (resp.index, resp.reject) == (3, False)


def test_stale_append_response_does_not_move_progress_back() -> None:
    node, storage, _ = leader_with_log()
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term, index=1))
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term, index=0))
    assert node.status().progress[2].match == 1


# ==== §5.4 safety =================================================================================
@pytest.mark.parametrize(
    "log, cand_index, cand_term, granted",
    [
        ([(1, 1)], 1, 1, True),
        ([(1, 1)], 2, 1, True),
        ([(1, 1), (2, 1)], 1, 1, False),  # same last term, shorter log
        ([(1, 1)], 1, 2, True),  # higher last term
        ([(1, 2)], 5, 1, False),  # lower last term, longer log
        ([(1, 1), (2, 2)], 2, 2, True),
        ([(1, 1), (2, 2)], 3, 1, False),
    ],
)
def test_voter_grants_only_a_candidate_whose_log_is_at_least_as_up_to_date(
    log: list[tuple[int, int]], cand_index: int, cand_term: int, granted: bool
) -> None:
    storage = storage_with(log, term=2)
    node, _ = make_node(storage=storage, **PAPER)
    driven = Driven(node, storage)
    node.step(Message(MT.VOTE, to=1, frm=2, term=3, index=cand_index, log_term=cand_term))
    (resp,) = driven.handle()
    assert resp.reject is not granted


def test_vote_request_carries_the_candidate_last_index_and_term() -> None:
    storage = storage_with([(1, 1), (2, 2)], term=2)
    node, _ = make_node(storage=storage, **PAPER)
    node.campaign()
    votes = [m for m in node.ready().persisted_messages if m.type == MT.VOTE]
    assert {(m.index, m.log_term, m.term) for m in votes} == {(2, 2, 3)}


@pytest.mark.parametrize("ack_index, committed", [(1, 0), (2, 0), (3, 3)])
def test_leader_only_commits_entries_from_its_current_term(ack_index: int, committed: int) -> None:
    """§5.4.2 / Figure 8: replicas of older-term entries are never counted to commit them."""
    node, driven = leader_over_uncommitted_term_1_entries()
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=2, index=ack_index))
    assert node.log.committed == committed


def test_candidate_missing_a_committed_entry_cannot_win() -> None:
    net = Net(3, **PAPER)
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"committed")
    assert net.node(1).log.committed == 2
    net.recover()
    net.isolate(1)
    net.node(3).campaign()
    net.stabilize()
    assert net.node(3).role is not LEADER
    net.node(2).campaign()
    net.stabilize()
    assert net.node(2).role is LEADER and net.node(2).log.term(2) == 1


def test_committed_entry_survives_the_crash_of_the_leader() -> None:
    net = Net(3, **PAPER)
    net.elect(1)
    net.propose(1, b"keep me")
    net.peers[1].restart()
    net.elect(2)
    net.propose(2, b"after")
    assert [e.data for e in net.peers[2].applied if e.data] == [b"keep me", b"after"]


# ==== persistence (Figure 2: currentTerm, votedFor, log) ==========================================
def test_restarted_node_remembers_its_term_and_vote() -> None:
    node, storage = make_node(**PAPER)
    driven = Driven(node, storage)
    node.step(Message(MT.VOTE, to=1, frm=2, term=4))
    driven.handle()
    driven.restart()
    assert (driven.node.term, driven.node.vote) == (4, 2)
    driven.node.step(Message(MT.VOTE, to=1, frm=3, term=4))
    (resp,) = driven.handle()
    assert resp.reject


def test_restarted_node_resumes_from_persisted_commit_and_applied_index() -> None:
    storage = storage_with([(1, 1), (2, 1), (3, 1)], term=1, commit=3)
    node = RaftNode(RaftConfig(id=1, peers=IDS3, applied=2, **PAPER), storage, random.Random(0))
    assert node.status().commit == 3 and node.status().applied == 2
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [3]


# ==== more of Figure 2 ================================================================================
def test_leader_never_overwrites_or_deletes_its_own_entries() -> None:
    """Leader Append-Only (Figure 3): an old leader's conflicting append leaves the log alone."""
    node, storage, _ = leader_with_log()
    node.propose(b"mine")
    Driven(node, storage).handle()
    before = list(storage.ents)
    node.step(append(2, 1, node.term - 1, 0, 0, ents((1, node.term - 1), (2, node.term - 1))))
    Driven(node, storage).handle()
    assert storage.ents == before and node.role is LEADER


def test_candidate_and_leader_refuse_other_candidates_of_their_own_term() -> None:
    node, storage = make_node(**PAPER)
    driven = Driven(node, storage)
    node.campaign()
    driven.handle()
    node.step(Message(MT.VOTE, to=1, frm=2, term=node.term))
    assert [m.reject for m in driven.handle()] == [True]
    leader, leader_storage, _ = leader_with_log()
    leader.step(Message(MT.VOTE, to=1, frm=3, term=leader.term))
    assert [m.reject for m in Driven(leader, leader_storage).handle()] == [True]


def test_heartbeat_never_carries_a_commit_index_beyond_the_follower_match() -> None:
    node, storage, _ = leader_with_log()
    driven = Driven(node, storage)
    node.step(Message(MT.APPEND_RESP, to=1, frm=2, term=node.term, index=1))
    driven.handle()
    node.tick()
    beats = {m.to: m.commit for m in driven.handle() if m.type == MT.HEARTBEAT}
    assert beats == {2: 1, 3: 0}


def test_follower_learns_the_commit_index_from_a_heartbeat() -> None:
    node, storage = make_node(**PAPER)
    driven = Driven(node, storage)
    node.step(append(2, 1, 1, 0, 0, ents((1, 1), (2, 1))))
    driven.handle()
    node.step(Message(MT.HEARTBEAT, to=1, frm=2, term=1, commit=2))
    out = driven.handle()
    assert [e.index for e in driven.applied] == [1, 2]
    assert [m.type for m in out] == [MT.HEARTBEAT_RESP]


def test_committed_entries_are_applied_in_log_order_exactly_once() -> None:
    net = Net(3, **PAPER)
    net.elect(1)
    for i in range(5):
        net.propose(1, b"v%d" % i)
    net.tick_all(2)
    for driven in net.peers.values():
        indexes = [e.index for e in driven.applied]
        assert indexes == list(range(1, len(indexes) + 1))
        assert [e.data for e in driven.applied if e.data] == [b"v%d" % i for i in range(5)]


def test_only_the_leader_accepts_client_entries() -> None:
    """§5.1: a follower refuses proposals so that the client retries at the leader."""
    node, _ = make_node(**PAPER)
    with pytest.raises(ProposalDropped):
        node.propose(b"x")
    assert node.log.last_index() == 0
