"""Fixtures for the real-process integration tests: clusters on free loopback ports in
tmp_path, always torn down, and the nodes' log tails attached to every failure report.

Tests marked `slow` are measurements that take minutes; they run only when asked for,
with `-m slow` (or any -m expression naming slow) or RAFTKV_SLOW=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster import ProcCluster  # noqa: E402
from cluster_fixtures import make_cluster, pytest_runtest_makereport  # noqa: E402, F401

SLOW_ENV = "RAFTKV_SLOW"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a measurement taking minutes; run with -m slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SLOW_ENV) == "1" or "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason=f"slow measurement: run with -m slow or {SLOW_ENV}=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cluster(make_cluster: Callable[..., ProcCluster]) -> ProcCluster:  # noqa: F811
    """A started three-node cluster with a leader."""
    proc_cluster = make_cluster()
    proc_cluster.start_all()
    return proc_cluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """One started cluster for a module of tests that only add distinct keys to it."""
    proc_cluster = ProcCluster(tmp_path_factory.mktemp("shared"))
    try:
        proc_cluster.start_all()
        yield proc_cluster
    finally:
        proc_cluster.close()
