"""`make bench-watch`: many watchers on one node while writes go through the cluster at a
fixed rate (issue 13's acceptance).

    python -m tests.bench.watchers [--watchers 1000] [--rate 1000] [--duration 20]
                                   [--passes 3] [--shared] [--out artifacts/bench-watch.json]

Each pass starts a fresh 3-node cluster on free loopback ports and, on it:
1. writes at RATE/s for DURATION s with no watcher (the baseline): a paced writer process
   (threads of raftctl.Client, each put sent on its schedule), keys w/<n % WATCHERS>/k;
2. opens WATCHERS `GET /watch` streams on one follower from one asyncio process (each on its
   own prefix w/<i>/, or with --shared all on w/) and, once all are open and idle, reads the
   memory of that node and its HTTP process against before: the cost of an idle watcher;
3. writes again the same way, the watchers reading as they come;
4. with 1,000 watchers (the default): the most writes/s the cluster takes (`raftctl bench put`,
   64 native clients, 10,000 keys) without watchers, then with each watching ten of its keys.
Every watcher must receive exactly the writes under its prefix, in revision order. Delivery
latency is a watcher's arrival time minus the writer's acknowledgement of that revision
(CLOCK_MONOTONIC is one clock for every process of the machine; the acknowledgement comes
after the leader committed and applied it, so a follower's event may even come first), and
also minus the time the put was sent. It prints medians over the passes, the write rate and
latency with watchers against without, the CPU of each process, and writes all as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "integration")]

from cluster import RAFTCTL, ProcCluster, run_cli  # noqa: E402

from raftctl import Client  # noqa: E402
from tests.bench.compare import CLK_TCK, children, cpu_ticks, rss_mb  # noqa: E402

WRITER_THREADS = 16
OPEN_TIMEOUT_S = 60.0
OPENING = 64
"""Streams being opened at once."""
DRAIN_S = 5.0
"""How long the watchers read on after the last write."""
BENCH_TOTAL = 10_000
"""Writes of each `raftctl bench put` run (the most writes/s, with and without watchers)."""


# ---- the writer process ---------------------------------------------------------------------
def writer(endpoints: list[str], rate: float, seconds: float, prefixes: int) -> None:
    """Puts at `rate`/s for `seconds`; prints {"writes": [[revision, key, sent,
    acknowledged], ...], "cpu_s": its own CPU time}."""
    total = int(rate * seconds)
    done: list[list[Any]] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.5

    def work(first: int) -> None:
        client = Client(endpoints, timeout=10.0)
        mine = []
        for n in range(first, total, WRITER_THREADS):
            due = start + n / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing: the schedule, not a wait for something
            key = f"w/{n % prefixes}/k"
            sent = time.monotonic()
            revision = client.put(key, f"v{n}")
            mine.append([revision, key, sent, time.monotonic()])
        client.close()
        with lock:
            done.extend(mine)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(WRITER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    json.dump({"writes": sorted(done), "cpu_s": time.process_time()}, sys.stdout)


# ---- the watchers process -------------------------------------------------------------------
async def _watch(port: int, prefix: str, seen: list[list[float]], opened: asyncio.Event,
                 count: list[int], total: int, opening: asyncio.Semaphore) -> None:
    async with opening:  # a storm of opens would be told 503 (forward.MAX_IN_FLIGHT)
        reader, writer_ = await asyncio.open_connection("127.0.0.1", port)
        writer_.write(f"GET /watch?prefix={prefix} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"watch {prefix}: {head[:200]!r}")
    count[0] += 1
    if count[0] == total:
        opened.set()
    while True:
        frame = await reader.readuntil(b"\n\n")
        if frame.startswith(b"id: "):
            seen.append([int(frame[4:frame.index(b"\n")]), time.monotonic()])
        elif frame.startswith(b"event: "):
            raise RuntimeError(f"watch {prefix} ended: {frame[:300]!r}")


def watch_prefix(mode: str, i: int) -> str:
    """Watcher i's prefix: its own (w/<i>/), one for all (w/), or ten keys of `raftctl
    bench put --total 10000` (bench/ then 10 digits: watcher i gets keys 10i..10i+9)."""
    return {"own": f"w/{i}/", "shared": "w/", "bench": f"bench/{i:09d}"}[mode]


async def _watchers(port: int, count: int, mode: str) -> None:
    seen: list[list[list[float]]] = [[] for _ in range(count)]
    opened = asyncio.Event()
    connected = [0]
    opening = asyncio.Semaphore(OPENING)
    tasks = [asyncio.create_task(_watch(port, watch_prefix(mode, i), seen[i], opened,
                                        connected, count, opening)) for i in range(count)]
    waiter = asyncio.create_task(opened.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not opened.is_set():
        raise RuntimeError(f"a watch failed: {[t.exception() for t in tasks if t.done()][:1]}")
    print("open", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
    for task in tasks:
        task.cancel()
    json.dump({"seen": seen, "failed": [str(f) for f in failed[:5]], "cpu_s": time.process_time()},
              sys.stdout)


# ---- the orchestration ----------------------------------------------------------------------
def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.bench.watchers", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Cpu:
    """CPU each process used between start() and stop(), in % of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self._at, self._ticks = time.monotonic(), {n: cpu_ticks(p) for n, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        seconds = time.monotonic() - self._at
        return {n: round(100 * (cpu_ticks(p) - self._ticks[n]) / CLK_TCK / seconds, 1)
                for n, p in self.pids.items()}


def processes(cluster: ProcCluster, viewer: int) -> dict[str, int]:
    leader = cluster.wait_for_leader()
    found = {}
    for node in cluster.ids:
        role = "leader" if node == leader else ("watched follower" if node == viewer else "follower")
        found[role] = cluster.pid(node)
        for child in children(cluster.pid(node)):
            found[f"{role} http"] = child
    return found


def write_phase(cluster: ProcCluster, args: argparse.Namespace, cpu: Cpu) -> dict[str, Any]:
    proc = _spawn("writer", ",".join(cluster.endpoints()), str(args.rate), str(args.duration),
                  str(args.watchers))
    cpu.start()
    out, _ = proc.communicate(timeout=args.duration * 10 + 60)
    usage = cpu.stop()
    result = json.loads(out)
    writes = result["writes"]
    acked = [w[3] for w in writes]
    seconds = max(acked) - min(w[2] for w in writes)
    usage["writer"] = round(100 * result["cpu_s"] / seconds, 1)
    latencies = [(w[3] - w[2]) * 1000 for w in writes]
    return {"writes": writes, "rate": len(writes) / seconds, "cpu": usage,
            "write_p50_ms": percentile(latencies, 0.5), "write_p99_ms": percentile(latencies, 0.99)}


def rss_of(pids: list[int]) -> float:
    return sum(rss_mb(pid) for pid in pids)


class Watchers:
    """The watchers process: opened (all streams answered 200) on entry, stopped on
    `collect`, which returns what each stream saw."""

    def __init__(self, port: int, count: int, mode: str) -> None:
        self.proc = _spawn("watchers", str(port), str(count), mode)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "open":
            self.close()
            raise RuntimeError(f"the watchers did not open: {line!r}")

    def collect(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out, _ = self.proc.communicate(timeout=120)
        return json.loads(out)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def bench_put(cluster: ProcCluster) -> float:
    """`raftctl bench put`: 64 native clients, 10,000 distinct keys; ops/s."""
    result = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints()), "-o", "json", "bench", "put",
                     "--clients", "64", "--total", str(BENCH_TOTAL), "--value-size", "100",
                     timeout=600)
    return float(json.loads(result.stdout)["ops_per_sec"])


def max_rate(cluster: ProcCluster, port: int, count: int) -> dict[str, Any]:
    """The most writes the cluster takes (bench_put) with no watcher, then with `count`
    watchers of ten of its keys each; each watcher must see exactly the writes of its keys."""
    without = bench_put(cluster)
    watchers = Watchers(port, count, "bench")
    try:
        with_ = bench_put(cluster)
        time.sleep(DRAIN_S)
        seen = watchers.collect()["seen"]
    finally:
        watchers.close()
    per_watcher = BENCH_TOTAL // count
    complete = sum(len(s) == per_watcher and [r for r, _ in s] == sorted(r for r, _ in s)
                   for s in seen)
    return {"max_rate_without": without, "max_rate_with": with_, "max_rate_complete": complete}


def run_pass(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="raftkv-bench-watch-"))
    with ProcCluster(root, log_level="warning") as cluster:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        viewer = next(i for i in cluster.ids if i != leader)
        port = cluster.specs[viewer].http_port
        pids = processes(cluster, viewer)
        watched = [pid for name, pid in pids.items() if name.startswith("watched follower")]
        baseline = write_phase(cluster, args, Cpu(dict(pids)))
        before = rss_of(watched)
        watchers = Watchers(port, args.watchers, "shared" if args.shared else "own")
        try:
            time.sleep(1.0)  # idle: what the open streams hold once settled
            after = rss_of(watched)
            held = (cluster.status(viewer) or {}).get("watches_held")
            cpu = Cpu(dict(pids))
            cpu.pids["watchers"] = watchers.proc.pid  # alive throughout: /proc tells its CPU
            loaded = write_phase(cluster, args, cpu)
            time.sleep(DRAIN_S)
            report = watchers.collect()
        finally:
            watchers.close()
        maximum = max_rate(cluster, port, args.watchers) if args.watchers * 10 == BENCH_TOTAL else {}
    return {**summarize(args, baseline, loaded, report, (after - before) * 1024 / args.watchers, held),
            **maximum}


def summarize(args: argparse.Namespace, baseline: dict[str, Any], loaded: dict[str, Any],
              report: dict[str, Any], kib_per_watcher: float, held: int | None) -> dict[str, Any]:
    sent = {w[0]: w[2] for w in loaded["writes"]}
    acked = {w[0]: w[3] for w in loaded["writes"]}
    by_prefix: dict[str, list[int]] = {}
    for revision, key, *_ in loaded["writes"]:
        by_prefix.setdefault("w/" if args.shared else key.rsplit("/", 1)[0] + "/", []).append(revision)
    complete = 0
    from_ack, from_send = [], []
    for i, seen in enumerate(report["seen"]):
        prefix = "w/" if args.shared else f"w/{i}/"
        revisions = [int(r) for r, _ in seen if int(r) in acked]
        complete += revisions == sorted(by_prefix.get(prefix, []))
        for revision, at in seen:
            if revision in acked:
                from_ack.append((at - acked[revision]) * 1000)
                from_send.append((at - sent[revision]) * 1000)
    return {
        "watchers": args.watchers, "shared": args.shared, "target_rate": args.rate,
        "complete_watchers": complete, "failed": report["failed"],
        "deliveries": len(from_ack),
        "delivery_from_ack_p50_ms": percentile(from_ack, 0.5),
        "delivery_from_ack_p99_ms": percentile(from_ack, 0.99),
        "delivery_from_send_p50_ms": percentile(from_send, 0.5),
        "delivery_from_send_p99_ms": percentile(from_send, 0.99),
        "rate_without": baseline["rate"], "rate_with": loaded["rate"],
        "write_p50_ms_without": baseline["write_p50_ms"], "write_p50_ms_with": loaded["write_p50_ms"],
        "write_p99_ms_without": baseline["write_p99_ms"], "write_p99_ms_with": loaded["write_p99_ms"],
        "kib_per_idle_watcher": kib_per_watcher, "held_requests": held,
        "cpu_without": baseline["cpu"], "cpu_with": loaded["cpu"],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        endpoints, rate, seconds, prefixes = sys.argv[2:6]
        writer(endpoints.split(","), float(rate), float(seconds), int(prefixes))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "watchers":
        port, count, mode = sys.argv[2:5]
        asyncio.run(_watchers(int(port), int(count), mode))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="writes per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of writes per phase")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--shared", action="store_true", help="every watcher on the same prefix")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-watch.json"))
    args = parser.parse_args()
    passes = []
    for n in range(args.passes):
        result = run_pass(args)
        passes.append(result)
        print(f"pass {n + 1}: " + json.dumps({k: v for k, v in result.items()
                                               if not k.startswith("cpu")}), flush=True)
    numeric = [k for k, v in passes[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    medians = {k: statistics.median(p[k] for p in passes if p[k] is not None) for k in numeric
               if all(p[k] is not None for p in passes)}
    cpu = {phase: {name: statistics.median(p[phase][name] for p in passes)
                   for name in passes[0][phase]} for phase in ("cpu_without", "cpu_with")}
    print(f"\nmedians of {args.passes} passes, {args.watchers} watchers "
          f"({'one shared prefix' if args.shared else 'a prefix each'}), {args.rate:g} writes/s:")
    for key, value in medians.items():
        print(f"  {key:28} {value:10.2f}")
    print(f"  write rate with/without       {medians['rate_with'] / medians['rate_without']:10.3f}")
    if "max_rate_with" in medians:
        ratio = medians["max_rate_with"] / medians["max_rate_without"]
        print(f"  max write rate with/without   {ratio:10.3f}")
    for phase, usage in cpu.items():
        print(f"  {phase:28} " + ", ".join(f"{n} {v:.0f}%" for n, v in usage.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"passes": passes, "medians": medians, "cpu": cpu}, indent=1))
    print(f"\nall numbers: {args.out}")


if __name__ == "__main__":
    main()
