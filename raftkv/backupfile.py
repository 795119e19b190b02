"""The backup file of `raftctl snapshot save` (SPEC §3, §4): written by raftctl, checked by
`raftctl snapshot status`, read back by `raftkvd restore`.

Layout:
    MAGIC
    4-byte big-endian length, then the header: a msgpack map (HEADER_FIELDS)
    the rows: msgpack [key, row] pairs of bytes, in strictly increasing key order; `row` is
        the node's stored record of the key, msgpack [value, create_revision, mod_revision]
    TRAILER_MAGIC, then the sha256 of every byte before TRAILER_MAGIC

A file is only ever used whole: `verify` reads it to the end, checks the digest, the order,
the shape of every row and the key count before anyone writes a byte from it, so a
truncated file (no trailer) or a flipped bit (digest) is refused, never half-restored. The
writer makes the file appear atomically: a temporary file beside it, fsync, rename.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import msgpack

from .protocol import MAX_KEY_BYTES

MAGIC = b"RAFTKV-BACKUP\n"
TRAILER_MAGIC = b"RAFTKV-END\n"
FORMAT_VERSION = 1
DIGEST_BYTES = 32
MAX_HEADER_BYTES = 16 * 1024 * 1024
READ_CHUNK = 1024 * 1024
MAX_ROW_BYTES = 80 * 1024 * 1024
"""A row holds at most a 64 MiB value (the config's ceiling), its key and framing."""
_LENGTH = struct.Struct(">I")
_TRAILER_BYTES = len(TRAILER_MAGIC) + DIGEST_BYTES
HEADER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "index": int,
    "term": int,
    "revision": int,
    "keys": int,
    "voters": list,
    "learners": list,
    "members": dict,
    "node_id": int,
    "created": (int, float),
}
"""What a backup says about itself: the committed index and term of the state it holds,
the store's revision and key count there, the membership then, the node that served it."""

Row = tuple[bytes, bytes]


class BackupError(ValueError):
    """The file is not a whole, intact raftkv backup; `str()` is one line for the user."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    header: dict[str, Any]
    size: int
    sha256: str
    """Of the whole file, as `sha256sum` prints it."""

    @property
    def index(self) -> int:
        return int(self.header["index"])

    @property
    def term(self) -> int:
        return int(self.header["term"])

    @property
    def keys(self) -> int:
        return int(self.header["keys"])


def check_header(header: Any) -> dict[str, Any]:
    """`header` if it has every field with the right type, else BackupError."""
    if not isinstance(header, dict):
        raise BackupError("the header is not a map")
    if header.get("format") != FORMAT_VERSION:
        raise BackupError(f"backup format {header.get('format')!r} is not supported "
                          f"(this version reads format {FORMAT_VERSION})")
    for name, kind in HEADER_FIELDS.items():
        value = header.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BackupError(f"the header's {name} is missing or malformed")
    return header


class BackupWriter:
    """Writes one backup file: `rows` as they stream in, then `commit` (or nothing appears)."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = check_header({"format": FORMAT_VERSION, **header})
        payload = msgpack.packb(self.header)
        self._digest = hashlib.sha256()
        self._whole = hashlib.sha256()
        self.size = 0
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._tmp = Path(tmp)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._committed = False
        self._write(MAGIC + _LENGTH.pack(len(payload)) + payload)

    def rows(self, data: bytes) -> None:
        """Append packed rows (a node's chunk, written as it came)."""
        self._write(data)

    def commit(self) -> BackupInfo:
        """Seal the file and make it appear under its name, durably."""
        trailer = TRAILER_MAGIC + self._digest.digest()
        self._file.write(trailer)
        self._whole.update(trailer)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        self._committed = True
        fsync_dir(self.path.parent)
        return BackupInfo(self.header, self.size + len(trailer), self._whole.hexdigest())

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self._whole.update(data)
        self.size += len(data)

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._committed:
            self.abort()


