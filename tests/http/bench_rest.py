"""REST vs ZeroMQ write throughput on a fresh local 3-node cluster (free ports, temp dir).

    .venv/bin/python tests/http/bench_rest.py [--duration 20] [--through follower|leader|both]

Runs `wrk -t2 -c64 -d20s --latency -s tests/http/wrk_put.lua` (PUT /kv/bench/NNNNN, 100-byte
values over 10,000 keys) against one node's REST port, then `raftctl bench put --clients 64
--total 50000 --value-size 100` against the same cluster, and prints both with the leader
changes seen meanwhile (a REST load that starved the Raft loop would show up there).
Needs `wrk` (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "integration")]

from cluster import RAFTCTL, ProcCluster, run_cli  # noqa: E402
from http_helpers import call  # noqa: E402

LUA = HERE / "wrk_put.lua"
MAX_VALUE_BYTES = 1024 * 1024


def leader_changes(cluster: ProcCluster) -> dict[int, float]:
    changes = {}
    for node_id in cluster.ids:
        text = call(cluster.specs[node_id].http_port, "GET", "/metrics").body.decode()
        match = re.search(r"^raftkvd_server_leader_changes_seen_total (\S+)$", text, re.M)
        changes[node_id] = float(match.group(1)) if match else float("nan")
    return changes


def run_wrk(port: int, duration: int) -> str:
    result = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{duration}s", "--latency", "-s", str(LUA), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    )
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--through", choices=["follower", "leader", "both"], default="both")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    root = Path(tempfile.mkdtemp(prefix="raftkv-bench-rest-"))
    cluster = ProcCluster(root, max_value_bytes=MAX_VALUE_BYTES, log_level="warning")
    try:
        leader = cluster.start_all()
        follower = next(i for i in cluster.ids if i != leader)
        targets = {"follower": [follower], "leader": [leader], "both": [follower, leader]}[args.through]
        before = leader_changes(cluster)
        for node_id in targets:
            role = "leader" if node_id == leader else "follower"
            print(f"== REST: wrk through node {node_id} ({role})", flush=True)
            print(run_wrk(cluster.specs[node_id].http_port, args.duration), flush=True)
        print("== ZeroMQ: raftctl bench put --clients 64 --total 50000 --value-size 100", flush=True)
        result = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints()), "-o", "json", "bench", "put",
                         "--clients", "64", "--total", "50000", "--value-size", "100", timeout=600)
        print(json.dumps(json.loads(result.stdout), indent=2) if result.returncode == 0 else result.stderr)
        print(f"leader changes seen per node: before {before}, after {leader_changes(cluster)}")
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
