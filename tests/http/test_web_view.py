"""GET /, the live web view (SPEC §5): static files shipped in the package and served by
every node, rendered by headless Chromium against a live three-node cluster. The pages are
also saved as screenshots under artifacts/ (web-view.png, web-view-unreachable.png)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser import MISSING_REASON, WINDOW_SIZE, BrowserPage, Chromium, Dom, Element, chromium_path
from cluster import HOST, ProcCluster, wait_for
from http_helpers import call, follower, http_child, http_port, put

from raftkvd.http.webview import CONTENT_SECURITY_POLICY, WEB_FILES

pytestmark = pytest.mark.timeout(240)

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
WRITES = 20
WRITER_MAX_WRITES = 50_000
WRITER_MAX_S = 120.0
SPARK_BASELINE_Y = 89.0
"""The y of a zero rate in the sparkline's 600x90 viewBox (app.js: SPARK_HEIGHT - 1)."""
STATIC_REF = re.compile(r'(?:src|href)="(/static/[^"]+)"')


@pytest.fixture
def chromium(tmp_path: Path) -> Chromium:
    executable = chromium_path()
    if executable is None:
        pytest.skip(MISSING_REASON)
    return Chromium(executable, tmp_path / "chromium-profile")


def view_url(cluster: ProcCluster, node_id: int) -> str:
    return f"http://{HOST}:{http_port(cluster, node_id)}/"


def node_rows(dom: Dom) -> dict[int, Element]:
    return {int(row.attrs["data-node-id"]): row for row in dom.nodes}


def render_when(page: BrowserPage, what: str, ready: Callable[[Dom], bool]) -> Dom:
    """The page's DOM once it shows `what`: the cluster may still be settling (an election,
    a stopped node's status timing out), and the page redraws every second."""
    last: list[Dom] = []

    def probe() -> Dom | None:
        dom = page.dom()
        last[:] = [dom]
        return dom if ready(dom) else None

    def describe() -> str:
        if not last:
            return "(nothing rendered)"
        dom = last[0]
        rows = {i: (sorted(r.classes), r.text) for i, r in node_rows(dom).items()}
        return f"summary={dom.text('summary')!r} rows={rows}"

    return wait_for(what, probe, 60.0, describe)


