"""One chaos run: a real cluster behind fault proxies, clients, a nemesis, a monitor, then checks.

Checks (REFERENCES §3: etcd functional tester, hashicorp fuzzy, Jepsen), each one an anomaly when
it fails:
- the history of every client operation is linearizable (per key, WGL; linearizability.check);
- an explicit final read of every key used, after the heal, is part of that history, so every
  acknowledged write is readable unless a later operation replaced it;
- after the final heal a write is acknowledged within WRITE_RECOVERY_S (and after every heal);
- the nodes converge: same applied index and same kv hash on every node;
- the monitor, sampling every node's status during the run: at most one leader per term; term,
  commit and applied never go back on a node (across kill -9 and restart too); no node exits
  unless the nemesis killed it.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaoscluster import ChaosCluster
from history import Recorder
from linearizability import CheckResult, OpKind, Verdict, check
from nemesis import ALL_KINDS, CATEGORIES, Nemesis
from workload import KeySpace, Workload

from raftctl import Client
from raftctl.errors import KeyNotFound

MONITOR_INTERVAL_S = 0.25
MONITOR_STATUS_TIMEOUT_S = 0.3
CONVERGE_TIMEOUT_S = 30.0
FINAL_READ_TIMEOUT_S = 30.0
DEFAULT_CHECK_TIMEOUT_S = 60.0
DEFAULT_SNAPSHOT_THRESHOLD = 300
"""Small, so that long runs compact logs and ship snapshots to nodes that were down for a while."""
LOG_TAIL_LINES = 60


@dataclass
class ChaosConfig:
    duration_s: float = 60.0
    nodes: int = 3
    clients: int = 6
    seed: int | None = None
    kinds: tuple[str, ...] = ALL_KINDS
    keys_per_epoch: int = 6
    epoch_s: float = 30.0
    hold_s: tuple[float, float] = (1.0, 3.0)
    quiet_s: tuple[float, float] = (0.5, 1.5)
    long_hold_s: tuple[float, float] = (5.0, 10.0)
    long_hold_share: float = 0.15
    snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD
    check_timeout_s: float = DEFAULT_CHECK_TIMEOUT_S
    unsafe_local_reads: bool = False
    """Test only: nodes serve linearizable reads locally (the checker's own test must catch it)."""
    secure: bool = False
    """SPEC §8 on: CurveZMQ on peer links and client endpoints, HTTPS and bearer tokens on REST;
    every client, probe and status query of the run authenticates."""
    workdir: Path | None = None
    """Cluster data, logs, the history and the report; a temporary dir (removed when the run is
    clean) when None."""
    keep: bool = False
    verbose: bool = False


@dataclass
class ChaosReport:
    config: ChaosConfig
    seed: int
    elapsed_s: float = 0.0
    chaos_s: float = 0.0
    operations: int = 0
    """Operations checked: completed + indeterminate (definitely failed ones are not history)."""
    completed: int = 0
    indeterminate: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    client_errors: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    fault_categories: dict[str, int] = field(default_factory=dict)
    recoveries_s: list[float] = field(default_factory=list)
    final_recovery_s: float | None = None
    converge_s: float | None = None
    final_applied: int | None = None
    keys_checked: int = 0
    keys_unknown: list[str] = field(default_factory=list)
    check_s: float = 0.0
    linearizable: bool | None = None
    monitor_samples: int = 0
    snapshots_seen: int = 0
    terms_seen: int = 0
    proxy: dict[str, int] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)
    workdir: str = ""
    timeline: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.anomalies and self.linearizable is True

    def summary(self) -> str:
        cfg = self.config
        rec = sorted(self.recoveries_s)
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        cats = ", ".join(f"{c} {self.fault_categories.get(c, 0)}" for c in CATEGORIES)
        lines = [
            f"chaos run: {cfg.nodes} nodes, {cfg.clients} clients, seed {self.seed}, "
            + ("secured (CurveZMQ, HTTPS, tokens), " if cfg.secure else "")
            + f"{self.chaos_s:.0f}s of faults, {self.elapsed_s:.0f}s in total",
            f"operations checked: {self.operations} ({self.completed} completed, {self.indeterminate} "
            f"indeterminate) on {self.keys_checked} keys in {self.check_s:.1f}s: "
            + {True: "linearizable", False: "NOT LINEARIZABLE", None: "undecided"}[self.linearizable],
            f"clients: {self._outcomes()}",
            f"faults injected: {sum(self.faults.values())} ({kinds})",
            f"fault categories: {cats}",
            f"write recovery after heal: max {rec[-1] if rec else 0:.2f}s, median "
            f"{rec[len(rec) // 2] if rec else 0:.2f}s over {len(rec)} heals; after the final heal "
            f"{self.final_recovery_s if self.final_recovery_s is not None else float('nan'):.2f}s",
            f"convergence: {'NO' if self.converge_s is None else f'{self.converge_s:.2f}s'} "
            f"(applied index {self.final_applied})",
            f"monitor: {self.monitor_samples} status samples, {self.terms_seen} terms with a leader, "
            f"{self.snapshots_seen} snapshot installs seen",
            f"proxy: {', '.join(f'{k} {v}' for k, v in sorted(self.proxy.items()))}",
            f"anomalies: {len(self.anomalies)}",
        ]
        if self.keys_unknown:
            lines.append(f"keys the checker could not decide in time: {', '.join(self.keys_unknown)}")
        lines += [f"  - {a}" for a in self.anomalies]
        if self.workdir:
            lines.append(f"workdir: {self.workdir}")
        return "\n".join(lines)


    def _outcomes(self) -> str:
        """Per API (raftctl, rest) how many operations ended how, and the commonest errors."""
        per_api: dict[str, Counter[str]] = defaultdict(Counter)
        for name, n in self.by_outcome.items():
            api, _, outcome = name.split(".")
            per_api[api][outcome] += n
        apis = "; ".join(f"{api} " + ", ".join(f"{o} {n}" for o, n in sorted(c.items()))
                         for api, c in sorted(per_api.items()))
        errors = ", ".join(f"{e} x{n}" for e, n in Counter(self.client_errors).most_common(4))
        return f"{apis or 'none'}" + (f" (errors: {errors})" if errors else "")


