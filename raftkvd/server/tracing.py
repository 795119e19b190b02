"""Stage timestamps of traced writes: where the time of one write goes (docs/perf.md).

A client asks for a trace with `"trace": true` in a write request (the REST server does so
for a request with the header `X-Raftkv-Trace: 1`); the answer then carries `trace`, the
leader's clock readings at each stage below. The clock is the node's (time.monotonic, which
on Linux is the system-wide CLOCK_MONOTONIC), so a client and the HTTP process on the same
host can put their own readings beside these. Untraced writes cost one truth test a stage.
"""

from __future__ import annotations

from .seams import Clock

STAGES = ("node_received", "proposed", "ready", "leader_persisted", "follower_acked",
          "committed", "applied")
"""In order: the request arrived; its entry was proposed; the Ready holding the entry began
(replication messages leave first); the leader's transaction with it was durable; the first
follower acknowledged it (a majority of three); the leader learned it was committed; it was
applied and answered (inside the apply transaction, before that one's flush)."""


class Traces:
    """The traced entries in flight, by log index. Not thread-safe: the replica's loop owns it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.open: dict[int, dict[str, float]] = {}

    def start(self, index: int, received: float | None) -> None:
        now = self.clock()
        self.open[index] = {"node_received": now if received is None else received, "proposed": now}

    def reached(self, stage: str, upto: int) -> None:
        """Every traced entry at or below `upto` has reached `stage` now (the first time counts)."""
        now = self.clock()
        for index, stamps in self.open.items():
            if index <= upto and stage not in stamps:
                stamps[stage] = now

    def finish(self, index: int) -> dict[str, float] | None:
        """The stamps of the entry at `index`, if traced, with its "applied" stamp; forgets it."""
        stamps = self.open.pop(index, None)
        if stamps is not None:
            stamps["applied"] = self.clock()
        return stamps

    def drop_all(self) -> None:
        """Leadership is gone: nothing traced here will be answered by this node."""
        self.open.clear()
