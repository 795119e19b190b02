"""Random fault schedules, checked after every event: 300 seeds on 3 nodes and 200 on 5 nodes.

Each seed runs 2,000 ticks of every fault kind (partitions incl. one-way, drops, duplicates,
delays, long reordering, crashes before/after the write, restarts, clock skew, leadership
transfer, membership changes, compaction and snapshots) with clients writing and reading,
then the faults stop and the cluster must elect, converge and commit each proposal in bounded
ticks. Chunks run in worker processes (SIM_WORKERS, default: one per core) so pytest shows
progress. Replay one seed: `pytest tests/sim -k seed --seed 1234 [--sim-nodes 5]` or
`python -m tests.sim.run --seed 1234 --nodes 5`.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

import pytest

from .run import DEFAULT_TICKS, default_workers, run_chunk
from .workload import FAULT_KINDS, RandomWorkload, SeedResult, run_seed

SEEDS_PER_SIZE = {3: int(os.environ.get("SIM_SEEDS_3", "300")), 5: int(os.environ.get("SIM_SEEDS_5", "200"))}
CHUNK = 25
TICKS = DEFAULT_TICKS


def _chunks() -> list[tuple[int, int, int]]:
    """(nodes, first seed, count), 3- and 5-node chunks interleaved to keep the workers balanced."""
    per_size = {
        nodes: [(nodes, start, min(CHUNK, total - start)) for start in range(0, total, CHUNK)]
        for nodes, total in SEEDS_PER_SIZE.items()
    }
    out: list[tuple[int, int, int]] = []
    while any(per_size.values()):
        for chunks in per_size.values():
            if chunks:
                out.append(chunks.pop(0))
    return out


CHUNKS = _chunks()


def _replay_seed(config: pytest.Config) -> int | None:
    seed = config.getoption("--seed", default=None)
    if seed is None and os.environ.get("SIM_SEED"):
        seed = int(os.environ["SIM_SEED"])
    return seed


@pytest.fixture(scope="module")
def chunk_futures(pytestconfig: pytest.Config) -> Iterator[dict[tuple[int, int, int], Future] | None]:
    """All chunks submitted at once to a process pool; None means run each chunk in-process."""
    workers = default_workers()
    if workers <= 1 or _replay_seed(pytestconfig) is not None:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    futures = {chunk: pool.submit(run_chunk, *chunk, TICKS) for chunk in CHUNKS}
    try:
        yield futures
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _report(results: list[SeedResult]) -> str:
    lines = []
    for r in results:
        if not r.ok:
            lines.append(f"seed {r.seed} ({r.nodes} nodes) FAILED: {r.error.splitlines()[0]}")
            lines.append(f"  replay: {r.replay_command()}")
    return "\n".join(lines)


@pytest.mark.parametrize("chunk", CHUNKS, ids=[f"{n}nodes-{s}-{s + c - 1}" for n, s, c in CHUNKS])
def test_seed_chunk_is_safe_and_live(
    chunk: tuple[int, int, int], chunk_futures: dict | None, pytestconfig: pytest.Config
) -> None:
    if _replay_seed(pytestconfig) is not None:
        pytest.skip("replaying one seed (--seed)")
    if chunk_futures is None:
        results = run_chunk(*chunk, TICKS)
    else:
        results = chunk_futures[chunk].result()
    nodes, start, count = chunk
    assert len(results) == count
    assert all(r.nodes == nodes and r.ticks >= 2000 for r in results)
    failures = _report(results)
    assert not failures, "\n" + failures


def test_replay_seed(pytestconfig: pytest.Config) -> None:
    """`--seed S [--sim-nodes N]` (or SIM_SEED=S) replays one seed with a verbose report."""
    seed = _replay_seed(pytestconfig)
    if seed is None:
        pytest.skip("no --seed given")
    nodes = pytestconfig.getoption("--sim-nodes", default=None) or (3 if seed % 2 == 0 else 5)
    result = run_seed(seed, nodes, TICKS, verbose=True)
    assert result.ok, f"\n{result.error}\nreplay: {result.replay_command()}"


def test_seed_plan_covers_both_sizes_and_every_fault_kind() -> None:
    assert sum(SEEDS_PER_SIZE.values()) >= 500 and set(SEEDS_PER_SIZE) == {3, 5}
    for seed in range(20):
        workload = RandomWorkload(random.Random(seed), 3, TICKS)
        assert {kind for _, _, kind, _ in workload.schedule} == set(FAULT_KINDS)


def test_a_seed_replays_exactly() -> None:
    """Determinism: the same seed gives the same run, event for event."""
    first, second = run_seed(12, 3, 500), run_seed(12, 3, 500)
    assert first.ok and first.stats == second.stats
    assert first.stats["events"] > 1000
