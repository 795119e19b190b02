"""Output of raftctl: rich tables for terminals, tab-separated plain text and stable JSON.

The same rows feed the table and the plain output so the two never disagree.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from raftctl.client import TCP_SCHEME
from raftkv.backupfile import BackupInfo

OUTPUT_TABLE = "table"
OUTPUT_JSON = "json"
OUTPUT_PLAIN = "plain"
OUTPUTS = (OUTPUT_TABLE, OUTPUT_JSON, OUTPUT_PLAIN)

NONE = "-"
PIPE_WIDTH = 200
UNREACHABLE = "unreachable"
ROLE_LEADER = "leader"
STATUS_COLUMNS = (
    "ID", "ENDPOINT", "ROLE", "TERM", "LEADER", "LAST", "COMMIT", "APPLIED", "LAG", "HEALTH",
)
"""LAST: the node's last log index; COMMIT and APPLIED its commit and applied indexes."""
MEMBER_COLUMNS = ("ID", "CLIENT", "RAFT", "HTTP", "ROLE")
_WRAPPING_COLUMNS = frozenset({"ENDPOINT", "CLIENT", "RAFT", "HTTP"})
_HEALTH_STYLES = {"healthy": "green", "unhealthy": "yellow", UNREACHABLE: "red"}

Node = dict[str, Any]


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line)


def print_rows(rows: list[list[str]], columns: tuple[str, ...], output: str) -> None:
    """A rich table on the terminal; one tab-separated line per row for scripts."""
    if output == OUTPUT_PLAIN:
        print_lines("\t".join(row) for row in rows)
    else:
        console().print(make_table(rows, columns))


def console() -> Console:
    """The terminal's width on a terminal; wide enough never to squeeze a table in a pipe."""
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)


def make_table(rows: list[list[str]], columns: tuple[str, ...], caption: str | None = None) -> Table:
    """Compact enough for an 80-column terminal: one space between columns, no outer edge,
    and no cell ever cut short: if the terminal is narrower still, addresses wrap."""
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold underline",
                  caption=caption)
    for name in columns:
        wraps = name in _WRAPPING_COLUMNS
        table.add_column(name, no_wrap=not wraps, overflow="fold", min_width=len(name))
    for row in rows:
        table.add_row(*row, style=_row_style(row, columns))
    return table


def _row_style(row: list[str], columns: tuple[str, ...]) -> str | None:
    if "HEALTH" in columns:
        return _HEALTH_STYLES.get(row[columns.index("HEALTH")])
    return "bold" if ROLE_LEADER in row else None


def sorted_nodes(nodes: list[Node]) -> list[Node]:
    return sorted(nodes, key=lambda node: node.get("id", 0))


def is_reachable(node: Node) -> bool:
    return bool(node.get("reachable", True))


def leader_of(nodes: list[Node]) -> Node | None:
    return next((n for n in nodes if is_reachable(n) and n.get("role") == ROLE_LEADER), None)


def status_rows(nodes: list[Node]) -> list[list[str]]:
    """One row per node, unreachable ones included (SPEC §4: shown, not dropped)."""
    leader = leader_of(nodes)
    return [_status_row(node, leader) for node in sorted_nodes(nodes)]


def _status_row(node: Node, leader: Node | None) -> list[str]:
    identity = [_cell(node.get("id")), _address(node.get("endpoint"))]
    if not is_reachable(node):
        return [*identity, UNREACHABLE, *[NONE] * 6, UNREACHABLE]
    return [
        *identity,
        _cell(node.get("role")),
        _cell(node.get("term")),
        _cell(node.get("leader_id") or None),  # 0 = no known leader
        *(_cell(node.get(f)) for f in ("last_index", "commit", "applied")),
        _lag(node, leader),
        "healthy" if node.get("healthy") else "unhealthy",
    ]


def _lag(node: Node, leader: Node | None) -> str:
    """The leader's own measure when the node reports it, else last-index distance."""
    if node.get("lag") is not None:
        return _cell(node["lag"])
    if leader is None or node.get("last_index") is None or leader.get("last_index") is None:
        return NONE
    return str(max(0, int(leader["last_index"]) - int(node["last_index"])))


