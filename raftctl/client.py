"""raftctl.Client: the Python client library for a raftkv cluster.

Speaks raftkvd's client protocol (raftkv.protocol) over one ZeroMQ DEALER per
node endpoint. It finds the leader by itself (following "not_leader" redirects,
trying the next node on silence) and numbers its writes within a random session
so that a write retried after a lost answer is applied once (thesis §6.3).
A Client is not thread-safe: use one per thread.
"""

from __future__ import annotations

import math
import time
import uuid
from types import TracebackType
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from raftctl.errors import (
    CompareFailed,
    InvalidRequest,
    KeyNotFound,
    RaftCtlError,
    RequestRejected,
    Unavailable,
    UsageError,
)
from raftkv.frames import FrameError, decode_client, encode_client
from raftkv.protocol import (
    CONSISTENCY_LINEARIZABLE,
    CONSISTENCY_SERIALIZABLE,
    MAX_KEY_BYTES,
    Code,
    Op,
)

DEFAULT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 0.2
"""Seconds to wait for a connection before a try counts as failed."""
PER_TRY_TIMEOUT = 1.0
MIN_TRIES = 2
BACKOFF_START = 0.010
BACKOFF_CAP = 0.200
TCP_SCHEME = "tcp://"
CONSISTENCIES = (CONSISTENCY_LINEARIZABLE, CONSISTENCY_SERIALIZABLE)
_RETRY_CODES = frozenset({Code.NOT_LEADER, Code.UNAVAILABLE})
_REJECT_CODES = frozenset({Code.INVALID, Code.TOO_LARGE, Code.NO_SPACE})

Reply = dict[str, Any]


def normalize_endpoint(text: str) -> str:
    """Accept "host:port" or "tcp://host:port" and return the ZeroMQ form."""
    address = text.strip().removeprefix(TCP_SCHEME)
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"bad endpoint {text!r}: expected host:port or tcp://host:port")
    return TCP_SCHEME + address