class Monitor:
    """Samples every node's status: one leader per term; term/commit/applied never go back;
    no node exits unless the nemesis killed it."""

    def __init__(self, cluster: ChaosCluster, nemesis: Nemesis) -> None:
        self.cluster = cluster
        self.nemesis = nemesis
        self.samples = 0
        self.leaders: dict[int, set[int]] = defaultdict(set)
        self.highest: dict[tuple[int, str], int] = {}
        self.anomalies: list[str] = []
        self._crashed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(MONITOR_INTERVAL_S):
            for node_id in self.cluster.ids:
                self._check_process(node_id)
                status = self.cluster.status(node_id, MONITOR_STATUS_TIMEOUT_S)
                if status is not None:
                    self.observe(node_id, status)

    def _check_process(self, node_id: int) -> None:
        proc = self.cluster.procs.get(node_id)
        if proc is None or proc.poll() is None or proc.pid in self._crashed:
            return
        if node_id not in self.nemesis.down:
            self._crashed.add(proc.pid)
            self.anomalies.append(
                f"node {node_id} (pid {proc.pid}) exited by itself with code {proc.returncode}:\n"
                + self.cluster.log_tail(node_id, LOG_TAIL_LINES)
            )

    def observe(self, node_id: int, status: dict[str, object]) -> None:
        self.samples += 1
        term = int(status["term"])  # type: ignore[arg-type]
        if status["role"] == "leader":
            leaders = self.leaders[term]
            leaders.add(node_id)
            if len(leaders) == 2:
                self.anomalies.append(f"two leaders in term {term}: nodes {sorted(leaders)}")
        for name in ("term", "commit", "applied"):
            value = int(status[name])  # type: ignore[call-overload]
            best = self.highest.get((node_id, name), value)
            if value < best:
                self.anomalies.append(f"node {node_id}: {name} went back from {best} to {value}")
            self.highest[(node_id, name)] = max(best, value)


