from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftkvd.errors import InvalidRequest, NoSpaceError, StorageCorruptError
from raftkvd.kv.statemachine import MAX_REMOVED, KVStateMachine
from raftkvd.raft.messages import ConfChange, ConfChangeType, ConfState, Entry, EntryType
from raftkvd.storage.lmdbenv import LmdbEnv

SMALL_MAP = 64 << 10


class Log:
    """Numbers entries so tests read as a sequence of commands."""

    def __init__(self) -> None:
        self.index = 0

    def entry(self, data: bytes = b"", kind: EntryType = EntryType.NORMAL) -> Entry:
        self.index += 1
        return Entry(self.index, 1, kind, data)

    def cmd(self, op: str, key: str, **fields: Any) -> Entry:
        return self.entry(msgpack.packb({"op": op, "key": key, **fields}))

    def put(self, key: str, value: str, **fields: Any) -> Entry:
        return self.cmd("put", key, value=value, **fields)

    def conf(self, kind: ConfChangeType, node_id: int, context: bytes = b"") -> Entry:
        return self.entry(ConfChange(kind, node_id, context).encode(), EntryType.CONF_CHANGE)


@pytest.fixture
def sm(env: LmdbEnv) -> KVStateMachine:
    return KVStateMachine(env)


@pytest.fixture
def log() -> Log:
    return Log()


def test_put_updates_value_and_applied_index(sm: KVStateMachine, log: Log) -> None:
    results = sm.apply([log.put("a", "1"), log.put("b", "2")])
    assert results == [{"code": "ok", "revision": 1}, {"code": "ok", "revision": 2}]
    assert (sm.get("a"), sm.get("b"), sm.get("c")) == (("1", 1), ("2", 2), None)
    assert (sm.applied_index(), sm.key_count(), sm.revision()) == (2, 2, 2)


def test_state_and_applied_index_survive_a_reopen(open_env: Callable[..., LmdbEnv]) -> None:
    env, log = open_env(), Log()
    KVStateMachine(env).apply([log.put("a", "1"), log.cmd("delete", "a"), log.put("b", "2")])
    env.close()
    sm = KVStateMachine(open_env())
    assert (sm.applied_index(), sm.key_count(), sm.get("b"), sm.get("a")) == (3, 1, ("2", 3), None)


def test_overwrite_keeps_create_revision_and_bumps_mod_revision(
    env: LmdbEnv, sm: KVStateMachine, log: Log
) -> None:
    sm.apply([log.put("a", "1"), log.put("x", "y"), log.put("a", "2")])
    with env.read() as txn:
        row = msgpack.unpackb(txn.get(b"a", db=env.db("kv")))
    assert row == ["2", 1, 3]
    assert sm.key_count() == 2


def test_delete_reports_whether_it_deleted_and_only_a_deletion_bumps_revision(
    sm: KVStateMachine, log: Log
) -> None:
    results = sm.apply([log.put("a", "1"), log.cmd("delete", "a"), log.cmd("delete", "a")])
    assert results[1] == {"code": "ok", "deleted": True, "revision": 2}
    assert results[2] == {"code": "ok", "deleted": False}
    assert (sm.revision(), sm.key_count()) == (2, 0)


def test_noop_entries_only_advance_the_applied_index(sm: KVStateMachine, log: Log) -> None:
    assert sm.apply([log.entry(), log.entry()]) == [{"code": "ok"}, {"code": "ok"}]
    assert (sm.applied_index(), sm.revision(), sm.key_count()) == (2, 0, 0)


def test_entries_must_be_applied_in_log_order(sm: KVStateMachine, log: Log) -> None:
    sm.apply([log.put("a", "1")])
    with pytest.raises(ValueError, match="out of order"):
        sm.apply([Entry(5, 1, EntryType.NORMAL, b"")])
    assert sm.applied_index() == 1


def test_cas_with_expected_none_requires_the_key_to_be_missing(sm: KVStateMachine, log: Log) -> None:
    first, second = sm.apply(
        [log.cmd("cas", "k", expected=None, value="1"), log.cmd("cas", "k", expected=None, value="2")]
    )
    assert first == {"code": "ok", "revision": 1}
    assert second == {"code": "compare_failed", "value": "1"}
    assert sm.get("k") == ("1", 1)


