"""SIGHUP (SPEC §3): what a running node takes from its re-read cluster file.

Only the settings in RELOADABLE change at run time; any other difference (addresses, data
dir, timeouts, map size, the node list) is named in one warning and waits for a restart,
because the sockets, the LMDB environment and the consensus core were built from it. A file
that no longer loads changes nothing: the node keeps every running setting and logs one line.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any

from ..settings import Settings, SettingsError

log = logging.getLogger(__name__)

RELOADABLE = frozenset({"log_level", "cluster.log_level", "cluster.max_value_bytes",
                        "cluster.limits.client_rate", "cluster.limits.client_burst"})
"""Dotted paths into Settings that a running node applies (Node._apply_reloadable does it).
To make a setting reloadable, name it here and apply it there."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The outcome of re-reading the file: what to run with, and what differed."""

    settings: Settings
    """The running settings with the reloadable ones taken from the file."""
    applied: tuple[str, ...]
    """Reloadable settings whose value changed."""
    restart_only: tuple[str, ...]
    """Settings the file changed that take effect at the next start only."""


def reread(running: Settings) -> Outcome | None:
    """Load the cluster file again as at start and decide; None (and one logged line) when
    it does not load, so the caller keeps `running` untouched."""
    try:
        loaded = running.reload()
    except SettingsError as exc:
        log.error("node=%d event=reload_failed error=%s", running.node.id, _quoted(str(exc)))
        return None
    outcome = plan(running, loaded)
    if outcome.restart_only:
        log.warning("node=%d event=reload_not_applied fields=%s note=%s", running.node.id,
                    ",".join(outcome.restart_only), _quoted("takes effect at restart"))
    return outcome


def plan(running: Settings, loaded: Settings) -> Outcome:
    """Pure: the reloadable settings of `loaded` on top of `running`, and what differed."""
    changed = differences(running, loaded)
    settings = running
    for path in sorted(RELOADABLE):
        settings = _with(settings, path, _get(loaded, path))
    return Outcome(
        settings,
        applied=tuple(path for path in changed if path in RELOADABLE),
        restart_only=tuple(path for path in changed if path not in RELOADABLE),
    )


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the fields that differ, descending into dataclasses (fields that are
    not settings, declared compare=False, are skipped)."""
    if old == new:
        return []
    if not (dataclasses.is_dataclass(old) and type(old) is type(new)):
        return [prefix]
    found: list[str] = []
    for field in dataclasses.fields(old):
        if field.compare:
            path = f"{prefix}.{field.name}" if prefix else field.name
            found += differences(getattr(old, field.name), getattr(new, field.name), path)
    return found


def _get(obj: Any, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), obj)


def _with(obj: Any, path: str, value: Any) -> Any:
    """A copy of the frozen dataclass `obj` with the field at dotted `path` set to `value`."""
    head, _, rest = path.partition(".")
    return dataclasses.replace(obj, **{head: _with(getattr(obj, head), rest, value) if rest else value})


def _quoted(text: str) -> str:
    """A log value with spaces, as one key="..." token (inner quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
