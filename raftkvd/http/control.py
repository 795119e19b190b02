"""The control pipe from a node to its HTTP process (the child's stdin): one command a line.

    stop                              finish the requests in progress and exit
    reload MAX_VALUE_BYTES LOG_LEVEL  the node reloaded its settings (SIGHUP): use these

The pipe ending without "stop" means the node died (worker.py exits at once then).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkvd.settings import LOG_LEVELS

STOP = "stop"
RELOAD = "reload"


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish the requests in progress and exit."""


@dataclass(frozen=True, slots=True)
class Reload:
    """The settings of the node that its HTTP process applies at run time."""

    max_value_bytes: int
    log_level: str


Command = Stop | Reload


def encode(command: Command) -> bytes:
    """The line `parse` reads back as `command`."""
    if isinstance(command, Stop):
        return f"{STOP}\n".encode()
    return f"{RELOAD} {command.max_value_bytes} {command.log_level}\n".encode()


def parse(line: bytes) -> Command:
    """The command of one line; ValueError for any other line."""
    words = line.decode(errors="replace").split()
    if words == [STOP]:
        return Stop()
    if len(words) == 3 and words[0] == RELOAD:
        size, level = words[1], words[2].upper()
        if size.isascii() and size.isdigit() and int(size) > 0 and level in LOG_LEVELS:
            return Reload(int(size), level)
    raise ValueError(f"unknown control command {line[:80]!r}")
