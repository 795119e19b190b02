"""The development cluster behind `raftkvd cluster start|stop|status`: background processes
tracked by pid files in each node's data dir, stopped only by those pids."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import zmq

from raftkv.curve import KeyFileError

from .net.nodekeys import NodeKeys
from .net.peerstatus import fetch_statuses
from .settings import ClusterSettings, NodeSettings

PID_FILE = "raftkvd.pid"
LOG_FILE = "raftkvd.log"
STOP_TIMEOUT_S = 10.0
POLL_S = 0.1


def _http_accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """True when `pid` is a running raftkvd process (a recycled pid is not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if not cmdline:  # a process in the middle of its exec may show none for a moment
            time.sleep(POLL_S)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return b"raftkvd" in cmdline and not zombie


class LocalClusterError(Exception):
    """The cluster file describes a cluster this host cannot manage; one line for the user."""


def status_keys(cluster: ClusterSettings) -> NodeKeys | None:
    """With CurveZMQ on, the status fetches speak as a node of this host (a local cluster
    keeps every node's secret in curve_dir; the client endpoints admit member keys)."""
    curve_dir = cluster.security.curve_dir
    if curve_dir is None:
        return None
    problems = []
    for node in cluster.nodes:
        try:
            return NodeKeys(curve_dir, node.id)
        except KeyFileError as exc:
            problems.append(str(exc))
    raise LocalClusterError(f"security.curve_dir: no usable node secret ({problems[0]})")


class LocalCluster:
    def __init__(self, cluster: ClusterSettings, config_path: Path, keys: NodeKeys | None = None) -> None:
        """`keys` (status_keys): what the status fetches speak CurveZMQ with, when it is on."""
        self.cluster = cluster
        self.config_path = config_path
        self._keys = keys

    def _pid(self, node: NodeSettings) -> int | None:
        try:
            pid = int((node.data_dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> Iterator[str]:
        for node in self.cluster.nodes:
            pid = self._pid(node)
            if pid is not None:
                yield f"node {node.id}: already running (pid {pid})"
                continue
            node.data_dir.mkdir(parents=True, exist_ok=True)
            with open(node.data_dir / LOG_FILE, "ab") as logfile:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "raftkvd", "run", "--config", str(self.config_path),
                     "--id", str(node.id)],
                    stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                    start_new_session=True,
                )
            (node.data_dir / PID_FILE).write_text(f"{proc.pid}\n")
            yield f"node {node.id}: started (pid {proc.pid}, log {node.data_dir / LOG_FILE})"

    def _last_log_line(self, node: NodeSettings) -> str:
        log_file = node.data_dir / LOG_FILE
        try:
            return log_file.read_text(errors="replace").strip().splitlines()[-1]
        except (OSError, IndexError):
            return "no log"

    def statuses(self, timeout: float = 1.0) -> list[dict]:
        members = {node.id: {"client": node.client, "raft": node.raft, "http": node.http}
                   for node in self.cluster.nodes}
        dial = None if self._keys is None else self._keys.dial
        return fetch_statuses(zmq.Context.instance(), members, timeout, dial)

    def wait_until_serving(self, timeout: float) -> tuple[int | None, list[str]]:
        """Wait until every node answers on its client and HTTP addresses and a leader is
        elected. Returns the leader (None if none) and one line per node that is not serving:
        a process that exited is named at once, with the last line of its log."""
        deadline = time.monotonic() + timeout
        while True:
            dead = {node.id: f"node {node.id}: exited ({node.data_dir / LOG_FILE}): "
                             f"{self._last_log_line(node)}"
                    for node in self.cluster.nodes if self._pid(node) is None}
            statuses = {s["id"]: s for s in self.statuses(timeout=0.5)}
            leader = next((i for i, s in statuses.items() if s.get("role") == "leader"), None)
            silent = {node.id: f"node {node.id}: running but not serving on {node.client} and "
                               f"{node.http} (see {node.data_dir / LOG_FILE})"
                      for node in self.cluster.nodes
                      if node.id not in dead and not (statuses[node.id].get("reachable")
                                                      and _http_accepts(node.http))}
            if dead or (leader is not None and not silent) or time.monotonic() >= deadline:
                problems = {**silent, **dead}
                return leader, [problems[i] for i in sorted(problems)]
            time.sleep(POLL_S)

    def stop(self) -> Iterator[str]:
        pids = {node.id: self._pid(node) for node in self.cluster.nodes}
        for node_id, pid in pids.items():
            if pid is None:
                yield f"node {node_id}: not running"
            else:
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in self.cluster.nodes:
            pid = pids[node.id]
            if pid is None:
                continue
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                yield f"node {node.id}: killed (pid {pid}) after {STOP_TIMEOUT_S:.0f}s"
            else:
                yield f"node {node.id}: stopped (pid {pid})"
            (node.data_dir / PID_FILE).unlink(missing_ok=True)

    def status_lines(self) -> Iterator[str]:
        statuses = {s["id"]: s for s in self.statuses()}
        for node in self.cluster.nodes:
            pid = self._pid(node)
            status = statuses.get(node.id, {})
            process = f"pid {pid}" if pid else "not running"
            role = status.get("role", "unreachable")
            term = status.get("term", "-")
            yield f"node {node.id}: {process}, {role}, term {term}, client {node.client}"
