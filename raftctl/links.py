"""The blocking driver of the client core (raftkv.routing): ZeroMQ links to the nodes.

One DEALER per node endpoint, shared by every call in flight; each try carries a fresh
request id and its reply is matched back by it, so a late answer to a finished call is
dropped and never mistaken for the answer to a later one. raftctl.Client runs one call at
a time; `raftctl bench` keeps many in flight over the same links.

Sockets are IMMEDIATE (raftkv/sockets.py): a request waits for a live connection instead of
being queued for a node that may be down. A try that finds no connection within
CONNECT_TIMEOUT_S, or whose connection drops before the answer (the socket monitor says so),
is reported lost, so the call moves on at once instead of waiting out a timeout.

With CurveZMQ (SPEC §8) each link expects its node's key; a handshake the node refuses
(the same monitor reports it) ends the run with a UsageError at once: credentials do not get
better by retrying, and the user must hear why rather than see a timeout.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from raftkv.curve import ClientCurve
from raftkv.frames import FrameError, decode_batch, encode_batch
from raftkv.routing import Call
from raftkv.sockets import close_link, events, open_link

from .errors import UsageError
from .security import link_keys, refusal, unverified_keys

CONNECT_TIMEOUT_S = 0.2
"""A try that finds no connection to its node within this long is lost (the node is down)."""
RECV_BATCH = 1024

Reply = dict[str, Any]


@dataclass(slots=True, eq=False)
class _Active:
    """A call in flight: its request and who wants to know when it is over."""

    call: Call
    request: Reply
    on_done: Callable[[Call], None] | None
    tries: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Queued:
    request_id: int
    message: Reply
    queued_at: float


class _Link:
    """One node's DEALER, its monitor, and the tries waiting for a connection."""

    def __init__(self, context: zmq.Context, endpoint: str, curve: ClientCurve | None) -> None:
        self.endpoint = endpoint
        self.secured = curve is not None
        self.socket, self.monitor = open_link(context, endpoint, link_keys(curve, endpoint))
        self.queue: deque[_Queued] = deque()
        self.sent: set[int] = set()
        """Request ids on this connection still waiting for their answer."""
        self.handshake_failed = False
        """A handshake failed with no detail (a reset, or a wrong server key)."""
        self.answered = False

    def disconnected(self) -> bool:
        """The connection dropped since the last look; UsageError if a handshake was refused."""
        seen = events(self.monitor)
        error = refusal(self.endpoint, seen, self.secured)
        if error is not None:
            raise error
        if self.secured and seen & zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self.handshake_failed = True
            return True
        return bool(seen & zmq.EVENT_DISCONNECTED)

    def close(self) -> None:
        close_link(self.socket, self.monitor)


