"""Every key-value operation works through every node, from the CLI and from raftctl.Client
(SPEC §4): followers redirect to the leader invisibly; serializable reads on a follower
catch up with the leader."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import zmq
from cluster import RAFTCTL, ProcCluster, run_cli, wait_for

from raftctl import CompareFailed, KeyNotFound
from raftkv.frames import decode_batch, encode_batch

pytestmark = pytest.mark.timeout(120)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error: exactly one line on stderr and never a traceback (SPEC §4)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {result.stderr!r}"
    assert "Traceback" not in result.stderr
    return lines[0]


def cli_session_through(cluster: ProcCluster, node_id: int) -> list[str]:
    """put/get/list/cas/del through one node's endpoint only; returns failures found."""
    endpoint = cluster.specs[node_id].endpoint
    key = f"cli/{node_id}/k"
    problems: list[str] = []

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(RAFTCTL, "-e", endpoint, "--timeout", "10", *args)

    def expect(result: subprocess.CompletedProcess[str], code: int, stdout: str | None,
               what: str) -> None:
        if result.returncode != code or (stdout is not None and result.stdout != stdout):
            problems.append(f"node {node_id}: {what}: exit {result.returncode}, "
                            f"stdout {result.stdout!r}, stderr {result.stderr!r}")

    expect(ctl("put", key, "v1"), 0, "OK\n", "put")
    expect(ctl("get", key), 0, "v1\n", "get after put")
    listed = ctl("-o", "json", "list", f"cli/{node_id}/")
    expect(listed, 0, None, "list")
    if listed.returncode == 0 and json.loads(listed.stdout) != [{"key": key, "value": "v1"}]:
        problems.append(f"node {node_id}: list gave {listed.stdout!r}")
    expect(ctl("cas", key, "v1", "v2"), 0, "OK\n", "cas with the right expected value")
    lost = ctl("cas", key, "v1", "v3")
    expect(lost, 1, "", "cas with a stale expected value")
    if lost.returncode == 1:
        one_line_error(lost)
    expect(ctl("get", key), 0, "v2\n", "get after cas")
    expect(ctl("del", key), 0, "deleted\n", "del of an existing key")
    expect(ctl("del", key), 0, "not found\n", "del of a missing key")
    missing = ctl("get", key)
    expect(missing, 1, "", "get of a deleted key")
    if missing.returncode == 1:
        one_line_error(missing)
    return problems


def test_every_cli_operation_works_through_every_node(shared_cluster: ProcCluster) -> None:
    with ThreadPoolExecutor(len(shared_cluster.ids)) as pool:
        problems = [p for found in pool.map(lambda n: cli_session_through(shared_cluster, n),
                                            shared_cluster.ids) for p in found]
    assert not problems, "\n".join(problems)


def test_every_client_operation_works_through_every_node(shared_cluster: ProcCluster) -> None:
    for node_id in shared_cluster.ids:
        kv = shared_cluster.client([shared_cluster.specs[node_id].endpoint])
        prefix = f"lib/{node_id}/"
        first = kv.put(prefix + "a", "1")
        second = kv.put(prefix + "b", "2")
        assert second > first, "revisions grow with every write"
        assert kv.get(prefix + "a") == "1"
        assert kv.list(prefix) == [(prefix + "a", "1"), (prefix + "b", "2")]
        assert kv.list(prefix, limit=1) == [(prefix + "a", "1")]
        assert kv.cas(prefix + "a", "1", "10") > second
        with pytest.raises(CompareFailed) as lost:
            kv.cas(prefix + "a", "1", "11")
        assert lost.value.current == "10"
        assert kv.cas(prefix + "new", None, "created") > 0, "cas with expected=None creates"
        assert kv.delete(prefix + "b") is True
        assert kv.delete(prefix + "b") is False
        with pytest.raises(KeyNotFound):
            kv.get(prefix + "b")
        assert kv.list(prefix) == [(prefix + "a", "10"), (prefix + "new", "created")]


def test_linearizable_read_through_a_follower_sees_a_write_acknowledged_just_before(
    shared_cluster: ProcCluster,
) -> None:
    leader = shared_cluster.wait_for_leader()
    writer = shared_cluster.client(shared_cluster.endpoints([leader]))
    for follower in (i for i in shared_cluster.ids if i != leader):
        reader = shared_cluster.client([shared_cluster.specs[follower].endpoint])
        for n in range(20):
            writer.put("linear/key", f"value-{follower}-{n}")
            assert reader.get("linear/key") == f"value-{follower}-{n}"


def test_serializable_get_on_a_follower_eventually_sees_the_value(shared_cluster: ProcCluster) -> None:
    leader = shared_cluster.wait_for_leader()
    shared_cluster.client(shared_cluster.endpoints([leader])).put("serial/key", "fresh")
    for follower in (i for i in shared_cluster.ids if i != leader):
        endpoint = shared_cluster.specs[follower].endpoint

        def local_value(endpoint: str = endpoint) -> str | None:
            reply = run_cli(RAFTCTL, "-e", endpoint, "get", "serial/key",
                            "--consistency", "serializable")
            return reply.stdout if reply.returncode == 0 else None

        assert wait_for(f"the value on follower {follower}", local_value, 10.0) == "fresh\n"
        # and the answer really came from the follower itself, not via the leader:
        reply = shared_cluster.request(
            follower, {"op": "get", "key": "serial/key", "consistency": "serializable"})
        assert reply is not None and reply["code"] == "ok" and reply["value"] == "fresh"


def test_a_batch_of_requests_in_one_frame_is_answered_request_by_request(
    shared_cluster: ProcCluster,
) -> None:
    """raftkv.frames: a client may send many requests in one frame (the REST forwarder and
    `raftctl bench` do); each is answered under its own id, in one frame or several."""
    leader = shared_cluster.wait_for_leader()
    sock = shared_cluster.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(shared_cluster.specs[leader].client)
        batch = [{"id": n, "op": "put", "key": f"batch/{n}", "value": str(n), "session": "batch-test",
                  "seq": n} for n in range(1, 21)]
        batch.append({"id": 99, "op": "no-such-op"})
        sock.send(encode_batch(batch))
        answers: dict[int, dict] = {}
        deadline = time.monotonic() + 10.0
        while len(answers) < len(batch) and time.monotonic() < deadline:
            if sock.poll(100):
                answers.update({a["id"]: a for a in decode_batch(sock.recv())[0]})
    finally:
        sock.close(0)
    assert sorted(answers) == [*range(1, 21), 99]
    assert all(answers[n]["code"] == "ok" for n in range(1, 21))
    assert answers[99]["code"] == "invalid"
    assert shared_cluster.client().get("batch/20") == "20"
