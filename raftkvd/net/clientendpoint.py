"""The client protocol endpoint: a ZeroMQ ROUTER that turns frames into validated requests.

Only shape and limits are checked here; what a request means is the node's business.
Malformed frames get an `invalid` answer when they can be answered at all, and are
counted, never raised.

Rate limits ([limits], raftkvd/ratelimit.py) are checked here too, per request and before
anything else is done with it, so a client over its rate costs the node loop one bucket
check per request and never a Raft round. Who the client is (`client_key`):
- with CurveZMQ, its key's name (the ZAP User-Id, "key:NAME"); the nodes' own keys
  ("node<N>", the HTTP processes forwarding REST requests) are exempt: each HTTP process
  limits its REST clients itself;
- without it, the connection (ZeroMQ routing identity, "conn:HEX"): a raftctl.Client, or a
  whole `raftctl bench`, is one client. The HTTP processes name their connections
  FORWARDER_PREFIX... and are exempt. Without Curve nothing is authenticated, so a client
  that claims that prefix, or reconnects for a fresh identity, escapes its limit: the limit
  then tames runaway clients, not hostile ones (those need [security], SPEC §8).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from raftkv import protocol
from raftkv.frames import FrameError, decode_batch, encode_batch, encode_client
from raftkv.protocol import Code, Op
from raftkv.sockets import readable, user_id_of
from raftkvd.ratelimit import RateLimiter, refusal

log = logging.getLogger(__name__)

MAX_CLIENT_FRAME = 72 * 1024 * 1024
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]{1,253}):[0-9]{1,5}")
_ZMQ_TCP = re.compile(r"tcp://" + _HOST_PORT.pattern)
HWM = 10_000
FORWARDER_PREFIX = b"raftkvd-http/"
"""Routing identities of the HTTP processes' forwarders (forward.py), exempt from limits."""
NODE_KEY = re.compile(r"node[0-9]+")
"""CurveZMQ key names of the nodes (raftkv/curve.py): their HTTP processes are exempt."""


@dataclass(frozen=True, slots=True)
class Request:
    identity: bytes
    id: int
    op: Op
    body: dict[str, Any]
    received: float | None = None
    """time.monotonic() at arrival: for the request-duration metric, and a traced write's first stage."""
    batched: bool = False
    """It came in a batch frame: its client reads batches, so its answer may go in one."""

    @property
    def key(self) -> str:
        return self.body["key"]


