"""The log on disk stays bounded (issue 11): automatic compaction keeps each node's entries
within snapshot_threshold plus the trailing window while 100,000 writes go through, and
`raftctl -o json status` shows every node's first log index."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest
from cluster import RAFTCTL, ProcCluster, clean_env, run_cli

from raftkvd.server.driver import COMPACTION_KEEP

pytestmark = pytest.mark.timeout(300)

THRESHOLD = 2000
WRITES = 100_000
CLIENTS = 16
IN_FLIGHT_SLACK = 1000
"""Entries beyond threshold + window a node may hold for a moment: those appended but not
yet applied (at most a few per client in flight) and one apply batch."""
LOAD_TIMEOUT_S = 240.0
SAMPLE_S = 0.1


def test_entries_on_disk_stay_bounded_through_100000_writes(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster(snapshot_threshold=THRESHOLD, log_level="warning")
    cluster.start_all()
    load = subprocess.Popen(
        [*RAFTCTL, "-e", ",".join(cluster.endpoints()), "-o", "json", "bench", "put",
         "--clients", str(CLIENTS), "--total", str(WRITES), "--value-size", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    most = dict.fromkeys(cluster.ids, 0)
    samples = 0
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    try:
        while load.poll() is None and time.monotonic() < deadline:
            for node_id, status in cluster.statuses().items():
                most[node_id] = max(most[node_id], status["last_index"] - status["first_index"] + 1)
            samples += 1
            time.sleep(SAMPLE_S)
    finally:
        if load.poll() is None:
            load.kill()
        out, err = load.communicate()
    assert load.returncode == 0, err
    assert json.loads(out)["ops"] == WRITES
    assert samples >= 20, "the load ended before the log could be watched"

    bound = THRESHOLD + COMPACTION_KEEP + IN_FLIGHT_SLACK
    assert all(entries <= bound for entries in most.values()), (most, bound)

    last = cluster.status(cluster.wait_for_leader())["last_index"]
    assert last > WRITES
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, last)
    result = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints()), "-o", "json", "status")
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)
    nodes = nodes["nodes"] if isinstance(nodes, dict) else nodes
    assert {n["id"] for n in nodes} == set(cluster.ids)
    for node in nodes:
        # compacted over and over: the log starts near its end, not at index 1
        assert node["first_index"] > WRITES - bound, node
        assert node["last_index"] - node["first_index"] + 1 <= bound, node
