"""raftctl's command line: parsing, output formats and exit codes (SPEC §4).

Commands that need a cluster run against an in-memory stand-in for raftctl.Client;
the real client's behaviour on the wire is tested in test_client_unit.py, and the
end-to-end tests against real daemons live with the integration suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import free_port
from hypothesis import assume, given
from hypothesis import strategies as st
from rich.console import Console

from raftctl import cli, render
from raftctl.cli import bench_key, bench_result, endpoints_from_config, main
from raftctl.errors import CompareFailed, KeyNotFound, RaftCtlError, Unavailable, UsageError

SLACK = 1.0
RAFTCTL = Path(sys.executable).parent / "raftctl"
SPEC_COMMANDS = ("put", "get", "del", "list", "cas", "status", "member", "leader", "snapshot", "bench")


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run raftctl's real entry point (main, with its error mapping) with captured streams."""
    environment = {"RAFTCTL_ENDPOINTS": None, **(env or {})}
    with CliRunner().isolation(input=input, env=environment) as (out, err, _):
        code = main(list(args))
    return Result(code, out.getvalue().decode(), err.getvalue().decode())


def dead_endpoints(n: int = 2) -> str:
    return ",".join(f"127.0.0.1:{free_port()}" for _ in range(n))


def assert_one_line(text: str) -> None:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    assert "Traceback" not in text


# -- a stand-in cluster ---------------------------------------------------------------------


NODES = [
    {"id": 1, "endpoint": "tcp://127.0.0.1:50061", "raft": "tcp://127.0.0.1:50051",
     "http": "127.0.0.1:8080", "role": "leader", "term": 4, "leader_id": 1, "last_index": 120,
     "commit": 120, "applied": 120, "lag": 0, "healthy": True, "keys": 3},
    {"id": 2, "endpoint": "tcp://127.0.0.1:50062", "raft": "tcp://127.0.0.1:50052",
     "http": "127.0.0.1:8081", "role": "follower", "term": 4, "leader_id": 1, "last_index": 113,
     "commit": 113, "applied": 110, "healthy": True, "keys": 3},
    {"id": 3, "endpoint": "tcp://127.0.0.1:50063", "reachable": False},
]


@dataclass
class FakeCluster:
    """What the fake clients share: the data, the sessions seen, and the calls made."""

    data: dict[str, str] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_with: BaseException | None = None
    leaderless: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, session: str, call: str, arg: Any) -> None:
        with self.lock:
            self.sessions.add(session)
            self.calls.append((call, arg))
        if self.fail_with is not None:
            raise self.fail_with


class FakeClient:
    """The subset of raftctl.Client the CLI uses, with the same exceptions."""

    def __init__(self, cluster: FakeCluster, endpoints: list[str], timeout: float) -> None:
        self.cluster_state = cluster
        self.endpoints = endpoints
        self.session = uuid.uuid4().hex

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def _record(self, call: str, arg: Any = None) -> None:
        self.cluster_state.record(self.session, call, arg)

    def put(self, key: str, value: str) -> int:
        self._record("put", key)
        self.cluster_state.data[key] = value
        return len(self.cluster_state.data)

    def get(self, key: str, consistency: str = "linearizable") -> str:
        self._record("get", (key, consistency))
        if key not in self.cluster_state.data:
            raise KeyNotFound(key)
        return self.cluster_state.data[key]

    def delete(self, key: str) -> bool:
        self._record("delete", key)
        return self.cluster_state.data.pop(key, None) is not None

    def list(self, prefix: str = "", limit: int | None = None, consistency: str = "x") -> list:
        self._record("list", (prefix, limit))
        items = sorted((k, v) for k, v in self.cluster_state.data.items() if k.startswith(prefix))
        return items[:limit]

    def cas(self, key: str, expected: str | None, new: str) -> int:
        self._record("cas", key)
        current = self.cluster_state.data.get(key)
        if current != expected:
            raise CompareFailed(key, current)
        self.cluster_state.data[key] = new
        return 1

    def cluster(self) -> list[dict[str, Any]]:
        self._record("cluster")
        if self.cluster_state.leaderless:
            raise Unavailable("no leader reachable at 3 endpoints within 5s")
        return [dict(n) for n in NODES]

    def node_statuses(self) -> list[dict[str, Any]]:
        self._record("node_statuses")
        return [{**n, "role": "pre-candidate", "leader_id": 0, "healthy": False}
                if n.get("reachable", True) else n for n in NODES]

    def transfer_leader(self, to: int = 0) -> int:
        self._record("transfer", to)
        return to or 2

    def snapshot(self, endpoint: str) -> int:
        self._record("snapshot", endpoint)
        return 120

    def member_add(self, node_id: int, raft: str, client: str, http: str) -> int:
        self._record("member_add", (node_id, raft, client, http))
        return 130

    def member_remove(self, node_id: int) -> int:
        self._record("member_remove", node_id)
        return 131


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    state = FakeCluster()
    monkeypatch.setattr(cli, "Client",
                        lambda endpoints, timeout, **_: FakeClient(state, endpoints, timeout))
    return state