class RequestError(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


def _text(body: dict[str, Any], name: str, *, optional: bool = False) -> None:
    value = body.get(name)
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise RequestError(Code.INVALID, f"{name} must be a string")


def _member(body: dict[str, Any], adding: bool) -> None:
    node_id = body.get("node_id")
    if type(node_id) is not int or not 1 <= node_id < 2**63:  # bool is an int: refuse it too
        raise RequestError(Code.INVALID, "node_id must be a positive integer")
    if not adding:
        return
    for name in ("raft", "client"):
        _text(body, name)
        if not _ZMQ_TCP.fullmatch(body[name]):
            raise RequestError(
                Code.INVALID, f"{name} must look like tcp://HOST:PORT, got {body[name][:80]!r}"
            )
    _text(body, "http")
    if not _HOST_PORT.fullmatch(body["http"]):
        raise RequestError(Code.INVALID, f"http must look like HOST:PORT, got {body['http'][:80]!r}")


def _watch(body: dict[str, Any]) -> None:
    """One key or one prefix; a revision to start from; how long to hold the request."""
    if ("key" in body) == ("prefix" in body):
        raise RequestError(Code.INVALID, "a watch takes a key or a prefix (one of them)")
    name = "key" if "key" in body else "prefix"
    _text(body, name)
    size = len(body[name].encode())
    if size > protocol.MAX_KEY_BYTES or (name == "key" and size == 0):
        least = 1 if name == "key" else 0
        raise RequestError(Code.TOO_LARGE if size else Code.INVALID,
                           f"{name} must be {least} to {protocol.MAX_KEY_BYTES} bytes, got {size}")
    rev = body.get("rev")
    if rev is not None and (type(rev) is not int or not 1 <= rev < 2**63):
        raise RequestError(Code.INVALID, "rev must be a positive integer")
    wait = body.get("wait", 0)
    if type(wait) not in (int, float) or not 0 <= wait <= protocol.MAX_WATCH_WAIT_S:
        raise RequestError(Code.INVALID, f"wait must be 0 to {protocol.MAX_WATCH_WAIT_S:g} seconds")


def validate(body: dict[str, Any], max_value_bytes: int) -> Op:
    """The request's operation, once its fields have the right types and sizes."""
    try:
        op = Op(body.get("op"))
    except ValueError:
        raise RequestError(Code.INVALID, f"unknown op {body.get('op')!r}") from None
    if op in (Op.PUT, Op.GET, Op.DELETE, Op.CAS):
        _text(body, "key")
        size = len(body["key"].encode())
        if not 1 <= size <= protocol.MAX_KEY_BYTES:
            raise RequestError(
                Code.TOO_LARGE if size else Code.INVALID,
                f"key must be 1 to {protocol.MAX_KEY_BYTES} bytes, got {size}",
            )
    if op in (Op.PUT, Op.CAS):
        _text(body, "value")
        if op == Op.CAS:
            _text(body, "expected", optional=True)
        size = len(body["value"].encode())
        if size > max_value_bytes:
            raise RequestError(
                Code.TOO_LARGE, f"value is {size} bytes, the limit is {max_value_bytes}"
            )
    if op in protocol.WRITE_OPS:
        _text(body, "session")
        if not isinstance(body.get("seq"), int) or body["seq"] < 1:
            raise RequestError(Code.INVALID, "seq must be a positive integer")
    if op == Op.LIST:
        _text(body, "prefix", optional=True)
        prefix_size = len((body.get("prefix") or "").encode())
        if prefix_size > protocol.MAX_KEY_BYTES:
            # the state machine raises on such a prefix, which would stop the node's loop
            raise RequestError(
                Code.TOO_LARGE,
                f"prefix must be at most {protocol.MAX_KEY_BYTES} bytes, got {prefix_size}",
            )
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise RequestError(Code.INVALID, "limit must be a non-negative integer")
    if body.get("consistency", protocol.CONSISTENCY_LINEARIZABLE) not in (
        protocol.CONSISTENCY_LINEARIZABLE,
        protocol.CONSISTENCY_SERIALIZABLE,
    ):
        raise RequestError(Code.INVALID, "consistency must be linearizable or serializable")
    if op in protocol.MEMBER_OPS:
        _member(body, adding=op == Op.MEMBER_ADD)
    if op == Op.BACKUP_READ:
        _text(body, "stream")
        if type(body.get("seq")) is not int or body["seq"] < 0:
            raise RequestError(Code.INVALID, "seq must be a chunk number (0, 1, ...)")
    if op == Op.WATCH:
        _watch(body)
    to = body.get("to", 0)
    if op == Op.TRANSFER and (type(to) is not int or to < 0):  # bool is an int: refuse it too
        raise RequestError(Code.INVALID, "to must be a node id")
    return op


def client_key(identity: bytes, user_id: str | None) -> str | None:
    """The rate limit's key for a native client; None: exempt (a node's HTTP process)."""
    if user_id:
        return None if NODE_KEY.fullmatch(user_id) else f"key:{user_id}"
    if identity.startswith(FORWARDER_PREFIX):
        return None
    return f"conn:{identity.hex()}"


Observer = Callable[[str, str, float | None], None]
"""Told (op, code, arrival time) of every answer: the node's metrics hook."""
REJECTED_OP = "rejected"
"""The op label of requests answered before they had a valid op."""


class ClientEndpoint:
    """Owned by the node's event loop; not thread-safe."""

    def __init__(self, ctx: zmq.Context, bind: str, max_value_bytes: int,
                 limiter: RateLimiter | None = None,
                 serve: Callable[[zmq.Socket], None] | None = None) -> None:
        """`serve(socket)` before bind: CurveZMQ, clients' keys only (raftkvd/net/zap.py)."""
        self.max_value_bytes = max_value_bytes
        self.limiter = limiter if limiter is not None else RateLimiter(None, 0)
        self.user_ids = serve is not None
        """Clients authenticate (CurveZMQ): frames are received uncopied, for their User-Id,
        the key of their rate limit (a routing identity is the client's to choose)."""
        self.on_rate_limited: Callable[[], None] | None = None
        self.malformed_total = 0
        self._outbox: dict[bytes, list[dict[str, Any]]] = {}
        self._singles: list[tuple[bytes, dict[str, Any]]] = []
        self.observer: Observer | None = None
        self.socket = ctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, HWM)
        self.socket.setsockopt(zmq.RCVHWM, HWM)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_CLIENT_FRAME)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        if serve is not None:
            serve(self.socket)
        # a forwarder reconnecting under its fixed identity takes it over from its old,
        # half-closed connection instead of being ignored as a duplicate
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            self.socket.bind(bind)
        except zmq.ZMQError:
            self.socket.close(0)
            raise

    def recv_all(self, max_n: int) -> list[Request]:
        """Up to about `max_n` requests waiting (whole frames: a batch is never split)."""
        requests: list[Request] = []
        while len(requests) < max_n and readable(self.socket):
            if self.user_ids:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                self._parse([frame.bytes for frame in frames], requests, user_id_of(frames))
            else:
                self._parse(self.socket.recv_multipart(zmq.NOBLOCK), requests)
        return requests

    def _parse(self, frames: list[bytes], into: list[Request], user_id: str | None = None) -> None:
        if len(frames) != 2:
            self.malformed_total += 1
            return
        identity, payload = frames
        try:
            bodies, batched = decode_batch(payload)
        except FrameError as exc:
            self.malformed_total += 1
            self.reply_error(identity, 0, Code.INVALID, f"malformed request: {exc}")
            return
        received = time.monotonic()
        key = client_key(identity, user_id) if self.limiter.rate is not None else None
        for body in bodies:
            req_id = body.get("id", 0)
            if not isinstance(req_id, int):
                req_id = 0
            if key is not None and self._limited(identity, req_id, key, batched):
                continue
            try:
                op = validate(body, self.max_value_bytes)
            except RequestError as exc:
                self.reply_error(identity, req_id, exc.code, str(exc), batched)
                if self.observer is not None:
                    self.observer(REJECTED_OP, exc.code.value, None)
                continue
            into.append(Request(identity, req_id, op, body, received, batched))

    def _limited(self, identity: bytes, req_id: int, key: str, batched: bool) -> bool:
        """Refuse the request if `key` is over its rate: rate_limited, with when to retry."""
        wait = self.limiter.check(key)
        if not wait:
            return False
        self.reply(identity, req_id, {"code": Code.RATE_LIMITED.value, "retry_after": wait,
                                      "error": refusal(self.limiter.rate, wait)}, batched)
        if self.on_rate_limited is not None:
            self.on_rate_limited()
        if self.observer is not None:
            self.observer(REJECTED_OP, Code.RATE_LIMITED.value, None)
        return True

    def reply(self, identity: bytes, req_id: int, fields: dict[str, Any], batched: bool = False) -> None:
        """Queue an answer; `flush` sends it. Answers to batched requests share one frame per
        client; a client that sent a plain map gets a plain map back."""
        answer = {"id": req_id, **fields}
        if not batched:
            self._singles.append((identity, answer))
            return
        self._outbox.setdefault(identity, []).append(answer)

    def flush(self) -> None:
        """Send the queued answers (the node calls this at the end of each loop turn, and as
        soon as committed writes are answered)."""
        singles, self._singles = self._singles, []
        outbox, self._outbox = self._outbox, {}
        for identity, answer in singles:
            self._send(identity, encode_client(answer))
        for identity, answers in outbox.items():
            self._send(identity, encode_batch(answers))

    def _send(self, identity: bytes, frame: bytes) -> None:
        try:
            self.socket.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client is gone or far behind: it will retry
            log.debug("event=client_reply_dropped error=%s", exc)

    def respond(self, request: Request, fields: dict[str, Any]) -> None:
        self.reply(request.identity, request.id, fields, request.batched)
        if self.observer is not None:
            self.observer(request.op.value, str(fields.get("code", "")), request.received)

    def reply_error(self, identity: bytes, req_id: int, code: Code, message: str,
                    batched: bool = False) -> None:
        self.reply(identity, req_id, {"code": code.value, "error": message}, batched)

    def close(self) -> None:
        self.socket.close(0)
