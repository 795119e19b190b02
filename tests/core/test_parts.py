"""The core's smaller parts: quorum math, progress, in-flight window, ReadOnly, log, storage, values."""

from __future__ import annotations

import pytest

from raftkvd.raft import RaftConfig
from raftkvd.raft.config import ConfigError
from raftkvd.raft.log import RaftLog, RaftLogError, Unstable
from raftkvd.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    Ready,
    Snapshot,
    SnapshotMeta,
    StateRole,
    apply_conf_change,
)
from raftkvd.raft.progress import Inflights, Progress, ProgressState
from raftkvd.raft.quorum import VoteResult, committed_index, has_quorum, majority, vote_result
from raftkvd.raft.readonly import ReadOnly
from raftkvd.raft.storage import CompactedError, MemoryStorage, UnavailableError, limit_size

from .raftnet import MT, Net, make_node, storage_with


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    return [Entry(i, t, EntryType.NORMAL, b"d%d" % i) for i, t in pairs]


# ---- quorum --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, q", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_majority_is_more_than_half(n: int, q: int) -> None:
    assert majority(n) == q


def test_committed_index_is_the_highest_index_stored_on_a_majority() -> None:
    assert committed_index({1, 2, 3}, {1: 5, 2: 3, 3: 1}) == 3
    assert committed_index({1, 2, 3, 4, 5}, {1: 9, 2: 9, 3: 2}) == 2
    assert committed_index({1, 2, 3}, {4: 100}) == 0, "non-voters do not count"
    assert committed_index(set(), {}) == 0


def test_vote_result_is_won_lost_or_pending() -> None:
    assert vote_result({1, 2, 3}, {1: True, 2: True}) is VoteResult.WON
    assert vote_result({1, 2, 3}, {1: True, 2: False}) is VoteResult.PENDING
    assert vote_result({1, 2, 3}, {1: True, 2: False, 3: False}) is VoteResult.LOST
    assert vote_result({1, 2, 3}, {1: True, 9: True}) is VoteResult.PENDING


def test_has_quorum_counts_voters_only() -> None:
    assert has_quorum({1, 2, 3}, [1, 2]) and not has_quorum({1, 2, 3}, [1, 4, 5])


# ---- progress and the in-flight window -----------------------------------------------------------
def test_inflight_window_fills_and_frees_in_order() -> None:
    window = Inflights(2)
    window.add(3)
    window.add(5)
    assert window.full() and window.count() == 2
    window.free_le(4)
    assert window.count() == 1 and not window.full()
    window.free_first_one()
    window.free_first_one()
    assert window.count() == 0


def test_probe_sends_one_append_at_a_time_and_replicate_is_bounded_by_the_window() -> None:
    pr = Progress(match=0, next=1, max_inflight=1)
    assert not pr.is_paused()
    pr.probe_sent = True
    assert pr.is_paused()
    pr.become_replicate()
    pr.inflights.add(1)
    assert pr.is_paused()
    pr.become_snapshot(Snapshot(SnapshotMeta(9, 1)))
    assert pr.is_paused() and pr.pending_snapshot == 9


def test_probing_after_a_snapshot_resumes_past_it() -> None:
    pr = Progress(match=3, next=4, max_inflight=4)
    pr.become_snapshot(Snapshot(SnapshotMeta(10, 1)))
    pr.become_probe()
    assert pr.state is ProgressState.PROBE and pr.next == 11


@pytest.mark.parametrize(
    "state, match, next_, rejected, hint, changed, new_next",
    [
        (ProgressState.REPLICATE, 5, 9, 5, 0, False, 9),  # stale: at or below match
        (ProgressState.REPLICATE, 5, 9, 7, 0, True, 6),
        (ProgressState.PROBE, 0, 10, 5, 0, False, 10),  # stale: not our probe
        (ProgressState.PROBE, 0, 10, 9, 3, True, 4),
        (ProgressState.PROBE, 0, 10, 9, 20, True, 9),
        (ProgressState.PROBE, 5, 6, 5, 4, True, 6),  # never below match + 1 (seed 7460)
    ],
)
def test_rejection_moves_next_back_unless_it_is_stale(
    state: ProgressState, match: int, next_: int, rejected: int, hint: int, changed: bool, new_next: int
) -> None:
    pr = Progress(match=match, next=next_, max_inflight=4, state=state)
    assert pr.maybe_decr_to(rejected, hint) is changed
    assert pr.next == new_next


def test_acknowledgement_moves_match_forward_only() -> None:
    pr = Progress(match=4, next=5, max_inflight=4)
    assert pr.maybe_update(7) and pr.match == 7 and pr.next == 8
    assert not pr.maybe_update(6) and pr.match == 7


