"""Fixtures for the REST API tests: real raftkvd processes (ProcCluster, reused from the
integration suite) on free loopback ports, always torn down; a failing test's report
carries the nodes' log tails."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))

from cluster import ProcCluster  # noqa: E402
from cluster_fixtures import make_cluster, pytest_runtest_makereport  # noqa: E402, F401


@pytest.fixture(scope="module")
def http_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """One started three-node cluster shared by a module whose tests use distinct keys."""
    cluster = ProcCluster(tmp_path_factory.mktemp("http"))
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()
