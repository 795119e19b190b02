"""The HTTP process of a node: `python -m raftkvd.http.worker`, started by the node (process.py).

A process of its own gives the REST API its own interpreter lock, so HTTP parsing and JSON
never compete with the Raft loop for it. It talks to its node only through the node's
client endpoint.

Handshake with the parent: one line on stdout once the address is bound, "ready PORT", or
"error MESSAGE" when it cannot be. Then the process serves, and takes commands from its
stdin, one a line (control.py): "reload ..." applies the node's reloaded settings, "stop" (or
SIGTERM/SIGINT) stops it cleanly. If its stdin ends without "stop", the node died (the
kernel closed the pipe), and the process exits at once, freeing the port for the node's
restart.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from raftkvd.metrics import HttpMetrics
from raftkvd.settings import LOG_FORMAT, LimitsSettings, SecuritySettings

from . import control
from .httpserver import HttpError, HttpServer

log = logging.getLogger(__name__)

READY = "ready"
ERROR = "error"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m raftkvd.http.worker", description=__doc__)
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--address", required=True, help="HOST:PORT to serve HTTP on")
    parser.add_argument("--client", required=True, help="the node's client endpoint")
    parser.add_argument("--max-value-bytes", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--security", type=SecuritySettings.from_json, default=SecuritySettings(),
                        help="the node's [security] settings, as JSON")
    parser.add_argument("--client-rate", type=float, default=None,
                        help="[limits] client_rate: requests/s per REST client (none: no limit)")
    parser.add_argument("--client-burst", type=int, default=None, help="[limits] client_burst")
    return parser.parse_args(argv)


def _say(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except OSError:  # the node is gone (or stopped us while we started): stdin's EOF follows
        pass


def _watch_node(done: threading.Event, server: HttpServer) -> None:
    """Follow the node's commands on stdin until "stop"; an end without it: the node died."""
    for line in sys.stdin.buffer:
        try:
            command = control.parse(line)
        except ValueError as exc:
            log.warning("event=control_ignored error=%s", exc)
            continue
        log.debug('event=control command="%s"', line.decode(errors="replace").strip())
        if isinstance(command, control.Stop):
            done.set()
            return
        _reload(server, command)
    log.warning("event=node_gone action=exit")
    logging.shutdown()
    os._exit(1)


def _reload(server: HttpServer, settings: control.Reload) -> None:
    """The node reloaded its cluster file (SIGHUP): this process follows its log level, holds
    the next request to its max_value_bytes and its clients to its [limits], and re-reads the
    tokens file (`raftkvd token add` takes effect without a restart)."""
    logging.getLogger().setLevel(settings.log_level)
    server.set_max_value_bytes(settings.max_value_bytes)
    server.set_limits(settings.limits)
    server.reload_tokens()
    log.info("event=http_reloaded max_value_bytes=%d log_level=%s client_rate=%s client_burst=%s",
             settings.max_value_bytes, settings.log_level, settings.limits.client_rate,
             settings.limits.client_burst)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=LOG_FORMAT)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server = HttpServer(args.address, args.client, args.max_value_bytes, HttpMetrics(),
                        name=f"raftkvd-http-{args.node_id}", node_id=args.node_id,
                        security=args.security,
                        limits=LimitsSettings(args.client_rate, args.client_burst))
    try:
        server.start()
    except HttpError as exc:
        _say(f"{ERROR} {exc}")
        return 1
    _say(f"{READY} {server.port}")
    threading.Thread(target=_watch_node, args=(done, server), name="node-watch", daemon=True).start()
    while not done.wait(1.0):  # wake up now and then so signal handlers run promptly
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
