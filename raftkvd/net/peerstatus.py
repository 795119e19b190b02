"""Ask every member for its status, off the event loop, for the `cluster` view.

One status object per node feeds raftctl status, /cluster and /health; this module
only collects them. Unreachable nodes stay in the list, marked as such.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import zmq

from raftkv.frames import FrameError, decode_client, encode_client

_ids = itertools.count(1)


def fetch_statuses(
    ctx: zmq.Context, members: dict[int, str], timeout: float
) -> list[dict[str, Any]]:
    """Status of each member (id -> client endpoint), queried in parallel within `timeout`."""
    sockets: dict[zmq.Socket, tuple[int, int]] = {}
    poller = zmq.Poller()
    for node_id, endpoint in sorted(members.items()):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        req_id = next(_ids)
        sock.send(encode_client({"id": req_id, "op": "status"}), zmq.NOBLOCK)
        sockets[sock] = (node_id, req_id)
        poller.register(sock, zmq.POLLIN)
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < len(sockets):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for sock, _ in poller.poll(remaining * 1000):
                node_id, req_id = sockets[sock]
                try:
                    reply = decode_client(sock.recv(zmq.NOBLOCK))
                except (FrameError, zmq.Again):
                    continue
                if reply.get("id") == req_id and isinstance(reply.get("status"), dict):
                    found[node_id] = {**reply["status"], "reachable": True}
    finally:
        for sock in sockets:
            sock.close(0)
    return [
        found.get(node_id, {"id": node_id, "endpoint": members[node_id], "reachable": False})
        for node_id in sorted(members)
    ]
