"""raftkvd.server.reload: what a SIGHUP takes from the re-read cluster file, what waits for
a restart, and that a file that no longer loads changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from cluster_docs import cluster_key, node_key, three_nodes, to_toml

from raftkvd.server import reload
from raftkvd.settings import MIB, LimitsSettings, Settings, load_settings

NO_ENV: dict[str, str] = {}


class ClusterFile:
    """A cluster file a test changes between the start and the reload."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc = three_nodes()
        self.save()

    def save(self) -> None:
        self.path.write_text(to_toml(self.doc))

    def set(self, key: str, value: Any) -> None:
        self.doc["cluster"][key] = value
        self.save()

    def load(self, **kwargs: Any) -> Settings:
        return load_settings(self.path, **{"node_id": 1, "env": NO_ENV, **kwargs})


@pytest.fixture
def cluster_file(tmp_path: Path) -> ClusterFile:
    return ClusterFile(tmp_path / "cluster.toml")


def test_an_unchanged_file_changes_nothing(cluster_file: ClusterFile) -> None:
    running = cluster_file.load()
    outcome = reload.plan(running, running.reload())
    assert (outcome.applied, outcome.restart_only) == ((), ())
    assert outcome.settings == running


def test_the_log_level_and_max_value_bytes_are_applied(cluster_file: ClusterFile) -> None:
    running = cluster_file.load()
    cluster_file.set("max_value_bytes", 4096)
    cluster_file.set("log_level", "debug")
    outcome = reload.plan(running, running.reload())
    assert set(outcome.applied) == {"log_level", "cluster.log_level", "cluster.max_value_bytes"}
    assert outcome.restart_only == ()
    assert outcome.settings.cluster.max_value_bytes == 4096
    assert outcome.settings.log_level == "DEBUG"


def test_the_rate_limits_are_applied(cluster_file: ClusterFile) -> None:
    running = cluster_file.load()
    cluster_file.doc["limits"] = {"client_rate": 50, "client_burst": 80}
    cluster_file.save()
    outcome = reload.plan(running, running.reload())
    assert set(outcome.applied) == {"cluster.limits.client_rate", "cluster.limits.client_burst"}
    assert outcome.restart_only == ()
    assert outcome.settings.cluster.limits == LimitsSettings(50.0, 80)


def test_a_log_level_flag_of_the_start_still_wins_over_the_file(cluster_file: ClusterFile) -> None:
    running = cluster_file.load(log_level="warning")
    cluster_file.set("log_level", "debug")
    outcome = reload.plan(running, running.reload())
    assert outcome.applied == ("cluster.log_level",)
    assert outcome.settings.log_level == "WARNING"


@pytest.mark.parametrize(
    "change, field",
    [
        (cluster_key("heartbeat_interval_ms", 40), "cluster.heartbeat_interval_ms"),
        (cluster_key("election_timeout_ms", [200, 400]), "cluster.election_timeout_ms"),
        (cluster_key("map_size_mb", 64), "cluster.map_size_bytes"),
        (cluster_key("snapshot_threshold", 50), "cluster.snapshot_threshold"),
        (node_key(0, "http", "127.0.0.1:9090"), "node.http"),
        (node_key(0, "raft", "tcp://127.0.0.1:40051"), "node.raft"),
        (node_key(0, "data_dir", "elsewhere"), "node.data_dir"),
        (node_key(1, "client", "tcp://127.0.0.1:40062"), "cluster.nodes"),
        (lambda doc: doc["node"].pop(2), "cluster.nodes"),
    ],
)  # fmt: skip
def test_a_setting_that_cannot_change_at_run_time_is_named_and_not_applied(
    cluster_file: ClusterFile, change: Any, field: str
) -> None:
    running = cluster_file.load()
    change(cluster_file.doc)
    cluster_file.doc["cluster"]["max_value_bytes"] = 4096
    cluster_file.save()
    outcome = reload.plan(running, running.reload())
    assert field in outcome.restart_only
    assert outcome.applied == ("cluster.max_value_bytes",), "the reloadable change still applies"
    assert outcome.settings.cluster.max_value_bytes == 4096
    assert reload.differences(running, outcome.settings) == ["cluster.max_value_bytes"]


def test_reread_logs_one_warning_naming_what_waits_for_a_restart(
    cluster_file: ClusterFile, caplog: pytest.LogCaptureFixture
) -> None:
    running = cluster_file.load()
    cluster_file.set("heartbeat_interval_ms", 40)
    cluster_file.set("map_size_mb", 64)
    with caplog.at_level(logging.INFO, logger=reload.__name__):
        outcome = reload.reread(running)
    assert outcome is not None and outcome.settings == running
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    message = caplog.records[0].getMessage()
    assert "fields=cluster.heartbeat_interval_ms,cluster.map_size_bytes" in message
    assert "takes effect at restart" in message


@pytest.mark.parametrize(
    "breakage, names",
    [
        (lambda f: f.set("max_value_bytes", "x"),
         'error="config error: cluster.max_value_bytes: expected a positive integer, got \'x\'"'),
        (lambda f: f.set("log_level", "loud"), "cluster.log_level"),
        (lambda f: f.path.write_text(f.path.read_text() + "[cluster\n"), "not valid TOML"),
        (lambda f: f.path.unlink(), "cannot read"),
        (lambda f: (f.doc["node"].pop(0), f.save()), "--id: node 1 is not in"),
    ],
)  # fmt: skip
def test_a_file_that_no_longer_loads_keeps_every_setting_and_logs_one_line_naming_the_field(
    cluster_file: ClusterFile, caplog: pytest.LogCaptureFixture, breakage: Any, names: str
) -> None:
    running = cluster_file.load()
    cluster_file.set("max_value_bytes", 4096)
    breakage(cluster_file)
    with caplog.at_level(logging.INFO, logger=reload.__name__):
        assert reload.reread(running) is None
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.ERROR
    message = caplog.records[0].getMessage()
    assert message.startswith("node=1 event=reload_failed error=\"config error: ")
    assert names in message and "\n" not in message


def test_the_error_in_the_log_line_is_one_quoted_value() -> None:
    assert reload._quoted('a "b" \\c') == '"a \\"b\\" \\\\c"'


def test_defaults_in_a_file_that_drops_a_key_count_as_changes(cluster_file: ClusterFile) -> None:
    cluster_file.set("max_value_bytes", 4096)
    running = cluster_file.load()
    del cluster_file.doc["cluster"]["max_value_bytes"]
    cluster_file.save()
    outcome = reload.plan(running, running.reload())
    assert outcome.applied == ("cluster.max_value_bytes",)
    assert outcome.settings.cluster.max_value_bytes == MIB
