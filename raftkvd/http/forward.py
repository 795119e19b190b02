"""The REST server's way into the cluster: an asyncio driver of the client core (raftkv.routing)
that multiplexes every in-flight request over one DEALER per target node.

Unlike raftctl.Client (one request at a time), many HTTP handlers share this client: each try
is tagged with a fresh "id", one reader callback per socket hands each reply to the future
waiting for that id, and a late reply to a try that is over finds nobody and is dropped.
So 64 concurrent HTTP connections cost 64 futures, not 64 sockets or threads.

Routing is the client core's, with this node as the one endpoint it knows at first: reads
that may be served locally (serializable reads, status, metrics) go to this node alone;
writes, linearizable reads and the cluster view go to the leader as far as we know it (first
this node, which answers "not_leader" with the leader's client endpoint). The answer is the
leader's; the HTTP client is never redirected. With no leader the call waits out an
election for NO_LEADER_WAIT_S, then raises NoLeader (-> 503 with Retry-After).

Exactly once: each write runs under a session slot of this process (its own session id
and sequence numbers, one write in flight per slot); a retry resends the same (session,
seq), so the state machine applies it once and returns the first result (thesis §6.3).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import zmq

from raftkv.curve import ClientCurve, KeyFileError
from raftkv.frames import FrameError, decode_batch, encode_batch
from raftkv.routing import Call, Outcome, Route, Router
from raftkv.sockets import close_link, dropped, open_link
from raftkvd.errors import Unavailable
from raftkvd.net.clientendpoint import FORWARDER_PREFIX

log = logging.getLogger(__name__)

Reply = dict[str, Any]

DEADLINE_S = 5.0
"""Longest one call may take, retries and redirects included."""
CONNECT_TIMEOUT_S = 0.2
"""Wait for a connection to a node before a try counts as lost (IMMEDIATE sockets)."""
NO_LEADER_WAIT_S = 1.0
"""How long "no leader" answers are waited out (about two election timeouts) before 503."""
SEND_RETRY_S = 0.005
"""Pause between tries of a send that found no connection or a full queue."""
MAX_IN_FLIGHT = 512
"""Forwarded requests in flight at once; beyond this the HTTP layer answers 503 at once."""
DRAIN_BATCH = 256
"""Replies taken off a socket per wake-up of its reader."""


class NoLeader(Unavailable):
    """The cluster has no leader right now (or none reachable from here)."""


class Overloaded(Unavailable):
    """Too many requests in flight on this node's REST API."""


class ForwardTimeout(Unavailable):
    """No answer within the call's deadline; a write may or may not have been applied."""


class Closed(Unavailable):
    """The node is shutting down."""


