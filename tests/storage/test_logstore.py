from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkvd.kv.statemachine import KVStateMachine
from raftkvd.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from raftkvd.raft.storage import CompactedError, MemoryStorage, UnavailableError
from raftkvd.storage.lmdbenv import LmdbEnv
from raftkvd.storage.logstore import LogStore

CONF = ConfState(frozenset({1, 2, 3}))


@dataclass
class FakeApp:
    """The application side of the seam: a fixed membership and snapshot."""

    conf: ConfState = CONF
    snap: Snapshot = field(default_factory=Snapshot)

    def conf_state(self) -> ConfState:
        return self.conf

    def snapshot(self) -> Snapshot:
        return self.snap


def ents(lo: int, hi: int, term: int = 1, data: bytes = b"x") -> list[Entry]:
    return [Entry(i, term, EntryType.NORMAL, data) for i in range(lo, hi)]


@pytest.fixture
def store(env: LmdbEnv) -> LogStore:
    return LogStore(env, FakeApp())


def test_entries_survive_closing_and_reopening_the_env(
    open_env: Callable[..., LmdbEnv],
) -> None:
    env = open_env()
    written = ents(1, 4, term=2) + [Entry(4, 3, EntryType.CONF_CHANGE, b"cc")]
    LogStore(env, FakeApp()).save(HardState(3, 2, 4), written)
    env.close()

    reopened = LogStore(open_env(), FakeApp())
    assert reopened.entries(1, 5) == written
    assert (reopened.first_index(), reopened.last_index(), reopened.term(4)) == (1, 4, 3)
    assert reopened.initial_state() == (HardState(3, 2, 4), CONF)


def test_hard_state_round_trips_and_defaults_to_zero(open_env: Callable[..., LmdbEnv]) -> None:
    env = open_env()
    store = LogStore(env, FakeApp())
    assert store.initial_state()[0] == HardState()
    store.save(HardState(7, 3, 5), [])
    store.save(None, ents(1, 2))  # no hard state in this Ready: the stored one is kept
    env.close()
    assert LogStore(open_env(), FakeApp()).initial_state()[0] == HardState(7, 3, 5)


def test_append_truncates_a_conflicting_suffix(store: LogStore) -> None:
    store.save(None, ents(1, 6, term=1))
    store.save(None, ents(3, 5, term=2))
    assert store.last_index() == 4
    assert [e.term for e in store.entries(1, 5)] == [1, 1, 2, 2]
    with pytest.raises(UnavailableError):
        store.term(5)


def test_append_drops_entries_at_or_before_the_compaction_point(store: LogStore) -> None:
    store.save(None, ents(1, 6))
    store.compact(3)
    store.save(None, ents(2, 5, term=2))
    assert [(e.index, e.term) for e in store.entries(4, 5)] == [(4, 2)]
    assert store.term(3) == 1
    assert store.last_index() == 4


def test_append_refuses_a_gap_in_the_log(store: LogStore) -> None:
    store.save(None, ents(1, 3))
    with pytest.raises(ValueError, match="gap"):
        store.save(None, ents(5, 6))
    assert store.last_index() == 2


def test_compaction_keeps_the_term_of_the_entry_before_first_index(store: LogStore) -> None:
    store.save(None, ents(1, 4, term=1) + ents(4, 7, term=2))
    store.compact(4)
    assert store.first_index() == 5
    assert store.term(4) == 2
    with pytest.raises(CompactedError):
        store.term(3)
    with pytest.raises(CompactedError):
        store.entries(4, 6)
    assert [e.index for e in store.entries(5, 7)] == [5, 6]


def test_compaction_survives_a_reopen(open_env: Callable[..., LmdbEnv]) -> None:
    env = open_env()
    store = LogStore(env, FakeApp())
    store.save(None, ents(1, 10, term=4))
    store.compact(6)
    env.close()
    store = LogStore(open_env(), FakeApp())
    assert (store.first_index(), store.last_index(), store.term(6)) == (7, 9, 4)


def test_compaction_outside_the_log_is_ignored(store: LogStore) -> None:
    store.save(None, ents(1, 4))
    store.compact(9)
    store.compact(0)
    assert (store.first_index(), store.last_index()) == (1, 3)


def test_entries_past_the_last_index_are_unavailable(store: LogStore) -> None:
    store.save(None, ents(1, 4))
    with pytest.raises(UnavailableError):
        store.entries(2, 5)
    assert store.entries(4, 4) == []


def test_entries_honour_max_bytes_but_return_at_least_one(store: LogStore) -> None:
    store.save(None, ents(1, 6, data=b"a" * 84))  # Entry.size() == 100 each
    assert len(store.entries(1, 6, max_bytes=250)) == 2
    assert len(store.entries(1, 6, max_bytes=300)) == 3
    assert len(store.entries(1, 6, max_bytes=1)) == 1
    assert len(store.entries(1, 6)) == 5


