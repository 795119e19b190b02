"""Chaos runs against real raftkvd clusters: `python -m tests.chaos.run --duration 600 --nodes 5`.
`--secure` runs them with the cluster's security on (CurveZMQ, HTTPS, bearer tokens).

Starts a cluster of real processes on free loopback ports with a fault proxy on every peer link,
runs clients and the nemesis for --duration seconds (repeated --runs times, alternating 3 and 5
nodes with --nodes 0), then prints a summary per run and in total: time, operations checked,
faults injected by kind, anomalies. Exit status 1 when any run found an anomaly; its workdir
(node logs, history.jsonl, report.txt) is kept and printed, with the seed that replays its
fault schedule (`--seed S`; timing still varies, the schedule does not).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parent, _HERE.parent / "integration"):  # the suite's flat test modules
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from harness import ChaosConfig, ChaosReport, run_chaos  # noqa: E402
from nemesis import ALL_KINDS, CATEGORIES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults per run")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size; 0 alternates 3 and 5")
    parser.add_argument("--runs", type=int, default=1, help="how many runs, one after another")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients (half raftctl, half REST)")
    parser.add_argument("--seed", type=int, help="seed of the first run (then seed+1, ...)")
    parser.add_argument("--kinds", default=",".join(ALL_KINDS),
                        help=f"comma-separated fault kinds (default: all: {', '.join(ALL_KINDS)})")
    parser.add_argument("--workdir", type=Path, help="keep every run's data, logs and history here")
    parser.add_argument("--secure", action="store_true",
                        help="security on (SPEC §8): CurveZMQ on peer links and client endpoints, "
                             "HTTPS and bearer tokens for REST")
    parser.add_argument("--unsafe-local-reads", action="store_true",
                        help="TEST ONLY: break the read path (nodes answer reads locally); must fail")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-fault progress lines")
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    reports: list[ChaosReport] = []
    started = time.monotonic()
    for n in range(args.runs):
        nodes = args.nodes or (3 if n % 2 == 0 else 5)
        config = ChaosConfig(
            duration_s=args.duration, nodes=nodes, clients=args.clients,
            seed=None if args.seed is None else args.seed + n, kinds=kinds,
            unsafe_local_reads=args.unsafe_local_reads, secure=args.secure, verbose=not args.quiet,
            workdir=args.workdir / f"run{n + 1}" if args.workdir else None,
        )
        report = run_chaos(config)
        reports.append(report)
        print(f"\n=== run {n + 1} of {args.runs} ===\n{report.summary()}\n", flush=True)
    if len(reports) > 1:
        print(total_summary(reports, time.monotonic() - started))
    return 0 if all(r.ok for r in reports) else 1


def total_summary(reports: list[ChaosReport], elapsed: float) -> str:
    kinds: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    for r in reports:
        kinds.update(r.faults)
        categories.update(r.fault_categories)
    anomalies = sum(len(r.anomalies) for r in reports)
    return "\n".join([
        f"=== total: {len(reports)} runs, {sum(r.chaos_s for r in reports):.0f}s of faults, "
        f"{elapsed:.0f}s in total ===",
        f"operations checked: {sum(r.operations for r in reports)} "
        f"({sum(r.indeterminate for r in reports)} indeterminate)",
        f"faults injected: {sum(kinds.values())} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})",
        f"fault categories: {', '.join(f'{c} {categories.get(c, 0)}' for c in CATEGORIES)}",
        f"anomalies: {anomalies}"
        + ("" if all(r.linearizable for r in reports) else " (or undecided keys: see the runs)"),
    ])


if __name__ == "__main__":
    sys.exit(main())
