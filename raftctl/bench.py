"""The load generator behind `raftctl bench`.

One thread drives every simulated client over one set of links (links.py), the way wrk
drives its connections: a thread per client would spend more CPU switching threads than the
cluster spends serving them, and on a small machine the generator shares the cores with
the nodes it measures. Each simulated client is a real protocol client all the same: its
own session, numbered writes, one request in flight, and the client core of every raftkv
client (raftkv.routing) to follow the leader and retry with the same (session, seq).
"""

from __future__ import annotations

import functools
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from raftkv.curve import ClientCurve
from raftkv.protocol import WRITE_OPS, Code
from raftkv.routing import Call, Outcome, Route, Router

from .client import normalize_endpoint
from .errors import RaftCtlError, RequestRejected, Unavailable
from .links import Links

BENCH_PREFIX = "bench/"
BENCH_PERCENTILES = (50, 90, 99)
POLL_S = 0.05
_REJECTED = {Code.TOO_LARGE.value, Code.INVALID.value, Code.NO_SPACE.value}

RequestMaker = Callable[[int], dict[str, Any]]
"""Request fields (op, key, value, ...) of operation number i."""


def bench_key(i: int, size: int) -> str:
    """A distinct key of exactly `size` bytes, as much of "bench/" as fits, then digits."""
    digits = str(i)
    prefix = BENCH_PREFIX[: max(0, size - len(digits))]
    return prefix + digits.zfill(size - len(prefix))


def bench_result(op: str, clients: int, latencies: list[float], seconds: float) -> dict[str, Any]:
    """ops/s over the wall time, and nearest-rank latency percentiles in milliseconds."""
    ordered = sorted(latencies) or [0.0]  # every operation rate limited: no latency to show
    latency_ms = {f"p{p}": _percentile(ordered, p) * 1000 for p in BENCH_PERCENTILES}
    latency_ms["max"] = ordered[-1] * 1000
    return {
        "op": op,
        "clients": clients,
        "ops": len(latencies),
        "seconds": seconds,
        "ops_per_sec": len(latencies) / seconds if seconds > 0 else 0.0,
        "latency_ms": latency_ms,
    }


def _percentile(ordered: list[float], p: int) -> float:
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@dataclass
class _SimClient:
    """One simulated client: its session, its next write number, its operations left."""

    ops: list[int]
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    started: float = 0.0


class LoadRun:
    """`clients` simulated clients share `count` operations (client n does n, n+clients, ...)."""

    def __init__(self, endpoints: list[str], timeout: float, clients: int, count: int,
                 make_request: RequestMaker, on_done: Callable[[int], None] = lambda n: None,
                 curve: ClientCurve | None = None) -> None:
        self.timeout = timeout
        self.make_request = make_request
        self.on_done = on_done
        self.latencies: list[float] = []
        self.rate_limited = 0
        """rate_limited answers (SPEC §8 [limits]): each was retried after its retry_after."""
        self.gave_up = 0
        """Operations still rate limited when their timeout ran out (not in `latencies`)."""
        self.seconds = 0.0
        """Wall time of the run."""
        self.router = Router([normalize_endpoint(e) for e in endpoints])
        self.links = Links(zmq.Context.instance(), curve)
        self.clients = [_SimClient(list(range(n, count, clients))) for n in range(min(clients, count))]

    def run(self) -> tuple[list[float], float]:
        started = time.perf_counter()
        try:
            for client in self.clients:
                self._next(client)
            while self.links.in_flight:
                self.links.poll(POLL_S)
        finally:
            self.links.close()
        self.seconds = time.perf_counter() - started
        return self.latencies, self.seconds

    def _next(self, client: _SimClient) -> None:
        if not client.ops:
            return
        request = self.make_request(client.ops.pop())
        request["session"] = client.session
        if request["op"] in WRITE_OPS:
            client.seq += 1
            request["seq"] = client.seq
        client.started = time.perf_counter()
        now = time.monotonic()
        call = Call(self.router, Route.LEADER, now, now + self.timeout)
        self.links.begin(request, call, functools.partial(self._finished, client))

    def _finished(self, client: _SimClient, call: Call) -> None:
        reply = call.reply
        self.rate_limited += call.rate_limited
        if call.outcome is not Outcome.DONE or reply is None:
            raise Unavailable(f"no answer from the cluster within {self.timeout}s ({call.last_error})")
        code = reply.get("code")
        if code in (Code.OK.value, Code.NOT_FOUND.value):
            self.latencies.append(time.perf_counter() - client.started)
            self.on_done(1)
            self._next(client)
        elif code == Code.RATE_LIMITED.value:  # over the limit for a whole timeout: count it, go on
            self.gave_up += 1
            self.on_done(1)
            self._next(client)
        elif code in _REJECTED:
            raise RequestRejected(f"request rejected: {reply.get('error', code)}")
        else:
            raise RaftCtlError(f"unexpected answer: {reply.get('error', code)}")
