"""Zeroed room at the end of the LMDB file, written ahead of need.

A commit that extends the file must also make the new size and blocks durable, so its
fdatasync commits the filesystem journal too; a commit that overwrites blocks already in the
file does not. On this project's disk that is 20-30 % of a commit's time under the load of
three nodes (docs/perf.md). So the file grows by whole chunks of zeros, ahead of LMDB's
last page, as etcd's WAL preallocates its segment files.

Safe because the zeros go only beyond the last page LMDB has handed out (no meta page refers
to anything there), and only while the caller holds a write transaction: LMDB's writer lock,
so no commit is writing pages at the same time.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK_BYTES = 2 << 20
"""Grown at once: ~3 ms of writing here, once per 2 MiB the store grows."""
LOW_WATER_BYTES = 1 << 20
"""Grow when less room than this is left: far more than one Ready's new pages."""
_PIECE = b"\0" * (1 << 20)


class Preallocator:
    """Keeps the data file at least LOW_WATER_BYTES longer than LMDB's used pages."""

    def __init__(self, data_file: Path, chunk: int = CHUNK_BYTES, low_water: int = LOW_WATER_BYTES) -> None:
        self._fd = os.open(data_file, os.O_WRONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size
        self._chunk = chunk
        self._low_water = low_water
        self._enabled = True

    def ensure_room(self, used: int) -> None:
        """With the writer lock held: grow the file when its end is near `used` bytes."""
        if not self._enabled or self._size - used >= self._low_water:
            return
        start = max(self._size, used)
        try:
            for offset in range(start, start + self._chunk, len(_PIECE)):
                os.pwrite(self._fd, _PIECE, offset)
            os.fdatasync(self._fd)
        except OSError as exc:
            # A full disk: give the room back (nothing of LMDB's lies there) and let commits
            # extend the file themselves; the store's own space checks take it from here.
            os.ftruncate(self._fd, start)
            self._size = start
            self._enabled = False
            log.warning("event=preallocation_stopped error=%s", exc)
            return
        self._size = start + self._chunk

    def close(self) -> None:
        """Idempotent, like closing the LMDB environment."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
