"""In-memory twins of the replica's I/O parts (after hashicorp/raft's inmem_store.go and
inmem_transport.go), behind the same seams as LMDB and ZeroMQ (raftkvd/server/seams.py).

- `MemoryStore` hands out write batches whose effects happen at commit, all or nothing, like
  an LMDB transaction; a `CrashPoint` can make a write crash before it starts, before it
  commits or right after.
- `MemoryLogStore` is the Raft log (a MemoryStorage of the core underneath).
- `MemoryKV` is the key-value state machine: the same commands (raftkvd.kv.commands), the
  same answers and the same once-per-session rule as kv/statemachine.py, on dicts.
- `CollectingTransport` and `CollectingReplies` hand what the replica sends to the owner.

A `Probe` (the simulator's checker, or nothing) is told of every durable effect as it
commits, so safety can be checked after every event.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgpack

from raftkv.protocol import Code, Op
from raftkvd.kv import commands
from raftkvd.net.clientendpoint import Request
from raftkvd.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    Snapshot,
    SnapshotMeta,
    apply_conf_change,
)
from raftkvd.raft.storage import MemoryStorage

MAP_SIZE = 1 << 40
Result = dict[str, Any]


class SimCrash(Exception):
    """The node dies here: whatever was not committed is lost."""


class CrashPoint:
    """Where the next write of a node crashes, if anywhere (set by the simulator)."""

    NONE = None
    BEFORE_WRITE = "before-write"
    """Early messages left, nothing of this Ready is durable (thesis §10.2.1's window)."""
    BEFORE_COMMIT = "before-commit"
    """The write ran (and answered committed writes early) but never committed."""
    AFTER_COMMIT = "after-commit"
    """Durable, but no acknowledgement left and the core never advanced."""


class Probe(Protocol):
    """What the simulator's checker learns as effects become durable."""

    def on_persist(self, entries: list[Entry]) -> None: ...

    def on_hard_state(self, hard_state: HardState) -> None: ...

    def on_restore(self, snapshot: Snapshot, digest: str) -> None: ...

    def on_apply(self, entry: Entry, applied_before: int) -> None: ...

    def on_state(self, index: int, digest: str) -> None: ...


class Batch:
    def __init__(self) -> None:
        self._after_commit: list[Callable[[], None]] = []
        self.kv_stage: KVState | None = None
        """The state machine's state as this batch changes it (MemoryKV)."""

    def on_commit(self, fn: Callable[[], None]) -> None:
        self._after_commit.append(fn)


class MemoryStore:
    """The transaction owner. `crash` is consulted on every write."""

    def __init__(self) -> None:
        self.crash: str | None = CrashPoint.NONE
        self.writes = 0

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[Batch]:
        if self.crash == CrashPoint.BEFORE_WRITE:
            raise SimCrash(self.crash)
        batch = Batch()
        yield batch
        if self.crash == CrashPoint.BEFORE_COMMIT:
            raise SimCrash(self.crash)
        self.writes += 1
        for fn in batch._after_commit:
            fn()
        if self.crash == CrashPoint.AFTER_COMMIT:
            raise SimCrash(self.crash)

    def used_bytes(self) -> int:
        return 0

    @property
    def map_size(self) -> int:
        return MAP_SIZE


class _NoProbe:
    def on_persist(self, entries: list[Entry]) -> None: ...

    def on_hard_state(self, hard_state: HardState) -> None: ...

    def on_restore(self, snapshot: Snapshot, digest: str) -> None: ...

    def on_apply(self, entry: Entry, applied_before: int) -> None: ...

    def on_state(self, index: int, digest: str) -> None: ...


NO_PROBE: Probe = _NoProbe()


class MemoryLogStore:
    """The core's Storage protocol over a MemoryStorage, plus the writes a Ready asks for.
    Snapshots are images of the applied state, so they come from the state machine."""

    def __init__(self, app: MemoryKV, probe: Probe = NO_PROBE) -> None:
        self.mem = MemoryStorage()
        self.app = app
        self.probe = probe

    # --- the Storage protocol -------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.mem.hard_state, self.app.conf_state()

    def first_index(self) -> int:
        return self.mem.first_index()

    def last_index(self) -> int:
        return self.mem.last_index()

    def term(self, index: int) -> int:
        return self.mem.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.mem.entries(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self.app.snapshot()

    # --- writes -----------------------------------------------------------------
    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None, batch: Batch | None = None) -> None:
        assert batch is not None, "the driver writes in batches"

        def commit() -> None:
            if snapshot is not None and not snapshot.is_empty():
                self.mem.apply_snapshot(snapshot)
            if entries:
                self.mem.append(entries)
                self.probe.on_persist(entries)
            if hard_state is not None:
                self.mem.set_hard_state(hard_state)
                self.probe.on_hard_state(hard_state)

        batch.on_commit(commit)

    def compact(self, index: int, batch: Batch | None = None) -> None:
        assert batch is not None, "the driver writes in batches"

        def commit() -> None:
            ents = self.mem.ents
            offset = ents[0].index
            if offset < index <= self.mem.last_index():
                self.mem.ents = [Entry(index, ents[index - offset].term), *ents[index - offset + 1:]]

        batch.on_commit(commit)


@dataclass
class KVState:
    """What the state machine holds, copied on write so a batch commits all or nothing."""

    kv: dict[str, tuple[str, int]] = field(default_factory=dict)
    """key -> (value, mod revision)"""
    sessions: dict[str, tuple[int, Result]] = field(default_factory=dict)
    """session -> (last seq, its result)"""
    members: dict[int, dict[str, str]] = field(default_factory=dict)
    removed: dict[int, int] = field(default_factory=dict)
    """removed member -> index of its removal (until it is added again)"""
    revision: int = 0
    applied: int = 0
    applied_term: int = 0
    conf: ConfState = ConfState()

    def copy(self) -> KVState:
        return replace(self, kv=dict(self.kv), sessions=dict(self.sessions), members=dict(self.members),
                       removed=dict(self.removed))

    def digest(self) -> str:
        """Equal on replicas that applied the same entries (what the checker compares)."""
        body = [sorted(self.kv.items()), sorted(self.sessions.items()), self.revision,
                sorted(self.conf.voters), sorted(self.conf.learners)]
        return hashlib.sha256(msgpack.packb(body, default=str)).hexdigest()


class MemoryKV:
    """The key-value state machine on dicts (the twin of raftkvd.kv.statemachine)."""

    def __init__(self, probe: Probe = NO_PROBE) -> None:
        self.state = KVState()
        self.probe = probe

    def bootstrap(self, conf: ConfState, members: dict[int, dict[str, str]]) -> None:
        self.state = replace(self.state, conf=conf, members=dict(members))

    # --- writes -------------------------------------------------------------------
    def apply(self, entries: list[Entry], batch: Batch | None = None) -> list[Result]:
        stage = self._stage(batch)
        applied = stage.applied
        results = []
        for entry in entries:
            results.append(self._apply(stage, entry))
            batch.on_commit(functools.partial(self.probe.on_apply, entry, applied))  # type: ignore[union-attr]
            applied = entry.index
        return results

    def restore(self, data: bytes, batch: Batch | None = None) -> None:
        stage = self._stage(batch)
        image = decode_image(data)
        if image.applied <= stage.applied:
            return
        batch.kv_stage = image  # type: ignore[union-attr]
        meta = SnapshotMeta(image.applied, image.applied_term, image.conf)
        batch.on_commit(functools.partial(self.probe.on_restore, Snapshot(meta, data), image.digest()))  # type: ignore[union-attr]

    def _stage(self, batch: Batch | None) -> KVState:
        """The state as this batch left it so far; it replaces ours when the batch commits."""
        assert batch is not None, "the driver writes in batches"
        if batch.kv_stage is None:
            batch.kv_stage = self.state.copy()
            batch.on_commit(functools.partial(self._commit, batch))
        return batch.kv_stage

    def _commit(self, batch: Batch) -> None:
        self.state = batch.kv_stage  # type: ignore[assignment]
        self.probe.on_state(self.state.applied, self.state.digest())

    # --- reads ------------------------------------------------------------------------
    def applied_index(self) -> int:
        return self.state.applied

    def conf_state(self) -> ConfState:
        return self.state.conf

    def members(self) -> dict[int, dict[str, str]]:
        return dict(self.state.members)

    def removed_at(self, node_id: int) -> int | None:
        return self.state.removed.get(node_id)

    def get(self, key: str) -> tuple[str, int] | None:
        return self.state.kv.get(key)

    def list(self, prefix: str = "", limit: int | None = None) -> list[tuple[str, str]]:
        items = [(k, v[0]) for k, v in sorted(self.state.kv.items()) if k.startswith(prefix)]
        return items[:limit] if limit is not None else items

    def key_count(self) -> int:
        return len(self.state.kv)

    def hash(self) -> str:
        return self.state.digest()

    def snapshot(self) -> Snapshot:
        s = self.state
        return Snapshot(SnapshotMeta(s.applied, s.applied_term, s.conf), encode_image(s))

    # --- applying one entry -------------------------------------------------------------
    def _apply(self, state: KVState, entry: Entry) -> Result:
        assert entry.index == state.applied + 1, f"apply out of order: {state.applied} then {entry.index}"
        state.applied, state.applied_term = entry.index, entry.term
        if entry.type == EntryType.CONF_CHANGE:
            change = ConfChange.decode(entry.data)
            state.conf = apply_conf_change(state.conf, change)
            state.removed.pop(change.node_id, None)
            if change.type == ConfChangeType.REMOVE_NODE:
                state.members.pop(change.node_id, None)
                state.removed[change.node_id] = entry.index
            elif change.context:
                state.members[change.node_id] = msgpack.unpackb(change.context)
            return {"code": Code.OK.value}
        if not entry.data:
            return {"code": Code.OK.value}  # a new leader's no-op
        cmd = commands.decode(entry.data)
        if cmd is None:
            return {"code": Code.INVALID.value, "error": "malformed command"}
        prior = state.sessions.get(cmd.session) if cmd.tracked else None
        if prior is not None and cmd.seq <= prior[0]:
            return prior[1] if cmd.seq == prior[0] else {"code": Code.INVALID.value, "error": "stale"}
        result = _execute(state, cmd)
        if cmd.tracked:
            state.sessions[cmd.session] = (cmd.seq, result)
        return result


def _execute(state: KVState, cmd: commands.Command) -> Result:
    error = cmd.error()
    if error:
        return {"code": Code.INVALID.value, "error": error}
    current = state.kv.get(cmd.key)
    if cmd.op == Op.DELETE:
        if current is None:
            return {"code": Code.OK.value, "deleted": False}
        del state.kv[cmd.key]
        state.revision += 1
        return {"code": Code.OK.value, "deleted": True, "revision": state.revision}
    if cmd.op == Op.CAS and (current[0] if current else None) != cmd.expected:
        return {"code": Code.COMPARE_FAILED.value, "value": current[0] if current else None}
    state.revision += 1
    state.kv[cmd.key] = (cmd.value, state.revision)
    return {"code": Code.OK.value, "revision": state.revision}


def encode_image(state: KVState) -> bytes:
    return msgpack.packb({
        "kv": state.kv, "sessions": state.sessions, "revision": state.revision,
        "members": {str(k): v for k, v in state.members.items()}, "applied": state.applied,
        "applied_term": state.applied_term, "voters": sorted(state.conf.voters),
        "learners": sorted(state.conf.learners), "removed": state.removed,
    })


def decode_image(data: bytes) -> KVState:
    image = msgpack.unpackb(data, strict_map_key=False)
    return KVState(
        kv={k: tuple(v) for k, v in image["kv"].items()},
        sessions={k: (v[0], v[1]) for k, v in image["sessions"].items()},
        members={int(k): v for k, v in image["members"].items()}, removed=image["removed"],
        revision=image["revision"], applied=image["applied"], applied_term=image["applied_term"],
        conf=ConfState(frozenset(image["voters"]), frozenset(image["learners"])),
    )


class CollectingTransport:
    """Peer links: every message sent goes to `deliver` (the simulated network). As the
    ZeroMQ transport: a message to a node we have no link to leaves only if that node has a
    link to us (the answer goes back over its connection)."""

    def __init__(self, deliver: Callable[[Message], None], linked_back: Callable[[int], bool]) -> None:
        self._deliver = deliver
        self._linked_back = linked_back
        self._peers: dict[int, str] = {}
        self.unroutable = 0
        self.told_removed: list[tuple[int, int]] = []
        """(node, index) of each RemovedNotice; the simulator's operator stops removed nodes
        itself (cluster._decommission), so no notice needs delivering."""

    def send(self, msg: Message) -> bool:
        if msg.to not in self._peers and not self._linked_back(msg.to):
            self.unroutable += 1
            return False
        self._deliver(msg)
        return True

    def tell_removed(self, to: int, index: int) -> bool:
        self.told_removed.append((to, index))
        return True

    @property
    def peers(self) -> dict[int, str]:
        return dict(self._peers)

    def add_peer(self, peer_id: int, endpoint: str) -> None:
        self._peers[peer_id] = endpoint

    def remove_peer(self, peer_id: int) -> None:
        self._peers.pop(peer_id, None)


class CollectingReplies:
    """Client answers: each goes to `deliver(request, fields)`."""

    def __init__(self, deliver: Callable[[Request, dict[str, Any]], None]) -> None:
        self._deliver = deliver

    def respond(self, request: Request, fields: dict[str, Any]) -> None:
        self._deliver(request, fields)

    def flush(self) -> None:
        """Answers are delivered as they are given."""
