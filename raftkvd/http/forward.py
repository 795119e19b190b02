"""The REST server's way into the cluster: an asyncio client of the node's ZeroMQ client
protocol (raftkv.protocol) that multiplexes every in-flight request over one DEALER per
target node.

Unlike raftctl.Client (one request at a time, one thread each), many HTTP handlers share
this client: each request is tagged with a fresh "id", one reader callback per socket hands
each reply to the future waiting for that id, and a late reply to a request that already
gave up finds nobody and is dropped. So 64 concurrent HTTP connections cost 64 futures,
not 64 sockets or threads.

Routing: reads that may be served locally (serializable reads, status, cluster) go to
this node; writes and linearizable reads go to the leader as far as we know it (first
this node, which answers "not_leader" with the leader's client endpoint). The answer is
the leader's; the HTTP client is never redirected. With no leader the call waits out an
election for a bounded time, then raises NoLeader (-> 503 with Retry-After).

Exactly once: each write runs under a session slot of this process (its own session id
and sequence numbers, one write in flight per slot); a retry resends the same (session,
seq), so the state machine applies it once and returns the first result (thesis §6.3).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import Any

import zmq

from raftkv.frames import FrameError, decode_client, encode_client
from raftkv.protocol import Code
from raftkvd.errors import Unavailable

log = logging.getLogger(__name__)

Reply = dict[str, Any]

DEADLINE_S = 5.0
"""Longest one call may take, retries and redirects included."""
PER_TRY_S = 1.0
"""Silence after which one try counts as lost (then retried, the same seq for writes)."""
CONNECT_TIMEOUT_S = 0.2
"""Wait for a connection to a node before a try counts as failed (IMMEDIATE sockets)."""
NO_LEADER_WAIT_S = 1.0
"""How long "no leader" answers are waited out (about two election timeouts) before 503."""
MAX_REDIRECTS = 3
SEND_RETRY_S = 0.005
"""Pause between tries of a send that found no connection or a full queue."""
BACKOFF_START_S = 0.01
BACKOFF_CAP_S = 0.2
MAX_IN_FLIGHT = 512
"""Forwarded requests in flight at once; beyond this the HTTP layer answers 503 at once."""
HWM = 10_000
DRAIN_BATCH = 256
"""Replies taken off a socket per wake-up of its reader."""
MAX_REPLY_BYTES = 72 * 1024 * 1024
_RETRY_CODES = frozenset({Code.NOT_LEADER.value, Code.UNAVAILABLE.value})


class NoLeader(Unavailable):
    """The cluster has no leader right now (or none reachable from here)."""


class Overloaded(Unavailable):
    """Too many requests in flight on this node's REST API."""


class ForwardTimeout(Unavailable):
    """No answer within the call's deadline; a write may or may not have been applied."""


class Closed(Unavailable):
    """The node is shutting down."""


