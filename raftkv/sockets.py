"""A client's ZeroMQ link to one node, set up the same way by every raftkv client (raftctl's
links.py, the REST server's forward.py): one DEALER per node endpoint, and a monitor that
tells when its connection drops. Also `readable`, for every non-blocking receive loop.

With CurveZMQ (SPEC §8) the link is a CURVE client; the same monitor then also reports a
handshake the server refused (unknown client key, wrong server key, or a plain client to a
secured node), so callers can say so at once instead of timing out.

IMMEDIATE: a request waits for a live connection instead of being queued for a node that
may be down (and delivered, stale, when it comes back). High-water marks bound what a stalled
node can make us hold; the frame limit bounds what one answer can make us read.
"""

from __future__ import annotations

import zmq
from zmq.utils.monitor import parse_monitor_message

from .curve import KeyPair, as_client
from .frames import MAX_CLIENT_FRAME_BYTES

HWM = 10_000
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
"""Monitor events of a refused handshake (on either side of the connection)."""


def open_link(ctx: zmq.Context, endpoint: str,
              curve: tuple[KeyPair, bytes] | None = None,
              routing_id: bytes | None = None) -> tuple[zmq.Socket, zmq.Socket]:
    """(the DEALER connected to `endpoint`, its monitor of dropped connections and refused
    handshakes). `curve`: (own key pair, the server's public key) for a secured node;
    `routing_id`: how the node's ROUTER names this connection (default: a random one)."""
    socket = ctx.socket(zmq.DEALER)
    if curve is not None:
        as_client(socket, *curve)
    if routing_id is not None:
        socket.setsockopt(zmq.ROUTING_ID, routing_id)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.IMMEDIATE, 1)
    socket.setsockopt(zmq.SNDHWM, HWM)
    socket.setsockopt(zmq.RCVHWM, HWM)
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_CLIENT_FRAME_BYTES)
    try:
        socket.connect(endpoint)
    except zmq.ZMQError:
        socket.close(0)
        raise
    return socket, socket.get_monitor_socket(zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED)


def readable(socket: zmq.Socket) -> bool:
    """A message is waiting: ask before a non-blocking receive, which would otherwise
    report an empty queue with an exception (costly in a loop that looks every turn)."""
    return bool(socket.getsockopt(zmq.EVENTS) & zmq.POLLIN)


def dropped(monitor: zmq.Socket) -> bool:
    """Drain the monitor without blocking; True if the connection dropped (or its handshake
    was refused) since the last look."""
    return bool(events(monitor))


def events(monitor: zmq.Socket) -> int:
    """Drain the monitor without blocking: the events seen since the last look, OR-ed."""
    seen = 0
    while True:
        try:
            frames = monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return seen
        seen |= parse_monitor_message(frames)["event"]


def close_link(socket: zmq.Socket, monitor: zmq.Socket) -> None:
    socket.disable_monitor()
    monitor.close(0)
    socket.close(0)


def user_id_of(frames: list[zmq.Frame]) -> str | None:
    """The ZAP User-Id (with CurveZMQ: the sender's key name) of frames received uncopied;
    None without one."""
    try:
        return frames[-1].get("User-Id") if frames else None
    except zmq.ZMQError:
        return None
