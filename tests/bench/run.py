"""`make bench`: a fresh 3-node cluster on free loopback ports, `raftctl bench` runs against it,
medians reported. Usage: python -m tests.bench.run [--runs 5] [--total 50000] [--shape 'put 1 client']"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(root: Path) -> Path:
    lines = ["[cluster]", "election_timeout_ms = [150, 300]", "heartbeat_interval_ms = 50", ""]
    for node_id in (1, 2, 3):
        lines += [
            "[[node]]", f"id = {node_id}",
            f'raft = "tcp://127.0.0.1:{free_port()}"', f'client = "tcp://127.0.0.1:{free_port()}"',
            f'http = "127.0.0.1:{free_port()}"', f'data_dir = "{root}/node{node_id}"', "",
        ]
    path = root / "cluster.toml"
    path.write_text("\n".join(lines))
    return path


def bench(config: Path, args: list[str]) -> dict:
    out = subprocess.run(
        [BIN / "raftctl", "--config", str(config), "-o", "json", "bench", *args],
        check=True, capture_output=True, text=True, timeout=600,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--total", type=int, default=50000)
    parser.add_argument(
        "--shape", action="append", help="run only this shape (repeatable), e.g. 'put 1 client'"
    )
    opts = parser.parse_args()
    shapes = {
        "put 64 clients": ["put", "--clients", "64", "--total", str(opts.total), "--value-size", "100"],
        "put 1 client": ["put", "--clients", "1", "--total", "2000", "--value-size", "100"],
        "get 64 clients": ["get", "--clients", "64", "--total", str(opts.total), "--value-size", "100"],
    }
    root = Path(tempfile.mkdtemp(prefix="raftkv-bench-"))
    config = write_config(root)
    raftkvd = [BIN / "raftkvd", "cluster"]
    try:
        subprocess.run([*raftkvd, "start", "--config", str(config)], check=True, timeout=60)
        for name, args in shapes.items():
            if opts.shape and name not in opts.shape:
                continue
            runs = [bench(config, args) for _ in range(opts.runs)]
            rate = statistics.median(r["ops_per_sec"] for r in runs)
            lat = {q: statistics.median(r["latency_ms"][q] for r in runs) for q in runs[0]["latency_ms"]}
            each = ", ".join(f"{r['ops_per_sec']:.0f}" for r in runs)
            lats = "  ".join(f"{q} {v:.2f}" for q, v in lat.items())
            print(f"{name}: median {rate:.0f} ops/s, latency ms {lats}  (runs: {each})", flush=True)
    finally:
        subprocess.run([*raftkvd, "stop", "--config", str(config)], timeout=60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
