"""What one LMDB commit costs on this disk, with and without preallocated room in the file,
alone and with three writers at once (the three nodes of a local cluster share one disk).

    python -m tests.bench.commit_cost [--commits 800] [--entries 60]

Each writer appends ENTRIES 200-byte log entries and a hard state per transaction, then
commits (data flush) and syncs (meta flush), as a node's durable Ready does. Prints the
median commit and sync times of each writer, in ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import struct
import tempfile
import time
from pathlib import Path

import lmdb

from raftkvd.storage.prealloc import Preallocator

MAP_SIZE = 1 << 30


def writer(path: str, commits: int, entries: int, prealloc: bool, out: multiprocessing.Queue) -> None:
    env = lmdb.open(path, map_size=MAP_SIZE, sync=True, metasync=False, max_dbs=4)
    log, meta = env.open_db(b"log"), env.open_db(b"meta")
    room = Preallocator(Path(path) / "data.mdb") if prealloc else None
    commit_s, sync_s, index = [], [], 0
    for _ in range(commits):
        txn = env.begin(write=True)
        for _ in range(entries):
            index += 1
            txn.put(struct.pack(">Q", index), b"x" * 200, db=log, append=True)
        txn.put(b"hard_state", b"y" * 20, db=meta)
        if room is not None:
            room.ensure_room((env.info()["last_pgno"] + 1) * env.stat()["psize"])
        started = time.perf_counter()
        txn.commit()
        committed = time.perf_counter()
        env.sync(True)
        commit_s.append(committed - started)
        sync_s.append(time.perf_counter() - committed)
    if room is not None:
        room.close()
    env.close()
    out.put((round(1000 * statistics.median(commit_s), 3), round(1000 * statistics.median(sync_s), 3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=800)
    parser.add_argument("--entries", type=int, default=60)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="raftkv-commit-"))
    try:
        measure(root, args.commits, args.entries)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, commits: int, entries: int) -> None:
    """Alternating without and with room, so that a drift of the disk's speed shows."""
    for prealloc in (False, True, False, True):
        for writers in (1, 3):
            out: multiprocessing.Queue = multiprocessing.Queue()
            procs = [multiprocessing.Process(target=writer, args=(
                str(root / f"{prealloc}-{writers}-{n}-{time.monotonic_ns()}"), commits, entries,
                prealloc, out)) for n in range(writers)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            results = [out.get() for _ in procs]
            print(f"preallocated={prealloc!s:5} writers={writers}: commit/sync ms per writer {results}",
                  flush=True)


if __name__ == "__main__":
    main()
