"""Fixtures for the packaging tests (systemd units, Docker files): the repository root, and
real raftkvd clusters (ProcCluster, from the integration suite) on free loopback ports in
tmp_path, always torn down, whose log tails a failing test's report carries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))

from cluster_fixtures import make_cluster, pytest_runtest_makereport  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo() -> Path:
    return REPO
