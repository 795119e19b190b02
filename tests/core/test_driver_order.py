"""The order in which the driver turns a Ready into I/O (raftkvd/server/driver.py, API.md):
a follower acknowledges new entries as soon as they are durable, before a long apply of what
the same Ready committed (a short one rides in the same transaction); a leader writes and
applies in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from raftkvd.raft.messages import Entry, EntryType, Message
from raftkvd.server.driver import SPLIT_APPLY_AT

from .raftnet import MT, Driven, Net, make_node


class _Recorder:
    """Wraps the driver's store, log, state machine and transport into one event list."""

    def __init__(self, driven: Driven) -> None:
        self.events: list[str] = []
        driver = driven.driver
        store, logstore, sm, transport = driver.store, driver.logstore, driver.sm, driver.transport
        events = self.events

        class Store:
            @contextmanager
            def write(self, durable: bool = True) -> Iterator[Any]:
                with store.write(durable) as batch:
                    yield batch
                events.append("durable commit" if durable else "commit")

            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

        class Log:
            def save(self, hard_state: Any, entries: list[Entry], snapshot: Any = None,
                     batch: Any = None) -> None:
                events.append(f"save {len(entries)} entries")
                logstore.save(hard_state, entries, snapshot, batch=batch)

            def __getattr__(self, name: str) -> Any:
                return getattr(logstore, name)

        class App:
            def apply(self, entries: list[Entry], batch: Any = None) -> list[Any]:
                events.append(f"apply {[e.index for e in entries]}")
                return sm.apply(entries, batch=batch)

            def __getattr__(self, name: str) -> Any:
                return getattr(sm, name)

        class Wire:
            def send(self, msg: Message) -> bool:
                events.append(f"send {msg.type.name} index={msg.index}")
                return transport.send(msg)

        driver.store, driver.logstore, driver.sm, driver.transport = Store(), Log(), App(), Wire()


def _entries(first: int, last: int, term: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(i, term, EntryType.NORMAL, b"put %d" % i) for i in range(first, last + 1))


def _follower_events(committed: int) -> tuple[list[str], Driven]:
    """A follower that holds entries 1..committed gets two more with the news that those are
    committed: one Ready appends and commits; what the driver did with it, in order."""
    follower = Driven(*make_node(2))
    recorder = _Recorder(follower)
    follower.node.step(Message(MT.APPEND, to=2, frm=1, term=1, entries=_entries(1, committed)))
    follower.handle()
    recorder.events.clear()
    follower.node.step(Message(MT.APPEND, to=2, frm=1, term=1, index=committed, log_term=1,
                               entries=_entries(committed + 1, committed + 2), commit=committed))
    follower.handle()
    return recorder.events, follower


def test_a_follower_acknowledges_before_a_long_apply() -> None:
    n = SPLIT_APPLY_AT
    events, follower = _follower_events(n)
    assert events == [
        "save 2 entries", "durable commit",
        f"send APPEND_RESP index={n + 2}",
        f"apply {list(range(1, n + 1))}", "commit",
    ]
    assert [e.index for e in follower.applied] == list(range(1, n + 1))


def test_a_short_apply_rides_with_the_entries() -> None:
    events, follower = _follower_events(SPLIT_APPLY_AT - 1)
    n = SPLIT_APPLY_AT - 1
    assert events == [
        "save 2 entries", f"apply {list(range(1, n + 1))}", "durable commit",
        f"send APPEND_RESP index={n + 2}",
    ]


def test_a_leader_writes_and_applies_in_one_durable_transaction() -> None:
    net = Net(3)
    net.node(1).campaign()
    net.stabilize()
    leader = net.peers[1]
    net.node(1).propose(b"put x")
    net.queue.extend(leader.handle())  # "put x" goes out and is written
    while net.queue:  # the followers write it and acknowledge
        m = net.queue.pop(0)
        net.peers[m.to].node.step(m)
        if m.to != 1:
            net.queue.extend(net.peers[m.to].handle())
    x = leader.node.log.committed
    recorder = _Recorder(leader)
    net.node(1).propose(b"put y")
    leader.handle()  # "put y" is new and "put x" committed: one Ready, one transaction
    assert recorder.events == [
        f"send APPEND index={x}", f"send APPEND index={x}",
        "save 1 entries", f"apply [{x}]", "durable commit",
    ]
