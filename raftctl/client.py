"""raftctl.Client: the Python client library for a raftkv cluster.

Speaks the client protocol (raftkv.protocol) over one ZeroMQ DEALER per node endpoint
(links.py), and finds the node that can answer each request with the client core that every
raftkv client shares (raftkv.routing): all endpoints at once while the leader is unknown,
the remembered leader alone afterwards, redirects followed invisibly. It numbers its writes
within a random session so that a write retried after a lost answer is applied once
(thesis §6.3). A Client is not thread-safe: use one per thread.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import zmq

from raftctl.errors import (
    Compacted,
    CompareFailed,
    InvalidRequest,
    KeyNotFound,
    RaftCtlError,
    RateLimited,
    RequestRejected,
    Unavailable,
    UsageError,
)
from raftctl.links import Links
from raftkv import routing
from raftkv.curve import ClientCurve
from raftkv.protocol import (
    CONSISTENCY_LINEARIZABLE,
    CONSISTENCY_SERIALIZABLE,
    MAX_KEY_BYTES,
    Code,
    Op,
)
from raftkv.routing import TCP_SCHEME, Call, Outcome, Route, Router

DEFAULT_TIMEOUT = 5.0
WATCH_WAIT_S = 5.0
"""How long a node holds a watch request with nothing to tell: the watch's heartbeat."""
NODE_STATUS_TIMEOUT = 1.0
"""How long `node_statuses` waits for each node's own answer."""
CONSISTENCIES = (CONSISTENCY_LINEARIZABLE, CONSISTENCY_SERIALIZABLE)
_RETRY_CODES = frozenset({Code.NOT_LEADER, Code.NO_LEADER, Code.UNAVAILABLE})
_REJECT_CODES = frozenset({Code.INVALID, Code.TOO_LARGE, Code.NO_SPACE})

Reply = dict[str, Any]

__all__ = ["DEFAULT_TIMEOUT", "TCP_SCHEME", "Client", "normalize_endpoint"]


def normalize_endpoint(text: str) -> str:
    """Accept "host:port" or "tcp://host:port" and return the ZeroMQ form."""
    endpoint = routing.normalize_endpoint(text)
    if endpoint is None:
        raise UsageError(f"bad endpoint {text!r}: expected host:port or tcp://host:port")
    return endpoint


