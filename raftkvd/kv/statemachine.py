"""The replicated key-value state machine, kept in LMDB with its applied index.

Each batch of committed entries is applied in one transaction that also records the
applied index, so after a crash the state and the index agree and nothing is replayed
twice (SPEC §3). Every replica applies the same entries to the same state, so every
decision here (revisions, session eviction) must be a pure function of that input.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import lmdb
import msgpack

from raftkv.protocol import MAX_KEY_BYTES, Code, Op

from ..errors import InvalidRequest, StorageCorruptError
from ..raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Snapshot,
    SnapshotMeta,
    apply_conf_change,
)
from ..settings import DEFAULT_WATCH_HISTORY
from ..storage.lmdbenv import EVENTS, KV, MEMBERS, SESSION_LRU, SESSIONS, SM_META, Batch, LmdbEnv
from . import commands
from .history import DELETE, PUT, EventHistory, Page, Selector

MAX_SESSIONS = 10_000
DUMP_VERSION = 1
ADDRESS_FIELDS = ("raft", "client", "http")
MAX_REMOVED = 64
"""Removed members remembered (the latest), so a stale one can be told it was removed."""
_META = b"meta"
_U64 = struct.Struct(">Q")
_REQUIRED_DBS = (KV, SESSIONS, SESSION_LRU, MEMBERS)
_IMAGE_DBS = (*_REQUIRED_DBS, EVENTS)
"""What a snapshot image holds; one made before the event history has no EVENTS."""

Result = dict[str, Any]
# Aliases, because the class's `list` method would shadow the builtin in its annotations.
Results = list[Result]
Items = list[tuple[str, str]]
Row = list[Any]


@dataclass(slots=True)
class _Meta:
    """One row of counters, read and written once per batch; never derived by scanning."""

    applied: int = 0
    applied_term: int = 0
    revision: int = 0
    keys: int = 0
    sessions: int = 0
    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)
    removed: list[list[int]] = field(default_factory=list)
    """[node id, index of its removal], oldest first; an id added again leaves the list."""

    def conf(self) -> ConfState:
        return ConfState(frozenset(self.voters), frozenset(self.learners))

    def set_conf(self, conf: ConfState) -> None:
        self.voters, self.learners = sorted(conf.voters), sorted(conf.learners)

    def record_change(self, change: ConfChange, index: int) -> None:
        kept = [pair for pair in self.removed if pair[0] != change.node_id]
        if change.type == ConfChangeType.REMOVE_NODE:
            kept.append([change.node_id, index])
        self.removed = kept[-MAX_REMOVED:]


def _unpack(data: bytes) -> Any:
    """Decode msgpack from a log entry; None if malformed (bad input must not stop apply)."""
    try:
        return msgpack.unpackb(data)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def _invalid(error: str) -> Result:
    return {"code": Code.INVALID, "error": error}


def _decode_image(data: bytes) -> dict[str, Any]:
    image = _unpack(data)
    if not isinstance(image, dict) or image.get("v") != DUMP_VERSION:
        raise StorageCorruptError("snapshot image is malformed or of another version")
    if not all(name in image for name in ("meta", *_REQUIRED_DBS)):
        raise StorageCorruptError("snapshot image is incomplete")
    if not isinstance(image["meta"], dict) or not isinstance(image["meta"].get("applied"), int):
        raise StorageCorruptError("snapshot image has no applied index")
    return image


def _addresses(context: bytes) -> dict[str, str]:
    obj = _unpack(context)
    if not isinstance(obj, dict):
        return {}
    return {k: obj[k] for k in ADDRESS_FIELDS if isinstance(obj.get(k), str)}


class KVStateMachine:
    """Applies committed entries and answers local (serializable) reads."""

    def __init__(self, env: LmdbEnv, max_sessions: int = MAX_SESSIONS,
                 history_window: int = DEFAULT_WATCH_HISTORY) -> None:
        """`max_sessions` must be the same on every replica, or their tables diverge.
        `history_window`: revisions of events kept for watches (history.py)."""
        self._env = env
        self._max_sessions = max_sessions
        self.history = EventHistory(env, history_window)
        self._kv = env.db(KV)
        self._sessions = env.db(SESSIONS)
        self._lru = env.db(SESSION_LRU)
        self._members = env.db(MEMBERS)
        self._meta = env.db(SM_META)
        with env.read() as txn:
            self._committed = self._load_meta(txn)
        """The counters as of the last committed transaction: the one owner of the applied
        index (and revision, key count, membership) that the node reads, at no LMDB cost."""

    # --- writes -------------------------------------------------------------------
    def apply(self, entries: list[Entry], batch: Batch | None = None) -> Results:
        """Apply committed entries in order, in one transaction with the applied index.

        Raises NoSpaceError (nothing of the batch applied) when the map is full.
        """
        with self._env.join(batch) as b:
            meta = self._load_meta(b.txn)
            revision = meta.revision
            results = [self._apply_entry(b.txn, meta, entry) for entry in entries]
            if meta.revision != revision:
                self.history.trim(b.txn, meta.revision)
            self._store_meta(b, meta)
        return results

    def bootstrap(self, conf: ConfState, members: dict[int, dict[str, str]]) -> None:
        """Seed a brand-new cluster's membership from its config file; later no-op, because
        from then on membership only changes through the log."""
        with self._env.write() as b:
            meta = self._load_meta(b.txn)
            if meta.applied or meta.voters or meta.learners:
                return
            meta.set_conf(conf)
            for node_id, addresses in members.items():
                b.txn.put(_U64.pack(node_id), msgpack.packb(addresses), db=self._members)
            self._store_meta(b, meta)

    def restore(self, data: bytes, batch: Batch | None = None) -> None:
        """Replace the whole state with a snapshot image from `dump` (thesis §5.1).

        An image not newer than the applied state is ignored: it would roll reads back.
        """
        image = _decode_image(data)
        with self._env.join(batch) as b:
            if image["meta"]["applied"] <= self._load_meta(b.txn).applied:
                return
            for name in _IMAGE_DBS:
                db = self._env.db(name)
                b.txn.drop(db, delete=False)
                b.txn.cursor(db=db).putmulti(map(tuple, image.get(name, ())))
            meta = _Meta(**image["meta"])
            self.history.trim(b.txn, meta.revision)  # to this node's own window
            self._store_meta(b, meta)

    # --- reads ----------------------------------------------------------------------
    def get(self, key: str) -> tuple[str, int] | None:
        """(value, mod_revision), or None if the key does not exist."""
        error = commands.key_error(key)
        if error:
            raise InvalidRequest(error)
        with self._env.read() as txn:
            raw = txn.get(key.encode(), db=self._kv)
        if raw is None:
            return None
        value, _, mod_revision = msgpack.unpackb(raw)
        return value, mod_revision

    def list(self, prefix: str = "", limit: int | None = None) -> Items:
        """Keys starting with `prefix` in key (UTF-8 byte) order, at most `limit` of them."""
        start = prefix.encode()
        if len(start) > MAX_KEY_BYTES:
            raise InvalidRequest(f"prefix must be at most {MAX_KEY_BYTES} bytes")
        out: Items = []
        with self._env.read() as txn:
            cursor = txn.cursor(db=self._kv)
            if not cursor.set_range(start):
                return out
            for key, raw in cursor.iternext():
                if not key.startswith(start) or (limit is not None and len(out) >= limit):
                    break
                out.append((key.decode(), msgpack.unpackb(raw)[0]))
        return out

    def events(self, start: int, selector: Selector, limit: int) -> Page:
        """Events from revision `start` on, as of one consistent view (history.py)."""
        with self._env.read() as txn:
            revision = self._load_meta(txn).revision
            return self.history.read(txn, start, revision, selector, limit)

    def applied_index(self) -> int:
        """The index of the last applied entry, durable with the state it produced."""
        return self._committed.applied

    def revision(self) -> int:
        return self._committed.revision

    def key_count(self) -> int:
        return self._committed.keys

    def conf_state(self) -> ConfState:
        """Membership as of the applied index (what the core needs at restart)."""
        return self._committed.conf()

    def removed_at(self, node_id: int) -> int | None:
        """The index of the applied entry that removed `node_id`, if it is not a member again."""
        return next((index for i, index in self._committed.removed if i == node_id), None)

    def members(self) -> dict[int, dict[str, str]]:
        """Addresses of the members that joined through the log or the bootstrap."""
        with self._env.read() as txn:
            return self._members_in(txn)

    def _members_in(self, txn: lmdb.Transaction) -> dict[int, dict[str, str]]:
        return {_U64.unpack(k)[0]: msgpack.unpackb(v) for k, v in txn.cursor(db=self._members)}

    def hash(self) -> str:
        """Digest of keys, values and revisions: equal on replicas that applied the same log."""
        digest = hashlib.sha256()
        with self._env.read() as txn:
            for key, raw in txn.cursor(db=self._kv):
                digest.update(_U64.pack(len(key)) + key + _U64.pack(len(raw)) + raw)
        return digest.hexdigest()

    def dump(self) -> bytes:
        """The whole applied state as one consistent image (for snapshots)."""
        with self._env.read() as txn:
            return self._dump(txn, self._load_meta(txn))

    def snapshot(self) -> Snapshot:
        """A snapshot at the applied index; meta and data come from one read transaction."""
        with self._env.read() as txn:
            meta = self._load_meta(txn)
            snap_meta = SnapshotMeta(meta.applied, meta.applied_term, meta.conf())
            return Snapshot(snap_meta, self._dump(txn, meta))

    # --- backups (raftkv/backupfile.py) ----------------------------------------------
    def backup_header(self, txn: lmdb.Transaction) -> dict[str, Any]:
        """What a backup taken in the read transaction `txn` says about itself."""
        meta = self._load_meta(txn)
        members = {str(i): a for i, a in self._members_in(txn).items()}
        return {"index": meta.applied, "term": meta.applied_term, "revision": meta.revision,
                "keys": meta.keys, "voters": meta.voters, "learners": meta.learners,
                "members": members}

    def backup_rows(self, txn: lmdb.Transaction) -> Iterator[tuple[bytes, bytes]]:
        """Every key with its stored record, in key order (the rows of a backup file)."""
        return txn.cursor(db=self._kv).iternext()

    def load_backup(self, rows: Iterable[tuple[bytes, bytes]], header: dict[str, Any],
                    rows_per_txn: int = 50_000) -> None:
        """Seed an empty store with a backup's rows and counters, in transactions of
        `rows_per_txn` (bounded memory); the counters, and so the applied index, are written
        last, in a durable transaction: until then the store reads as empty and new."""
        rows = iter(rows)
        while True:
            with self._env.write(durable=False) as b:
                consumed, added = b.txn.cursor(db=self._kv).putmulti(
                    itertools.islice(rows, rows_per_txn), append=True)
            if consumed != added:
                raise StorageCorruptError("backup rows are out of key order")
            if consumed < rows_per_txn:
                break
        with self._env.write() as b:
            meta = self._load_meta(b.txn)
            meta.applied, meta.applied_term = header["index"], header["term"]
            meta.revision, meta.keys = header["revision"], header["keys"]
            self._store_meta(b, meta)

    def force_membership(self, conf: ConfState, members: dict[int, dict[str, str]],
                         batch: Batch | None = None) -> None:
        """Replace the membership outside the log (restore into a new cluster, disaster
        recovery): only ever on a stopped node, as the operator's explicit decision."""
        with self._env.join(batch) as b:
            meta = self._load_meta(b.txn)
            meta.set_conf(conf)
            b.txn.drop(self._members, delete=False)
            for node_id, addresses in members.items():
                b.txn.put(_U64.pack(node_id), msgpack.packb(addresses), db=self._members)
            self._store_meta(b, meta)

    # --- apply helpers ------------------------------------------------------------
    def _apply_entry(self, txn: lmdb.Transaction, meta: _Meta, entry: Entry) -> Result:
        if entry.index != meta.applied + 1:
            raise ValueError(f"apply out of order: applied={meta.applied} got={entry.index}")
        if entry.type == EntryType.CONF_CHANGE:
            result = self._apply_conf_change(txn, meta, entry)
        elif not entry.data:
            result = {"code": Code.OK}  # a new leader's no-op (thesis §6.4)
        else:
            result = self._apply_command(txn, meta, entry)
        meta.applied, meta.applied_term = entry.index, entry.term
        return result

    def _apply_conf_change(self, txn: lmdb.Transaction, meta: _Meta, entry: Entry) -> Result:
        try:
            cc = ConfChange.decode(entry.data)
        except (ValueError, KeyError, TypeError):
            return _invalid("malformed conf change")
        meta.set_conf(apply_conf_change(meta.conf(), cc))
        meta.record_change(cc, entry.index)
        node_key = _U64.pack(cc.node_id)
        if cc.type == ConfChangeType.REMOVE_NODE:
            txn.delete(node_key, db=self._members)
        elif addresses := _addresses(cc.context):
            txn.put(node_key, msgpack.packb(addresses), db=self._members)
        return {"code": Code.OK}

    def _apply_command(self, txn: lmdb.Transaction, meta: _Meta, entry: Entry) -> Result:
        """Execute a client command at most once per (session, seq) (thesis §6.3)."""
        cmd = commands.decode(entry.data)
        if cmd is None:
            return _invalid("malformed command")
        tracked = cmd.tracked
        prior = self._session(txn, cmd.session) if tracked else None
        if prior is not None and cmd.seq <= prior[0]:
            return prior[1] if cmd.seq == prior[0] else _invalid("stale request")
        error = cmd.error()
        result = _invalid(error) if error else self._execute(txn, meta, cmd)
        if tracked:
            self._remember(txn, meta, cmd.session, [cmd.seq, result, entry.index], prior)
        return result

    def _execute(self, txn: lmdb.Transaction, meta: _Meta, cmd: commands.Command) -> Result:
        key = cmd.key.encode()
        raw = txn.get(key, db=self._kv)
        row = msgpack.unpackb(raw) if raw is not None else None
        if cmd.op == Op.PUT:
            return self._put(txn, meta, key, cmd.value, row)
        if cmd.op == Op.DELETE:
            return self._delete(txn, meta, key, row)
        current = row[0] if row is not None else None
        if current != cmd.expected:
            return {"code": Code.COMPARE_FAILED, "value": current}
        return self._put(txn, meta, key, cmd.value, row)

    def _put(self, txn: lmdb.Transaction, meta: _Meta, key: bytes, value: str, row: Row | None) -> Result:
        meta.revision += 1
        if row is None:
            meta.keys += 1
        create_revision = row[1] if row is not None else meta.revision
        txn.put(key, msgpack.packb([value, create_revision, meta.revision]), db=self._kv)
        self.history.record(txn, meta.revision, PUT, key, value)
        return {"code": Code.OK, "revision": meta.revision}

    def _delete(self, txn: lmdb.Transaction, meta: _Meta, key: bytes, row: Row | None) -> Result:
        if row is None:
            return {"code": Code.OK, "deleted": False}
        txn.delete(key, db=self._kv)
        meta.revision += 1
        meta.keys -= 1
        self.history.record(txn, meta.revision, DELETE, key, None)
        return {"code": Code.OK, "deleted": True, "revision": meta.revision}

    # --- the session table ----------------------------------------------------------
    def _session(self, txn: lmdb.Transaction, session: str) -> Row | None:
        raw = txn.get(session.encode(), db=self._sessions)
        return msgpack.unpackb(raw) if raw is not None else None

    def _remember(
        self, txn: lmdb.Transaction, meta: _Meta, session: str, row: Row, prior: Row | None
    ) -> None:
        """Record the session's latest result; the LRU index is keyed by log index so
        every replica evicts the same sessions."""
        sid = session.encode()
        if prior is not None:
            txn.delete(_U64.pack(prior[2]), db=self._lru)
        else:
            meta.sessions += 1
        txn.put(sid, msgpack.packb(row), db=self._sessions)
        txn.put(_U64.pack(row[2]), sid, db=self._lru)
        if meta.sessions > self._max_sessions:
            self._evict_oldest_session(txn, meta)

    def _evict_oldest_session(self, txn: lmdb.Transaction, meta: _Meta) -> None:
        cursor = txn.cursor(db=self._lru)
        cursor.first()
        txn.delete(cursor.value(), db=self._sessions)
        cursor.delete()
        meta.sessions -= 1

    # --- meta and images --------------------------------------------------------------
    def _load_meta(self, txn: lmdb.Transaction) -> _Meta:
        raw = txn.get(_META, db=self._meta)
        return _Meta(**msgpack.unpackb(raw)) if raw is not None else _Meta()

    def _store_meta(self, batch: Batch, meta: _Meta) -> None:
        """Write the counters; the in-memory copy follows once the transaction is durable."""
        batch.txn.put(_META, msgpack.packb(asdict(meta)), db=self._meta)
        batch.on_commit(lambda: setattr(self, "_committed", meta))

    def _dump(self, txn: lmdb.Transaction, meta: _Meta) -> bytes:
        image: dict[str, Any] = {"v": DUMP_VERSION, "meta": asdict(meta)}
        for name in _IMAGE_DBS:
            image[name] = list(txn.cursor(db=self._env.db(name)))
        return msgpack.packb(image)
