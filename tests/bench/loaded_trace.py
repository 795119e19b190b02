"""Where the time of one write goes while the cluster is loaded: a fresh 3-node cluster, a
load against its leader, and meanwhile WRITES traced writes one after another (the stages of
tests/bench/budget.py).

    python -m tests.bench.loaded_trace [--clients 63] [--writes 400]
    python -m tests.bench.loaded_trace --rest [--security] [--clients 63] [--writes 400]

Native (the default): `raftctl bench put` with CLIENTS clients, traced native writes.
`--rest`: wrk with CLIENTS connections (tests/bench/workload.lua, the load of
`make bench-compare`) and traced REST writes on one more keep-alive connection. With
`--security` on an open cluster and on one with all of SPEC §8 on (as `make bench-security`
sets it up), both up all along and taking turns, twice each: which hops security lengthens.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import budget, compare

BIN = Path(sys.executable).parent
SETTLE_S = 3.0
"""Load runs this long before the traced writes start."""
REST_LOAD_S = 600
"""wrk's duration: it is stopped once the traced writes are done."""
ROUNDS = 2
"""With --rest: traces of each cluster, the clusters taking turns (both up all along)."""


def native(clients: int, writes: int) -> None:
    with budget.ProcCluster(Path(tempfile.mkdtemp(prefix="raftkv-loaded-")), log_level="warning") as cluster:
        cluster.start_all()
        spec = cluster.specs[cluster.wait_for_leader()]
        load = subprocess.Popen(
            [BIN / "raftctl", "--config", str(cluster.config_path), "bench", "put", "--clients",
             str(clients), "--total", "1000000", "--value-size", "100"],
            stdout=subprocess.DEVNULL)
        try:
            time.sleep(SETTLE_S)
            traces = budget.native_writes(spec.client, writes, traced=True)
        finally:
            load.kill()
            load.wait()
    title = f"Native put to the leader under {clients} bench clients"
    print(budget.markdown(title, budget.table(traces), len(traces)))


def rest(system: compare.Raftkv, clients: int, writes: int) -> None:
    """Traced REST writes to the leader of `system` (started) under wrk's load."""
    port = system.http_port(system.leader())
    url, extra = system.wrk_target(port)
    load = subprocess.Popen(
        ["wrk", "-t2", f"-c{clients}", f"-d{REST_LOAD_S}s", "-s", str(compare.LUA), url, "--",
         "raftkv", "put", *extra], stdout=subprocess.DEVNULL)
    try:
        time.sleep(SETTLE_S)
        secured = isinstance(system, compare.SecuredRaftkv)
        traces = budget.rest_writes(port, writes, traced=True,
                                    tls=system.tls if secured else None,
                                    token=system.token if secured else None)
    finally:
        load.kill()
        load.wait()
    title = f"REST PUT to the leader of {system.name} under wrk -c{clients}"
    print(budget.markdown(title, budget.table(traces), len(traces)) + "\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=63)
    parser.add_argument("--writes", type=int, default=400)
    parser.add_argument("--rest", action="store_true", help="REST writes under a wrk load")
    parser.add_argument("--security", action="store_true",
                        help="with --rest: an open cluster, then one with SPEC §8 on")
    args = parser.parse_args()
    if not args.rest:
        native(args.clients, args.writes)
        return
    compare.ensure_etcd()  # and wrk
    makers = [compare.Raftkv, compare.SecuredRaftkv] if args.security else [compare.Raftkv]
    root = Path(tempfile.mkdtemp(prefix="raftkv-loaded-"))
    for maker in makers:
        (root / maker.name).mkdir()
    systems = [maker(root / maker.name) for maker in makers]
    try:
        for system in systems:
            system.start()
        for number in range(ROUNDS):
            for system in systems if number % 2 == 0 else systems[::-1]:
                rest(system, args.clients, args.writes)
    finally:
        for system in systems:
            system.stop()
        shutil.rmtree(root, ignore_errors=True)

if __name__ == "__main__":
    main()