class Links:
    """Calls to the nodes of one cluster over shared links. Not thread-safe."""

    def __init__(self, context: zmq.Context | None = None, curve: ClientCurve | None = None) -> None:
        self._context = context or zmq.Context.instance()
        self._curve = curve
        self._links: dict[str, _Link] = {}
        self._ids = itertools.count(1)
        self._tries: dict[int, tuple[_Active, str]] = {}
        self._active: list[_Active] = []

    # ---- running calls -----------------------------------------------------------------------
    def run(self, request: Reply, call: Call) -> Call:
        """Drive one call to its end (answered, no leader, or past its deadline)."""
        self.begin(request, call)
        while not call.done:
            self.poll(math.inf)
        return call

    def begin(self, request: Reply, call: Call, on_done: Callable[[Call], None] | None = None) -> None:
        """Start a call; `on_done(call)` runs from `poll` once it is over."""
        active = _Active(call, request, on_done)
        self._active.append(active)
        self._send(active, call.start(), time.monotonic())
        self._finish_if_done(active)

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def poll(self, max_wait: float) -> None:
        """Send what is queued, then wait up to `max_wait` seconds for something to happen to
        the calls, and handle it."""
        now = time.monotonic()
        for link in self._links.values():
            if link.queue:
                self._flush(link, now)
        self._expire(now)
        wake = min([a.call.wakeup() for a in self._active] + [now + max_wait])
        for link in self._links.values():
            if link.queue:
                wake = min(wake, link.queue[0].queued_at + CONNECT_TIMEOUT_S)
        poller = zmq.Poller()
        for link in self._links.values():
            if link.queue or link.sent:
                poller.register(link.socket, zmq.POLLIN | (zmq.POLLOUT if link.queue else 0))
                poller.register(link.monitor, zmq.POLLIN)
        timeout_ms = max(0, math.ceil((wake - now) * 1000)) if wake < math.inf else None
        events = dict(poller.poll(timeout_ms))
        now = time.monotonic()
        for link in list(self._links.values()):
            if link.monitor in events and link.disconnected():
                self._lose_sent(link, now)
            flags = events.get(link.socket, 0)
            if flags & zmq.POLLIN:
                self._receive(link, now)
            if flags & zmq.POLLOUT:
                self._flush(link, now)
        self._expire(now)

    def handshakes_refused(self) -> UsageError | None:
        """After a call that got no answer: the error to report when every node it tried failed
        the Curve handshake and none ever answered (raised instead of a timeout)."""
        links = list(self._links.values())
        if links and all(link.handshake_failed and not link.answered for link in links):
            return unverified_keys([link.endpoint for link in links])
        return None

    def close(self) -> None:
        """Close every socket at once (LINGER 0: unsent requests are dropped)."""
        for link in self._links.values():
            link.close()
        self._links.clear()
        self._tries.clear()
        self._active.clear()

    # ---- sending -------------------------------------------------------------------------------
    def _link(self, endpoint: str) -> _Link:
        link = self._links.get(endpoint)
        if link is None:
            link = self._links[endpoint] = _Link(self._context, endpoint, self._curve)
        return link

    def _send(self, active: _Active, endpoints: list[str], now: float) -> None:
        """Queue a try per endpoint; the next `poll` sends each link's queue in one frame."""
        for endpoint in endpoints:
            request_id = next(self._ids)
            link = self._link(endpoint)
            self._tries[request_id] = (active, endpoint)
            active.tries.add(request_id)
            link.queue.append(_Queued(request_id, active.request, now))

    def _flush(self, link: _Link, now: float) -> None:
        """Send what waits for this link, in one frame, if its connection takes it."""
        waiting = [queued for queued in link.queue if queued.request_id in self._tries]
        if not waiting:
            link.queue.clear()  # their calls are over
            return
        frame = encode_batch([{**queued.message, "id": queued.request_id} for queued in waiting])
        try:
            link.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return
        link.queue.clear()
        for queued in waiting:
            link.sent.add(queued.request_id)
            active, endpoint = self._tries[queued.request_id]
            active.call.sent(endpoint, now)

    # ---- receiving and timing --------------------------------------------------------------------
    def _receive(self, link: _Link, now: float) -> None:
        for _ in range(RECV_BATCH):
            try:
                frame = link.socket.recv_multipart(zmq.NOBLOCK)[-1]
            except zmq.Again:
                return
            link.answered = True
            try:
                replies, _ = decode_batch(frame)
            except FrameError:
                continue
            for reply in replies:
                self._answered(link, reply, now)

    def _answered(self, link: _Link, reply: Reply, now: float) -> None:
        if self._curve is not None:
            self._curve.servers.learn(reply)  # a redirect names the leader's id, hence its key
        request_id = reply.get("id")
        if type(request_id) is not int:
            return
        link.sent.discard(request_id)
        owner = self._tries.get(request_id)
        if owner is None:
            return  # a late answer to a call that is over
        active, endpoint = owner
        self._forget_try(active, request_id)
        self._send(active, active.call.answered(endpoint, reply, now), now)
        self._finish_if_done(active)

    def _lose_sent(self, link: _Link, now: float) -> None:
        """The connection dropped: whatever it carried will not be answered."""
        for request_id in list(link.sent):
            owner = self._tries.get(request_id)
            link.sent.discard(request_id)
            if owner is not None:
                active, endpoint = owner
                self._forget_try(active, request_id)
                self._send(active, active.call.lost(endpoint, now), now)
                self._finish_if_done(active)

    def _expire(self, now: float) -> None:
        """Tries that found no connection in time are lost; then every call's timers."""
        for link in list(self._links.values()):
            while link.queue and now - link.queue[0].queued_at >= CONNECT_TIMEOUT_S:
                queued = link.queue.popleft()
                owner = self._tries.get(queued.request_id)
                if owner is not None:
                    active, endpoint = owner
                    self._forget_try(active, queued.request_id)
                    self._send(active, active.call.lost(endpoint, now), now)
                    self._finish_if_done(active)
        for active in list(self._active):
            self._send(active, active.call.due(now), now)
            self._finish_if_done(active)

    def _forget_try(self, active: _Active, request_id: int) -> None:
        self._tries.pop(request_id, None)
        active.tries.discard(request_id)

    def _finish_if_done(self, active: _Active) -> None:
        if not active.call.done or active not in self._active:
            return
        self._active.remove(active)
        for request_id in active.tries:
            self._tries.pop(request_id, None)
            for link in self._links.values():
                link.sent.discard(request_id)
        active.tries.clear()
        if active.on_done is not None:
            active.on_done(active.call)
