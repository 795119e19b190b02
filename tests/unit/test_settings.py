"""raftkvd.settings: the cluster file, RAFTKVD_* variables and flags, and one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cluster_docs import cluster_key, drop_node_key, node_key, three_nodes, to_toml

from raftkvd.settings import (
    MIB,
    ClusterSettings,
    SettingsError,
    load_cluster,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
NO_ENV: dict[str, str] = {}


@pytest.fixture
def write(tmp_path: Path):
    def write_doc(doc: dict[str, Any] | str) -> Path:
        path = tmp_path / "cluster.toml"
        path.write_text(doc if isinstance(doc, str) else to_toml(doc))
        return path

    return write_doc


def config_error(path: Path, **kwargs: Any) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load_settings(path, **{"node_id": 1, "env": NO_ENV, **kwargs})
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"config error: {info.value.field}: ")
    return info.value


# --- good files ------------------------------------------------------------------------


def test_repo_cluster_file_is_the_three_local_nodes_of_the_spec(monkeypatch, tmp_path: Path) -> None:
    """The spec's layout, on ports below Linux's ephemeral range (32768-60999): the spec's
    example 50051 sits inside it, where any outgoing connection may hold a node's port."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings(REPO / "conf" / "cluster.toml", node_id=2, env=NO_ENV)
    cluster = settings.cluster
    assert cluster.election_timeout_ms == (150, 300)
    assert cluster.heartbeat_interval_ms == 50
    assert cluster.max_value_bytes == 1048576
    assert [(n.id, n.raft, n.client, n.http) for n in cluster.nodes] == [
        (1, "tcp://127.0.0.1:20051", "tcp://127.0.0.1:20061", "127.0.0.1:8080"),
        (2, "tcp://127.0.0.1:20052", "tcp://127.0.0.1:20062", "127.0.0.1:8081"),
        (3, "tcp://127.0.0.1:20053", "tcp://127.0.0.1:20063", "127.0.0.1:8082"),
    ]
    ports = [int(address.rpartition(":")[2]) for n in cluster.nodes for address in (n.raft, n.client, n.http)]
    assert all(port < 32768 for port in ports)
    assert settings.node == cluster.node(2)
    assert settings.node.data_dir == tmp_path / "data" / "node2"
    assert settings.log_level == "INFO"


def test_three_host_example_is_valid_and_shares_one_data_dir_path_across_hosts() -> None:
    cluster = load_cluster(REPO / "conf" / "cluster-3hosts.toml", env=NO_ENV)
    assert [n.raft for n in cluster.nodes] == [f"tcp://10.0.0.{i}:20051" for i in (1, 2, 3)]
    assert len({n.data_dir for n in cluster.nodes}) == 1


def test_missing_cluster_keys_take_their_defaults(write) -> None:
    doc = three_nodes()
    del doc["cluster"]
    cluster = load_settings(write(doc), node_id=1, env=NO_ENV).cluster
    assert cluster == ClusterSettings(nodes=cluster.nodes)
    assert cluster.map_size_bytes == 1024 * MIB
    assert cluster.snapshot_threshold == 10_000
    assert cluster.read_lease is True


def test_optional_cluster_keys_are_read(write) -> None:
    doc = three_nodes()
    doc["cluster"] |= {"map_size_mb": 64, "snapshot_threshold": 500, "read_lease": False}
    cluster = load_settings(write(doc), node_id=1, env=NO_ENV).cluster
    assert (cluster.map_size_bytes, cluster.snapshot_threshold, cluster.read_lease) == (64 * MIB, 500, False)


def test_relative_data_dir_is_relative_to_the_working_directory(write, monkeypatch, tmp_path) -> None:
    path = write(three_nodes())
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    assert load_settings(path, node_id=3, env=NO_ENV).node.data_dir == workdir / "data" / "node3"


def test_data_dir_defaults_to_data_node_id(write, monkeypatch, tmp_path) -> None:
    doc = three_nodes()
    del doc["node"][1]["data_dir"]
    monkeypatch.chdir(tmp_path)
    assert load_settings(write(doc), node_id=2, env=NO_ENV).node.data_dir == tmp_path / "data" / "node2"


def test_ipv6_and_host_names_are_accepted(write) -> None:
    doc = three_nodes()
    doc["node"][0] |= {"raft": "tcp://[::1]:50051", "http": "localhost:8080"}
    node = load_settings(write(doc), node_id=1, env=NO_ENV).node
    assert (node.raft, node.http) == ("tcp://[::1]:50051", "localhost:8080")


