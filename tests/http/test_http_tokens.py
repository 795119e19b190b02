"""Bearer tokens on a real node (SPEC §8): no token is 401, a role too low 403, open paths
and the web view's files need none; a token added to the file works after SIGHUP and not
before; a broken file on reload keeps the tokens in use; a missing one stops the start
(exit 2); no token appears in any log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import MISSING_REASON, Chromium, chromium_path
from cluster import HOST, RAFTKVD, ProcCluster, run_cli, wait_for
from http_helpers import Reply, call, http_port, wait_status
from sse_client import open_stream
from tls_helpers import bearer

pytestmark = pytest.mark.timeout(120)

RELOAD_TIMEOUT_S = 10.0
USED: list[str] = []
"""Every token this module made: none may reach a log (the last test)."""


def add_token(tokens_file: Path, name: str, role: str) -> str:
    done = run_cli(RAFTKVD, "token", "add", name, "--role", role, "--tokens-file", str(tokens_file))
    assert done.returncode == 0, done.stderr
    USED.append(done.stdout.strip())
    return USED[-1]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    root = tmp_path_factory.mktemp("tokens")
    cluster = ProcCluster(root, size=1)
    tokens_file = root / "tokens"
    for role in ("read", "write", "admin"):
        add_token(tokens_file, role, role)
    cluster.set_section_key("security", "tokens_file", f'"{tokens_file}"')
    with cluster:  # closed (every process killed) however the module ends
        cluster.start_all()
        yield cluster


def tokens_file(cluster: ProcCluster) -> Path:
    return cluster.root / "tokens"


def as_role(cluster: ProcCluster, role: str | None, method: str, path: str,
            body: dict[str, str] | None = None) -> Reply:
    token = USED[("read", "write", "admin").index(role)] if role is not None else None
    return call(http_port(cluster, 1), method, path, body, headers=bearer(token) if token else None)


def test_a_request_without_a_token_is_401_with_a_bearer_challenge(node: ProcCluster) -> None:
    for method, path in (("GET", "/kv/a"), ("PUT", "/kv/a"), ("GET", "/cluster"), ("GET", "/openapi.json")):
        reply = as_role(node, None, method, path, {"value": "v"} if method == "PUT" else None)
        assert reply.status == 401 and reply.is_json_error(), (method, path, reply.body)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = call(http_port(node, 1), "GET", "/kv/a", headers=bearer("rkv_guessed"))
    assert wrong.status == 401 and b"rkv_guessed" not in wrong.body


def test_each_role_may_do_what_its_role_allows(node: ProcCluster) -> None:
    assert as_role(node, "read", "PUT", "/kv/r", {"value": "v"}).status == 403
    assert as_role(node, "read", "DELETE", "/kv/r").status == 403
    assert as_role(node, "write", "PUT", "/kv/r", {"value": "w"}).status == 200
    assert as_role(node, "admin", "PUT", "/kv/r", {"value": "a"}).status == 200
    got = as_role(node, "read", "GET", "/kv/r")
    assert got.status == 200 and got.json()["value"] == "a"
    for path in ("/kv?prefix=r", "/cluster", "/openapi.json"):
        assert as_role(node, "read", "GET", path).status == 200, path
    refused = as_role(node, "read", "PUT", "/kv/r", {"value": "v"})
    assert refused.is_json_error() and "needs write" in refused.json()["error"]
    assert as_role(node, "write", "DELETE", "/kv/r").status == 200


def test_open_paths_and_the_web_views_files_are_served_without_a_token(node: ProcCluster) -> None:
    port = http_port(node, 1)
    wait_status(port, "/ready", 200)  # the HTTP process may not have polled the election yet
    for path in ("/health", "/ready", "/metrics", "/", "/static/app.js"):
        assert call(port, "GET", path).status == 200, path


def test_a_watch_stream_needs_a_read_token_and_the_web_view_reads_it_with_one(
        node: ProcCluster, tmp_path: Path) -> None:
    """EventSource cannot send a bearer token: with tokens on, the page reads /watch with
    fetch (app.js watchWithToken) and shows the changes all the same."""
    port = http_port(node, 1)
    assert as_role(node, None, "GET", "/watch?prefix=t/").status == 401
    writer = node.client()
    with open_stream(port, "prefix=t/", bearer(USED[0])) as stream:  # a read token
        assert stream.status == 200
        revision = writer.put("t/a", "1")
        event = stream.next_event(20)
    assert event is not None and event.data == {"type": "put", "key": "t/a", "value": "1",
                                                "revision": revision}
    executable = chromium_path()
    if executable is None:
        pytest.skip(MISSING_REASON)
    url = f"http://{HOST}:{port}/#token={USED[0]}"
    with Chromium(executable, tmp_path / "profile").open(url) as page:
        page.wait_for("the change stream to open", "document.getElementById('changes-state')"
                      "?.textContent.startsWith('Streaming')", 30)
        later = writer.put("t/b", "2")
        shown = page.wait_for("the change", "document.querySelector('#change-rows tr.change')"
                              "?.dataset.revision", 30)
    assert int(shown) == later


def test_a_token_added_to_the_file_works_after_sighup_and_not_before(node: ProcCluster) -> None:
    late = add_token(tokens_file(node), "late", "write")
    port = http_port(node, 1)
    assert call(port, "PUT", "/kv/late", {"value": "v"}, headers=bearer(late)).status == 401
    node.reload(1)
    wait_for("the new token to be let in", lambda: call(
        port, "PUT", "/kv/late", {"value": "v"}, headers=bearer(late)).status == 200,
        RELOAD_TIMEOUT_S, node.describe)


def test_a_broken_tokens_file_on_reload_keeps_the_tokens_in_use(node: ProcCluster) -> None:
    path = tokens_file(node)
    good = path.read_text()
    log = node.specs[1].log_path
    before = log.read_text().count("event=tokens_reload_failed")
    path.write_text(good + "garbage\n")
    try:
        node.reload(1)
        wait_for("the failed reload's log line",
                 lambda: log.read_text().count("event=tokens_reload_failed") > before,
                 RELOAD_TIMEOUT_S, node.describe)
        assert as_role(node, "read", "GET", "/kv/none").status == 404, "the old tokens still work"
    finally:
        path.write_text(good)


def test_a_missing_tokens_file_stops_the_start_in_one_line(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path / "missing", size=1)
    try:
        cluster.set_section_key("security", "tokens_file", f'"{tmp_path / "nope"}"')
        done = run_cli(RAFTKVD, "run", "--config", str(cluster.config_path), "--id", "1")
    finally:
        cluster.close()
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("raftkvd: tokens file")
    assert str(tmp_path / "nope") in done.stderr


def test_no_token_appears_in_any_log(node: ProcCluster) -> None:
    """Last: after every request above, refused or not."""
    text = node.specs[1].log_path.read_text(errors="replace")
    assert len(USED) >= 4
    assert not [t for t in USED if t in text]
    assert "Bearer " not in text and "rkv_" not in text
