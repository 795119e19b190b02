"""Backups served by the leader (`raftctl snapshot save`, SPEC §4): a consistent copy of the
whole store, streamed in chunks that the client asks for one at a time.

A backup is an LMDB read transaction opened on the loop: a view of the applied (so committed)
state at one index that the loop's writes never disturb and never wait for. Background workers
cut it into chunks of packed rows (raftkv/backupfile.py), so the loop goes on serving while a
million keys stream out; memory stays at one chunk per backup on each side. The client numbers
its chunk requests; the last chunk is kept, so a request retried after a lost answer gets the
same bytes again.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import lmdb
import msgpack

from raftkv.protocol import Code

from ..kv.statemachine import KVStateMachine
from ..storage.lmdbenv import LmdbEnv

CHUNK_BYTES = 1024 * 1024
MAX_OPEN = 4
"""Backups in progress at once: each pins the pages of its view in the LMDB file."""
IDLE_TIMEOUT_S = 60.0
"""A backup whose client stopped asking is closed after this long, releasing its view."""


class _Stream:
    def __init__(self, txn: lmdb.Transaction, rows: Iterator[tuple[bytes, bytes]], now: float) -> None:
        self.txn = txn
        self.rows = rows
        self.lock = threading.Lock()
        self.used = now
        self.next_seq = 0
        self.last: dict[str, Any] | None = None
        self.digest = hashlib.sha256()
        self.packer = msgpack.Packer()


class Backups:
    """The open backups of one node. `open`, `expire` and `close` run on the loop, `read` in a
    background worker; a stream is read by one worker at a time (its lock)."""

    def __init__(self, env: LmdbEnv, sm: KVStateMachine, node_id: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._env = env
        self._sm = sm
        self._node_id = node_id
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()

    def open(self) -> dict[str, Any]:
        """A new backup: its id and the header of the file it makes."""
        with self._lock:
            if len(self._streams) >= MAX_OPEN:
                return {"code": Code.UNAVAILABLE.value,
                        "error": f"{MAX_OPEN} backups are in progress already; try again later"}
            txn = self._env.reader()
            header = {**self._sm.backup_header(txn), "node_id": self._node_id, "created": time.time()}
            stream_id = secrets.token_hex(8)
            self._streams[stream_id] = _Stream(txn, self._sm.backup_rows(txn), self._clock())
        return {"code": Code.OK.value, "stream": stream_id, "header": header}

    def read(self, stream_id: str, seq: int) -> dict[str, Any]:
        """Chunk `seq` of the backup (the previous one again if asked twice)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return {"code": Code.INVALID.value,
                    "error": "no such backup here (it finished, timed out, or the node restarted)"}
        with stream.lock:
            stream.used = self._clock()
            if stream.last is not None and seq == stream.next_seq - 1:
                return stream.last
            if seq != stream.next_seq:
                return {"code": Code.INVALID.value,
                        "error": f"chunk {seq} asked for, chunk {stream.next_seq} is next"}
            stream.last = self._chunk(stream, seq)
            stream.next_seq += 1
            if stream.last["done"]:
                self._close(stream_id)
            return stream.last

    def expire(self) -> None:
        """Close the backups nobody asked anything of for IDLE_TIMEOUT_S."""
        now = self._clock()
        for stream_id, stream in list(self._streams.items()):
            if now - stream.used > IDLE_TIMEOUT_S and stream.lock.acquire(blocking=False):
                try:
                    self._close(stream_id)
                finally:
                    stream.lock.release()

    def close(self) -> None:
        """At shutdown, once no worker runs: release every view before LMDB closes."""
        for stream_id in list(self._streams):
            self._close(stream_id)

    @property
    def in_progress(self) -> int:
        return len(self._streams)

    def _chunk(self, stream: _Stream, seq: int) -> dict[str, Any]:
        out = bytearray()
        count = 0
        done = True
        for key, row in stream.rows:
            out += stream.packer.pack([key, row])
            count += 1
            if len(out) >= CHUNK_BYTES:
                done = False
                break
        data = bytes(out)
        stream.digest.update(data)
        reply: dict[str, Any] = {"code": Code.OK.value, "seq": seq, "data": data, "rows": count,
                                 "done": done}
        if done:
            reply["sha256"] = stream.digest.hexdigest()
        return reply

    def _close(self, stream_id: str) -> None:
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.txn.abort()