# --- one bad field, one clear line ------------------------------------------------------


BAD_FIELDS = [
    (cluster_key("election_timeout_ms", [300, 150]), "cluster.election_timeout_ms", "low <= high"),
    (cluster_key("election_timeout_ms", [150]), "cluster.election_timeout_ms", "[low, high]"),
    (cluster_key("election_timeout_ms", [0, 300]), "cluster.election_timeout_ms", "positive"),
    (cluster_key("election_timeout_ms", 150), "cluster.election_timeout_ms", "[low, high]"),
    (cluster_key("election_timeout_ms", ["a", "b"]), "cluster.election_timeout_ms", "[low, high]"),
    (cluster_key("heartbeat_interval_ms", 150), "cluster.heartbeat_interval_ms", "below"),
    (cluster_key("heartbeat_interval_ms", 0), "cluster.heartbeat_interval_ms", "positive"),
    (cluster_key("heartbeat_interval_ms", -5), "cluster.heartbeat_interval_ms", "positive"),
    (cluster_key("heartbeat_interval_ms", "50"), "cluster.heartbeat_interval_ms", "integer"),
    (cluster_key("heartbeat_interval_ms", True), "cluster.heartbeat_interval_ms", "integer"),
    (cluster_key("heartbeat_interval_ms", 50.5), "cluster.heartbeat_interval_ms", "integer"),
    (cluster_key("max_value_bytes", 0), "cluster.max_value_bytes", "positive"),
    (cluster_key("max_value_bytes", 64 * MIB + 1), "cluster.max_value_bytes", "at most"),
    (cluster_key("map_size_mb", 0), "cluster.map_size_mb", "positive"),
    (cluster_key("map_size_mb", 2**40), "cluster.map_size_mb", "at most"),
    (cluster_key("snapshot_threshold", -1), "cluster.snapshot_threshold", "positive"),
    (cluster_key("read_lease", "yes"), "cluster.read_lease", "true or false"),
    (cluster_key("read_lease", 1), "cluster.read_lease", "true or false"),
    (cluster_key("heartbeat_intervall_ms", 50), "cluster.heartbeat_intervall_ms", "heartbeat_interval_ms"),
    (node_key(1, "raft", "foo"), "node[2].raft", "tcp://HOST:PORT, got 'foo'"),
    (node_key(1, "raft", "127.0.0.1:50052"), "node[2].raft", "tcp://HOST:PORT"),
    (node_key(1, "raft", "tcp://127.0.0.1"), "node[2].raft", "tcp://HOST:PORT"),
    (node_key(1, "raft", "tcp://127.0.0.1:0"), "node[2].raft", "between 1 and 65535"),
    (node_key(1, "raft", "tcp://127.0.0.1:65536"), "node[2].raft", "between 1 and 65535"),
    (node_key(1, "raft", 50052), "node[2].raft", "tcp://HOST:PORT"),
    (node_key(2, "client", "udp://127.0.0.1:50063"), "node[3].client", "tcp://HOST:PORT"),
    (node_key(0, "http", "http://127.0.0.1:8080"), "node[1].http", "HOST:PORT"),
    (node_key(0, "http", "127.0.0.1:99999"), "node[1].http", "between 1 and 65535"),
    (drop_node_key(1, "client"), "node[2].client", "missing"),
    (node_key(0, "data_dir", ""), "node[1].data_dir", "empty"),
    (node_key(0, "data_dir", 7), "node[1].data_dir", "path"),
    (node_key(0, "datadir", "x"), "node[1].datadir", "data_dir"),
    (node_key(1, "id", 0), "node #2.id", "positive"),
    (node_key(1, "id", -2), "node #2.id", "positive"),
    (node_key(1, "id", "2"), "node #2.id", "positive"),
    (drop_node_key(1, "id"), "node #2.id", "positive"),
    (node_key(1, "id", 1), "node[1].id", "duplicate"),
    (node_key(1, "raft", "tcp://127.0.0.1:50051"), "node[2].raft", "node[1].raft"),
    (node_key(1, "http", "127.0.0.1:50061"), "node[2].http", "node[1].client"),
    (node_key(0, "client", "tcp://127.0.0.1:50051"), "node[1].client", "node[1].raft"),
    (node_key(1, "data_dir", "data/node1"), "node[2].data_dir", "node[1] on host 127.0.0.1"),
    (lambda doc: doc.__setitem__("clusters", {}), "clusters", "cluster"),
    (lambda doc: doc.__setitem__("node", []), "node", "[[node]]"),
    (lambda doc: doc.pop("node"), "node", "[[node]]"),
    (lambda doc: doc.__setitem__("cluster", 5), "cluster", "[cluster]"),
]


