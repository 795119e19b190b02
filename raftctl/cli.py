"""raftctl: the command line of a raftkv cluster (SPEC §4).

Every failure leaves as one line on stderr and an exit code (0 ok, 1 not found
or compare failed, 2 usage, 3 unavailable, 4 rejected); `main` is the one place
that maps exceptions to codes.
"""

from __future__ import annotations

import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.live import Live
from rich.progress import Progress
from rich.table import Table

from raftctl import backup, render
from raftctl.bench import LoadRun, RequestMaker, bench_key, bench_result
from raftctl.client import DEFAULT_TIMEOUT, Client, normalize_endpoint
from raftctl.errors import EXIT_OK, EXIT_USAGE, RaftCtlError, Unavailable, UsageError
from raftctl.security import KEY_ENV, client_curve
from raftkv.curve import ClientCurve
from raftkv.protocol import CONSISTENCY_LINEARIZABLE, CONSISTENCY_SERIALIZABLE, MAX_KEY_BYTES

DEFAULT_ENDPOINTS = "127.0.0.1:20061,127.0.0.1:20062,127.0.0.1:20063"
ENDPOINTS_ENV = "RAFTCTL_ENDPOINTS"
STDIN_ARG = "-"
EXIT_INTERRUPTED = 130
WATCH_INTERVAL = 1.0
BENCH_OPS = ("put", "get")
BENCH_GET_KEYS = 1000
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

