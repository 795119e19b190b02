"""Run many simulator seeds: `python -m tests.sim.run --seeds 20000` (or `--seed S` to replay one).

Seeds run in worker processes (one per core by default). Every failure prints its seed and the
one-line command that replays it; the exit status is 1 when any seed failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

from .workload import SeedResult, run_seed

DEFAULT_TICKS = 2000


def seed_plan(seeds: int, start: int, nodes: int | None) -> list[tuple[int, int]]:
    """(seed, nodes) pairs: a fixed node count, or 3 and 5 nodes alternating by seed."""
    return [(s, nodes or (3 if s % 2 == 0 else 5)) for s in range(start, start + seeds)]


def _run(job: tuple[int, int, int]) -> SeedResult:
    seed, nodes, ticks = job
    return run_seed(seed, nodes, ticks)


def run_many(
    plan: Iterable[tuple[int, int]], ticks: int = DEFAULT_TICKS, workers: int = 1
) -> Iterator[SeedResult]:
    """Results in completion order; in-process when workers == 1."""
    jobs = [(seed, nodes, ticks) for seed, nodes in plan]
    if workers <= 1:
        for job in jobs:
            yield _run(job)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(_run, jobs, chunksize=4)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def run_chunk(nodes: int, start: int, count: int, ticks: int = DEFAULT_TICKS) -> list[SeedResult]:
    """Seeds start..start+count-1 on `nodes` nodes, in this process (a unit of work for a pool)."""
    return [run_seed(seed, nodes, ticks) for seed in range(start, start + count)]


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), int(os.environ.get("SIM_WORKERS", "64"))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__)
    parser.add_argument("--seeds", type=int, default=500, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--seed", type=int, help="replay this one seed (verbose)")
    parser.add_argument(
        "--nodes", type=int, choices=(3, 5), help="cluster size (default: 3 and 5 alternating)"
    )
    parser.add_argument("--ticks", type=int, default=DEFAULT_TICKS, help="ticks of faults per seed")
    parser.add_argument("--workers", type=int, default=default_workers(), help="worker processes")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every seed")
    args = parser.parse_args(argv)

    if args.seed is not None:
        nodes = args.nodes or (3 if args.seed % 2 == 0 else 5)
        result = run_seed(args.seed, nodes, args.ticks, verbose=True)
        print(
            f"seed {args.seed} nodes={nodes} ticks={args.ticks}: {'ok' if result.ok else 'FAILED'} "
            f"in {result.seconds:.2f}s {result.stats}"
        )
        if not result.ok:
            print(result.error)
            print(f"replay: {result.replay_command()}")
        return 0 if result.ok else 1

    started = time.perf_counter()
    plan = seed_plan(args.seeds, args.start, args.nodes)
    failures: list[SeedResult] = []
    done = events = 0
    worst: dict[str, int] = {}
    interrupted = False
    try:
        for result in run_many(plan, args.ticks, args.workers):
            done += 1
            events += result.stats.get("events", 0)
            for key in ("elect_ticks", "converge_ticks", "commit_ticks_max"):
                worst[key] = max(worst.get(key, 0), result.stats.get(key, 0))
            if args.verbose:
                print(
                    f"seed {result.seed} nodes={result.nodes}: {'ok' if result.ok else 'FAILED'} "
                    f"{result.seconds:.2f}s {result.stats}",
                    flush=True,
                )
            if not result.ok:
                failures.append(result)
                print(
                    f"FAILED seed {result.seed} (nodes={result.nodes}): {result.error.splitlines()[0]}",
                    flush=True,
                )
                print(f"  replay: {result.replay_command()}", flush=True)
            elif done % 1000 == 0:
                print(f"... {done}/{len(plan)} seeds, {time.perf_counter() - started:.0f}s", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    elapsed = time.perf_counter() - started
    print(
        f"{done} seeds{' (interrupted)' if interrupted else ''} ({args.ticks} ticks each, "
        f"{args.workers} workers) in {elapsed:.1f}s: "
        f"{done - len(failures)} ok, {len(failures)} failed; {events} events "
        f"({events / max(elapsed, 1e-9):.0f}/s); after the faults, worst ticks: {worst}"
    )
    for result in failures:
        print(f"  seed {result.seed}: {result.replay_command()}")
    return 1 if failures or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
