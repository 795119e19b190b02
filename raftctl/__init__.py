"""raftctl: the command-line client of raftkv and its Python client library.

    from raftctl import Client, KeyNotFound

    with Client(["127.0.0.1:20061", "127.0.0.1:20062"]) as kv:
        kv.put("greeting", "hello")
        kv.get("greeting")            # -> "hello"
"""

from __future__ import annotations

from raftctl.client import Client
from raftctl.errors import (
    CompareFailed,
    InvalidRequest,
    KeyNotFound,
    RaftCtlError,
    RequestRejected,
    Unavailable,
    UsageError,
)

__all__ = [
    "Client",
    "CompareFailed",
    "InvalidRequest",
    "KeyNotFound",
    "RaftCtlError",
    "RequestRejected",
    "Unavailable",
    "UsageError",
]
