"""A node holding 100,000 keys serves again within 1 s of its restart: its state machine
lives in LMDB with its applied index, so nothing is replayed to rebuild it (SPEC §3).

A measurement: loading the keys through the cluster takes over a minute on a small
machine, so it runs only with `-m slow` (or RAFTKV_SLOW=1)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from cluster import ProcCluster, load_keys, wait_for

from raftctl import RaftCtlError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KEYS = 100_000
VALUE = "v" * 32
SERVE_LIMIT_S = 1.0
PREFIX = "big/"


def serves_key(cluster: ProcCluster, node_id: int, key: str) -> bool:
    """The node answers a read of `key` from its own state machine, with the right value."""
    reply = cluster.request(node_id, {"op": "get", "key": key, "consistency": "serializable"},
                            timeout=0.2)
    return reply is not None and reply.get("code") == "ok" and reply.get("value") == VALUE


def test_node_with_100000_keys_serves_within_one_second_of_restart(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    cluster.start_all()
    loading = time.monotonic()
    load_keys(cluster, PREFIX, KEYS, VALUE)
    print(f"\nloaded {KEYS} keys through the cluster in {time.monotonic() - loading:.1f}s")
    leader = cluster.wait_for_leader()
    commit = cluster.status(leader)["commit"]
    for node_id in cluster.ids:
        assert cluster.wait_applied(node_id, commit, timeout=60)["keys"] == KEYS

    last_key = f"{PREFIX}{KEYS - 1:07d}"
    results = {}
    for label, victim in (("follower", next(i for i in cluster.ids if i != leader)),
                          ("leader", leader)):
        cluster.kill(victim)
        restarted = time.monotonic()
        cluster.start(victim)
        wait_for(f"restarted {label} to serve", lambda v=victim: serves_key(cluster, v, last_key), 30.0)
        serving = time.monotonic() - restarted
        status = wait_for("its status", lambda v=victim: cluster.status(v), 5.0)
        assert status["keys"] == KEYS
        results[label] = serving
        cluster.wait_for_leader()
        print(f"kill -9 + restart of the {label} (node {victim}): serving reads "
              f"{serving * 1000:.0f} ms after the restart")

    # the whole cluster stopped cleanly and started again: time to the first write
    for node_id in cluster.ids:
        assert cluster.stop(node_id) == 0
    restarted = time.monotonic()
    for node_id in cluster.ids:
        cluster.start(node_id)
    kv = cluster.client(timeout=0.5)

    def write() -> bool:
        try:
            kv.put("after-restart", "ok")
            return True
        except RaftCtlError:
            return False

    wait_for("a write after restarting every node", write, 30.0)
    print(f"SIGTERM of all three + restart: first write acknowledged after "
          f"{(time.monotonic() - restarted) * 1000:.0f} ms")
    assert kv.list(PREFIX, limit=3) == [(f"{PREFIX}{i:07d}", VALUE) for i in range(3)]
    assert max(results.values()) < SERVE_LIMIT_S, (
        f"a restarted node must serve within {SERVE_LIMIT_S}s; measured (ms): "
        + ", ".join(f"{k} {v * 1000:.0f}" for k, v in results.items())
    )
