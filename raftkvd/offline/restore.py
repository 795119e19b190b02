"""`raftkvd restore`: seed a new node's empty data dir from a backup file (SPEC §3).

Every node of a new cluster is restored from the same file, so they all start with the same
state at the backup's index, and with the membership of the cluster file they are started
with. The file is checked whole before anything is written (raftkv/backupfile.py); the data
dir is built beside its final place and renamed into it only once complete and durable, so
a failure at any point leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from raftkv.backupfile import BackupInfo, BackupReader, fsync_dir, verify

from ..errors import RaftKVError
from ..kv.statemachine import KVStateMachine
from ..raft.messages import ConfState, HardState, Snapshot, SnapshotMeta
from ..settings import Settings
from ..storage.lmdbenv import LmdbEnv
from ..storage.logstore import LogStore

Progress = Callable[[int, int], None]


class RestoreError(RaftKVError):
    """Why nothing was restored; one line for the user."""


@dataclass(frozen=True, slots=True)
class Restored:
    data_dir: Path
    info: BackupInfo
    voters: list[int]
    seconds: float


def restore(backup: Path, settings: Settings, progress: Progress | None = None) -> Restored:
    started = time.monotonic()
    target = settings.node.data_dir
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RestoreError(f"data dir {target} is not empty: restore only seeds a new node")
    info = verify(backup, progress)
    members = settings.cluster.addresses()
    conf = ConfState(frozenset(members))
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.parent / f".{target.name}.restoring-{os.getpid()}"
    try:
        with LmdbEnv(building, settings.cluster.map_size_bytes) as env:
            sm = KVStateMachine(env)
            reader = BackupReader(backup)
            sm.load_backup(reader.rows(progress), info.header)
            if reader.info != info:
                raise RestoreError(f"{backup} changed while it was restored")
            sm.force_membership(conf, members)
            seal = Snapshot(SnapshotMeta(info.index, info.term, conf))
            LogStore(env, sm).save(HardState(info.term, 0, info.index), [], seal)
        _move_into_place(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return Restored(target, info, sorted(members), time.monotonic() - started)


def _move_into_place(building: Path, target: Path) -> None:
    """rename(2) replaces an empty directory, and is atomic; the parent's fsync makes it last."""
    os.replace(building, target)
    fsync_dir(target.parent)
