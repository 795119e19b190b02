"""Backups end to end below the network: the leader's stream (server/backups.py) into a file
(raftkv/backupfile.py), restored into new data dirs (offline/restore.py); and disaster
recovery of a data dir (offline/recover.py). Real LMDB files, no mocks."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from raftkv.backupfile import BackupError, BackupWriter, verify
from raftkvd.kv.statemachine import KVStateMachine
from raftkvd.offline.recover import recover
from raftkvd.offline.restore import RestoreError, restore
from raftkvd.raft.messages import ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState
from raftkvd.server import backups
from raftkvd.server.backups import Backups
from raftkvd.settings import Settings, load_settings
from raftkvd.storage.lmdbenv import LmdbEnv
from raftkvd.storage.logstore import LogStore

VALUE = "v" * 100


def _put(index: int, key: str, value: str = VALUE, term: int = 1) -> Entry:
    return Entry(index, term, EntryType.NORMAL, msgpack.packb({"op": "put", "key": key, "value": value}))


def _filled(env: LmdbEnv, keys: int) -> KVStateMachine:
    sm = KVStateMachine(env)
    entries = [_put(i + 1, f"key{i:06d}") for i in range(keys)]
    for lo in range(0, keys, 5000):
        sm.apply(entries[lo:lo + 5000])
    return sm


def _save(stream: Backups, path: Path) -> None:
    """What raftctl does, without the network: chunks in order into a file."""
    opened = stream.open()
    with BackupWriter(path, opened["header"]) as writer:
        seq = 0
        while True:
            chunk = stream.read(opened["stream"], seq)
            writer.rows(chunk["data"])
            if chunk["done"]:
                break
            seq += 1
        writer.commit()


def _settings(tmp_path: Path, ids: list[int], node_id: int, name: str = "new") -> Settings:
    lines = ["[cluster]"]
    for i in ids:
        lines += ["[[node]]", f"id = {i}", f'raft = "tcp://127.0.0.1:{41000 + i}"',
                  f'client = "tcp://127.0.0.1:{42000 + i}"', f'http = "127.0.0.1:{43000 + i}"',
                  f'data_dir = "{tmp_path / name / f"node{i}"}"']
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_settings(path, node_id=node_id, env={})


def test_a_stream_is_a_consistent_view_while_writes_go_on(tmp_path: Path) -> None:
    with LmdbEnv(tmp_path / "leader") as env:
        sm = _filled(env, 30_000)
        stream = Backups(env, sm, node_id=1)
        opened = stream.open()
        assert opened["header"]["index"] == 30_000 and opened["header"]["keys"] == 30_000
        first = stream.read(opened["stream"], 0)
        assert not first["done"] and len(first["data"]) >= backups.CHUNK_BYTES
        assert stream.read(opened["stream"], 0) == first  # asked again: the same chunk
        assert stream.read(opened["stream"], 5)["code"] == "invalid"
        sm.apply([_put(30_001, "key000000", "changed"), _put(30_002, "zzz-new")])
        rows, seq, chunk = first["rows"], 1, first
        while not chunk["done"]:
            chunk = stream.read(opened["stream"], seq)
            rows, seq = rows + chunk["rows"], seq + 1
        assert rows == 30_000  # the view holds neither the new key nor the later write
        assert stream.in_progress == 0
        assert stream.read(opened["stream"], seq)["code"] == "invalid"


def test_streams_are_bounded_and_idle_ones_expire(tmp_path: Path) -> None:
    now = [0.0]
    with LmdbEnv(tmp_path / "leader") as env:
        stream = Backups(env, _filled(env, 10), node_id=1, clock=lambda: now[0])
        ids = [stream.open()["stream"] for _ in range(backups.MAX_OPEN)]
        assert stream.open()["code"] == "unavailable"
        stream.read(ids[0], 0)
        now[0] = backups.IDLE_TIMEOUT_S + 1
        stream.expire()
        assert stream.in_progress == 0
        assert stream.open()["code"] == "ok"
        stream.close()


def test_restore_seeds_every_node_with_the_same_state_and_the_files_membership(tmp_path: Path) -> None:
    backup = tmp_path / "store.bk"
    with LmdbEnv(tmp_path / "leader") as env:
        source = _filled(env, 12_000)
        _save(Backups(env, source, node_id=1), backup)
        expected_hash = source.hash()
    assert verify(backup).keys == 12_000
    for node_id in (1, 2, 4):
        settings = _settings(tmp_path, [1, 2, 4], node_id)
        done = restore(backup, settings)
        assert done.info.index == 12_000
        with LmdbEnv(settings.node.data_dir) as env:
            sm = KVStateMachine(env)
            log = LogStore(env, sm)
            assert (sm.applied_index(), sm.key_count(), sm.revision()) == (12_000, 12_000, 12_000)
            assert sm.hash() == expected_hash
            assert sm.conf_state().voters == {1, 2, 4}
            assert set(sm.members()) == {1, 2, 4}
            assert (log.first_index(), log.last_index(), log.term(12_000)) == (12_001, 12_000, 1)
            assert log.initial_state()[0] == HardState(1, 0, 12_000)
    leftovers = [p.name for p in (tmp_path / "new").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_restore_refuses_a_damaged_file_or_a_used_data_dir_and_writes_nothing(tmp_path: Path) -> None:
    backup = tmp_path / "store.bk"
    with LmdbEnv(tmp_path / "leader") as env:
        _save(Backups(env, _filled(env, 100), node_id=1), backup)
    good = backup.read_bytes()
    settings = _settings(tmp_path, [1], 1)
    for damaged in (good[: len(good) // 2], good[:-1], good[:200] + bytes([good[200] ^ 4]) + good[201:]):
        backup.write_bytes(damaged)
        with pytest.raises(BackupError):
            restore(backup, settings)
        assert not (tmp_path / "new").exists() or list((tmp_path / "new").iterdir()) == []
    backup.write_bytes(good)
    settings.node.data_dir.mkdir(parents=True)
    (settings.node.data_dir / "something").write_text("x")
    with pytest.raises(RestoreError, match="not empty"):
        restore(backup, settings)
    assert [p.name for p in settings.node.data_dir.iterdir()] == ["something"]


def test_recover_keeps_every_entry_and_leaves_this_node_the_only_member(tmp_path: Path) -> None:
    settings = _settings(tmp_path, [1, 2, 3], 2, name="old")
    with LmdbEnv(settings.node.data_dir) as env:
        sm = KVStateMachine(env)
        members = settings.cluster.addresses()
        sm.force_membership(ConfState(frozenset(members)), members)
        log = LogStore(env, sm)
        entries = [_put(i, f"k{i}", term=3) for i in range(1, 41)]
        removal = ConfChange(ConfChangeType.REMOVE_NODE, 3).encode()
        entries.append(Entry(41, 3, EntryType.CONF_CHANGE, removal))
        entries += [_put(i, f"k{i}", term=3) for i in range(42, 51)]
        log.save(HardState(4, 1, 30), entries)
        sm.apply(entries[:30])  # the rest reached this log, not yet this state machine
    done = recover(settings)
    assert (done.index, done.term, done.applied_before, done.former_members) == (50, 3, 30, [1, 2, 3])
    with LmdbEnv(settings.node.data_dir) as env:
        sm = KVStateMachine(env)
        log = LogStore(env, sm)
        assert (sm.applied_index(), sm.key_count()) == (50, 49)
        assert sm.get("k50") is not None and sm.conf_state().voters == {2} and not sm.conf_state().learners
        assert set(sm.members()) == {2}
        assert (log.first_index(), log.last_index()) == (51, 50)
        assert log.initial_state()[0] == HardState(4, 0, 50)
