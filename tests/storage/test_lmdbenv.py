"""LmdbEnv's two kinds of write: durable (meta page flushed) and redo-able (data only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from raftkvd.storage.lmdbenv import KV, LmdbEnv


class CountingEnv:
    """Wraps the lmdb.Environment to count explicit syncs; everything else passes through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.syncs = 0

    def sync(self, force: bool = False) -> None:
        self.syncs += 1
        self.inner.sync(force)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("durable", [True, False])
def test_both_kinds_of_write_commit_and_survive_a_reopen(
    open_env: Callable[..., LmdbEnv], durable: bool
) -> None:
    env = open_env()
    with env.write(durable=durable) as batch:
        batch.txn.put(b"k", b"v", db=env.db(KV))
    env.close()
    reopened = open_env()
    with reopened.read() as txn:
        assert txn.get(b"k", db=reopened.db(KV)) == b"v"


def test_only_a_durable_write_flushes_the_meta_page(env: LmdbEnv) -> None:
    counting = CountingEnv(env.env)
    env.env = counting
    with env.write(durable=False) as batch:
        batch.txn.put(b"a", b"1", db=env.db(KV))
    assert counting.syncs == 0
    with env.write() as batch:
        batch.txn.put(b"b", b"2", db=env.db(KV))
    assert counting.syncs == 1
    env.env = counting.inner


def test_a_failed_write_is_aborted_and_not_synced(env: LmdbEnv) -> None:
    counting = CountingEnv(env.env)
    env.env = counting
    with pytest.raises(RuntimeError), env.write() as batch:
        batch.txn.put(b"c", b"3", db=env.db(KV))
        raise RuntimeError("boom")
    assert counting.syncs == 0
    env.env = counting.inner
    with env.read() as txn:
        assert txn.get(b"c", db=env.db(KV)) is None
