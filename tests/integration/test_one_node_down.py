"""One node down must not break the CLI: with any one node killed (kill -9, each in turn, the
first endpoint of the list included), every raftctl command an operator types answers, exit 0,
within COMMAND_BUDGET_S, and the dead node is listed as unreachable.

Each command runs as the installed script with all three endpoints, as a user's would: the
client cannot know which node is dead, and asks every node at once while it knows no leader.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest
from cluster import RAFTCTL, ProcCluster, clean_env, interruptible, run_cli, wait_for

COMMAND_BUDGET_S = 2.0
"""The issue's bound; all-up timings are ~0.15 s, mostly the interpreter starting."""
WATCH_S = 3.0


def raftctl(cluster: ProcCluster, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints()), *args)
    return result, time.monotonic() - started


def commands(live: int) -> list[list[str]]:
    return [
        ["status"], ["-o", "json", "status"], ["member", "list"], ["-o", "json", "member", "list"],
        ["put", "k", "v"], ["get", "k"], ["list"], ["cas", "k", "v", "w"], ["del", "k"],
        ["snapshot", str(live)], ["leader", "transfer"],
    ]


@pytest.mark.parametrize("victim", [1, 2, 3])
def test_every_command_answers_within_2s_with_one_node_down(cluster: ProcCluster, victim: int) -> None:
    cluster.kill(victim)
    cluster.wait_for_leader(exclude=[victim])
    live = next(i for i in cluster.ids if i != victim)
    timings = {}
    for args in commands(live):
        result, seconds = raftctl(cluster, *args)
        timings[" ".join(args)] = round(seconds, 2)
        assert result.returncode == 0, f"{args}: exit {result.returncode}: {result.stderr}"
        assert seconds < COMMAND_BUDGET_S, f"{args} took {seconds:.2f}s with node {victim} down"
    print(f"\nnode {victim} down: {timings}")

    status, _ = raftctl(cluster, "-o", "json", "status")
    reachable = {node["id"]: node["reachable"] for node in json.loads(status.stdout)}
    assert reachable == {i: i != victim for i in cluster.ids}
    members, _ = raftctl(cluster, "-o", "json", "member", "list")
    dead = next(m for m in json.loads(members.stdout) if m["id"] == victim)
    assert not dead["reachable"] and dead["raft"] == cluster.specs[victim].raft, "its addresses stay known"
    table, _ = raftctl(cluster, "status")
    assert "unreachable" in table.stdout and "leader" in table.stdout


def test_leader_transfer_names_what_is_wrong_with_its_target(cluster: ProcCluster) -> None:
    leader = cluster.wait_for_leader()
    result, _ = raftctl(cluster, "leader", "transfer", "--to", str(leader))
    assert result.returncode == 0 and result.stdout.strip() == f"leader is node {leader}", result.stderr
    victim = next(i for i in cluster.ids if i != leader)
    cluster.kill(victim)
    wait_for("the leader to notice", lambda: raftctl(cluster, "leader", "transfer", "--to", str(victim))[0]
             .returncode == 3, 10.0)
    result, seconds = raftctl(cluster, "leader", "transfer", "--to", str(victim))
    assert result.returncode == 3 and seconds < COMMAND_BUDGET_S
    assert f"node {victim} is unreachable" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_status_watch_shows_the_live_nodes_while_one_is_down(cluster: ProcCluster) -> None:
    """`status --watch` once drew every node unreachable when one was down."""
    victim = cluster.ids[0]  # the first endpoint
    cluster.kill(victim)
    cluster.wait_for_leader(exclude=[victim])
    primary, secondary = pty.openpty()
    env = {**clean_env(), "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen([*RAFTCTL, "-e", ",".join(cluster.endpoints()), "status", "--watch"],
                            stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env,
                            preexec_fn=interruptible)
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + WATCH_S
    try:
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 0.1)[0]:
                try:
                    screen += os.read(primary, 65536)
                except OSError:
                    break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) in (0, 130)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    text = screen.decode(errors="replace")
    assert "leader" in text and "follower" in text, text[-2000:]
    assert text.count("unreachable") >= 1
