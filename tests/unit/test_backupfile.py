"""The backup file format (raftkv/backupfile.py): a whole, intact file reads back exactly;
any cut or flipped byte, bad order or wrong count is refused before a row is trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftkv.backupfile import MAGIC, BackupError, BackupReader, BackupWriter, verify

HEADER: dict[str, Any] = {"index": 7, "term": 2, "revision": 5, "keys": 3, "voters": [1, 2, 3],
                          "learners": [], "members": {"1": {"raft": "tcp://h:1"}}, "node_id": 1,
                          "created": 1.5}


def _row(value: str, rev: int) -> bytes:
    return msgpack.packb([value, rev, rev])


ROWS = [(b"a", _row("1", 1)), (b"b", _row("2", 2)), (b"c", _row("3", 5))]


def _pack(rows: list[tuple[bytes, bytes]]) -> bytes:
    packer = msgpack.Packer()
    return b"".join(packer.pack([k, r]) for k, r in rows)


def _write(path: Path, rows: list[tuple[bytes, bytes]] = ROWS, **header: Any) -> Path:
    with BackupWriter(path, {**HEADER, **header}) as writer:
        data = _pack(rows)
        writer.rows(data[:5])  # chunks need not end on a row
        writer.rows(data[5:])
        writer.commit()
    return path


def test_a_written_file_reads_back_with_its_header_and_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.bk")
    info = verify(path)
    assert (info.index, info.term, info.keys, info.size) == (7, 2, 3, path.stat().st_size)
    assert info.header["members"] == HEADER["members"]
    reader = BackupReader(path)
    assert list(reader.rows()) == ROWS
    assert reader.info == info
    seen: list[tuple[int, int]] = []
    verify(path, lambda rows, keys: seen.append((rows, keys)))
    assert seen[-1] == (3, 3)


def test_the_file_appears_only_on_commit_and_nothing_is_left_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "b.bk"
    with pytest.raises(RuntimeError), BackupWriter(path, HEADER) as writer:
        writer.rows(_pack(ROWS))
        raise RuntimeError("the node went away")
    assert list(tmp_path.iterdir()) == []


def test_every_flipped_byte_is_refused(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.bk").read_bytes()
    bad = tmp_path / "bad.bk"
    for offset in range(len(good)):
        damaged = bytearray(good)
        damaged[offset] ^= 0x01
        bad.write_bytes(bytes(damaged))
        with pytest.raises(BackupError):
            verify(bad)


def test_every_truncation_is_refused(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.bk").read_bytes()
    bad = tmp_path / "bad.bk"
    for size in range(len(good)):
        bad.write_bytes(good[:size])
        with pytest.raises(BackupError):
            verify(bad)


@pytest.mark.parametrize(("rows", "header", "reason"), [
    (ROWS[:2], {}, "promises 3 keys"),
    ([ROWS[1], ROWS[0], ROWS[2]], {}, "out of order"),
    ([ROWS[0], ROWS[0], ROWS[2]], {}, "out of order"),
    ([(b"a", b"\x01"), *ROWS[1:]], {}, "not [value"),
    ([(b"", _row("x", 1)), *ROWS[1:]], {}, "bad size"),
])
def test_a_sealed_file_whose_content_is_wrong_is_refused(
        tmp_path: Path, rows: list[tuple[bytes, bytes]], header: dict[str, Any], reason: str) -> None:
    path = _write(tmp_path / "b.bk", rows, **header)
    with pytest.raises(BackupError, match=reason.replace("[", r"\[")):
        verify(path)


def test_a_header_that_lacks_a_field_cannot_be_written(tmp_path: Path) -> None:
    header = {k: v for k, v in HEADER.items() if k != "keys"}
    with pytest.raises(BackupError, match="keys"):
        BackupWriter(tmp_path / "b.bk", header)
    assert list(tmp_path.iterdir()) == []


def test_other_files_are_named_for_what_they_are(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n" * 20)
    with pytest.raises(BackupError, match="not a raftkv backup"):
        verify(other)
    with pytest.raises(BackupError, match="cannot read"):
        verify(tmp_path / "missing.bk")
    future = tmp_path / "future.bk"
    payload = msgpack.packb({**HEADER, "format": 99})
    future.write_bytes(MAGIC + len(payload).to_bytes(4, "big") + payload + b"\0" * 64)
    with pytest.raises(BackupError, match="format 99"):
        verify(future)
