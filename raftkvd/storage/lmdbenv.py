"""One LMDB environment per node: the log, the Raft metadata and the state machine share it
so that a single transaction can make all of them durable together (SPEC §3, §7)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from ..errors import NoSpaceError, StorageCorruptError, StorageError
from .prealloc import Preallocator

DEFAULT_MAP_SIZE = 1 << 30

# Every named database in the file, opened once at start: opening one later would need
# its own write transaction, which deadlocks while another write transaction is open.
LOG = "log"  # 8-byte big-endian index -> msgpack [term, type, data]
RAFT_META = "raft_meta"  # hard state, compaction point
KV = "kv"  # utf-8 key -> msgpack [value, create_revision, mod_revision]
SESSIONS = "sessions"  # session id -> msgpack [seq, result, log index]
SESSION_LRU = "session_lru"  # 8-byte log index of a session's last command -> session id
MEMBERS = "members"  # 8-byte node id -> msgpack {"raft", "client", "http"}
SM_META = "sm_meta"  # applied index/term, revision, counters, membership
EVENTS = "events"  # 8-byte revision -> msgpack [type, key, value] (kv/history.py)
DATABASES = (LOG, RAFT_META, KV, SESSIONS, SESSION_LRU, MEMBERS, SM_META, EVENTS)
MAX_DBS = 16

_CORRUPT = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.PanicError, lmdb.InvalidError)


class Batch:
    """A write transaction plus the in-memory updates that may only happen once it is durable."""

    def __init__(self, txn: lmdb.Transaction) -> None:
        self.txn = txn
        self._after_commit: list[Callable[[], None]] = []

    def on_commit(self, fn: Callable[[], None]) -> None:
        """Run `fn` after the commit succeeds (e.g. refresh a cache); dropped on abort."""
        self._after_commit.append(fn)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn LMDB and OS failures into our hierarchy so callers need not know LMDB."""
    try:
        yield
    except (lmdb.MapFullError, lmdb.DiskError) as exc:
        raise NoSpaceError(f"storage full: {exc}") from exc
    except _CORRUPT as exc:
        raise StorageCorruptError(f"storage corrupt: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise NoSpaceError(f"disk full: {exc}") from exc
        raise
    except lmdb.Error as exc:
        raise StorageError(f"storage error: {exc}") from exc


class LmdbEnv:
    """The node's LMDB file. Every commit flushes its data pages (sync on, writemap off) but
    writes the meta page lazily (metasync off), which LMDB guarantees keeps the file intact:
    an OS crash can at worst undo the newest commits. A durable write (the default) then
    flushes the meta page too, so it survives any crash. Only work that can be redone from
    durable state, such as applying committed entries, may skip that second flush. The file
    keeps zeroed room ahead of the used pages (prealloc.py), so commits overwrite blocks the
    file has rather than grow it."""

    def __init__(self, path: str | Path, map_size: int = DEFAULT_MAP_SIZE) -> None:
        with translate_errors():
            os.makedirs(path, exist_ok=True)
            self.env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=MAX_DBS,
                sync=True,
                metasync=False,
                writemap=False,
                map_async=False,
            )
            self._dbs = {name: self.env.open_db(name.encode()) for name in DATABASES}
            self._page_size = self.env.stat()["psize"]
            self._room = Preallocator(Path(path) / "data.mdb")

    def db(self, name: str) -> lmdb._Database:
        return self._dbs[name]

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[Batch]:
        """One write transaction, committed on success and aborted on any error. With
        `durable`, it is on disk when this returns; without, an OS crash (not a process
        crash) may undo it, one fsync cheaper."""
        with translate_errors():
            batch = Batch(self.env.begin(write=True))
            try:
                yield batch
                self._room.ensure_room(self.used_bytes())
                batch.txn.commit()
            except BaseException:
                batch.txn.abort()
                raise
            if durable:
                self.env.sync(True)
        for fn in batch._after_commit:
            fn()

    @contextmanager
    def join(self, batch: Batch | None) -> Iterator[Batch]:
        """Write inside the caller's batch if given (it commits), else in a batch of our own."""
        if batch is not None:
            yield batch
            return
        with self.write() as own:
            yield own

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A consistent read-only view; works while the map is full."""
        with translate_errors(), self.env.begin() as txn:
            yield txn

    def reader(self) -> lmdb.Transaction:
        """A read transaction the caller keeps (and must `abort`): a consistent view for as long
        as it lives, which writers never wait for (a backup streams from one)."""
        with translate_errors():
            return self.env.begin()

    def used_bytes(self) -> int:
        """High-water mark of the file: how much of the map has ever been handed out."""
        return (self.env.info()["last_pgno"] + 1) * self._page_size

    @property
    def map_size(self) -> int:
        return self.env.info()["map_size"]

    def close(self) -> None:
        self.env.close()
        self._room.close()

    def __enter__(self) -> LmdbEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
