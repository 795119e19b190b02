"""The client protocol spoken on each node's `client` endpoint (ZeroMQ ROUTER).

A client DEALER sends one msgpack map per request, or an array of them in one frame (a
batch, raftkv/frames.py); the node answers a map with a map and a batch's requests in batches.
Shared by the daemon (raftkvd.net.clientendpoint) and the client library (raftctl.client) so the
two can never disagree about names.

Request:  {"v": 1, "id": int, "op": Op, "session": str, "seq": int, ...op fields}
  put:    key, value                      -> revision, index
  get:    key, consistency                -> value, revision       (NOT_FOUND if missing)
  delete: key                             -> deleted (bool), index
  cas:    key, expected (str|None), value -> revision, index       (COMPARE_FAILED, with value)
  list:   prefix, limit, consistency      -> items: [[key, value], ...], revision (the
          store's revision the answer was read at: a watch from revision + 1 misses nothing)
  watch:  key | prefix, rev?, wait?       -> events: [{type, key, value, revision}, ...],
          next (the rev to ask for next), revision (this node's); from this node's applied
          state, leader or not (raftkvd/server/watches.py). Answered as soon as events from
          rev on match, else after `wait` seconds (at most MAX_WATCH_WAIT_S) with none: a
          long poll, so a watcher that stops asking costs the node nothing. No rev: from
          this node's next revision. COMPACTED, with oldest, when rev is older than the
          history ([cluster] watch_history).
  status: (none)                          -> status: {...} (this node's view, see node status)
  cluster:(none)                          -> nodes: [status, ...] (every member, unreachable ones
          included; answered by the leader, which owns the membership: others redirect)
  transfer: to (int, 0 = any)             -> leader_id
  snapshot: (none)                        -> index
  hash:   (none)                          -> hash (sha256 hex of the kv state), applied
          (this node's state machine; computed on request: it scans every key)
  member_add: node_id, raft, client, http -> index (the new node joins as a learner; the
          leader promotes it to voter once it has caught up)
  member_remove: node_id                  -> index
  backup: (none)                          -> stream (id), header (raftkv/backupfile.py) (the
          leader opens a consistent view of its applied state; others redirect)
  backup_read: stream, seq (0, 1, ...)    -> seq, data (packed rows), rows, done, and sha256 of
          all the data once done (ask the node that opened the stream; seq asked again: the
          same chunk again)
  metrics:(none)                          -> text (Prometheus exposition of the node process;
          the HTTP process serves it, with its own REST metrics, on /metrics)
  (index: the log index of the write's entry, committed and applied when the answer left)
  put, delete, cas also take trace (bool): the answer then carries trace, the leader's
          time.monotonic() at each stage of the write (raftkvd/server/tracing.py)
Response: {"v": 1, "id": int, "code": Code, "error": str?, "leader_id": int?,
           "leader": str? (the leader's client endpoint), ...result fields}

Codes a client retries elsewhere: not_leader (with the leader's endpoint when known) and
no_leader (the node knows none: an election, no quorum, or it was removed); the request did
not run. unavailable: it ran into a transient failure (leadership changed before the entry
committed, a transfer that did not finish): session-numbered writes and reads may be
retried, an administrative request reports it. rate_limited: the client is over its
[limits] rate (the request did not run); retry the same node after `retry_after` seconds.
"""

from __future__ import annotations

import enum

VERSION = 1
CONSISTENCY_LINEARIZABLE = "linearizable"
CONSISTENCY_SERIALIZABLE = "serializable"
MAX_KEY_BYTES = 511
MAX_WATCH_WAIT_S = 30.0
"""The longest a watch request is held without events."""


class Op(enum.StrEnum):
    PUT = "put"
    GET = "get"
    DELETE = "delete"
    CAS = "cas"
    LIST = "list"
    STATUS = "status"
    CLUSTER = "cluster"
    TRANSFER = "transfer"
    SNAPSHOT = "snapshot"
    HASH = "hash"
    METRICS = "metrics"
    MEMBER_ADD = "member_add"
    MEMBER_REMOVE = "member_remove"
    BACKUP = "backup"
    BACKUP_READ = "backup_read"
    WATCH = "watch"


WRITE_OPS = frozenset({Op.PUT, Op.DELETE, Op.CAS})
MEMBER_OPS = frozenset({Op.MEMBER_ADD, Op.MEMBER_REMOVE})


class Code(enum.StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"
    COMPARE_FAILED = "compare_failed"
    NOT_LEADER = "not_leader"
    NO_LEADER = "no_leader"
    UNAVAILABLE = "unavailable"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    NO_SPACE = "no_space"
    INTERNAL = "internal"
    COMPACTED = "compacted"
    """A watch asked for a revision older than the history holds; `oldest` is the first
    it still holds (watch from there, or read the current state and watch after it)."""
    RATE_LIMITED = "rate_limited"
    """The client is over its [limits] rate; the request did not run. The answer carries
    retry_after (seconds, float): when the client's next request would be taken."""