class Client:
    """A connection to a raftkv cluster through any of its nodes' client endpoints.

    `leader` is the endpoint that answered last (the leader, as far as this
    client knows); `session` names this client's writes for duplicate detection.
    """

    def __init__(
        self, endpoints: list[str], timeout: float = DEFAULT_TIMEOUT, session: str | None = None
    ) -> None:
        """`timeout` bounds each call in seconds, retries and redirects included."""
        if not endpoints:
            raise UsageError("no endpoints given")
        if not timeout > 0:
            raise UsageError(f"timeout must be positive, not {timeout}")
        self.endpoints = [normalize_endpoint(e) for e in endpoints]
        self.timeout = float(timeout)
        # every endpoint gets a turn within the timeout, and a lone endpoint a second try
        self._per_try = min(PER_TRY_TIMEOUT, self.timeout / max(MIN_TRIES, len(self.endpoints)))
        self.session = session or uuid.uuid4().hex
        self.leader: str | None = None
        self._seq = 0
        self._request_id = 0
        self._cursor = 0
        self._context = zmq.Context.instance()
        self._links: dict[str, _Link] = {}

    # -- key-value operations -------------------------------------------------

    def put(self, key: str, value: str) -> int:
        """Write `value` under `key` (linearizable); returns the new revision."""
        _check_key(key)
        _check_value(value)
        return int(self._write(Op.PUT, key=key, value=value)["revision"])

    def get(self, key: str, consistency: str = CONSISTENCY_LINEARIZABLE) -> str:
        """Read `key`; raises KeyNotFound. "serializable" may answer from a stale node."""
        _check_key(key)
        _check_consistency(consistency)
        return str(self._call(Op.GET, key=key, consistency=consistency)["value"])

    def delete(self, key: str) -> bool:
        """Delete `key` (linearizable); returns False when it did not exist."""
        _check_key(key)
        return bool(self._write(Op.DELETE, key=key)["deleted"])

    def cas(self, key: str, expected: str | None, new: str) -> int:
        """Set `key` to `new` only if it holds `expected` (None: only if absent).

        Returns the new revision; raises CompareFailed carrying the current value.
        """
        _check_key(key)
        if expected is not None:
            _check_value(expected)
        _check_value(new)
        return int(self._write(Op.CAS, key=key, expected=expected, value=new)["revision"])

    def list(
        self,
        prefix: str = "",
        limit: int | None = None,
        consistency: str = CONSISTENCY_LINEARIZABLE,
    ) -> list[tuple[str, str]]:
        """Return (key, value) pairs whose key starts with `prefix`, in key order."""
        _check_key(prefix, allow_empty=True)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidRequest(f"limit must be a positive integer, not {limit!r}")
        _check_consistency(consistency)
        reply = self._call(Op.LIST, prefix=prefix, limit=limit, consistency=consistency)
        return [(str(k), str(v)) for k, v in reply["items"]]

    # -- cluster operations ---------------------------------------------------

    def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """One node's view of itself: `endpoint`'s, or the leader's (any node's if none)."""
        if endpoint is None:
            return dict(self._call(Op.STATUS)["status"])
        return dict(self._call_node(normalize_endpoint(endpoint), Op.STATUS)["status"])

    def cluster(self) -> list[dict[str, Any]]:
        """Status of every node, as seen by one reachable node (leader preferred).

        Unreachable nodes are listed as {"id", "endpoint", "reachable": False}.
        """
        return [dict(node) for node in self._call(Op.CLUSTER)["nodes"]]

    def transfer_leader(self, to: int = 0) -> int:
        """Ask the leader to hand leadership to node `to` (0: the most caught-up one).

        Returns the id of the leader after the transfer.
        """
        leader_id = int(self._call(Op.TRANSFER, to=to)["leader_id"])
        self.leader = None  # the endpoint we knew now belongs to a follower
        return leader_id

    def member_add(self, node_id: int, raft: str, client: str, http: str) -> int:
        """Add node `node_id` as a learner (addresses as in the cluster file); the leader
        makes it a voter once it has caught up. Returns the log index of the change."""
        fields = {"node_id": node_id, "raft": raft, "client": client, "http": http}
        return int(self._call(Op.MEMBER_ADD, **fields)["index"])

    def member_remove(self, node_id: int) -> int:
        """Remove node `node_id` (the leader too: it steps down once the removal commits).
        Returns the log index of the change."""
        return int(self._call(Op.MEMBER_REMOVE, node_id=node_id)["index"])

    def snapshot(self, endpoint: str) -> int:
        """Make the node at `endpoint` snapshot and compact its log; returns the index."""
        return int(self._call_node(normalize_endpoint(endpoint), Op.SNAPSHOT)["index"])

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close every socket at once (LINGER 0: unsent requests are dropped)."""
        for endpoint in list(self._links):
            self._drop_socket(endpoint)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------

    def _write(self, op: Op, **fields: Any) -> Reply:
        """A new write gets the next seq; its retries reuse it so it applies once."""
        self._seq += 1
        return self._call(op, seq=self._seq, **fields)

    def _call(self, op: Op, **fields: Any) -> Reply:
        request = {"op": op.value, "session": self.session, **fields}
        return _check_reply(self._send_to_leader(request), request)

    def _call_node(self, endpoint: str, op: Op) -> Reply:
        """Ask one given node, without redirects: the question is about that node."""
        request = {"op": op.value, "session": self.session}
        reply = self._exchange(endpoint, request, self.timeout)
        if reply is None:
            raise Unavailable(f"node {endpoint} did not answer within {self.timeout}s")
        return _check_reply(reply, request)

    def _send_to_leader(self, request: Reply) -> Reply:
        """Send until some node gives a real answer, or the timeout runs out.

        A "not_leader" hint is followed at once; silence or "unavailable" moves
        on to the next endpoint after an exponential backoff, so an election in
        progress is waited out rather than hammered.
        """
        deadline = time.monotonic() + self.timeout
        backoff = BACKOFF_START
        target = self.leader or self.endpoints[self._cursor]
        redirected = False
        last_error = ""
        while (remaining := deadline - time.monotonic()) > 0:
            reply = self._exchange(target, request, min(self._per_try, remaining))
            if reply is not None and reply.get("code") not in _RETRY_CODES:
                self.leader = target
                return reply
            hint = _leader_hint(reply)
            last_error = _describe_failure(target, reply)
            if hint is not None and not redirected:
                target, redirected = hint, True
                continue
            self.leader = None
            target, redirected = hint or self._next_endpoint(), False
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_CAP)
        raise Unavailable(
            f"no leader reachable at {', '.join(self.endpoints)} within {self.timeout}s"
            + (f" (last: {last_error})" if last_error else "")
        )

    def _exchange(self, endpoint: str, request: Reply, timeout: float) -> Reply | None:
        """One try: send with a fresh id, wait for the reply carrying that id.

        On silence the socket is thrown away, so a late reply can never be
        read as the answer to a later request.
        """
        self._request_id += 1
        request_id = self._request_id
        link = self._link(endpoint)
        _disconnected(link.monitor)  # forget drops that happened before this request
        try:
            link.socket.send(encode_client({**request, "id": request_id}))
        except zmq.Again:
            self._drop_socket(endpoint)
            return None
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready = dict(link.poller.poll(math.ceil(remaining * 1000)))
            if not ready:
                break
            if link.monitor in ready and _disconnected(link.monitor):
                break  # the node died with our request: fail over now, not at the timeout
            if link.socket in ready:
                reply = _decode(link.socket.recv_multipart()[-1])
                if reply is not None and reply.get("id") == request_id:
                    return reply
        self._drop_socket(endpoint)
        return None

    def _link(self, endpoint: str) -> _Link:
        link = self._links.get(endpoint)
        if link is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            # IMMEDIATE sockets queue only on a live connection: a dead node fails the send
            # within CONNECT_TIMEOUT instead of swallowing the request for a whole try.
            socket.setsockopt(zmq.IMMEDIATE, 1)
            socket.setsockopt(zmq.SNDTIMEO, int(CONNECT_TIMEOUT * 1000))
            try:
                socket.connect(endpoint)
            except zmq.ZMQError as error:
                socket.close()
                raise UsageError(f"bad endpoint {endpoint}: {error}") from error
            link = _Link(socket, socket.get_monitor_socket(zmq.EVENT_DISCONNECTED))
            self._links[endpoint] = link
        return link

    def _drop_socket(self, endpoint: str) -> None:
        link = self._links.pop(endpoint, None)
        if link is not None:
            link.close()

    def _next_endpoint(self) -> str:
        self._cursor = (self._cursor + 1) % len(self.endpoints)
        return self.endpoints[self._cursor]


def _leader_hint(reply: Reply | None) -> str | None:
    """The leader's client endpoint from a "not_leader" answer, when it knows one."""
    if reply is None or reply.get("code") != Code.NOT_LEADER:
        return None
    leader = reply.get("leader")
    if not isinstance(leader, str) or not leader:
        return None
    try:
        return normalize_endpoint(leader)
    except UsageError:
        return None


