"""The control pipe from a node to its HTTP process (the child's stdin): one command a line.

    stop                              finish the requests in progress and exit
    reload MAX_VALUE_BYTES LOG_LEVEL RATE BURST
                                      the node reloaded its settings (SIGHUP): use these;
                                      RATE and BURST are [limits] client_rate and
                                      client_burst, "-" for none

The pipe ending without "stop" means the node died (worker.py exits at once then).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkvd.settings import LOG_LEVELS, NO_LIMITS, LimitsSettings

STOP = "stop"
RELOAD = "reload"
NONE = "-"


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish the requests in progress and exit."""


@dataclass(frozen=True, slots=True)
class Reload:
    """The settings of the node that its HTTP process applies at run time."""

    max_value_bytes: int
    log_level: str
    limits: LimitsSettings = NO_LIMITS


Command = Stop | Reload


def encode(command: Command) -> bytes:
    """The line `parse` reads back as `command`."""
    if isinstance(command, Stop):
        return f"{STOP}\n".encode()
    rate, burst = command.limits.client_rate, command.limits.client_burst
    return (f"{RELOAD} {command.max_value_bytes} {command.log_level} "
            f"{NONE if rate is None else repr(rate)} {NONE if burst is None else burst}\n").encode()


def parse(line: bytes) -> Command:
    """The command of one line; ValueError for any other line."""
    words = line.decode(errors="replace").split()
    if words == [STOP]:
        return Stop()
    if len(words) == 5 and words[0] == RELOAD:
        size, level = words[1], words[2].upper()
        limits = _limits(words[3], words[4])
        if size.isascii() and size.isdigit() and int(size) > 0 and level in LOG_LEVELS and limits:
            return Reload(int(size), level, limits)
    raise ValueError(f"unknown control command {line[:80]!r}")


def _limits(rate: str, burst: str) -> LimitsSettings | None:
    """The [limits] of a reload line, None when the words are not a rate and a burst."""
    if rate == NONE:
        return LimitsSettings() if burst == NONE else None
    try:
        value = float(rate)
    except ValueError:
        return None
    if not 0 < value < float("inf"):
        return None
    if burst == NONE:
        return LimitsSettings(value)
    if not (burst.isascii() and burst.isdigit() and int(burst) > 0):
        return None
    return LimitsSettings(value, int(burst))
