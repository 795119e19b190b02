"""Pytest pieces shared by every suite that starts real clusters: import them into a conftest.

    from cluster_fixtures import make_cluster, pytest_runtest_makereport  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import ProcCluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[Any]:
    """A failing test's report shows the log tail of every node of every open cluster."""
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
