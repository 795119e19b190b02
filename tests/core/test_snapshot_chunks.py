"""Snapshots (§7) sent in chunks: resume after a lost chunk, restart after a follower crash."""

from __future__ import annotations

from raftkvd.raft.messages import ConfState, Message, Snapshot, SnapshotMeta, StateRole
from raftkvd.raft.progress import ProgressState

from .raftnet import MT, Driven, Net, make_node, storage_with

CHUNK = 64
DATA = bytes(range(256)) * 2  # 512 bytes: 8 chunks
KNOBS = {"pre_vote": True, "check_quorum": False, "max_size_per_msg": CHUNK}


def behind_compaction(entries: int = 20) -> Net:
    """Node 1 leads, node 3 missed `entries` writes that node 1 has compacted away."""
    net = Net(3, **KNOBS)
    net.elect(1)
    net.isolate(3)
    for i in range(entries):
        net.propose(1, b"w%d" % i)
    leader = net.peers[1]
    leader.storage.compact(leader.node.log.applied, ConfState(frozenset((1, 2, 3))), DATA)
    return net


def start_transfer(net: Net) -> Message:
    """Make leader 1 find out that node 3 needs the snapshot; the first chunk it sends."""
    net.node(1).prs[3].become_probe()
    net.node(1).step(Message(MT.HEARTBEAT_RESP, to=1, frm=3, term=net.node(1).term))
    (first,) = chunks(net.peers[1].handle())
    assert first.offset == 0
    return first


def chunks(msgs: list[Message]) -> list[Message]:
    return [m for m in msgs if m.type == MT.SNAPSHOT]


def test_follower_behind_the_compaction_point_receives_the_snapshot_in_chunks() -> None:
    net = behind_compaction()
    index = net.peers[1].storage.snapshot().meta.index
    net.recover()
    net.propose(1, b"after")
    sent = chunks(net.delivered)
    assert len(sent) == len(DATA) // CHUNK
    assert [m.offset for m in sent] == list(range(0, len(DATA), CHUNK)) and sent[-1].done
    follower = net.peers[3]
    assert follower.storage.snapshot().meta.index == index and follower.storage.snapshot().data == DATA
    assert follower.node.log.last_index() == net.node(1).log.last_index()
    assert net.node(1).prs[3].state is ProgressState.REPLICATE


def test_lost_chunk_is_resent_after_an_idle_election_timeout_and_the_transfer_resumes() -> None:
    net = behind_compaction()
    lost = {"done": False}

    def drop_third_chunk(m: Message) -> bool:
        if m.type == MT.SNAPSHOT and m.offset == 2 * CHUNK and not lost["done"]:
            lost["done"] = True
            return True
        return False

    net.recover()
    net.drop_if = drop_third_chunk
    net.tick(1)
    net.stabilize()
    assert net.node(1).prs[3].state is ProgressState.SNAPSHOT, "stalled on the lost chunk"
    offsets_before = len(chunks(net.delivered))
    net.tick(1, net.node(1).cfg.election_tick)
    net.stabilize()
    resent = chunks(net.delivered)[offsets_before:]
    assert resent[0].offset == 2 * CHUNK, "resumes at the lost chunk, not at 0"
    assert net.peers[3].storage.snapshot().data == DATA


def test_crashed_follower_restarts_the_transfer_from_offset_zero() -> None:
    net = behind_compaction()
    got = {"n": 0}

    def cut_after_three(m: Message) -> bool:
        if m.type == MT.SNAPSHOT:
            got["n"] += 1
            return got["n"] > 3
        return False

    net.recover()
    net.drop_if = cut_after_three
    net.tick(1)
    net.stabilize()
    net.peers[3].restart()  # the half-assembled snapshot was only in memory
    net.drop_if = None
    before = len(chunks(net.delivered))
    net.tick(1, net.node(1).cfg.election_tick)
    net.stabilize()
    after = chunks(net.delivered)[before:]
    assert after[0].offset == 3 * CHUNK and any(m.offset == 0 for m in after[1:])
    assert net.peers[3].storage.snapshot().data == DATA


def snapshot_message(offset: int, data: bytes, done: bool, meta: SnapshotMeta, term: int = 1) -> Message:
    return Message(
        MT.SNAPSHOT, to=2, frm=1, term=term, snapshot_meta=meta, snapshot_data=data, offset=offset, done=done
    )


def test_late_duplicate_of_the_first_chunk_does_not_throw_away_the_assembly() -> None:
    node, storage = make_node(2, **KNOBS)
    driven = Driven(node, storage)
    meta = SnapshotMeta(10, 1, ConfState(frozenset((1, 2, 3))))
    node.step(snapshot_message(0, DATA[:64], False, meta))
    node.step(snapshot_message(64, DATA[64:128], False, meta))
    node.step(snapshot_message(0, DATA[:64], False, meta))
    replies = driven.handle()
    assert [(m.offset, m.reject) for m in replies] == [(64, False), (128, False), (128, True)]
    node.step(snapshot_message(128, DATA[128:], True, meta))
    driven.handle()
    assert storage.snapshot().data == DATA


def test_duplicated_chunk_acknowledgements_do_not_multiply_the_stream() -> None:
    net = behind_compaction()
    net.recover()
    leader = net.peers[1]
    first = start_transfer(net)
    ack = Message(
        MT.SNAPSHOT_RESP, to=1, frm=3, term=net.node(1).term, index=first.snapshot_meta.index, offset=CHUNK
    )
    net.node(1).step(ack)
    net.node(1).step(ack)
    stale = Message(
        MT.SNAPSHOT_RESP, to=1, frm=3, term=net.node(1).term, index=first.snapshot_meta.index, offset=0
    )
    net.node(1).step(stale)
    assert [m.offset for m in chunks(leader.handle())] == [CHUNK]


