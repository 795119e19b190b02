"""`make bench-compare`: raftkv against etcd on this machine, side by side, with the same load.

    python -m tests.bench.compare [--passes 3] [--duration 20] [--out artifacts/bench-compare.json]

Both 3-member clusters (etcd from Debian's etcd-server, installed with apt-get when missing
and we are root) run side by side on free loopback ports for the whole run. Each wrk
measurement is cut into four equal slices taken on the two in turns (A B, B A, A B, B A), and
the other measurements are taken on one and then at once on the other, the order alternating
from pass to pass: a drift of the machine (the disk's fsync time, a neighbour's load) then
hits both sides of a ratio alike instead of whichever system ran in a bad few seconds. The
cluster not being measured sits idle (heartbeats). A pass: wrk -t2 -c64 writes to the
leader's HTTP port for DURATION s (tests/bench/workload.lua: 100-byte values over 10,000
keys), then -t1 -c1 writes, then -t2 -c64 linearizable reads, DURATION s each; raftkv also
runs its native `raftctl bench put --clients 64`; then kill -9 of the leader three times,
timing the first write acknowledged through another member. It prints the medians of the
passes, the median of the per-pass ratios with their range, the CPU each process used during
the 64-connection writes (% of one core) and per request (wrk's included), and memory (RSS),
and writes all of it (each slice's rate and percentiles too) as JSON.

    python -m tests.bench.compare --security [--passes 3]

The same passes with raftkv twice instead of raftkv and etcd: open, and with all of SPEC §8
on (CurveZMQ on every peer link and client endpoint, HTTPS, a bearer token on every REST
request, the native bench with a client key); the ratio column is secured/open, the cost of
security. [limits] stays off in both: a rate limit would measure itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "integration"), str(HERE.parent / "http")]

from cluster import RAFTCTL, ProcCluster, run_cli  # noqa: E402
from curve_keys import ops_key, secure  # noqa: E402
from tls_helpers import bearer, make_pki, use_tls  # noqa: E402

from raftkvd.http.tokens import Role, add_token  # noqa: E402

LUA = HERE / "workload.lua"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FAILOVERS = 3
TRY_TIMEOUT_S = 2.0
START_TIMEOUT_S = 30.0
NATIVE_TOTAL = 50_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def http_json(port: int, method: str, path: str, body: dict | None = None,
              timeout: float = TRY_TIMEOUT_S, tls: ssl.SSLContext | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """`tls`: HTTPS trusting that context's CA; `headers`: added (a bearer token)."""
    connection = (http.client.HTTPConnection(HOST, port, timeout=timeout) if tls is None
                  else http.client.HTTPSConnection(HOST, port, timeout=timeout, context=tls))
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data,
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw
    finally:
        connection.close()


