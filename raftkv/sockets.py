"""A client's ZeroMQ link to one node, set up the same way by every raftkv client (raftctl's
links.py, the REST server's forward.py): one DEALER per node endpoint, and a monitor that
tells when its connection drops. Also `readable`, for every non-blocking receive loop.

IMMEDIATE: a request waits for a live connection instead of being queued for a node that
may be down (and delivered, stale, when it comes back). High-water marks bound what a stalled
node can make us hold; the frame limit bounds what one answer can make us read.
"""

from __future__ import annotations

import zmq
from zmq.utils.monitor import parse_monitor_message

from .frames import MAX_CLIENT_FRAME_BYTES

HWM = 10_000


def open_link(ctx: zmq.Context, endpoint: str,
              routing_id: bytes | None = None) -> tuple[zmq.Socket, zmq.Socket]:
    """(the DEALER connected to `endpoint`, its monitor of dropped connections);
    `routing_id`: how the node's ROUTER names this connection (default: a random one)."""
    socket = ctx.socket(zmq.DEALER)
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
    return socket, socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)


def readable(socket: zmq.Socket) -> bool:
    """A message is waiting: ask before a non-blocking receive, which would otherwise
    report an empty queue with an exception (costly in a loop that looks every turn)."""
    return bool(socket.getsockopt(zmq.EVENTS) & zmq.POLLIN)


def dropped(monitor: zmq.Socket) -> bool:
    """Drain the monitor without blocking; True if the connection dropped since the last look."""
    seen = False
    while True:
        try:
            frames = monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return seen
        seen |= parse_monitor_message(frames)["event"] == zmq.EVENT_DISCONNECTED


def close_link(socket: zmq.Socket, monitor: zmq.Socket) -> None:
    socket.disable_monitor()
    monitor.close(0)
    socket.close(0)
