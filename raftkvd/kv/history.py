"""The event history: every committed change to a key, by revision, for watches (SPEC §4).

Each put and each delete that removed a key takes the next store-wide revision, and its
event (type, key, value) is written under that revision in the same transaction that
applies it, so the history is exactly as durable as the state: a restart loses none of it
and a snapshot image carries it (statemachine.py). Revisions are contiguous, so the oldest
revision held is the first row, and a watch from an older one must be told it was compacted
(etcd's ErrCompacted). The window is a count of revisions, trimmed after every batch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from ..storage.lmdbenv import EVENTS, LmdbEnv

SCAN_LIMIT = 10_000
"""Events looked at per read: a prefix that matches little is still bounded work."""
PUT = "put"
DELETE = "delete"
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Selector:
    """Which keys a watch follows: one key, or every key under a prefix ("" = all)."""

    key: str | None = None
    prefix: str | None = None

    def matches(self, key: str) -> bool:
        if self.key is not None:
            return key == self.key
        return key.startswith(self.prefix or "")


@dataclass(frozen=True, slots=True)
class Page:
    """What one read of the history found."""

    events: list[dict[str, Any]]
    next: int
    """The revision to read from next: one past the last event looked at."""
    compacted: bool = False
    """The asked revision is older than the oldest held (`oldest`): nothing was read."""
    oldest: int = 1


class EventHistory:
    """Owned by the state machine, which calls `record` and `trim` in its apply transaction;
    `read` works in any read transaction, on any node, leader or not."""

    def __init__(self, env: LmdbEnv, window: int) -> None:
        if window < 1:
            raise ValueError("the event history must keep at least one revision")
        self.window = window
        self._db = env.db(EVENTS)

    def record(self, txn: lmdb.Transaction, revision: int, kind: str, key: bytes,
               value: str | None) -> None:
        txn.put(_U64.pack(revision), msgpack.packb([kind, key, value]), db=self._db,
                append=True)

    def trim(self, txn: lmdb.Transaction, revision: int) -> None:
        """Forget the events older than the window ending at `revision`."""
        cutoff = revision - self.window
        cursor = txn.cursor(db=self._db)
        while cursor.first() and _U64.unpack(cursor.key())[0] <= cutoff:
            cursor.delete()

    def oldest(self, txn: lmdb.Transaction, revision: int) -> int:
        """The oldest revision a watch may start from: the first event held, or the next
        revision when none is (a fresh store, or one seeded from a backup)."""
        cursor = txn.cursor(db=self._db)
        return _U64.unpack(cursor.key())[0] if cursor.first() else revision + 1

    def read(self, txn: lmdb.Transaction, start: int, revision: int, selector: Selector,
             limit: int) -> Page:
        """Up to `limit` events from revision `start` on that `selector` matches, among at
        most SCAN_LIMIT looked at; `revision` is the store's current one."""
        oldest = self.oldest(txn, revision)
        if start < oldest:
            return Page([], start, compacted=True, oldest=oldest)
        events: list[dict[str, Any]] = []
        cursor = txn.cursor(db=self._db)
        next_revision = start
        if next_revision > revision or not cursor.set_key(_U64.pack(next_revision)):
            return Page(events, next_revision, oldest=oldest)
        for looked, (raw_revision, raw) in enumerate(cursor.iternext(), 1):
            at = _U64.unpack(raw_revision)[0]
            kind, raw_key, value = msgpack.unpackb(raw)
            key = raw_key.decode()
            next_revision = at + 1
            if selector.matches(key):
                events.append({"type": kind, "key": key, "value": value, "revision": at})
            if len(events) >= limit or looked >= SCAN_LIMIT:
                break
        return Page(events, next_revision, oldest=oldest)