def test_rejection_with_a_lower_offset_restarts_from_what_the_follower_holds() -> None:
    net = behind_compaction()
    net.recover()
    leader = net.peers[1]
    first = start_transfer(net)
    index = first.snapshot_meta.index
    net.node(1).step(
        Message(MT.SNAPSHOT_RESP, to=1, frm=3, term=net.node(1).term, index=index, offset=3 * CHUNK)
    )
    net.node(1).step(
        Message(MT.SNAPSHOT_RESP, to=1, frm=3, term=net.node(1).term, index=index, offset=0, reject=True)
    )
    assert [m.offset for m in chunks(leader.handle())] == [3 * CHUNK, 0]


def test_follower_installs_a_snapshot_and_adopts_its_membership() -> None:
    node, storage = make_node(2, **KNOBS)
    driven = Driven(node, storage)
    conf = ConfState(frozenset((1, 2, 3, 4)))
    node.step(snapshot_message(0, b"state", True, SnapshotMeta(7, 1, conf)))
    rd_out = driven.handle()
    assert node.conf == conf and node.log.committed == 7 and node.log.applied == 7
    assert storage.snapshot().meta.index == 7 and storage.hard_state.commit == 7
    assert [(m.type, m.index) for m in rd_out] == [(MT.APPEND_RESP, 7)]


def test_snapshot_not_newer_than_the_commit_index_is_not_installed() -> None:
    storage = storage_with([(1, 1), (2, 1), (3, 1)], term=1, commit=3)
    node, _ = make_node(2, storage=storage, **KNOBS)
    driven = Driven(node, storage)
    node.step(snapshot_message(0, b"old", True, SnapshotMeta(2, 1, ConfState(frozenset((1, 2, 3))))))
    (resp,) = driven.handle()
    assert (resp.type, resp.index) == (MT.APPEND_RESP, 3)
    assert storage.snapshot().is_empty()


def test_snapshot_of_an_entry_we_hold_only_fast_forwards_the_commit_index() -> None:
    storage = storage_with([(1, 1), (2, 1), (3, 1), (4, 1)], term=1, commit=1)
    node, _ = make_node(2, storage=storage, **KNOBS)
    driven = Driven(node, storage)
    node.step(snapshot_message(0, b"s", True, SnapshotMeta(3, 1, ConfState(frozenset((1, 2, 3))))))
    (resp,) = driven.handle()
    assert node.log.committed == 3 and storage.snapshot().is_empty() and storage.last_index() == 4
    assert resp.index == 3


def test_follower_that_installed_an_older_snapshot_is_sent_the_newer_one() -> None:
    """The leader compacted past the snapshot it was streaming: once the follower has the old one,
    it must get the new one instead of the old one forever (found by the simulator, seed 18)."""
    net = behind_compaction()
    net.recover()
    leader = net.peers[1]
    first = start_transfer(net)
    old_index = first.snapshot_meta.index
    for _ in range(5):
        net.propose(1, b"more")
    conf = ConfState(frozenset((1, 2, 3)))
    leader.storage.compact(leader.node.log.applied, conf, DATA)
    new_index = leader.storage.snapshot().meta.index
    assert new_index > old_index
    net.node(1).step(Message(MT.APPEND_RESP, to=1, frm=3, term=net.node(1).term, index=old_index))
    (again,) = chunks(leader.handle())
    assert again.snapshot_meta.index == new_index and again.offset == 0


def test_report_unreachable_sends_a_replicating_follower_back_to_probing() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    net.propose(1, b"x")
    assert net.node(1).prs[2].state is ProgressState.REPLICATE
    net.node(1).report_unreachable(2)
    assert net.node(1).prs[2].state is ProgressState.PROBE


def test_snapshot_waits_for_a_follower_that_was_recently_active() -> None:
    net = behind_compaction()
    net.node(1).prs[3].recent_active = False
    net.node(1).prs[3].become_probe()
    net.node(1).propose(b"x")
    assert not chunks(net.peers[1].handle())
    assert net.node(1).role is StateRole.LEADER


def test_empty_storage_snapshot_is_never_sent() -> None:
    net = Net(3, **KNOBS)
    net.elect(1)
    pr = net.node(1).prs[2]
    pr.recent_active = True
    assert net.node(1)._start_snapshot(2, pr) is False
    assert Snapshot().is_empty()


def test_stale_rejection_never_sends_a_follower_back_below_its_match() -> None:
    """A delayed rejection of an old probe must not move `next` to or below `match`: the leader would
    then send a snapshot the follower already covers, get an acknowledgement that moves nothing,
    and stay in SNAPSHOT forever (found by the simulator, seed 7460 on 3 nodes)."""
    net = Net(3, pre_vote=True, check_quorum=False)
    net.elect(1)
    for i in range(4):
        net.propose(1, b"w%d" % i)
    leader = net.node(1)
    match = leader.prs[3].match
    assert match == leader.log.last_index() == 5
    leader.report_unreachable(3)  # back to probing at match + 1
    stale = Message(
        MT.APPEND_RESP, to=1, frm=3, term=leader.term, index=match, reject=True, reject_hint=match - 1
    )
    leader.step(stale)
    assert leader.prs[3].next == match + 1
    net.peers[1].storage.compact(leader.log.applied, ConfState(frozenset((1, 2, 3))), DATA)
    net.stabilize()
    net.tick_all(2 * leader.cfg.election_tick)
    assert leader.prs[3].state is not ProgressState.SNAPSHOT
    index = net.propose(1, b"after")
    net.tick_all(2)
    assert net.node(3).log.committed >= index
