"""Work of the node that may block or take long, off its loop: gathering every member's status,
rendering the metrics. A worker thread runs it; the answer travels back through a queue, and
a message on an inproc socket wakes the loop to send it (only the loop touches the client
endpoint's socket)."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq

from raftkv.protocol import Code
from raftkv.sockets import readable

from ..net.clientendpoint import Request
from .seams import Replies

log = logging.getLogger(__name__)

WORKERS = 2
Work = Callable[[], dict[str, Any]]


class Background:
    def __init__(self, ctx: zmq.Context, node_id: int) -> None:
        self._ctx = ctx
        self._node_id = node_id
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="raftkvd-background")
        self._results: queue.Queue[tuple[Request, dict[str, Any]]] = queue.Queue()
        self._wake_addr = f"inproc://raftkvd-wake-{id(self)}"
        self.socket = ctx.socket(zmq.PULL)
        """For the loop's poller: readable when an answer is waiting."""
        self.socket.bind(self._wake_addr)

    def submit(self, request: Request, work: Work) -> None:
        self._pool.submit(self._run, request, work)

    def answer_finished(self, replies: Replies) -> None:
        """On the loop: send the answers of the work that finished."""
        while readable(self.socket):
            self.socket.recv(zmq.NOBLOCK)
        while not self._results.empty():
            replies.respond(*self._results.get_nowait())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.socket.close(0)

    def _run(self, request: Request, work: Work) -> None:
        try:
            fields = {"code": Code.OK.value, **work()}
        except Exception as exc:  # answer, never leave the client waiting
            log.exception("node=%d event=background_failed op=%s", self._node_id, request.op.value)
            fields = {"code": Code.INTERNAL.value, "error": f"{request.op.value} failed: {exc}"}
        self._results.put((request, fields))
        wake = self._ctx.socket(zmq.PUSH)
        try:
            wake.connect(self._wake_addr)
            wake.send(b"", zmq.NOBLOCK)
        finally:
            wake.close(0)
