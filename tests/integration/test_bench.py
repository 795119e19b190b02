"""`raftctl bench` against a real cluster: the load generator's own guarantees."""

from __future__ import annotations

import json

from cluster import RAFTCTL, ProcCluster, run_cli


def _bench(cluster: ProcCluster, *args: str):
    return run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints()), "-o", "json", "bench", *args)


def test_bench_put_writes_every_key_once_over_its_own_sessions(shared_cluster: ProcCluster) -> None:
    result = _bench(shared_cluster, "put", "--clients", "4", "--total", "50", "--key-size", "12")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ops"] == 50 and report["clients"] == 4
    assert set(report["latency_ms"]) == {"p50", "p90", "p99", "max"}
    with shared_cluster.client() as client:
        keys = [k for k, _ in client.list("bench/")]
    assert len([k for k in keys if len(k) == 12]) == 50


def test_bench_get_reads_keys_it_wrote_first(shared_cluster: ProcCluster) -> None:
    result = _bench(shared_cluster, "get", "--clients", "3", "--total", "30", "--key-size", "11")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ops"] == 30
    with shared_cluster.client() as client:
        assert len([k for k, _ in client.list("bench/") if len(k) == 11]) == 30


def test_bench_rejected_value_stops_with_exit_4_and_one_line(shared_cluster: ProcCluster) -> None:
    result = _bench(shared_cluster, "put", "--total", "20", "--value-size", str(2 << 20))
    assert result.returncode == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_bench_against_an_unreachable_cluster_exits_3(tmp_path) -> None:
    from helpers import free_port

    result = run_cli(RAFTCTL, "-e", f"127.0.0.1:{free_port()}", "--timeout", "1", "bench", "put",
                     "--total", "5")
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
