"""The control pipe from a node to its HTTP process (raftkvd/http/control.py): reloaded
settings reach the running child and a restarted one. The children here have no node behind
them, so a 413 can only come from the HTTP process's own limit."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from cluster import wait_for
from helpers import free_port
from http_helpers import call, put

from raftkvd.http import control, process
from raftkvd.http.process import HttpProcess
from raftkvd.http.rest import BODY_SLACK_BYTES
from raftkvd.settings import LimitsSettings

pytestmark = pytest.mark.timeout(60)

OLD_LIMIT = 4096
NEW_LIMIT = 100
MIDDLE = "m" * 1000
"""Under the old limit, over the new one."""
START_TIMEOUT_S = 20.0


@pytest.mark.parametrize("command", [
    control.Stop(), control.Reload(1024, "DEBUG"), control.Reload(1024, "INFO", LimitsSettings(50.0)),
    control.Reload(1024, "INFO", LimitsSettings(2.5, 7)), control.Reload(1, "INFO", LimitsSettings(1e-3)),
])
def test_each_command_is_one_line_that_parses_back(command: control.Command) -> None:
    line = control.encode(command)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert control.parse(line) == command


@pytest.mark.parametrize("line", [b"stop now\n", b"reload 0 INFO - -\n", b"reload -5 INFO - -\n",
                                  b"reload 10 LOUD - -\n", b"reload 10\n", b"reload x INFO - -\n",
                                  b"reload 10 INFO\n", b"reload 10 INFO 0 -\n", b"reload 10 INFO -1 5\n",
                                  b"reload 10 INFO nan -\n", b"reload 10 INFO inf -\n",
                                  b"reload 10 INFO 5 0\n", b"reload 10 INFO 5 x\n",
                                  b"reload 10 INFO - 5\n", b"\n"])
def test_a_malformed_command_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError, match="unknown control command"):
        control.parse(line)


def test_a_log_level_in_any_case_is_read_as_upper_case() -> None:
    assert control.parse(b"reload 10 debug - -\n") == control.Reload(10, "DEBUG")


@pytest.fixture
def child() -> Iterator[HttpProcess]:
    """A serving HTTP process with OLD_LIMIT whose node (nothing listens there) never answers."""
    http = HttpProcess(1, f"127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", OLD_LIMIT, "INFO")
    try:
        wait_for("the HTTP process to serve", http.poll_ready, START_TIMEOUT_S)
        yield http
    finally:
        http.stop()


def refused_at(port: int, limit: int) -> bool:
    """A PUT of MIDDLE is answered 413 at `limit`; False too while the port is closed."""
    try:
        reply = put(port, "k", MIDDLE, timeout=5.0)
    except OSError:
        return False
    return reply.status == 413 and f"the limit is {limit}" in reply.json()["error"]


def test_a_reload_holds_the_next_request_to_the_new_limit(child: HttpProcess) -> None:
    port = child.port
    assert port is not None
    assert refused_at(port, OLD_LIMIT) is False, "MIDDLE is within the old limit"
    child.reload(control.Reload(NEW_LIMIT, "INFO"))
    wait_for("413 at the new limit", lambda: refused_at(port, NEW_LIMIT), 10.0)
    reply = call(port, "PUT", "/kv/k", b"x" * (NEW_LIMIT + BODY_SLACK_BYTES + 1))
    assert reply.status == 413
    assert f"the limit is {NEW_LIMIT + BODY_SLACK_BYTES}" in reply.json()["error"], \
        "a body's Content-Length is held to the new limit too"


def test_a_restarted_http_process_starts_with_the_reloaded_settings(
    child: HttpProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = child.port
    assert port is not None
    child.reload(control.Reload(NEW_LIMIT, "INFO"))
    wait_for("413 at the new limit", lambda: refused_at(port, NEW_LIMIT), 10.0)
    first = child.pid
    os.kill(first, signal.SIGKILL)  # the child this test started, by pid
    monkeypatch.setattr(process, "RESTART_INTERVAL_S", 0.0)

    def restarted() -> bool:
        child.supervise()
        return child.restarts == 1

    wait_for("supervise to restart the killed HTTP process", restarted, 10.0)
    assert child.pid != first
    wait_for("the restarted HTTP process to refuse at the new limit",
             lambda: refused_at(port, NEW_LIMIT), START_TIMEOUT_S)
