"""CurveZMQ keys for a test cluster (SPEC §8): a key pair per node and for the client `ops`,
[security] curve_dir written in, and the harness's own requests made with the `ops` key.
Shared by the Curve tests, the local-cluster tests and the security benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from cluster import ProcCluster

from raftkv.curve import CLIENTS_DIR, ClientCurve, KeyPair, ServerKeys, keygen, load_secret, node_key_name

CLIENT = "ops"


def secure(cluster: ProcCluster) -> Path:
    """Keys for every node and the client `ops`, [security] curve_dir, and the harness's own
    requests made with the `ops` key; returns the curve_dir."""
    curve_dir = cluster.root / "curve"
    for node_id in cluster.ids:
        keygen(curve_dir, node_key_name(node_id))
    keygen(curve_dir / CLIENTS_DIR, CLIENT)
    cluster.set_section_key("security", "curve_dir", json.dumps(str(curve_dir)))
    follow_keys(cluster, curve_dir)
    return curve_dir


def follow_keys(cluster: ProcCluster, curve_dir: Path) -> None:
    cluster.curve = ClientCurve(client_secret(curve_dir),
                                ServerKeys(curve_dir, {s.client: i for i, s in cluster.specs.items()}))


def client_secret(curve_dir: Path, name: str = CLIENT) -> KeyPair:
    return load_secret(curve_dir / CLIENTS_DIR / f"{name}.key_secret")


def ops_key(curve_dir: Path) -> Path:
    return curve_dir / CLIENTS_DIR / f"{CLIENT}.key_secret"
