"""The client side of CurveZMQ (raftkv/curve.py ServerKeys, raftctl/security.py): which key
each node endpoint must present, redirects that teach a leader's, and one clear UsageError
(exit 2) for every credential problem, naming files but never keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from raftctl.client import Client
from raftctl.errors import EXIT_USAGE, UsageError
from raftctl.security import client_curve, link_keys, refusal
from raftkv.curve import (
    CLIENTS_DIR,
    ClientCurve,
    KeyFileError,
    ServerKeys,
    keygen,
    load_public,
    load_secret,
    node_key_name,
)

ENDPOINT = "tcp://127.0.0.1:7001"


@pytest.fixture
def curve_dir(tmp_path: Path) -> Path:
    for node_id in (1, 2):
        keygen(tmp_path, node_key_name(node_id))
    keygen(tmp_path / CLIENTS_DIR, "ops")
    return tmp_path


def config(curve_dir: Path | None) -> dict:
    data: dict = {"node": [{"id": 1, "client": ENDPOINT}]}
    if curve_dir is not None:
        data["security"] = {"curve_dir": str(curve_dir)}
    return data


def test_a_node_endpoint_maps_to_its_nodes_key_and_redirects_teach_the_leaders(curve_dir) -> None:
    keys = ServerKeys(curve_dir, {"127.0.0.1:7001": 1})
    assert keys.key_for(ENDPOINT) == load_public(curve_dir / "node1.key")
    with pytest.raises(KeyFileError, match="7002"):
        keys.key_for("tcp://127.0.0.1:7002")
    keys.learn({"code": "not_leader", "leader": "tcp://127.0.0.1:7002", "leader_id": 2})
    assert keys.key_for("tcp://127.0.0.1:7002") == load_public(curve_dir / "node2.key")


def test_a_redirect_to_a_leader_whose_key_file_is_missing_is_one_usage_error(curve_dir) -> None:
    curve = client_curve(curve_dir / CLIENTS_DIR / "ops.key_secret", config(curve_dir), Path("c.toml"))
    curve.servers.learn({"leader": "tcp://127.0.0.1:7009", "leader_id": 9})
    with pytest.raises(UsageError, match="7009.*node9.key") as raised:
        link_keys(curve, "tcp://127.0.0.1:7009")
    assert raised.value.exit_code == EXIT_USAGE and "\n" not in str(raised.value)


@pytest.mark.parametrize(("key", "with_config", "with_curve", "message"), [
    (None, True, True, "give --key"),
    ("ops", False, False, "--key needs --config"),
    ("ops", True, False, r"no \[security\] curve_dir"),
    ("missing", True, True, "cannot read"),
])
def test_credential_problems_are_one_usage_error(curve_dir, key, with_config, with_curve,
                                                 message) -> None:
    key_path = None if key is None else curve_dir / CLIENTS_DIR / f"{key}.key_secret"
    data = config(curve_dir if with_curve else None) if with_config else None
    with pytest.raises(UsageError, match=message) as raised:
        client_curve(key_path, data, Path("c.toml") if with_config else None)
    assert "\n" not in str(raised.value)


def test_a_secret_readable_by_others_is_refused_naming_the_file_not_the_key(curve_dir) -> None:
    secret = curve_dir / CLIENTS_DIR / "ops.key_secret"
    secret.chmod(0o644)
    with pytest.raises(UsageError, match="ops.key_secret.*chmod 600") as raised:
        client_curve(secret, config(curve_dir), Path("c.toml"))
    assert secret.read_text().split('secret-key = "')[1][:40] not in str(raised.value)


def test_no_curve_dir_and_no_key_is_the_plain_cluster() -> None:
    assert client_curve(None, config(None), Path("c.toml")) is None
    assert client_curve(None, None, None) is None


def test_only_handshake_refusals_are_errors_and_plain_clients_only_hear_of_a_mismatch() -> None:
    assert refusal(ENDPOINT, zmq.EVENT_DISCONNECTED, secured=True) is None
    assert "refused this client's key" in str(refusal(ENDPOINT, zmq.EVENT_HANDSHAKE_FAILED_AUTH, True))
    assert "give --key" in str(refusal(ENDPOINT, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, secured=False))
    assert refusal(ENDPOINT, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, secured=False) is None
    # a reset mid-handshake (a node killed as raftctl connects) is a lost connection, not a
    # refusal: raftctl goes on to the next node
    assert refusal(ENDPOINT, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, secured=True) is None


def test_a_node_whose_key_is_not_the_one_in_curve_dir_is_one_line_not_a_timeout(curve_dir) -> None:
    """The server's real key differs from node1.key: every handshake fails with no detail and
    nothing ever answers, so the call ends in the key hint (exit 2), not "no leader"."""
    impostor = load_secret(keygen(curve_dir / "elsewhere", "node1")[1])
    context = zmq.Context()
    server = context.socket(zmq.ROUTER)
    server.curve_server = True
    server.curve_publickey, server.curve_secretkey = impostor.public, impostor.secret
    port = server.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    own = load_secret(curve_dir / CLIENTS_DIR / "ops.key_secret")
    curve = ClientCurve(own, ServerKeys(curve_dir, {f"127.0.0.1:{port}": 1}))
    try:
        with Client([endpoint], timeout=2.0, curve=curve) as client, \
                pytest.raises(UsageError, match="handshake failed .*curve_dir the nodes' own") as caught:
            client.get("k")
        assert caught.value.exit_code == EXIT_USAGE
    finally:
        server.close(linger=0)
        context.term()
