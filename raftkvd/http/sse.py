"""`GET /watch` as Server-Sent Events (SPEC §5): one stream per HTTP client, fed by the
node's watch long poll (server/watches.py) through the forwarder.

Each event carries `id: REVISION`, so a browser's EventSource that loses the stream comes
back with Last-Event-ID and resumes at the next revision (rest.py); an empty long poll
becomes a heartbeat comment, so proxies and clients see a live stream.

Streams in step share their work (WatchHub): those that watch the same key or prefix from
the same revision make one long poll to the node together, and its answer is framed once
and written to each of them as the same bytes.

A client that reads too slowly must never hold the node or the other streams back: what it
has not taken stays in this connection's write buffer, and once that holds more than
BUFFER_BYTES, or has not emptied for STALL_S, the stream is cut with a last event saying
where to resume. The bound is checked after each answer of the node (at most
watches.MAX_EVENTS events), so a slow client holds BUFFER_BYTES and one answer at most.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftkv import protocol
from raftkv.protocol import Code
from raftkvd.errors import Unavailable
from raftkvd.metrics import HttpMetrics

from .connection import Sink
from .forward import ForwardClient

CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEARTBEAT_S = 5.0
"""The long poll's wait: with no event for this long, a heartbeat comment."""
BUFFER_BYTES = 1024 * 1024
"""Bytes a slow client may leave unread in the write buffer before its stream is cut."""
STALL_S = 10.0
"""How long the write buffer may stay non-empty before the stream is cut."""
RETRY_MS = 1000
"""The reconnection delay an EventSource is told to use."""
HEARTBEAT = b": heartbeat\n\n"

Reply = dict[str, Any]


def event_frame(event: dict[str, Any]) -> bytes:
    """One event; its id is its revision (a resume asks for the one after)."""
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event['revision']}\ndata: {data}\n\n".encode()


def named_frame(name: str, data: dict[str, Any]) -> bytes:
    """A last word (`cut`, `compacted`, `unavailable`): an EventSource hears it as an event
    of that name, not as a change."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Round:
    """One answer of the node to a watch long poll, with its events framed."""

    reply: Reply
    chunk: bytes
    """The events as SSE frames (empty when there are none)."""


class WatchHub:
    """The long polls of this HTTP process's streams, one per (selector, revision, wait) at
    a time: a thousand browsers on one prefix cost the node one request per round and this
    process one decoding and one framing of each answer."""

    def __init__(self, forward: ForwardClient) -> None:
        self.forward = forward
        self._rounds: dict[tuple[str | None, str | None, int, float], asyncio.Future[Round]] = {}

    async def poll(self, selector: dict[str, str], rev: int, wait: float) -> Round:
        """The node's answer to a watch of `selector` from `rev`, held up to `wait` seconds;
        Unavailable when there is none. A stream that goes away does not end the round of
        the others (it is shielded from their cancellation)."""
        key = (selector.get("key"), selector.get("prefix"), rev, wait)
        shared = self._rounds.get(key)
        if shared is None:
            shared = self._rounds[key] = asyncio.ensure_future(self._fetch(selector, rev, wait))
            shared.add_done_callback(lambda _: self._rounds.pop(key, None))
        return await asyncio.shield(shared)

    async def _fetch(self, selector: dict[str, str], rev: int, wait: float) -> Round:
        reply = await self.forward.watch(
            {"op": protocol.Op.WATCH.value, **selector, "rev": rev, "wait": wait}, wait)
        events = reply.get("events") if reply.get("code") == Code.OK.value else None
        return Round(reply, b"".join(event_frame(event) for event in events or ()))


class WatchStream:
    """The body of one `GET /watch` answer: from `first` (the node's first answer, already
    checked by the handler) on, until the client goes, falls too far behind, or the node
    cannot serve it any more."""

    def __init__(self, hub: WatchHub, selector: dict[str, str], first: Round,
                 metrics: HttpMetrics | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.clock = clock
        self.selector = selector
        self.first = first
        self.metrics = metrics
        self._stalled_since: float | None = None

    async def __call__(self, out: Sink) -> None:
        if self.metrics is not None:
            self.metrics.watch_streams.inc()
        try:
            await self._run(out)
        finally:
            if self.metrics is not None:
                self.metrics.watch_streams.dec()

    async def _run(self, out: Sink) -> None:
        out.write(f"retry: {RETRY_MS}\n\n".encode())
        answer = self.first
        while True:
            reply = answer.reply
            code = reply.get("code")
            if code == Code.COMPACTED.value:
                out.write(named_frame("compacted", {"error": reply.get("error"),
                                                    "oldest": reply.get("oldest")}))
                return
            if code != Code.OK.value:
                out.write(named_frame("unavailable", {"error": str(reply.get("error") or code)}))
                return
            if answer.chunk:
                out.write(answer.chunk)
            elif answer is not self.first:
                out.write(HEARTBEAT)
            resume = int(reply["next"])
            if self._too_slow(out):
                if self.metrics is not None:
                    self.metrics.watch_cuts.inc()
                out.write(named_frame("cut", {
                    "error": f"too slow, resume from revision {resume}", "resume": resume}))
                return
            try:
                answer = await self.hub.poll(self.selector, resume, HEARTBEAT_S)
            except Unavailable as exc:
                out.write(named_frame("unavailable", {
                    "error": f"{exc}; resume from revision {resume}", "resume": resume}))
                return

    def _too_slow(self, out: Sink) -> bool:
        buffered = out.buffered()
        if buffered == 0:
            self._stalled_since = None
            return False
        now = self.clock()
        if self._stalled_since is None:
            self._stalled_since = now
        return buffered > BUFFER_BYTES or now - self._stalled_since >= STALL_S
