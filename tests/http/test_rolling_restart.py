"""Rolling restarts (SPEC §3): SIGTERM on the leader hands leadership to another voter before
the node exits, so restarting the nodes one at a time fails no request of a client that
retries, and loses no acknowledged write."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable

import pytest
from cluster import HOST, ProcCluster, wait_for
from http_helpers import call, http_port

pytestmark = pytest.mark.timeout(240)

REQUEST_DEADLINE_S = 10.0
"""A write that no node acknowledges within this long (retries included) has failed."""
TRY_TIMEOUT_S = 3.0
MAX_WRITES = 200_000
HANDED_OVER_S = 0.1
"""After the old leader exits, another node must already lead: with no hand-off the others
would need an election timeout (150-300 ms here) just to notice."""


class RetryingWriter:
    """One REST client writing distinct keys one at a time, retrying each on the next node
    until acknowledged or REQUEST_DEADLINE_S passes. Bounded by MAX_WRITES and by `stop`."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.acked: dict[str, str] = {}
        self.ack_times: list[float] = []
        self.failed: list[str] = []
        self.stop = threading.Event()
        self._at = 0
        self._thread = threading.Thread(target=self._run, name="rolling-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self.stop.set()
        self._thread.join(REQUEST_DEADLINE_S + TRY_TIMEOUT_S)

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        for n in range(MAX_WRITES):
            if self.stop.is_set():
                break
            key, value = f"roll/{n}", f"v{n}"
            body = json.dumps({"value": value})
            deadline = time.monotonic() + REQUEST_DEADLINE_S
            while True:
                try:
                    if connection is None:
                        connection = http.client.HTTPConnection(HOST, self.ports[self._at],
                                                                timeout=TRY_TIMEOUT_S)
                    connection.request("PUT", f"/kv/{key}", body=body,
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                    if response.status == 200:
                        self.acked[key] = value
                        self.ack_times.append(time.monotonic())
                        break
                    retry = response.status == 503
                except (OSError, http.client.HTTPException):
                    retry = True
                if not retry or time.monotonic() > deadline:
                    self.failed.append(key)
                    break
                if connection is not None:
                    connection.close()
                connection = None
                self._at = (self._at + 1) % len(self.ports)  # this node is going away: the next
                time.sleep(0.01)
        if connection is not None:
            connection.close()

    def longest_gap(self) -> float:
        times = self.ack_times
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def _caught_up(cluster: ProcCluster, node_id: int) -> None:
    cluster.wait_http(node_id)
    leader = cluster.wait_for_leader()
    commit = cluster.status(leader)["commit"]
    cluster.wait_applied(node_id, commit)
    wait_for(f"node {node_id} healthy over HTTP",
             lambda: call(http_port(cluster, node_id), "GET", "/health").status == 200, 20.0)


def test_sigterm_on_the_leader_hands_leadership_over_before_it_exits(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster(log_level="info")
    cluster.start_all()
    for _ in range(3):
        old = cluster.wait_for_leader()
        term = cluster.status(old)["term"]
        started = time.monotonic()
        assert cluster.stop(old) == 0
        took = time.monotonic() - started
        others = [n for n in cluster.ids if n != old]
        new = wait_for("a leader among the others", lambda others=others: next(
            (n for n in others if (cluster.status(n) or {}).get("role") == "leader"), None),
            HANDED_OVER_S)
        assert cluster.status(new)["term"] == term + 1  # a transfer, not a round of elections
        assert "event=handing_off_leadership" in cluster.log_tail(old, 200)
        print(f"leader {old} -> {new}: SIGTERM to exit {took * 1000:.0f} ms")
        cluster.start(old)
        _caught_up(cluster, old)


def test_rolling_restart_fails_no_retried_request_and_loses_no_write(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster(log_level="warning")
    cluster.start_all()
    for node_id in cluster.ids:
        cluster.wait_http(node_id)
    writer = RetryingWriter([http_port(cluster, n) for n in cluster.ids])
    writer.start()
    try:
        wait_for("the first acknowledged writes", lambda: len(writer.acked) >= 50, 20.0)
        leader = cluster.wait_for_leader()
        order = [n for n in cluster.ids if n != leader] + [leader]  # followers first
        for node_id in order:
            assert cluster.stop(node_id) == 0
            cluster.start(node_id)
            _caught_up(cluster, node_id)
            before = len(writer.acked)
            wait_for("writes after the restart", lambda b=before: len(writer.acked) > b + 20, 20.0)
    finally:
        writer.join()
    assert writer.failed == [], f"{len(writer.failed)} requests failed, first {writer.failed[:5]}"
    print(f"rolling restart: {len(writer.acked)} writes acknowledged, "
          f"longest gap between acknowledgements {writer.longest_gap() * 1000:.0f} ms")
    leader_port = http_port(cluster, cluster.wait_for_leader())
    for key, value in writer.acked.items():
        reply = call(leader_port, "GET", f"/kv/{key}")
        assert reply.status == 200 and reply.json()["value"] == value, key
