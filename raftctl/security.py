"""raftctl's CurveZMQ (SPEC §8): `--key FILE`, the client's NAME.key_secret, and the nodes'
public keys from the cluster file's `[security] curve_dir` (node<ID>.key for each [[node]]),
each mapped to that node's client endpoint. Problems are UsageErrors (exit 2, one line) that
name the file, never a key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq

from raftkv.curve import ClientCurve, KeyFileError, ServerKeys, load_secret
from raftkv.routing import normalize_endpoint

from .errors import UsageError

KEY_ENV = "RAFTCTL_KEY"


def curve_dir_of(config: dict[str, Any], path: Path) -> Path | None:
    security = config.get("security")
    if not isinstance(security, dict) or security.get("curve_dir") is None:
        return None
    curve_dir = security["curve_dir"]
    if not isinstance(curve_dir, str) or not curve_dir:
        raise UsageError(f"config {path}: [security] curve_dir must be a path")
    return Path(curve_dir)


def client_curve(key: Path | None, config: dict[str, Any] | None, path: Path | None) -> ClientCurve | None:
    """The Curve settings of this run; None for a cluster without curve_dir and no --key."""
    curve_dir = curve_dir_of(config, path) if config is not None and path is not None else None
    if key is None:
        if curve_dir is not None:
            raise UsageError(f"config {path}: the cluster uses CurveZMQ; give --key FILE "
                             f"(or {KEY_ENV}), the client's NAME.key_secret")
        return None
    if config is None or path is None:
        raise UsageError("--key needs --config FILE: the nodes' public keys come from its "
                         "[security] curve_dir")
    if curve_dir is None:
        raise UsageError(f"--key given but config {path} has no [security] curve_dir")
    try:
        own = load_secret(key)
    except KeyFileError as exc:
        raise UsageError(f"--key {exc}") from None
    return ClientCurve(own, ServerKeys(curve_dir, _node_endpoints(config, path)))


def _node_endpoints(config: dict[str, Any], path: Path) -> dict[str, int]:
    endpoints: dict[str, int] = {}
    for node in config.get("node", []):
        node_id, client = node.get("id"), node.get("client")
        if type(node_id) is not int or not isinstance(client, str):
            raise UsageError(f"config {path}: every [[node]] needs an integer id and a client")
        endpoints[normalize_endpoint(client)] = node_id
    return endpoints


def link_keys(curve: ClientCurve | None, endpoint: str) -> tuple | None:
    """sockets.open_link's `curve` for `endpoint`; a UsageError when its key is unknown."""
    if curve is None:
        return None
    try:
        return curve.for_endpoint(endpoint)
    except KeyFileError as exc:
        raise UsageError(f"cannot talk to {endpoint}: {exc}") from None


def refusal(endpoint: str, events: int, secured: bool) -> UsageError | None:
    """The error for a refused handshake seen on a link's monitor, if there was one.
    Without --key only a mechanism mismatch counts (a secured node), never a lost connection.
    A handshake that failed with no detail is not one: a node killed or restarted mid-handshake
    looks the same, and raftctl must go on to the next node (see unverified_keys)."""
    if events & zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return UsageError(f"{endpoint} refused this client's key (is its .key in the node's "
                          "curve_dir/clients/?)")
    if events & zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if secured:
            return UsageError(f"{endpoint} refused the CurveZMQ handshake (does it run with "
                              "[security] curve_dir?)")
        return UsageError(f"{endpoint} requires CurveZMQ: give --key FILE and --config FILE")
    return None


def unverified_keys(endpoints: list[str]) -> UsageError:
    """Every node tried failed its handshake without a word and none ever answered: most
    likely the nodes' public keys in the cluster file's curve_dir are not theirs."""
    return UsageError(f"{', '.join(endpoints)}: CurveZMQ handshake failed (are the keys in the "
                      "cluster file's curve_dir the nodes' own?)")
