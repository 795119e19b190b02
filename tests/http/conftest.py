"""Fixtures for the REST API tests: real raftkvd processes (ProcCluster, reused from the
integration suite) on free loopback ports, always torn down; a failing test's report
carries the nodes' log tails."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))

from cluster import ProcCluster  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[Any]:
    report = yield
    if report.failed:
        for number, cluster in enumerate(list(ProcCluster.live), start=1):
            report.sections.append(
                (f"raftkvd logs, cluster {number} ({cluster.root})", cluster.log_tails())
            )
    return report


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., ProcCluster]]:
    """Build ProcClusters (not started) in tmp_path; every one is killed at teardown."""
    made: list[ProcCluster] = []

    def make(size: int = 3, **kwargs: Any) -> ProcCluster:
        cluster = ProcCluster(tmp_path / f"cluster{len(made) + 1}", size, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture(scope="module")
def http_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """One started three-node cluster shared by a module whose tests use distinct keys."""
    cluster = ProcCluster(tmp_path_factory.mktemp("http"))
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()
