"""Backups at scale (issue 11's acceptance): 1,000,000 keys saved, restored and joined.

    python -m tests.bench.backup_scale [--keys 1000000]

Writes a backup file of KEYS keys with 100-byte values (the format raftctl writes), restores it
into the 3 nodes of a new cluster with `raftkvd restore` (timed, each), starts them, and runs
`raftctl snapshot save` against them while sampling, every 50 ms, the memory of the leader,
its HTTP process and the raftctl process from /proc/PID/status: resident anonymous memory
(RssAnon: the heap) and resident pages of mapped files (RssFile: LMDB's map, which the kernel
may drop at any time). Then a fourth node is added with `member add` + `--join` and timed
until it is a voter holding every key.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "integration")]

from cluster import RAFTCTL, RAFTKVD, ProcCluster, clean_env, run_cli, wait_for  # noqa: E402

from raftkv.backupfile import BackupWriter  # noqa: E402

VALUE = "v" * 100
ROWS_PER_WRITE = 10_000
FIELDS = ("VmRSS", "RssAnon", "RssFile")


def write_backup(path: Path, keys: int, cluster: ProcCluster) -> None:
    members = {str(i): {"raft": s.raft, "client": s.client, "http": f"127.0.0.1:{s.http_port}"}
               for i, s in cluster.specs.items()}
    writer = BackupWriter(path, {"index": keys + 1, "term": 2, "revision": keys, "keys": keys,
                                 "voters": sorted(cluster.specs), "learners": [], "members": members,
                                 "node_id": 1, "created": time.time()})
    packer = msgpack.Packer()
    for start in range(0, keys, ROWS_PER_WRITE):
        writer.rows(b"".join(packer.pack([f"key{n:08d}".encode(), packer.pack([VALUE, n + 1, n + 1])])
                             for n in range(start, min(keys, start + ROWS_PER_WRITE))))
    writer.commit()


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in FIELDS:
                out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Sampler(threading.Thread):
    """Peak of each memory field per process, every 50 ms, until stopped."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {name: dict.fromkeys(FIELDS, 0) for name in pids}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.pids.items():
                for field, kb in memory_kb(pid).items():
                    self.peak[name][field] = max(self.peak[name][field], kb)
            time.sleep(0.05)


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-backup-scale-") as tmp, \
            ProcCluster(Path(tmp) / "cluster") as cluster:
        source = Path(tmp) / "source.bk"
        began = time.monotonic()
        write_backup(source, args.keys, cluster)
        print(f"backup file of {args.keys:,} keys: {source.stat().st_size / 1e6:.1f} MB, "
              f"written in {time.monotonic() - began:.1f} s")
        for node_id in cluster.ids:
            began = time.monotonic()
            done = run_cli(RAFTKVD, "restore", str(source), "--config", str(cluster.config_path),
                           "--id", str(node_id), timeout=600)
            assert done.returncode == 0, done.stderr
            print(f"raftkvd restore, node {node_id}: {time.monotonic() - began:.1f} s")
        leader = cluster.start_all()
        http = children(cluster.pid(leader))
        time.sleep(1.0)
        idle = {"leader": memory_kb(cluster.pid(leader)), "leader http": memory_kb(http[0])}

        saved = Path(tmp) / "saved.bk"
        client = subprocess.Popen([*RAFTCTL, "-e", ",".join(cluster.endpoints()), "snapshot", "save",
                                   str(saved)], env=clean_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        sampler = Sampler({"leader": cluster.pid(leader), "leader http": http[0], "raftctl": client.pid})
        sampler.start()
        began = time.monotonic()
        out, err = client.communicate(timeout=600)
        took = time.monotonic() - began
        sampler.done.set()
        sampler.join()
        assert client.returncode == 0, err
        print(f"raftctl snapshot save: {saved.stat().st_size / 1e6:.1f} MB in {took:.1f} s")
        print("\n| process | idle RSS (anon + file) MB | peak RSS MB | peak RssAnon MB | peak RssFile MB |")
        print("| --- | --- | --- | --- | --- |")
        for name, peak in sampler.peak.items():
            before = idle.get(name)
            idle_text = (f"{mb(before['VmRSS'])} ({mb(before['RssAnon'])} + {mb(before['RssFile'])})"
                         if before else "-")
            print(f"| {name} | {idle_text} | {mb(peak['VmRSS'])} | {mb(peak['RssAnon'])} | "
                  f"{mb(peak['RssFile'])} |")

        new = cluster.add_spec()
        added = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints([1, 2, 3])), "member", "add",
                        str(new.id), new.raft, new.client, f"127.0.0.1:{new.http_port}")
        assert added.returncode == 0, added.stderr
        began = time.monotonic()
        cluster.start(new.id, join=True)

        def voter_with_every_key() -> bool:
            st = cluster.status(new.id)
            return st is not None and new.id in st["voters"] and st["keys"] == args.keys

        wait_for(f"node {new.id} a voter with every key", voter_with_every_key, 300.0, cluster.describe)
        print(f"\nnode {new.id} joined: a voter holding {args.keys:,} keys "
              f"{time.monotonic() - began:.1f} s after its start")
        os.sync()


if __name__ == "__main__":
    main()
