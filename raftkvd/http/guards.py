"""Limits on the connections of a node's REST server, so idle or slow clients cannot exhaust it:
a connection cap (the excess is answered 503 and closed before aiohttp sees it), an idle
timeout that also closes a connection whose request head never completes (slowloris; our own
guard, not left to the aiohttp version), and one rate-limited log line for garbage requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import cast

from .rest import RETRY_AFTER_S

IDLE_TIMEOUT_S = 10.0
"""A connection with no request in progress for this long is closed: idle keep-alive
connections, and connections whose request head never completes (ConnectionGuard)."""
MAX_CONNECTIONS = 1024
"""Open HTTP connections at most (and at most a quarter of the process's file limit, so
the Raft and client sockets always find descriptors)."""


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


class ConnectionGuard(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed after IDLE_TIMEOUT_S without a request
    in progress: from its opening until a first request head is complete (slow or absent
    headers), and after each answer (idle keep-alive). Requests in progress are bounded by
    the body timeout and the forwarder's deadline instead."""

    def __init__(self, inner: asyncio.Protocol, guards: dict[asyncio.BaseTransport, ConnectionGuard],
                 timeout: float) -> None:
        self._inner = inner
        self._guards = guards
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.busy = 0
        self.last = self._loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guards[transport] = self
        self._timer = self._loop.call_later(self._timeout, self._check)
        self._inner.connection_made(transport)

    def request_done(self) -> None:
        self.busy -= 1
        self.last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        if self.busy == 0 and now - self.last >= self._timeout:
            if self._transport is not None:
                self._transport.close()
            return
        due = now + self._timeout if self.busy else self.last + self._timeout
        self._timer = self._loop.call_at(due, self._check)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._guards.pop(self._transport, None)
        self._inner.connection_lost(exc)


def connection_cap() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft // 4))


class RateLimitedFilter(logging.Filter):
    """aiohttp logs every garbage request as an error with a traceback: make that one
    warning line, at most one per second, saying how many were suppressed."""

    def __init__(self) -> None:
        super().__init__()
        self._last = float("-inf")
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last < 1.0:
            self.suppressed += 1
            return False
        self._last = now
        exc = record.exc_info[1] if record.exc_info else None
        detail = f" error={str(exc)!r:.200}" if exc is not None else ""
        record.msg = f"event=http_bad_request{detail} what={record.getMessage()!r:.200} " \
                     f"suppressed={self.suppressed}"
        record.args = ()
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info = record.exc_text = None
        self.suppressed = 0
        return True


aiohttp_log = logging.getLogger("raftkvd.http.protocol")
"""aiohttp's logger for the server: one warning line per garbage request, at most one a second."""
aiohttp_log.addFilter(RateLimitedFilter())