# -- parsing and help ------------------------------------------------------------------------


def test_help_lists_every_command_of_the_spec():
    result = run("--help")
    assert result.code == 0
    for command in SPEC_COMMANDS:
        assert f"  {command} " in result.out
    for option in ("--endpoints", "RAFTCTL_ENDPOINTS", "--config", "--timeout", "--output"):
        assert option in result.out


@pytest.mark.parametrize(
    "command",
    [["put"], ["get"], ["del"], ["list"], ["cas"], ["status"], ["member", "list"],
     ["member", "add"], ["member", "remove"], ["leader", "transfer"], ["snapshot"], ["bench"]],
)
def test_every_command_has_help(command):
    result = run(*command, "--help")
    assert result.code == 0
    assert result.out.startswith(f"Usage: raftctl {' '.join(command)}")


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["put", "k"],
        ["-o", "xml", "get", "k"],
        ["get", "k", "--consistency", "eventual"],
        ["--timeout", "0", "get", "k"],
        ["--timeout", "soon", "get", "k"],
        ["list", "--limit", "0"],
        ["bench", "delete"],
        ["bench", "put", "--clients", "0"],
        ["snapshot", "first"],
        ["nosuchcommand"],
        ["-e", "no-port-here", "get", "k"],
        ["-e", ",", "get", "k"],
    ],
)
def test_bad_usage_exits_2_with_one_line_on_stderr(args):
    result = run(*args)
    assert result.code == 2
    assert_one_line(result.err)
    assert result.out == ""


def test_bare_raftctl_shows_the_help_and_exits_2():
    result = run()
    assert result.code == 2
    assert "Usage: raftctl" in result.err


def test_version_is_printed():
    result = run("--version")
    assert result.code == 0 and result.out.startswith("raftctl, version")


# -- local validation and unreachable clusters (the real client) ----------------------------


@pytest.mark.parametrize(
    "command",
    [["put", "K", "v"], ["get", "K"], ["del", "K"], ["cas", "K", "a", "b"]],
)
def test_oversized_key_exits_4_without_contacting_the_cluster(command):
    args = [a.replace("K", "k" * 600) for a in command]
    started = time.monotonic()
    result = run("-e", dead_endpoints(), "--timeout", "5", *args)
    assert result.code == 4
    assert_one_line(result.err)
    assert "600 bytes" in result.err and "511" in result.err
    assert time.monotonic() - started < SLACK  # contacting would have meant waiting 5 s