# ---- ReadOnly ------------------------------------------------------------------------------------
def test_read_only_queue_releases_a_request_and_all_before_it() -> None:
    ro = ReadOnly()
    for ctx, index in ((b"a", 1), (b"b", 2), (b"c", 3)):
        ro.add_request(index, Message(MT.READ_INDEX, to=0, frm=1, context=ctx))
    ro.add_request(9, Message(MT.READ_INDEX, to=0, frm=1, context=b"a"))
    assert ro.recv_ack(2, b"b") == {2} and ro.recv_ack(2, b"zzz") is None
    assert [s.index for s in ro.advance(b"b")] == [1, 2]
    assert ro.advance(b"nope") == [] and ro.last_pending_context() == b"c"


# ---- the log -------------------------------------------------------------------------------------
def test_unstable_tail_truncates_and_appends() -> None:
    u = Unstable(5)
    u.truncate_and_append(ents((5, 1), (6, 1), (7, 1)))
    u.truncate_and_append(ents((7, 2)))
    assert [(e.index, e.term) for e in u.entries] == [(5, 1), (6, 1), (7, 2)]
    u.truncate_and_append(ents((3, 3)))
    assert u.offset == 3 and [(e.index, e.term) for e in u.entries] == [(3, 3)]
    assert u.last_index() == 3 and u.term(3) == 3 and u.term(4) is None
    u.stable_to(3, 2)
    assert u.entries, "a term mismatch leaves the entries unstable"
    u.stable_to(3, 3)
    assert u.entries == [] and u.offset == 4 and u.last_index() is None


def test_unstable_snapshot_answers_its_own_index_until_persisted() -> None:
    u = Unstable(1)
    snap = Snapshot(SnapshotMeta(10, 3))
    u.restore(snap)
    assert u.last_index() == 10 and u.term(10) == 3 and u.offset == 11
    u.stable_snap_to(9)
    assert u.snapshot is snap
    u.stable_snap_to(10)
    assert u.snapshot is None


def test_log_reads_across_stable_and_unstable_entries_within_a_byte_limit() -> None:
    storage = MemoryStorage()
    storage.append(ents((1, 1), (2, 1), (3, 1)))
    log = RaftLog(storage)
    log.append(ents((4, 2), (5, 2)))
    assert [e.index for e in log.slice(2, 6)] == [2, 3, 4, 5]
    assert [e.index for e in log.slice(2, 6, max_bytes=1)] == [2]
    assert [e.index for e in log.slice(3, 6, max_bytes=2 * 18)] == [3, 4]
    assert log.slice(4, 4) == []
    storage.compact(2, ConfState())
    with pytest.raises(CompactedError):
        log.slice(1, 3)
    assert log.term(1) is None and log.term(2) == 1 and log.term(9) is None
    assert log.first_index() == 3 and log.last_term() == 2


def test_find_conflict_by_term_returns_the_last_index_with_a_term_not_above_the_given_one() -> None:
    storage = storage_with([(1, 1), (2, 1), (3, 3), (4, 3), (5, 5)])
    log = RaftLog(storage)
    assert log.find_conflict_by_term(5, 4) == (4, 3)
    assert log.find_conflict_by_term(5, 2) == (2, 1)
    assert log.find_conflict_by_term(5, 0) == (0, 0)
    assert log.find_conflict_by_term(5, 9) == (5, 5)


def test_log_refuses_to_rewrite_committed_entries() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 1)]))
    log.commit_to(2)
    with pytest.raises(RaftLogError):
        log.append(ents((2, 2)))
    with pytest.raises(RaftLogError):
        log.maybe_append(0, 0, 2, tuple(ents((1, 1), (2, 2))))
    with pytest.raises(RaftLogError):
        log.commit_to(3)
    with pytest.raises(RaftLogError):
        log.applied_to(3)
    log.applied_to(2)
    with pytest.raises(RaftLogError):
        log.applied_to(1)
    assert log.append([]) == 2


def test_up_to_date_compares_last_term_then_length() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 2)]))
    assert log.is_up_to_date(1, 3) and log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(1, 2) and not log.is_up_to_date(9, 1)


# ---- storage -------------------------------------------------------------------------------------
def test_memory_storage_answers_for_compacted_and_missing_indexes() -> None:
    st = storage_with([(1, 1), (2, 1), (3, 2), (4, 2)])
    st.compact(2, ConfState(frozenset({1})), b"image")
    assert st.first_index() == 3 and st.last_index() == 4 and st.term(2) == 1
    assert (
        st.snapshot().meta == SnapshotMeta(2, 1, ConfState(frozenset({1}))) and st.snapshot().data == b"image"
    )
    with pytest.raises(CompactedError):
        st.term(1)
    with pytest.raises(UnavailableError):
        st.term(5)
    with pytest.raises(CompactedError):
        st.entries(2, 4)
    with pytest.raises(UnavailableError):
        st.entries(3, 6)
    st.compact(2, ConfState())  # not newer: ignored
    st.compact(9, ConfState())  # beyond the log: ignored
    assert st.first_index() == 3


