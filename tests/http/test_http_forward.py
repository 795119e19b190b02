"""The REST server's multiplexed forwarder (raftkvd.http.forward) against fake nodes: one
socket per node however many requests are in flight, "not_leader" followed to the leader,
retries that keep their (session, seq), bounded waits; and the in-process server's
connection cap."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from helpers import free_port

from raftkv.frames import decode_batch, encode_client
from raftkv.routing import Route
from raftkvd.http import forward, httpserver
from raftkvd.http.forward import ForwardClient, NoLeader, Overloaded

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[dict[str, Any]], dict[str, Any] | None]


class FakeNode:
    """A ROUTER on a free port answering each request with handler(request) (None: silence)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.requests: list[dict[str, Any]] = []
        self.peers: set[bytes] = set()
        self.frames = 0
        self._ctx = zmq.Context()
        self._socket = self._ctx.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(self.endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(20):
                continue
            identity, frame = self._socket.recv_multipart()
            self.peers.add(identity)
            self.frames += 1
            for request in decode_batch(frame)[0]:  # a busy forwarder sends several in one frame
                self.requests.append(request)
                reply = self.handler(request)
                if reply is not None:
                    self._socket.send_multipart([identity, encode_client({"id": request["id"], **reply})])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close(0)
        self._ctx.term()


@pytest.fixture
def nodes() -> Iterator[Callable[[Handler], FakeNode]]:
    made: list[FakeNode] = []

    def make(handler: Handler) -> FakeNode:
        made.append(FakeNode(handler))
        return made[-1]

    yield make
    for node in made:
        node.close()


def run(coro_fn: Callable[[ForwardClient], Any], local: str, **kw: Any) -> Any:
    """Run coro_fn(client) on a fresh loop with a ForwardClient whose node is `local`."""

    async def main() -> Any:
        ctx = zmq.Context()
        client = ForwardClient(ctx, local, **kw)
        try:
            return await coro_fn(client)
        finally:
            client.close()
            ctx.destroy(linger=0)

    return asyncio.run(main())


def ok(request: dict[str, Any]) -> dict[str, Any]:
    return {"code": "ok", "value": request.get("key"), "revision": 1}


def test_many_concurrent_requests_share_one_socket_per_node(nodes: Callable[[Handler], FakeNode]) -> None:
    node = nodes(ok)

    async def many(client: ForwardClient) -> list[dict[str, Any]]:
        replies = await asyncio.gather(*(
            client.leader_call({"op": "get", "key": f"k{i}"}) for i in range(256)))
        assert len(client.links) == 1
        return list(replies)

    replies = run(many, node.endpoint)
    assert [r["value"] for r in replies] == [f"k{i}" for i in range(256)]
    assert len(node.peers) == 1, "every request should have come over one DEALER"
    assert node.frames < 256, "requests queued in one loop iteration leave in one frame"


def test_not_leader_is_followed_to_the_leader_and_remembered(nodes: Callable[[Handler], FakeNode]) -> None:
    leader = nodes(ok)
    local = nodes(lambda r: {"code": "not_leader", "error": "not the leader", "leader_id": 2,
                             "leader": leader.endpoint})

    async def two_writes(client: ForwardClient) -> None:
        assert (await client.write({"op": "put", "key": "a", "value": "1"}))["code"] == "ok"
        assert client.leader == leader.endpoint
        assert (await client.write({"op": "put", "key": "b", "value": "2"}))["code"] == "ok"

    run(two_writes, local.endpoint)
    assert len(local.requests) == 1, "the second write should go to the known leader directly"
    assert [r["key"] for r in leader.requests] == ["a", "b"]


def test_a_retried_write_keeps_its_session_and_seq(nodes: Callable[[Handler], FakeNode]) -> None:
    seen: list[tuple[str, int]] = []

    def drop_first(request: dict[str, Any]) -> dict[str, Any] | None:
        seen.append((request["session"], request["seq"]))
        return None if len(seen) == 1 else ok(request)

    node = nodes(drop_first)

    async def writes(client: ForwardClient) -> None:
        await client.write({"op": "put", "key": "a", "value": "1"})
        await client.write({"op": "put", "key": "b", "value": "2"})

    run(writes, node.endpoint, deadline=1.0)  # silence counts after a third of it
    assert len(seen) == 3
    assert seen[0] == seen[1], "the retry must carry the same (session, seq)"
    assert seen[2] == (seen[0][0], seen[0][1] + 1), "the next write gets the next seq"


def test_concurrent_writes_never_share_a_session(nodes: Callable[[Handler], FakeNode]) -> None:
    in_flight: dict[str, int] = {}
    overlaps: list[str] = []
    node = nodes(ok)

    async def writes(client: ForwardClient) -> None:
        original = client._guarded

        async def tracking(request: dict[str, Any], route: Route) -> dict[str, Any]:
            session = request.get("session", "")
            if in_flight.get(session):
                overlaps.append(session)
            in_flight[session] = in_flight.get(session, 0) + 1
            try:
                return await original(request, route)
            finally:
                in_flight[session] -= 1

        client._guarded = tracking  # type: ignore[method-assign]
        for _ in range(4):
            await asyncio.gather(*(client.write({"op": "put", "key": f"k{i}", "value": "v"})
                                   for i in range(64)))

    run(writes, node.endpoint)
    assert not overlaps
    by_session: dict[str, list[int]] = {}
    for request in node.requests:
        by_session.setdefault(request["session"], []).append(request["seq"])
    assert len(by_session) == 64, "one session per concurrent write, reused afterwards"
    for seqs in by_session.values():
        assert seqs == [1, 2, 3, 4], "each session's seqs reach the node in order"


def test_no_leader_raises_after_the_bounded_wait(nodes: Callable[[Handler], FakeNode]) -> None:
    node = nodes(lambda r: {"code": "no_leader", "error": "no leader"})
    started = time.monotonic()
    with pytest.raises(NoLeader, match="no leader"):
        run(lambda c: c.write({"op": "put", "key": "k", "value": "v"}), node.endpoint,
            no_leader_wait=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert len(node.requests) >= 2, "no leader should be waited out with retries"


def test_requests_over_the_in_flight_cap_are_refused_at_once(nodes: Callable[[Handler], FakeNode]) -> None:
    node = nodes(lambda r: None)  # never answers: every request stays in flight

    async def flood(client: ForwardClient) -> list[Any]:
        return await asyncio.gather(*(client.leader_call({"op": "get", "key": "k"}) for _ in range(6)),
                                    return_exceptions=True)

    results = run(flood, node.endpoint, max_in_flight=4, deadline=0.5)
    assert sum(isinstance(r, Overloaded) for r in results) == 2
    assert sum(isinstance(r, forward.ForwardTimeout) for r in results) == 4


def test_a_silent_local_node_is_a_timeout_not_a_hang(nodes: Callable[[Handler], FakeNode]) -> None:
    node = nodes(lambda r: None)
    started = time.monotonic()
    with pytest.raises(forward.ForwardTimeout):
        run(lambda c: c.local_call({"op": "status"}), node.endpoint, deadline=0.5)
    assert time.monotonic() - started < 2.0
    assert len(node.requests) == 1, "a local question is asked once"


def test_connections_over_the_cap_get_503_and_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpserver, "connection_cap", lambda: 4)
    port = free_port()
    http = httpserver.HttpServer(f"127.0.0.1:{port}", f"tcp://127.0.0.1:{free_port()}", 1024)
    http.start()
    held = []
    try:
        for _ in range(4):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5.0))
        deadline = time.monotonic() + 5.0
        answer = b""
        while time.monotonic() < deadline and not answer.startswith(b"HTTP/1.1 503"):
            with socket.create_connection(("127.0.0.1", port), timeout=5.0) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"too many connections" in answer and b"Retry-After" in answer
        for sock in held:
            sock.close()
        held.clear()

        def served() -> bytes:  # a page that needs no node behind the server
            with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
                sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return sock.recv(65536)

        deadline = time.monotonic() + 5.0
        while not (answer := served()).startswith(b"HTTP/1.1 200") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        for sock in held:
            sock.close()
        http.stop()


def test_a_taken_address_fails_start_with_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        http = httpserver.HttpServer(f"127.0.0.1:{port}", "tcp://127.0.0.1:1", 1024)
        with pytest.raises(httpserver.HttpError, match=f"cannot serve http on 127.0.0.1:{port}"):
            http.start()