def test_unreachable_cluster_exits_3_with_one_line_within_the_timeout():
    endpoints = dead_endpoints(3)
    started = time.monotonic()
    result = run("-e", endpoints, "--timeout", "0.5", "put", "k", "v")
    assert time.monotonic() - started < 0.5 + SLACK
    assert result.code == 3
    assert_one_line(result.err)
    assert "within 0.5s" in result.err
    assert all(f"tcp://{e}" in result.err for e in endpoints.split(","))
    assert result.out == ""


def test_endpoints_come_from_the_environment():
    endpoints = dead_endpoints()
    result = run("--timeout", "0.3", "get", "k", env={"RAFTCTL_ENDPOINTS": endpoints})
    assert result.code == 3
    assert all(f"tcp://{e}" in result.err for e in endpoints.split(","))


def test_unreachable_cluster_gives_no_traceback_from_the_installed_script():
    if not RAFTCTL.exists():
        pytest.skip("raftctl console script not installed in this environment")
    endpoints = dead_endpoints()
    completed = subprocess.run(
        [str(RAFTCTL), "-e", endpoints, "--timeout", "0.5", "status"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert completed.returncode == 3
    assert_one_line(completed.stderr)
    assert "Traceback" not in completed.stdout
    for endpoint in endpoints.split(","):  # the table still lists every endpoint, as unreachable
        assert any(endpoint in line and "unreachable" in line for line in completed.stdout.splitlines())


# -- --config ------------------------------------------------------------------------------


def write_config(path: Path, ports: list[int]) -> Path:
    nodes = "".join(
        f'[[node]]\nid = {i}\nraft = "tcp://127.0.0.1:{p + 1}"\nclient = "tcp://127.0.0.1:{p}"\n'
        f'http = "127.0.0.1:{p + 2}"\ndata_dir = "data/node{i}"\n\n'
        for i, p in enumerate(ports, start=1)
    )
    path.write_text(f"[cluster]\nheartbeat_interval_ms = 50\n\n{nodes}")
    return path


def test_config_file_supplies_every_nodes_client_endpoint(tmp_path):
    config = write_config(tmp_path / "cluster.toml", [50061, 50062, 50063])
    assert endpoints_from_config(config) == [
        "tcp://127.0.0.1:50061", "tcp://127.0.0.1:50062", "tcp://127.0.0.1:50063",
    ]


def test_config_endpoints_are_the_ones_used(tmp_path):
    ports = [free_port(), free_port()]
    config = write_config(tmp_path / "cluster.toml", ports)
    result = run("--config", str(config), "--timeout", "0.3", "get", "k")
    assert result.code == 3
    assert all(f"tcp://127.0.0.1:{p}" in result.err for p in ports)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read config"),
        ("[[node]\nid = ", "config"),
        ("[cluster]\nheartbeat_interval_ms = 50\n", "no [[node]] tables"),
        ('[[node]]\nid = 1\nraft = "tcp://127.0.0.1:1"\n', "node #1 has no string field 'client'"),
        ("[[node]]\nid = 1\nclient = 50061\n", "node #1"),
        ('[[node]]\nid = 1\nclient = "nowhere"\n', "bad endpoint"),
    ],
)
def test_bad_config_exits_2_naming_the_problem(tmp_path, content, message):
    config = tmp_path / "cluster.toml"
    if content is not None:
        config.write_text(content)
    result = run("--config", str(config), "get", "k")
    assert result.code == 2
    assert_one_line(result.err)
    assert message in result.err


def test_endpoints_flag_and_config_together_are_ambiguous(tmp_path):
    config = write_config(tmp_path / "cluster.toml", [50061])
    result = run("-e", "127.0.0.1:50061", "--config", str(config), "get", "k")
    assert result.code == 2
    assert "either" in result.err


# -- key-value commands ------------------------------------------------------------------------


def test_put_prints_ok_and_get_prints_the_value_alone(cluster):
    assert run("put", "greeting", "hello world").out == "OK\n"
    result = run("get", "greeting")
    assert (result.code, result.out, result.err) == (0, "hello world\n", "")