def _address(endpoint: str | None) -> str:
    """host:port, as given to -e: the scheme only widens the table."""
    return _cell(endpoint.removeprefix(TCP_SCHEME) if endpoint else None)


def _cell(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


def print_status(nodes: list[Node], output: str) -> None:
    if output == OUTPUT_JSON:
        print_json(sorted_nodes(nodes))
    else:
        print_rows(status_rows(nodes), STATUS_COLUMNS, output)


def member_rows(nodes: list[Node]) -> list[list[str]]:
    return [
        [
            _cell(n.get("id")),
            _address(n.get("endpoint")),
            _address(n.get("raft")),
            _cell(n.get("http")),
            _member_role(n) if is_reachable(n) else UNREACHABLE,
        ]
        for n in sorted_nodes(nodes)
    ]


def _member_role(node: Node) -> str:
    """A learner replicates like a follower but does not vote: say so."""
    if node.get("id") in node.get("learners", ()):
        return "learner"
    return _cell(node.get("role"))


def print_members(nodes: list[Node], output: str) -> None:
    if output == OUTPUT_JSON:
        keys = ("id", "endpoint", "raft", "http")
        print_json([
            {**{k: n.get(k) for k in keys}, "role": _member_role(n) if is_reachable(n) else None,
             "reachable": is_reachable(n)}
            for n in sorted_nodes(nodes)
        ])
    else:
        print_rows(member_rows(nodes), MEMBER_COLUMNS, output)


def print_items(items: list[tuple[str, str]], output: str) -> None:
    """`list`: keys only on text outputs, keys and values in JSON (SPEC §4)."""
    if output == OUTPUT_JSON:
        print_json([{"key": k, "value": v} for k, v in items])
    else:
        print_lines(k for k, _ in items)


def print_event(event: dict[str, Any], output: str) -> None:
    """`watch`: one line per change, flushed at once so that a pipe sees it (SPEC §4): JSON
    lines, or `PUT key value` / `DELETE key` with line breaks in them shown as \\n."""
    if output == OUTPUT_JSON:
        print_json(event)
    else:
        words = [event["type"].upper(), event["key"]]
        if event["type"] == "put":
            words.append(event["value"])
        click.echo(" ".join(words).replace("\r", "\\r").replace("\n", "\\n"))
    sys.stdout.flush()


def print_bench(result: dict[str, Any], output: str) -> None:
    if output == OUTPUT_JSON:
        print_json(result)
        return
    latency = result["latency_ms"]
    print_lines(
        [
            f"{result['op']}: {result['ops']} ops in {result['seconds']:.2f} s with "
            f"{result['clients']} clients: {result['ops_per_sec']:.1f} ops/s",
            "latency ms: " + "  ".join(f"{name} {value:.2f}" for name, value in latency.items()),
            *([f"rate limited: {result['rate_limited']} answers (retried), "
               f"{result['rate_limited_gave_up']} ops gave up"]
              if result.get("rate_limited") else []),
        ]
    )


def print_backup(path: str, info: BackupInfo, output: str) -> None:
    """What a checked backup file holds (`snapshot status`)."""
    header = info.header
    members = ", ".join(
        f"{i}{' (learner)' if int(i) in header['learners'] else ''}" for i in sorted(
            header["members"], key=int))
    data = {"file": path, "format": header["format"], "index": info.index, "term": info.term,
            "revision": header["revision"], "keys": info.keys, "voters": header["voters"],
            "learners": header["learners"], "members": header["members"],
            "node_id": header["node_id"], "created": header["created"], "bytes": info.size,
            "sha256": info.sha256, "checksum": "ok"}
    if output == OUTPUT_JSON:
        print_json(data)
        return
    created = datetime.fromtimestamp(header["created"], UTC).isoformat(timespec="seconds")
    rows = [["file", path], ["index", str(info.index)], ["term", str(info.term)],
            ["revision", str(header["revision"])], ["keys", str(info.keys)],
            ["members", members or "-"], ["taken from", f"node {header['node_id']} at {created}"],
            ["bytes", str(info.size)], ["sha256", info.sha256], ["checksum", "ok"]]
    print_rows(rows, ("field", "value"), output)
