"""The read-only view of durable state that the core needs (etcd-io/raft storage.go).

The core never writes to storage: the caller persists what a Ready hands it and
then the storage answers for it. `MemoryStorage` is the in-process twin used by
tests and the simulator; the daemon's LMDB store implements the same protocol.
"""

from __future__ import annotations

from typing import Protocol

from .messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class StorageError(Exception):
    pass


class CompactedError(StorageError):
    """The requested index is older than the last snapshot."""


class UnavailableError(StorageError):
    """The requested index is past the last stored entry."""


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int: ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """Keep a prefix within `max_bytes`, but always at least one entry so progress is made."""
    if max_bytes is None or not entries:
        return entries
    total = 0
    for i, entry in enumerate(entries):
        total += entry.size()
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries


class MemoryStorage:
    """Storage in memory. `ents[0]` is a dummy entry at the snapshot index, so that
    `term(first_index - 1)` still answers after compaction."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.conf_state = ConfState()
        self.snap = Snapshot()
        self.ents: list[Entry] = [Entry(0, 0)]

    # --- the Storage protocol -------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.conf_state

    def first_index(self) -> int:
        return self.ents[0].index + 1

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def term(self, index: int) -> int:
        offset = self.ents[0].index
        if index < offset:
            raise CompactedError(index)
        if index - offset >= len(self.ents):
            raise UnavailableError(index)
        return self.ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self.ents[0].index
        if lo <= offset:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        return limit_size(self.ents[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self.snap

    # --- writes, done by the owner after a Ready -----------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def set_conf_state(self, conf: ConfState) -> None:
        """Record the membership as of the applied index (the owner applies conf changes)."""
        self.conf_state = conf

    def append(self, entries: list[Entry]) -> None:
        """Append, truncating any conflicting suffix first (the caller's log tail may be overwritten)."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self.ents[0].index
        del self.ents[offset:]
        self.ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.meta.index <= self.snap.meta.index:
            return
        self.snap = snap
        self.conf_state = snap.meta.conf
        self.ents = [Entry(snap.meta.index, snap.meta.term)]

    def compact(self, index: int, conf: ConfState, data: bytes = b"") -> None:
        """Drop entries up to `index` and record a snapshot of the application at that index."""
        offset = self.ents[0].index
        if index <= offset or index > self.last_index():
            return
        term = self.ents[index - offset].term
        self.snap = Snapshot(SnapshotMeta(index, term, conf), data)
        self.ents = [Entry(index, term)] + self.ents[index - offset + 1 :]
