"""The zeroed room at the end of the LMDB file (raftkvd.storage.prealloc): written ahead of
LMDB's used pages, never over them, and given back when the disk is full."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from raftkvd.storage import prealloc
from raftkvd.storage.lmdbenv import KV, LmdbEnv
from raftkvd.storage.prealloc import CHUNK_BYTES, Preallocator


def _fill(env: LmdbEnv, start: int, count: int) -> None:
    with env.write() as batch:
        for n in range(start, start + count):
            batch.txn.put(b"key/%08d" % n, os.urandom(200), db=env.db(KV))


def test_the_file_stays_ahead_of_lmdbs_pages_and_the_data_survives(
    open_env: Callable[..., LmdbEnv], tmp_path: Path
) -> None:
    env = open_env()
    data_file = tmp_path / "db" / "data.mdb"
    for round_ in range(40):  # ~10 MB of rows: the file grows several chunks
        _fill(env, round_ * 1000, 1000)
        room = data_file.stat().st_size - env.used_bytes()
        assert room > 0, f"round {round_}: LMDB had to grow the file itself"
    assert data_file.stat().st_size > env.used_bytes()
    with open(data_file, "rb") as f:  # everything past LMDB's last page is the zeros we wrote
        f.seek(env.used_bytes() + 4096)
        assert f.read().count(0) == data_file.stat().st_size - env.used_bytes() - 4096
    env.close()
    reopened = open_env()
    with reopened.read() as txn:
        assert txn.stat(reopened.db(KV))["entries"] == 40_000
        assert len(txn.get(b"key/%08d" % 39_999, db=reopened.db(KV))) == 200


def test_room_is_written_only_past_the_used_pages(tmp_path: Path) -> None:
    data_file = tmp_path / "data.mdb"
    data_file.write_bytes(b"\xab" * 10_000)
    room = Preallocator(data_file, chunk=1 << 20, low_water=1 << 19)
    room.ensure_room(used=12_288)  # LMDB has handed out pages beyond the file's end
    room.close()
    content = data_file.read_bytes()
    assert content[:10_000] == b"\xab" * 10_000
    assert len(content) == 12_288 + (1 << 20) and content[12_288:].count(0) == 1 << 20


def test_enough_room_writes_nothing(tmp_path: Path) -> None:
    data_file = tmp_path / "data.mdb"
    data_file.write_bytes(b"\xab" * (3 << 20))
    room = Preallocator(data_file, chunk=1 << 20, low_water=1 << 20)
    room.ensure_room(used=1 << 20)
    room.close()
    assert data_file.stat().st_size == 3 << 20


def test_a_full_disk_gives_the_room_back_and_writes_still_commit(
    open_env: Callable[..., LmdbEnv], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def disk_full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prealloc.os, "pwrite", disk_full)
    env = open_env()
    data_file = tmp_path / "db" / "data.mdb"
    _fill(env, 0, 3000)
    _fill(env, 3000, 3000)
    assert data_file.stat().st_size <= env.used_bytes() + CHUNK_BYTES // 4  # no room kept
    assert sum("preallocation_stopped" in r.message for r in caplog.records) == 1
    with env.read() as txn:
        assert txn.stat(env.db(KV))["entries"] == 6000
