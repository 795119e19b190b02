"""Leadership transfers under load (issue 11's acceptance: median <= 300 ms over 10).

    python -m tests.bench.transfer_under_load [--transfers 10] [--clients 16]

A fresh 3-node cluster on free loopback ports; `raftctl bench put --clients CLIENTS` writes in
the background while the script asks for TRANSFERS transfers (`Client.transfer_leader()`, to
the most caught-up voter), 0.5 s apart. Each is timed from the request to the answer, which
the old leader sends once the new one has taken over. Prints each time and the median.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "integration")]

from cluster import RAFTCTL, ProcCluster, clean_env  # noqa: E402

PAUSE_S = 0.5
BENCH_TOTAL = 2_000_000
"""More than the transfers take at any rate: the bench is stopped when they are done."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-transfer-") as tmp, \
            ProcCluster(Path(tmp) / "cluster") as cluster:
        cluster.start_all()
        bench = subprocess.Popen([*RAFTCTL, "-e", ",".join(cluster.endpoints()), "bench", "put",
                                  "--clients", str(args.clients), "--total", str(BENCH_TOTAL)],
                                 env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            client = cluster.client()
            time.sleep(1.0)  # the bench's clients connect and reach full rate
            times_ms = []
            for n in range(args.transfers):
                began = time.perf_counter()
                leader = client.transfer_leader()
                times_ms.append((time.perf_counter() - began) * 1000)
                print(f"transfer {n + 1}: to node {leader} in {times_ms[-1]:.1f} ms")
                time.sleep(PAUSE_S)
            assert bench.poll() is None, "the bench stopped early: " + bench.stderr.read().decode()
        finally:
            bench.kill()
            bench.wait()
        print(f"median {statistics.median(times_ms):.1f} ms over {len(times_ms)} transfers "
              f"(min {min(times_ms):.1f}, max {max(times_ms):.1f}), under "
              f"`raftctl bench put --clients {args.clients}`")


if __name__ == "__main__":
    main()
