"""The leader's view of each follower (etcd-io/raft tracker/progress.go, design.md).

PROBE: send one append at a time until the follower's match point is found.
REPLICATE: stream appends optimistically, bounded by an in-flight window.
SNAPSHOT: the follower needs compacted entries; send the snapshot in chunks, nothing else.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from .messages import Snapshot


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each append still unacknowledged, oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._last_indexes: deque[int] = deque()

    def add(self, index: int) -> None:
        self._last_indexes.append(index)

    def free_le(self, index: int) -> None:
        while self._last_indexes and self._last_indexes[0] <= index:
            self._last_indexes.popleft()

    def free_first_one(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def full(self) -> bool:
        return len(self._last_indexes) >= self.capacity

    def count(self) -> int:
        return len(self._last_indexes)

    def reset(self) -> None:
        self._last_indexes.clear()


@dataclass
class SnapshotTransfer:
    """A snapshot being streamed to one follower: resumes from the last acknowledged offset."""

    snapshot: Snapshot
    offset: int = 0
    idle_ticks: int = 0


@dataclass
class Progress:
    match: int
    next: int
    max_inflight: int
    is_learner: bool = False
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    recent_active: bool = False
    pending_snapshot: int = 0
    transfer: SnapshotTransfer | None = None
    inflights: Inflights = field(init=False)

    def __post_init__(self) -> None:
        self.inflights = Inflights(self.max_inflight)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.transfer = None
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """After a snapshot, probing resumes past it; otherwise right after the match point."""
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot.meta.index
        self.transfer = SnapshotTransfer(snapshot)

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`; False when it is stale."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def optimistic_update(self, index: int) -> None:
        self.next = index + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append at `rejected`; False when it is stale (thesis §5.3 backtracking)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        # Never below match + 1: a delayed rejection of an old probe must not undo what the
        # follower has acknowledged (else a snapshot it already covers is sent, forever).
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True
