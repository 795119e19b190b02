"""The node's side of its HTTP process (worker.py): spawn it, wait for its handshake,
restart it if it dies, stop it.

The child is spawned first thing, so its imports overlap the node's own start; the node
loop then runs at once and checks `poll_ready` each turn, reporting READY=1 only after it.
The child's stdin is a pipe only we hold (control.py): "stop" on it asks for a clean stop,
"reload ..." hands it the node's reloaded settings; and if this process dies the kernel
closes it, so a killed node never leaves an orphan HTTP server behind (nor its port taken).
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time

from raftkvd.settings import NO_LIMITS, NO_SECURITY, LimitsSettings, SecuritySettings

from . import control
from .httpserver import SHUTDOWN_TIMEOUT_S, HttpError
from .worker import ERROR, READY

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0
"""Room for a cold interpreter start and imports on a loaded machine."""
STOP_TIMEOUT_S = SHUTDOWN_TIMEOUT_S + 3.0
RESTART_INTERVAL_S = 1.0
"""At most one restart of a dead HTTP process per this interval."""


class HttpProcess:
    """One node's HTTP process."""

    def __init__(self, node_id: int, address: str, local_client: str, max_value_bytes: int,
                 log_level: str, security: SecuritySettings = NO_SECURITY,
                 limits: LimitsSettings = NO_LIMITS) -> None:
        self.address = address
        self.port: int | None = None
        self.restarts = 0
        self.settings = control.Reload(max_value_bytes, log_level, limits)
        """What the child runs with; a restarted child starts with the latest."""
        self._base_command = [
            sys.executable, "-m", "raftkvd.http.worker", "--node-id", str(node_id),
            "--address", address, "--client", local_client, "--security", security.to_json(),
        ]
        self._handshake = b""
        self._proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._spawned_at = time.monotonic()
        command = [*self._base_command, "--max-value-bytes", str(self.settings.max_value_bytes),
                   "--log-level", self.settings.log_level, *_limit_args(self.settings.limits)]
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll_ready(self) -> bool:
        """Never blocks: True once the child has said it serves; HttpError (and no child
        left) if it said it cannot, exited, or stayed silent for START_TIMEOUT_S."""
        if self.port is not None:
            return True
        stdout = self._proc.stdout
        assert stdout is not None
        while b"\n" not in self._handshake and select.select([stdout], [], [], 0)[0]:
            chunk = os.read(stdout.fileno(), 256)
            if not chunk:
                break
            self._handshake += chunk
        if b"\n" in self._handshake:
            line = self._handshake.partition(b"\n")[0].decode(errors="replace").strip()
            word, _, rest = line.partition(" ")
            if word == READY and rest.isdigit():
                self.port = int(rest)
                log.info("event=http_serving address=%s pid=%d", self.address, self.pid)
                return True
            self._fail(rest if word == ERROR else f"http process for {self.address} said {line[:200]!r}")
        code = self._proc.poll()
        if code is not None:
            self._fail(f"http process for {self.address} exited with code {code} (see the log above)")
        if time.monotonic() - self._spawned_at > START_TIMEOUT_S:
            self._fail(f"http process for {self.address} did not start within {START_TIMEOUT_S:g}s")
        return False

    def _fail(self, message: str) -> None:
        self.stop()
        raise HttpError(message)

    def supervise(self) -> None:
        """Called now and then by the node loop: restart the HTTP process if it died. Never
        blocks: the new process's handshake is not awaited (its log says how it went)."""
        if self.port is None:
            return  # still starting: poll_ready is in charge
        code = self._proc.poll()
        if code is None or time.monotonic() - self._spawned_at < RESTART_INTERVAL_S:
            return
        self._close_pipes()
        self.restarts += 1
        log.error("event=http_process_exited code=%s action=restart restarts=%d", code,
                  self.restarts)
        self._proc = self._spawn()

    def reload(self, settings: control.Reload) -> None:
        """Hand the child the node's reloaded settings; it applies them to its next request
        (one still starting reads them once it serves). A dead child gets them at its restart."""
        self.settings = settings
        self._tell(settings)

    def _tell(self, command: control.Command) -> None:
        """One command down the pipe (its buffer holds it until the child reads); a child that
        is gone is supervise's business."""
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed and self._proc.poll() is None:
            try:
                stdin.write(control.encode(command))
                stdin.flush()
            except OSError:
                pass

    def _close_pipes(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass

    def stop(self) -> None:
        """Ask the child to stop (it finishes cleanly), then wait; kill it if it will not go."""
        self._tell(control.Stop())
        self._close_pipes()
        try:
            self._proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("event=http_stop_timeout address=%s pid=%d", self.address, self.pid)
            self._proc.kill()
            self._proc.wait()


def _limit_args(limits: LimitsSettings) -> list[str]:
    """worker.py's [limits] flags (none: no limit)."""
    args = [] if limits.client_rate is None else ["--client-rate", repr(limits.client_rate)]
    return args + ([] if limits.client_burst is None else ["--client-burst", str(limits.client_burst)])
