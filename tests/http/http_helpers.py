"""A small HTTP client for the REST tests (stdlib http.client: every byte is ours to choose)
and helpers to find a follower's or the leader's REST port."""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster import HOST, ProcCluster, wait_for

TIMEOUT_S = 15.0


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)

    def is_json_error(self) -> bool:
        """Every error body is JSON {"error": "..."} (SPEC §5)."""
        return (self.headers.get("Content-Type", "").startswith("application/json")
                and isinstance(self.json().get("error"), str))


def call(port: int, method: str, path: str, body: bytes | str | dict[str, Any] | None = None,
         headers: dict[str, str] | None = None, timeout: float = TIMEOUT_S) -> Reply:
    """One request on a fresh connection; `path` is sent exactly as given (already encoded)."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, response.headers, data, time.monotonic() - started)
    finally:
        connection.close()


def put(port: int, key_path: str, value: str, **kw: Any) -> Reply:
    return call(port, "PUT", f"/kv/{key_path}", {"value": value}, **kw)


def http_port(cluster: ProcCluster, node_id: int) -> int:
    return cluster.specs[node_id].http_port


def http_child(cluster: ProcCluster, node_id: int) -> int | None:
    """The pid of the node's HTTP process (its only child); None between two of them."""
    pid = cluster.pid(node_id)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) <= 1, f"node {node_id} has children {children}"
    return int(children[0]) if children else None


def follower(cluster: ProcCluster) -> int:
    leader = cluster.wait_for_leader()
    return next(i for i in cluster.ids if i != leader and cluster.is_running(i))


def wait_status(port: int, path: str, status: int, timeout: float = 20.0) -> Reply:
    """Poll GET `path` until it answers `status`; returns that reply."""

    def probe() -> Reply | None:
        try:
            reply = call(port, "GET", path, timeout=2.0)
        except OSError:
            return None
        return reply if reply.status == status else None

    return wait_for(f"GET {path} on port {port} to answer {status}", probe, timeout)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, then read until the server closes or goes quiet for `timeout`."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)
