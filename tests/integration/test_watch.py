"""Watches on real processes (SPEC §4 `watch`): served by a follower from its own state, in
revision order with nothing missing or repeated while the leader is killed and restarted,
resumed on another node when the watcher's own node dies, "compacted" below the history,
and `raftctl watch` printing lines until Ctrl-C (exit 0)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from typing import Any

import pytest
from cluster import RAFTCTL, ProcCluster, clean_env, interruptible, run_cli, wait_for

from raftctl import Client
from raftctl.errors import Compacted

pytestmark = pytest.mark.timeout(180)
WAIT_S = 1.0
"""The watch's long-poll wait: short, so that a watcher thread notices its stop soon."""


class Watcher(threading.Thread):
    """Collects a Client.watch's events until told to stop (or its deadline)."""

    def __init__(self, client: Client, endpoint: str, **watch: Any) -> None:
        super().__init__(daemon=True)
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.until = float("inf")
        """Stop once an event of this revision or later has arrived."""
        self._iterator = client.watch(endpoint=endpoint, wait=WAIT_S, **watch)
        self._deadline = time.monotonic() + 150

    def run(self) -> None:
        try:
            for event in self._iterator:
                self.events.append(event)
                if event["revision"] >= self.until or time.monotonic() > self._deadline:
                    return
        except BaseException as error:  # reported by the test
            self.error = error

    def finish(self, revision: int) -> list[dict[str, Any]]:
        self.until = revision
        wait_for(f"the watcher to see revision {revision}",
                 lambda: self.error is not None or (self.events and self.events[-1]["revision"] >= revision)
                 or not self.is_alive(), 60)
        assert self.error is None, f"the watch failed: {self.error!r}"
        return self.events


def check_in_order(events: list[dict[str, Any]], acknowledged: dict[int, dict[str, Any]],
                   first: int, last: int) -> None:
    """Revisions first..last, each once, in order; each acknowledged write as written."""
    assert [e["revision"] for e in events] == list(range(first, last + 1))
    for event in events:
        expected = acknowledged.get(event["revision"])
        if expected is not None:
            assert event == expected


def write(client: Client, i: int, acknowledged: dict[int, dict[str, Any]]) -> None:
    """Op i: a put, or every fifth a delete of the key put just before it."""
    if i % 5 == 4:
        assert client.delete(f"w/k{i - 1}"), "the key was put just before"
        return
    key, value = f"w/k{i}", f"v{i}"
    revision = client.put(key, value)
    acknowledged[revision] = {"type": "put", "key": key, "value": value, "revision": revision}


def test_a_follower_serves_every_change_in_order_while_the_leader_is_killed_and_restarted(
        cluster: ProcCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != leader)
    start = cluster.client().revision() + 1
    watcher = Watcher(cluster.client(), cluster.specs[follower].endpoint, prefix="w/", rev=start)
    watcher.start()
    writers = [cluster.client(cluster.endpoints([i, *(j for j in cluster.ids if j != i)]))
               for i in cluster.ids]  # writes enter through every node
    acknowledged: dict[int, dict[str, Any]] = {}
    for i in range(1000):
        if i == 300:
            cluster.kill(leader)
        if i == 600:
            cluster.start(leader)
        write(writers[i % 3], i, acknowledged)
    last = cluster.client().revision()
    events = watcher.finish(last)
    check_in_order(events, acknowledged, start, last)
    assert len(events) == 1000  # 800 puts, 200 deletes: every one a revision
    assert sum(e["type"] == "delete" for e in events) == 200


def test_a_watch_resumes_on_another_node_when_its_node_is_killed(cluster: ProcCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != leader)
    writer = cluster.client()
    start = writer.revision() + 1
    watcher = Watcher(cluster.client(), cluster.specs[follower].endpoint, prefix="w/", rev=start)
    watcher.start()
    acknowledged: dict[int, dict[str, Any]] = {}
    for i in range(100):
        write(writer, i, acknowledged)
    wait_for("the watcher to be halfway", lambda: len(watcher.events) >= 50, 30)
    cluster.kill(follower)
    for i in range(100, 200):
        write(writer, i, acknowledged)
    last = writer.revision()
    check_in_order(watcher.finish(last), acknowledged, start, last)


def test_a_revision_older_than_the_history_is_compacted(make_cluster) -> None:
    cluster: ProcCluster = make_cluster()
    cluster.set_cluster_key("watch_history", "20")
    cluster.start_all()
    client = cluster.client()
    for i in range(50):
        client.put(f"c/{i}", "v")
    last = client.revision()
    with pytest.raises(Compacted) as caught:
        next(client.watch(prefix="c/", rev=1))
    assert caught.value.oldest == last - 19
    assert next(client.watch(prefix="c/", rev=last - 19))["revision"] == last - 19
    result = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints()), "watch", "--prefix", "c/",
                     "--rev", "1")
    assert result.returncode == 4
    assert result.stderr.strip() == (f"revision 1 is compacted: the oldest revision held is "
                                     f"{last - 19}")


@pytest.mark.parametrize("output", ["plain", "json"])
def test_raftctl_watch_prints_each_change_and_exits_0_on_ctrl_c(cluster: ProcCluster,
                                                              output: str) -> None:
    client = cluster.client()
    watch = subprocess.Popen(
        [*RAFTCTL, "-e", ",".join(cluster.endpoints()), "-o", output, "watch", "cfg/a"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
        preexec_fn=interruptible)
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")),
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while len(lines) < 3 and time.monotonic() < deadline:  # it may start between the two
            client.put("cfg/a", "one\ntwo")
            client.delete("cfg/a")
            time.sleep(0.5)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(10) == 0, watch.stderr.read()
        reader.join(5)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    if output == "plain":
        first = lines.index("PUT cfg/a one\\ntwo\n")
        assert lines[first + 1] == "DELETE cfg/a\n"
    else:
        events = [json.loads(line) for line in lines]
        at = next(i for i, e in enumerate(events) if e["type"] == "put")
        first, second = events[at], events[at + 1]
        assert (first["type"], first["value"], second["type"]) == ("put", "one\ntwo", "delete")
        assert second["revision"] == first["revision"] + 1
