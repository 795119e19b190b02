"""raftctl.Client against fake nodes: real ZeroMQ ROUTER sockets on threads speaking the protocol."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from helpers import free_port

from raftctl import (
    Client,
    CompareFailed,
    InvalidRequest,
    KeyNotFound,
    RaftCtlError,
    RequestRejected,
    Unavailable,
    UsageError,
)
from raftctl.client import normalize_endpoint
from raftkv.frames import decode_batch, encode_client
from raftkv.protocol import Code

Request = dict[str, Any]
Handler = Callable[[Request], Any]
POLL_MS = 10
JOIN_TIMEOUT = 5.0
SLACK = 1.0


class FakeNode:
    """A ROUTER bound to a free port; `handler(request)` gives the reply (a map, a list of
    raw frames/maps to send in order, or None for silence). Every request is recorded."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.identities: list[bytes] = []
        self._socket = zmq.Context.instance().socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fake-{port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(POLL_MS):
                continue
            identity, frame = self._socket.recv_multipart()
            for request in decode_batch(frame)[0]:
                self.requests.append(request)
                self.identities.append(identity)
                replies = self.handler(request)
                for reply in replies if isinstance(replies, list) else [replies]:
                    if reply is not None:
                        self._socket.send_multipart([identity, _frame(reply, request)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT)
        self._socket.close()


def _frame(reply: bytes | Request, request: Request) -> bytes:
    if isinstance(reply, bytes):
        return reply
    return encode_client({"id": request["id"], **reply})


def ok(**fields: Any) -> Callable[[Request], Request]:
    return lambda request: {"code": "ok", **fields}


def redirect_to(leader: FakeNode) -> Callable[[Request], Request]:
    return lambda request: {"code": "not_leader", "leader_id": 1, "leader": leader.endpoint}


@pytest.fixture
def fake_node() -> Iterator[Callable[[Handler], FakeNode]]:
    nodes: list[FakeNode] = []

    def start(handler: Handler) -> FakeNode:
        nodes.append(FakeNode(handler))
        return nodes[-1]

    yield start
    for node in nodes:
        node.close()


@pytest.fixture
def client_for() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(*nodes: FakeNode | str, timeout: float = 2.0) -> Client:
        endpoints = [n if isinstance(n, str) else n.endpoint for n in nodes]
        clients.append(Client(endpoints, timeout=timeout))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def dead_endpoint() -> str:
    return f"127.0.0.1:{free_port()}"


# -- leader discovery -------------------------------------------------------------


def test_not_leader_redirect_is_followed_invisibly_and_remembered(fake_node, client_for):
    leader = fake_node(ok(revision=7))
    follower = fake_node(redirect_to(leader))
    client = client_for(follower)

    assert client.put("k", "v") == 7
    assert client.leader == leader.endpoint
    assert client.put("k", "w") == 7
    assert len(follower.requests) == 1  # the second write went straight to the leader
    assert [r["value"] for r in leader.requests] == ["v", "w"]


def test_unavailable_answer_moves_on_to_the_next_endpoint(fake_node, client_for):
    electing = fake_node(lambda r: {"code": "unavailable", "error": "no leader"})
    healthy = fake_node(ok(value="x", revision=1))
    client = client_for(electing, healthy)

    assert client.get("k") == "x"
    # with no leader known both were asked at once; the healthy answer may come back before
    # the other fake node's thread has recorded its request
    deadline = time.monotonic() + 2.0
    while not electing.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(electing.requests) == 1
    assert client.leader == healthy.endpoint


def test_silent_node_is_skipped_within_the_timeout(fake_node, client_for):
    silent = fake_node(lambda r: None)
    healthy = fake_node(ok(value="x", revision=1))
    client = client_for(silent, healthy, timeout=1.0)

    started = time.monotonic()
    assert client.get("k") == "x"
    assert time.monotonic() - started < 1.0


def test_no_reachable_node_raises_unavailable_within_the_timeout(client_for):
    client = client_for(dead_endpoint(), dead_endpoint(), timeout=0.5)

    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"no leader reachable at .* within 0\.5s"):
        client.put("k", "v")
    assert time.monotonic() - started < 0.5 + SLACK


def test_redirect_loop_between_followers_is_bounded_by_backoff(fake_node, client_for):
    first = fake_node(lambda r: None)
    second = fake_node(redirect_to(first))
    first.handler = redirect_to(second)
    client = client_for(first, timeout=0.5)

    with pytest.raises(Unavailable):
        client.get("k")
    # backoff doubles from 10 ms to 200 ms: a handful of rounds, not a busy loop
    assert len(first.requests) + len(second.requests) < 40


# -- exactly-once writes ----------------------------------------------------------------


def test_retried_write_keeps_session_and_seq_across_redirect_and_timeout(fake_node, client_for):
    def leader_loses_first_answer(request: Request) -> Request | None:
        if len(leader.requests) == 1:
            return None  # as if the answer was lost: the client must retry the same write
        return {"code": "ok", "revision": 3, "deleted": True}

    leader = fake_node(leader_loses_first_answer)
    follower = fake_node(redirect_to(leader))
    client = client_for(follower, leader, timeout=1.0)

    assert client.put("k", "v") == 3
    tries = follower.requests + leader.requests
    assert len(leader.requests) == 2
    assert {(r["session"], r["seq"]) for r in tries} == {(client.session, 1)}
    assert len({r["id"] for r in tries}) == len(tries)  # every try has its own request id

    client.delete("k")
    assert leader.requests[-1]["seq"] == 2  # a new write, a new number


def test_each_client_has_its_own_session(client_for):
    first, second = client_for(dead_endpoint()), client_for(dead_endpoint())
    assert first.session != second.session
    assert len(first.session) == 32


def test_reads_carry_the_session_but_no_seq(fake_node, client_for):
    node = fake_node(ok(value="x", items=[], revision=1))
    client = client_for(node)

    client.get("k")
    client.list("p")
    assert all(r["session"] == client.session and "seq" not in r for r in node.requests)


# -- reply matching ---------------------------------------------------------------


def test_replies_with_another_id_and_garbage_frames_are_discarded(fake_node, client_for):
    def stale_then_fresh(request: Request) -> list[bytes | Request]:
        stale = encode_client({"id": request["id"] - 1, "code": "ok", "value": "stale"})
        return [stale, b"\xc1 not msgpack", {"code": "ok", "value": "fresh"}]

    client = client_for(fake_node(stale_then_fresh))
    assert client.get("k") == "fresh"


def test_a_late_answer_to_a_finished_call_is_never_taken_for_the_next_one(fake_node, client_for):
    def late_answers(request: Request) -> list[bytes | Request] | None:
        if len(node.requests) == 1:
            return None  # silent: the client tries again within the same call
        if len(node.requests) == 3:  # the next call: first the late answer to the first try
            first_id = node.requests[0]["id"]
            return [encode_client({"id": first_id, "code": "ok", "value": "late"}),
                    {"code": "ok", "value": "second"}]
        return {"code": "ok", "value": "first"}

    node = fake_node(late_answers)
    client = client_for(node, timeout=1.0)

    assert client.get("a") == "first"
    assert client.get("b") == "second"
    assert len({r["id"] for r in node.requests}) == 3  # every try has its own id


def test_a_silent_node_gets_its_answer_counted_when_it_comes_within_the_call(fake_node, client_for):
    """No try is abandoned for being slow: a node that needs long still answers the call."""

    def slow(request: Request) -> Request:
        time.sleep(0.6)  # longer than the old 0.5 s per try: the answer still counts
        return {"code": "ok", "value": "slow"}

    node = fake_node(slow)
    client = client_for(node, timeout=5.0)
    assert client.get("k") == "slow"
    assert len(node.requests) == 1


# -- answers mapped to exceptions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ({"code": "not_found"}, KeyNotFound),
        ({"code": "invalid", "error": "bad"}, InvalidRequest),
        ({"code": "too_large", "error": "value is 2000000 bytes"}, RequestRejected),
        ({"code": "no_space", "error": "map full"}, RequestRejected),
        ({"code": "internal", "error": "oops"}, RaftCtlError),
    ],
)
def test_error_codes_map_to_the_exception_hierarchy(fake_node, client_for, reply, error):
    client = client_for(fake_node(lambda r: reply))
    with pytest.raises(error):
        client.get("k")


