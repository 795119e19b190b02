"""The floor of one replicated write on this machine: the fewest steps a 3-node write can
take with our parts (pyzmq between Python processes, LMDB on the shared disk), and no Raft,
no state machine and no HTTP in the way.

    python -m tests.bench.write_floor [--writes 2000] [--rounds 3] [--compare]

One client sends sequential writes of 100 bytes to a "leader" process. The leader sends each
to two "follower" processes, commits it to its own LMDB file, waits for the first follower's
acknowledgement (each follower commits before it answers), answers the client, then commits
an "apply" of it, as raftkvd does for one write at a time. Shapes, interleaved round by round:

- flushes 2: every commit as raftkvd's durable write (data pages flushed, then the meta page
  flushed: `raftkvd/storage/lmdbenv.py`); the apply as raftkvd's (data flush only);
- flushes 1: every commit with the data flush only: what a log with one flush per write
  (etcd's WAL) would cost; not durable with LMDB, measured only to price the second flush;
- flushes 0: nothing flushed: the cost of the hops alone;
- each with and without a relay process between client and leader, a Python loop that
  forwards both ways as the HTTP process does (without parsing HTTP; `make budget` prices
  that at ~0.1 ms).

With --compare the same run also measures etcd and raftkv at one connection (wrk -c1 of
`make bench-compare`) and prints them beside the floors. Prints the median of each shape's
per-round p50 and p90, in ms.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import zmq

from raftkvd.storage.prealloc import Preallocator

HOST = "127.0.0.1"
MAP_SIZE = 1 << 30
VALUE = b"v" * 100
WARMUP = 100
START_TIMEOUT_MS = 10_000


class Disk:
    """One LMDB file, committed the way the shape asks (see the module docstring)."""

    def __init__(self, path: str, flushes: int) -> None:
        self.env = lmdb.open(path, map_size=MAP_SIZE, sync=flushes > 0, metasync=False, max_dbs=2)
        self.log = self.env.open_db(b"log")
        self.kv = self.env.open_db(b"kv")
        self.flushes = flushes
        self.room = Preallocator(Path(path) / "data.mdb")

    def commit(self, key: bytes, value: bytes, apply: bool = False) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key, value, db=self.kv if apply else self.log)
            self.room.ensure_room((self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"])
        if self.flushes == 2 and not apply:
            self.env.sync(True)


def follower(port: int, path: str, flushes: int) -> None:
    disk = Disk(path, flushes)
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(f"tcp://{HOST}:{port}")
    while True:
        ident, seq, value = sock.recv_multipart()
        disk.commit(seq, value)
        sock.send_multipart([ident, seq])


def leader(port: int, path: str, flushes: int, peers: list[int]) -> None:
    disk = Disk(path, flushes)
    ctx = zmq.Context.instance()
    front = ctx.socket(zmq.ROUTER)
    front.bind(f"tcp://{HOST}:{port}")
    links = []
    for peer in peers:
        link = ctx.socket(zmq.DEALER)
        link.connect(f"tcp://{HOST}:{peer}")
        links.append(link)
    poller = zmq.Poller()
    for link in links:
        poller.register(link, zmq.POLLIN)
    while True:
        *route, seq, value = front.recv_multipart()  # route: the client's (and the relay's) id
        for link in links:  # replication leaves before the leader's own write (thesis §10.2.1)
            link.send_multipart([seq, value])
        disk.commit(seq, value)
        acked = False
        while not acked:
            for link, _ in poller.poll():
                acked |= link.recv_multipart()[0] == seq  # the slower follower's older acks drop here
        front.send_multipart([*route, seq])
        disk.commit(seq, value, apply=True)


def relay(port: int, target: int) -> None:
    ctx = zmq.Context.instance()
    front = ctx.socket(zmq.ROUTER)
    front.bind(f"tcp://{HOST}:{port}")
    back = ctx.socket(zmq.DEALER)
    back.connect(f"tcp://{HOST}:{target}")
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            if sock is front:
                back.send_multipart(front.recv_multipart())
            else:
                front.send_multipart(back.recv_multipart())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def spawn(*args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.bench.write_floor", *map(str, args)],
                            stdin=subprocess.DEVNULL)


def one_shape(root: Path, flushes: int, relayed: bool, writes: int) -> tuple[float, float]:
    """Start the processes of one shape, time `writes` sequential writes, stop them."""
    ports = [free_port() for _ in range(4)]
    procs = [spawn("--role", "follower", "--port", ports[i], "--dir", root / f"f{i}", "--flushes", flushes)
             for i in (1, 2)]
    procs.append(spawn("--role", "leader", "--port", ports[0], "--dir", root / "leader", "--flushes",
                       flushes, "--peers", f"{ports[1]},{ports[2]}"))
    if relayed:
        procs.append(spawn("--role", "relay", "--port", ports[3], "--peers", ports[0]))
    try:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://{HOST}:{ports[3] if relayed else ports[0]}")
        times = []
        for n in range(WARMUP + writes):
            seq = struct.pack(">Q", n + 1)
            started = time.perf_counter()
            sock.send_multipart([seq, VALUE])
            if not sock.poll(START_TIMEOUT_MS if n == 0 else 5_000):
                raise RuntimeError(f"no answer to write {n} (flushes {flushes}, relay {relayed})")
            sock.recv_multipart()
            times.append(time.perf_counter() - started)
        sock.close()
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        for sub in root.iterdir():
            shutil.rmtree(sub, ignore_errors=True)
    measured = sorted(times[WARMUP:])
    return 1000 * measured[len(measured) // 2], 1000 * measured[len(measured) * 9 // 10]


def compared() -> dict[str, float]:
    """raftkv's and etcd's 1-connection REST write p50, as `make bench-compare` measures it."""
    from tests.bench import compare

    compare.ensure_etcd()
    found = {}
    for maker in (compare.Etcd, compare.Raftkv):
        root = Path(tempfile.mkdtemp(prefix="write-floor-cmp-"))
        system = maker(root)
        try:
            system.start()
            found[system.name] = compare.measured(system, "put", 1, 10)["p50_ms"]
        finally:
            system.stop()
            shutil.rmtree(root, ignore_errors=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["follower", "leader", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--flushes", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--peers", default="", help=argparse.SUPPRESS)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", action="store_true", help="also etcd and raftkv at wrk -c1")
    args = parser.parse_args()
    peers = [int(p) for p in args.peers.split(",") if p]
    if args.role == "follower":
        return follower(args.port, args.dir, args.flushes)
    if args.role == "leader":
        return leader(args.port, args.dir, args.flushes, peers)
    if args.role == "relay":
        return relay(args.port, peers[0])
    shapes = [(flushes, relayed) for flushes in (2, 1, 0) for relayed in (False, True)]
    samples: dict[tuple[int, bool], list[tuple[float, float]]] = {shape: [] for shape in shapes}
    root = Path(tempfile.mkdtemp(prefix="write-floor-"))
    try:
        for number in range(args.rounds):
            for shape in shapes if number % 2 == 0 else reversed(shapes):
                samples[shape].append(one_shape(root, *shape, args.writes))
                p50, p90 = samples[shape][-1]
                print(f"round {number + 1}: flushes {shape[0]}, relay {shape[1]!s:5}: "
                      f"p50 {p50:.3f} ms, p90 {p90:.3f} ms", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'shape':44} {'p50 ms':>8} {'p90 ms':>8}")
    for (flushes, relayed), runs in samples.items():
        plural = "es" if flushes != 1 else ""
        name = f"{flushes} flush{plural} per commit, {'relayed' if relayed else 'direct'}"
        print(f"{name:44} {statistics.median(r[0] for r in runs):8.3f} "
              f"{statistics.median(r[1] for r in runs):8.3f}")
    if args.compare:
        for name, p50 in compared().items():
            print(f"{name + ', REST wrk -c1 (one run)':44} {p50:8.3f}")


if __name__ == "__main__":
    main()
