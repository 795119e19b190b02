"""Watches, served by any node from its own applied state (SPEC §4, protocol `watch`).

A watch is a long poll: each request asks for the events from one revision on, and is
answered as soon as this node's history (kv/history.py) has some that match, or after its
wait with none (the client's heartbeat: the node is alive, nothing changed). The client
asks again from the answer's `next`, here or, after a failure, on any other node: the
history is the same everywhere, so events are never missing or repeated. Nothing is kept
for a watcher between its requests, so a watcher that stops reading holds no memory and
can slow nobody down; one that falls behind the window is told COMPACTED.

Held requests are grouped by (selector, revision): a thousand watchers of one prefix, all
caught up, cost one history read per applied batch, not a thousand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftkv.protocol import Code

from ..kv.history import Page, Selector
from ..net.clientendpoint import Request
from .seams import Clock, Replies

MAX_EVENTS = 1000
"""Events in one answer; the watcher asks again at once for more."""

Events = Callable[[int, Selector, int], Page]
"""KVStateMachine.events: a page of the history from a revision."""


@dataclass(slots=True)
class Held:
    request: Request
    deadline: float


class Watches:
    """Owned by the node loop: `handle` each watch request, `serve` every turn."""

    def __init__(self, events: Events, revision: Callable[[], int], replies: Replies,
                 clock: Clock) -> None:
        self._events = events
        self._revision = revision
        self._replies = replies
        self._clock = clock
        self._held: dict[tuple[Selector, int], list[Held]] = {}
        self._served_revision = 0
        """The store's revision when the held groups were last read: nothing new below it."""
        self._next_deadline = float("inf")

    @property
    def held(self) -> int:
        """Watch requests waiting for an event: what watchers cost this node while they wait
        (the node status's watches_held, /metrics raftkvd_watch_requests_held)."""
        return sum(len(group) for group in self._held.values())

    def handle(self, request: Request) -> None:
        body = request.body
        selector = Selector(key=body["key"]) if "key" in body else Selector(prefix=body["prefix"])
        start = body.get("rev") or self._revision() + 1
        deadline = self._clock() + float(body.get("wait", 0))
        if start <= self._revision():
            page = self._events(start, selector, MAX_EVENTS)
            if page.events or page.compacted or not body.get("wait"):
                self._answer([Held(request, deadline)], page)
                return
            start = page.next
        self._hold(selector, start, Held(request, deadline))

    def serve(self) -> None:
        """Answer the held requests that new events match, and those whose wait is over."""
        revision = self._revision()
        now = self._clock()
        if revision == self._served_revision and now < self._next_deadline:
            return
        groups, self._held = self._held, {}
        self._next_deadline = float("inf")
        self._served_revision = revision
        for (selector, start), group in groups.items():
            page = self._events(start, selector, MAX_EVENTS) if start <= revision else None
            if page is not None and (page.events or page.compacted):
                self._answer(group, page)
                continue
            waiting = start if page is None else page.next
            expired = [held for held in group if held.deadline <= now]
            if expired:
                self._answer(expired, Page([], waiting, oldest=0))
            for held in group:
                if held.deadline > now:
                    self._hold(selector, waiting, held)

    def cancel_all(self, fields: dict[str, Any]) -> None:
        """The node is stopping: answer every held request with `fields`."""
        groups, self._held = self._held, {}
        for group in groups.values():
            for held in group:
                self._replies.respond(held.request, fields)

    def _hold(self, selector: Selector, start: int, held: Held) -> None:
        self._held.setdefault((selector, start), []).append(held)
        self._next_deadline = min(self._next_deadline, held.deadline)

    def _answer(self, group: list[Held], page: Page) -> None:
        if page.compacted:
            fields: dict[str, Any] = {
                "code": Code.COMPACTED.value, "oldest": page.oldest,
                "error": f"revision {page.next} is compacted: the oldest revision held is {page.oldest}"}
        else:
            fields = {"code": Code.OK.value, "events": page.events, "next": page.next,
                      "revision": self._revision()}
        for held in group:
            self._replies.respond(held.request, fields)
