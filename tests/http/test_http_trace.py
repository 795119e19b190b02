"""Traced writes (raftkvd/server/tracing.py, the latency budget of docs/perf.md): a PUT with
`X-Raftkv-Trace: 1` answers with its stage timestamps, in the order the stages happen, on one
clock with the client's; without the header the answer is the plain one."""

from __future__ import annotations

import time

import pytest
import zmq
from cluster import ProcCluster
from http_helpers import call, follower, http_port

from raftkv.frames import decode_client, encode_client
from raftkvd.server.tracing import STAGES

pytestmark = pytest.mark.timeout(120)

HTTP_ORDER = ["http_received", *STAGES, "http_answered"]


def _in_order(trace: dict[str, float], order: list[str], before: float, after: float) -> None:
    assert set(trace) == set(order), trace
    times = [trace[stage] for stage in order]
    assert times == sorted(times), dict(zip(order, times, strict=True))
    assert before <= times[0] and times[-1] <= after


def test_a_traced_rest_put_through_a_follower_reports_every_stage_in_order(
    http_cluster: ProcCluster,
) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    for n in range(5):
        before = time.monotonic()
        reply = call(port, "PUT", f"/kv/traced/{n}", {"value": "v"}, headers={"X-Raftkv-Trace": "1"})
        after = time.monotonic()
        assert reply.status == 200
        body = reply.json()
        assert {k: body[k] for k in ("key", "value", "status")} == {"key": f"traced/{n}", "value": "v",
                                                                   "status": "ok"}
        _in_order(body["trace"], HTTP_ORDER, before, after)
    plain = call(port, "PUT", "/kv/traced/plain", {"value": "v"}, headers={"X-Raftkv-Trace": "0"})
    assert plain.json() == {"key": "traced/plain", "value": "v", "status": "ok"}


def test_a_traced_native_put_reports_every_stage_and_an_untraced_one_none(
    http_cluster: ProcCluster,
) -> None:
    leader = http_cluster.wait_for_leader()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(http_cluster.specs[leader].client)
    try:
        for seq, traced in ((1, True), (2, False)):
            before = time.monotonic()
            sock.send(encode_client({"id": seq, "op": "put", "key": "traced/native", "value": "v",
                                     "session": "trace-test", "seq": seq, "trace": traced}))
            reply = decode_client(sock.recv())
            after = time.monotonic()
            assert reply["code"] == "ok", reply
            if traced:
                _in_order(reply["trace"], list(STAGES), before, after)
            else:
                assert "trace" not in reply
    finally:
        sock.close(0)