def run_chaos(config: ChaosConfig, log: Callable[[str], None] | None = None) -> ChaosReport:
    """Run one chaos experiment as configured and return its report (never raises on anomalies)."""
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(1 << 31)
    say = log or (_print_err if config.verbose else (lambda _: None))
    temporary = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="raftkv-chaos-")) if temporary else Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = ChaosReport(config, seed, workdir=str(workdir))
    rng = random.Random(seed)
    started = time.monotonic()
    recorder = Recorder()
    keys = KeySpace(config.keys_per_epoch, config.epoch_s)
    cluster = ChaosCluster(workdir / "cluster", config.nodes, seed=rng.randrange(1 << 31),
                           snapshot_threshold=config.snapshot_threshold,
                           unsafe_local_reads=config.unsafe_local_reads, secure=config.secure)
    workload: Workload | None = None
    monitor: Monitor | None = None
    try:
        say(f"chaos: seed {seed}, {config.nodes} nodes, workdir {workdir}")
        cluster.start_all()
        workload = Workload(
            recorder, keys, cluster.endpoints(),
            [("127.0.0.1", cluster.specs[i].http_port) for i in cluster.ids],
            clients=config.clients, seed=rng.randrange(1 << 31), curve=cluster.curve,
            rest_tls=cluster.rest.ssl_context(), rest_headers=cluster.rest.headers(),
        )
        nemesis = Nemesis(cluster, recorder, keys, random.Random(rng.randrange(1 << 31)), config.kinds,
                          config.hold_s, config.quiet_s, config.long_hold_s, config.long_hold_share,
                          log=say)
        monitor = Monitor(cluster, nemesis)
        workload.start()
        monitor.start()
        chaos_started = time.monotonic()
        try:
            nemesis.run(chaos_started + config.duration_s)
        finally:
            nemesis.heal_all()
        report.chaos_s = time.monotonic() - chaos_started
        report.final_recovery_s = nemesis.probe_recovery("the final heal", time.monotonic())
        workload.stop()
        _final_reads(cluster, recorder, keys, report)
        _converge(cluster, report)
        monitor.stop()
        report.anomalies += nemesis.anomalies + monitor.anomalies
        report.faults = dict(nemesis.counts)
        report.fault_categories = dict(nemesis.categories)
        report.recoveries_s = [e.recovery_s for e in nemesis.events if e.recovery_s is not None]
        report.timeline = [f"{e.started - chaos_started:7.1f}s {e.kind}: {e.detail}" for e in nemesis.events]
        report.monitor_samples = monitor.samples
        report.snapshots_seen = nemesis.snapshots_installed
        report.terms_seen = len(monitor.leaders)
        report.by_outcome = dict(workload.stats)
        report.client_errors = dict(workload.errors)
        report.proxy = dict(cluster.net.stats)
        if cluster.net.stats.get("unidentified"):
            report.anomalies.append(f"{cluster.net.stats['unidentified']} peer connections came from no "
                                    "node's source address: the proxy applied no link faults to them")
        history = recorder.operations()
        _save_history(workdir / "history.jsonl", history)
        say(f"chaos: checking {len(history)} operations")
        _check(history, config.check_timeout_s, report)
    except BaseException:
        report.anomalies.append("the harness itself failed (see the traceback)")
        raise
    finally:
        if workload is not None:
            workload.stop()
        if monitor is not None:
            monitor.stop()
        cluster.close()
        report.elapsed_s = time.monotonic() - started
        if not report.ok:
            (workdir / "logs.txt").write_text(cluster.log_tails(LOG_TAIL_LINES * 4))
        (workdir / "report.txt").write_text(report.summary() + "\n\n" + "\n".join(report.timeline) + "\n")
        if temporary and report.ok and not config.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            report.workdir = ""
    return report


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _final_reads(cluster: ChaosCluster, recorder: Recorder, keys: KeySpace, report: ChaosReport) -> None:
    """Read every key ever used, linearizably, into the history: acknowledged writes must be there."""
    deadline = time.monotonic() + FINAL_READ_TIMEOUT_S
    with Client(cluster.endpoints(), timeout=5.0, curve=cluster.curve) as client:
        for key in keys.all_keys():
            while True:
                handle = recorder.invoke("final", OpKind.GET, key)
                try:
                    try:
                        value: str | None = client.get(key)
                    except KeyNotFound:
                        value = None
                except Exception as exc:
                    recorder.fail(handle)
                    if time.monotonic() > deadline:
                        report.anomalies.append(f"final read of {key!r} failed: {exc}")
                        break
                    continue
                recorder.complete(handle, value)
                break


def _converge(cluster: ChaosCluster, report: ChaosReport) -> None:
    """Every node reaches the same applied index and the same kv hash."""
    started = time.monotonic()
    seen: dict[int, tuple[str, int] | None] = {}
    while time.monotonic() - started < CONVERGE_TIMEOUT_S:
        seen = {i: cluster.kv_hash(i) for i in cluster.ids}
        values = set(seen.values())
        if None not in values and len(values) == 1:
            report.converge_s = time.monotonic() - started
            report.final_applied = next(iter(values))[1]  # type: ignore[index]
            return
        time.sleep(0.1)
    shown = "\n".join(f"  node {i}: {'silent' if v is None else f'applied {v[1]} hash {v[0][:16]}'}"
                      for i, v in seen.items())
    report.anomalies.append(f"nodes did not converge within {CONVERGE_TIMEOUT_S:.0f}s:\n{shown}")


def _check(history: list, timeout_s: float, report: ChaosReport) -> None:
    report.operations = len(history)
    report.indeterminate = sum(1 for op in history if op.indeterminate)
    report.completed = report.operations - report.indeterminate
    result: CheckResult = check(history, timeout_s=timeout_s)
    report.check_s = result.elapsed_s
    report.keys_checked = len(result.keys)
    report.linearizable = result.ok
    report.keys_unknown = [k for k, r in result.keys.items() if r.verdict is Verdict.UNKNOWN]
    for key_result in result.keys.values():
        if key_result.verdict is Verdict.ILLEGAL:
            report.anomalies.append(key_result.explanation)


def _save_history(path: Path, history: list) -> None:
    with open(path, "w") as out:
        for op in history:
            row = asdict(op)
            row["kind"] = op.kind.value
            row["ret"] = None if op.indeterminate else op.ret
            row["output"] = op.output if isinstance(op.output, str | bool | None) else str(op.output)
            out.write(json.dumps(row) + "\n")

