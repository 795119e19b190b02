"""`raftkvd cluster start|stop|status` (SPEC §3): start runs every node of the file in the
background and returns once every node serves and a leader is elected (else it names the nodes
that did not start, and fails); stop ends them by pid, leaving none behind."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import HOST, RAFTCTL, RAFTKVD, ProcCluster, run_cli
from curve_keys import ops_key, secure

pytestmark = pytest.mark.timeout(120)

PID_FILE = "raftkvd.pid"


def pid_state(pid: int) -> str | None:
    """The process state letter (R, S, Z, ...), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def running(pid: int, config: Path) -> bool:
    """A live (not zombie) raftkvd process of *this* cluster file: a recycled pid is not ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return pid_state(pid) not in (None, "Z") and str(config).encode() in cmdline


@pytest.fixture
def local(make_cluster: Callable[..., ProcCluster]) -> Iterator[ProcCluster]:
    """A cluster file with free ports; the test drives it only through `raftkvd cluster`.
    Whatever `cluster start` left running is SIGKILLed by pid at teardown."""
    spec = make_cluster()
    yield spec
    for node in spec.specs.values():
        try:
            pid = int((node.data_dir / PID_FILE).read_text())
        except (OSError, ValueError):
            continue
        if running(pid, spec.config_path):
            os.kill(pid, signal.SIGKILL)


def pids(spec: ProcCluster) -> dict[int, int]:
    found = {}
    for node_id, node in spec.specs.items():
        path = node.data_dir / PID_FILE
        if path.exists():
            found[node_id] = int(path.read_text())
    return found


def test_cluster_start_waits_for_a_leader_and_stop_leaves_no_process(local: ProcCluster) -> None:
    config = str(local.config_path)
    started = run_cli(RAFTKVD, "cluster", "start", "--config", config, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    ready = re.search(r"cluster ready: every node serves, leader is node (\d+)", started.stdout)
    assert ready, started.stdout
    # start returned only once a leader existed: one status round finds it at once
    reply = local.request(int(ready.group(1)), {"op": "status"}, timeout=2.0)
    assert reply is not None and reply["status"]["role"] == "leader", reply

    running_pids = pids(local)
    assert sorted(running_pids) == local.ids
    assert all(running(pid, local.config_path) for pid in running_pids.values())

    status = run_cli(RAFTKVD, "cluster", "status", "--config", config)
    assert status.returncode == 0, status.stderr
    for node_id, pid in running_pids.items():
        assert f"node {node_id}: pid {pid}" in status.stdout, status.stdout

    again = run_cli(RAFTKVD, "cluster", "start", "--config", config, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == len(local.ids), again.stdout
    assert pids(local) == running_pids, "a second start must not start more processes"

    put = run_cli(RAFTCTL, "--config", config, "put", "local", "cluster")
    assert put.returncode == 0, put.stderr
    assert run_cli(RAFTCTL, "--config", config, "get", "local").stdout == "cluster\n"

    stopped = run_cli(RAFTKVD, "cluster", "stop", "--config", config, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    for node_id, pid in running_pids.items():
        assert f"node {node_id}: stopped (pid {pid})" in stopped.stdout, stopped.stdout
        assert not running(pid, local.config_path), f"node {node_id} (pid {pid}) is still running"
    assert pids(local) == {}, "stop removes the pid files"

    after = run_cli(RAFTKVD, "cluster", "status", "--config", config)
    assert after.returncode == 0
    assert after.stdout.count("not running") == len(local.ids), after.stdout
    for node_id in local.ids:  # a clean stop (SIGTERM) logs the node's exit
        log = (local.specs[node_id].data_dir / "raftkvd.log").read_text()
        assert "event=stopped" in log, f"node {node_id} did not stop cleanly:\n{log[-2000:]}"


def test_cluster_start_with_a_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text("[cluster]\nheartbeat_interval_ms = -1\n")
    result = run_cli(RAFTKVD, "cluster", "start", "--config", str(path))
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "cluster.heartbeat_interval_ms" in lines[0], result.stderr


def test_cluster_start_names_a_node_that_cannot_bind_and_fails(local: ProcCluster) -> None:
    """Seen by a user: `cluster ready` while node 2 died of "Address already in use". Start
    succeeds only when every node serves; otherwise it names each node and its log line."""
    config = str(local.config_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((HOST, local.specs[2].raft_port))
        squatter.listen()
        started = run_cli(RAFTKVD, "cluster", "start", "--config", config, timeout=60)
    assert started.returncode != 0, started.stdout
    assert "cluster ready" not in started.stdout
    problems = [line for line in started.stderr.splitlines() if line.startswith("node ")]
    assert len(problems) == 1 and problems[0].startswith("node 2: exited"), started.stderr
    assert "Address already in use" in problems[0] and local.specs[2].raft in problems[0], started.stderr
    assert "1 of 3 node(s) did not start" in started.stderr
    stopped = run_cli(RAFTKVD, "cluster", "stop", "--config", config, timeout=60)
    assert stopped.returncode == 0 and not any(running(p, local.config_path) for p in pids(local).values())


def test_a_secured_cluster_starts_and_reports_its_roles(local: ProcCluster) -> None:
    """With CurveZMQ on, `cluster start|status` ask the nodes as one of them (plain sockets
    would never get an answer: start would time out on a healthy cluster)."""
    curve_dir = secure(local)
    config = str(local.config_path)
    started = run_cli(RAFTKVD, "cluster", "start", "--config", config, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "cluster ready" in started.stdout, started.stdout
    status = run_cli(RAFTKVD, "cluster", "status", "--config", config)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(", leader, term ") == 1, status.stdout
    assert "unreachable" not in status.stdout, status.stdout
    put = run_cli(RAFTCTL, "--config", config, "--key", str(ops_key(curve_dir)), "put", "k", "v")
    assert put.returncode == 0, put.stderr
    stopped = run_cli(RAFTKVD, "cluster", "stop", "--config", config, timeout=60)
    assert stopped.returncode == 0 and not any(running(p, local.config_path) for p in pids(local).values())


def test_a_secured_cluster_without_node_secrets_is_one_line_and_still_stops(local: ProcCluster) -> None:
    curve_dir = secure(local)
    config = str(local.config_path)
    assert run_cli(RAFTKVD, "cluster", "start", "--config", config, timeout=60).returncode == 0
    hidden = curve_dir.with_name("hidden")
    curve_dir.rename(hidden)
    try:
        status = run_cli(RAFTKVD, "cluster", "status", "--config", config)
        assert status.returncode == 2, (status.returncode, status.stdout, status.stderr)
        lines = status.stderr.splitlines()
        assert len(lines) == 1 and "security.curve_dir: no usable node secret" in lines[0], status.stderr
        assert "Traceback" not in status.stderr
        stopped = run_cli(RAFTKVD, "cluster", "stop", "--config", config, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert not any(running(p, local.config_path) for p in pids(local).values())
    finally:
        hidden.rename(curve_dir)
