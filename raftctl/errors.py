"""The one exception hierarchy of raftctl; each class carries the CLI exit code (SPEC §4)."""

from __future__ import annotations

import json

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REJECTED = 4


class RaftCtlError(Exception):
    """Base of every error the client library raises on purpose."""

    exit_code = 1


class KeyNotFound(RaftCtlError):
    """The key does not exist (a normal answer, not a failure of the cluster)."""

    exit_code = EXIT_NOT_FOUND

    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class CompareFailed(RaftCtlError):
    """A compare-and-set lost: `current` is the value the cluster holds (None = no key)."""

    exit_code = EXIT_NOT_FOUND

    def __init__(self, key: str, current: str | None) -> None:
        shown = "the key does not exist" if current is None else f"its value is {json.dumps(current)}"
        super().__init__(f"compare failed for {key}: {shown}")
        self.key = key
        self.current = current


class Unavailable(RaftCtlError):
    """No leader answered in time: no quorum, an election in progress, or nodes down."""

    exit_code = EXIT_UNAVAILABLE


class RateLimited(Unavailable):
    """This client stayed over its rate limit ([limits]) for the whole timeout (exit 3, as
    for an unavailable cluster: retrying later will succeed)."""


class RequestRejected(RaftCtlError):
    """The cluster refused the request (too large, disk full, invalid); retrying won't help."""

    exit_code = EXIT_REJECTED


class Compacted(RequestRejected):
    """A watch asked for a revision older than the cluster's event history still holds:
    `oldest` is the first it holds. Read the current state and watch after its revision."""

    def __init__(self, message: str, oldest: int) -> None:
        super().__init__(message)
        self.oldest = oldest


class InvalidRequest(RequestRejected):
    """The request is malformed; raised locally before anything is sent when possible."""


class UsageError(RaftCtlError):
    """Bad command-line usage or configuration (endpoints, config file)."""

    exit_code = EXIT_USAGE