class _Link:
    """One DEALER to one node's client endpoint, shared by every in-flight request to it.

    A plain (not zmq.asyncio) socket watched with the loop's add_reader: sends are one
    non-blocking call, and every reply waiting is delivered in one callback. ZeroMQ's FD
    is edge-triggered, so after any send we look for replies that send may have taken in.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.endpoint = endpoint
        self.socket = zmq.Socket(ctx, zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # Queue only on a live connection: a dead node fails the send instead of
        # swallowing requests that would be delivered, stale, when it comes back.
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.SNDHWM, HWM)
        self.socket.setsockopt(zmq.RCVHWM, HWM)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        self.socket.connect(endpoint)
        self.pending: dict[int, asyncio.Future[Reply | None]] = {}
        self._loop = asyncio.get_running_loop()
        self._fd = self.socket.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._drain)

    def _drain(self) -> None:
        """Hand every waiting reply to the request waiting for its id; drop anything else."""
        for _ in range(DRAIN_BATCH):
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._deliver(frame)
        self._loop.call_soon(self._drain)  # more waiting: go on after the others had a turn

    def _deliver(self, frame: bytes) -> None:
        try:
            reply = decode_client(frame)
        except FrameError:
            return
        req_id = reply.get("id")
        future = self.pending.pop(req_id, None) if type(req_id) is int else None
        if future is not None and not future.done():
            future.set_result(reply)

    async def exchange(self, req_id: int, request: Reply, timeout: float) -> Reply | None:
        """Send `request` as `req_id`; its reply, or None after `timeout` or a failed send."""
        frame = encode_client({**request, "id": req_id})
        future: asyncio.Future[Reply | None] = self._loop.create_future()
        self.pending[req_id] = future
        expiry = self._loop.call_later(timeout, _expire, future)
        try:
            if not await self._send(frame, min(timeout, CONNECT_TIMEOUT_S)):
                return None
            return await future
        finally:
            expiry.cancel()
            self.pending.pop(req_id, None)

    async def _send(self, frame: bytes, connect_timeout: float) -> bool:
        """Queue `frame`; if not connected (yet) or the queue is full, retry briefly."""
        deadline = self._loop.time() + connect_timeout
        while True:
            try:
                self.socket.send(frame, zmq.NOBLOCK)
                return True
            except zmq.Again:
                if self._loop.time() >= deadline:
                    return False
            finally:
                if self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    self._loop.call_soon(self._drain)
            await asyncio.sleep(SEND_RETRY_S)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(Closed("node shutting down"))
        self.pending.clear()
        self.socket.close(0)


def _expire(future: asyncio.Future[Reply | None]) -> None:
    if not future.done():
        future.set_result(None)


class _Slot:
    """A session with at most one write in flight, so its seqs reach the log in order."""

    __slots__ = ("session", "seq")

    def __init__(self, session: str) -> None:
        self.session = session
        self.seq = 0


class ForwardClient:
    """Multiplexed asyncio client for the REST server of one node. Not thread-safe: it
    lives on the HTTP server's event loop."""

    def __init__(
        self,
        ctx: zmq.Context,
        local_endpoint: str,
        *,
        deadline: float = DEADLINE_S,
        per_try: float = PER_TRY_S,
        no_leader_wait: float = NO_LEADER_WAIT_S,
        max_in_flight: int = MAX_IN_FLIGHT,
        session_prefix: str | None = None,
    ) -> None:
        self.local = local_endpoint
        self.leader: str | None = None
        """The leader's client endpoint as last learned; None: ask this node first."""
        self.deadline = deadline
        self.per_try = per_try
        self.no_leader_wait = no_leader_wait
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._ctx = ctx
        self._links: dict[str, _Link] = {}
        self._ids = itertools.count(1)
        self._session_prefix = session_prefix or f"http-{uuid.uuid4().hex[:16]}"
        self._free_slots: list[_Slot] = []
        self._slot_count = 0
        self._closed = False

    @property
    def links(self) -> dict[str, _Link]:
        """Open sockets by endpoint (one per node talked to)."""
        return dict(self._links)

    async def local_call(self, request: Reply) -> Reply:
        """Ask this node itself (serializable reads, status, cluster)."""
        return await self._guarded(request, to_leader=False)

    async def leader_call(self, request: Reply) -> Reply:
        """A linearizable read: the leader's answer."""
        return await self._guarded(request, to_leader=True)

    async def write(self, request: Reply) -> Reply:
        """A write (put/delete/cas) under a session slot; retries keep its seq."""
        slot = self._free_slots.pop() if self._free_slots else self._new_slot()
        try:
            slot.seq += 1
            return await self._guarded(
                {**request, "session": slot.session, "seq": slot.seq}, to_leader=True
            )
        finally:
            self._free_slots.append(slot)

    def _new_slot(self) -> _Slot:
        self._slot_count += 1
        return _Slot(f"{self._session_prefix}-{self._slot_count}")

    async def _guarded(self, request: Reply, to_leader: bool) -> Reply:
        if self._closed:
            raise Closed("node shutting down")
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"more than {self.max_in_flight} requests in flight")
        self.in_flight += 1
        try:
            return await self._call(request, to_leader)
        finally:
            self.in_flight -= 1

    async def _call(self, request: Reply, to_leader: bool) -> Reply:
        """Send until some node gives a real answer, within the deadline.

        "not_leader" with a hint is followed at once (a few times); silence, a failed
        send or "no leader" go back to this node after a backoff, and "no leader" for
        longer than `no_leader_wait` gives up with NoLeader.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.deadline
        no_leader_since: float | None = None
        backoff = BACKOFF_START_S
        redirects = 0
        target = (self.leader or self.local) if to_leader else self.local
        # This node answers its own questions or nothing will: no point in resending them.
        per_try = self.per_try if to_leader else self.deadline
        last = "no answer"
        while (remaining := deadline - loop.time()) > 0:
            reply = await self._link(target).exchange(
                next(self._ids), request, min(per_try, remaining)
            )
            if self._closed:
                raise Closed("node shutting down")
            code = reply.get("code") if reply is not None else None
            if reply is not None and code not in _RETRY_CODES:
                if to_leader:
                    self.leader = target
                return reply
            hint = _leader_hint(reply)
            if hint is not None and redirects < MAX_REDIRECTS:
                self.leader = target = hint
                redirects += 1
                continue
            if self.leader == target:
                self.leader = None
            if reply is None:
                last = f"{target} did not answer"
            else:
                last = str(reply.get("error") or code)
                now = loop.time()
                no_leader_since = no_leader_since if no_leader_since is not None else now
                if now - no_leader_since >= self.no_leader_wait:
                    raise NoLeader(last)
            target, redirects = self.local, 0
            await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
            backoff = min(backoff * 2, BACKOFF_CAP_S)
        if no_leader_since is not None:
            raise NoLeader(last)
        raise ForwardTimeout(f"no answer within {self.deadline:g}s ({last})")

    def _link(self, endpoint: str) -> _Link:
        link = self._links.get(endpoint)
        if link is None:
            link = self._links[endpoint] = _Link(self._ctx, endpoint)
        return link

    def close(self) -> None:
        """Fail every waiting request (Closed) and close the sockets."""
        self._closed = True
        for link in self._links.values():
            link.close()
        self._links.clear()


def _leader_hint(reply: Reply | None) -> str | None:
    """The leader's client endpoint from a "not_leader" answer, when it names one."""
    if reply is None or reply.get("code") != Code.NOT_LEADER.value:
        return None
    leader = reply.get("leader")
    if not isinstance(leader, str) or not leader.startswith("tcp://"):
        return None
    return leader
