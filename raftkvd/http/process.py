"""The node's side of its HTTP process (worker.py): spawn it, wait for its handshake,
restart it if it dies, stop it.

The child is spawned first thing, so its imports overlap the node's own start; `wait_ready`
comes later, before the node reports READY=1. The child's stdin is a pipe only we hold:
"stop" on it asks for a clean stop, and if this process dies the kernel closes it, so a
killed node never leaves an orphan HTTP server behind (nor its port taken).
"""

from __future__ import annotations

import logging
import select
import subprocess
import sys
import time

from .server import SHUTDOWN_TIMEOUT_S, HttpError
from .worker import ERROR, READY, STOP

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0
"""Room for a cold interpreter start and imports on a loaded machine."""
STOP_TIMEOUT_S = SHUTDOWN_TIMEOUT_S + 3.0
RESTART_INTERVAL_S = 1.0
"""At most one restart of a dead HTTP process per this interval."""


class HttpProcess:
    """One node's HTTP process."""

    def __init__(self, node_id: int, address: str, local_client: str, max_value_bytes: int,
                 log_level: str) -> None:
        self.address = address
        self.port: int | None = None
        self.restarts = 0
        self._command = [
            sys.executable, "-m", "raftkvd.http.worker", "--node-id", str(node_id),
            "--address", address, "--client", local_client,
            "--max-value-bytes", str(max_value_bytes), "--log-level", log_level,
        ]
        self._spawned_at = time.monotonic()
        self._proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._spawned_at = time.monotonic()
        return subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Return once the child serves; HttpError (and no child left) if it cannot."""
        line = self._read_line(timeout)
        word, _, rest = line.partition(" ")
        if word == READY and rest.isdigit():
            self.port = int(rest)
            log.info("event=http_serving address=%s pid=%d", self.address, self.pid)
            return
        self.stop()
        if word == ERROR:
            raise HttpError(rest)
        code = self._proc.poll()
        why = f"exited with code {code}" if code is not None else f"said {line[:200]!r}"
        raise HttpError(f"http process for {self.address} {why} (see the log above)")

    def _read_line(self, timeout: float) -> str:
        stdout = self._proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        buffered = b""
        while not buffered.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                self.stop()
                raise HttpError(f"http process for {self.address} did not start within {timeout:g}s")
            chunk = stdout.read1(256)
            if not chunk:
                break
            buffered += chunk
        return buffered.decode(errors="replace").strip()

    def supervise(self) -> None:
        """Called now and then by the node loop: restart the HTTP process if it died. Never
        blocks: the new process's handshake is not awaited (its log says how it went)."""
        code = self._proc.poll()
        if code is None or time.monotonic() - self._spawned_at < RESTART_INTERVAL_S:
            return
        self._close_pipes()
        self.restarts += 1
        log.error("event=http_process_exited code=%s action=restart restarts=%d", code,
                  self.restarts)
        self._proc = self._spawn()

    def _close_pipes(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass

    def stop(self) -> None:
        """Ask the child to stop (it finishes cleanly), then wait; kill it if it will not go."""
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed and self._proc.poll() is None:
            try:
                stdin.write(STOP + b"\n")
                stdin.flush()
            except OSError:
                pass
        self._close_pipes()
        try:
            self._proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("event=http_stop_timeout address=%s pid=%d", self.address, self.pid)
            self._proc.kill()
            self._proc.wait()