@pytest.mark.parametrize("mutate, field, detail", BAD_FIELDS, ids=[f"{f}:{d}" for _, f, d in BAD_FIELDS])
def test_each_invalid_field_is_rejected_with_one_line_naming_it(
    write, mutate, field: str, detail: str
) -> None:
    doc = three_nodes()
    mutate(doc)
    error = config_error(write(doc))
    assert error.field == field
    assert detail in error.message


def test_unknown_key_error_suggests_the_intended_key(write) -> None:
    doc = three_nodes()
    doc["cluster"]["heartbeat_intervall_ms"] = 50
    assert str(config_error(write(doc))) == (
        "config error: cluster.heartbeat_intervall_ms: unknown key (did you mean heartbeat_interval_ms?)"
    )


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    error = config_error(tmp_path / "absent.toml")
    assert error.field.endswith("absent.toml")
    assert "No such file" in error.message


def test_invalid_toml_reports_the_line(write) -> None:
    path = write("[cluster]\nheartbeat_interval_ms = 50\nelection_timeout_ms == [150, 300]\n")
    error = config_error(path)
    assert "not valid TOML" in error.message
    assert "line 3" in error.message


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_bytes(b"[cluster]\n# \xff\xfe\n")
    assert "UTF-8" in config_error(path).message


def test_node_id_not_in_file_names_the_flag_and_lists_ids(write) -> None:
    error = config_error(write(three_nodes()), node_id=7)
    assert error.field == "--id"
    assert "node 7 is not in" in error.message and "1, 2, 3" in error.message


def test_node_id_is_required(write) -> None:
    assert config_error(write(three_nodes()), node_id=None).field == "--id"


def test_config_path_is_required() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(None, node_id=1, env=NO_ENV)
    assert info.value.field == "--config"


# --- environment and flags ------------------------------------------------------------


def test_environment_overrides_the_file(write, tmp_path: Path) -> None:
    env = {
        "RAFTKVD_CONFIG": str(write(three_nodes())),
        "RAFTKVD_ID": "3",
        "RAFTKVD_DATA_DIR": str(tmp_path / "env-dir"),
        "RAFTKVD_LOG_LEVEL": "debug",
        "RAFTKVD_MAP_SIZE": "2G",
    }
    settings = load_settings(None, env=env)
    assert settings.node.id == 3
    assert settings.node.data_dir == tmp_path / "env-dir"
    assert settings.cluster.node(3).data_dir.name == "node3", "overrides are for this process only"
    assert settings.log_level == "DEBUG"
    assert settings.cluster.map_size_bytes == 2048 * MIB


def test_flags_override_the_environment(write, tmp_path: Path) -> None:
    path = write(three_nodes())
    env = {
        "RAFTKVD_CONFIG": str(tmp_path / "not-this.toml"),
        "RAFTKVD_ID": "3",
        "RAFTKVD_DATA_DIR": str(tmp_path / "env-dir"),
        "RAFTKVD_LOG_LEVEL": "DEBUG",
    }
    settings = load_settings(path, node_id=2, data_dir=tmp_path / "flag-dir", env=env, log_level="warning")
    assert settings.config_path == path
    assert settings.node.id == 2
    assert settings.node.data_dir == tmp_path / "flag-dir"
    assert settings.log_level == "WARNING"


@pytest.mark.parametrize(
    "raw, size",
    [("512", 512 * MIB), ("512M", 512 * MIB), ("2GiB", 2048 * MIB), ("1 T", 1024 * 1024 * MIB),
     ("4096k", 4 * MIB)],
)  # fmt: skip
def test_map_size_variable_is_mib_or_takes_a_unit(write, raw: str, size: int) -> None:
    settings = load_settings(write(three_nodes()), node_id=1, env={"RAFTKVD_MAP_SIZE": raw})
    assert settings.cluster.map_size_bytes == size