def test_memory_storage_append_truncates_a_conflicting_suffix_and_skips_compacted_entries() -> None:
    st = storage_with([(1, 1), (2, 1), (3, 1)])
    st.append(ents((2, 2)))
    assert [(e.index, e.term) for e in st.ents[1:]] == [(1, 1), (2, 2)]
    st.compact(2, ConfState())
    st.append(ents((1, 5)))
    st.append(ents((2, 2), (3, 3)))
    assert [(e.index, e.term) for e in st.ents[1:]] == [(3, 3)]
    st.append([])


def test_memory_storage_ignores_a_snapshot_that_is_not_newer() -> None:
    st = MemoryStorage()
    st.apply_snapshot(Snapshot(SnapshotMeta(5, 2, ConfState(frozenset({1, 2})))))
    st.apply_snapshot(Snapshot(SnapshotMeta(4, 2)))
    assert st.first_index() == 6 and st.initial_state()[1].voters == {1, 2}


def test_limit_size_always_keeps_one_entry() -> None:
    big = [Entry(1, 1, data=b"x" * 100), Entry(2, 1, data=b"y")]
    assert limit_size(big, 10) == big[:1]
    assert limit_size(big, None) == big and limit_size([], 1) == []


# ---- values --------------------------------------------------------------------------------------
def test_conf_change_round_trips_and_applies() -> None:
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 4, b"\x01addr")
    assert ConfChange.decode(cc.encode()) == cc
    conf = ConfState(frozenset({1, 2, 3}))
    conf = apply_conf_change(conf, cc)
    assert conf.learners == {4} and conf.ids() == {1, 2, 3, 4}
    assert apply_conf_change(conf, ConfChange(ConfChangeType.ADD_LEARNER, 1)) == conf, "no demotion"
    conf = apply_conf_change(conf, ConfChange(ConfChangeType.ADD_NODE, 4))
    assert conf.voters == {1, 2, 3, 4} and not conf.learners
    conf = apply_conf_change(conf, ConfChange(ConfChangeType.REMOVE_NODE, 2))
    assert conf.voters == {1, 3, 4}


def test_ready_must_sync_only_when_something_durable_changed() -> None:
    assert not Ready().must_sync()
    assert Ready(hard_state=HardState(1, 0, 0)).must_sync()
    assert Ready(entries=[Entry(1, 1)]).must_sync()
    assert Entry(1, 1, data=b"abc").size() == 19


@pytest.mark.parametrize(
    "knobs",
    [
        {"id": 0},
        {"id": 1, "heartbeat_tick": 0},
        {"id": 1, "election_tick": 1},
        {"id": 1, "election_tick_max": 5},
        {"id": 1, "max_inflight_msgs": 0},
    ],
)
def test_invalid_configuration_is_refused(knobs: dict) -> None:
    with pytest.raises(ConfigError):
        RaftConfig(**knobs).validate()


def test_randomized_election_range_may_be_set_explicitly() -> None:
    assert RaftConfig(id=1, election_tick=10, election_tick_max=13).randomized_election_max == 13
    node, _ = make_node(election_tick=10, election_tick_max=12)
    assert 10 <= node.randomized_election_timeout < 12


def test_status_reports_role_term_indexes_and_progress() -> None:
    net = Net(3)
    net.elect(1)
    st = net.node(1).status()
    assert st.role is StateRole.LEADER and st.leader == 1 and st.commit == st.last_index == 1
    assert st.progress[2].state == "replicate" and st.progress[2].match == 1 and not st.progress[2].is_learner
    assert st.conf.voters == {1, 2, 3} and st.first_index == 1 and st.lead_transferee == 0


def test_messages_of_unknown_senders_and_local_kinds_are_ignored() -> None:
    net = Net(3)
    net.elect(1)
    leader = net.node(1)
    leader.step(Message(MT.APPEND_RESP, to=1, frm=9, term=leader.term, index=5))
    leader.step(Message(MT.PROPOSE, to=1, frm=2))
    leader.step(Message(MT.VOTE_RESP, to=1, frm=2, term=leader.term))
    net.node(2).step(Message(MT.READ_INDEX, to=2, frm=3, context=b"x"))
    net.node(2).step(Message(MT.SNAPSHOT, to=2, frm=1, term=leader.term))
    assert leader.role is StateRole.LEADER and leader.status().progress[2].match == 1
