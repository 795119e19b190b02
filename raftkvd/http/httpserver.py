"""The HTTP server of one node: our own HTTP/1.1 connections (connection.py, httptools) on a
uvloop of its own thread, in the node's HTTP process (process.py, worker.py), serving the REST
API (rest.py) behind the connection cap (guards.py), with the node's status polled for
/health and /ready.

A slow or hostile HTTP client can cost the HTTP process time, never the Raft loop a turn.
Requests in progress are bounded by the body timeout and the forwarder's deadline, and the
forwarded requests in flight by forward.MAX_IN_FLIGHT (then 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
import threading
import time
from collections.abc import Callable

import uvloop
import zmq

from raftkv import protocol
from raftkv.curve import ClientCurve, ServerKeys, load_secret, node_secret_path
from raftkv.protocol import Code
from raftkvd.errors import RaftKVError, Unavailable
from raftkvd.metrics import HttpMetrics, Snapshot
from raftkvd.ratelimit import RateLimiter
from raftkvd.settings import NO_LIMITS, NO_SECURITY, LimitsSettings, SecuritySettings

from .auth import Authorizer
from .connection import IDLE_TIMEOUT_S, HttpConnection, Limits
from .forward import ForwardClient
from .guards import BadRequestLog, Refuse, connection_cap
from .rest import PUBLIC_ROUTES, RestApi, required_role
from .tls import TlsError, server_context
from .tokens import TokenFileError, TokenStore, load_store

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 2.0
BIND_RETRY_S = 3.0
START_TIMEOUT_S = 10.0
STATUS_POLL_S = 0.1
"""How often the server asks its node for a fresh status (for /health and /ready)."""


class HttpError(RaftKVError):
    """The REST server could not start (typically: its address is taken)."""


async def _listen(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.BaseProtocol],
                  address: str, tls: ssl.SSLContext | None) -> asyncio.Server:
    """Bind `address`, waiting out a short EADDRINUSE: the HTTP process of this node's previous
    run (killed with it) may still be closing its listener. With `tls`, a handshake must
    finish within the idle timeout, so a silent client holds no connection longer over TLS."""
    host, port = split_address(address)
    deadline = time.monotonic() + BIND_RETRY_S
    handshake = {"ssl_handshake_timeout": IDLE_TIMEOUT_S} if tls is not None else {}
    while True:
        try:
            return await loop.create_server(factory, host, port, reuse_address=True, backlog=1024,
                                            ssl=tls, **handshake)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def split_address(address: str) -> tuple[str, int]:
    """"HOST:PORT" (or "[V6]:PORT") -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


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
        node_id: int = 0,
        security: SecuritySettings = NO_SECURITY,
        limits: LimitsSettings = NO_LIMITS,
    ) -> None:
        """`node_id`, `security`, `limits`: the node this server fronts and its [security]
        and [limits] settings."""
        self.address = address
        self.node_id = node_id
        self.security = security
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
        self._limits: tuple[RestApi, Limits] | None = None
        self._auth: Authorizer | None = None
        self.limiter = RateLimiter(limits.client_rate, limits.burst)
        """REST clients' buckets; only the server's loop touches them (set_limits)."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise HttpError(f"http server on {self.address} did not start within {START_TIMEOUT_S:g}s")
        if self._error is not None:
            self._thread.join()
            if isinstance(self._error, HttpError):
                raise self._error
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

    def set_max_value_bytes(self, max_value_bytes: int) -> None:
        """Safe from any thread (a reload, worker.py): requests from now on are held to the new
        limit, a body's Content-Length included; requests in progress keep the old one."""
        self.max_value_bytes = max_value_bytes
        self._on_loop(self._apply_max_value_bytes)

    def set_limits(self, limits: LimitsSettings) -> None:
        """Safe from any thread (a reload): the buckets take the new rate and burst on the
        server's loop, between two requests."""
        if self._loop is None:
            self.limiter.configure(limits.client_rate, limits.burst)
        else:
            self._on_loop(self.limiter.configure, limits.client_rate, limits.burst)

    def _on_loop(self, fn: Callable[..., object], *args: object) -> None:
        """Run `fn(*args)` on the server's loop, between two requests; nothing once the loop
        is gone (nothing is served any more)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(fn, *args)

    def _apply_max_value_bytes(self) -> None:
        """On the server's loop, so that no request sees one limit half changed."""
        if self._limits is not None:
            api, limits = self._limits
            api.max_value_bytes = self.max_value_bytes
            limits.body_limit = api.body_limit

    def reload_tokens(self) -> None:
        """Safe from any thread (a reload, worker.py): re-read the tokens file; the next
        request is checked against it. An invalid file keeps the tokens in use."""
        path = self.security.tokens_file
        if path is None:
            return
        try:
            store = load_store(path)
        except TokenFileError as exc:
            log.error("event=tokens_reload_failed action=keep_old error=%s", exc)
            return
        self._on_loop(self._apply_tokens, store)
        log.info("event=tokens_reloaded tokens=%d", len(store))

    def _apply_tokens(self, store: TokenStore) -> None:
        if self._auth is not None:
            self._auth.store = store

    def _security(self) -> tuple[ssl.SSLContext | None, Authorizer | None]:
        """The TLS context and the token check [security] asks for; HttpError naming the file
        that cannot be used."""
        sec = self.security
        try:
            tls = (server_context(sec.tls_cert_file, sec.tls_key_file)
                   if sec.tls_cert_file is not None and sec.tls_key_file is not None else None)
            auth = (Authorizer(load_store(sec.tokens_file), sec.open_paths, PUBLIC_ROUTES,
                               required_role) if sec.tokens_file is not None else None)
        except (TlsError, TokenFileError) as exc:
            raise HttpError(str(exc)) from None
        return tls, auth

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

    def _curve(self) -> ClientCurve | None:
        """With CurveZMQ: forward with the node's own key pair, to the node's key (SPEC §8)."""
        curve_dir = self.security.curve_dir
        if curve_dir is None:
            return None
        own = load_secret(node_secret_path(curve_dir, self.node_id))
        return ClientCurve(own, ServerKeys(curve_dir, {self.local_client: self.node_id}))

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tls, self._auth = self._security()
        ctx = zmq.Context()
        forward = ForwardClient(ctx, self.local_client, curve=self._curve())
        poller = StatusPoller(forward)
        api = RestApi(forward, lambda: poller.latest, self.metrics, self.max_value_bytes,
                      self._auth, self.limiter, frozenset(self.security.open_paths))
        limits = Limits(api.body_limit, BadRequestLog())
        self._limits = (api, limits)
        connections: set[HttpConnection] = set()
        cap = connection_cap()

        def protocol_factory() -> asyncio.BaseProtocol:
            if len(connections) >= cap:
                return Refuse()
            return HttpConnection(api.handle, limits, connections)

        server: asyncio.Server | None = None
        try:
            server = await _listen(loop, protocol_factory, self.address, tls)
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
            for connection in list(connections):
                connection.close()
            forward.close()
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