def test_put_dash_reads_the_value_verbatim_from_stdin(cluster):
    assert run("put", "doc", "-", input="line 1\nline 2\n").code == 0
    assert cluster.data["doc"] == "line 1\nline 2\n"


def test_get_of_a_missing_key_exits_1_with_the_message_on_stderr(cluster):
    result = run("get", "nope")
    assert (result.code, result.out, result.err) == (1, "", "key not found: nope\n")


def test_get_passes_the_consistency_level(cluster):
    cluster.data["k"] = "v"
    assert run("get", "k", "--consistency", "serializable").code == 0
    assert ("get", ("k", "serializable")) in cluster.calls


def test_del_prints_deleted_or_not_found_and_exits_0_either_way(cluster):
    cluster.data["k"] = "v"
    assert run("del", "k").out == "deleted\n"
    assert "k" not in cluster.data
    missing = run("del", "k")
    assert (missing.code, missing.out) == (0, "not found\n")


def test_list_prints_keys_in_order_and_json_has_values(cluster):
    cluster.data.update({"app/b": "2", "app/a": "1", "other": "3"})
    assert run("list", "app/").out == "app/a\napp/b\n"
    assert run("list", "--limit", "1").out == "app/a\n"
    assert json.loads(run("-o", "json", "list", "app/").out) == [
        {"key": "app/a", "value": "1"}, {"key": "app/b", "value": "2"},
    ]


def test_cas_succeeds_on_match_and_exits_1_showing_the_current_value(cluster):
    cluster.data["color"] = "red"
    assert run("cas", "color", "red", "green").out == "OK\n"
    result = run("cas", "color", "red", "blue")
    assert result.code == 1
    assert_one_line(result.err)
    assert '"green"' in result.err and cluster.data["color"] == "green"


def test_json_output_of_writes_and_reads(cluster):
    assert json.loads(run("-o", "json", "put", "k", "v").out) == {"key": "k", "revision": 1}
    assert json.loads(run("-o", "json", "get", "k").out) == {"key": "k", "value": "v"}
    assert json.loads(run("-o", "json", "del", "k").out) == {"key": "k", "deleted": True}


# -- cluster commands ---------------------------------------------------------------------------


