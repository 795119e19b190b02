"""raftkvd.net.transport over real ZeroMQ sockets on 127.0.0.1: delivery, bad frames, dead peers."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

import msgpack
import pytest
import zmq
from helpers import free_port

from raftkvd.net import transport as transport_module
from raftkvd.net.peerwire import (
    MAX_FRAME_BYTES,
    WIRE_VERSION,
    RemovedNotice,
    decode_message,
    encode_message,
    encode_notice,
)
from raftkvd.net.transport import Transport
from raftkvd.raft.messages import Entry, Message, MessageType

DEADLINE_S = 10.0
ANY_PORT = "tcp://127.0.0.1:*"
MAX_ATTEMPTS = 50_000


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)  # also closes sockets a failed test left open


@pytest.fixture
def make_transport(ctx: zmq.Context) -> Iterator[Callable[..., Transport]]:
    """Transports bound to OS-chosen ports, all closed at teardown."""
    made: list[Transport] = []

    def make(node_id: int, peers: dict[int, str] | None = None, **kwargs: object) -> Transport:
        made.append(Transport(ctx, node_id, ANY_PORT, peers or {}, **kwargs))
        return made[-1]

    yield make
    for t in made:
        t.close()


def connected_pair(make: Callable[..., Transport]) -> tuple[Transport, Transport]:
    a = make(1)
    b = make(2, {1: a.endpoint})
    a.add_peer(2, b.endpoint)
    return a, b


def heartbeat(frm: int, to: int, term: int = 1) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=term)


def receive(t: Transport, n: int, timeout: float = DEADLINE_S) -> list[Message]:
    """Poll `t` until `n` messages arrived or the deadline passed."""
    poller = zmq.Poller()
    poller.register(t.socket, zmq.POLLIN)
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and (remaining := deadline - time.monotonic()) > 0:
        if poller.poll(remaining * 1000):
            got.extend(t.recv_all(n - len(got)))
    return got


def receive_while(t: Transport, condition: Callable[[], bool]) -> list[Message]:
    """Keep draining `t` while `condition` holds (up to the deadline); what arrived meanwhile."""
    got: list[Message] = []
    deadline = time.monotonic() + DEADLINE_S
    while condition() and time.monotonic() < deadline:
        got.extend(receive(t, 1, timeout=0.05))
    return got


def send_until_delivered(sender: Transport, receiver: Transport, msg: Message) -> Message:
    """Retry the send (as Raft would) until the link is up and `msg` arrives."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if sender.send(msg) and (got := receive(receiver, 1, timeout=0.5)):
            return got[0]
    raise AssertionError(f"{msg} not delivered within {DEADLINE_S}s")


