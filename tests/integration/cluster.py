"""ProcCluster: a real raftkvd cluster of OS processes on loopback, for integration tests.

Every node is `python -m raftkvd run --config F --id N`, with its own free ports and data
dir under the test's tmp_path and its stderr in a log file per node. Everything started is
tracked by pid and SIGKILLed (and reaped) by `close()`, whatever state the test left it in.
Waiting is always polling with a deadline; nothing here sleeps for a fixed "long enough".
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zmq
from helpers import free_port

from raftctl import Client
from raftkv.curve import ClientCurve, KeyPair, as_client
from raftkv.frames import FrameError, decode_client, encode_client

HOST = "127.0.0.1"
ELECTION_TIMEOUT_MS = (150, 300)
HEARTBEAT_MS = 50
DEFAULT_MAX_VALUE_BYTES = 1024
DEV_PORTS = range(20051, 20064)
"""The dev cluster of conf/cluster.toml may be running on these: never use them."""
POLL_S = 0.02
STATUS_TIMEOUT_S = 0.5
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 40

T = TypeVar("T")


def _raftctl_command() -> list[str]:
    """raftctl has no __main__: use its console script beside this interpreter."""
    script = Path(sys.executable).parent / "raftctl"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from raftctl.cli import main; sys.exit(main())"]


RAFTCTL = _raftctl_command()
RAFTKVD = [sys.executable, "-m", "raftkvd"]
CLI_TIMEOUT_S = 30.0


def interruptible() -> None:
    """Popen's preexec_fn for a child that a test stops with SIGINT (Ctrl-C): a runner
    started in the background (`cmd &` in a script) ignores SIGINT, its children inherit
    that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env() -> dict[str, str]:
    """The environment without RAFTKVD_*/RAFTCTL_* settings that would leak into a test."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RAFTKVD_", "RAFTCTL_"))}


def run_cli(command: list[str], *args: str, input: str | None = None,
            timeout: float = CLI_TIMEOUT_S, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run RAFTCTL or RAFTKVD with `args` to completion (killed after `timeout`);
    `env` adds variables to the clean environment."""
    return subprocess.run(
        [*command, *args], input=input, capture_output=True, text=True, timeout=timeout,
        env={**clean_env(), **(env or {})}, cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def pick_port(taken: set[int]) -> int:
    """A free loopback port, distinct from `taken` and from the dev cluster's ports."""
    while True:
        port = free_port(HOST)
        if port not in taken and port not in DEV_PORTS:
            taken.add(port)
            return port


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something other than None/False; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(POLL_S)


def raw_request(
    ctx: zmq.Context, endpoint: str, request: dict[str, Any], timeout: float = STATUS_TIMEOUT_S,
    curve: tuple[KeyPair, bytes] | None = None,
) -> dict[str, Any] | None:
    """One client-protocol exchange on a fresh DEALER; None on silence or garbage.
    `curve`: (own key pair, the node's public key) for a node with [security] curve_dir."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        as_client(sock, *curve)
    try:
        sock.connect(endpoint)
        req_id = int(time.monotonic_ns() & 0x7FFFFFFF)
        sock.send(encode_client({"id": req_id, **request}), zmq.NOBLOCK)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                return None
            try:
                reply = decode_client(sock.recv_multipart()[-1])
            except FrameError:
                continue
            if reply.get("id") == req_id:
                return reply
        return None
    except zmq.Again:
        return None
    finally:
        sock.close(0)


@dataclass
class NodeSpec:
    id: int
    raft_port: int
    client_port: int
    http_port: int
    data_dir: Path
    log_path: Path

    @property
    def raft(self) -> str:
        return f"tcp://{HOST}:{self.raft_port}"

    @property
    def client(self) -> str:
        return f"tcp://{HOST}:{self.client_port}"

    @property
    def endpoint(self) -> str:
        """host:port, the form raftctl -e takes."""
        return f"{HOST}:{self.client_port}"


class ProcCluster:
    """A cluster of real raftkvd processes. Use as a context manager or call `close()`."""

    live: set[ProcCluster] = set()
    """Open clusters, so a failing test's report can show their nodes' logs."""
    harness_name: str = "test"
    """Named in the banner `start` writes to a node's log, so a log shows which harness ran it."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        snapshot_threshold: int | None = None,
        log_level: str | None = "info",
    ) -> None:
        """`log_level`: RAFTKVD_LOG_LEVEL of every node; None leaves it to the cluster file."""
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._taken: set[int] = set()
        self.specs: dict[int, NodeSpec] = {}
        for _ in range(size):
            self._new_spec()
        self.log_level = log_level
        self.config_path = root / "cluster.toml"
        self._file_settings = (max_value_bytes, snapshot_threshold)
        self._cluster_keys: dict[str, str] = {}
        self._sections: dict[str, dict[str, str]] = {}
        self.config_path.write_text(self._toml(*self._file_settings))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: list[subprocess.Popen[bytes]] = []
        self.paused: set[int] = set()
        self.ctx = zmq.Context()
        self._clients: list[Client] = []
        self.curve: ClientCurve | None = None
        """Set by a test that secures the cluster: the harness's own requests and clients use it."""
        ProcCluster.live.add(self)

    def _new_spec(self) -> NodeSpec:
        node_id = max(self.specs, default=0) + 1
        spec = self.specs[node_id] = NodeSpec(
            id=node_id,
            raft_port=pick_port(self._taken),
            client_port=pick_port(self._taken),
            http_port=pick_port(self._taken),
            data_dir=self.root / f"node{node_id}",
            log_path=self.root / f"node{node_id}.log",
        )
        return spec

    def add_spec(self) -> NodeSpec:
        """Ports and dirs for one more node, written into the cluster file (for `member add`:
        the running nodes founded the cluster already, so the longer file does not change
        their membership; the new node starts with `start(id, join=True)`)."""
        spec = self._new_spec()
        self.config_path.write_text(self._toml(*self._file_settings))
        return spec

    def set_cluster_key(self, key: str, value: str) -> None:
        """Rewrite the cluster file with `key = value` in [cluster] (`value` is TOML source, so
        a test may write an invalid one); running nodes read it on SIGHUP (`reload`)."""
        self._cluster_keys[key] = value
        self.config_path.write_text(self._toml(*self._file_settings))

    def set_section_key(self, section: str, key: str, value: str) -> None:
        """Rewrite the cluster file with `key = value` (TOML source) in [section], such as
        [security] or [limits]; call before `start`, or then `reload` the running nodes."""
        self._sections.setdefault(section, {})[key] = value
        self.config_path.write_text(self._toml(*self._file_settings))

    def _toml(self, max_value_bytes: int, snapshot_threshold: int | None) -> str:
        low, high = ELECTION_TIMEOUT_MS
        keys = {
            "election_timeout_ms": f"[{low}, {high}]",
            "heartbeat_interval_ms": str(HEARTBEAT_MS),
            "max_value_bytes": str(max_value_bytes),
        }
        if snapshot_threshold is not None:
            keys["snapshot_threshold"] = str(snapshot_threshold)
        lines = ["[cluster]", *(f"{key} = {value}" for key, value in (keys | self._cluster_keys).items())]
        for section, section_keys in self._sections.items():
            lines += ["", f"[{section}]", *(f"{key} = {value}" for key, value in section_keys.items())]
        for spec in self.specs.values():
            lines += [
                "",
                "[[node]]",
                f"id = {spec.id}",
                f'raft = "{spec.raft}"',
                f'client = "{spec.client}"',
                f'http = "{HOST}:{spec.http_port}"',
                f'data_dir = "{spec.data_dir}"',
            ]
        return "\n".join(lines) + "\n"

    # ---- processes ----------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return sorted(self.specs)

    def node_env(self, node_id: int) -> dict[str, str]:
        """The environment node `node_id` runs with."""
        env = clean_env()
        if self.log_level is not None:
            env["RAFTKVD_LOG_LEVEL"] = self.log_level
        return env

    def node_command(self, node_id: int) -> list[str]:
        """The command before `run ...`: a hook, so subclasses can start nodes with test seams
        passed in (tests/chaos/node_main.py) without copying `start`."""
        return RAFTKVD

    def start(self, node_id: int, join: bool = False) -> subprocess.Popen[bytes]:
        """Start one node in the background (appending to its log file); `join`: as a node
        added to a running cluster (`raftkvd run --join`)."""
        assert not self.is_running(node_id), f"node {node_id} is already running"
        spec = self.specs[node_id]
        env = self.node_env(node_id)
        with open(spec.log_path, "ab") as log:
            log.write(f"==== {self.harness_name} harness: starting node {node_id} ====\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [*self.node_command(node_id), "run", "--config", str(self.config_path), "--id", str(node_id),
                 *(["--join"] if join else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            )
        self.procs[node_id] = proc
        self.started.append(proc)
        self.paused.discard(node_id)
        return proc

    def start_all(self, timeout: float = START_TIMEOUT_S) -> int:
        """Start every node and return the id of the elected leader, once every node's HTTP
        process (which starts alongside its node) accepts connections too."""
        for node_id in self.ids:
            self.start(node_id)
        leader = self.wait_for_leader(timeout)
        for node_id in self.ids:
            self.wait_http(node_id, timeout)
        return leader

    def wait_http(self, node_id: int, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the node's HTTP port accepts a connection."""

        def accepts() -> bool:
            try:
                with socket.create_connection((HOST, self.specs[node_id].http_port), timeout=1.0):
                    return True
            except OSError:
                return False

        wait_for(f"node {node_id}'s HTTP port", accepts, timeout, self.describe)

    def is_running(self, node_id: int) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def pid(self, node_id: int) -> int:
        return self.procs[node_id].pid

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the node; for SIGKILL also reap it, so it is really gone."""
        proc = self.procs[node_id]
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(timeout=STOP_TIMEOUT_S)
            self.paused.discard(node_id)

    def stop(self, node_id: int, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        proc = self.procs[node_id]
        if proc.poll() is None:
            if node_id in self.paused:
                self.resume(node_id)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"node {node_id} ignored SIGTERM for {timeout}s") from None
        return proc.returncode

    def reload(self, node_id: int) -> None:
        """SIGHUP: the node re-reads the cluster file."""
        self.kill(node_id, signal.SIGHUP)

    def pause(self, node_id: int) -> None:
        self.procs[node_id].send_signal(signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        self.procs[node_id].send_signal(signal.SIGCONT)
        self.paused.discard(node_id)

    def restart(self, node_id: int, sig: int = signal.SIGKILL) -> subprocess.Popen[bytes]:
        """Kill (default) or stop (sig=SIGTERM) the node, then start it again."""
        if sig == signal.SIGTERM:
            self.stop(node_id)
        else:
            self.kill(node_id, sig)
        return self.start(node_id)

    def close(self) -> None:
        """SIGKILL every process this cluster started, by pid, and reap it."""
        for client in self._clients:
            client.close()
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
        for proc in self.started:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # pragma: no cover - the kernel should not refuse
                pass
        self.ctx.destroy(linger=0)
        ProcCluster.live.discard(self)

    def __enter__(self) -> ProcCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- talking to nodes -----------------------------------------------------------------
    def endpoints(self, ids: Iterable[int] | None = None) -> list[str]:
        """host:port client endpoints of `ids` (default: every node)."""
        return [self.specs[i].endpoint for i in (self.ids if ids is None else ids)]

    def client(self, endpoints: list[str] | None = None, timeout: float = 5.0, **kw: Any) -> Client:
        """A raftctl.Client (closed at teardown) for `endpoints` (default: every node)."""
        client = Client(endpoints or self.endpoints(), timeout=timeout, **({"curve": self.curve} | kw))
        self._clients.append(client)
        return client

    def request(self, node_id: int, request: dict[str, Any], timeout: float = STATUS_TIMEOUT_S
                ) -> dict[str, Any] | None:
        """A raw client-protocol request to one node; None when it does not answer."""
        spec = self.specs[node_id]
        curve = None if self.curve is None else self.curve.for_endpoint(spec.client)
        return raw_request(self.ctx, spec.client, request, timeout, curve)

    def ok_reply(self, node_id: int, op: str, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
        """The node's `ok` reply to the argument-less request `op`; None when it is down, paused,
        silent or answers otherwise. One place for the checks every read-only probe needs."""
        if not self.is_running(node_id) or node_id in self.paused:
            return None
        reply = self.request(node_id, {"op": op}, timeout)
        if reply is None or reply.get("code") != "ok":
            return None
        return reply

    def status(self, node_id: int, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
        """The node's own status, or None when it is down, paused or silent."""
        reply = self.ok_reply(node_id, "status", timeout)
        return None if reply is None else reply["status"]

    def statuses(self) -> dict[int, dict[str, Any]]:
        found = {}
        for node_id in self.ids:
            status = self.status(node_id)
            if status is not None:
                found[node_id] = status
        return found

    def leader(self) -> int | None:
        """The live node that says it leads, in the highest term any live node knows."""
        statuses = self.statuses()
        if not statuses:
            return None
        top = max(s["term"] for s in statuses.values())
        leaders = [i for i, s in statuses.items() if s["role"] == "leader" and s["term"] == top]
        return leaders[0] if len(leaders) == 1 else None

    def wait_for_leader(self, timeout: float = START_TIMEOUT_S, exclude: Iterable[int] = ()) -> int:
        excluded = set(exclude)

        def probe() -> int | None:
            leader = self.leader()
            return leader if leader is not None and leader not in excluded else None

        return wait_for("a leader", probe, timeout, self.describe)

    def wait_applied(self, node_id: int, index: int, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until `node_id` has applied `index`; returns its status then."""

        def probe() -> dict[str, Any] | None:
            status = self.status(node_id)
            return status if status is not None and status["applied"] >= index else None

        return wait_for(f"node {node_id} to apply index {index}", probe, timeout, self.describe)

    def describe(self) -> str:
        """One line per node: process state and the Raft view it reports."""
        lines = []
        for node_id in self.ids:
            proc = self.procs.get(node_id)
            state = ("never started" if proc is None else
                     f"exited {proc.returncode}" if proc.poll() is not None else
                     "paused" if node_id in self.paused else f"pid {proc.pid}")
            status = self.status(node_id, timeout=0.2) if state.startswith("pid") else None
            view = ("" if status is None else
                    f" role={status['role']} term={status['term']} leader={status['leader_id']} "
                    f"commit={status['commit']} applied={status['applied']} keys={status['keys']}")
            lines.append(f"node {node_id}: {state}{view}")
        return "\n".join(lines)

    # ---- logs -------------------------------------------------------------------------------
    def log_tail(self, node_id: int, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.specs[node_id].log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = [f"---- node {i} ({self.specs[i].log_path}) ----\n{self.log_tail(i, lines)}"
                 for i in self.ids]
        return "\n".join(parts)


_LOADER = """
import sys, threading
from raftctl import Client
endpoints, prefix, start, stop, threads, value = sys.argv[1:7]
start, stop, threads = int(start), int(stop), int(threads)
failed = []
def work(n):
    with Client(endpoints.split(","), timeout=10.0) as kv:
        for i in range(start + n, stop, threads):
            kv.put(f"{prefix}{i:07d}", value)
ts = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
[t.start() for t in ts]
[t.join() for t in ts]
"""


def load_keys(cluster: ProcCluster, prefix: str, total: int, value: str, processes: int = 4,
              threads: int = 8, timeout: float = 600.0) -> None:
    """Write keys prefix0000000.. through the cluster from `processes` loader processes
    (each with `threads` clients): beyond one interpreter's GIL. Raises if any loader fails."""
    share = -(-total // processes)
    loaders = []
    try:
        for p in range(processes):
            start, stop = p * share, min(total, (p + 1) * share)
            loaders.append(subprocess.Popen(
                [sys.executable, "-c", _LOADER, ",".join(cluster.endpoints()), prefix, str(start),
                 str(stop), str(threads), value],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=clean_env(), text=True,
            ))
        deadline = time.monotonic() + timeout
        for loader in loaders:
            output, _ = loader.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert loader.returncode == 0, f"a loader failed:\n{output[-2000:]}"
    finally:
        for loader in loaders:
            if loader.poll() is None:
                loader.kill()
                loader.wait()