def test_missing_key_raises_key_not_found_naming_the_key(fake_node, client_for):
    client = client_for(fake_node(lambda r: {"code": "not_found"}))
    with pytest.raises(KeyNotFound, match="key not found: color") as caught:
        client.get("color")
    assert caught.value.exit_code == 1


def test_compare_failed_carries_the_current_value(fake_node, client_for):
    client = client_for(fake_node(lambda r: {"code": Code.COMPARE_FAILED, "value": "blue"}))
    with pytest.raises(CompareFailed, match='"blue"') as caught:
        client.cas("color", "red", "green")
    assert caught.value.current == "blue"


def test_cas_sends_none_to_require_an_absent_key(fake_node, client_for):
    node = fake_node(ok(revision=9))
    assert client_for(node).cas("k", None, "v") == 9
    assert node.requests[0]["expected"] is None and node.requests[0]["seq"] == 1


def test_delete_reports_whether_the_key_existed(fake_node, client_for):
    node = fake_node(lambda r: {"code": "ok", "deleted": r["key"] == "here"})
    client = client_for(node)
    assert client.delete("here") is True
    assert client.delete("gone") is False


def test_list_returns_pairs_in_the_servers_order(fake_node, client_for):
    node = fake_node(ok(items=[["a", "1"], ["b", "2"]]))
    assert client_for(node).list("", limit=2) == [("a", "1"), ("b", "2")]
    assert node.requests[0]["limit"] == 2


