"""The client endpoint's rate limit on real ZeroMQ sockets (loopback, no node): refusals
before validation, answers that say when to retry, and the CurveZMQ User-Id as the key."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from raftkv.frames import decode_batch, encode_client
from raftkv.sockets import user_id_of
from raftkvd.net.clientendpoint import ClientEndpoint, client_key
from raftkvd.ratelimit import RateLimiter

pytestmark = pytest.mark.timeout(30)

BURST = 3
DEADLINE_S = 5.0


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def exchange(endpoint: ClientEndpoint, dealer: zmq.Socket, count: int) -> list[dict]:
    """Send `count` status requests; the endpoint takes them in, answers what it refused."""
    for n in range(count):
        dealer.send(encode_client({"id": n + 1, "op": "status"}))
    accepted: list = []
    answers: list[dict] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(accepted) + len(answers) < count and time.monotonic() < deadline:
        accepted += endpoint.recv_all(100)
        endpoint.flush()
        while dealer.poll(10):
            answers += decode_batch(dealer.recv_multipart()[-1])[0]
    assert len(accepted) + len(answers) == count, "requests went missing"
    return answers


def test_requests_over_the_burst_are_answered_rate_limited_with_a_retry_after(ctx: zmq.Context) -> None:
    endpoint = ClientEndpoint(ctx, "tcp://127.0.0.1:*", 1024, RateLimiter(1.0, BURST))
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(endpoint.socket.getsockopt_string(zmq.LAST_ENDPOINT))
    try:
        refused = exchange(endpoint, dealer, BURST + 2)
        assert [a["code"] for a in refused] == ["rate_limited"] * 2
        assert all(0 < a["retry_after"] <= 1.0 for a in refused)
    finally:
        dealer.close(0)
        endpoint.close()


def test_with_curve_the_user_id_is_read_from_the_frames(ctx: zmq.Context) -> None:
    """What the endpoint does with user_ids on: uncopied frames, their ZAP User-Id (here
    pyzmq's authenticator's: the client's public key in Z85)."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        router.curve_secretkey, router.curve_publickey = server_secret, server_public
        router.curve_server = True
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.curve_secretkey, dealer.curve_publickey = client_secret, client_public
        dealer.curve_serverkey = server_public
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(encode_client({"id": 1, "op": "status"}))
        assert router.poll(int(DEADLINE_S * 1000)), "no request over Curve"
        frames = router.recv_multipart(copy=False)
        assert user_id_of(frames) == client_public.decode()
        assert client_key(frames[0].bytes, user_id_of(frames)) == f"key:{client_public.decode()}"
    finally:
        dealer.close(0)
        router.close(0)
        auth.stop()


def test_without_a_zap_handler_there_is_no_user_id(ctx: zmq.Context) -> None:
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"x")
        assert router.poll(int(DEADLINE_S * 1000))
        assert user_id_of(router.recv_multipart(copy=False)) is None
    finally:
        dealer.close(0)
        router.close(0)
