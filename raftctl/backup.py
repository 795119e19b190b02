"""`raftctl snapshot save` and `snapshot status`: a backup of the whole store to a file, and
what a backup file holds (the format: raftkv/backupfile.py).

The leader opens a consistent view at its applied index; this side asks for one chunk at a
time and writes it through, so memory stays at one chunk whatever the store's size. The file
appears only once complete and checked: the rows counted against the header's key count,
their digest against the node's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftctl.client import Client
from raftctl.errors import RaftCtlError, Unavailable, UsageError
from raftkv.backupfile import BackupError, BackupInfo, BackupWriter, verify

Progress = Callable[[int, int], None]
"""Told (rows so far, rows in all)."""


class BackupDamaged(RaftCtlError):
    """A backup file that fails its checks: the check failed (exit 1), as a compare does."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Saved:
    path: Path
    info: BackupInfo

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "index": self.info.index, "term": self.info.term,
                "keys": self.info.keys, "bytes": self.info.size, "sha256": self.info.sha256}


def save(client: Client, path: Path, progress: Progress | None = None) -> Saved:
    """Stream a backup from the leader into `path` (replaced atomically once complete)."""
    _check_target(path)
    endpoint, opened = client.backup_open()
    header = opened["header"]
    digest = hashlib.sha256()
    rows = 0
    with BackupWriter(path, header) as writer:
        seq = 0
        while True:
            chunk = client.backup_read(endpoint, opened["stream"], seq)
            data = chunk.get("data")
            if chunk.get("seq") != seq or not isinstance(data, bytes):
                raise Unavailable(f"node {endpoint} answered chunk {seq} with something else")
            writer.rows(data)
            digest.update(data)
            rows += int(chunk.get("rows", 0))
            if progress is not None:
                progress(rows, header["keys"])
            if chunk.get("done"):
                break
            seq += 1
        if chunk.get("sha256") != digest.hexdigest() or rows != header["keys"]:
            raise Unavailable(f"the backup from {endpoint} arrived damaged ({rows} rows of "
                              f"{header['keys']}); nothing was written, try again")
        info = writer.commit()
    return Saved(path, info)


def describe(path: Path, progress: Progress | None = None) -> BackupInfo:
    """The file's header and size once every check holds; BackupDamaged otherwise."""
    try:
        return verify(path, progress)
    except BackupError as exc:
        if not path.exists():
            raise UsageError(f"no such file: {path}") from None
        raise BackupDamaged(f"{exc}") from None


def _check_target(path: Path) -> None:
    """Fail before the cluster does any work when the file could not be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name")
    if not parent.is_dir():
        raise UsageError(f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write into {parent}")