# -- node-addressed operations -----------------------------------------------------------


def test_status_of_a_given_node_asks_that_node_only(fake_node, client_for):
    first = fake_node(ok(status={"id": 1}))
    second = fake_node(ok(status={"id": 2}))
    client = client_for(first)
    assert client.status(second.endpoint) == {"id": 2}
    assert first.requests == []


def test_cluster_lists_unreachable_nodes_too(fake_node, client_for):
    nodes = [{"id": 1, "role": "leader"}, {"id": 2, "endpoint": "tcp://x:1", "reachable": False}]
    client = client_for(fake_node(ok(nodes=nodes)))
    assert client.cluster() == nodes


def test_snapshot_of_a_silent_node_is_unavailable(client_for):
    client = client_for(dead_endpoint(), timeout=0.3)
    with pytest.raises(Unavailable, match="did not answer"):
        client.snapshot(dead_endpoint())


def test_transfer_forgets_the_old_leader(fake_node, client_for):
    node = fake_node(ok(leader_id=2))
    client = client_for(node)
    assert client.transfer_leader(to=2) == 2
    assert node.requests[0]["to"] == 2
    assert client.leader is None


# -- local validation ----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "k" * 512, "é" * 256])
def test_keys_outside_1_to_511_utf8_bytes_are_rejected_before_sending(fake_node, client_for, key):
    node = fake_node(ok(revision=1))
    client = client_for(node)
    with pytest.raises(InvalidRequest, match="1 to 511"):
        client.put(key, "v")
    assert node.requests == []


def test_a_511_byte_key_is_sent(fake_node, client_for):
    node = fake_node(ok(revision=1))
    assert client_for(node).put("é" * 255 + "k", "v") == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get("k", consistency="eventual"),
        lambda c: c.list(limit=0),
        lambda c: c.put("k", "\udcff"),
        lambda c: c.put("k", 5),
    ],
)
def test_malformed_arguments_are_rejected_before_sending(fake_node, client_for, call):
    node = fake_node(ok(revision=1))
    with pytest.raises(InvalidRequest):
        call(client_for(node))
    assert node.requests == []


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [("h:1", "tcp://h:1"), ("tcp://10.0.0.1:50061", "tcp://10.0.0.1:50061"), (" h:2 ", "tcp://h:2")],
)
def test_endpoints_accept_host_port_with_or_without_scheme(text, endpoint):
    assert normalize_endpoint(text) == endpoint


@pytest.mark.parametrize("text", ["h", "h:x", "h:0", ":1", "h:70000", "ipc:///tmp/x"])
def test_malformed_endpoints_are_usage_errors(text):
    with pytest.raises(UsageError):
        normalize_endpoint(text)


def test_client_without_endpoints_is_a_usage_error():
    with pytest.raises(UsageError):
        Client([])


def test_context_manager_closes_sockets_and_client_stays_usable(fake_node):
    node = fake_node(ok(value="x"))
    with Client([node.endpoint]) as client:
        assert client.get("k") == "x"
    assert client.get("k") == "x"  # sockets are recreated lazily
    client.close()
