"""Where the time of one write goes while the cluster is loaded: a fresh 3-node cluster,
`raftctl bench put` with CLIENTS clients against it, and meanwhile WRITES traced native
writes one after another (the stages of tests/bench/budget.py).

    python -m tests.bench.loaded_trace [--clients 63] [--writes 400]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import budget

BIN = Path(sys.executable).parent
SETTLE_S = 3.0
"""Load runs this long before the traced writes start."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=63)
    parser.add_argument("--writes", type=int, default=400)
    args = parser.parse_args()
    with budget.ProcCluster(Path(tempfile.mkdtemp(prefix="raftkv-loaded-")), log_level="warning") as cluster:
        cluster.start_all()
        spec = cluster.specs[cluster.wait_for_leader()]
        load = subprocess.Popen(
            [BIN / "raftctl", "--config", str(cluster.config_path), "bench", "put", "--clients",
             str(args.clients), "--total", "1000000", "--value-size", "100"],
            stdout=subprocess.DEVNULL)
        try:
            time.sleep(SETTLE_S)
            traces = budget.native_writes(spec.client, args.writes, traced=True)
        finally:
            load.kill()
            load.wait()
    title = f"Native put to the leader under {args.clients} bench clients"
    print(budget.markdown(title, budget.table(traces), len(traces)))


if __name__ == "__main__":
    main()