def test_the_web_view_is_served_from_the_package_and_loads_nothing_from_elsewhere(
    http_cluster: ProcCluster,
) -> None:
    port = http_port(http_cluster, follower(http_cluster))
    page = call(port, "GET", "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    html = page.body.decode()
    referenced = set(STATIC_REF.findall(html))
    assert referenced == {f"/static/{name}" for name in WEB_FILES if name != "index.html"}
    bodies = [html]
    for path in sorted(referenced):
        reply = call(port, "GET", path)
        assert reply.status == 200, path
        assert reply.headers["Content-Type"].split(";")[0] == WEB_FILES[path.rsplit("/", 1)[1]]
        bodies.append(reply.body.decode())
    for body in bodies:  # no CDN, no web font, no remote anything: works offline
        assert "http://" not in body and "https://" not in body and "url(" not in body


@pytest.mark.parametrize("path", ["/static/", "/static/nope.js", "/static/index.html",
                                  "/static/../server.py", "/static/%2e%2e/webview.py", "/index.html"])
def test_only_the_shipped_web_files_are_served(http_cluster: ProcCluster, path: str) -> None:
    reply = call(http_port(http_cluster, follower(http_cluster)), "GET", path)
    assert reply.status == 404 and reply.is_json_error(), reply.body


def test_the_web_view_shows_every_node_and_highlights_the_leader(
    http_cluster: ProcCluster, chromium: Chromium
) -> None:
    leader = http_cluster.wait_for_leader()
    viewer = follower(http_cluster)
    for n in range(WRITES):
        assert put(http_port(http_cluster, leader), f"web/{n}", "v").status == 200
    url = view_url(http_cluster, viewer)

    # The leader the page highlights must be the cluster's at that moment (a loaded machine
    # may re-elect while chromium starts; then the page must follow). Two polls at least: a
    # write rate is drawn from successive ones.
    with chromium.open(url) as page:
        dom = render_when(page, "all three nodes with the current leader and a rate", lambda d: (
            len(d.nodes) == 3
            and [i for i, r in node_rows(d).items() if "leader" in r.classes] == [http_cluster.leader()]
            and len(d.by_id["spark-line"].attrs["points"].split()) >= 2))
        assert page.screenshot(ARTIFACTS / "web-view.png") == WINDOW_SIZE

    rows = node_rows(dom)
    assert sorted(rows) == http_cluster.ids
    leader = next(i for i, row in rows.items() if "leader" in row.classes)
    assert rows[leader].attrs["data-role"] == "leader" and rows[leader].attrs["aria-current"] == "true"
    for node_id, row in rows.items():
        assert f"Node {node_id}" in row.text
        assert "unreachable" not in row.classes
        if node_id != leader:
            assert row.attrs["data-role"] == "follower" and "follower" in row.text
        assert f"node {leader}" in row.text  # the leader each node follows
    assert dom.body is not None and dom.body.attrs["data-state"] == "live"
    assert dom.text("stat-leader") == f"node {leader}"
    assert dom.text("stat-up") == "3 of 3"
    assert int(dom.text("stat-commit")) >= WRITES
    assert f"leader: node {leader}" in dom.text("summary")
    # a write rate was sampled from successive polls and drawn
    assert len(dom.by_id["spark-line"].attrs["points"].split()) >= 2
    assert dom.text("sparkline-title").startswith("Writes per second over the last")


@contextmanager
def writing(port: int) -> Iterator[list[int]]:
    """Writes through `port` in a thread until the block ends (bounded in count and time);
    yields a one-item list holding the count of successful writes so far."""
    done = threading.Event()
    written = [0]

    def work() -> None:
        deadline = time.monotonic() + WRITER_MAX_S
        for n in range(WRITER_MAX_WRITES):
            if done.is_set() or time.monotonic() > deadline:
                return
            if put(port, f"rate/{n}", "v").status == 200:
                written[0] += 1

    thread = threading.Thread(target=work, name="web-view-writer", daemon=True)
    thread.start()
    try:
        yield written
    finally:
        done.set()
        thread.join()


def test_the_write_rate_sparkline_rises_while_writes_arrive(
    http_cluster: ProcCluster, chromium: Chromium
) -> None:
    leader = http_cluster.wait_for_leader()
    url = view_url(http_cluster, follower(http_cluster))
    with writing(http_port(http_cluster, leader)) as written:
        wait_for("the first writes", lambda: written[0] > 0, 20.0)
        with chromium.open(url) as page:
            dom = render_when(page, "a write rate above zero, from two samples or more", lambda d: (
                float(d.text("spark-peak")) > 0
                and len(d.by_id["spark-line"].attrs["points"].split()) >= 2))
            assert page.screenshot(ARTIFACTS / "web-view-writing.png") == WINDOW_SIZE
    points = [tuple(map(float, p.split(","))) for p in dom.by_id["spark-line"].attrs["points"].split()]
    assert len(points) >= 2
    assert min(y for _, y in points) < SPARK_BASELINE_Y, "no point of the line rises above zero"


def test_the_web_view_shows_a_stopped_node_as_unreachable(
    make_cluster: Callable[..., ProcCluster], chromium: Chromium
) -> None:
    cluster = make_cluster()
    old_leader = cluster.start_all()
    assert cluster.stop(old_leader) == 0
    cluster.wait_for_leader(exclude=[old_leader])
    viewer = next(i for i in cluster.ids if i != old_leader)
    url = view_url(cluster, viewer)

    def shows_it(dom: Dom) -> bool:
        # Whichever survivor leads when the page renders (a loaded machine may re-elect).
        rows = node_rows(dom)
        leading = [i for i, row in rows.items() if "leader" in row.classes]
        return (old_leader in rows and "unreachable" in rows[old_leader].classes
                and leading == [cluster.leader()])

    with chromium.open(url) as page:
        dom = render_when(page, f"node {old_leader} unreachable, a survivor leading", shows_it)
        assert page.screenshot(ARTIFACTS / "web-view-unreachable.png") == WINDOW_SIZE

    rows = node_rows(dom)
    new_leader = next(i for i, row in rows.items() if "leader" in row.classes)
    assert new_leader != old_leader
    assert sorted(rows) == cluster.ids, "an unreachable node stays listed"
    gone = rows[old_leader]
    assert gone.attrs["data-role"] == "unreachable" and "unreachable" in gone.text
    assert "leader" not in gone.classes
    assert [i for i, row in rows.items() if "leader" in row.classes] == [new_leader]
    assert all("unreachable" not in rows[i].classes for i in cluster.ids if i != old_leader)
    assert dom.body is not None and dom.body.attrs["data-state"] == "degraded"
    assert "1 unreachable" in dom.text("summary")
    assert dom.text("stat-up") == "2 of 3"



CHANGE_ROWS = ("[...document.querySelectorAll('#change-rows tr.change')].map(row => "
               "[Number(row.dataset.revision), ...[...row.children].slice(1).map(c => c.textContent)])")


def test_the_web_view_streams_the_latest_changes_and_its_eventsource_resumes(
    http_cluster: ProcCluster, chromium: Chromium
) -> None:
    """The page's EventSource on /watch shows each change, newest first; when its stream
    drops (the node's HTTP process is killed, and restarted by the node), the browser comes
    back with Last-Event-ID and the changes made meanwhile appear with nothing missing."""
    client = http_cluster.client()
    viewer = follower(http_cluster)
    with chromium.open(view_url(http_cluster, viewer)) as page:
        page.wait_for("the change stream to open", "document.getElementById('changes-state')"
                      "?.textContent.startsWith('Streaming')", 30)
        first = [client.put(f"view/{n}", f"value {n}") for n in range(4)]
        assert client.delete("view/0")
        first.append(client.revision())
        rows = page.wait_for("five changes", f"(rows => rows.length >= 5 && rows)({CHANGE_ROWS})", 30)
        puts = [[rev, "put", f"view/{n}", f"value {n}"] for n, rev in enumerate(first[:4])]
        assert rows == [[first[4], "delete", "view/0", "–"], *reversed(puts)]
        http = http_child(http_cluster, viewer)
        assert http is not None
        os.kill(http, signal.SIGKILL)  # our node's child: the stream drops
        later = [client.put(f"view/later{n}", "v") for n in range(3)]
        rows = page.wait_for("the changes made while the stream was down",
                             f"(rows => rows.length >= 8 && rows)({CHANGE_ROWS})", 60)
    assert [row[0] for row in rows] == sorted(first + later, reverse=True)
