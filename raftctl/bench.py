"""The load generator behind `raftctl bench`.

One thread drives every simulated client through one ZeroMQ poller, the way wrk drives
its connections: a thread per client would spend more CPU switching threads than the
cluster spends serving them, and on a small machine the generator shares the cores with
the nodes it measures. Each simulated client is a real protocol client all the same: its
own session, numbered writes, one request in flight, redirects to the leader followed,
and a write retried with the same (session, seq) after an `unavailable` answer.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from raftkv.frames import FrameError, decode_client, encode_client
from raftkv.protocol import Code

from .client import normalize_endpoint
from .errors import RaftCtlError, RequestRejected, Unavailable

BENCH_PREFIX = "bench/"
BENCH_PERCENTILES = (50, 90, 99)
RETRY_DELAY_S = 0.05
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
    ordered = sorted(latencies)
    latency_ms = {f"p{p}": _percentile(ordered, p) * 1000 for p in BENCH_PERCENTILES}
    latency_ms["max"] = ordered[-1] * 1000
    return {
        "op": op,
        "clients": clients,
        "ops": len(ordered),
        "seconds": seconds,
        "ops_per_sec": len(ordered) / seconds if seconds > 0 else 0.0,
        "latency_ms": latency_ms,
    }


def _percentile(ordered: list[float], p: int) -> float:
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@dataclass
class _SimClient:
    """One simulated client: its session, its next write number and its request in flight."""

    ops: list[int]
    endpoint: str
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    socket: zmq.Socket | None = None
    request: dict[str, Any] | None = None
    request_id: int = 0
    started: float = 0.0
    sent_at: float = 0.0
    retry_at: float | None = None


class LoadRun:
    """`clients` simulated clients share `count` operations (client n does n, n+clients, ...)."""

    def __init__(self, endpoints: list[str], timeout: float, clients: int, count: int,
                 make_request: RequestMaker, on_done: Callable[[int], None] = lambda n: None) -> None:
        self.timeout = timeout
        self.make_request = make_request
        self.on_done = on_done
        self.ctx = zmq.Context.instance()
        self.poller = zmq.Poller()
        self.by_socket: dict[zmq.Socket, _SimClient] = {}
        self.ids = itertools.count(1)
        self.latencies: list[float] = []
        self.endpoints = [normalize_endpoint(e) for e in endpoints]
        start = self.endpoints[0]
        self.clients = [
            _SimClient(list(range(n, count, clients)), start) for n in range(min(clients, count))
        ]

    def run(self) -> tuple[list[float], float]:
        started = time.perf_counter()
        try:
            for client in self.clients:
                self._next(client)
            while any(c.request is not None for c in self.clients):
                for sock, _ in self.poller.poll(10):
                    self._receive(self.by_socket[sock])
                self._retry_and_expire()
        finally:
            for sock in self.by_socket:
                sock.close(linger=0)
        return self.latencies, time.perf_counter() - started

    def _next(self, client: _SimClient) -> None:
        if not client.ops:
            client.request = None
            return
        request = self.make_request(client.ops.pop())
        request["session"] = client.session
        if request["op"] in ("put", "delete", "cas"):
            client.seq += 1
            request["seq"] = client.seq
        client.request = request
        client.started = time.perf_counter()
        self._send(client)

    def _send(self, client: _SimClient) -> None:
        if client.socket is None:
            client.socket = self.ctx.socket(zmq.DEALER)
            client.socket.setsockopt(zmq.LINGER, 0)
            client.socket.connect(client.endpoint)
            self.by_socket[client.socket] = client
            self.poller.register(client.socket, zmq.POLLIN)
        client.request_id = next(self.ids)
        client.sent_at = time.perf_counter()
        client.retry_at = None
        assert client.request is not None
        client.socket.send(encode_client({**client.request, "id": client.request_id}))

    def _receive(self, client: _SimClient) -> None:
        assert client.socket is not None
        try:
            reply = decode_client(client.socket.recv(zmq.NOBLOCK))
        except (FrameError, zmq.Again):
            return
        if reply.get("id") != client.request_id or client.request is None:
            return  # a late answer to an abandoned try
        code = reply.get("code")
        if code in (Code.OK.value, Code.NOT_FOUND.value):
            self.latencies.append(time.perf_counter() - client.started)
            self.on_done(1)
            self._next(client)
        elif code == Code.NOT_LEADER.value and reply.get("leader"):
            self._move(client, reply["leader"])
            self._send(client)
        elif code in _REJECTED:
            raise RequestRejected(f"request rejected: {reply.get('error', code)}")
        elif code in (Code.UNAVAILABLE.value, Code.NOT_LEADER.value):
            client.retry_at = time.perf_counter() + RETRY_DELAY_S
        else:
            raise RaftCtlError(f"unexpected answer: {reply.get('error', code)}")

    def _move(self, client: _SimClient, endpoint: str) -> None:
        if client.socket is not None:
            self.poller.unregister(client.socket)
            del self.by_socket[client.socket]
            client.socket.close(linger=0)
            client.socket = None
        client.endpoint = endpoint

    def _retry_and_expire(self) -> None:
        now = time.perf_counter()
        for client in self.clients:
            if client.request is None:
                continue
            if now - client.started > self.timeout:
                raise Unavailable(f"no answer from the cluster within {self.timeout}s")
            if client.retry_at is not None and now >= client.retry_at:
                self._send(client)
            elif client.retry_at is None and now - client.sent_at > min(1.0, self.timeout / 2):
                self._move(client, self._other_endpoint(client.endpoint))  # silent node: try another
                self._send(client)

    def _other_endpoint(self, endpoint: str) -> str:
        if endpoint not in self.endpoints:
            return self.endpoints[0]
        return self.endpoints[(self.endpoints.index(endpoint) + 1) % len(self.endpoints)]
