"""One node down must not break the REST API: with any one node killed (kill -9, each in turn),
every request through each live node answers within REQUEST_BUDGET_S, and /cluster lists the
dead node as unreachable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cluster import ProcCluster
from http_helpers import call, http_port, put, wait_status

REQUEST_BUDGET_S = 2.0


@pytest.mark.parametrize("victim", [1, 2, 3])
def test_every_request_answers_within_2s_through_each_live_node(
    make_cluster: Callable[..., ProcCluster], victim: int
) -> None:
    cluster = make_cluster()
    cluster.start_all()
    cluster.kill(victim)
    cluster.wait_for_leader(exclude=[victim])
    for node_id in (i for i in cluster.ids if i != victim):
        port = http_port(cluster, node_id)
        wait_status(port, "/health", 200)  # its HTTP process polls the node's view every 0.1 s
        key = f"down{victim}-via{node_id}"
        replies = {
            "health": call(port, "GET", "/health"),
            "put": put(port, key, "v"),
            "get": call(port, "GET", f"/kv/{key}"),
            "serializable get": call(port, "GET", f"/kv/{key}?consistency=serializable"),
            "list": call(port, "GET", f"/kv?prefix=down{victim}"),
            "cluster": call(port, "GET", "/cluster"),
            "metrics": call(port, "GET", "/metrics"),
            "ready": call(port, "GET", "/ready"),
            "delete": call(port, "DELETE", f"/kv/{key}"),
        }
        for what, reply in replies.items():
            assert reply.status == 200, (node_id, what, reply.status, reply.body[:200])
            assert reply.seconds < REQUEST_BUDGET_S, (node_id, what, reply.seconds)
        nodes = {n["id"]: n["reachable"] for n in replies["cluster"].json()}
        assert nodes == {i: i != victim for i in cluster.ids}
        assert replies["get"].json() == {"key": key, "value": "v"}
