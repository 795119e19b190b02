"""An acknowledged write survives kill -9 of every node, and a follower killed in the middle
of a write load catches up when it comes back (SPEC §3, §6)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from cluster import ProcCluster, wait_for

from raftctl import RaftCtlError

pytestmark = pytest.mark.timeout(180)

WRITERS = 8
LOAD_DEADLINE_S = 90.0


class Load:
    """`total` puts of distinct keys from WRITERS threads, each with its own Client.

    Bounded in count (`total`) and in time (LOAD_DEADLINE_S); records what was acknowledged.
    """

    def __init__(self, cluster: ProcCluster, prefix: str, total: int, endpoints: list[str]) -> None:
        self.acked: dict[str, str] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + LOAD_DEADLINE_S
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{n}",
                             args=(cluster, prefix, range(n, total, WRITERS), endpoints))
            for n in range(WRITERS)
        ]

    def _run(self, cluster: ProcCluster, prefix: str, numbers: range, endpoints: list[str]) -> None:
        kv = cluster.client(endpoints, timeout=10.0)
        for number in numbers:
            if time.monotonic() > self._deadline:
                with self._lock:
                    self.errors.append("load deadline passed")
                return
            key, value = f"{prefix}{number:05d}", f"value-{number}"
            try:
                kv.put(key, value)
            except RaftCtlError as error:  # unacknowledged: it may or may not be applied
                with self._lock:
                    self.errors.append(f"{key}: {error}")
                continue
            with self._lock:
                self.acked[key] = value

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(LOAD_DEADLINE_S + 15)
        assert not any(t.is_alive() for t in self._threads), "a writer thread hung"


def missing_or_wrong(acked: dict[str, str], items: list[tuple[str, str]]) -> list[str]:
    state = dict(items)
    return [f"{k}: want {v!r}, have {state.get(k)!r}" for k, v in acked.items() if state.get(k) != v]


def test_every_acknowledged_write_survives_kill_9_of_every_node(cluster: ProcCluster) -> None:
    load = Load(cluster, "durable/", 1000, cluster.endpoints()).start()
    load.join()
    assert len(load.acked) == 1000, f"every write should succeed on a healthy cluster: {load.errors[:5]}"

    for node_id in cluster.ids:
        cluster.kill(node_id)
    for node_id in cluster.ids:
        cluster.start(node_id)
    cluster.wait_for_leader()

    items = cluster.client(timeout=10.0).list("durable/")
    problems = missing_or_wrong(load.acked, items)
    assert not problems, f"{len(problems)} acknowledged writes lost or changed: {problems[:10]}"
    # each node's own state machine has them too, once it has applied the leader's commit
    commit = cluster.status(cluster.wait_for_leader())["commit"]
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, commit)
        reply = cluster.request(node_id, {"op": "list", "prefix": "durable/",
                                          "consistency": "serializable"}, 5.0)
        assert reply is not None and reply["code"] == "ok"
        local = missing_or_wrong(load.acked, [tuple(i) for i in reply["items"]])
        assert not local, f"node {node_id} lacks {len(local)} acknowledged writes: {local[:5]}"


def kill_follower_mid_load(cluster: ProcCluster, total: int) -> tuple[Load, int, int]:
    """Kill -9 a follower once a fifth of `total` writes are in; returns the finished load,
    the follower and the index it had applied shortly before it died."""
    leader = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != leader)
    # clients only know the leader and the surviving follower: the victim serves no one
    endpoints = cluster.endpoints([i for i in cluster.ids if i != follower])
    load = Load(cluster, "bulk/", total, endpoints).start()
    wait_for("the first fifth of the writes", lambda: load.count() >= total // 5, LOAD_DEADLINE_S)
    applied = (cluster.status(follower) or {}).get("applied", 0)
    cluster.kill(follower)
    killed_at = load.count()
    load.join()
    assert killed_at < total // 2, "the follower must miss most of the load"
    return load, follower, applied


def assert_caught_up(cluster: ProcCluster, load: Load, follower: int, total: int) -> None:
    assert len(load.acked) == total, f"writes failed with a majority up: {load.errors[:5]}"
    leader = cluster.wait_for_leader()
    leader_commit = cluster.status(leader)["commit"]
    cluster.start(follower)
    status = cluster.wait_applied(follower, leader_commit, timeout=60.0)
    assert status["keys"] >= total
    reply = cluster.request(follower, {"op": "list", "prefix": "bulk/",
                                       "consistency": "serializable"}, 10.0)
    assert reply is not None and reply["code"] == "ok"
    local = [tuple(item) for item in reply["items"]]
    assert local == sorted(load.acked.items()), (
        f"the restarted follower's state differs from the acknowledged writes: "
        f"{missing_or_wrong(load.acked, local)[:5]}"
    )


def test_follower_killed_during_5000_writes_catches_up_when_restarted(
    cluster: ProcCluster,
) -> None:
    load, follower, _ = kill_follower_mid_load(cluster, 5000)
    assert_caught_up(cluster, load, follower, 5000)


def test_follower_behind_a_compacted_log_catches_up_from_a_snapshot(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    """With a small snapshot_threshold the leader compacts away what the dead follower
    missed, so it can only catch up by installing a snapshot."""
    cluster = make_cluster(snapshot_threshold=500)
    cluster.start_all()
    load, follower, applied = kill_follower_mid_load(cluster, 5000)
    first_index = cluster.status(cluster.wait_for_leader())["first_index"]
    assert first_index > applied + 1, (
        f"the leader's log (from {first_index}) should no longer hold what the follower "
        f"(applied {applied}) missed"
    )
    assert_caught_up(cluster, load, follower, 5000)
