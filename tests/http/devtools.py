"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
commands on the browser's fd 3, answers on its fd 4, each a JSON message ended by a NUL),
for pages that never finish loading: an EventSource keeps a request open for good, so
`--dump-dom` with a virtual time budget (browser.py) would wait for ever.

No extra dependency: a few protocol methods (Target.createTarget, Target.attachToTarget,
Runtime.evaluate) over two pipes. Every wait has a deadline, and the browser's whole
process group is killed on the way out.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)
COMMAND_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 10.0


class DevToolsError(AssertionError):
    pass


class Page:
    """One browser with one page open at `url`; `evaluate` runs JavaScript in it, `send`
    any method of the protocol's page domains."""

    def __init__(self, executable: str, profile: Path, url: str, *flags: str) -> None:
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def plumb() -> None:  # in the child: the pipes on the fds the browser expects
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, answers_write)]
            os.dup2(high[0], 3)  # inheritable, unlike what os.pipe gave: kept across exec
            os.dup2(high[1], 4)

        self._proc = subprocess.Popen(
            [executable, *FLAGS, *flags, "--remote-debugging-pipe", f"--user-data-dir={profile}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=plumb, close_fds=False, start_new_session=True)
        os.close(commands_read)
        os.close(answers_write)
        self._ids = 0
        self._buffer = b""
        try:
            target = self._command("Target.createTarget", {"url": url})["targetId"]
            self._session = self._command("Target.attachToTarget",
                                          {"targetId": target, "flatten": True})["sessionId"]
        except BaseException:
            self.close()
            raise

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, what: str, expression: str, timeout: float) -> Any:
        """Poll `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise DevToolsError(f"timed out after {timeout:g}s waiting for {what} "
                                    f"(last value {value!r})")
            time.sleep(0.1)

    def send(self, method: str, params: dict[str, Any]) -> Any:
        """A command to the page; its result."""
        return self._command(method, params, self._session)

    def _command(self, method: str, params: dict[str, Any], session: str | None = None) -> Any:
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                answer = json.loads(raw)
                if answer.get("id") == self._ids:  # events and other answers: not ours
                    if "error" in answer:
                        raise DevToolsError(f"{method}: {answer['error']}")
                    return answer["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise DevToolsError(f"no answer to {method} within {COMMAND_TIMEOUT_S:g}s")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise DevToolsError(f"the browser exited (code {self._proc.poll()}) during {method}")
            self._buffer += chunk

    def close(self) -> None:
        try:
            os.write(self._commands, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self._proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)  # the group of the browser we started
            self._proc.wait()
        for fd in (self._commands, self._answers):
            os.close(fd)

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