consistency_option = click.option(
    "--consistency",
    type=click.Choice([CONSISTENCY_LINEARIZABLE, CONSISTENCY_SERIALIZABLE]),
    default=CONSISTENCY_LINEARIZABLE,
    show_default=True,
    help="serializable may answer from a stale node, without a round to the leader.",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options, resolved once for every command."""

    endpoints: list[str]
    timeout: float
    output: str
    curve: ClientCurve | None = None
    """With --key: CurveZMQ to every node (SPEC §8)."""

    def client(self) -> Client:
        """A Client that is closed when the running command's context closes."""
        return click.get_current_context().with_resource(
            Client(self.endpoints, self.timeout, curve=self.curve))

    def done(self, data: dict[str, Any], text: str) -> None:
        """Report a success: `data` as JSON with -o json, else the one-line `text`."""
        if self.output == render.OUTPUT_JSON:
            render.print_json(data)
        else:
            click.echo(text)


pass_settings = click.make_pass_decorator(Settings)


def parse_endpoints(text: str) -> list[str]:
    """Split "host:port,host:port" and normalize each to tcp://host:port."""
    endpoints = [normalize_endpoint(part) for part in text.split(",") if part.strip()]
    if not endpoints:
        raise UsageError("no endpoints given")
    return endpoints


def read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as error:
        raise UsageError(f"cannot read config {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"config {path}: {error}") from error


def endpoints_from_config(path: Path, data: dict[str, Any] | None = None) -> list[str]:
    """The `client` endpoint of every [[node]] table of a cluster TOML file (SPEC §2)."""
    data = read_config(path) if data is None else data
    nodes = data.get("node")
    if not isinstance(nodes, list) or not nodes:
        raise UsageError(f"config {path}: no [[node]] tables")
    endpoints = []
    for number, node in enumerate(nodes, start=1):
        client = node.get("client") if isinstance(node, dict) else None
        if not isinstance(client, str) or not client:
            raise UsageError(f"config {path}: node #{number} has no string field 'client'")
        endpoints.append(normalize_endpoint(client))
    return endpoints


def _resolve_endpoints(ctx: click.Context, endpoints: str, config: Path | None,
                       data: dict[str, Any] | None) -> list[str]:
    """--config replaces the endpoint list; giving both on the command line is ambiguous."""
    if config is None:
        return parse_endpoints(endpoints)
    if ctx.get_parameter_source("endpoints") == ParameterSource.COMMANDLINE:
        raise UsageError("give either -e/--endpoints or --config, not both")
    return endpoints_from_config(config, data)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option(
    "-e",
    "--endpoints",
    envvar=ENDPOINTS_ENV,
    default=DEFAULT_ENDPOINTS,
    show_default=True,
    show_envvar=True,
    help="Client endpoints of the nodes, host:port,... (any node will do).",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take the endpoints from a cluster TOML file ([[node]] client = ...).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Give up on a request (retries and redirects included) after this long.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(render.OUTPUTS),
    default=render.OUTPUT_TABLE,
    show_default=True,
    help="Output format.",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=KEY_ENV,
    show_envvar=True,
    metavar="FILE",
    help="CurveZMQ: this client's NAME.key_secret (the nodes' keys come from --config's curve_dir).",
)
@click.version_option(package_name="raftkv", prog_name="raftctl")
@click.pass_context
def cli(ctx: click.Context, endpoints: str, config: Path | None, timeout: float, output: str,
        key: Path | None) -> None:
    """Command-line client of a raftkv cluster.

    Any node may be asked: followers redirect to the leader, invisibly.
    Exit codes: 0 ok, 1 key not found or compare failed, 2 usage or
    configuration error, 3 cluster unavailable, 4 request rejected.
    """
    data = read_config(config) if config is not None else None
    ctx.obj = Settings(_resolve_endpoints(ctx, endpoints, config, data), timeout, output,
                       client_curve(key, data, config))


@cli.command()
@click.argument("key")
@click.argument("value")
@pass_settings
def put(settings: Settings, key: str, value: str) -> None:
    """Write VALUE under KEY.

    A linearizable write; VALUE "-" reads the value from stdin, verbatim.
    """
    if value == STDIN_ARG:
        value = sys.stdin.read()
    revision = settings.client().put(key, value)
    settings.done({"key": key, "revision": revision}, "OK")


@cli.command()
@click.argument("key")
@consistency_option
@pass_settings
def get(settings: Settings, key: str, consistency: str) -> None:
    """Print the value of KEY.

    Prints the value alone; a missing key exits 1.
    """
    value = settings.client().get(key, consistency)
    settings.done({"key": key, "value": value}, value)


@cli.command("del")
@click.argument("key")
@pass_settings
def delete(settings: Settings, key: str) -> None:
    """Delete KEY.

    A linearizable delete; prints "deleted" or "not found" (exit 0 either way).
    """
    deleted = settings.client().delete(key)
    settings.done({"key": key, "deleted": deleted}, "deleted" if deleted else "not found")


@cli.command("list")
@click.argument("prefix", default="")
@click.option("--limit", type=click.IntRange(min=1), help="Return at most N keys.", metavar="N")
@consistency_option
@pass_settings
def list_keys(settings: Settings, prefix: str, limit: int | None, consistency: str) -> None:
    """List the keys starting with PREFIX.

    Keys in key order, one per line; -o json gives keys and values.
    """
    items = settings.client().list(prefix, limit, consistency)
    render.print_items(items, settings.output)


@cli.command()
@click.argument("key")
@click.argument("expected")
@click.argument("new")
@pass_settings
def cas(settings: Settings, key: str, expected: str, new: str) -> None:
    """Compare-and-set KEY from EXPECTED to NEW.

    Exits 1, showing the current value, when KEY does not hold EXPECTED.
    """
    revision = settings.client().cas(key, expected, new)
    settings.done({"key": key, "revision": revision}, "OK")


@cli.command()
@click.argument("key", required=False)
@click.option("--prefix", metavar="P", help="Watch every key starting with P instead of one KEY "
              "(\"\" for all keys).")
@click.option("--rev", type=click.IntRange(min=1), metavar="R",
              help="Start at revision R (default: the changes after this command starts).")
@pass_settings
def watch(settings: Settings, key: str | None, prefix: str | None, rev: int | None) -> None:
    """Print every committed change to KEY, or to the keys under --prefix.

    One line per change in revision order: PUT KEY VALUE or DELETE KEY; -o json gives one
    object per line (type, key, value, revision). Any node serves the watch; when that
    node fails, another takes over at the next revision, so no change is missed or shown
    twice. Runs until Ctrl-C (exit 0); exit 4 when --rev is older than the history kept.
    """
    if (key is None) == (prefix is None):
        raise UsageError("watch takes a KEY or --prefix P (one of them)")
    try:
        for event in settings.client().watch(key, prefix=prefix, rev=rev):
            render.print_event(event, settings.output)
    except KeyboardInterrupt:
        return


@cli.command()
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
@pass_settings
def status(settings: Settings, watch: bool) -> None:
    """Show the status of every node.

    One row per node: role, term, leader, log indices, lag behind the leader
    and health; unreachable nodes are listed as such.
    """
    client = settings.client()
    if not watch:
        nodes, problem = _cluster_view(client)
        render.print_status(nodes, settings.output)
        if problem is not None:
            raise Unavailable(f"no leader to ask, so each node's own view is shown ({problem})")
        return
    if settings.output != render.OUTPUT_TABLE:
        raise UsageError("status --watch draws a table; it cannot be combined with -o json|plain")
    _watch_status(client)


def _cluster_view(client: Client) -> tuple[list[dict[str, Any]], str | None]:
    """Every member as the leader sees them; with no leader, each endpoint's own view, and why."""
    try:
        return client.cluster(), None
    except Unavailable as error:
        return client.node_statuses(), str(error)


def _watch_status(client: Client) -> None:
    """Redraw in place every WATCH_INTERVAL; Ctrl-C (exit 130) is the way out."""
    with Live(_status_view(client), console=render.console(), auto_refresh=False) as live:
        while True:
            next_refresh = time.monotonic() + WATCH_INTERVAL
            time.sleep(max(0.0, next_refresh - time.monotonic()))
            live.update(_status_view(client), refresh=True)


def _status_view(client: Client) -> Table:
    """The status table; with no leader, each node's own view and a caption saying why."""
    nodes, problem = _cluster_view(client)
    caption = f"updated {time.strftime('%H:%M:%S')}" + (f" — no leader: {problem}" if problem else "")
    return render.make_table(render.status_rows(nodes), render.STATUS_COLUMNS, caption)


@cli.group()
def member() -> None:
    """Cluster membership: list, add and remove nodes."""


@member.command("list")
@pass_settings
def member_list(settings: Settings) -> None:
    """List the nodes with their client, raft and http addresses."""
    render.print_members(settings.client().cluster(), settings.output)


@member.command("add")
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@click.argument("raft")
@click.argument("client")
@click.argument("http")
@pass_settings
def member_add(settings: Settings, node_id: int, raft: str, client: str, http: str) -> None:
    """Add node ID with its RAFT and CLIENT endpoints (tcp://HOST:PORT) and HTTP address
    (HOST:PORT).

    The node joins as a non-voter: start it with `raftkvd run --config FILE --id ID --join`
    (FILE lists the running nodes and the new one). It receives a snapshot and the log,
    and the leader makes it a voter once it has caught up.
    """
    index = settings.client().member_add(node_id, raft, client, http)
    settings.done({"id": node_id, "index": index},
                  f"added node {node_id} as a learner (index {index}); start it with --join; "
                  "it becomes a voter once caught up")


@member.command("remove")
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@pass_settings
def member_remove(settings: Settings, node_id: int) -> None:
    """Remove node ID from the cluster, the leader included.

    The removed node stops by itself with exit 0 (its supervisor leaves it down): once it
    applies its removal, or when a member it contacts tells it. To bring the id back later,
    `member add` it again and start it with --join on an empty data dir.
    """
    index = settings.client().member_remove(node_id)
    settings.done({"id": node_id, "index": index}, f"removed node {node_id} (index {index})")


@cli.group()
def leader() -> None:
    """Leadership: hand it to another node."""


@leader.command("transfer")
@click.option("--to", "to", type=click.IntRange(min=0), default=0, metavar="ID",
              help="Target node (default: the most caught-up follower).")
@pass_settings
def leader_transfer(settings: Settings, to: int) -> None:
    """Hand leadership to another node."""
    leader_id = settings.client().transfer_leader(to)
    settings.done({"leader_id": leader_id}, f"leader is node {leader_id}")


class _SnapshotGroup(click.Group):
    """`snapshot ID` (compact that node now) beside `snapshot save|status FILE`: a first
    argument that is a number names a node."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0].isdigit():
            args = ["compact", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_SnapshotGroup)
def snapshot() -> None:
    """Snapshots: compact a node's log now (`snapshot ID`), back up the whole store to a file
    (`snapshot save FILE`), check a backup file (`snapshot status FILE`). Restore a backup into
    a new cluster with `raftkvd restore`."""


@snapshot.command("compact")
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@pass_settings
def snapshot_compact(settings: Settings, node_id: int) -> None:
    """Snapshot node ID and compact its log now (also: `raftctl snapshot ID`)."""
    client = settings.client()
    node = _find_node(client.cluster(), node_id)
    index = client.snapshot(node["endpoint"])
    settings.done({"id": node_id, "index": index}, f"node {node_id}: snapshot at index {index}")


@snapshot.command("save")
@click.argument("file", type=click.Path(path_type=Path))
@pass_settings
def snapshot_save(settings: Settings, file: Path) -> None:
    """Back up the whole store into FILE: a consistent copy at a committed index, streamed
    from the leader while it keeps serving, written atomically (FILE appears only once
    complete and checked). Prints the index, key count, size and sha256."""
    progress = _progress()
    task = progress.add_task("backup", total=None)
    with progress:
        saved = backup.save(settings.client(), file,
                            lambda rows, keys: progress.update(task, completed=rows, total=keys))
    info = saved.info
    settings.done(saved.as_dict(), f"saved {file}: index {info.index}, {info.keys} keys, "
                                   f"{info.size} bytes, sha256 {info.sha256}")


@snapshot.command("status")
@click.argument("file", type=click.Path(path_type=Path))
@pass_settings
def snapshot_status(settings: Settings, file: Path) -> None:
    """Check a backup FILE and print what it holds: index, term, revision, key count,
    membership, and whether the checksum holds (exit 1 when it does not)."""
    progress = _progress()
    task = progress.add_task("checking", total=None)
    with progress:
        info = backup.describe(file, lambda rows, keys: progress.update(task, completed=rows,
                                                                        total=keys))
    render.print_backup(str(file), info, settings.output)


def _find_node(nodes: list[dict[str, Any]], node_id: int) -> dict[str, Any]:
    node = next((n for n in nodes if n.get("id") == node_id), None)
    if node is None:
        raise UsageError(f"no node with id {node_id} in the cluster")
    if not render.is_reachable(node):
        raise Unavailable(f"node {node_id} is unreachable")
    return node


@cli.command()
@click.argument("op", type=click.Choice(BENCH_OPS))
@click.option("--clients", type=click.IntRange(min=1), default=8, show_default=True,
              help="Concurrent clients, each with its own session.")
@click.option("--total", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Operations in all, split among the clients.")
@click.option("--key-size", type=click.IntRange(1, MAX_KEY_BYTES), default=16, show_default=True,
              metavar="BYTES")
@click.option("--value-size", type=click.IntRange(min=0), default=256, show_default=True,
              metavar="BYTES")
@pass_settings
def bench(
    settings: Settings, op: str, clients: int, total: int, key_size: int, value_size: int
) -> None:
    """Load-test the cluster with puts or gets.

    Runs OP (put or get) TOTAL times over CLIENTS sessions, then prints ops/s
    and latency p50/p90/p99/max. `bench get` first writes the keys it reads
    (at most 1000, read round-robin).
    """
    keys = total if op == "put" else min(total, BENCH_GET_KEYS)
    if len(str(keys - 1)) > key_size:
        raise UsageError(f"--key-size {key_size} is too small for {keys} distinct keys")
    value = "x" * value_size

    def put_request(i: int) -> dict[str, Any]:
        return {"op": "put", "key": bench_key(i % keys, key_size), "value": value}

    def get_request(i: int) -> dict[str, Any]:
        return {"op": "get", "key": bench_key(i % keys, key_size), "consistency": "linearizable"}

    if op == "get":
        _run_load(settings, clients, keys, put_request, "writing keys")
    run = _run_load(settings, clients, total, get_request if op == "get" else put_request,
                    f"bench {op}")
    result = bench_result(op, min(clients, total), run.latencies, run.seconds)
    render.print_bench({**result, "key_size": key_size, "value_size": value_size,
                        "rate_limited": run.rate_limited, "rate_limited_gave_up": run.gave_up},
                       settings.output)


def _run_load(
    settings: Settings, clients: int, count: int, make_request: RequestMaker, label: str
) -> LoadRun:
    """Run `count` operations over `clients` sessions with a progress bar on stderr."""
    progress = _progress()
    task = progress.add_task(label, total=count)
    with progress:
        run = LoadRun(settings.endpoints, settings.timeout, clients, count, make_request,
                      on_done=lambda n: progress.advance(task, n), curve=settings.curve)
        run.run()
        return run


def _progress() -> Progress:
    """A progress bar on stderr when it is a terminal; nothing in pipes and logs."""
    return Progress(console=Console(stderr=True), disable=not sys.stderr.isatty())


def main(args: list[str] | None = None) -> int:
    """Console-script entry point: run raftctl and turn every failure into one line + code."""
    try:
        result = cli.main(args=args, prog_name="raftctl", standalone_mode=False)
    except RaftCtlError as error:
        _fail(str(error))
        return error.exit_code
    except click.exceptions.NoArgsIsHelpError as error:
        error.show()  # a bare `raftctl` or `raftctl member`: the help, as click does
        return EXIT_USAGE
    except click.ClickException as error:
        _fail(f"error: {_click_message(error)}")
        return error.exit_code
    except (click.Abort, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    except Exception as error:
        _fail(f"error: {error or type(error).__name__}")
        return 1
    return result if isinstance(result, int) else EXIT_OK


def _click_message(error: click.ClickException) -> str:
    """click's message, pointing at --help for usage errors instead of printing usage."""
    message = error.format_message()
    if isinstance(error, click.UsageError) and error.ctx is not None:
        message += f" (see '{error.ctx.command_path} --help')"
    return message


def _fail(message: str) -> None:
    """Errors are one line on stderr (SPEC §4), whatever the message holds."""
    click.echo(message.replace("\r", "\\r").replace("\n", "\\n"), err=True)
