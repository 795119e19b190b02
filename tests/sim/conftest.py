"""Simulator options: `pytest tests/sim -k seed --seed 1234` replays one seed."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed", type=int, default=None, help="replay one simulator seed (tests/sim)")
    parser.addoption("--sim-nodes", type=int, default=None, help="cluster size for --seed (3 or 5)")
