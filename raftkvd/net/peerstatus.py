"""Ask every member for its status, for the `cluster` view (raftctl status, /cluster, member list).

The leader keeps one link per member open between calls (IMMEDIATE sockets), so a node that
is down is known at once: its link has no connection, and it is listed as unreachable
without waiting. A node that is up answers in a round trip; one that is paused is waited for
until the timeout. One status object per node feeds every view; this module only collects.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from raftkv.frames import FrameError, decode_batch, encode_client

CONNECT_GRACE_S = 0.1
"""How long a link without a connection may take to get one before its node is unreachable."""

Addresses = dict[int, dict[str, str]]


def unreachable(node_id: int, addresses: dict[str, str]) -> dict[str, Any]:
    """The entry of a node that did not answer: what the cluster knows of it."""
    return {"id": node_id, "endpoint": addresses.get("client", ""), "raft": addresses.get("raft", ""),
            "http": addresses.get("http", ""), "reachable": False}


class StatusFetcher:
    """Thread-safe: calls are serialized (the node runs them off its loop)."""

    def __init__(self, ctx: zmq.Context, connect_grace: float = CONNECT_GRACE_S,
                 dial: Callable[[zmq.Socket, int], bool] | None = None) -> None:
        """`dial(socket, node id)` before connect: CurveZMQ to that node (False: no key, so
        the node is listed unreachable)."""
        self._ctx = ctx
        self._dial = dial
        self._connect_grace = connect_grace
        self._sockets: dict[str, zmq.Socket] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def fetch(self, members: Addresses, timeout: float) -> list[dict[str, Any]]:
        """Status of each member (id -> its addresses), in id order, within `timeout`."""
        with self._lock:
            found = self._fetch({i: a["client"] for i, a in members.items() if a.get("client")},
                                timeout)
            self._close_unused({a.get("client") for a in members.values()})
        return [found.get(i) or unreachable(i, members[i]) for i in sorted(members)]

    def close(self) -> None:
        with self._lock:
            self._close_unused(set())

    def _socket(self, endpoint: str, node_id: int) -> zmq.Socket | None:
        sock = self._sockets.get(endpoint)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            if self._dial is not None and not self._dial(sock, node_id):
                sock.close(0)
                return None
            sock.connect(endpoint)
            self._sockets[endpoint] = sock
        return sock

    def _fetch(self, clients: dict[int, str], timeout: float) -> dict[int, dict[str, Any]]:
        started = time.monotonic()
        deadline = started + timeout
        waiting = {}  # socket -> (node id, request id) once sent
        sockets = {node_id: self._socket(endpoint, node_id) for node_id, endpoint in clients.items()}
        unsent = {sock: node_id for node_id, sock in sockets.items() if sock is not None}
        found: dict[int, dict[str, Any]] = {}
        while (unsent or waiting) and (now := time.monotonic()) < deadline:
            for sock, node_id in list(unsent.items()):
                req_id = next(self._ids)
                try:
                    sock.send(encode_client({"id": req_id, "op": "status"}), zmq.NOBLOCK)
                except zmq.Again:
                    if now - started >= self._connect_grace:
                        del unsent[sock]  # no connection: the node is down
                    continue
                del unsent[sock]
                waiting[sock] = (node_id, req_id)
            poller = zmq.Poller()
            for sock in waiting:
                poller.register(sock, zmq.POLLIN)
            for sock in unsent:
                poller.register(sock, zmq.POLLOUT)
            wait = deadline - now
            if unsent:
                wait = min(wait, max(0.001, started + self._connect_grace - now))
            for sock, event in poller.poll(max(1, int(wait * 1000))):
                if event & zmq.POLLIN and sock in waiting:
                    self._receive(sock, waiting, found)
        return found

    @staticmethod
    def _receive(sock: zmq.Socket, waiting: dict, found: dict[int, dict[str, Any]]) -> None:
        node_id, req_id = waiting[sock]
        while True:
            try:
                replies, _ = decode_batch(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            except FrameError:
                continue
            for reply in replies:  # a late answer to an earlier fetch may come along
                if reply.get("id") == req_id and isinstance(reply.get("status"), dict):
                    found[node_id] = {**reply["status"], "reachable": True}
                    del waiting[sock]
                    return

    def _close_unused(self, keep: set[str | None]) -> None:
        for endpoint in list(self._sockets):
            if endpoint not in keep:
                self._sockets.pop(endpoint).close(0)


def fetch_statuses(ctx: zmq.Context, members: Addresses, timeout: float,
                   dial: Callable[[zmq.Socket, int], bool] | None = None) -> list[dict[str, Any]]:
    """One-off fetch on fresh links (raftkvd cluster start|status): give them time to connect."""
    fetcher = StatusFetcher(ctx, connect_grace=timeout, dial=dial)
    try:
        return fetcher.fetch(members, timeout)
    finally:
        fetcher.close()
