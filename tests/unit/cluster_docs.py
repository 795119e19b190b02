"""Cluster files as documents (dicts) for the settings and reload tests: the SPEC §2 cluster,
ways to break one field of it, and enough of a TOML writer to save it (tomllib only reads)."""

from __future__ import annotations

import json
from typing import Any


def three_nodes() -> dict[str, Any]:
    """The SPEC §2 cluster as a document, for tests to break one field at a time."""
    return {
        "cluster": {
            "election_timeout_ms": [150, 300],
            "heartbeat_interval_ms": 50,
            "max_value_bytes": 1048576,
        },
        "node": [
            {
                "id": i,
                "raft": f"tcp://127.0.0.1:{50050 + i}",
                "client": f"tcp://127.0.0.1:{50060 + i}",
                "http": f"127.0.0.1:{8079 + i}",
                "data_dir": f"data/node{i}",
            }
            for i in (1, 2, 3)
        ],
    }


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def to_toml(doc: dict[str, Any]) -> str:
    """Enough of a TOML writer for cluster files (tomllib only reads)."""
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for table in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def cluster_key(key: str, value: Any):
    return lambda doc: doc["cluster"].__setitem__(key, value)


def node_key(position: int, key: str, value: Any):
    return lambda doc: doc["node"][position].__setitem__(key, value)


def drop_node_key(position: int, key: str):
    return lambda doc: doc["node"][position].pop(key)
