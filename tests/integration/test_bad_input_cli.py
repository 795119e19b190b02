"""Bad configuration, oversized requests and an unreachable cluster each end in one clear
line on stderr and the documented exit code, never a traceback (SPEC §2, §4)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import HOST, RAFTCTL, RAFTKVD, ProcCluster, pick_port, run_cli

pytestmark = pytest.mark.timeout(120)

EXIT_NOT_FOUND = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_REJECTED = 4
MAX_VALUE_BYTES = 1024  # ProcCluster's default, small on purpose
UNREACHABLE_TIMEOUT_S = 1.0
PROCESS_START_SLACK_S = 3.0
"""Interpreter start-up and imports of a CLI process on a busy 2-core machine."""


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, f"expected exactly one line on stderr, got {result.stderr!r}"
    return lines[0]


# ---- raftkvd run with bad configuration ---------------------------------------------------------
def valid_config(tmp_path: Path) -> str:
    taken: set[int] = set()
    nodes = []
    for node_id in (1, 2, 3):
        nodes.append(
            f'[[node]]\nid = {node_id}\nraft = "tcp://{HOST}:{pick_port(taken)}"\n'
            f'client = "tcp://{HOST}:{pick_port(taken)}"\nhttp = "{HOST}:{pick_port(taken)}"\n'
            f'data_dir = "{tmp_path / f"node{node_id}"}"\n'
        )
    return ("[cluster]\nelection_timeout_ms = [150, 300]\nheartbeat_interval_ms = 50\n\n"
            + "\n".join(nodes))


def _replace_line(text: str, start: str, new: str, occurrence: int = 0) -> str:
    lines = text.splitlines()
    hits = [n for n, line in enumerate(lines) if line.startswith(start)]
    lines[hits[occurrence]] = new
    return "\n".join(lines) + "\n"


def _duplicate_port(text: str) -> str:
    """Node 2's client endpoint takes node 1's raft port."""
    raft1 = next(line for line in text.splitlines() if line.startswith("raft = "))
    return _replace_line(text, "client = ", raft1.replace("raft", "client", 1), occurrence=1)


BAD_CONFIGS: dict[str, tuple[Callable[[str], str], list[str], str]] = {
    # name: (mutation of a valid file, extra args, text the error line must contain)
    "unknown cluster key": (
        lambda t: t.replace("heartbeat_interval_ms", "heartbeat_intervall_ms"), [],
        "cluster.heartbeat_intervall_ms"),
    "unknown node key": (lambda t: t.replace("data_dir", "datadir", 1), [], "node[1].datadir"),
    "endpoint without a port": (
        lambda t: _replace_line(t, "raft = ", f'raft = "tcp://{HOST}"'), [], "node[1].raft"),
    "endpoint with a bad scheme": (
        lambda t: _replace_line(t, "client = ", f'client = "udp://{HOST}:5000"', 2), [],
        "node[3].client"),
    "port out of range": (
        lambda t: _replace_line(t, "http = ", f'http = "{HOST}:70000"'), [], "node[1].http"),
    "duplicate port": (_duplicate_port, [], "node[2].client"),
    "duplicate node id": (lambda t: t.replace("id = 3", "id = 2"), [], "node[2].id"),
    "id not in the file": (lambda t: t, ["--id", "7"], "--id"),
    "reversed election timeout": (
        lambda t: t.replace("[150, 300]", "[300, 150]"), [], "cluster.election_timeout_ms"),
    "heartbeat not below the election timeout": (
        lambda t: t.replace("heartbeat_interval_ms = 50", "heartbeat_interval_ms = 200"), [],
        "cluster.heartbeat_interval_ms"),
    "max_value_bytes not a number": (
        lambda t: t.replace("[cluster]", '[cluster]\nmax_value_bytes = "big"'), [],
        "cluster.max_value_bytes"),
    "not TOML": (lambda t: t + "\nthis is = = not toml\n", [], "not valid TOML"),
    "no nodes": (lambda t: t.split("[[node]]")[0], [], "node"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configuration_exits_2_with_one_line_naming_the_field(tmp_path: Path, case: str) -> None:
    mutate, args, field = BAD_CONFIGS[case]
    path = tmp_path / "cluster.toml"
    path.write_text(mutate(valid_config(tmp_path)))
    id_args = args or ["--id", "1"]
    result = run_cli(RAFTKVD, "run", "--config", str(path), *id_args, timeout=20)
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stderr)
    line = one_line_error(result)
    assert field in line, f"the error line should name {field!r}: {line!r}"
    assert not (tmp_path / "node1").exists(), "nothing is created for a rejected configuration"


def test_missing_configuration_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "cluster.toml"
    result = run_cli(RAFTKVD, "run", "--config", str(missing), "--id", "1", timeout=20)
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stderr)
    assert str(missing) in one_line_error(result)


@pytest.mark.parametrize(("variable", "value"), [("RAFTKVD_ID", "one"), ("RAFTKVD_LOG_LEVEL", "loud"),
                                                 ("RAFTKVD_MAP_SIZE", "lots")])
def test_bad_environment_variable_exits_2_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(valid_config(tmp_path))
    args = ["run", "--config", str(path)] + ([] if variable == "RAFTKVD_ID" else ["--id", "1"])
    result = run_cli(RAFTKVD, *args, env={variable: value}, timeout=20)
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stderr)
    assert variable in one_line_error(result)


@pytest.mark.parametrize("flag", [["--id", "one"], ["--id", "1", "--log-level", "loud"]])
def test_bad_flag_value_exits_2_with_one_line(tmp_path: Path, flag: list[str]) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(valid_config(tmp_path))
    result = run_cli(RAFTKVD, "run", "--config", str(path), *flag, timeout=20)
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stderr)
    assert flag[-2] in one_line_error(result)


@pytest.mark.parametrize("level", ["DEBUG", "debug", "Warning", "CRITICAL"])
def test_log_level_flag_takes_any_case_as_the_environment_variable_does(tmp_path: Path, level: str) -> None:
    """`--log-level DEBUG` was refused while RAFTKVD_LOG_LEVEL=DEBUG was accepted."""
    missing = tmp_path / "nowhere.toml"
    result = run_cli(RAFTKVD, "run", "--config", str(missing), "--id", "1", "--log-level", level,
                     timeout=20)
    assert result.returncode == EXIT_CONFIG
    assert str(missing) in one_line_error(result), "past the flag: the missing file is the error"


# ---- oversized requests -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint(shared_cluster: ProcCluster) -> str:
    return ",".join(shared_cluster.endpoints())


@pytest.mark.parametrize("command", [["put", "k" * 600, "v"], ["get", "k" * 600],
                                     ["del", "k" * 600], ["cas", "k" * 600, "a", "b"]])
def test_key_over_511_bytes_is_rejected_with_exit_4(endpoint: str, command: list[str]) -> None:
    result = run_cli(RAFTCTL, "-e", endpoint, *command)
    assert result.returncode == EXIT_REJECTED, (result.returncode, result.stderr)
    assert "511" in one_line_error(result)


def test_server_rejects_a_key_over_511_bytes_itself(shared_cluster: ProcCluster) -> None:
    """raftctl checks keys locally; the node must not rely on it."""
    leader = shared_cluster.wait_for_leader()
    reply = shared_cluster.request(leader, {"op": "put", "key": "k" * 600, "value": "v",
                                            "session": "s", "seq": 1}, 5.0)
    assert reply is not None and reply["code"] == "too_large", reply


def test_value_over_max_value_bytes_is_rejected_with_exit_4(endpoint: str) -> None:
    too_big = "x" * (MAX_VALUE_BYTES + 1)
    for args, stdin in ((["put", "big", too_big], None), (["put", "big", "-"], too_big),
                        (["cas", "big", "", too_big], None)):
        result = run_cli(RAFTCTL, "-e", endpoint, *args, input=stdin)
        assert result.returncode == EXIT_REJECTED, (args[:2], result.returncode, result.stderr)
        assert str(MAX_VALUE_BYTES) in one_line_error(result)
    missing = run_cli(RAFTCTL, "-e", endpoint, "get", "big")
    assert missing.returncode == EXIT_NOT_FOUND, "a rejected value must not be stored"
    fits = run_cli(RAFTCTL, "-e", endpoint, "put", "big", "-", input="y" * MAX_VALUE_BYTES)
    assert fits.returncode == 0, fits.stderr
    assert run_cli(RAFTCTL, "-e", endpoint, "get", "big").stdout == "y" * MAX_VALUE_BYTES + "\n"


def test_multibyte_value_is_measured_in_utf8_bytes(endpoint: str) -> None:
    """max_value_bytes counts bytes: 400 three-byte characters are 1,200 bytes."""
    result = run_cli(RAFTCTL, "-e", endpoint, "put", "wide", "€" * 400)
    assert result.returncode == EXIT_REJECTED, (result.returncode, result.stderr)
    one_line_error(result)


# ---- an unreachable cluster -------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["get", "k"], ["put", "k", "v"], ["status"]])
def test_unreachable_cluster_exits_3_within_the_timeout(command: list[str]) -> None:
    taken: set[int] = set()
    nobody = ",".join(f"{HOST}:{pick_port(taken)}" for _ in range(3))
    started = time.monotonic()
    result = run_cli(RAFTCTL, "-e", nobody, "--timeout", str(UNREACHABLE_TIMEOUT_S), *command)
    elapsed = time.monotonic() - started
    assert result.returncode == EXIT_UNAVAILABLE, (result.returncode, result.stderr)
    one_line_error(result)
    assert elapsed < UNREACHABLE_TIMEOUT_S + PROCESS_START_SLACK_S, f"took {elapsed:.2f}s"


def test_cluster_without_quorum_exits_3_within_the_timeout(
    make_cluster: Callable[..., ProcCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.start_all()
    for node_id in cluster.ids:
        if node_id != leader:
            cluster.kill(node_id)
    started = time.monotonic()
    result = run_cli(RAFTCTL, "-e", ",".join(cluster.endpoints()), "--timeout", "2",
                     "put", "k", "v")
    elapsed = time.monotonic() - started
    assert result.returncode == EXIT_UNAVAILABLE, (result.returncode, result.stdout, result.stderr)
    one_line_error(result)
    assert elapsed < 2 + PROCESS_START_SLACK_S, f"took {elapsed:.2f}s"


def test_bad_endpoint_is_a_usage_error() -> None:
    result = run_cli(RAFTCTL, "-e", "not-an-endpoint", "get", "k")
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stderr)
    assert "not-an-endpoint" in one_line_error(result)