class _Link:
    """One DEALER to one node's client endpoint, shared by every in-flight try to it.

    A plain (not zmq.asyncio) socket (raftkv/sockets.py) watched with the loop's add_reader:
    sends are one non-blocking call, and every reply waiting is delivered in one callback.
    ZeroMQ's FD is edge-triggered, so after any send we look for replies that send may have
    taken in. A socket monitor reports a dropped connection, which loses the tries it carried.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: ClientCurve | None = None) -> None:
        """`curve`: with CurveZMQ, this link's keys; its node's redirects teach it the leader's."""
        self.endpoint = endpoint
        self.curve = curve
        # named as a forwarder: the node's own rate limit leaves it be (clientendpoint.py)
        routing_id = FORWARDER_PREFIX + uuid.uuid4().hex.encode()
        self.socket, self.monitor = open_link(ctx, endpoint, _link_keys(curve, endpoint), routing_id)
        self.pending: dict[int, _Flight] = {}
        """Tries not yet answered nor lost, by id, with the call they belong to."""
        self.sent: set[int] = set()
        self._outgoing: list[_Outgoing] = []
        """Tries to send at the end of this loop iteration, in one frame (raftkv/frames.py)."""
        self._flush_scheduled = False
        self._retry: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._fd = self.socket.getsockopt(zmq.FD)
        self._monitor_fd = self.monitor.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._drain)
        self._loop.add_reader(self._monitor_fd, self._watch)

    def start(self, req_id: int, message: Reply, flight: _Flight) -> None:
        """Send `message` as try `req_id` of `flight`, which hears of its reply or its loss."""
        self.pending[req_id] = flight
        self._outgoing.append(_Outgoing(req_id, message, self._loop.time()))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def forget(self, req_id: int) -> None:
        """The try's call is over: a late reply to it finds nobody."""
        self.pending.pop(req_id, None)
        self.sent.discard(req_id)

    def _flush(self) -> None:
        """Send every try queued since the last flush in one frame; if not connected (yet)
        or the queue is full, retry briefly, and lose the tries that waited too long."""
        self._flush_scheduled = False
        self._retry = None
        waiting = [item for item in self._outgoing if item.req_id in self.pending]
        self._outgoing = []
        if not waiting:
            return
        frame = encode_batch([{**item.message, "id": item.req_id} for item in waiting])
        try:
            self.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            now = self._loop.time()
            late = [item for item in waiting if now - item.queued_at >= CONNECT_TIMEOUT_S]
            self._outgoing = [item for item in waiting if now - item.queued_at < CONNECT_TIMEOUT_S]
            if self._outgoing:
                self._retry = self._loop.call_later(SEND_RETRY_S, self._flush)
            for item in late:
                self._lose(item.req_id)
            return
        finally:
            if self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._loop.call_soon(self._drain)
        for item in waiting:
            flight = self.pending.get(item.req_id)
            if flight is not None:
                self.sent.add(item.req_id)
                flight.sent(self.endpoint)

    def _lose(self, req_id: int) -> None:
        flight = self.pending.pop(req_id, None)
        self.sent.discard(req_id)
        if flight is not None:
            flight.lost(self.endpoint)

    def _drain(self) -> None:
        """Hand every waiting reply to the call waiting for its id; drop anything else."""
        for _ in range(DRAIN_BATCH):
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._deliver(frame)
        self._loop.call_soon(self._drain)  # more waiting: go on after the others had a turn

    def _deliver(self, frame: bytes) -> None:
        try:
            replies, _ = decode_batch(frame)
        except FrameError:
            return
        for reply in replies:
            if self.curve is not None:
                self.curve.servers.learn(reply)
            req_id = reply.get("id")
            flight = self.pending.pop(req_id, None) if type(req_id) is int else None
            if flight is not None:
                self.sent.discard(req_id)
                flight.answered(self.endpoint, reply)

    def _watch(self) -> None:
        """The connection dropped: the tries it carried will not be answered."""
        if dropped(self.monitor):
            for req_id in list(self.sent):
                self._lose(req_id)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        self._loop.remove_reader(self._monitor_fd)
        if self._retry is not None:
            self._retry.cancel()
        flights = list(self.pending.values())
        self.pending.clear()
        self.sent.clear()
        for flight in flights:
            flight.fail(Closed("node shutting down"))
        close_link(self.socket, self.monitor)


@dataclass(slots=True)
class _Outgoing:
    req_id: int
    message: Reply
    queued_at: float


