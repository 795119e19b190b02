"""The Raft log: durable entries in storage plus an unstable in-memory tail (etcd log.go).

Entries enter the unstable tail when appended; the driver persists them from a Ready
and `stable_to` then drops them from the tail. Terms of any index still present,
stable or not, answer through `term`.
"""

from __future__ import annotations

from .messages import Entry, Snapshot
from .storage import CompactedError, Storage, UnavailableError, limit_size


class RaftLogError(Exception):
    """An invariant of the log was about to be broken: a bug, never an input error."""


class Unstable:
    """Entries (and possibly a snapshot) not yet persisted; `offset` is the first entry's index."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.entries: list[Entry] = []
        self.snapshot: Snapshot | None = None

    def last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def term(self, index: int) -> int | None:
        if self.offset <= index < self.offset + len(self.entries):
            return self.entries[index - self.offset].term
        if self.snapshot is not None and index == self.snapshot.meta.index:
            return self.snapshot.meta.term
        return None

    def stable_to(self, index: int, term: int) -> None:
        if self.term(index) == term and index >= self.offset:
            self.entries = self.entries[index + 1 - self.offset :]
            self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.meta.index + 1
        self.entries = []
        self.snapshot = snapshot

    def truncate_and_append(self, entries: list[Entry]) -> None:
        after = entries[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif after <= self.offset:
            # Replaces everything unstable; storage truncates its own suffix when it persists these.
            self.offset = after
            self.entries = list(entries)
        else:
            self.entries = self.entries[: after - self.offset] + list(entries)


class RaftLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first, last = storage.first_index(), storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1

    # --- indexes and terms ------------------------------------------------------
    def first_index(self) -> int:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        last = self.unstable.last_index()
        return last if last is not None else self.storage.last_index()

    def term(self, index: int) -> int | None:
        """The term at `index`, or None when it is compacted away or not yet written."""
        if index < self.first_index() - 1 or index > self.last_index():
            return None
        term = self.unstable.term(index)
        if term is not None:
            return term
        try:
            return self.storage.term(index)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        return self.term(self.last_index()) or 0

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        last_term = self.last_term()
        return term > last_term or (term == last_term and last_index >= self.last_index())

    # --- reading entries -----------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi); raises CompactedError when lo is gone."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(lo)
        offset = self.unstable.offset
        out: list[Entry] = []
        if lo < offset:
            out = self.storage.entries(lo, min(hi, offset), max_bytes)
            if len(out) < min(hi, offset) - lo:
                return out  # the byte limit cut the stable part short
        if hi > offset:
            start = max(lo, offset)
            out = out + self.unstable.entries[start - offset : hi - offset]
        return limit_size(out, max_bytes)

    def entries_from(self, lo: int, max_bytes: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_bytes)

    def next_committed_entries(self, max_bytes: int | None) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        return self.slice(lo, self.committed + 1, max_bytes)

    def has_next_committed_entries(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    # --- changing the log ---------------------------------------------------------
    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """The first index whose term differs from ours (0 when all match)."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`: where logs may first agree."""
        while index > 0:
            our_term = self.term(index)
            if our_term is None or our_term <= term:
                return index, our_term or 0
            index -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """The AppendEntries consistency check (§5.3); returns the last new index or None."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise RaftLogError(f"conflict at {conflict} with committed {self.committed}")
            self.append(list(entries[conflict - index - 1 :]))
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, entries: list[Entry]) -> int:
        if entries:
            if entries[0].index - 1 < self.committed:
                raise RaftLogError(f"append at {entries[0].index} below commit {self.committed}")
            self.unstable.truncate_and_append(entries)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise RaftLogError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit by counting replicas only for entries of the current term (§5.4.2, Figure 8)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index:
            if index > self.committed or index < self.applied:
                raise RaftLogError(f"applied {index} outside [{self.applied}, {self.committed}]")
            self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snapshot: Snapshot) -> None:
        self.committed = snapshot.meta.index
        self.unstable.restore(snapshot)