def _describe_failure(endpoint: str, reply: Reply | None) -> str:
    if reply is None:
        return f"{endpoint} did not answer"
    return f"{endpoint}: {reply.get('error') or reply.get('code')}"


def _check_reply(reply: Reply, request: Reply) -> Reply:
    """Turn an answer's code into the matching exception, or return the answer."""
    code = reply.get("code")
    if code == Code.OK:
        return reply
    error = str(reply.get("error") or code)
    if code == Code.NOT_FOUND:
        raise KeyNotFound(str(request.get("key", "")))
    if code == Code.COMPARE_FAILED:
        current = reply.get("value")
        raise CompareFailed(str(request.get("key", "")), None if current is None else str(current))
    if code == Code.INVALID:
        raise InvalidRequest(f"invalid request: {error}")
    if code in _REJECT_CODES:
        raise RequestRejected(f"rejected: {error}")
    if code in _RETRY_CODES:
        raise Unavailable(f"unavailable: {error}")
    raise RaftCtlError(f"server error: {error}")


def _check_key(key: str, allow_empty: bool = False) -> None:
    """Keys are 1..511 UTF-8 bytes (LMDB's limit); checked here to fail without a round trip."""
    if not isinstance(key, str):
        raise InvalidRequest(f"key must be a string, not {type(key).__name__}")
    size = len(_utf8(key, "key"))
    if size > MAX_KEY_BYTES or (size == 0 and not allow_empty):
        raise InvalidRequest(f"key is {size} bytes; keys must be 1 to {MAX_KEY_BYTES} UTF-8 bytes")


def _check_value(value: str) -> None:
    """Values are UTF-8 strings; their size limit is the server's (max_value_bytes)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"value must be a string, not {type(value).__name__}")
    _utf8(value, "value")


def _check_consistency(consistency: str) -> None:
    if consistency not in CONSISTENCIES:
        raise InvalidRequest(
            f"consistency must be one of {', '.join(CONSISTENCIES)}, not {consistency!r}"
        )


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidRequest(f"{what} is not valid UTF-8: {error.reason}") from error


def _decode(frame: bytes) -> Reply | None:
    """A reply frame, or None for garbage (dropped like any unmatched frame)."""
    try:
        return decode_client(frame)
    except FrameError:
        return None


class _Link:
    """One node's DEALER, with a monitor that reports the connection dropping."""

    def __init__(self, socket: zmq.Socket, monitor: zmq.Socket) -> None:
        self.socket = socket
        self.monitor = monitor
        self.poller = zmq.Poller()
        self.poller.register(socket, zmq.POLLIN)
        self.poller.register(monitor, zmq.POLLIN)

    def close(self) -> None:
        self.socket.disable_monitor()
        self.socket.close(linger=0)
        self.monitor.close(linger=0)


def _disconnected(monitor: zmq.Socket) -> bool:
    """Drain the monitor; True if the connection dropped since the request went out."""
    dropped = False
    while True:
        try:
            frames = monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return dropped
        dropped |= parse_monitor_message(frames)["event"] == zmq.EVENT_DISCONNECTED