def test_cas_swaps_only_when_the_current_value_matches(sm: KVStateMachine, log: Log) -> None:
    results = sm.apply(
        [
            log.put("k", "old"),
            log.cmd("cas", "k", expected="wrong", value="x"),
            log.cmd("cas", "k", expected="old", value="new"),
            log.cmd("cas", "gone", expected="old", value="x"),
        ]
    )
    assert results[1] == {"code": "compare_failed", "value": "old"}
    assert results[2] == {"code": "ok", "revision": 2}
    assert results[3] == {"code": "compare_failed", "value": None}
    assert sm.get("k") == ("new", 2)
    assert sm.get("gone") is None


def test_a_duplicate_session_seq_is_applied_once_and_answered_again(sm: KVStateMachine, log: Log) -> None:
    first = sm.apply([log.put("k", "1", session="c1", seq=1)])
    sm.apply([log.put("k", "2")])
    retry = sm.apply([log.put("k", "1", session="c1", seq=1)])
    assert retry == first
    assert sm.get("k") == ("2", 2)
    assert sm.applied_index() == 3


def test_a_request_older_than_the_last_seen_is_rejected_as_stale(sm: KVStateMachine, log: Log) -> None:
    sm.apply([log.put("k", "1", session="c1", seq=1), log.put("k", "2", session="c1", seq=2)])
    [stale] = sm.apply([log.put("k", "old", session="c1", seq=1)])
    assert stale == {"code": "invalid", "error": "stale request"}
    assert sm.get("k") == ("2", 2)


def test_sessions_are_independent(sm: KVStateMachine, log: Log) -> None:
    results = sm.apply([log.put("a", "1", session="c1", seq=1), log.put("b", "2", session="c2", seq=1)])
    assert [r["revision"] for r in results] == [1, 2]


def test_the_session_table_evicts_the_least_recently_used_session(env: LmdbEnv, log: Log) -> None:
    sm = KVStateMachine(env, max_sessions=2)
    sm.apply([log.put("k", "a", session="a", seq=1), log.put("k", "b", session="b", seq=1)])
    sm.apply([log.put("k", "a2", session="a", seq=2)])  # "a" is now more recent than "b"
    sm.apply([log.put("k", "c", session="c", seq=1)])  # evicts "b"
    [replay_a] = sm.apply([log.put("k", "a-again", session="a", seq=2)])
    [replay_b] = sm.apply([log.put("k", "b-again", session="b", seq=1)])
    assert replay_a == {"code": "ok", "revision": 3}  # remembered: not applied again
    assert replay_b["revision"] == 5  # forgotten: applied as new
    assert sm.get("k") == ("b-again", 5)


def test_replicas_applying_the_same_log_converge(tmp_path: Path) -> None:
    log = Log()
    entries = [log.put(f"k{i % 7}", str(i), session=f"s{i % 5}", seq=i) for i in range(1, 60)]
    entries.append(log.cmd("delete", "k3"))
    hashes = []
    for name in ("r1", "r2"):
        with LmdbEnv(tmp_path / name) as env:
            sm = KVStateMachine(env, max_sessions=3)
            sm.apply(entries[:20])
            sm.apply(entries[20:])
            hashes.append((sm.hash(), sm.dump()))
    assert hashes[0] == hashes[1]


def test_malformed_commands_are_answered_invalid_without_stopping_apply(sm: KVStateMachine, log: Log) -> None:
    results = sm.apply(
        [
            log.entry(b"\xc1 not msgpack"),
            log.entry(msgpack.packb([1, 2])),
            log.cmd("explode", "k"),
            log.cmd("put", "k"),
            log.put("", "v"),
            log.put("x" * 512, "v"),
            log.cmd("cas", "k", expected=3, value="v"),
            log.entry(b"{", EntryType.CONF_CHANGE),
            log.entry(msgpack.packb({"op": ["put"], "key": "k", "value": "v"})),  # unhashable op
            log.entry(msgpack.packb({"op": 7, "key": "k", "value": "v"})),
            log.put("k", "fine"),
        ]
    )
    assert [r["code"] for r in results] == ["invalid"] * 10 + ["ok"]
    assert (sm.applied_index(), sm.key_count()) == (11, 1)


def test_an_invalid_command_is_remembered_for_its_session(sm: KVStateMachine, log: Log) -> None:
    [first] = sm.apply([log.put("", "v", session="c1", seq=1)])
    [retry] = sm.apply([log.put("ok", "v", session="c1", seq=1)])
    assert first == retry
    assert first["code"] == "invalid"


