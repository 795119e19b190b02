"""[security] and [limits] in the cluster file, key files, and the start-up checks (SPEC §8)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq
from cluster_docs import three_nodes, to_toml

from raftkv.curve import KeyFileError, KeyPair, check_private, keygen, load_public, load_secret
from raftkvd.settings import DEFAULT_OPEN_PATHS, SettingsError, load_settings
from raftkvd.startchecks import StartCheckError, check_secrets, is_loopback, warn_if_exposed

NO_ENV: dict[str, str] = {}


def settings_with(tmp_path: Path, **sections: dict[str, Any]):
    doc = three_nodes() | sections
    path = tmp_path / "cluster.toml"
    path.write_text(to_toml(doc))
    return load_settings(path, node_id=1, env=NO_ENV)


def test_no_security_section_is_the_open_development_cluster(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    assert not settings.cluster.security.enabled
    assert settings.cluster.security.open_paths == DEFAULT_OPEN_PATHS
    assert settings.cluster.limits.client_rate is None


def test_security_paths_are_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    security = settings_with(tmp_path, security={"curve_dir": "curve", "tokens_file": "tokens",
                                                 "tls_cert_file": "a.crt", "tls_key_file": "a.key",
                                                 "open_paths": ["/health"]}).cluster.security
    assert security.curve_dir == tmp_path / "curve"
    assert security.tokens_file == tmp_path / "tokens"
    assert security.open_paths == ("/health",)
    assert security.enabled


def test_limits_burst_defaults_to_twice_the_rate(tmp_path: Path) -> None:
    limits = settings_with(tmp_path, limits={"client_rate": 100}).cluster.limits
    assert (limits.client_rate, limits.burst) == (100.0, 200.0)
    limits = settings_with(tmp_path, limits={"client_rate": 100, "client_burst": 5}).cluster.limits
    assert limits.burst == 5.0


BAD = [
    ({"security": {"curve_dri": "x"}}, "security.curve_dri", "curve_dir"),
    ({"security": {"curve_dir": 5}}, "security.curve_dir", "path string"),
    ({"security": {"curve_dir": ""}}, "security.curve_dir", "empty"),
    ({"security": {"tls_cert_file": "a.crt"}}, "security.tls_key_file", "required"),
    ({"security": {"tls_key_file": "a.key"}}, "security.tls_cert_file", "required"),
    ({"security": {"open_paths": "/health"}}, "security.open_paths", "list"),
    ({"security": {"open_paths": ["health"]}}, "security.open_paths", "list"),
    ({"limits": {"client_rate": 0}}, "limits.client_rate", "positive"),
    ({"limits": {"client_rate": "fast"}}, "limits.client_rate", "positive"),
    ({"limits": {"client_rate": True}}, "limits.client_rate", "positive"),
    ({"limits": {"client_burst": 10}}, "limits.client_burst", "client_rate"),
    ({"limits": {"client_rate": 10, "client_burst": 0}}, "limits.client_burst", "positive"),
    ({"limits": {"rate": 10}}, "limits.rate", "client_rate"),
]


@pytest.mark.parametrize("sections, field, detail", BAD, ids=[f"{f}:{d}" for _, f, d in BAD])
def test_each_invalid_security_field_is_one_line_naming_it(tmp_path: Path, sections, field, detail) -> None:
    with pytest.raises(SettingsError) as info:
        settings_with(tmp_path, **sections)
    assert info.value.field == field
    assert detail in info.value.message
    assert "\n" not in str(info.value)


def test_keygen_makes_a_pair_zmq_can_use_with_a_private_secret(tmp_path: Path) -> None:
    public_path, secret_path = keygen(tmp_path / "keys", "node1")
    assert oct(secret_path.stat().st_mode & 0o777) == "0o600"
    assert oct(public_path.stat().st_mode & 0o777) == "0o644"
    pair = load_secret(secret_path)
    assert load_public(public_path) == pair.public
    assert zmq.curve_public(pair.secret) == pair.public
    assert pair.secret.decode() not in repr(pair)


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    keygen(tmp_path, "node1")
    before = (tmp_path / "node1.key_secret").read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        keygen(tmp_path, "node1")
    assert (tmp_path / "node1.key_secret").read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_secret_readable_by_others_is_refused_naming_the_file(tmp_path: Path, mode: int) -> None:
    _, secret_path = keygen(tmp_path, "node1")
    os.chmod(secret_path, mode)
    with pytest.raises(KeyFileError) as info:
        load_secret(secret_path)
    assert str(secret_path) in str(info.value)
    assert load_public(tmp_path / "node1.key").decode() not in str(info.value)


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.key_secret"
    path.write_text("hello\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="not a CurveZMQ key file"):
        load_secret(path)
    public_path, _ = keygen(tmp_path, "c")
    os.chmod(public_path, 0o600)
    with pytest.raises(KeyFileError, match="no secret key"):
        load_secret(public_path)
    with pytest.raises(KeyFileError, match="cannot read"):
        check_private(tmp_path / "missing.key_secret")


def test_start_checks_name_the_loose_secret(tmp_path: Path) -> None:
    keygen(tmp_path / "curve", "node1")
    settings = settings_with(tmp_path, security={"curve_dir": str(tmp_path / "curve")})
    check_secrets(settings)
    os.chmod(tmp_path / "curve" / "node1.key_secret", 0o644)
    with pytest.raises(StartCheckError, match="node1.key_secret: readable by group or others"):
        check_secrets(settings)


def test_raftkvd_run_exits_2_on_a_loose_secret(tmp_path: Path) -> None:
    keygen(tmp_path / "curve", "node1")
    os.chmod(tmp_path / "curve" / "node1.key_secret", 0o640)
    doc = three_nodes() | {"security": {"curve_dir": str(tmp_path / "curve")}}
    for node in doc["node"]:
        node["data_dir"] = str(tmp_path / f"node{node['id']}")
    (tmp_path / "cluster.toml").write_text(to_toml(doc))
    done = subprocess.run([sys.executable, "-m", "raftkvd", "run", "--config", str(tmp_path / "cluster.toml"),
                           "--id", "1"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "node1.key_secret" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "node1").exists()


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.0.9", True), ("[::1]", True),
                                            ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False),
                                            ("db1.example", False)])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_exposed_node_without_security_warns_and_a_secured_one_does_not(tmp_path: Path, caplog) -> None:
    doc = three_nodes()
    doc["node"][0]["raft"] = "tcp://0.0.0.0:50051"
    path = tmp_path / "cluster.toml"
    path.write_text(to_toml(doc))
    with caplog.at_level(logging.WARNING):
        assert warn_if_exposed(load_settings(path, node_id=1, env=NO_ENV))
    assert "event=insecure_exposed" in caplog.text and "tcp://0.0.0.0:50051" in caplog.text
    assert not warn_if_exposed(load_settings(path, node_id=2, env=NO_ENV))
    doc["security"] = {"tokens_file": str(tmp_path / "tokens")}
    path.write_text(to_toml(doc))
    assert not warn_if_exposed(load_settings(path, node_id=1, env=NO_ENV))


def test_keygen_command_prints_paths_and_refuses_bad_names(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "raftkvd", "keygen", str(tmp_path), "node1", "ops"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"node1.key", "node1.key_secret", "ops.key",
                                                    "ops.key_secret"}
    bad = subprocess.run([sys.executable, "-m", "raftkvd", "keygen", str(tmp_path), "../x"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "not a key name" in bad.stderr


def test_keypair_repr_hides_the_secret() -> None:
    public, secret = zmq.curve_keypair()
    assert secret.decode() not in repr(KeyPair(public, secret))
