from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftkvd.storage.lmdbenv import DEFAULT_MAP_SIZE, LmdbEnv


@pytest.fixture
def open_env(tmp_path: Path) -> Iterator[Callable[..., LmdbEnv]]:
    """Open (or reopen) the test's LMDB env; every env opened is closed at teardown."""
    opened: list[LmdbEnv] = []

    def _open(map_size: int = DEFAULT_MAP_SIZE) -> LmdbEnv:
        env = LmdbEnv(tmp_path / "db", map_size=map_size)
        opened.append(env)
        return env

    yield _open
    for env in opened:
        env.close()


@pytest.fixture
def env(open_env: Callable[..., LmdbEnv]) -> LmdbEnv:
    return open_env()
