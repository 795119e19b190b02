"""The REST API of one node (SPEC §5): aiohttp on an asyncio loop of its own thread, in
the node's HTTP process (process.py, worker.py).

It never touches the consensus core or LMDB: key-value requests, /cluster, /metrics and the
node's status travel over the node's own ZeroMQ client protocol (forward.py). /health and
/ready read the latest status (metrics.Snapshot), which this server polls from the node
every STATUS_POLL_S. So a slow or hostile HTTP client can cost the HTTP process time,
never the Raft loop a turn.

Limits, so idle or slow connections cannot exhaust the node: a connection cap (the
excess is answered 503 and closed before aiohttp sees it), an idle timeout that also
closes a connection whose request head never completes (slowloris; our own guard, not
left to the aiohttp version), a body read timeout, a body size limit checked from
Content-Length before reading, and a cap on forwarded requests in flight
(forward.MAX_IN_FLIGHT, then 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, cast

import uvloop
import zmq
from aiohttp import web

from raftkv import protocol
from raftkv.protocol import Code
from raftkvd.errors import RaftKVError, Unavailable
from raftkvd.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from raftkvd.metrics import HttpMetrics, Snapshot

from .forward import ForwardClient
from .webview import WebView

log = logging.getLogger(__name__)

BODY_SLACK_BYTES = 64 * 1024
"""Room for the JSON around a value of max_value_bytes (and some escapes) in a PUT body."""
BODY_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 10.0
"""A connection with no request in progress for this long is closed: idle keep-alive
connections, and connections whose request head never completes (_ConnectionGuard)."""
SHUTDOWN_TIMEOUT_S = 2.0
BIND_RETRY_S = 3.0
START_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 1024
"""Open HTTP connections at most (and at most a quarter of the process's file limit, so
the Raft and client sockets always find descriptors)."""
MAX_LINE_BYTES = 8 * 1024
MAX_HEADER_FIELD_BYTES = 8 * 1024
MAX_HEADERS = 64
MAX_QUERY_FIELDS = 16
MAX_LIST_LIMIT = 2**32
STATUS_STALE_S = 2.0
"""A node whose latest status is older than this is stuck: /health says unhealthy."""
STATUS_POLL_S = 0.1
"""How often the server asks its node for a fresh status (for /health and /ready)."""
RETRY_AFTER_S = "1"
OPENAPI_RESOURCE = "openapi.json"
KV_PREFIX = "/kv/"
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
_JSON_CONTENT_TYPE = "application/json"
_REPLY_STATUS = {
    Code.INVALID.value: 400,
    Code.NOT_FOUND.value: 404,
    Code.COMPARE_FAILED.value: 409,
    Code.TOO_LARGE.value: 413,
    Code.NO_SPACE.value: 507,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(RaftKVError):
    """The REST server could not start (typically: its address is taken)."""


class BadRequest(Exception):
    """A request this API refuses before forwarding it: (HTTP status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(http_status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, http_status)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response; every 503 also says when to retry."""
    if status == 503:
        headers = {**(headers or {}), "Retry-After": RETRY_AFTER_S}
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode(), status=status,
        content_type=_JSON_CONTENT_TYPE, headers=headers,
    )


def _load_openapi() -> bytes:
    return resources.files(__package__).joinpath(OPENAPI_RESOURCE).read_bytes()


class RestApi:
    """The handlers: validation here, meaning at the node (reached through `forward`)."""

    def __init__(
        self,
        forward: ForwardClient,
        snapshot: Callable[[], Snapshot | None],
        metrics: HttpMetrics | None,
        max_value_bytes: int,
        guards: dict[asyncio.BaseTransport, _ConnectionGuard] | None = None,
    ) -> None:
        self.forward = forward
        self.guards = guards if guards is not None else {}
        self.snapshot = snapshot
        self.metrics = metrics
        self.max_value_bytes = max_value_bytes
        self.body_limit = max_value_bytes + BODY_SLACK_BYTES
        self.openapi = _load_openapi()
        self.web = WebView()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.body_limit, middlewares=[self._middleware])
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/cluster", self.cluster)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/openapi.json", self.openapi_json)
        self.web.add_routes(app.router)  # GET /: the live web view
        app.router.add_get("/kv", self.kv_list)
        # any character, newlines included: the key itself is taken from the raw path (_key)
        app.router.add_get("/kv/{key:[\\s\\S]*}", self.kv_get)
        app.router.add_put("/kv/{key:[\\s\\S]*}", self.kv_put)
        app.router.add_delete("/kv/{key:[\\s\\S]*}", self.kv_delete)
        if self.metrics is not None:
            for route in app.router.routes():
                if route.method != "HEAD":
                    self.metrics.declare(route.method, route.resource.canonical, 200)
        return app

    # ---- errors and metrics, around every handler --------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        guard = self.guards.get(request.transport) if request.transport is not None else None
        if guard is not None:
            guard.busy += 1
        try:
            response = await self._answer(request, handler)
        finally:
            if guard is not None:
                guard.request_done()
        if self.metrics is not None:
            resource_ = getattr(request.match_info.route, "resource", None)
            route = resource_.canonical if resource_ is not None else UNMATCHED_ROUTE
            method = request.method if request.method in KNOWN_METHODS else "OTHER"
            self.metrics.observe(method, route, response.status, time.perf_counter() - started)
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.body_limit:
            # Answer from the header alone and drop the connection: the body is never read.
            response = error_response(
                413, f"request body is {length} bytes, the limit is {self.body_limit}"
            )
            response.force_close()
            return response
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        except Unavailable as exc:
            return error_response(503, f"unavailable: {exc}")
        except web.HTTPRequestEntityTooLarge:
            response = error_response(413, f"request body is over the limit of {self.body_limit} bytes")
            response.force_close()
            return response
        except web.HTTPException as exc:  # the router's 404 and 405
            if exc.status == 405:
                allow = exc.headers.get("Allow", "")
                return _json({"error": f"method {request.method} not allowed; allowed: {allow}"},
                             405, {"Allow": allow})
            if exc.status == 404:
                return error_response(404, f"no such resource: {request.path}")
            return error_response(exc.status, exc.reason)
        except Exception:
            log.exception("event=http_handler_error method=%s path=%.200s", request.method, request.path)
            return error_response(500, "internal error")

    # ---- node state ----------------------------------------------------------------------
    def _status(self) -> tuple[dict[str, Any], str | None]:
        """The latest published status, and why it is unusable if it is."""
        snap = self.snapshot()
        if snap is None:
            return {}, "node is starting"
        age = time.monotonic() - snap.at
        if age > STATUS_STALE_S:
            return snap.status, f"node status is {age:.1f}s old: the node loop is stuck"
        return snap.status, None

    async def health(self, request: web.Request) -> web.Response:
        st, problem = self._status()
        if not st:  # the same shape, with nothing known yet
            return error_response(503, problem or "no status", status="unhealthy", keys=None,
                                  node_id=None, role=None, term=None, leader_id=None)
        if problem is None and not st.get("healthy"):
            problem = "no leader known"
        body = {
            "status": "unhealthy" if problem else "healthy",
            "keys": str(st["keys"]),
            "node_id": st["id"],
            "role": st["role"],
            "term": st["term"],
            "leader_id": st["leader_id"] or None,
        }
        if problem:
            return _json({**body, "error": problem}, 503)
        return _json(body)

    async def ready(self, request: web.Request) -> web.Response:
        st, problem = self._status()
        if problem is None and not st.get("ready"):
            problem = ("no leader known" if not st.get("healthy")
                       else "still applying what was committed when the node started")
        if problem:
            return error_response(503, problem, status="not ready")
        return _json({"status": "ready", "node_id": st["id"], "leader_id": st["leader_id"],
                      "applied": st["applied"]})

    async def cluster(self, request: web.Request) -> web.Response:
        reply = _checked(await self.forward.local_call({"op": protocol.Op.CLUSTER.value}))
        return _json(reply["nodes"])

    async def metrics_text(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return error_response(404, "metrics are not enabled")
        node = _checked(await self.forward.local_call({"op": protocol.Op.METRICS.value}))
        response = web.Response(body=node["text"].encode() + self.metrics.exposition())
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self.openapi, content_type=_JSON_CONTENT_TYPE)

    # ---- keys and values --------------------------------------------------------------------
    async def kv_get(self, request: web.Request) -> web.Response:
        key = _key(request)
        consistency = _consistency(_query(request))
        call = {"op": protocol.Op.GET.value, "key": key, "consistency": consistency}
        if consistency == protocol.CONSISTENCY_SERIALIZABLE:
            reply = await self.forward.local_call(call)
        else:
            reply = await self.forward.leader_call(call)
        if reply.get("code") == Code.NOT_FOUND.value:
            return error_response(404, "key not found", key=key)
        return _json({"key": key, "value": _checked(reply)["value"]})

    async def kv_put(self, request: web.Request) -> web.Response:
        key = _key(request)
        value = _value(await self._body(request), self.max_value_bytes)
        _checked(await self.forward.write({"op": protocol.Op.PUT.value, "key": key, "value": value}))
        return _json({"key": key, "value": value, "status": "ok"})

    async def kv_delete(self, request: web.Request) -> web.Response:
        key = _key(request)
        reply = _checked(await self.forward.write({"op": protocol.Op.DELETE.value, "key": key}))
        if not reply.get("deleted"):
            return error_response(404, "key not found", key=key)
        return _json({"key": key, "status": "deleted"})

    async def kv_list(self, request: web.Request) -> web.Response:
        query = _query(request)
        prefix = query.get("prefix", "")
        if len(_utf8(prefix, "prefix")) > protocol.MAX_KEY_BYTES:
            raise BadRequest(400, f"prefix must be at most {protocol.MAX_KEY_BYTES} bytes")
        limit = _limit(query.get("limit"))
        consistency = _consistency(query)
        call = {"op": protocol.Op.LIST.value, "prefix": prefix, "limit": limit,
                "consistency": consistency}
        if consistency == protocol.CONSISTENCY_SERIALIZABLE:
            reply = await self.forward.local_call(call)
        else:
            reply = await self.forward.leader_call(call)
        # One small dumps per key rather than one for the whole list: the C encoder holds the
        # GIL throughout, and a long list must not stall the Raft loop of this process.
        entries = ", ".join(json.dumps({"key": k, "value": v}, ensure_ascii=False)
                            for k, v in _checked(reply)["items"])
        return web.Response(body=f'{{"keys": [{entries}]}}'.encode(), content_type=_JSON_CONTENT_TYPE)

    async def _body(self, request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                return await request.read()
        except TimeoutError:
            raise BadRequest(408, f"request body not received within {BODY_TIMEOUT_S:g}s") from None


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    """The node's answer if it is a success; else the matching HTTP error."""
    code = reply.get("code")
    if code == Code.OK.value:
        return reply
    status = _REPLY_STATUS.get(str(code), 500)
    raise BadRequest(status, str(reply.get("error") or code))


def _key(request: web.Request) -> str:
    """The key from the raw request path, percent-decoded as UTF-8 ("%2F" is a "/")."""
    raw = request.raw_path.partition("?")[0]
    if raw.startswith(KV_PREFIX):
        raw = raw[len(KV_PREFIX):]
        try:
            key = urllib.parse.unquote(raw, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(400, "key is not valid percent-encoded UTF-8") from None
    else:  # an absolute-form request target: trust the router's decoding
        key = request.match_info.get("key", "")
    size = len(_utf8(key, "key"))
    if not 1 <= size <= protocol.MAX_KEY_BYTES:
        raise BadRequest(400, f"key must be 1 to {protocol.MAX_KEY_BYTES} bytes of UTF-8, got {size}")
    return key


def _query(request: web.Request) -> dict[str, str]:
    raw = request.raw_path.partition("?")[2]
    try:
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, encoding="utf-8",
                                       errors="strict", max_num_fields=MAX_QUERY_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "query string is not valid percent-encoded UTF-8 "
                              f"(at most {MAX_QUERY_FIELDS} fields)") from None
    return dict(pairs)


def _consistency(query: dict[str, str]) -> str:
    consistency = query.get("consistency", protocol.CONSISTENCY_LINEARIZABLE)
    if consistency not in (protocol.CONSISTENCY_LINEARIZABLE, protocol.CONSISTENCY_SERIALIZABLE):
        raise BadRequest(400, "consistency must be linearizable or serializable")
    return consistency


def _limit(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise BadRequest(400, f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, not {text[:40]!r}")
    return int(text)


def _value(body: bytes, max_value_bytes: int) -> str:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest(400, 'body must be JSON: {"value": "..."}') from None
    if not isinstance(document, dict) or not isinstance(document.get("value"), str):
        raise BadRequest(400, 'body must be a JSON object with a string "value"')
    value = document["value"]
    size = len(_utf8(value, "value"))
    if size > max_value_bytes:
        raise BadRequest(413, f"value is {size} bytes, the limit is {max_value_bytes}")
    return value


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(400, f"{what} is not valid UTF-8 (lone surrogate)") from None


class _Refuse(asyncio.Protocol):
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


class _ConnectionGuard(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed after IDLE_TIMEOUT_S without a request
    in progress: from its opening until a first request head is complete (slow or absent
    headers), and after each answer (idle keep-alive). Requests in progress are bounded by
    the body timeout and the forwarder's deadline instead."""

    def __init__(self, inner: asyncio.Protocol, guards: dict[asyncio.BaseTransport, _ConnectionGuard],
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


async def _listen(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.BaseProtocol],
                  address: str) -> asyncio.Server:
    """Bind `address`, waiting out a short EADDRINUSE: the HTTP process of this node's previous
    run (killed with it) may still be closing its listener."""
    host, port = split_address(address)
    deadline = time.monotonic() + BIND_RETRY_S
    while True:
        try:
            return await loop.create_server(factory, host, port, reuse_address=True, backlog=1024)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def connection_cap() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft // 4))


def split_address(address: str) -> tuple[str, int]:
    """"HOST:PORT" (or "[V6]:PORT") -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _RateLimitedFilter(logging.Filter):
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


_aiohttp_log = logging.getLogger("raftkvd.http.protocol")
_aiohttp_log.addFilter(_RateLimitedFilter())


class HttpServer:
    """The REST server of one node, on a thread and asyncio loop of its own.

    `start()` returns once the address is bound (or raises HttpError); `stop()` closes the
    listener, fails waiting requests, closes connections and joins the thread. The node's
    status comes from polling the node itself (StatusPoller).
    """

    def __init__(
        self,
        address: str,
        local_client: str,
        max_value_bytes: int,
        metrics: HttpMetrics | None = None,
        *,
        name: str = "raftkvd-http",
    ) -> None:
        self.address = address
        self.local_client = local_client
        self.max_value_bytes = max_value_bytes
        self.metrics = metrics
        self.name = name
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise HttpError(f"http server on {self.address} did not start within {START_TIMEOUT_S:g}s")
        if self._error is not None:
            self._thread.join()
            raise HttpError(f"cannot serve http on {self.address}: {self._error}")

    def stop(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if thread is None or not thread.is_alive() or loop is None or stop is None:
            return
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop already closed
            return
        thread.join(SHUTDOWN_TIMEOUT_S + 3.0)
        if thread.is_alive():
            log.warning("event=http_stop_timeout address=%s", self.address)

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # report a failed start to start(); log a failed run
            if not self._started.is_set():
                self._error = exc
            else:
                log.exception("event=http_server_failed address=%s", self.address)
        finally:
            self._started.set()
            loop.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ctx = zmq.Context()
        forward = ForwardClient(ctx, self.local_client)
        poller = StatusPoller(forward)
        guards: dict[asyncio.BaseTransport, _ConnectionGuard] = {}
        api = RestApi(forward, lambda: poller.latest, self.metrics, self.max_value_bytes, guards)
        runner = web.AppRunner(
            api.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            keepalive_timeout=IDLE_TIMEOUT_S, lingering_time=1.0, max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_HEADER_FIELD_BYTES, max_headers=MAX_HEADERS, logger=_aiohttp_log,
        )
        server: asyncio.Server | None = None
        try:
            await runner.setup()
            handlers = runner.server
            assert handlers is not None
            cap = connection_cap()

            def protocol_factory() -> asyncio.BaseProtocol:
                if len(handlers.connections) >= cap:
                    return _Refuse()
                return _ConnectionGuard(handlers(), guards, IDLE_TIMEOUT_S)

            server = await _listen(loop, protocol_factory, self.address)
            self.port = server.sockets[0].getsockname()[1]
            self._started.set()
            polling = asyncio.create_task(poller.run())
            await self._stop.wait()
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
        finally:
            if server is not None:
                server.close()
            forward.close()
            await runner.cleanup()
            ctx.destroy(linger=0)


class StatusPoller:
    """Keeps the node's latest status: asks the node every STATUS_POLL_S, and stamps each
    answer with its arrival, so a node loop that stops answering ages into "stuck"."""

    def __init__(self, forward: ForwardClient) -> None:
        self.forward = forward
        self.latest: Snapshot | None = None

    async def run(self) -> None:
        while True:
            try:
                reply = await self.forward.local_call({"op": protocol.Op.STATUS.value})
            except Unavailable:
                pass  # the snapshot ages; /health reports it once it is stale
            else:
                if reply.get("code") == Code.OK.value:
                    self.latest = Snapshot(time.monotonic(), reply["status"])
            await asyncio.sleep(STATUS_POLL_S)
