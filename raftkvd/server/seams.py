"""The narrow interfaces between a replica and the parts that do its I/O (STYLE.md: Protocol seams).

The production node (node.py) passes LMDB storage (storage/), the ZeroMQ peer transport and
client endpoint (net/), and the wall clock. The simulator (tests/sim) passes in-memory twins
of each, after hashicorp/raft's inmem_store.go and inmem_transport.go, so that the seeds run
the very replica code that serves clients: pending writes, ReadIndex batches, transfers,
membership administration.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..net.clientendpoint import Request
from ..raft.messages import ConfState, Entry, HardState, Message, Snapshot
from ..raft.storage import Storage

Clock = Callable[[], float]
"""Monotonic seconds (time.monotonic in production, virtual ticks in the simulator)."""
Result = dict[str, Any]


class Batch(Protocol):
    """One write transaction; in-memory effects wait for it to be durable."""

    def on_commit(self, fn: Callable[[], None]) -> None: ...


class Store(Protocol):
    """The owner of the write transaction that makes the log and the state machine durable
    together (SPEC §3: the applied index is updated with the state it produced)."""

    def write(self, durable: bool = True) -> AbstractContextManager[Batch]: ...

    def used_bytes(self) -> int: ...

    @property
    def map_size(self) -> int: ...


class LogStore(Storage, Protocol):
    """The core's read-only Storage plus the writes a Ready asks for."""

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None, batch: Any = None) -> None: ...

    def compact(self, index: int, batch: Any = None) -> None: ...


class StateMachine(Protocol):
    """The replicated key-value state, with the applied index and the membership it holds."""

    def apply(self, entries: list[Entry], batch: Any = None) -> list[Result]: ...

    def restore(self, data: bytes, batch: Any = None) -> None: ...

    def applied_index(self) -> int: ...

    def conf_state(self) -> ConfState: ...

    def members(self) -> dict[int, dict[str, str]]: ...

    def removed_at(self, node_id: int) -> int | None: ...

    def get(self, key: str) -> tuple[str, int] | None: ...

    def list(self, prefix: str = "", limit: int | None = None) -> list[tuple[str, str]]: ...

    def key_count(self) -> int: ...

    def revision(self) -> int: ...

    def hash(self) -> str: ...


class PeerTransport(Protocol):
    """Best-effort delivery of Raft messages to the other members."""

    def send(self, msg: Message) -> bool: ...

    def tell_removed(self, to: int, index: int) -> bool: ...

    @property
    def peers(self) -> dict[int, str]: ...

    def add_peer(self, peer_id: int, endpoint: str) -> None: ...

    def remove_peer(self, peer_id: int) -> None: ...


class Replies(Protocol):
    """Where the answer to a client request goes: queued, and sent on `flush`."""

    def respond(self, request: Request, fields: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...