class BackupReader:
    """One pass over a backup file: `rows()` yields its rows and, once it has checked the
    trailer, the digest and the key count, leaves `info` set. Until then nothing is known
    good: a reader that writes rows somewhere must only keep them once `info` is set."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] | None = None
        self.info: BackupInfo | None = None

    def rows(self, progress: Callable[[int, int], None] | None = None) -> Iterator[Row]:
        """`progress(rows, keys)` is told after each chunk read."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below; the generator pauses
        except OSError as exc:
            raise BackupError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with handle:
            yield from self._read(handle, progress)

    def _read(self, handle: BinaryIO, progress: Callable[[int, int], None] | None) -> Iterator[Row]:
        name = str(self.path)
        size = os.fstat(handle.fileno()).st_size
        whole, digest = hashlib.sha256(), hashlib.sha256()
        header, body_len = self._header(handle, size, whole, digest)
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_ROW_BYTES + 2 * READ_CHUNK)
        previous, count, left = b"", 0, body_len
        while left > 0:
            chunk = handle.read(min(READ_CHUNK, left))
            if not chunk:
                raise BackupError(f"{name} is truncated")
            left -= len(chunk)
            whole.update(chunk)
            digest.update(chunk)
            unpacker.feed(chunk)
            try:
                for item in unpacker:
                    previous = _check_row(item, previous)
                    count += 1
                    yield previous, item[1]
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise BackupError(f"{name}: row {count + 1} is damaged ({exc})") from None
            if progress is not None:
                progress(count, header["keys"])
        trailer = handle.read(_TRAILER_BYTES)
        whole.update(trailer)
        if not trailer.startswith(TRAILER_MAGIC):
            raise BackupError(f"{name} is truncated (no end marker)")
        if trailer[len(TRAILER_MAGIC):] != digest.digest():
            raise BackupError(f"{name} is damaged: its checksum does not match")
        if unpacker.tell() != body_len:
            raise BackupError(f"{name}: the last row is cut short")
        if count != header["keys"]:
            raise BackupError(f"{name}: the header promises {header['keys']} keys, the file holds {count}")
        self.info = BackupInfo(header, size, whole.hexdigest())

    def _header(self, handle: BinaryIO, size: int, *digests: Any) -> tuple[dict[str, Any], int]:
        """The checked header, and how many bytes of rows follow it."""
        name = str(self.path)
        start = handle.read(len(MAGIC) + _LENGTH.size)
        if not start.startswith(MAGIC):
            raise BackupError(f"{name} is not a raftkv backup")
        if len(start) < len(MAGIC) + _LENGTH.size:
            raise BackupError(f"{name} is truncated")
        (header_len,) = _LENGTH.unpack(start[len(MAGIC):])
        body_start = len(start) + header_len
        if header_len > MAX_HEADER_BYTES or body_start + _TRAILER_BYTES > size:
            raise BackupError(f"{name} is truncated")
        raw = handle.read(header_len)
        for digest in digests:
            digest.update(start)
            digest.update(raw)
        try:
            self.header = check_header(msgpack.unpackb(raw))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise BackupError(f"{name}: the header is damaged ({exc})") from None
        return self.header, size - body_start - _TRAILER_BYTES


def verify(path: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> BackupInfo:
    """Read the whole file and check everything (module docstring); its info, or BackupError."""
    reader = BackupReader(path)
    for _ in reader.rows(progress):
        pass
    assert reader.info is not None
    return reader.info


def _check_row(item: Any, previous: bytes) -> bytes:
    """The row's key, if the row is well-formed and its key follows `previous`."""
    if not (isinstance(item, list) and len(item) == 2 and all(type(x) is bytes for x in item)):
        raise ValueError("not a [key, row] pair")
    key, row = item
    if not 1 <= len(key) <= MAX_KEY_BYTES or key <= previous:
        raise ValueError("keys out of order or of a bad size")
    record = msgpack.unpackb(row)
    if not (isinstance(record, list) and len(record) == 3 and isinstance(record[0], str)
            and all(type(x) is int for x in record[1:])):
        raise ValueError("a row is not [value, create_revision, mod_revision]")
    return key


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` itself durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