class _Flight:
    """One routing.Call on the event loop, driven by callbacks: its tries' replies and losses
    come from the links, its timers (hedging, silence, retries) from one loop timer at the
    call's next wake-up. The handler awaits `result` alone, resolved once the call is over."""

    def __init__(self, client: ForwardClient, call: Call, request: Reply) -> None:
        self.client = client
        self.call = call
        self.request = request
        self.loop = asyncio.get_running_loop()
        self.result: asyncio.Future[None] = self.loop.create_future()
        self.tries: dict[int, _Link] = {}
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        self._step(self.call.start())

    # ---- from the links --------------------------------------------------------------------
    def sent(self, endpoint: str) -> None:
        """A try reached a connection: its call's timers count from now."""
        self.call.sent(endpoint, self.loop.time())
        self._arm()

    def answered(self, endpoint: str, reply: Reply) -> None:
        self._step(self.call.answered(endpoint, reply, self.loop.time()))

    def lost(self, endpoint: str) -> None:
        self._step(self.call.lost(endpoint, self.loop.time()))

    def fail(self, exc: Exception) -> None:
        if not self.result.done():
            self.result.set_exception(exc)
        self.end()

    # ---- driving ----------------------------------------------------------------------------
    def _step(self, endpoints: list[str]) -> None:
        if self.result.done():
            return
        if self.client.closed:
            self.fail(Closed("node shutting down"))
            return
        self._launch(endpoints)
        self._launch(self.call.due(self.loop.time()))
        if self.call.done:
            self.result.set_result(None)
            self.end()
        else:
            self._arm()

    def _launch(self, endpoints: list[str]) -> None:
        for endpoint in endpoints:
            req_id = next(self.client.ids)
            link = self.client.link(endpoint)
            self.tries[req_id] = link
            link.start(req_id, self.request, self)

    def _arm(self) -> None:
        if self.result.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(self.call.wakeup(), self._due)

    def _due(self) -> None:
        self._timer = None
        self._step([])

    def end(self) -> None:
        """The call is over (or abandoned): stop its timer, forget its tries."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for req_id, link in self.tries.items():
            link.forget(req_id)
        self.tries.clear()


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
        no_leader_wait: float = NO_LEADER_WAIT_S,
        max_in_flight: int = MAX_IN_FLIGHT,
        session_prefix: str | None = None,
        curve: ClientCurve | None = None,
    ) -> None:
        """`curve`: the node's own key pair and its key (SPEC §8: the HTTP process's forwarding
        authenticates like any client)."""
        self.local = local_endpoint
        self.curve = curve
        self.router = Router([local_endpoint])
        self.deadline = deadline
        self.no_leader_wait = no_leader_wait
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._ctx = ctx
        self._links: dict[str, _Link] = {}
        self.ids = itertools.count(1)
        """Try ids, unique on every link of this client."""
        self._session_prefix = session_prefix or f"http-{uuid.uuid4().hex[:16]}"
        self._free_slots: list[_Slot] = []
        self._slot_count = 0
        self.closed = False

    @property
    def leader(self) -> str | None:
        """The leader's client endpoint as last learned; None: ask this node first."""
        return self.router.leader

    @property
    def links(self) -> dict[str, _Link]:
        """Open sockets by endpoint (one per node talked to)."""
        return dict(self._links)

    async def local_call(self, request: Reply) -> Reply:
        """Ask this node itself (serializable reads, status, metrics)."""
        return await self._guarded(request, Route.NODE)

    async def leader_call(self, request: Reply) -> Reply:
        """A linearizable read or the cluster view: the leader's answer."""
        return await self._guarded(request, Route.LEADER)

    async def write(self, request: Reply) -> Reply:
        """A write (put/delete/cas) under a session slot; retries keep its seq."""
        slot = self._free_slots.pop() if self._free_slots else self._new_slot()
        try:
            slot.seq += 1
            return await self._guarded({**request, "session": slot.session, "seq": slot.seq},
                                       Route.LEADER)
        finally:
            self._free_slots.append(slot)

    async def watch(self, request: Reply, wait: float) -> Reply:
        """One long poll of a watch at this node (held up to `wait` seconds). Not counted in
        max_in_flight: a held watch is an open stream, bounded by the connection cap, and a
        thousand of them must not turn every other request away."""
        if self.closed:
            raise Closed("node shutting down")
        return await self._call(request, Route.NODE, self.deadline + wait)

    def _new_slot(self) -> _Slot:
        self._slot_count += 1
        return _Slot(f"{self._session_prefix}-{self._slot_count}")

    async def _guarded(self, request: Reply, route: Route) -> Reply:
        if self.closed:
            raise Closed("node shutting down")
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"more than {self.max_in_flight} requests in flight")
        self.in_flight += 1
        try:
            return await self._call(request, route)
        finally:
            self.in_flight -= 1

    async def _call(self, request: Reply, route: Route, deadline: float | None = None) -> Reply:
        """Drive one routing.Call (a _Flight) until it ends; its reply, or why there is none.
        `deadline`: the call's time in seconds, if not the client's."""
        now = asyncio.get_running_loop().time()
        seconds = self.deadline if deadline is None else deadline
        call = Call(self.router, route, now, now + seconds, patience=self.no_leader_wait,
                    target=self.local)
        flight = _Flight(self, call, request)
        flight.begin()
        try:
            await flight.result
        finally:
            flight.end()
        if call.outcome is Outcome.DONE and call.reply is not None:
            return call.reply
        if call.outcome is Outcome.NO_LEADER:
            raise NoLeader(call.last_error or "no leader")
        raise ForwardTimeout(f"no answer within {seconds:g}s ({call.last_error or 'no answer'})")

    def link(self, endpoint: str) -> _Link:
        link = self._links.get(endpoint)
        if link is None:
            link = self._links[endpoint] = _Link(self._ctx, endpoint, self.curve)
        return link

    def close(self) -> None:
        """Fail every waiting request (Closed) and close the sockets."""
        self.closed = True
        for link in self._links.values():
            link.close()
        self._links.clear()


def _link_keys(curve: ClientCurve | None, endpoint: str) -> tuple | None:
    """The link's CURVE keys; a node whose key is unknown gets a plain link, which it refuses
    (its tries are lost like a dropped connection's), and one error line."""
    if curve is None:
        return None
    try:
        return curve.for_endpoint(endpoint)
    except KeyFileError as exc:
        log.error("event=forward_key_unknown endpoint=%s error=%s", endpoint, str(exc).replace(" ", "_"))
        return None
