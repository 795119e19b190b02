"""One HTTP/1.1 connection of a node's REST server: bytes in, parsed by httptools (llhttp, the
parser of Node.js), requests handed to the application one at a time, answers written back.

A protocol of our own rather than a framework: a forwarded write costs this process a few
tens of microseconds instead of a framework's few hundred, and every limit is ours to see.
Limits, so idle or slow clients cannot exhaust the node:
- a request line and each header field are at most MAX_LINE_BYTES, at most MAX_HEADERS of them;
- a body over the application's limit is refused from its Content-Length alone (413, the
  connection closed, the body never read), or as soon as a chunked one grows past it;
- a body must arrive within BODY_TIMEOUT_S of its head (408);
- a connection with no request in progress for IDLE_TIMEOUT_S is closed: idle keep-alive
  connections, and heads that never complete (slowloris);
- pipelined requests wait their turn; past MAX_PIPELINED, reading pauses.
Anything the parser rejects is answered 400 and the connection closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024
MAX_HEADERS = 64
BODY_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 10.0
MAX_PIPELINED = 64
RETRY_AFTER_S = "1"
RETRY_STATUSES = frozenset({429, 503})
JSON_TYPE = "application/json"
STREAM_LINGER_S = 30.0
"""How long a streamed answer that ended may take to reach a client that reads slowly (its
last words: why it ended); then the connection is dropped, whatever is still unsent."""


@dataclass(slots=True)
class Request:
    method: str
    target: str
    """The request target as sent (origin form "/kv/a%2Fb?x=1", or absolute form)."""
    path: str
    """The target's path, still percent-encoded."""
    query: str
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes = b""
    received: float = 0.0
    """time.monotonic() once the request was parsed (traced writes report it)."""
    client: str = ""
    """Who sent it, the key of its rate limit (rest.py): "addr:IP" from the connection,
    "token:NAME" once its bearer token is checked (auth.py)."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    """Close the connection after this answer."""
    stream: Stream | None = None
    """A body of unknown length, written as it comes (Server-Sent Events, sse.py) and ended
    by closing the connection; `body` is then unused."""


class Sink(Protocol):
    """Where a stream writes: the connection's transport."""

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel: the client is not keeping up."""
        ...


Stream = Callable[[Sink], Awaitable[None]]


def json_response(data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None,
                  close: bool = False) -> Response:
    """A JSON answer; every 503 and 429 also says when to retry (1 s unless told)."""
    extra = list(headers or [])
    if status in RETRY_STATUSES and all(name != "Retry-After" for name, _ in extra):
        extra.append(("Retry-After", RETRY_AFTER_S))
    return Response(status, json.dumps(data, ensure_ascii=False).encode(), JSON_TYPE, extra, close)


def error_response(http_status: int, message: str, close: bool = False, **fields: Any) -> Response:
    """Every error body is JSON {"error": "..."} (SPEC §5); `fields` add to it."""
    return json_response({"error": message, **fields}, http_status, close=close)


def serialize(response: Response, head_only: bool = False) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Type: {response.content_type}"]
    if response.stream is None:
        lines.append(f"Content-Length: {len(response.body)}")
    lines += [f"{name}: {value}" for name, value in response.headers]
    if response.close or response.stream is not None:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


Handler = Callable[[Request], Awaitable[Response]]


def peer_client(transport: asyncio.BaseTransport) -> str:
    """"addr:IP" of the connection's peer (its port left out: one client, many connections);
    "addr:" with no IP known (a Unix socket, a peer already gone)."""
    peer = transport.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    return f"addr:{host}"


class Limits:
    """What the application lets a connection carry."""

    def __init__(self, body_limit: int, on_bad_request: Callable[[str], None]) -> None:
        self.body_limit = body_limit
        self.on_bad_request = on_bad_request


class HttpConnection(asyncio.Protocol):
    """One client connection; `handle` answers each complete request, in order."""

    def __init__(self, handle: Handler, limits: Limits, connections: set[HttpConnection]) -> None:
        self._handle = handle
        self._limits = limits
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[Request, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._lost = False
        self._paused = False
        self._client = ""
        self._reset_request()

    # ---- the connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._client = peer_client(self._transport)
        self._connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._lost = True
        self._connections.discard(self)
        for timer in (self._idle, self._body_timer):
            if timer is not None:
                timer.cancel()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported", stop=False)
        except httptools.HttpParserError as exc:
            if not self._closing:  # else a callback refused the request (_Refused) and answered
                self._refuse(400, f"malformed HTTP request: {exc}", stop=False)

    def close(self) -> None:
        """Stop: close the connection now (server shutdown, idle timeout)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    # ---- parser callbacks (httptools calls them from feed_data) ------------------------------
    def _reset_request(self) -> None:
        self._target = bytearray()
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._body = bytearray()

    def on_message_begin(self) -> None:
        self._reset_request()

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > MAX_LINE_BYTES:
            self._refuse(414, f"request target over {MAX_LINE_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS or len(name) + len(value) > MAX_LINE_BYTES:
            self._refuse(431, f"at most {MAX_HEADERS} header fields of {MAX_LINE_BYTES} bytes each")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        headers = self._headers
        if "content-encoding" in headers and headers["content-encoding"].lower() != "identity":
            self._refuse(415, "compressed bodies are not supported")
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding and encoding != "chunked":
            self._refuse(400, f"transfer encoding {encoding!r} is not supported")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                self._refuse(400, "bad Content-Length")
            if int(length) > self._limits.body_limit:
                # answered from the header alone: the body is never read
                self._refuse(413, f"request body is {length} bytes, "
                                  f"the limit is {self._limits.body_limit}")
        if headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length not in (None, "0") or encoding:
            if self._idle is not None:  # from here on the body's own deadline governs
                self._idle.cancel()
                self._idle = None
            self._body_timer = self._loop.call_later(BODY_TIMEOUT_S, self._body_too_slow)

    def on_body(self, body: bytes) -> None:
        self._body += body
        if len(self._body) > self._limits.body_limit:
            self._refuse(413, f"request body is over the limit of {self._limits.body_limit} bytes")

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        target = self._target.decode("latin-1")
        path, query = self._split(target)
        request = Request(self._parser.get_method().decode("latin-1"), target, path, query,
                          self._headers, bytes(self._body), time.monotonic(), self._client)
        self._queue.append((request, self._parser.should_keep_alive()))
        if len(self._queue) >= MAX_PIPELINED and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        if self._worker is None or self._worker.done():
            self._worker = self._loop.create_task(self._answer_queue())

    @staticmethod
    def _split(target: str) -> tuple[str, str]:
        if not target.startswith("/"):  # absolute form: http://host/path?query
            try:
                parsed = httptools.parse_url(target.encode("latin-1"))
            except httptools.HttpParserInvalidURLError:
                return "", ""
            return (parsed.path or b"/").decode("latin-1"), (parsed.query or b"").decode("latin-1")
        path, _, query = target.partition("?")
        return path, query

    # ---- answering -----------------------------------------------------------------------------
    async def _answer_queue(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        while self._queue and not self._closing:
            request, keep_alive = self._queue.popleft()
            response = await self._handle(request)
            if self._closing:
                return
            if not keep_alive:
                response.close = True
            assert self._transport is not None
            self._transport.write(serialize(response, head_only=request.method == "HEAD"))
            if response.stream is not None:
                if request.method != "HEAD":
                    await response.stream(self)
                self._linger()
                return
            if response.close:
                self.close()
                return
            if self._paused and len(self._queue) < MAX_PIPELINED // 2:
                self._paused = False
                self._transport.resume_reading()
        self._arm_idle()

    # ---- streams (Sink) ----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(data)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def _linger(self) -> None:
        """A stream ended: close once its last bytes are out, or drop it after STREAM_LINGER_S."""
        self.close()
        self._loop.call_later(STREAM_LINGER_S, self._drop)

    def _drop(self) -> None:
        if not self._lost and self._transport is not None:
            self._transport.abort()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(IDLE_TIMEOUT_S, self._idle_too_long)

    def _idle_too_long(self) -> None:
        if self._worker is None or self._worker.done():
            self.close()

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if not self._closing:
            self._write_and_close(
                error_response(408, f"request body not received within {BODY_TIMEOUT_S:g}s"))

    def _refuse(self, status: int, message: str, stop: bool = True) -> None:
        """Answer a request we will not read further, close, and (from a parser callback)
        stop the parser."""
        self._limits.on_bad_request(message)
        self._write_and_close(error_response(status, message, close=True))
        if stop:
            raise _Refused

    def _write_and_close(self, response: Response) -> None:
        response.close = True
        idle = self._worker is None or self._worker.done()
        if self._transport is not None and not self._closing and idle:
            self._transport.write(serialize(response))
        self.close()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request (httptools hands it
    back from feed_data as an HttpParserCallbackError)."""