@pytest.mark.parametrize(
    "env, field",
    [
        ({"RAFTKVD_ID": "two"}, "RAFTKVD_ID"),
        ({"RAFTKVD_ID": "9"}, "RAFTKVD_ID"),
        ({"RAFTKVD_ID": "1", "RAFTKVD_LOG_LEVEL": "LOUD"}, "RAFTKVD_LOG_LEVEL"),
        ({"RAFTKVD_ID": "1", "RAFTKVD_MAP_SIZE": "lots"}, "RAFTKVD_MAP_SIZE"),
        ({"RAFTKVD_ID": "1", "RAFTKVD_MAP_SIZE": "0"}, "RAFTKVD_MAP_SIZE"),
        ({"RAFTKVD_ID": "1", "RAFTKVD_MAP_SIZE": "1073741824"}, "RAFTKVD_MAP_SIZE"),
        ({"RAFTKVD_ID": "1", "RAFTKVD_DATA_DIR": "  "}, "RAFTKVD_DATA_DIR"),
        ({"RAFTKVD_ID": "1", "RAFTKVD_JOIN": "maybe"}, "RAFTKVD_JOIN"),
    ],
)
def test_invalid_environment_values_name_the_variable(write, env: dict[str, str], field: str) -> None:
    assert config_error(write(three_nodes()), node_id=None, env=env).field == field


@pytest.mark.parametrize(
    "env, flag, join",
    [({}, False, False), ({"RAFTKVD_JOIN": "1"}, False, True), ({"RAFTKVD_JOIN": "0"}, False, False),
     ({}, True, True), ({"RAFTKVD_JOIN": "true"}, False, True)],
)  # fmt: skip
def test_join_comes_from_the_flag_or_the_environment(write, env, flag: bool, join: bool) -> None:
    assert load_settings(write(three_nodes()), node_id=1, env=env, join=flag).join is join


def test_invalid_flag_values_name_the_flag(write) -> None:
    path = write(three_nodes())
    assert config_error(path, log_level="chatty").field == "--log-level"
    assert config_error(path, data_dir="").field == "--data-dir"


# --- the log level: flag > environment > file > default ----------------------------------


def with_log_level(level: str) -> dict[str, Any]:
    doc = three_nodes()
    doc["cluster"]["log_level"] = level
    return doc


@pytest.mark.parametrize(
    "flag, env, level",
    [(None, {}, "DEBUG"), (None, {"RAFTKVD_LOG_LEVEL": "error"}, "ERROR"),
     ("warning", {"RAFTKVD_LOG_LEVEL": "error"}, "WARNING"), ("Critical", {}, "CRITICAL")],
)  # fmt: skip
def test_the_file_log_level_yields_to_the_environment_and_the_flag(
    write, flag: str | None, env: dict[str, str], level: str
) -> None:
    settings = load_settings(write(with_log_level("debug")), node_id=1, env=env, log_level=flag)
    assert settings.log_level == level
    assert settings.cluster.log_level == "DEBUG", "the file's own level, whatever wins"


def test_without_a_file_log_level_the_default_is_info(write) -> None:
    settings = load_settings(write(three_nodes()), node_id=1, env=NO_ENV)
    assert (settings.cluster.log_level, settings.log_level) == (None, "INFO")


@pytest.mark.parametrize("level", ["loud", "", 10, True])
def test_an_invalid_file_log_level_names_the_field(write, level: Any) -> None:
    error = config_error(write(with_log_level(level)))
    assert error.field == "cluster.log_level"
    assert "DEBUG, INFO" in error.message


# --- reloading: the file again, with the flags and environment of the start ----------------


def test_reload_reads_the_changed_file_with_the_flags_and_environment_of_the_start(
    write, tmp_path: Path
) -> None:
    doc = three_nodes()
    path = write(doc)
    env = {"RAFTKVD_DATA_DIR": str(tmp_path / "env-dir")}
    first = load_settings(path, node_id=2, env=env, log_level="error")
    doc["cluster"] |= {"max_value_bytes": 2048, "log_level": "debug"}
    write(doc)
    again = first.reload()
    assert again.cluster.max_value_bytes == 2048
    assert again.log_level == "ERROR", "the start's --log-level still wins over the file"
    assert (again.node.id, again.node.data_dir) == (2, tmp_path / "env-dir")
    assert again.config_path == first.config_path


def test_reload_of_a_file_that_turned_invalid_raises_the_error_naming_the_field(write) -> None:
    doc = three_nodes()
    first = load_settings(write(doc), node_id=1, env=NO_ENV)
    doc["cluster"]["max_value_bytes"] = "x"
    write(doc)
    with pytest.raises(SettingsError) as info:
        first.reload()
    assert str(info.value) == "config error: cluster.max_value_bytes: expected a positive integer, got 'x'"
