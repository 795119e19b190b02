"""Shape checks of watch requests (raftkvd.net.clientendpoint.validate), and the node's
long-poll watch server (raftkvd/server/watches.py) over a real state machine: answered at
once when events exist, held until one arrives or the wait ends, one history read for a
group of watchers, COMPACTED below the history, held requests answered at shutdown."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftkv.protocol import Code, Op
from raftkvd.kv.history import Selector
from raftkvd.kv.statemachine import KVStateMachine
from raftkvd.net.clientendpoint import Request, RequestError, validate
from raftkvd.raft.messages import Entry, EntryType
from raftkvd.server.watches import Watches
from raftkvd.storage.lmdbenv import LmdbEnv


@pytest.mark.parametrize("body", [
    {"key": "a"}, {"prefix": ""}, {"prefix": "app/", "rev": 7, "wait": 5},
    {"key": "a", "wait": 0.5},
])
def test_well_formed_watches_pass(body: dict[str, Any]) -> None:
    assert validate({"op": "watch", **body}, 1024) == Op.WATCH


@pytest.mark.parametrize("body, words", [
    ({}, "a key or a prefix"),
    ({"key": "a", "prefix": "b"}, "a key or a prefix"),
    ({"key": ""}, "key must be 1 to 511"),
    ({"key": 5}, "key must be a string"),
    ({"prefix": "p" * 512}, "prefix must be 0 to 511"),
    ({"key": "a", "rev": 0}, "rev must be a positive integer"),
    ({"key": "a", "rev": "3"}, "rev must be a positive integer"),
    ({"key": "a", "rev": True}, "rev must be a positive integer"),
    ({"key": "a", "wait": 31}, "wait must be 0 to 30"),
    ({"key": "a", "wait": float("nan")}, "wait must be 0 to 30"),
    ({"key": "a", "wait": "1"}, "wait must be 0 to 30"),
])
def test_malformed_watches_are_refused_with_the_reason(body: dict[str, Any], words: str) -> None:
    with pytest.raises(RequestError, match=words):
        validate({"op": "watch", **body}, 1024)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class Replies:
    def __init__(self) -> None:
        self.sent: list[tuple[int, dict[str, Any]]] = []

    def respond(self, request: Request, fields: dict[str, Any]) -> None:
        self.sent.append((request.id, fields))

    def flush(self) -> None:
        pass


class Store:
    """A state machine with a counter of history reads, fed puts by `put`."""

    def __init__(self, sm: KVStateMachine) -> None:
        self.sm = sm
        self.reads = 0
        self.index = 0

    def events(self, *args: Any) -> Any:
        self.reads += 1
        return self.sm.events(*args)

    def put(self, *keys: str) -> None:
        entries = []
        for key in keys:
            self.index += 1
            entries.append(Entry(self.index, 1, EntryType.NORMAL,
                                 msgpack.packb({"op": "put", "key": key, "value": "v"})))
        self.sm.apply(entries)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with LmdbEnv(tmp_path / "db") as env:
        yield Store(KVStateMachine(env, history_window=10))


def watch(n: int, **body: Any) -> Request:
    return Request(b"client", n, Op.WATCH, body)


def make(store: Store) -> tuple[Watches, Replies, Clock]:
    replies, clock = Replies(), Clock()
    return Watches(store.events, store.sm.revision, replies, clock), replies, clock


def test_events_already_held_are_answered_at_once(store: Store) -> None:
    store.put("a", "b", "a")
    watches, replies, _ = make(store)
    watches.handle(watch(1, key="a", rev=1, wait=5))
    [(_, answer)] = replies.sent
    assert [e["revision"] for e in answer["events"]] == [1, 3]
    assert (answer["code"], answer["next"], answer["revision"]) == ("ok", 4, 3)


def test_a_caught_up_watch_is_held_until_a_matching_event(store: Store) -> None:
    store.put("a")
    watches, replies, _ = make(store)
    watches.handle(watch(1, key="a", wait=5))  # no rev: from the next revision
    watches.serve()
    assert replies.sent == [] and watches.held == 1
    store.put("other")
    watches.serve()
    assert replies.sent == [] and watches.held == 1
    store.put("a")
    watches.serve()
    [(_, answer)] = replies.sent
    assert [e["revision"] for e in answer["events"]] == [3] and answer["next"] == 4
    assert watches.held == 0


def test_a_held_watch_gets_an_empty_answer_when_its_wait_is_over(store: Store) -> None:
    watches, replies, clock = make(store)
    watches.handle(watch(1, prefix="", wait=2))
    clock.now += 1.9
    watches.serve()
    assert replies.sent == []
    clock.now += 0.2
    watches.serve()
    assert replies.sent == [(1, {"code": "ok", "events": [], "next": 1, "revision": 0})]


def test_watchers_in_step_share_one_history_read(store: Store) -> None:
    watches, replies, _ = make(store)
    for n in range(100):
        watches.handle(watch(n, prefix="p/", rev=1, wait=5))
    store.put("p/1")
    reads = store.reads
    watches.serve()
    # one read of what is new, one of the page the hundred share
    assert store.reads - reads == 2 and len(replies.sent) == 100
    assert len({id(fields) for _, fields in replies.sent}) == 1


def test_watchers_of_other_keys_cost_nothing_when_a_key_changes(store: Store) -> None:
    watches, replies, _ = make(store)
    for n in range(1000):
        watches.handle(watch(n, prefix=f"svc/{n}/", wait=5))
        watches.handle(watch(1000 + n, key=f"cfg/{n}", wait=5))
    store.put("svc/7/a", "cfg/9", "unwatched")
    reads = store.reads
    watches.serve()
    assert store.reads - reads == 3  # what is new, then the page of each of the two matched
    assert sorted(n for n, _ in replies.sent) == [7, 1009]
    assert watches.held == 1998


def test_a_prefix_watch_sees_the_keys_under_it_and_not_beside_it(store: Store) -> None:
    watches, replies, _ = make(store)
    watches.handle(watch(1, prefix="ab", wait=5))
    watches.handle(watch(2, prefix="", wait=5))
    watches.handle(watch(3, prefix="abc/", wait=5))
    store.put("a", "abx")
    watches.serve()
    answers = dict(replies.sent)
    assert [e["key"] for e in answers[1]["events"]] == ["abx"]
    assert [e["key"] for e in answers[2]["events"]] == ["a", "abx"]
    assert 3 not in answers and watches.held == 1


def test_a_watch_of_a_future_revision_waits_for_it(store: Store) -> None:
    watches, replies, _ = make(store)
    watches.handle(watch(1, key="a", rev=3, wait=5))
    store.put("a")
    watches.serve()
    assert replies.sent == []
    store.put("a", "a")
    watches.serve()
    [(_, answer)] = replies.sent
    assert [e["revision"] for e in answer["events"]] == [3]


def test_an_expired_watch_is_told_the_revision_to_ask_next(store: Store) -> None:
    watches, replies, clock = make(store)
    watches.handle(watch(1, key="a", wait=1))
    store.put("b", "c")
    watches.serve()
    clock.now += 1
    watches.serve()
    assert replies.sent == [(1, {"code": "ok", "events": [], "next": 3, "revision": 2})]
    assert watches.held == 0


def test_a_revision_below_the_history_is_compacted(store: Store) -> None:
    store.put(*(f"k{i}" for i in range(15)))
    watches, replies, _ = make(store)
    watches.handle(watch(1, prefix="", rev=2, wait=5))
    [(_, answer)] = replies.sent
    assert (answer["code"], answer["oldest"]) == (Code.COMPACTED.value, 6)
    assert answer["error"] == "revision 2 is compacted: the oldest revision held is 6"


def test_held_watches_are_answered_when_the_node_stops(store: Store) -> None:
    watches, replies, _ = make(store)
    watches.handle(watch(1, key="a", wait=5))
    watches.cancel_all({"code": "unavailable", "error": "node shutting down"})
    assert replies.sent == [(1, {"code": "unavailable", "error": "node shutting down"})]
    assert watches.held == 0


@pytest.mark.parametrize("seed", range(20))
def test_every_answer_holds_exactly_the_matching_events_from_its_start(
        tmp_path: Path, seed: int) -> None:
    """Random watches, writes and waits: each answer's events are every event from the
    request's start to its `next` that its selector matches, no more (against a plain
    filter of all the writes)."""
    rng = random.Random(seed)
    keys = ["a", "ab", "abc", "b/1", "b/2", "c"]
    selectors = [{"key": k} for k in keys] + [{"prefix": p} for p in ("", "a", "ab", "b/", "z")]
    with LmdbEnv(tmp_path / "db") as env:
        store = Store(KVStateMachine(env, history_window=1000))
        watches, replies, clock = make(store)
        asked: dict[int, tuple[dict[str, Any], int]] = {}
        written: list[str] = []
        for n in range(300):
            step = rng.random()
            if step < 0.4:
                body = {**rng.choice(selectors), "wait": rng.choice([0, 1, 5])}
                rev = rng.choice([None, 1, max(1, len(written) - 3), len(written) + 1, len(written) + 3])
                if rev is not None:
                    body["rev"] = rev
                asked[n] = (body, rev or len(written) + 1)
                watches.handle(watch(n, **body))
            elif step < 0.8:
                batch = [rng.choice(keys) for _ in range(rng.randint(1, 3))]
                store.put(*batch)
                written += batch
            else:
                clock.now += rng.choice([0.5, 1, 2])
            watches.serve()
        clock.now += 10
        watches.serve()
    assert watches.held == 0 and sorted(n for n, _ in replies.sent) == sorted(asked)
    for n, answer in replies.sent:
        body, start = asked[n]
        selector = Selector(key=body.get("key"), prefix=body.get("prefix"))
        expected = [rev for rev in range(start, answer["next"]) if selector.matches(written[rev - 1])]
        assert [e["revision"] for e in answer["events"]] == expected, (seed, n, body)
        assert all(e["key"] == written[e["revision"] - 1] for e in answer["events"])
