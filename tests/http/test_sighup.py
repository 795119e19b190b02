"""SIGHUP (SPEC §3) on real clusters: every node re-reads the cluster file and applies the
new max_value_bytes to REST (413, each node's HTTP process) and to the native protocol
(TOO_LARGE, raftctl exit 4) and the new log level; an invalid file changes nothing and is
named in one log line; a setting that needs a restart is named and not applied."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cluster import RAFTCTL, ProcCluster, run_cli, wait_for
from http_helpers import call, http_port, put

from raftctl.errors import EXIT_REJECTED
from raftkv.protocol import Code, Op
from raftkvd.http.rest import BODY_SLACK_BYTES

pytestmark = pytest.mark.timeout(180)

OLD_LIMIT = 128 * 1024
NEW_LIMIT = 1024
VALUE = "v" * 4096
"""Over the new limit, under the old one."""
RELOAD_TIMEOUT_S = 10.0


def log_lines(cluster: ProcCluster, node_id: int, *needles: str) -> list[str]:
    """The lines of the node's log (its HTTP process's included) that contain every needle."""
    text = cluster.specs[node_id].log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if all(needle in line for needle in needles)]


def reload_all(cluster: ProcCluster, needle: str) -> list[str]:
    """SIGHUP every node; once each has logged one more line containing `needle`, those lines."""
    before = {i: len(log_lines(cluster, i, needle)) for i in cluster.ids}
    for node_id in cluster.ids:
        cluster.reload(node_id)

    def logged() -> list[str] | None:
        found = [log_lines(cluster, i, needle)[before[i]:] for i in cluster.ids]
        return [lines[0] for lines in found] if all(found) else None

    return wait_for(f"every node to log {needle!r}", logged, RELOAD_TIMEOUT_S, cluster.describe)


def rest_refuses(cluster: ProcCluster, node_id: int, limit: int) -> bool:
    """The node's HTTP process answers 413 for VALUE, and for a body over `limit` with its
    slack from the Content-Length alone (its own limit: the node never sees that one)."""
    port = http_port(cluster, node_id)
    value = put(port, f"big/{node_id}", VALUE)
    body = call(port, "PUT", f"/kv/body/{node_id}", b"x" * (limit + BODY_SLACK_BYTES + 1))
    return (value.status == 413 and f"the limit is {limit}" in value.json()["error"]
            and body.status == 413 and f"the limit is {limit + BODY_SLACK_BYTES}" in body.json()["error"])


def native_refuses(cluster: ProcCluster, node_id: int) -> bool:
    """The node's own client endpoint refuses VALUE as too large (a raw request: a Client
    would send its next requests to the leader it learned)."""
    request = {"op": Op.PUT.value, "key": f"big/native/{node_id}", "value": VALUE,
               "session": "reload-test", "seq": 1}
    reply = cluster.request(node_id, request)
    return reply is not None and reply["code"] == Code.TOO_LARGE.value


def refused_everywhere(cluster: ProcCluster, limit: int) -> bool:
    return all(rest_refuses(cluster, i, limit) and native_refuses(cluster, i) for i in cluster.ids)


def assert_serves_within_the_new_limit(cluster: ProcCluster, leader: int) -> None:
    """Every node refuses VALUE at NEW_LIMIT (REST, native, raftctl exit 4) and stores a
    small value; the leader is the one of before."""
    assert refused_everywhere(cluster, NEW_LIMIT)
    for node_id in cluster.ids:
        result = run_cli(RAFTCTL, "-e", cluster.specs[node_id].endpoint, "put", "big/cli", VALUE)
        assert result.returncode == EXIT_REJECTED, result.stderr
        assert put(http_port(cluster, node_id), f"small/{node_id}", "fits").status == 200
        cluster.client([cluster.specs[node_id].endpoint]).put(f"small/native/{node_id}", "fits")
    assert all(cluster.is_running(i) for i in cluster.ids)
    assert cluster.leader() == leader


def test_sighup_with_a_smaller_max_value_bytes_gives_413_on_every_node_and_an_invalid_file_changes_nothing(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster(max_value_bytes=OLD_LIMIT)
    leader = cluster.start_all()
    for node_id in cluster.ids:
        assert put(http_port(cluster, node_id), f"big/{node_id}", VALUE).status == 200
        cluster.client([cluster.specs[node_id].endpoint]).put(f"big/native/{node_id}", VALUE)

    cluster.set_cluster_key("max_value_bytes", str(NEW_LIMIT))
    for line in reload_all(cluster, "event=reloaded"):
        assert f"max_value_bytes={NEW_LIMIT}" in line and "changed=cluster.max_value_bytes" in line
    wait_for("every node to refuse the value over the new limit",
             lambda: refused_everywhere(cluster, NEW_LIMIT), RELOAD_TIMEOUT_S, cluster.describe)
    assert_serves_within_the_new_limit(cluster, leader)

    cluster.set_cluster_key("max_value_bytes", '"abc"')
    for line in reload_all(cluster, "event=reload_failed"):
        assert 'error="config error: cluster.max_value_bytes: expected a positive integer, ' \
               "got 'abc'\"" in line
    assert_serves_within_the_new_limit(cluster, leader)

    cluster.set_cluster_key("max_value_bytes", "[1024")  # not TOML at all
    for line in reload_all(cluster, "event=reload_failed"):
        assert f"{cluster.config_path}: not valid TOML" in line
    assert_serves_within_the_new_limit(cluster, leader)
    for node_id in cluster.ids:
        assert len(log_lines(cluster, node_id, "event=reloaded")) == 1, "the failed reloads applied nothing"

    cluster.set_cluster_key("max_value_bytes", str(OLD_LIMIT))  # a reload after failed ones works
    reload_all(cluster, "event=reloaded")
    for node_id in cluster.ids:
        assert put(http_port(cluster, node_id), f"big/again/{node_id}", VALUE).status == 200
        cluster.client([cluster.specs[node_id].endpoint]).put(f"big/native/again/{node_id}", VALUE)


def test_sighup_applies_the_file_log_level_and_names_what_waits_for_a_restart(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster(1, log_level=None)  # no RAFTKVD_LOG_LEVEL: the file decides
    cluster.start_all()
    assert log_lines(cluster, 1, " DEBUG ") == [], "INFO by default"

    cluster.set_cluster_key("log_level", '"debug"')
    (line,) = reload_all(cluster, "event=reloaded")
    assert "log_level=DEBUG" in line
    cluster.set_cluster_key("heartbeat_interval_ms", "40")
    (warning,) = reload_all(cluster, "event=reload_not_applied")
    assert "fields=cluster.heartbeat_interval_ms" in warning and "takes effect at restart" in warning
    assert log_lines(cluster, 1, " DEBUG ", "node=1 event=reload_requested"), "the node's level"
    wait_for("a debug line of the HTTP process",
             lambda: bool(log_lines(cluster, 1, " DEBUG ", 'event=control command="reload')),
             RELOAD_TIMEOUT_S)
    assert cluster.is_running(1)