def test_a_failing_batch_applies_nothing(
    sm: KVStateMachine, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    sm.apply([log.put("a", "1", session="c1", seq=1)])
    before = (sm.hash(), sm.applied_index(), sm.revision(), sm.dump())
    real_put = KVStateMachine._put

    def failing_put(self: KVStateMachine, txn: Any, meta: Any, key: bytes, *rest: Any) -> Any:
        if key == b"boom":
            raise RuntimeError("crash in the middle of the batch")
        return real_put(self, txn, meta, key, *rest)

    monkeypatch.setattr(KVStateMachine, "_put", failing_put)
    batch = [log.put("a", "2", session="c1", seq=2), log.put("b", "1"), log.put("boom", "x")]
    with pytest.raises(RuntimeError):
        sm.apply(batch)
    assert (sm.hash(), sm.applied_index(), sm.revision(), sm.dump()) == before


def test_map_full_raises_no_space_and_keeps_reads_and_earlier_data(
    open_env: Callable[..., LmdbEnv], log: Log
) -> None:
    sm = KVStateMachine(open_env(map_size=SMALL_MAP))
    sm.apply([log.put("first", "kept")])
    with pytest.raises(NoSpaceError):
        for i in range(1000):
            sm.apply([log.put(f"k{i:04d}", "v" * 500)])
    applied, count = sm.applied_index(), sm.key_count()
    assert applied == log.index - 1  # the failing batch left nothing behind

    log.index = applied  # the node retries from the first unapplied entry
    with pytest.raises(NoSpaceError):
        sm.apply([log.put("a", "b" * 1000), log.put("c", "d" * 20_000)])
    assert (sm.applied_index(), sm.key_count(), sm.get("a")) == (applied, count, None)
    assert sm.get("first") == ("kept", 1)
    assert len(sm.list("k")) == count - 1


def test_list_returns_keys_in_order_within_prefix_and_limit(sm: KVStateMachine, log: Log) -> None:
    sm.apply([log.put(k, k.upper()) for k in ("b/2", "a", "b/1", "b/3", "c", "b")])
    assert sm.list() == [(k, k.upper()) for k in ("a", "b", "b/1", "b/2", "b/3", "c")]
    assert sm.list("b/") == [("b/1", "B/1"), ("b/2", "B/2"), ("b/3", "B/3")]
    assert sm.list("b/", limit=2) == [("b/1", "B/1"), ("b/2", "B/2")]
    assert sm.list("zz") == []
    assert sm.list("", limit=0) == []


def test_reads_of_an_invalid_key_are_rejected(sm: KVStateMachine) -> None:
    with pytest.raises(InvalidRequest):
        sm.get("")
    with pytest.raises(InvalidRequest):
        sm.get("k" * 600)


def test_dump_and_restore_round_trip_the_whole_state(
    open_env: Callable[..., LmdbEnv], tmp_path: Path, log: Log
) -> None:
    source = KVStateMachine(open_env())
    source.apply([log.put(f"k{i}", f"v{i}", session=f"s{i}", seq=1) for i in range(50)])
    source.apply([log.conf(ConfChangeType.ADD_NODE, 4, msgpack.packb({"raft": "tcp://h:1"}))])
    with LmdbEnv(tmp_path / "other") as other_env:
        target = KVStateMachine(other_env)
        target.apply([Log().put("stale", "gone")])
        target.restore(source.dump())
        assert target.hash() == source.hash()
        assert target.dump() == source.dump()
        assert target.list() == source.list()
        assert target.members() == source.members()
        assert (target.applied_index(), target.key_count(), target.revision()) == (51, 50, 50)
        [replay] = target.apply([log.put("k0", "x", session="s0", seq=1)])
        assert replay == {"code": "ok", "revision": 1}  # the session table came along


def test_restore_ignores_an_image_not_newer_than_the_applied_state(sm: KVStateMachine, log: Log) -> None:
    sm.apply([log.put("a", "1")])
    old_image = sm.dump()
    sm.apply([log.put("a", "2")])
    sm.restore(old_image)
    assert (sm.get("a"), sm.applied_index()) == (("2", 2), 2)


def test_snapshot_meta_is_the_applied_index_term_and_membership(sm: KVStateMachine, log: Log) -> None:
    sm.bootstrap(ConfState(frozenset({1, 2, 3})), {})
    sm.apply([log.put("a", "1"), Entry(2, 4, EntryType.NORMAL, b"")])
    snap = sm.snapshot()
    assert (snap.meta.index, snap.meta.term) == (2, 4)
    assert snap.meta.conf == ConfState(frozenset({1, 2, 3}))
    assert snap.data == sm.dump()


def test_restore_rejects_a_malformed_image_and_keeps_the_state(sm: KVStateMachine, log: Log) -> None:
    sm.apply([log.put("a", "1")])
    for bad in (b"\xc1", msgpack.packb({"v": 99}), msgpack.packb({"v": 1, "kv": []})):
        with pytest.raises(StorageCorruptError):
            sm.restore(bad)
    assert sm.get("a") == ("1", 1)


def test_conf_change_apply_persists_membership_and_addresses(
    open_env: Callable[..., LmdbEnv], log: Log
) -> None:
    env = open_env()
    sm = KVStateMachine(env)
    sm.bootstrap(ConfState(frozenset({1, 2, 3})), {1: {"raft": "tcp://a:1"}})
    addresses = {"raft": "tcp://d:1", "client": "tcp://d:2", "http": "d:3"}
    sm.apply(
        [
            log.conf(ConfChangeType.ADD_LEARNER, 4, msgpack.packb(addresses)),
            log.conf(ConfChangeType.ADD_NODE, 4),  # promotion carries no addresses
            log.conf(ConfChangeType.REMOVE_NODE, 1),
        ]
    )
    env.close()
    sm = KVStateMachine(open_env())
    assert sm.conf_state() == ConfState(frozenset({2, 3, 4}))
    assert sm.members() == {4: addresses}
    assert sm.applied_index() == 3


def test_a_removal_is_remembered_across_reopen_and_snapshot_until_the_id_is_added_again(
    open_env: Callable[..., LmdbEnv], log: Log, tmp_path: Path
) -> None:
    """What lets members tell a stale removed node the entry that removed it (server/removal.py)."""
    env = open_env()
    sm = KVStateMachine(env)
    sm.bootstrap(ConfState(frozenset({1, 2, 3})), {})
    sm.apply([log.put("a", "1"), log.conf(ConfChangeType.REMOVE_NODE, 3)])
    assert (sm.removed_at(3), sm.removed_at(2)) == (2, None)
    env.close()
    sm = KVStateMachine(open_env())
    assert sm.removed_at(3) == 2
    image = sm.dump()
    other_env = LmdbEnv(tmp_path / "other")
    other = KVStateMachine(other_env)
    other.restore(image)
    assert other.removed_at(3) == 2
    other_env.close()
    sm.apply([log.conf(ConfChangeType.ADD_LEARNER, 3, msgpack.packb({"raft": "tcp://c:1"}))])
    assert sm.removed_at(3) is None


def test_only_the_latest_removals_are_remembered(sm: KVStateMachine, log: Log) -> None:
    sm.bootstrap(ConfState(frozenset({1})), {})
    sm.apply([log.conf(ConfChangeType.REMOVE_NODE, n) for n in range(100, 100 + MAX_REMOVED + 5)])
    assert sm.removed_at(100) is None and sm.removed_at(100 + MAX_REMOVED + 4) is not None
    assert sum(sm.removed_at(n) is not None for n in range(100, 100 + MAX_REMOVED + 5)) == MAX_REMOVED


def test_bootstrap_only_seeds_an_empty_state_machine(sm: KVStateMachine, log: Log) -> None:
    sm.bootstrap(ConfState(frozenset({1})), {1: {"raft": "tcp://a:1"}})
    sm.bootstrap(ConfState(frozenset({7})), {7: {"raft": "tcp://z:1"}})
    assert sm.conf_state() == ConfState(frozenset({1}))
    assert sm.members() == {1: {"raft": "tcp://a:1"}}


def test_a_node_with_100k_keys_reopens_fast(open_env: Callable[..., LmdbEnv], log: Log) -> None:
    env = open_env()
    sm = KVStateMachine(env)
    for start in range(0, 100_000, 10_000):
        sm.apply([log.put(f"key{i:06d}", "v" * 32) for i in range(start, start + 10_000)])
    digest = sm.hash()
    env.close()

    began = time.perf_counter()
    sm = KVStateMachine(open_env())
    count, applied = sm.key_count(), sm.applied_index()
    elapsed = time.perf_counter() - began
    print(f"reopen with {count} keys took {elapsed * 1000:.1f} ms")
    assert (count, applied) == (100_000, 100_000)
    assert sm.hash() == digest
    assert elapsed < 5