def test_snapshot_resets_the_log_to_its_dummy_entry(store: LogStore) -> None:
    store.save(None, ents(1, 6))
    store.save(HardState(5, 2, 20), [], Snapshot(SnapshotMeta(20, 5, CONF), b"img"))
    assert (store.first_index(), store.last_index(), store.term(20)) == (21, 20, 5)
    with pytest.raises(CompactedError):
        store.entries(5, 6)
    store.save(None, ents(21, 23, term=5))
    assert store.last_index() == 22


def test_a_snapshot_older_than_the_compaction_point_is_ignored(store: LogStore) -> None:
    store.save(None, ents(1, 10))
    store.compact(8)
    store.save(None, [], Snapshot(SnapshotMeta(5, 1, CONF), b"old"))
    assert (store.first_index(), store.last_index()) == (9, 9)


def test_cached_bounds_are_unchanged_when_the_batch_aborts(env: LmdbEnv, store: LogStore) -> None:
    store.save(None, ents(1, 3))
    with pytest.raises(RuntimeError), env.write() as batch:
        store.save(None, ents(3, 9), batch=batch)
        raise RuntimeError("crash before commit")
    assert store.last_index() == 2
    with pytest.raises(UnavailableError):
        store.entries(1, 5)


def test_snapshot_comes_from_the_application(env: LmdbEnv) -> None:
    image = Snapshot(SnapshotMeta(9, 2, CONF), b"image")
    assert LogStore(env, FakeApp(snap=image)).snapshot() == image


def test_initial_state_reports_the_membership_of_the_application(env: LmdbEnv) -> None:
    conf = ConfState(frozenset({1, 2}), frozenset({4}))
    assert LogStore(env, FakeApp(conf=conf)).initial_state()[1] == conf


def _put(index: int, key: str, value: str) -> Entry:
    return Entry(index, 1, EntryType.NORMAL, msgpack.packb({"op": "put", "key": key, "value": value}))


def _leader_snapshot(path: Path) -> Snapshot:
    with LmdbEnv(path) as leader_env:
        leader = KVStateMachine(leader_env)
        leader.apply([_put(i, f"k{i}", "v") for i in range(1, 11)])
        return leader.snapshot()


def test_snapshot_persist_and_restore_commit_in_one_transaction(tmp_path: Path, env: LmdbEnv) -> None:
    snap = _leader_snapshot(tmp_path / "leader")
    sm = KVStateMachine(env)
    store = LogStore(env, sm)
    store.save(None, ents(1, 3, data=b""))

    with pytest.raises(RuntimeError), env.write() as batch:
        sm.restore(snap.data, batch=batch)
        store.save(HardState(1, 0, 10), [], snap, batch=batch)
        raise RuntimeError("crash before commit")
    assert (sm.applied_index(), sm.key_count(), store.last_index()) == (0, 0, 2)

    with env.write() as batch:
        sm.restore(snap.data, batch=batch)
        store.save(HardState(1, 0, 10), [], snap, batch=batch)
    assert (sm.applied_index(), sm.key_count()) == (10, 10)
    assert (store.first_index(), store.last_index(), store.term(10)) == (11, 10, 1)
    assert store.snapshot().meta == snap.meta


# --- equivalence with the core's in-memory storage -----------------------------------

writes = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 30), st.integers(1, 5), st.integers(1, 4)),
        st.tuples(st.just("compact"), st.integers(0, 35)),
    ),
    max_size=25,
)


def _apply_to_both(mem: MemoryStorage, store: LogStore, op: tuple) -> None:
    if op[0] == "compact":
        mem.compact(op[1], CONF)
        store.compact(op[1])
        return
    _, start, count, term = op
    start = min(start, mem.last_index() + 1)  # never leave a gap: both refuse it
    batch = ents(start, start + count, term=term)
    mem.append(batch)
    store.save(None, batch)


@settings(max_examples=60, deadline=None)
@given(ops=writes)
def test_log_store_answers_like_memory_storage(tmp_path_factory, ops: list[tuple]) -> None:
    with LmdbEnv(tmp_path_factory.mktemp("eq")) as env:
        mem, store = MemoryStorage(), LogStore(env, FakeApp())
        for op in ops:
            _apply_to_both(mem, store, op)
        first, last = mem.first_index(), mem.last_index()
        assert (store.first_index(), store.last_index()) == (first, last)
        assert [store.term(i) for i in range(first - 1, last + 1)] == [
            mem.term(i) for i in range(first - 1, last + 1)
        ]
        assert store.entries(first, last + 1) == mem.entries(first, last + 1)
