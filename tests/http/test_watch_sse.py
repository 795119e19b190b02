"""GET /watch (SPEC §5): Server-Sent Events from any node's history, on real processes: read
by curl -N, resumed from Last-Event-ID, 410 below the history, heartbeats, bad queries
refused, and a client that stops reading cut without slowing the writes down."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cluster import HOST, ProcCluster, wait_for
from http_helpers import call, follower, http_port
from sse_client import open_stream

from raftctl import Client
from raftkvd.http.sse import HEARTBEAT_S

pytestmark = pytest.mark.timeout(180)


def put_all(client: Client, prefix: str, count: int) -> dict[int, dict[str, Any]]:
    """`count` puts (every fourth one a delete of the key put before it): revision -> event."""
    written: dict[int, dict[str, Any]] = {}
    for i in range(count):
        if i % 4 == 3:
            key = f"{prefix}{i - 1}"
            assert client.delete(key)
            written[client.revision()] = {"type": "delete", "key": key, "value": None}
        else:
            key, value = f"{prefix}{i}", f"v{i}"
            written[client.put(key, value)] = {"type": "put", "key": key, "value": value}
    return {rev: {**event, "revision": rev} for rev, event in written.items()}


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_reads_the_stream_of_a_follower_with_ids_and_heartbeats(
        http_cluster: ProcCluster) -> None:
    client = http_cluster.client()
    port = http_port(http_cluster, follower(http_cluster))
    start = client.revision() + 1
    curl = subprocess.Popen(
        ["curl", "-sS", "-N", "-i", "--max-time", str(HEARTBEAT_S + 3),
         f"http://{HOST}:{port}/watch?prefix=curl/&rev={start}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        written = put_all(client, "curl/", 8)
        client.put("other/key", "not watched")
        raw, _ = curl.communicate(timeout=HEARTBEAT_S + 20)
    finally:
        if curl.poll() is None:
            curl.kill()
            curl.wait()
    out = raw.decode()
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and "Content-Type: text/event-stream" in head, out
    frames = [frame for frame in body.split("\n\n") if frame.strip()]
    events = [frame for frame in frames if frame.startswith("id: ")]
    ids = [int(frame.split("\n")[0].removeprefix("id: ")) for frame in events]
    assert ids == sorted(written), body
    assert ": heartbeat" in frames, "no heartbeat comment while nothing changed"
    assert "other/key" not in body


def test_a_stream_resumes_after_its_last_event_id_and_starts_after_now_without_one(
        http_cluster: ProcCluster) -> None:
    client = http_cluster.client()
    port = http_port(http_cluster, follower(http_cluster))
    written = put_all(client, "resume/", 12)
    revisions = sorted(written)
    seen = revisions[4]
    with open_stream(port, "prefix=resume/", {"Last-Event-ID": str(seen)}) as stream:
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        got = stream.events(len(revisions) - 5, 20)
    assert [int(e.id or 0) for e in got] == revisions[5:]
    assert [e.data for e in got] == [written[r] for r in revisions[5:]]
    # No rev, no Last-Event-ID: from after the cluster's current revision (a linearizable
    # start), so nothing already acknowledged comes again.
    with open_stream(port, "prefix=resume/") as stream:  # its start is fixed before its head
        later = client.put("resume/later", "x")
        event = stream.next_event(20)
    assert event is not None and event.data["revision"] == later


def test_after_its_node_is_killed_a_stream_resumes_on_another_node_from_its_last_id(
        make_cluster: Callable[..., ProcCluster]) -> None:
    cluster = make_cluster()
    leader = cluster.start_all()
    first, second = (i for i in cluster.ids if i != leader)
    client = cluster.client()
    start = client.revision() + 1
    written = put_all(client, "moved/", 20)
    with open_stream(http_port(cluster, first), f"prefix=moved/&rev={start}") as stream:
        seen = stream.events(10, 20)
        cluster.kill(first)  # its HTTP process goes with it: the stream ends after what it sent
        seen += stream.events(100, 10)
        assert stream.ended
    written.update(put_all(client, "moved/more", 8))
    last_id = seen[-1].id
    assert last_id is not None
    with open_stream(http_port(cluster, second), "prefix=moved/", {"Last-Event-ID": last_id}) as stream:
        rest = stream.events(len(written) - len(seen), 20)
    revisions = [int(e.id or 0) for e in seen + rest]
    assert revisions == sorted(written)
    assert [e.data for e in seen + rest] == [written[r] for r in sorted(written)]


def test_a_key_watch_sees_only_that_key(http_cluster: ProcCluster) -> None:
    client = http_cluster.client()
    start = client.revision() + 1
    client.put("only/a", "1")
    client.put("only/ab", "2")
    client.put("only/a", "3")
    port = http_port(http_cluster, http_cluster.wait_for_leader())
    with open_stream(port, f"key=only/a&rev={start}") as stream:
        got = stream.events(2, 20)
    assert [(e.data["key"], e.data["value"]) for e in got] == [("only/a", "1"), ("only/a", "3")]


@pytest.mark.parametrize("query, headers, fragment", [
    ("", {}, "key=K or prefix=P"),
    ("key=a&prefix=b", {}, "key=K or prefix=P"),
    ("key=", {}, "key must be 1 to 511 bytes"),
    ("prefix=" + "x" * 512, {}, "prefix must be 0 to 511 bytes"),
    ("key=a&rev=0", {}, "rev must be an integer from 1"),
    ("key=a&rev=-1", {}, "rev must be an integer from 1"),
    ("key=a&rev=abc", {}, "rev must be an integer from 1"),
    ("key=a&rev=" + "9" * 30, {}, "rev must be an integer from 1"),
    ("key=a", {"Last-Event-ID": "x1"}, "Last-Event-ID must be an integer"),
    ("key=%ff", {}, "not valid percent-encoded UTF-8"),
])
def test_bad_watch_requests_get_a_clear_400(http_cluster: ProcCluster, query: str,
                                            headers: dict[str, str], fragment: str) -> None:
    reply = call(http_port(http_cluster, 1), "GET", f"/watch?{query}", headers=headers)
    assert reply.status == 400 and reply.is_json_error(), reply.body
    assert fragment in reply.json()["error"]


def test_a_start_below_the_history_is_410_with_the_oldest_revision(
        make_cluster: Callable[..., ProcCluster]) -> None:
    cluster = make_cluster()
    cluster.set_cluster_key("watch_history", "20")
    cluster.start_all()
    client = cluster.client()
    for i in range(40):
        client.put(f"gone/{i}", "v")
    last = client.revision()
    viewer = follower(cluster)
    port = http_port(cluster, viewer)
    wait_for("the follower to apply everything",
             lambda: (cluster.status(viewer) or {}).get("applied", 0) >= last, 20)
    for query, headers in (("prefix=gone/&rev=1", {}), ("prefix=gone/", {"Last-Event-ID": "3"})):
        reply = call(port, "GET", f"/watch?{query}", headers=headers)
        assert reply.status == 410 and reply.is_json_error(), reply.body
        assert reply.json()["oldest"] == last - 19
        assert "compacted" in reply.json()["error"]
    with open_stream(port, f"prefix=gone/&rev={last - 19}") as stream:
        assert stream.status == 200
        first = stream.next_event(20)
    assert first is not None and first.data["revision"] == last - 19


class Writer(threading.Thread):
    """Puts of 1 KiB values as fast as one client goes, counting them per second (bounded in
    count and time)."""

    def __init__(self, client: Client, seconds: float) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.seconds = seconds
        self.stamps: list[float] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        for i in range(200_000):
            if time.monotonic() > deadline:
                return
            self.client.put(f"slow/{i % 500}", "x" * 1024)
            self.stamps.append(time.monotonic())

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.stamps) / (end - start)


def test_a_client_that_reads_nothing_for_30s_is_cut_and_the_writes_go_on(
        http_cluster: ProcCluster) -> None:
    client = http_cluster.client()
    port = http_port(http_cluster, follower(http_cluster))
    writer = Writer(http_cluster.client(), 45.0)
    writer.start()
    wait_for("5 s of writes with no watcher", lambda: len(writer.stamps) > 1 and
             writer.stamps[-1] - writer.stamps[0] >= 5.0, 30)
    baseline = writer.rate(writer.stamps[0], writer.stamps[-1])
    start = client.revision() + 1
    with open_stream(port, f"prefix=slow/&rev={start}", receive_buffer=4096) as stream:
        began = time.monotonic()
        time.sleep(30.0)  # the test is a client that reads nothing for 30 s
        stalled_until = time.monotonic()
        metrics = call(port, "GET", "/metrics").body.decode()
        events = stream.events(200_000, 20)
    writer.join()
    assert "raftkvd_http_watch_cut_total 1.0" in metrics, "the stream was not cut"
    assert events, "nothing was streamed before the cut"
    *changes, last = events
    assert last.name == "cut", last
    revisions = [e.data["revision"] for e in changes]
    assert revisions == list(range(start, start + len(revisions))), "a gap or a repeat"
    assert last.data["resume"] == revisions[-1] + 1
    assert last.data["error"] == f"too slow, resume from revision {last.data['resume']}"
    # The writes went on at their pace while the stream was stalled and then cut (a loose
    # bound: the numbers themselves are the benchmark's, tests/bench/watchers.py).
    stalled = writer.rate(began, stalled_until)
    print(f"writes/s: {baseline:.0f} with no watcher, {stalled:.0f} while the reader stalled")
    assert stalled > 0.5 * baseline
