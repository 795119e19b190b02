"""The event history watches read (raftkvd/kv/history.py), through the state machine that
writes it: one event per revision, in order, bounded by its window, as durable as the state
(reopen, snapshot image), and a clear "compacted" below the oldest revision held."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from raftkvd.kv.history import SCAN_LIMIT, Selector
from raftkvd.kv.statemachine import KVStateMachine
from raftkvd.storage.lmdbenv import LmdbEnv
from tests.storage.test_statemachine import Log

ALL = Selector(prefix="")


@pytest.fixture
def log() -> Log:
    return Log()


def revisions(sm: KVStateMachine, start: int = 1, selector: Selector = ALL) -> list[int]:
    return [e["revision"] for e in sm.events(start, selector, 1_000_000).events]


def test_every_put_and_delete_is_one_event_at_its_revision(env: LmdbEnv, log: Log) -> None:
    sm = KVStateMachine(env)
    sm.apply([log.put("a", "1"), log.cmd("delete", "missing"), log.put("a", "2"),
              log.cmd("delete", "a"), log.cmd("cas", "b", expected=None, value="3"),
              log.cmd("cas", "b", expected="nope", value="4")])
    page = sm.events(1, ALL, 100)
    assert page.events == [
        {"type": "put", "key": "a", "value": "1", "revision": 1},
        {"type": "put", "key": "a", "value": "2", "revision": 2},
        {"type": "delete", "key": "a", "value": None, "revision": 3},
        {"type": "put", "key": "b", "value": "3", "revision": 4},
    ]  # the delete of a missing key and the failed cas changed nothing: no event
    assert (page.next, page.compacted, page.oldest) == (5, False, 1)
    assert sm.events(5, ALL, 100).events == [] and sm.events(5, ALL, 100).next == 5


def test_a_selector_takes_one_key_or_a_prefix(env: LmdbEnv, log: Log) -> None:
    sm = KVStateMachine(env)
    sm.apply([log.put(k, "v") for k in ("app/a", "app", "apple", "b", "app/b")])
    assert revisions(sm, selector=Selector(key="app")) == [2]
    assert revisions(sm, selector=Selector(prefix="app/")) == [1, 5]
    assert revisions(sm, selector=Selector(prefix="app")) == [1, 2, 3, 5]
    assert revisions(sm, 3, Selector(prefix="app")) == [3, 5]


def test_a_page_stops_at_its_limit_and_says_where_to_go_on(env: LmdbEnv, log: Log) -> None:
    sm = KVStateMachine(env)
    sm.apply([log.put(f"k{i}", "v") for i in range(10)])
    page = sm.events(1, ALL, 3)
    assert [e["revision"] for e in page.events] == [1, 2, 3] and page.next == 4
    assert [e["revision"] for e in sm.events(page.next, ALL, 3).events] == [4, 5, 6]


def test_a_selector_that_matches_little_looks_at_a_bounded_number_of_events(
        env: LmdbEnv, log: Log) -> None:
    sm = KVStateMachine(env)
    sm.apply([log.put("noise", str(i)) for i in range(SCAN_LIMIT + 5)] + [log.put("rare", "x")])
    first = sm.events(1, Selector(key="rare"), 100)
    assert first.events == [] and first.next == SCAN_LIMIT + 1
    second = sm.events(first.next, Selector(key="rare"), 100)
    assert [e["revision"] for e in second.events] == [SCAN_LIMIT + 6]


def test_the_window_keeps_the_latest_revisions_and_older_ones_are_compacted(
        env: LmdbEnv, log: Log) -> None:
    sm = KVStateMachine(env, history_window=5)
    sm.apply([log.put(f"k{i}", "v") for i in range(8)])
    sm.apply([log.put("k9", "v")])
    assert revisions(sm, 5) == [5, 6, 7, 8, 9]
    page = sm.events(4, ALL, 100)
    assert (page.compacted, page.oldest, page.events) == (True, 5, [])


def test_the_history_survives_a_reopen(open_env: Callable[..., LmdbEnv], log: Log) -> None:
    env = open_env()
    KVStateMachine(env).apply([log.put("a", "1"), log.cmd("delete", "a")])
    env.close()
    assert revisions(KVStateMachine(open_env())) == [1, 2]


def test_a_snapshot_image_carries_the_history_trimmed_to_the_receivers_window(
        open_env: Callable[..., LmdbEnv], tmp_path: Path, log: Log) -> None:
    source = KVStateMachine(open_env())
    source.apply([log.put(f"k{i}", "v") for i in range(20)])
    with LmdbEnv(tmp_path / "other") as other_env:
        target = KVStateMachine(other_env, history_window=10)
        target.restore(source.dump())
        assert revisions(target, 11) == list(range(11, 21))
        assert target.events(10, ALL, 100).compacted
        target.apply([log.put("after", "v")])
        assert revisions(target, 21) == [21]


def test_an_image_from_before_the_history_restores_with_nothing_to_replay(
        open_env: Callable[..., LmdbEnv], tmp_path: Path, log: Log) -> None:
    """Images made by an older raftkvd have no events: watches start after their revision."""
    source = KVStateMachine(open_env())
    source.apply([log.put("a", "1"), log.put("b", "2")])
    image = msgpack.unpackb(source.dump())
    del image["events"]
    with LmdbEnv(tmp_path / "other") as other_env:
        target = KVStateMachine(other_env)
        target.restore(msgpack.packb(image))
        assert target.get("b") == ("2", 2)
        page = target.events(1, ALL, 100)
        assert (page.compacted, page.oldest) == (True, 3)
        assert target.events(3, ALL, 100).compacted is False


def test_a_window_below_one_revision_is_refused(env: LmdbEnv) -> None:
    with pytest.raises(ValueError, match="at least one"):
        KVStateMachine(env, history_window=0)