def test_status_table_has_a_row_per_node_including_unreachable_ones(cluster):
    result = run("status")
    assert result.code == 0
    for heading in ("ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "HEALTH"):
        assert heading in result.out
    assert "leader" in result.out and "follower" in result.out and "unreachable" in result.out


def test_status_plain_rows_fill_lag_from_the_leaders_last_index(cluster):
    rows = [line.split("\t") for line in run("-o", "plain", "status").out.splitlines()]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert rows[1] == ["2", "127.0.0.1:50062", "follower", "4", "1", "113", "113", "110",
                       "7", "healthy"]
    assert rows[2][2] == "unreachable" and rows[2][-1] == "unreachable"


def test_status_json_is_the_list_of_node_statuses(cluster):
    assert json.loads(run("-o", "json", "status").out) == NODES


def test_status_without_a_leader_shows_each_nodes_own_view_and_exits_3(cluster):
    cluster.leaderless = True
    result = run("status")
    assert result.code == 3
    assert "pre-candidate" in result.out and "unreachable" in result.out
    assert_one_line(result.err)
    assert "no leader to ask" in result.err


def test_status_table_fits_an_80_column_terminal_without_cutting_a_cell():
    nodes = [*NODES, {"id": 4, "endpoint": "tcp://127.0.0.1:20064", "role": "pre-candidate", "term": 12,
                      "leader_id": 0, "last_index": 123456, "commit": 123456, "applied": 123400,
                      "healthy": False}]
    console = Console(width=80, record=True)
    console.print(render.make_table(render.status_rows(nodes), render.STATUS_COLUMNS))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for row in render.status_rows(nodes):
        for cell in row[2:]:
            assert cell in text, f"{cell!r} was cut"
    for heading in render.STATUS_COLUMNS:
        assert heading in text


def test_status_watch_needs_the_table_output(cluster):
    assert run("-o", "json", "status", "--watch").code == 2


def test_member_list_shows_every_nodes_addresses(cluster):
    members = json.loads(run("-o", "json", "member", "list").out)
    assert [m["raft"] for m in members] == ["tcp://127.0.0.1:50051", "tcp://127.0.0.1:50052", None]
    assert [m["reachable"] for m in members] == [True, True, False]
    assert "127.0.0.1:8081" in run("member", "list").out


def test_member_add_sends_the_addresses_and_says_how_to_start_the_node(cluster):
    result = run("member", "add", "4", "tcp://h:1", "tcp://h:2", "h:3")
    assert result.code == 0
    assert "added node 4 as a learner" in result.out and "--join" in result.out
    assert ("member_add", (4, "tcp://h:1", "tcp://h:2", "h:3")) in cluster.calls


def test_member_remove_names_the_node(cluster):
    result = run("-o", "json", "member", "remove", "3")
    assert result.code == 0 and json.loads(result.out) == {"id": 3, "index": 131}
    assert ("member_remove", 3) in cluster.calls


@pytest.mark.parametrize("args", [["member", "add", "0", "tcp://h:1", "tcp://h:2", "h:3"],
                                  ["member", "add", "4", "tcp://h:1"], ["member", "remove", "x"]])
def test_member_changes_with_bad_arguments_are_usage_errors(cluster, args):
    result = run(*args)
    assert result.code == 2
    assert_one_line(result.err)
    assert not [c for c in cluster.calls if c[0].startswith("member")]


def test_leader_transfer_reports_the_new_leader(cluster):
    assert run("leader", "transfer", "--to", "3").out == "leader is node 3\n"
    assert ("transfer", 3) in cluster.calls


def test_snapshot_is_sent_to_the_named_nodes_endpoint(cluster):
    result = run("snapshot", "2")
    assert result.code == 0 and "120" in result.out
    assert ("snapshot", "tcp://127.0.0.1:50062") in cluster.calls


@pytest.mark.parametrize(("node_id", "code"), [("9", 2), ("3", 3)])
def test_snapshot_of_an_unknown_or_unreachable_node_fails(cluster, node_id, code):
    result = run("snapshot", node_id)
    assert result.code == code
    assert_one_line(result.err)


# -- bench -------------------------------------------------------------------------------------


def test_bench_key_size_must_fit_the_key_count(cluster):
    assert run("bench", "put", "--total", "1000", "--key-size", "2").code == 2


@given(st.integers(1, 40), st.integers(0, 10**6), st.integers(0, 10**6))
def test_bench_keys_have_the_exact_size_and_never_collide(size, i, j):
    assume(max(len(str(i)), len(str(j))) <= size)
    assert len(bench_key(i, size).encode()) == size
    assert (bench_key(i, size) == bench_key(j, size)) == (i == j)


def test_bench_percentiles_are_nearest_rank_in_milliseconds():
    result = bench_result("put", 2, [n / 1000 for n in range(100, 0, -1)], seconds=2.0)
    assert result["ops_per_sec"] == 50.0
    assert result["latency_ms"] == pytest.approx({"p50": 50, "p90": 90, "p99": 99, "max": 100})


# -- the error contract ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (KeyboardInterrupt(), 130, None),
        (RuntimeError("boom\nsecond line"), 1, "error: boom\\nsecond line\n"),
        (RaftCtlError("server error: oops"), 1, "server error: oops\n"),
        (UsageError("no endpoints given"), 2, "no endpoints given\n"),
    ],
)
def test_every_failure_maps_to_an_exit_code_and_at_most_one_line(cluster, error, code, line):
    cluster.fail_with = error
    result = run("get", "k")
    assert result.code == code
    assert "Traceback" not in result.err
    if line is not None:
        assert result.err == line
