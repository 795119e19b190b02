"""Checks made once at start, before a node opens a socket (SPEC §8): secrets kept private,
and a warning when a node is reachable from other hosts with nothing protecting it."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from raftkv.curve import SECRET_SUFFIX, KeyFileError, check_private, node_key_name

from .http.tls import TlsError, server_context
from .http.tokens import TokenFileError, read_entries
from .settings import Settings, host_port

log = logging.getLogger(__name__)


class StartCheckError(ValueError):
    """A start-up check that failed; `str()` is the one line shown (exit 2)."""


def secret_files(settings: Settings) -> list[Path]:
    """The secret files this node reads: its CurveZMQ secret and its TLS key."""
    security = settings.cluster.security
    files = []
    if security.curve_dir is not None:
        files.append(security.curve_dir / f"{node_key_name(settings.node.id)}{SECRET_SUFFIX}")
    if security.tls_key_file is not None:
        files.append(security.tls_key_file)
    return files


def check_secrets(settings: Settings) -> None:
    """StartCheckError naming the first secret file that is missing or readable by others."""
    for path in secret_files(settings):
        try:
            check_private(path)
        except KeyFileError as exc:
            raise StartCheckError(str(exc)) from None


def check_http_files(settings: Settings) -> None:
    """StartCheckError naming the TLS certificate or key, or the tokens file, that the HTTP
    process could not use: said here, before anything starts, rather than by the HTTP
    process once the node runs."""
    security = settings.cluster.security
    try:
        if security.tls_cert_file is not None and security.tls_key_file is not None:
            server_context(security.tls_cert_file, security.tls_key_file)
        if security.tokens_file is not None:
            read_entries(security.tokens_file)
    except (TlsError, TokenFileError) as exc:
        raise StartCheckError(str(exc)) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def warn_if_exposed(settings: Settings) -> bool:
    """Log a warning when this node listens beyond loopback without [security]; True if so."""
    node = settings.node
    exposed = [address for address in (node.raft, node.client, node.http)
               if not is_loopback(host_port(address)[0])]
    if exposed and not settings.cluster.security.enabled:
        log.warning("node=%d event=insecure_exposed addresses=%s hint=\"anyone who can reach "
                    "these can vote, append and write; set [security] (SPEC §8)\"",
                    node.id, ",".join(exposed))
        return True
    return False
