"""The daemon's exception hierarchy: callers catch `RaftKVError` and map kinds to answers.

The consensus core keeps its own errors (raftkvd.raft.storage) because it imports
nothing of the daemon.
"""

from __future__ import annotations


class RaftKVError(Exception):
    """Base of every error the daemon raises on purpose."""


class NotLeader(RaftKVError):
    """This node cannot serve the request; the client should retry at the leader."""


class Unavailable(RaftKVError):
    """No leader or no quorum right now; the request may succeed later."""


class InvalidRequest(RaftKVError):
    """The request can never succeed as written (bad key, oversized value, ...)."""


class StorageError(RaftKVError):
    """The durable store failed; the write did not happen."""


class NoSpaceError(StorageError):
    """The LMDB map or the disk is full: writes are refused, reads keep working (SPEC §6)."""


class StorageCorruptError(StorageError):
    """The data on disk is not what we wrote; the node must not serve from it."""
