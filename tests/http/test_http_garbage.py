"""Garbage HTTP never crashes a node (SPEC §6), and idle or slow clients cannot exhaust it:
junk on raw sockets, slowloris-style partial headers, idle connections and a body that
never finishes; the API keeps answering throughout and the slow connections are cut off."""

from __future__ import annotations

import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cluster import HOST, ProcCluster
from http_helpers import call, follower, http_port, put, raw_exchange

pytestmark = pytest.mark.timeout(180)

SEED = 20260511
IDLE_TIMEOUT_S = 10.0
"""raftkvd.http.guards.IDLE_TIMEOUT_S: also the limit for a request head to complete."""
BODY_TIMEOUT_S = 10.0
"""raftkvd.http.rest.BODY_TIMEOUT_S."""
SLOW_CLIENTS = 100
IDLE_CLIENTS = 100
API_ANSWER_S = 2.0


def junk_requests(rng: random.Random) -> list[bytes]:
    junk = [rng.randbytes(rng.choice((1, 7, 64, 1000, 70_000))) for _ in range(20)]
    junk += [
        b"\x00" * 1000,
        b"\r\n" * 10_000,
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n",
        b"GET /health HTTP/1.1\r\nX-Big: " + b"v" * 100_000 + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"PUT /kv/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"PUT /kv/x HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"PUT /kv/x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"PUT /kv/x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"PUT /kv/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        b"PUT /kv/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"PUT /kv/x HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(100),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(500),  # a TLS ClientHello
        b"GET /health HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + rng.randbytes(50),
        b"GET /kv/%00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /kv/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://evil/kv/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /kv?prefix=%ZZ&limit=%FF HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 200,  # pipelined
        b"PUT /kv/x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 999999999\r\n\r\n",
    ]
    return junk


def assert_serving(cluster: ProcCluster, node_id: int, key: str) -> None:
    assert cluster.is_running(node_id), f"node {node_id} died"
    port = http_port(cluster, node_id)
    health = call(port, "GET", "/health", timeout=API_ANSWER_S)
    assert health.status == 200, health.body
    assert put(port, key, "alive", timeout=API_ANSWER_S).status == 200
    assert call(port, "GET", f"/kv/{key}", timeout=API_ANSWER_S).json()["value"] == "alive"


def test_junk_on_raw_sockets_never_crashes_a_node_and_the_api_keeps_answering(
    http_cluster: ProcCluster,
) -> None:
    rng = random.Random(SEED)
    junk = junk_requests(rng)
    for node_id in (follower(http_cluster), http_cluster.wait_for_leader()):
        port = http_port(http_cluster, node_id)
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda data, p=port: raw_exchange(p, data, timeout=3.0), junk))
        for data, answer in zip(junk, answers, strict=True):
            assert answer == b"" or answer.startswith(b"HTTP/1."), (data[:80], answer[:200])
            assert not answer.startswith(b"HTTP/1.1 5") or answer.startswith(b"HTTP/1.1 503"), \
                (data[:80], answer[:300])
        assert_serving(http_cluster, node_id, f"junk/{node_id}")


def _open(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=5.0)
    if first:
        sock.sendall(first)
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_and_slow_clients_do_not_block_the_api_and_are_cut_off(http_cluster: ProcCluster) -> None:
    node_id = follower(http_cluster)
    port = http_port(http_cluster, node_id)
    idle = [_open(port) for _ in range(IDLE_CLIENTS)]
    slow = [_open(port, b"GET /health HTTP/1.1\r\nHost: x\r\n") for _ in range(SLOW_CLIENTS)]
    slow_body = _open(port, b"PUT /kv/slowbody HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                            b"\r\nContent-Length: 100\r\n\r\n{\"value\"")
    started = time.monotonic()
    try:
        # The API answers while hundreds of connections dawdle.
        for n in range(20):
            reply = put(port, f"busy/{n}", "v", timeout=API_ANSWER_S)
            assert reply.status == 200 and reply.seconds < API_ANSWER_S
        # Slowloris: one more header line per second on each slow connection, forever.
        open_slow = set(range(SLOW_CLIENTS))
        deadline = started + IDLE_TIMEOUT_S + 6.0
        while open_slow and time.monotonic() < deadline:
            for i in list(open_slow):
                try:
                    slow[i].send(b"X-Slow: 1\r\n")
                except OSError:
                    open_slow.discard(i)
                    continue
                if _closed_by_server(slow[i]):
                    open_slow.discard(i)
            assert call(port, "GET", "/health", timeout=API_ANSWER_S).status == 200
            time.sleep(1.0)  # the slowloris pace itself, not a wait for a condition
        assert not open_slow, f"{len(open_slow)} slowloris connections still open"
        assert all(_closed_by_server(sock) for sock in idle), "idle connections still open"

        slow_body.setblocking(True)
        slow_body.settimeout(BODY_TIMEOUT_S + 5.0)
        answer = slow_body.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"error"' in answer
        assert call(port, "GET", "/kv/slowbody").status == 404
    finally:
        for sock in [*idle, *slow, slow_body]:
            sock.close()
    assert_serving(http_cluster, node_id, "after/slow")
