"""ZeroMQ peer links: one ROUTER bound for inbound Raft traffic, one DEALER per peer.

Delivery is best effort by design: Raft tolerates loss and retransmits, so every
send is non-blocking and a full or disconnected link simply drops the message
(and counts it). High-water marks and IMMEDIATE bound the memory a dead or
stalled peer can pin; inbound frames that fail to decode are counted and dropped
so no peer can crash the node (SPEC §6, §7).

A node may hear from a member it has no link to: one added while it was away, whose address
it learns only from the entries it has yet to receive. It accepts that member's messages
and answers over the connection they came on (the ROUTER routes to the sender's identity),
so it can catch up from a leader it does not know yet. Such answers arrive on the DEALER
that carried the request, which `recv_all` drains too.

With CurveZMQ (SPEC §8) the node passes `serve` (the ROUTER accepts only current members'
keys, raftkvd/net/zap.py) and `dial` (each DEALER expects its peer's key); a peer without a
usable key gets no link until it has one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from raftkv.curve import node_key_name
from raftkv.sockets import readable, user_id_of
from raftkvd.net.peerwire import (
    MAX_FRAME_BYTES,
    FrameError,
    RemovedNotice,
    decode_frame,
    encode_message,
    encode_notice,
)
from raftkvd.raft.messages import Message

log = logging.getLogger(__name__)

HIGH_WATER_MARK = 10_000
"""Messages queued per link before sends fail; bounds memory for a slow peer."""
HEARTBEAT_IVL_MS = 1_000
HEARTBEAT_TIMEOUT_MS = 5_000
"""A peer whose ZeroMQ I/O stops answering pings (SIGSTOP, partition) has its link
torn down, releasing the queued messages; the DEALER then reconnects on its own."""
LOG_INTERVAL_S = 1.0
"""At most one log line per interval for bad inbound frames: a flood must not flood the log."""


@dataclass(slots=True)
class PeerStats:
    sent: int = 0
    send_failures: int = 0
    received: int = 0


class Transport:
    """The node's Raft links. Not thread-safe: owned by the node's event loop."""

    def __init__(
        self,
        ctx: zmq.Context,
        node_id: int,
        bind_endpoint: str,
        peers: dict[int, str],
        clock: Callable[[], float] = time.monotonic,
        serve: Callable[[zmq.Socket], None] | None = None,
        dial: Callable[[zmq.Socket, int], bool] | None = None,
        source: str | None = None,
    ) -> None:
        """`peers` may include this node's own id (the whole cluster); it is skipped.
        `serve(router)` before bind and `dial(dealer, peer id)` before connect secure the links
        (False from `dial`: no link to that peer). `source`: the local IP address every link
        to a peer is dialed from (default: the kernel's choice)."""
        self.node_id = node_id
        self.malformed_total = 0
        self.misrouted_total = 0
        self.unroutable_total = 0
        self.unlinked_total = 0
        """Messages from senders we have no link to (answered over their connection)."""
        self._ctx = ctx
        self._identity = str(node_id).encode()
        self._clock = clock
        self._last_log = float("-inf")
        self._suppressed = 0
        self._dealers: dict[int, zmq.Socket] = {}
        self._endpoints: dict[int, str] = {}
        self._stats: dict[int, PeerStats] = {}
        self._serve = serve
        self._dial = dial
        self._source = source
        self._router = self._bind_router(bind_endpoint)
        for peer_id, endpoint in peers.items():
            self.add_peer(peer_id, endpoint)

    def _bind_router(self, endpoint: str) -> zmq.Socket:
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        # A restarted peer reconnects with the same identity; it must replace the stale link.
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # An answer to a sender that is not connected fails at once (EHOSTUNREACH), counted.
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if self._serve is not None:
            self._serve(router)
        try:
            router.bind(endpoint)
        except zmq.ZMQError:
            router.close()
            raise
        return router

    @property
    def socket(self) -> zmq.Socket:
        """The ROUTER, for the event loop's poller; drain it with `recv_all`."""
        return self._router

    @property
    def endpoint(self) -> str:
        """The bound endpoint, with the real port when bound to `tcp://HOST:*`."""
        return self._router.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def peers(self) -> dict[int, str]:
        return dict(self._endpoints)

    def stats(self) -> dict[int, PeerStats]:
        """Per-peer counters (a copy), for /metrics and status."""
        return {pid: PeerStats(s.sent, s.send_failures, s.received) for pid, s in self._stats.items()}

    def add_peer(self, peer_id: int, endpoint: str) -> None:
        """Connect to a (new) peer; a changed endpoint replaces the old link."""
        if peer_id == self.node_id or self._endpoints.get(peer_id) == endpoint:
            return
        self.remove_peer(peer_id)
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, self._identity)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        dealer.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        # Queue only on completed connections: a dead peer fails sends instead of buffering.
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        dealer.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        if self._dial is not None and not self._dial(dealer, peer_id):
            dealer.close()
            return
        # ZeroMQ's "tcp://SOURCE:0;HOST:PORT" binds the connection's local address first.
        dealer.connect(endpoint if self._source is None
                       else f"tcp://{self._source}:0;{endpoint.removeprefix('tcp://')}")
        self._dealers[peer_id] = dealer
        self._endpoints[peer_id] = endpoint
        self._stats[peer_id] = PeerStats()

    def remove_peer(self, peer_id: int) -> None:
        """Drop a peer's link (membership change); unknown ids are ignored."""
        dealer = self._dealers.pop(peer_id, None)
        if dealer is not None:
            dealer.close()
        self._endpoints.pop(peer_id, None)
        self._stats.pop(peer_id, None)

    def send(self, msg: Message) -> bool:
        """Queue `msg` for its receiver without blocking; False when it was dropped."""
        return self._send(msg.to, encode_message(msg))

    def tell_removed(self, to: int, index: int) -> bool:
        """Tell `to` that the entry at `index` removed it (over its own connection: a removed
        node has no link here)."""
        return self._send(to, encode_notice(RemovedNotice(to, self.node_id, index)))

    def _send(self, to: int, payload: bytes) -> bool:
        dealer = self._dealers.get(to)
        if dealer is None:
            return self._send_back(to, payload)
        stats = self._stats[to]
        try:
            dealer.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            stats.send_failures += 1
            return False
        stats.sent += 1
        return True

    def _send_back(self, to: int, payload: bytes) -> bool:
        """No link to `to`: answer over the connection it reached us on, if it did."""
        try:
            self._router.send_multipart([str(to).encode(), payload], zmq.NOBLOCK)
        except zmq.ZMQError:  # EHOSTUNREACH: not connected to us; EAGAIN: its queue is full
            self.unroutable_total += 1
            return False
        return True

    def recv_all(self, max_n: int) -> list[Message | RemovedNotice]:
        """Up to `max_n` waiting frames, without blocking; bad frames are dropped."""
        received: list[Message | RemovedNotice] = []
        while len(received) < max_n and readable(self._router):
            if self._serve is None:
                msg = self._accept(self._router.recv_multipart(zmq.NOBLOCK))
            else:  # secured: the sender's key name (ZAP User-Id) must be the node it claims
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                msg = self._accept([frame.bytes for frame in frames], user_id_of(frames))
            if msg is not None:
                received.append(msg)
        for peer_id, dealer in self._dealers.items():
            while len(received) < max_n and readable(dealer):
                msg = self._accept([str(peer_id).encode(), *dealer.recv_multipart(zmq.NOBLOCK)])
                if msg is not None:
                    received.append(msg)
        return received

    def _accept(self, frames: list[bytes], user_id: str | None = None) -> Message | RemovedNotice | None:
        """The message in `frames` if it is well-formed and really meant for us.

        The ROUTER's identity frame is the sender's DEALER identity, and with CurveZMQ
        (SPEC §8) `user_id` is the name of the key it authenticated with: both must name
        the sender the message claims, so a member cannot speak in another node's name.
        Senders without a link are members added while we were
        away, or removed ones: the replica judges what they say (it tells a removed one
        so; PreVote and CheckQuorum keep it from disrupting anyone meanwhile).
        """
        if len(frames) != 2:
            self._reject_malformed(f"expected [identity, payload], got {len(frames)} frames")
            return None
        identity, payload = frames
        try:
            msg = decode_frame(payload)
        except FrameError as exc:
            self._reject_malformed(str(exc))
            return None
        if (msg.to != self.node_id or identity != str(msg.frm).encode()
                or (self._serve is not None and type(msg) is not RemovedNotice
                    and user_id != node_key_name(msg.frm))):
            self.misrouted_total += 1
            self._log_limited(
                f"event=misrouted_message to={msg.to} frm={msg.frm} "
                f"link={identity[:20]!r} misrouted_total={self.misrouted_total}"
            )
            return None
        stats = self._stats.get(msg.frm)
        if stats is None:
            self.unlinked_total += 1
        else:
            stats.received += 1
        return msg

    def _reject_malformed(self, reason: str) -> None:
        self.malformed_total += 1
        self._log_limited(
            f"event=malformed_frame malformed_total={self.malformed_total} reason={reason:.200}"
        )

    def _log_limited(self, text: str) -> None:
        """Log at most once per LOG_INTERVAL_S, saying how many lines were suppressed."""
        now = self._clock()
        if now - self._last_log < LOG_INTERVAL_S:
            self._suppressed += 1
            return
        log.warning("node=%d %s suppressed=%d", self.node_id, text, self._suppressed)
        self._last_log = now
        self._suppressed = 0

    def close(self) -> None:
        """Close every socket now (LINGER 0): undelivered messages are Raft's to resend."""
        for peer_id in list(self._dealers):
            self.remove_peer(peer_id)
        self._router.close()

