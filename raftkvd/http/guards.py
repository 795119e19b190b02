"""Limits of a node's REST server beyond those of one connection (connection.py): a cap on open
connections (the excess is answered 503 and closed before any parsing), and one rate-limited
log line for refused requests, so garbage cannot flood the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import cast

from .connection import RETRY_AFTER_S

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024
"""Open HTTP connections at most (and at most a quarter of the process's file limit, so
the client sockets always find descriptors)."""
LOG_INTERVAL_S = 1.0


class Refuse(asyncio.Protocol):
    """Answers a connection over the cap with 503 and closes it."""

    BODY = json.dumps({"error": "too many connections"}).encode()
    RESPONSE = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Retry-After: " + RETRY_AFTER_S.encode() + b"\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)  # uvloop's is not an asyncio.Transport
        writer.write(self.RESPONSE)
        writer.close()


def connection_cap() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft // 4))


class BadRequestLog:
    """One warning line per refused request, at most one a second, saying how many were
    suppressed."""

    def __init__(self) -> None:
        self._last = float("-inf")
        self.suppressed = 0

    def __call__(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._last < LOG_INTERVAL_S:
            self.suppressed += 1
            return
        self._last = now
        log.warning("event=http_bad_request reason=%r suppressed=%d", reason[:200], self.suppressed)
        self.suppressed = 0
