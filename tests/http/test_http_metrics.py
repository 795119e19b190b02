"""GET /metrics: Prometheus text that parses, with every metric of REFERENCES §5 (etcd's
names, raftkvd_ prefix) and values that agree with /health (one status object)."""

from __future__ import annotations

import pytest
from cluster import ProcCluster, wait_for
from http_helpers import call, follower, http_port, put
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

pytestmark = pytest.mark.timeout(120)

EXPECTED_SAMPLES = [
    "raftkvd_server_has_leader",
    "raftkvd_server_is_leader",
    "raftkvd_server_leader_changes_seen_total",
    "raftkvd_server_term",
    "raftkvd_raft_commit_index",
    "raftkvd_raft_applied_index",
    "raftkvd_raft_last_log_index",
    "raftkvd_server_proposals_committed_total",
    "raftkvd_server_proposals_applied_total",
    "raftkvd_server_proposals_failed_total",
    "raftkvd_server_proposals_pending",
    "raftkvd_disk_log_fsync_duration_seconds_bucket",
    "raftkvd_disk_log_fsync_duration_seconds_count",
    "raftkvd_disk_apply_txn_duration_seconds_bucket",
    "raftkvd_network_peer_sent_failures_total",
    "raftkvd_network_malformed_frames_total",
    "raftkvd_http_requests_total",
    "raftkvd_http_request_duration_seconds_bucket",
    "raftkvd_client_requests_total",
    "raftkvd_client_request_duration_seconds_bucket",
    "raftkvd_lmdb_map_size_bytes",
    "raftkvd_lmdb_map_used_bytes",
]
LEADER_ONLY_SAMPLES = ["raftkvd_network_peer_round_trip_time_seconds_bucket"]


def scrape(port: int) -> list[Sample]:
    reply = call(port, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    families = list(text_string_to_metric_families(reply.body.decode()))
    assert families, "no metric families"
    return [sample for family in families for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v
                                                                   for k, v in labels.items())]
    assert found, f"no sample {name} {labels}"
    return sum(found)


def test_every_node_exposes_every_metric_and_the_text_parses(http_cluster: ProcCluster) -> None:
    leader = http_cluster.wait_for_leader()
    port = http_port(http_cluster, follower(http_cluster))
    for n in range(5):
        assert put(port, f"metrics/{n}", "v").status == 200
    for node_id in http_cluster.ids:
        names = {s.name for s in scrape(http_port(http_cluster, node_id))}
        missing = [name for name in EXPECTED_SAMPLES if name not in names]
        assert not missing, f"node {node_id} lacks {missing}"
    # the first round trip is timed one heartbeat interval after the election
    wait_for("the leader's peer round-trip times", lambda: all(
        name in {s.name for s in scrape(http_port(http_cluster, leader))}
        for name in LEADER_ONLY_SAMPLES), 5.0)


def test_gauges_agree_with_health_and_the_leader_is_the_only_one(http_cluster: ProcCluster) -> None:
    leader = http_cluster.wait_for_leader()
    for node_id in http_cluster.ids:
        port = http_port(http_cluster, node_id)

        def agreeing(port: int = port, node_id: int = node_id) -> bool:
            health = call(port, "GET", "/health").json()
            samples = scrape(port)
            return (value(samples, "raftkvd_server_term") == health["term"]
                    and value(samples, "raftkvd_server_has_leader") == 1
                    and value(samples, "raftkvd_server_is_leader") == (node_id == leader))

        wait_for(f"node {node_id}'s metrics to agree with /health", agreeing, 10.0)
    samples = scrape(http_port(http_cluster, leader))
    peers = {s.labels["peer"] for s in samples if s.name == "raftkvd_network_peer_sent_failures_total"}
    assert peers == {str(i) for i in http_cluster.ids if i != leader}

    def rtt_peers() -> set[str]:
        return {s.labels["peer"] for s in scrape(http_port(http_cluster, leader))
                if s.name == "raftkvd_network_peer_round_trip_time_seconds_count" and s.value > 0}

    wait_for("a round-trip time for every peer", lambda: rtt_peers() == peers, 5.0)
    assert value(samples, "raftkvd_lmdb_map_used_bytes") <= value(samples, "raftkvd_lmdb_map_size_bytes")


def test_requests_are_counted_by_route_and_code_over_http_and_by_op_over_zeromq(
    http_cluster: ProcCluster,
) -> None:
    leader = http_cluster.wait_for_leader()
    port = http_port(http_cluster, follower(http_cluster))
    before = scrape(port)
    http_before = value(before, "raftkvd_http_requests_total", method="PUT", route="/kv/{key}",
                        code="200")
    for n in range(3):
        assert put(port, f"counted/{n}", "v").status == 200
    assert call(port, "GET", "/kv/counted/none").status == 404
    after = scrape(port)
    assert value(after, "raftkvd_http_requests_total", method="PUT", route="/kv/{key}",
                 code="200") == http_before + 3
    assert value(after, "raftkvd_http_requests_total", method="GET", route="/kv/{key}",
                 code="404") >= 1
    # a follower answers writes "not_leader" once, then the forwarder goes to the leader directly
    leader_samples = scrape(http_port(http_cluster, leader))
    assert value(leader_samples, "raftkvd_client_requests_total", op="put", code="ok") >= 3
    assert value(leader_samples, "raftkvd_client_request_duration_seconds_count", op="put") >= 3
    assert value(leader_samples, "raftkvd_server_proposals_committed_total") >= 3
    assert value(leader_samples, "raftkvd_disk_log_fsync_duration_seconds_count") >= 3
