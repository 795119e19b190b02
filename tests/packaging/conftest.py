"""Fixtures for the packaging tests (systemd units, Docker files): the repository root, and
real raftkvd clusters (ProcCluster, from the integration suite) on free loopback ports in
tmp_path, always torn down, whose log tails a failing test's report carries."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))

from cluster import ProcCluster  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


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
def repo() -> Path:
    return REPO


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
