"""The Raft log and hard state in LMDB: the durable twin of raftkvd.raft.MemoryStorage.

The log keeps a dummy (index, term) at the compaction point, as MemoryStorage keeps
`ents[0]`, so that `term(first_index - 1)` still answers after compaction (the
consistency check of AppendEntries needs the term of the entry before the first sent).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

import lmdb
import msgpack

from ..errors import StorageCorruptError
from ..raft.messages import ConfState, Entry, EntryType, HardState, Snapshot
from ..raft.storage import CompactedError, UnavailableError, limit_size
from .lmdbenv import LOG, RAFT_META, Batch, LmdbEnv

_INDEX = struct.Struct(">Q")
_HARD_STATE = b"hard_state"
_COMPACTED = b"compacted"
RECENT_ENTRIES = 4096


class AppState(Protocol):
    """What the log needs from the application (the state machine), injected by the node.

    Snapshots are images of the applied state, not of the log, so they come from there.
    """

    def conf_state(self) -> ConfState: ...

    def snapshot(self) -> Snapshot: ...


@dataclass(frozen=True, slots=True)
class _Bounds:
    """The cheap facts the core asks for on every step, cached between writes."""

    snap_index: int
    snap_term: int
    last_index: int
    last_term: int


def _key(index: int) -> bytes:
    return _INDEX.pack(index)


def _encode_entry(entry: Entry) -> bytes:
    return msgpack.packb([entry.term, int(entry.type), entry.data])


def _decode_entry(key: bytes, value: bytes) -> Entry:
    term, kind, data = msgpack.unpackb(value)
    return Entry(_INDEX.unpack(key)[0], term, EntryType(kind), data)


class LogStore:
    """Implements the core's `Storage` protocol; writes go through `save` and `compact`."""

    def __init__(self, env: LmdbEnv, app: AppState) -> None:
        self._env = env
        self._app = app
        self._log = env.db(LOG)
        self._meta = env.db(RAFT_META)
        self._recent: list[Entry] = []
        """The newest entries, contiguous up to the last index: the leader sends and applies
        these right after writing them, so they are served without an LMDB read and decode."""
        with env.read() as txn:
            self._bounds = self._read_bounds(txn)

    # --- the Storage protocol -------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        with self._env.read() as txn:
            raw = txn.get(_HARD_STATE, db=self._meta)
        hard_state = HardState(*msgpack.unpackb(raw)) if raw else HardState()
        return hard_state, self._app.conf_state()

    def first_index(self) -> int:
        return self._bounds.snap_index + 1

    def last_index(self) -> int:
        return self._bounds.last_index

    def term(self, index: int) -> int:
        b = self._bounds
        if index < b.snap_index:
            raise CompactedError(index)
        if index > b.last_index:
            raise UnavailableError(index)
        if index == b.snap_index:
            return b.snap_term
        if index == b.last_index:
            return b.last_term
        recent = self._recent
        if recent and index >= recent[0].index:
            return recent[index - recent[0].index].term
        with self._env.read() as txn:
            return self._entry(txn, index).term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), a prefix within `max_bytes` but at least one (limit_size rule)."""
        if lo <= self._bounds.snap_index:
            raise CompactedError(lo)
        if hi > self._bounds.last_index + 1:
            raise UnavailableError(hi)
        out: list[Entry] = []
        if lo >= hi:
            return out
        recent = self._recent
        if recent and lo >= recent[0].index:
            start = recent[0].index
            return limit_size(recent[lo - start : hi - start], max_bytes)
        total = 0
        with self._env.read() as txn:
            cursor = txn.cursor(db=self._log)
            if not cursor.set_key(_key(lo)):
                raise StorageCorruptError(f"log entry {lo} missing")
            for key, value in cursor.iternext():
                entry = _decode_entry(key, value)
                if entry.index >= hi:
                    break
                total += entry.size()
                if out and max_bytes is not None and total > max_bytes:
                    break
                out.append(entry)
        return out

    def snapshot(self) -> Snapshot:
        """The current applied image (a full dump: call only to send a snapshot)."""
        return self._app.snapshot()

    # --- writes, done by the driver (server/driver.py) after a Ready ----------
    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None = None,
        batch: Batch | None = None,
    ) -> None:
        """Persist one Ready's snapshot meta, entries and hard state in one transaction.

        Pass `batch` to share it with the state machine's restore of the same snapshot.
        """
        with self._env.join(batch) as b:
            if snapshot is not None and not snapshot.is_empty():
                self._apply_snapshot(b.txn, snapshot)
                b.on_commit(self._recent.clear)
            if entries:
                self._append(b.txn, entries)
                b.on_commit(lambda: self._remember(entries))
            if hard_state is not None:
                value = [hard_state.term, hard_state.vote, hard_state.commit]
                b.txn.put(_HARD_STATE, msgpack.packb(value), db=self._meta)
            self._refresh_on_commit(b)

    def compact(self, index: int, batch: Batch | None = None) -> None:
        """Drop entries up to `index`, keeping (index, term) as the dummy entry.

        `index` must not exceed the applied index: snapshots describe the applied state,
        and a follower behind the compaction point needs one that covers it.
        """
        with self._env.join(batch) as b:
            bounds = self._read_bounds(b.txn)
            if index <= bounds.snap_index or index > bounds.last_index:
                return
            term = self._entry(b.txn, index).term
            self._delete_from(b.txn, bounds.snap_index + 1, stop=index + 1)
            b.txn.put(_COMPACTED, msgpack.packb([index, term]), db=self._meta)
            self._refresh_on_commit(b)

    # --- helpers ----------------------------------------------------------------
    def _apply_snapshot(self, txn: lmdb.Transaction, snapshot: Snapshot) -> None:
        """A newer snapshot replaces the whole log with its dummy entry (thesis §5.1)."""
        if snapshot.meta.index <= self._read_bounds(txn).snap_index:
            return
        txn.drop(self._log, delete=False)
        meta = [snapshot.meta.index, snapshot.meta.term]
        txn.put(_COMPACTED, msgpack.packb(meta), db=self._meta)

    def _append(self, txn: lmdb.Transaction, entries: list[Entry]) -> None:
        """Append, truncating any conflicting suffix first (Figure 2, AppendEntries step 3)."""
        bounds = self._read_bounds(txn)
        first = bounds.snap_index + 1
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        if entries[0].index > bounds.last_index + 1:
            raise ValueError(f"log gap: last={bounds.last_index} append={entries[0].index}")
        self._delete_from(txn, entries[0].index)
        for entry in entries:
            txn.put(_key(entry.index), _encode_entry(entry), db=self._log)

    def _delete_from(self, txn: lmdb.Transaction, start: int, stop: int | None = None) -> None:
        """Delete entries [start, stop), or from `start` to the end of the log."""
        stop_key = _key(stop) if stop is not None else None
        cursor = txn.cursor(db=self._log)
        cursor.set_range(_key(start))
        while cursor.key() and (stop_key is None or cursor.key() < stop_key):
            cursor.delete()

    def _entry(self, txn: lmdb.Transaction, index: int) -> Entry:
        key = _key(index)
        value = txn.get(key, db=self._log)
        if value is None:
            raise StorageCorruptError(f"log entry {index} missing")
        return _decode_entry(key, value)

    def _read_bounds(self, txn: lmdb.Transaction) -> _Bounds:
        raw = txn.get(_COMPACTED, db=self._meta)
        snap_index, snap_term = msgpack.unpackb(raw) if raw else (0, 0)
        cursor = txn.cursor(db=self._log)
        if not cursor.last():
            return _Bounds(snap_index, snap_term, snap_index, snap_term)
        last = _decode_entry(cursor.key(), cursor.value())
        return _Bounds(snap_index, snap_term, last.index, last.term)

    def _remember(self, entries: list[Entry]) -> None:
        recent = self._recent
        first = self._bounds.snap_index + 1
        if recent and recent[0].index <= entries[0].index <= recent[-1].index + 1:
            del recent[entries[0].index - recent[0].index :]
            recent.extend(entries)
        else:
            recent[:] = entries
        drop = max(len(recent) - RECENT_ENTRIES, first - recent[0].index, 0)
        del recent[:drop]

    def _refresh_on_commit(self, batch: Batch) -> None:
        """Cache what this transaction wrote, but only once it is durable."""
        bounds = self._read_bounds(batch.txn)

        def refresh() -> None:
            self._bounds = bounds

        batch.on_commit(refresh)