def raw_dealer(ctx: zmq.Context, identity: bytes, endpoint: str) -> zmq.Socket:
    """A bare DEALER that speaks whatever bytes a test hands it, as a hostile peer would."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def test_messages_flow_both_ways_between_two_transports(make_transport) -> None:
    a, b = connected_pair(make_transport)
    first = send_until_delivered(a, b, heartbeat(1, 2))
    assert first == heartbeat(1, 2)
    append = Message(
        MessageType.APPEND, to=1, frm=2, term=2, log_term=1, index=4,
        entries=(Entry(5, 2, data=b"v" * 1000),), commit=4,
    )  # fmt: skip
    assert send_until_delivered(b, a, append) == append
    assert a.stats()[2].sent >= 1
    assert b.stats()[1].received >= 1
    assert a.malformed_total == b.malformed_total == 0


def test_each_message_reaches_the_peer_it_is_addressed_to(make_transport) -> None:
    nodes = {i: make_transport(i) for i in (1, 2, 3)}
    for t in nodes.values():
        for peer_id, peer in nodes.items():
            t.add_peer(peer_id, peer.endpoint)
    send_until_delivered(nodes[1], nodes[2], heartbeat(1, 2))
    send_until_delivered(nodes[1], nodes[3], heartbeat(1, 3))
    for term in range(2, 52):
        assert nodes[1].send(heartbeat(1, 2, term))
        assert nodes[1].send(heartbeat(1, 3, term))
    to_2, to_3 = receive(nodes[2], 50), receive(nodes[3], 50)
    assert [m.term for m in to_2] == list(range(2, 52))
    assert {(m.frm, m.to) for m in to_2} == {(1, 2)}
    assert {(m.frm, m.to) for m in to_3} == {(1, 3)}


def test_peers_given_to_the_constructor_may_include_ourselves(make_transport) -> None:
    a = make_transport(1)
    b = make_transport(2, {1: a.endpoint, 2: "tcp://127.0.0.1:1"})
    assert b.peers == {1: a.endpoint}


def test_recv_all_returns_at_most_max_n_messages(make_transport) -> None:
    a, b = connected_pair(make_transport)
    send_until_delivered(a, b, heartbeat(1, 2))
    for term in range(10):
        assert a.send(heartbeat(1, 2, term))
    batch = receive(b, 3)
    assert len(batch) == 3
    assert len(receive(b, 7)) == 7


def test_garbage_frames_are_counted_and_dropped_while_valid_traffic_flows(
    ctx: zmq.Context, make_transport
) -> None:
    a, b = connected_pair(make_transport)
    send_until_delivered(a, b, heartbeat(1, 2))
    b.add_peer(3, "tcp://127.0.0.1:1")
    junk = raw_dealer(ctx, b"3", b.endpoint)  # its own identity: node 1's link stays up
    bad_frames: list[list[bytes]] = [
        [os.urandom(64)],
        [b""],
        [msgpack.packb({"type": "append", "to": 2})],
        [msgpack.packb("not an array")],
        [msgpack.packb([WIRE_VERSION + 1, 1, 2, 1])],
        [msgpack.packb([WIRE_VERSION, 99, 2, 1, 0, 0, 0, [], 0, False, 0, b"", None, b"", 0, False])],
        [encode_message(heartbeat(1, 2))[:-1]],
        [encode_message(heartbeat(1, 2)), b"second frame"],
        [b"a", b"b", b"c"],
    ]
    for frames in bad_frames:
        junk.send_multipart(frames)
    junk.send(encode_message(heartbeat(3, 2, term=99)))  # same link, so it arrives last
    got = receive(b, 1)
    assert [m.term for m in got] == [99]
    assert b.malformed_total == len(bad_frames)
    assert send_until_delivered(a, b, heartbeat(1, 2, term=100)).term == 100
    junk.close()


def test_oversized_frame_is_dropped_without_harming_other_links(ctx: zmq.Context, make_transport) -> None:
    a, b = connected_pair(make_transport)
    send_until_delivered(a, b, heartbeat(1, 2))
    hog = raw_dealer(ctx, b"3", b.endpoint)
    hog.send(b"\x00" * (MAX_FRAME_BYTES + 1))
    assert receive(b, 1, timeout=0.5) == []
    assert send_until_delivered(a, b, heartbeat(1, 2, term=7)).term == 7
    hog.close()


@pytest.mark.parametrize(
    "identity, msg",
    [
        (b"3", heartbeat(frm=1, to=2)),  # link of node 3 claims to be node 1
        (b"3", heartbeat(frm=3, to=5)),  # not for us
    ],
    ids=["spoofed-sender", "wrong-receiver"],
)
def test_misrouted_messages_are_counted_and_dropped(
    ctx: zmq.Context, make_transport, identity: bytes, msg: Message
) -> None:
    a, b = connected_pair(make_transport)
    b.add_peer(3, "tcp://127.0.0.1:1")
    sock = raw_dealer(ctx, identity, b.endpoint)
    sock.send(encode_message(msg))
    assert receive_while(b, lambda: b.misrouted_total == 0) == []
    assert b.misrouted_total == 1
    assert send_until_delivered(a, b, heartbeat(1, 2)).frm == 1
    sock.close()


def test_a_member_we_have_no_link_to_is_heard_and_answered_over_its_connection(
    ctx: zmq.Context, make_transport
) -> None:
    """Node 4 was added while we were away: we learn its address only from entries it has to
    send us first. Its messages count, and our answers go back on its own connection."""
    b = make_transport(2, {})
    newcomer = raw_dealer(ctx, b"4", b.endpoint)
    newcomer.send(encode_message(heartbeat(frm=4, to=2, term=5)))
    assert [m.frm for m in receive(b, 1)] == [4]
    assert b.unlinked_total == 1 and b.misrouted_total == 0
    assert b.send(heartbeat(frm=2, to=4, term=5))
    assert newcomer.poll(int(DEADLINE_S * 1000))
    assert decode_message(newcomer.recv()).to == 4
    newcomer.close()


def test_answers_to_a_node_that_never_connected_are_unroutable(make_transport) -> None:
    b = make_transport(2, {})
    assert not b.send(heartbeat(frm=2, to=9))
    assert b.unroutable_total == 1


def test_answers_over_our_own_links_are_received_too(ctx: zmq.Context, make_transport) -> None:
    """A peer without a link to us answers on the DEALER we reached it with."""
    peer = ctx.socket(zmq.ROUTER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.bind(ANY_PORT)
    a = make_transport(1, {2: peer.getsockopt_string(zmq.LAST_ENDPOINT)})
    deadline = time.monotonic() + DEADLINE_S
    while not a.send(heartbeat(1, 2)) and time.monotonic() < deadline:
        pass
    assert peer.poll(int(DEADLINE_S * 1000))
    identity, _ = peer.recv_multipart()
    peer.send_multipart([identity, encode_message(heartbeat(frm=2, to=1, term=3))])
    got: list[Message] = []
    deadline = time.monotonic() + DEADLINE_S
    while not got and time.monotonic() < deadline:  # the node's loop drains its links every tick
        got = a.recv_all(1)
        time.sleep(0.01)
    assert [m.term for m in got] == [3]
    peer.close()


def test_sends_to_a_dead_peer_fail_fast_and_are_counted(make_transport) -> None:
    a = make_transport(1, {2: f"tcp://127.0.0.1:{free_port()}"})
    started = time.monotonic()
    results = [a.send(heartbeat(1, 2, term)) for term in range(20_000)]
    assert time.monotonic() - started < DEADLINE_S
    assert not any(results)
    assert a.stats()[2].send_failures == 20_000
    assert a.stats()[2].sent == 0


def test_a_peer_that_stops_reading_cannot_make_us_queue_without_bound(
    ctx: zmq.Context, make_transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "HIGH_WATER_MARK", 100)
    stalled = ctx.socket(zmq.ROUTER)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.bind(ANY_PORT)
    a = make_transport(1, {2: stalled.getsockopt_string(zmq.LAST_ENDPOINT)})
    big = Message(MessageType.HEARTBEAT, to=2, frm=1, context=b"s" * 4096)
    deadline = time.monotonic() + DEADLINE_S
    while not a.send(big) and time.monotonic() < deadline:
        pass  # until the link is up (IMMEDIATE: nothing queues before that)
    failures_before = a.stats()[2].send_failures
    for _ in range(MAX_ATTEMPTS):  # a count, not a deadline: an unbounded queue must not eat the RAM
        if not a.send(big) and a.stats()[2].send_failures - failures_before >= 1000:
            break
    stats = a.stats()[2]
    assert stats.sent > 0, "the link never came up"
    assert stats.send_failures - failures_before >= 1000, "sends never failed: the link queues without bound"
    # HWM on both sides plus what the kernel's socket buffers hold (a few MB of 4 KiB frames).
    assert stats.sent < 20_000
    stalled.close()


def test_a_removed_peer_loses_its_link_but_is_still_heard(make_transport) -> None:
    """Its link is gone (nothing is sent to it on our initiative); what it says still reaches
    the core, which tells it off (PreVote and CheckQuorum keep it from disrupting anyone)."""
    a, b = connected_pair(make_transport)
    send_until_delivered(a, b, heartbeat(1, 2))
    b.remove_peer(1)
    assert 1 not in b.peers and 1 not in b.stats()
    assert send_until_delivered(a, b, heartbeat(1, 2, term=3)).term == 3
    assert b.unlinked_total >= 1


def test_add_peer_with_a_new_endpoint_moves_the_link(make_transport) -> None:
    a, b = connected_pair(make_transport)
    c = make_transport(2, {1: a.endpoint})  # node 2 restarted elsewhere
    a.add_peer(2, c.endpoint)
    assert send_until_delivered(a, c, heartbeat(1, 2, term=4)).term == 4
    assert a.peers[2] == c.endpoint
    assert receive(b, 1, timeout=0.2) == []


def test_bad_frame_logging_is_rate_limited(
    ctx: zmq.Context, make_transport, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    b = make_transport(2, {1: "tcp://127.0.0.1:1"}, clock=lambda: now[0])
    junk = raw_dealer(ctx, b"1", b.endpoint)
    caplog.set_level(logging.WARNING, logger="raftkvd.net.transport")

    def flood(n: int) -> None:
        for _ in range(n):
            junk.send(b"\xc1")
        junk.send(encode_message(heartbeat(1, 2)))
        assert len(receive(b, 1)) == 1

    flood(50)
    now[0] += transport_module.LOG_INTERVAL_S
    flood(50)
    lines = [r.getMessage() for r in caplog.records]
    assert b.malformed_total == 100
    assert len(lines) == 2
    assert "event=malformed_frame" in lines[0] and "suppressed=0" in lines[0]
    assert "suppressed=49" in lines[1]
    junk.close()


def test_a_removed_node_is_told_over_its_own_connection_and_the_notice_decodes(
    ctx: zmq.Context, make_transport
) -> None:
    """We removed node 3 and dropped our link to it; its messages still reach our ROUTER, and
    the notice goes back over that connection, where its transport decodes it."""
    b = make_transport(2, {})
    removed = make_transport(3, {2: b.endpoint})
    assert send_until_delivered(removed, b, heartbeat(3, 2)).frm == 3
    assert b.tell_removed(3, 42)
    got: list = []
    deadline = time.monotonic() + DEADLINE_S
    while not got and time.monotonic() < deadline:
        got = removed.recv_all(1)
        time.sleep(0.01)
    assert got == [RemovedNotice(to=3, frm=2, index=42)]


def test_a_notice_in_another_nodes_name_is_dropped(ctx: zmq.Context, make_transport) -> None:
    b = make_transport(2, {})
    liar = raw_dealer(ctx, b"1", b.endpoint)
    liar.send(encode_notice(RemovedNotice(to=2, frm=3, index=7)))
    assert receive_while(b, lambda: b.misrouted_total == 0) == []
    assert b.misrouted_total == 1
    liar.close()
