"""Which Readys the node must make durable before acting on them (raftkvd.server.driver.needs_durability)."""

from __future__ import annotations

from raftkvd.raft.messages import Entry, HardState, Ready, Snapshot, SnapshotMeta
from raftkvd.server.driver import needs_durability

DURABLE = (3, 2)  # term 3, voted for node 2: what the node last flushed


def test_new_entries_must_be_durable() -> None:
    assert needs_durability(Ready(entries=[Entry(5, 3)]), DURABLE)


def test_a_snapshot_must_be_durable() -> None:
    snapshot = Snapshot(SnapshotMeta(index=10, term=3), b"")
    assert needs_durability(Ready(snapshot=snapshot), DURABLE)


def test_a_new_term_or_vote_must_be_durable() -> None:
    assert needs_durability(Ready(hard_state=HardState(4, 0, 7)), DURABLE)
    assert needs_durability(Ready(hard_state=HardState(3, 1, 7)), DURABLE)


def test_a_commit_index_and_applied_entries_alone_can_be_redone_from_the_log() -> None:
    rd = Ready(hard_state=HardState(3, 2, 9), committed_entries=[Entry(9, 3)])
    assert not needs_durability(rd, DURABLE)
    assert not needs_durability(Ready(), DURABLE)
