"""The REST API of SPEC §5 on a live three-node cluster: the seed's curl commands against a
follower, the exact JSON shapes, and every error status with a JSON body."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse

import pytest
from cluster import DEFAULT_MAX_VALUE_BYTES, HOST, RAFTCTL, ProcCluster, run_cli, wait_for
from http_helpers import call, follower, http_port, put, raw_exchange, wait_status

pytestmark = pytest.mark.timeout(120)

BODY_SLACK_BYTES = 64 * 1024
"""raftkvd.http.rest.BODY_SLACK_BYTES: a PUT body may be this much over max_value_bytes."""


def test_seed_curl_commands_work_against_a_follower(http_cluster: ProcCluster) -> None:
    node = follower(http_cluster)
    port = http_port(http_cluster, node)
    leader = http_cluster.wait_for_leader()

    health = wait_status(port, "/health", 200)
    body = health.json()
    assert set(body) == {"status", "keys", "node_id", "role", "term", "leader_id"}
    assert body["status"] == "healthy" and body["node_id"] == node and body["role"] == "follower"
    assert body["leader_id"] == leader
    assert isinstance(body["keys"], str) and body["keys"].isdigit()
    assert isinstance(body["term"], int) and body["term"] >= 1

    for i in range(10):
        reply = call(port, "PUT", f"/kv/seed{i}", b'{"value":"myvalue%d"}' % i,
                     headers={"Content-Type": "application/json"})
        assert reply.status == 200
        assert reply.json() == {"key": f"seed{i}", "value": f"myvalue{i}", "status": "ok"}

    got = call(port, "GET", "/kv/seed3")
    assert got.status == 200 and got.json() == {"key": "seed3", "value": "myvalue3"}

    deleted = call(port, "DELETE", "/kv/seed3")
    assert deleted.status == 200 and deleted.json() == {"key": "seed3", "status": "deleted"}

    missing = call(port, "GET", "/kv/seed3")
    assert missing.status == 404 and missing.json() == {"error": "key not found", "key": "seed3"}
    wait_for("the follower to count the nine keys",
             lambda: int(call(port, "GET", "/health").json()["keys"]) >= 9, 10.0)


def test_a_write_through_one_follower_is_read_linearizably_through_the_other(
    http_cluster: ProcCluster,
) -> None:
    leader = http_cluster.wait_for_leader()
    first, second = [i for i in http_cluster.ids if i != leader]
    for n in range(20):
        assert put(http_port(http_cluster, first), f"lin/{n}", f"v{n}").status == 200
        reply = call(http_port(http_cluster, second), "GET", f"/kv/lin/{n}")
        assert reply.status == 200 and reply.json()["value"] == f"v{n}"
    assert call(http_port(http_cluster, leader), "GET", "/kv/lin/19").json()["value"] == "v19"


def test_serializable_read_is_answered_by_the_node_itself(http_cluster: ProcCluster) -> None:
    node = follower(http_cluster)
    assert put(http_port(http_cluster, node), "ser/k", "v").status == 200

    def local_copy() -> bool:
        reply = call(http_port(http_cluster, node), "GET", "/kv/ser/k?consistency=serializable")
        return reply.status == 200 and reply.json() == {"key": "ser/k", "value": "v"}

    wait_for("the follower's copy", local_copy, 10.0)
    missing = call(http_port(http_cluster, node), "GET", "/kv/ser/none?consistency=serializable")
    assert missing.status == 404 and missing.json() == {"error": "key not found", "key": "ser/none"}


def test_list_returns_keys_and_values_in_key_order_with_prefix_and_limit(
    http_cluster: ProcCluster,
) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    for name in ("b", "a", "c", "d"):
        assert put(port, f"list/{name}", name.upper()).status == 200
    assert put(port, "listx", "other").status == 200

    reply = call(port, "GET", "/kv?prefix=list/")
    assert reply.status == 200
    assert reply.json() == {"keys": [{"key": f"list/{n}", "value": n.upper()} for n in "abcd"]}
    limited = call(port, "GET", "/kv?prefix=list%2F&limit=2&consistency=serializable")
    assert limited.status == 200 and [k["key"] for k in limited.json()["keys"]] == ["list/a", "list/b"]
    everything = call(port, "GET", "/kv").json()["keys"]
    keys = [k["key"] for k in everything]
    assert keys == sorted(keys) and "listx" in keys


@pytest.mark.parametrize("raw_key, key", [
    ("plain", "plain"),
    ("with/slash", "with/slash"),
    ("encoded%2Fslash", "encoded/slash"),
    ("sp%20ace%3Fq%23h", "sp ace?q#h"),
    ("caf%C3%A9-%E2%9C%93-%F0%9F%98%80", "café-✓-😀"),
    ("plus+sign", "plus+sign"),
    ("new%0Aline%0D%00", "new\nline\r\x00"),
    ("x" * 511, "x" * 511),
    ("%C3%A9" * 255, "é" * 255),
])
def test_keys_are_percent_decoded_utf8_up_to_511_bytes(
    http_cluster: ProcCluster, raw_key: str, key: str
) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    reply = call(port, "PUT", f"/kv/{raw_key}", {"value": "v"})
    assert reply.status == 200 and reply.json()["key"] == key
    got = call(port, "GET", "/kv/" + urllib.parse.quote(key, safe=""))
    assert got.status == 200 and got.json() == {"key": key, "value": "v"}
    assert call(port, "DELETE", f"/kv/{raw_key}").json() == {"key": key, "status": "deleted"}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("raw_key", ["", "x" * 512, "%C3%A9" * 256, "%FF", "%C3", "bad%ZZ%80"])
def test_a_key_outside_1_to_511_utf8_bytes_is_400(
    http_cluster: ProcCluster, method: str, raw_key: str
) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    reply = call(port, method, f"/kv/{raw_key}", {"value": "v"} if method == "PUT" else None)
    assert reply.status == 400 and reply.is_json_error(), reply.body


@pytest.mark.parametrize("body", [
    b"", b"not json", b"{", b'{"value": 1}', b'{"value": null}', b'{"value": ["a"]}', b'{"other": "x"}',
    b'["value", "x"]', b'"value"', b"\xff\xfe", b'{"value": "\\ud800"}', b"[" * 60_000,
])
def test_put_without_a_json_object_with_a_string_value_is_400(
    http_cluster: ProcCluster, body: bytes
) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    reply = call(port, "PUT", "/kv/badbody", body, headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.is_json_error(), reply.body
    assert call(port, "GET", "/kv/badbody").status == 404


def test_a_value_of_max_value_bytes_is_stored_and_one_byte_more_is_413(
    http_cluster: ProcCluster,
) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    exact = "é" * (DEFAULT_MAX_VALUE_BYTES // 2)
    assert put(port, "size/exact", exact).status == 200
    assert call(port, "GET", "/kv/size/exact").json()["value"] == exact
    too_big = put(port, "size/over", "x" * (DEFAULT_MAX_VALUE_BYTES + 1))
    assert too_big.status == 413 and too_big.is_json_error()
    assert call(port, "GET", "/kv/size/over").status == 404


def test_a_huge_content_length_is_answered_413_at_once_without_reading_the_body(
    http_cluster: ProcCluster,
) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    request = (b"PUT /kv/huge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100000000000\r\n\r\n{\"value\": \"")
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=5.0) as sock:
        sock.sendall(request)
        head = sock.recv(65536)
    assert time.monotonic() - started < 2.0
    status_line, _, rest = head.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), head
    assert b'"error"' in head or b'"error"' in rest

    over = DEFAULT_MAX_VALUE_BYTES + BODY_SLACK_BYTES + 1
    reply = call(port, "PUT", "/kv/huge", b'{"value": "' + b"x" * (over - 13) + b'"}')
    assert reply.status == 413 and reply.is_json_error()


def test_a_chunked_body_over_the_limit_is_413(http_cluster: ProcCluster) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    answer = raw_exchange(port, b"PUT /kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                b"Content-Type: application/json\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert call(port, "GET", "/kv/chunked").status == 404


@pytest.mark.parametrize("query", [
    "limit=0", "limit=-1", "limit=abc", "limit=1.5", "limit=", "limit=99999999999999999999",
    "limit=%D9%A3",  # an Arabic-Indic digit: isdigit() but not ASCII
])
def test_a_bad_list_limit_is_400(http_cluster: ProcCluster, query: str) -> None:
    reply = call(http_port(http_cluster, follower(http_cluster)), "GET", f"/kv?{query}")
    assert reply.status == 400 and reply.is_json_error(), reply.body


@pytest.mark.parametrize("path", [
    "/kv/k?consistency=strong", "/kv?consistency=", "/kv?prefix=" + "p" * 512, "/kv?prefix=%FF",
])
def test_a_bad_consistency_or_prefix_is_400(http_cluster: ProcCluster, path: str) -> None:
    reply = call(http_port(http_cluster, follower(http_cluster)), "GET", path)
    assert reply.status == 400 and reply.is_json_error(), reply.body


def test_deleting_a_missing_key_is_404_with_the_key(http_cluster: ProcCluster) -> None:
    reply = call(http_port(http_cluster, follower(http_cluster)), "DELETE", "/kv/never/there")
    assert reply.status == 404
    assert reply.json() == {"error": "key not found", "key": "never/there"}


@pytest.mark.parametrize("method, path", [
    ("POST", "/kv/k"), ("PATCH", "/kv/k"), ("POST", "/health"), ("DELETE", "/health"),
    ("PUT", "/kv"), ("DELETE", "/cluster"), ("PUT", "/metrics"), ("POST", "/openapi.json"),
    ("PUT", "/ready"),
])
def test_an_unsupported_method_is_405_with_a_json_body_and_allow(
    http_cluster: ProcCluster, method: str, path: str
) -> None:
    reply = call(http_port(http_cluster, follower(http_cluster)), method, path)
    assert reply.status == 405 and reply.is_json_error(), reply.body
    assert "GET" in reply.headers.get("Allow", "")


@pytest.mark.parametrize("path", ["/nope", "/kvx", "/health/extra", "/v1/kv/k", "/favicon.ico"])
def test_an_unknown_path_is_404_with_a_json_body(http_cluster: ProcCluster, path: str) -> None:
    reply = call(http_port(http_cluster, follower(http_cluster)), "GET", path)
    assert reply.status == 404 and reply.is_json_error(), reply.body


def test_cluster_is_the_same_list_as_raftctl_status_json(http_cluster: ProcCluster) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    reply = call(port, "GET", "/cluster")
    assert reply.status == 200
    nodes = reply.json()
    result = run_cli(RAFTCTL, "-e", ",".join(http_cluster.endpoints()), "-o", "json", "status")
    assert result.returncode == 0, result.stderr
    expected = json.loads(result.stdout)
    assert [n["id"] for n in nodes] == [n["id"] for n in expected] == http_cluster.ids
    for mine, theirs in zip(nodes, expected, strict=True):
        assert set(mine) == set(theirs)
        for field in ("id", "endpoint", "raft", "http", "voters", "reachable"):
            assert mine[field] == theirs[field]
    assert sum(n["role"] == "leader" for n in nodes) == 1


def test_ready_is_200_on_every_node_of_a_running_cluster(http_cluster: ProcCluster) -> None:
    leader = http_cluster.wait_for_leader()
    for node_id in http_cluster.ids:
        reply = call(http_port(http_cluster, node_id), "GET", "/ready")
        assert reply.status == 200, reply.body
        assert reply.json()["status"] == "ready" and reply.json()["leader_id"] == leader


def test_the_openapi_document_is_served_and_describes_every_route(http_cluster: ProcCluster) -> None:
    reply = call(http_port(http_cluster, follower(http_cluster)), "GET", "/openapi.json")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    document = reply.json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/health", "/ready", "/cluster", "/metrics", "/openapi.json",
                                      "/kv", "/kv/{key}", "/watch"}
    assert set(document["paths"]["/kv/{key}"]) >= {"get", "put", "delete"}


def test_a_write_sent_to_the_leader_itself_is_answered_there(http_cluster: ProcCluster) -> None:
    port = http_port(http_cluster, http_cluster.wait_for_leader())
    assert put(port, "leader/k", "v").json() == {"key": "leader/k", "value": "v", "status": "ok"}
    assert call(port, "GET", "/kv/leader/k").json() == {"key": "leader/k", "value": "v"}
    assert call(port, "DELETE", "/kv/leader/k").json() == {"key": "leader/k", "status": "deleted"}