class Client:
    """A connection to a raftkv cluster through any of its nodes' client endpoints.

    `leader` is the endpoint of the leader as far as this client knows (None: ask every
    endpoint); `session` names this client's writes for duplicate detection.
    """

    def __init__(
        self, endpoints: list[str], timeout: float = DEFAULT_TIMEOUT, session: str | None = None,
        *, curve: ClientCurve | None = None,
    ) -> None:
        """`timeout` bounds each call in seconds, retries and redirects included. `curve`:
        CurveZMQ to every node (raftctl/security.py builds it)."""
        if not endpoints:
            raise UsageError("no endpoints given")
        if not timeout > 0:
            raise UsageError(f"timeout must be positive, not {timeout}")
        self.endpoints = [normalize_endpoint(e) for e in endpoints]
        self.timeout = float(timeout)
        self.session = session or uuid.uuid4().hex
        self._seq = 0
        self._router = Router(list(self.endpoints))
        self._links = Links(zmq.Context.instance(), curve)

    @property
    def leader(self) -> str | None:
        return self._router.leader

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
        return str(self._read(Op.GET, consistency, key=key)["value"])

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
        reply = self._read(Op.LIST, consistency, prefix=prefix, limit=limit)
        return [(str(k), str(v)) for k, v in reply["items"]]

    # -- cluster operations ---------------------------------------------------

    def revision(self, consistency: str = CONSISTENCY_LINEARIZABLE) -> int:
        """The store's current revision: every write acknowledged before the call is at or
        below it when linearizable (the leader's ReadIndex)."""
        _check_consistency(consistency)
        return int(self._read(Op.LIST, consistency, prefix="", limit=0)["revision"])

    def watch(self, key: str | None = None, *, prefix: str | None = None, rev: int | None = None,
              endpoint: str | None = None, wait: float = WATCH_WAIT_S) -> Iterator[dict[str, Any]]:
        """Every change to `key`, or to the keys under `prefix`, from revision `rev` on (by
        default, after the cluster's current revision, learned linearizably): an endless
        iterator of {type, key, value, revision}, in revision order.

        One node serves it (`endpoint`, else one picked at random: followers share the
        load); if that node fails, the next one takes over at the next revision, so no event
        is missing or repeated. Raises Unavailable once no node has answered for `timeout`
        seconds, Compacted when `rev` is older than the cluster's history."""
        if (key is None) == (prefix is None):
            raise InvalidRequest("watch takes a key or a prefix (one of them)")
        if key is not None:
            _check_key(key)
            selector: dict[str, Any] = {"key": key}
        else:
            assert prefix is not None
            _check_key(prefix, allow_empty=True)
            selector = {"prefix": prefix}
        if rev is not None and (type(rev) is not int or rev < 1):
            raise InvalidRequest(f"rev must be a positive integer, not {rev!r}")
        if rev is None:
            rev = self.revision() + 1
        at = (self.endpoints.index(normalize_endpoint(endpoint)) if endpoint is not None
              else random.randrange(len(self.endpoints)))
        answered = time.monotonic()
        while True:
            node = self.endpoints[at % len(self.endpoints)]
            try:
                reply = self._call_node(node, Op.WATCH, timeout=wait + self.timeout, rev=rev,
                                        wait=wait, **selector)
            except Unavailable:
                if time.monotonic() - answered > self.timeout:
                    raise Unavailable(f"no node of {', '.join(self.endpoints)} served the watch "
                                      f"for {self.timeout:g}s (it was at revision {rev})") from None
                at += 1
                if at % len(self.endpoints) == 0:
                    time.sleep(min(0.2, self.timeout / 10))  # every node failed: not a busy loop
                continue
            answered = time.monotonic()
            yield from reply["events"]
            rev = int(reply["next"])

    def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """One node's view of itself: `endpoint`'s, or whichever node answers first."""
        if endpoint is None:
            return dict(self._call(Op.STATUS, Route.ANY)["status"])
        return dict(self._call_node(normalize_endpoint(endpoint), Op.STATUS)["status"])

    def cluster(self) -> list[dict[str, Any]]:
        """Status of every member, as the leader (which owns the membership) gathers it.

        Unreachable nodes are listed as {"id", "endpoint", "raft", "http", "reachable": False}.
        """
        return [dict(node) for node in self._call(Op.CLUSTER, Route.LEADER)["nodes"]]

    def node_statuses(self, timeout: float = NODE_STATUS_TIMEOUT) -> list[dict[str, Any]]:
        """Each endpoint's own status, asked all at once (for when there is no leader to ask):
        {"endpoint", "reachable": False} for those that do not answer within `timeout`."""
        now = time.monotonic()
        calls = {}
        for endpoint in self.endpoints:
            call = Call(Router([endpoint]), Route.NODE, now, now + timeout, target=endpoint)
            self._links.begin(self._request(Op.STATUS), call)
            calls[endpoint] = call
        while not all(call.done for call in calls.values()):
            self._links.poll(timeout)
        found = []
        for endpoint, call in calls.items():
            reply = call.reply
            if reply is not None and reply.get("code") == Code.OK and isinstance(reply.get("status"), dict):
                found.append({**reply["status"], "reachable": True})
            else:
                found.append({"endpoint": endpoint, "reachable": False})
        return found

    def transfer_leader(self, to: int = 0) -> int:
        """Ask the leader to hand leadership to node `to` (0: the most caught-up one).

        Returns the id of the leader after the transfer.
        """
        leader_id = int(self._call(Op.TRANSFER, Route.LEADER, idempotent=False, to=to)["leader_id"])
        self._router.leader = None  # the endpoint we knew may belong to a follower now
        return leader_id

    def member_add(self, node_id: int, raft: str, client: str, http: str) -> int:
        """Add node `node_id` as a learner (addresses as in the cluster file); the leader
        makes it a voter once it has caught up. Returns the log index of the change."""
        fields = {"node_id": node_id, "raft": raft, "client": client, "http": http}
        return int(self._call(Op.MEMBER_ADD, Route.LEADER, idempotent=False, **fields)["index"])

    def member_remove(self, node_id: int) -> int:
        """Remove node `node_id` (the leader too: it steps down once the removal commits).
        Returns the log index of the change."""
        return int(self._call(Op.MEMBER_REMOVE, Route.LEADER, idempotent=False, node_id=node_id)["index"])

    def snapshot(self, endpoint: str) -> int:
        """Make the node at `endpoint` snapshot and compact its log; returns the index."""
        return int(self._call_node(normalize_endpoint(endpoint), Op.SNAPSHOT)["index"])

    def backup_open(self) -> tuple[str, Reply]:
        """Open a backup on the leader: the endpoint to read it from, and its stream id and
        header (raftctl/backup.py reads it to a file)."""
        reply = self._call(Op.BACKUP, Route.LEADER, idempotent=False)
        assert self._router.leader is not None, "a leader call that succeeded knows the leader"
        return self._router.leader, reply

    def backup_read(self, endpoint: str, stream: str, seq: int) -> Reply:
        """Chunk `seq` of backup `stream`, from the node that opened it."""
        return self._call_node(endpoint, Op.BACKUP_READ, stream=stream, seq=seq)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close every socket at once (LINGER 0: unsent requests are dropped)."""
        self._links.close()

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

    def _request(self, op: Op, **fields: Any) -> Reply:
        return {"op": op.value, "session": self.session, **fields}

    def _write(self, op: Op, **fields: Any) -> Reply:
        """A new write gets the next seq; its retries reuse it so it applies once."""
        self._seq += 1
        return self._call(op, Route.LEADER, seq=self._seq, **fields)

    def _read(self, op: Op, consistency: str, **fields: Any) -> Reply:
        route = Route.ANY if consistency == CONSISTENCY_SERIALIZABLE else Route.LEADER
        return self._call(op, route, consistency=consistency, **fields)

    def _call(self, op: Op, route: Route, idempotent: bool = True, **fields: Any) -> Reply:
        request = self._request(op, **fields)
        now = time.monotonic()
        call = Call(self._router, route, now, now + self.timeout, idempotent=idempotent)
        self._links.run(request, call)
        if call.outcome is Outcome.DONE and call.reply is not None:
            return _check_reply(call.reply, request)
        self._raise_refused()
        raise Unavailable(
            f"no leader reachable at {', '.join(self.endpoints)} within {self.timeout:g}s"
            + (f" (last: {call.last_error})" if call.last_error else "")
        )

    def _call_node(self, endpoint: str, op: Op, timeout: float | None = None,
                   **fields: Any) -> Reply:
        """Ask one given node, without redirects: the question is about that node."""
        request = self._request(op, **fields)
        now = time.monotonic()
        timeout = self.timeout if timeout is None else timeout
        call = Call(Router([endpoint]), Route.NODE, now, now + timeout, target=endpoint)
        self._links.run(request, call)
        if call.reply is None:
            self._raise_refused()
            raise Unavailable(f"node {endpoint} did not answer within {timeout:g}s")
        return _check_reply(call.reply, request)


    def _raise_refused(self) -> None:
        error = self._links.handshakes_refused()
        if error is not None:
            raise error


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
    if code == Code.COMPACTED:
        raise Compacted(error, int(reply.get("oldest") or 0))
    if code == Code.RATE_LIMITED:
        raise RateLimited(f"{error} (still over the limit when the timeout ran out)")
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