def wait(what: str, probe: Any, timeout: float = START_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = probe()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class System(ABC):
    name: str

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def leader(self) -> int: ...

    @abstractmethod
    def http_port(self, node: int) -> int: ...

    @abstractmethod
    def processes(self) -> dict[str, int]:
        """Role name ("leader", "leader http", "follower 2", ...) -> pid, for the CPU split."""

    @abstractmethod
    def kill(self, node: int) -> None: ...

    @abstractmethod
    def restart(self, node: int) -> None: ...

    @abstractmethod
    def write_once(self, node: int, key: str) -> bool: ...

    def wrk_target(self, port: int) -> tuple[str, list[str]]:
        """wrk's URL for an HTTP port, and the arguments after the system and op (workload.lua)."""
        return f"http://{HOST}:{port}", []

    nodes = (1, 2, 3)


class Raftkv(System):
    name = "raftkv"

    def __init__(self, root: Path) -> None:
        self.cluster = ProcCluster(root, max_value_bytes=1024 * 1024, log_level="warning")

    def start(self) -> None:
        self.cluster.start_all()

    def stop(self) -> None:
        self.cluster.close()

    def leader(self) -> int:
        return self.cluster.wait_for_leader()

    def http_port(self, node: int) -> int:
        return self.cluster.specs[node].http_port

    def processes(self) -> dict[str, int]:
        leader = self.leader()
        found = {}
        for node in self.nodes:
            if not self.cluster.is_running(node):
                continue
            role = "leader" if node == leader else f"follower {node}"
            pid = self.cluster.pid(node)
            found[role] = pid
            for child in children(pid):
                found[f"{role} http"] = child
        return found

    def kill(self, node: int) -> None:
        self.cluster.kill(node)

    def restart(self, node: int) -> None:
        self.cluster.start(node)
        self.cluster.wait_http(node)
        wait(f"node {node} healthy", lambda: self._http(node, "GET", "/health")[0] == 200)

    def write_once(self, node: int, key: str) -> bool:
        return self._http(node, "PUT", f"/kv/{key}", {"value": "v"})[0] == 200

    def _http(self, node: int, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        return http_json(self.http_port(node), method, path, body)

    def raftctl_target(self) -> list[str]:
        """How raftctl reaches (and authenticates to) this cluster."""
        return ["-e", ",".join(self.cluster.endpoints())]

    def native_bench(self) -> dict[str, Any]:
        result = run_cli(RAFTCTL, *self.raftctl_target(), "-o", "json", "bench", "put",
                         "--clients", "64", "--total", str(NATIVE_TOTAL), "--value-size", "100",
                         timeout=600)
        return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr}


class SecuredRaftkv(Raftkv):
    """raftkv with SPEC §8 on: CurveZMQ everywhere, HTTPS, a write token on every request."""

    name = "raftkv-secured"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.key = ops_key(secure(self.cluster))
        pki = make_pki(root / "tls")
        use_tls(self.cluster, pki)
        self.tls = ssl.create_default_context(cafile=str(pki.ca))
        tokens_file = root / "tokens"
        self.token = add_token(tokens_file, "bench", Role.WRITE)
        self.cluster.set_section_key("security", "tokens_file", json.dumps(str(tokens_file)))

    def _http(self, node: int, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        return http_json(self.http_port(node), method, path, body, tls=self.tls, headers=bearer(self.token))

    def raftctl_target(self) -> list[str]:
        return ["--config", str(self.cluster.config_path), "--key", str(self.key)]

    def wrk_target(self, port: int) -> tuple[str, list[str]]:
        return f"https://{HOST}:{port}", [self.token]


class Etcd(System):
    name = "etcd"
    binary = "etcd"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.client = {n: free_port() for n in self.nodes}
        self.peer = {n: free_port() for n in self.nodes}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ids: dict[int, str] = {}

    def _command(self, node: int, state: str) -> list[str]:
        cluster = ",".join(f"n{n}=http://{HOST}:{self.peer[n]}" for n in self.nodes)
        return [
            self.binary, "--name", f"n{node}", "--data-dir", str(self.root / f"n{node}"),
            "--listen-client-urls", f"http://{HOST}:{self.client[node]}",
            "--advertise-client-urls", f"http://{HOST}:{self.client[node]}",
            "--listen-peer-urls", f"http://{HOST}:{self.peer[node]}",
            "--initial-advertise-peer-urls", f"http://{HOST}:{self.peer[node]}",
            "--initial-cluster", cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", "bench", "--log-level", "error", "--logger", "zap",
        ]

    def _spawn(self, node: int, state: str) -> None:
        log = open(self.root / f"n{node}.log", "ab")  # noqa: SIM115 - kept open by the child
        self.procs[node] = subprocess.Popen(self._command(node, state), stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._spawn(node, "new")
        for node in self.nodes:
            wait(f"etcd n{node}", lambda n=node: self._status(n) is not None)
        self.leader()

    def _status(self, node: int) -> dict | None:
        status, body = http_json(self.client[node], "POST", "/v3/maintenance/status", {})
        return body if status == 200 and isinstance(body, dict) and body.get("leader") else None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()

    def leader(self) -> int:
        def find() -> int | None:
            for node in self.nodes:
                if self.procs[node].poll() is not None:
                    continue
                status = self._status(node)
                if status is not None and status["leader"] == status["header"]["member_id"]:
                    return node
            return None

        return wait("an etcd leader", find)

    def http_port(self, node: int) -> int:
        return self.client[node]

    def processes(self) -> dict[str, int]:
        leader = self.leader()
        return {("leader" if n == leader else f"follower {n}"): p.pid for n, p in self.procs.items()
                if p.poll() is None}

    def kill(self, node: int) -> None:
        self.procs[node].send_signal(signal.SIGKILL)
        self.procs[node].wait()

    def restart(self, node: int) -> None:
        self._spawn(node, "existing")
        wait(f"etcd n{node} back", lambda: self._status(node) is not None)

    def write_once(self, node: int, key: str) -> bool:
        import base64

        body = {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(b"v").decode()}
        status, reply = http_json(self.client[node], "POST", "/v3/kv/put", body)
        return status == 200 and isinstance(reply, dict) and "header" in reply


def wrk(system: System, port: int, op: str, connections: int, seconds: int) -> dict[str, Any]:
    threads = min(2, connections)
    url, extra = system.wrk_target(port)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA),
         url, "--", system.name, op, *extra],
        capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = next(line for line in reversed(out.stdout.splitlines()) if line.startswith("{"))
    return json.loads(line)


def children_cpu_s() -> float:
    """CPU seconds of the children waited for so far: wrk's, once it has exited (the clusters'
    processes are waited for only when killed, never during a measurement)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(system: System, op: str, connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run at the leader, with the CPU each process used meanwhile (% of one core),
    wrk's included: with HTTPS, the client's half of TLS runs on the same cores as the cluster."""
    procs = system.processes()
    before = {role: cpu_ticks(pid) for role, pid in procs.items()}
    wrk_before = children_cpu_s()
    started = time.monotonic()
    result = wrk(system, system.http_port(system.leader()), op, connections, seconds)
    wall = time.monotonic() - started
    result["cpu_percent"] = {role: round(100 * (cpu_ticks(pid) - before[role]) / CLK_TCK / wall, 1)
                             for role, pid in procs.items()}
    result["cpu_percent"]["wrk"] = round(100 * (children_cpu_s() - wrk_before) / wall, 1)
    result["rss_mb"] = {role: round(rss_mb(pid), 1) for role, pid in procs.items()}
    return result


def failover(system: System) -> list[float]:
    """kill -9 of the leader, FAILOVERS times: ms until a write through another member is answered."""
    times = []
    for attempt in range(FAILOVERS):
        old = system.leader()
        other = next(n for n in system.nodes if n != old)
        started = time.monotonic()
        system.kill(old)
        n = 0
        while True:
            n += 1
            try:
                if system.write_once(other, f"failover/{attempt}/{n}"):
                    break
            except OSError:
                pass
            if time.monotonic() - started > 30:
                raise RuntimeError(f"{system.name}: no write within 30 s of killing node {old}")
        times.append(round((time.monotonic() - started) * 1000, 1))
        system.restart(old)
        system.leader()
    return times


SLICES = 4
"""Each wrk measurement is cut into this many equal slices, taken on the systems in turns
A B, B A, A B, B A: the mean time of each system's slices is the same, so a drift of the
machine within a measurement (the disk's fsync time wanders by a fifth over ten seconds
here, and a 1-connection write is mostly one fsync) cancels out of the ratio."""

WRK_MEASUREMENTS: dict[str, tuple[str, int]] = {
    "writes_64": ("put", 64),
    "writes_1": ("put", 1),
    "reads_64": ("get", 64),
}
"""wrk measurements: the operation and the connections."""

OTHER_MEASUREMENTS: dict[str, Any] = {
    "native_put_64": lambda system: system.native_bench() if isinstance(system, Raftkv) else None,
    "failover_ms": failover,
}
"""Taken on each system in turn, after the wrk measurements of the pass."""


def combined(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """One measurement from its equally long slices: the mean rate, the median of the slices'
    percentiles, errors summed, each process's CPU averaged, the memory at the end."""
    cpu: dict[str, list[float]] = {}
    for part in slices:
        for role, value in part["cpu_percent"].items():
            cpu.setdefault(role, []).append(value)
    return {
        "requests_per_s": round(statistics.mean(s["requests_per_s"] for s in slices), 1),
        "p50_ms": statistics.median(s["p50_ms"] for s in slices),
        "p99_ms": statistics.median(s["p99_ms"] for s in slices),
        "non_2xx": sum(s["non_2xx"] for s in slices),
        "socket_errors": sum(s["socket_errors"] for s in slices),
        "cpu_percent": {role: round(statistics.mean(v), 1) for role, v in cpu.items()},
        "rss_mb": slices[-1]["rss_mb"],
        "slices": [{k: s[k] for k in ("requests_per_s", "p50_ms", "p99_ms")} for s in slices],
    }


def interleaved(systems: dict[str, System], order: list[str], op: str, connections: int,
                seconds: int) -> dict[str, dict[str, Any]]:
    """`seconds` of wrk on each system of `order`, in SLICES slices taken in turns (SLICES)."""
    length = max(2, seconds // SLICES)
    slices: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
    for number in range(SLICES):
        for name in order if number % 2 == 0 else order[::-1]:
            slices[name].append(measured(systems[name], op, connections, length))
    return {name: combined(parts) for name, parts in slices.items()}


def run_pass(systems: dict[str, System], order: list[str], seconds: int) -> dict[str, dict[str, Any]]:
    """Each wrk measurement on the systems of `order` interleaved, then the others in turn."""
    results: dict[str, dict[str, Any]] = {name: {} for name in order}
    for key, (op, connections) in WRK_MEASUREMENTS.items():
        for name, value in interleaved(systems, order, op, connections, seconds).items():
            results[name][key] = value
    for key, measure in OTHER_MEASUREMENTS.items():
        for name in order:
            value = measure(systems[name])
            if value is not None:
                results[name][key] = value
    return results


def ensure_etcd() -> None:
    if shutil.which("etcd") and shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        sys.exit("bench-compare needs etcd and wrk: apt-get install -y etcd-server wrk (as root)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server", "wrk"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


ROWS: dict[str, Any] = {
    "REST writes, 64 connections (req/s)": lambda p: p["writes_64"]["requests_per_s"],
    "REST writes, 1 connection, p50 (ms)": lambda p: p["writes_1"]["p50_ms"],
    "linearizable REST reads, 64 connections (req/s)": lambda p: p["reads_64"]["requests_per_s"],
    "failover, kill -9 -> first write (ms)": lambda p: statistics.median(p["failover_ms"]),
    "native raftctl bench put, 64 clients (ops/s)":
        lambda p: p["native_put_64"].get("ops_per_sec") if "native_put_64" in p else None,
}


def summarize(passes: dict[str, list[dict[str, Any]]], subject: str, baseline: str) -> dict[str, Any]:
    """Per row: each system's median over the passes, and the median and range of the
    per-pass ratios subject/baseline (the two were measured back to back in each pass)."""
    table = {}
    for label, pick in ROWS.items():
        values = {name: [pick(p) for p in passes[name]] for name in (subject, baseline)}
        row: dict[str, Any] = {name: statistics.median(v) for name, v in values.items()
                               if v and None not in v}
        if len(row) == 2:
            ratios = [a / b for a, b in zip(values[subject], values[baseline], strict=True) if b]
            row["ratio"] = round(statistics.median(ratios), 2) if ratios else None
            row["ratios"] = [round(r, 2) for r in ratios]
        table[label] = row
    return table


def role_kind(role: str) -> str:
    """"follower 2 http" -> "follower http": which node follows changes from pass to pass."""
    words = role.split()
    return " ".join(w for w in words if not w.isdigit())


def cpu_split(passes: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median CPU of each kind of process (the leader, a follower, their HTTP processes, wrk)."""
    samples: dict[str, list[float]] = {}
    for p in passes:
        for role, value in p[key]["cpu_percent"].items():
            samples.setdefault(role_kind(role), []).append(value)
    return {kind: statistics.median(values) for kind, values in sorted(samples.items())}


def cpu_per_request_us(passes: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median CPU time per request of each kind of process, and of all of them together (µs):
    the cost of a request whatever the throughput that pass reached."""
    samples: dict[str, list[float]] = {}
    for p in passes:
        rate = p[key]["requests_per_s"]
        per_kind: dict[str, float] = {}
        for role, value in p[key]["cpu_percent"].items():
            kind = role_kind(role)
            per_kind[kind] = per_kind.get(kind, 0.0) + value * 10_000 / rate
        per_kind["all"] = sum(per_kind.values())
        for kind, us in per_kind.items():
            samples.setdefault(kind, []).append(us)
    return {kind: statistics.median(values) for kind, values in samples.items()}


def print_report(table: dict[str, Any], passes: dict[str, list[dict[str, Any]]], subject: str,
                 baseline: str) -> None:
    print(f"\n{'':52} {subject:>14} {baseline:>10} {subject + '/' + baseline:>22}   per pass")
    for label, row in table.items():
        other = f"{row[baseline]:.2f}" if baseline in row else "-"
        ratio = f"{row['ratio']:.2f}x" if row.get("ratio") is not None else "-"
        spread = " ".join(f"{r:.2f}" for r in row.get("ratios", []))
        print(f"{label:52} {row[subject]:>14.2f} {other:>10} {ratio:>22}   {spread}")
    for name, runs in passes.items():
        split = cpu_split(runs, "writes_64")
        print(f"{name} CPU during 64-connection writes (% of a core, median per process): "
              + ", ".join(f"{role} {value:.0f}" for role, value in split.items()))
        cost = cpu_per_request_us(runs, "writes_64")
        print(f"{name} CPU per 64-connection write (µs, median; followers and their HTTP "
              "processes summed): " + ", ".join(f"{kind} {us:.0f}" for kind, us in cost.items()))
        load = statistics.median(sum(p["writes_64"]["rss_mb"].values()) for p in runs)
        print(f"{name} RSS of all processes: idle {runs[0]['rss_idle_mb']:.0f} MB, "
              f"after the write load {load:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--duration", type=int, default=20, help="seconds of each 64-connection run")
    parser.add_argument("--out", type=Path, help="JSON report (default artifacts/bench-compare.json, "
                                                 "or bench-security.json with --security)")
    parser.add_argument("--security", action="store_true",
                        help="raftkv with SPEC §8 on against raftkv open, instead of against etcd")
    parser.add_argument("--only", help="run one of the two systems (no ratios)")
    args = parser.parse_args()
    makers: dict[str, type[System]] = (
        {SecuredRaftkv.name: SecuredRaftkv, Raftkv.name: Raftkv} if args.security
        else {Raftkv.name: Raftkv, Etcd.name: Etcd})
    subject, baseline = makers
    if args.only is not None and args.only not in makers:
        parser.error(f"--only: one of {', '.join(makers)}")
    out = args.out or Path(f"artifacts/bench-{'security' if args.security else 'compare'}.json")
    ensure_etcd()  # and wrk
    names = [name for name in makers if args.only in (None, name)]
    root = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    for name in names:
        (root / name).mkdir()
    systems = {name: makers[name](root / name) for name in names}
    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        idle_rss = {}
        for name, system in systems.items():
            system.start()
            idle_rss[name] = round(sum(rss_mb(pid) for pid in system.processes().values()), 1)
        for number in range(args.passes):
            order = names if number % 2 == 0 else names[::-1]
            print(f"pass {number + 1}: {' then '.join(order)}, each measurement", flush=True)
            for name, result in run_pass(systems, order, args.duration).items():
                result["rss_idle_mb"] = idle_rss[name]
                passes[name].append(result)
                print(json.dumps({name: {k: v for k, v in result.items() if k != "rss_idle_mb"}}),
                      flush=True)
    finally:
        for system in systems.values():
            system.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.only:
        return
    table = summarize(passes, subject, baseline)
    print_report(table, passes, subject, baseline)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"table": table, "passes": passes}, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
