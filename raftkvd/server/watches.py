"""Watches, served by any node from its own applied state (SPEC §4, protocol `watch`).

A watch is a long poll: each request asks for the events from one revision on, and is
answered as soon as this node's history (kv/history.py) has some that match, or after its
wait with none (the client's heartbeat: the node is alive, nothing changed). The client
asks again from the answer's `next`, here or, after a failure, on any other node: the
history is the same everywhere, so events are never missing or repeated. Nothing is kept
for a watcher between its requests, so a watcher that stops reading holds no memory and
can slow nobody down; one that falls behind the window is told COMPACTED.

The cost per turn follows the changes, not the watchers: each new revision is read from
the history once and looked up among the held selectors (a key directly, a prefix by the
prefix lengths in use), so a thousand watchers of a thousand different keys cost no more
than one while nothing of theirs changes; the watchers a change matches share one read of
their page. Invariant: a held request has no matching event between its start and the
last revision served, so its page starts at the first new match.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftkv.protocol import Code

from ..kv.history import Page, Selector
from ..net.clientendpoint import Request
from .seams import Clock, Replies

MAX_EVENTS = 1000
"""Events in one answer; the watcher asks again at once for more."""
EVERY_KEY = Selector(prefix="")

Events = Callable[[int, Selector, int], Page]
"""KVStateMachine.events: a page of the history from a revision."""


@dataclass(slots=True, eq=False)
class Held:
    request: Request
    selector: Selector
    start: int
    deadline: float
    seq: int
    done: bool = False


class Watches:
    """Owned by the node loop: `handle` each watch request, `serve` every turn."""

    def __init__(self, events: Events, revision: Callable[[], int], replies: Replies,
                 clock: Clock) -> None:
        self._events = events
        self._revision = revision
        self._replies = replies
        self._clock = clock
        self._groups: dict[Selector, dict[int, Held]] = {}
        """Held requests by what they watch, by seq."""
        self._prefix_lengths: Counter[int] = Counter()
        """Lengths of the prefixes held: the prefixes of a changed key worth looking up."""
        self._expiry: list[tuple[float, int, Held]] = []
        """Deadlines of held requests; those answered before theirs leave lazily."""
        self._live = 0
        self._seq = itertools.count()
        self._served_revision = revision()
        """Every revision up to this one has been matched against the held requests."""

    @property
    def held(self) -> int:
        """Watch requests waiting for an event: what watchers cost this node while they wait
        (the node status's watches_held, /metrics raftkvd_watch_requests_held)."""
        return self._live

    def handle(self, request: Request) -> None:
        body = request.body
        selector = Selector(key=body["key"]) if "key" in body else Selector(prefix=body["prefix"])
        revision = self._revision()
        start = body.get("rev") or revision + 1
        held = Held(request, selector, start, self._clock() + float(body.get("wait", 0)),
                    next(self._seq))
        if start <= revision:
            page = self._events(start, selector, MAX_EVENTS)
            # An answer now when there is one, when no wait was asked, or when the read
            # stopped short of the present (its scan limit): the client asks again from there.
            if page.events or page.compacted or not body.get("wait") or page.next <= revision:
                self._answer([held], page)
                return
            held.start = page.next
        self._hold(held)

    def serve(self) -> None:
        """Answer the held requests that new events match, and those whose wait is over."""
        revision = self._revision()
        if revision > self._served_revision:
            if self._groups:
                self._match(self._served_revision + 1, revision)
            self._served_revision = revision
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            held = heapq.heappop(self._expiry)[2]
            if not held.done:
                self._answer([held], Page([], max(held.start, revision + 1)))
        if len(self._expiry) > 4 * self._live + 1024:  # mostly answered ones: drop them now
            self._expiry = [entry for entry in self._expiry if not entry[2].done]
            heapq.heapify(self._expiry)

    def cancel_all(self, fields: dict[str, Any]) -> None:
        """The node is stopping: answer every held request with `fields`."""
        groups, self._groups = self._groups, {}
        self._prefix_lengths.clear()
        self._expiry.clear()
        self._live = 0
        for group in groups.values():
            for held in group.values():
                held.done = True
                self._replies.respond(held.request, fields)

    # ---- matching -------------------------------------------------------------------------
    def _match(self, first: int, last: int) -> None:
        """Answer the held requests that an event of revisions first..last matches."""
        matched: dict[Selector, int] = {}
        """Selector -> the first new revision it matches."""
        at = first
        while at <= last:
            page = self._events(at, EVERY_KEY, MAX_EVENTS)
            if page.compacted or page.next <= at:
                break
            for event in page.events:
                for selector in self._selectors_of(event["key"]):
                    matched.setdefault(selector, event["revision"])
            at = page.next
        for selector, revision in matched.items():
            self._serve_group(selector, revision, last)

    def _selectors_of(self, key: str) -> list[Selector]:
        """The held selectors that match `key`."""
        candidates = [Selector(key=key)]
        candidates += [Selector(prefix=key[:n]) for n in self._prefix_lengths if n <= len(key)]
        return [selector for selector in candidates if selector in self._groups]

    def _serve_group(self, selector: Selector, revision: int, last: int) -> None:
        """`selector` matches `revision` first: its requests that started at or before it
        share one page from there; one that starts later (rare: a watch of a revision not
        yet served) reads its own."""
        group = self._groups.get(selector)
        if group is None:
            return
        due = [held for held in group.values() if held.start <= revision]
        if due:
            self._answer(due, self._events(revision, selector, MAX_EVENTS))
        for held in [h for h in group.values() if revision < h.start <= last]:
            page = self._events(held.start, selector, MAX_EVENTS)
            if page.events:
                self._answer([held], page)

    # ---- bookkeeping ----------------------------------------------------------------------
    def _hold(self, held: Held) -> None:
        group = self._groups.get(held.selector)
        if group is None:
            group = self._groups[held.selector] = {}
            if held.selector.prefix is not None:
                self._prefix_lengths[len(held.selector.prefix)] += 1
        group[held.seq] = held
        self._live += 1
        heapq.heappush(self._expiry, (held.deadline, held.seq, held))

    def _release(self, held: Held) -> None:
        held.done = True
        group = self._groups.get(held.selector)
        if group is None or group.pop(held.seq, None) is None:
            return
        self._live -= 1
        if group:
            return
        del self._groups[held.selector]
        prefix = held.selector.prefix
        if prefix is not None:
            self._prefix_lengths[len(prefix)] -= 1
            if not self._prefix_lengths[len(prefix)]:
                del self._prefix_lengths[len(prefix)]

    def _answer(self, group: list[Held], page: Page) -> None:
        if page.compacted:
            fields: dict[str, Any] = {
                "code": Code.COMPACTED.value, "oldest": page.oldest,
                "error": f"revision {page.next} is compacted: the oldest revision held is {page.oldest}"}
        else:
            fields = {"code": Code.OK.value, "events": page.events, "next": page.next,
                      "revision": self._revision()}
        for held in group:
            self._release(held)
            self._replies.respond(held.request, fields)
