"""`python -m raftkvd.healthcheck`: exit 0 when this node's `GET /health` answers 200, else 1.

For container health checks (the Dockerfile's HEALTHCHECK) and scripts: the node is the one
that `raftkvd run` would start from the same RAFTKVD_CONFIG and RAFTKVD_ID (or --config and
--id), and its own `http` address is asked. Standard library only; one line of output.
"""

from __future__ import annotations

import argparse
import http.client
import sys

from raftkvd.http.tls import client_context_unverified
from raftkvd.settings import SettingsError, load_settings

TIMEOUT_S = 3.0
EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}
"""A node bound to every interface is asked on loopback."""


def health_target(http_address: str) -> tuple[str, int]:
    """(host, port) to connect to for a node whose REST server binds `http_address`."""
    host, _, port = http_address.rpartition(":")
    host = host.strip("[]")
    return _WILDCARDS.get(host, host), int(port)


def check(http_address: str, timeout: float = TIMEOUT_S, tls: bool = False) -> tuple[bool, str]:
    """(healthy, one line saying why) for the node serving HTTP at `http_address` (HTTPS when
    `tls`: the node has [security] tls_cert_file)."""
    host, port = health_target(http_address)
    connection = (http.client.HTTPSConnection(host, port, timeout=timeout,
                                              context=client_context_unverified())
                  if tls else http.client.HTTPConnection(host, port, timeout=timeout))
    try:
        connection.request("GET", "/health", headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(4096).decode("utf-8", "replace").strip()
    except OSError as exc:
        return False, f"{http_address}: no answer ({exc})"
    finally:
        connection.close()
    return response.status == 200, f"{http_address}: {response.status} {body}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftkvd.healthcheck", description=__doc__)
    parser.add_argument("--config", help="cluster file (default: $RAFTKVD_CONFIG)")
    parser.add_argument("--id", type=int, dest="node_id", help="node id (default: $RAFTKVD_ID)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds to wait for an answer")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, node_id=args.node_id)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_UNHEALTHY
    healthy, line = check(settings.node.http, args.timeout,
                          tls=settings.cluster.security.tls_cert_file is not None)
    print(line)
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
