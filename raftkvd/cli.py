"""`raftkvd`: run one node, or a local development cluster of background nodes."""

from __future__ import annotations

import logging
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import zmq

from raftkv.backupfile import BackupError

from .errors import RaftKVError
from .localcluster import LocalCluster, LocalClusterError, status_keys
from .settings import LOG_FORMAT, LOG_LEVELS, Settings, SettingsError, load_cluster, load_settings
from .startchecks import StartCheckError, check_http_files, check_secrets, warn_if_exposed

EXIT_CONFIG = 2
EXIT_RUNTIME = 1
NODE_FACTORY = "node_factory"


def _fail(message: str, code: int) -> None:
    click.echo(f"raftkvd: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """raftkvd: a replicated, strongly consistent key-value store on Raft.

    Run one node in the foreground with `raftkvd run`, or a local development cluster
    (every node of a cluster file, in the background) with `raftkvd cluster start`.
    """


_node_options = [
    click.option("--config", "config_path", envvar="RAFTKVD_CONFIG", type=click.Path(dir_okay=False),
                 help="Cluster TOML file (env RAFTKVD_CONFIG)."),
    # RAFTKVD_ID is read by load_settings (not click), so a bad value is reported as one line.
    click.option("--id", "node_id", type=int, help="The node's id (env RAFTKVD_ID)."),
    click.option("--data-dir", type=click.Path(file_okay=False),
                 help="Override the node's data_dir (env RAFTKVD_DATA_DIR)."),
]


def node_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that name one node of a cluster file (run, restore, recover)."""
    for option in reversed(_node_options):
        fn = option(fn)
    return fn


@cli.command()
@node_options
@click.option("--log-level", type=click.Choice([level.lower() for level in LOG_LEVELS], case_sensitive=False),
              help="Log level, in any case (env RAFTKVD_LOG_LEVEL, then the file's [cluster] log_level, "
                   "default info). Given here or in the environment, it also wins over the file "
                   "on a reload (SIGHUP).")
@click.option("--join", is_flag=True, default=False,
              help="Join a running cluster after `raftctl member add` (env RAFTKVD_JOIN=1): a "
                   "new data dir learns its membership from the leader instead of the file.")
@click.pass_obj
def run(obj: dict[str, Any] | None, config_path: str | None, node_id: int | None, data_dir: str | None,
        log_level: str | None, join: bool) -> None:
    """Run one node in the foreground; logs go to stderr. SIGTERM/SIGINT stop it cleanly.

    SIGHUP re-reads the cluster file and applies the log level and max_value_bytes; other
    changes take effect at restart, and an invalid file keeps the running settings.
    """
    from .server.node import Node

    make_node = (obj or {}).get(NODE_FACTORY, Node)
    try:
        settings = load_settings(config_path, node_id=node_id, data_dir=data_dir, log_level=log_level,
                                 join=join)
    except SettingsError as exc:
        _fail(str(exc), EXIT_CONFIG)
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format=LOG_FORMAT,
    )
    try:
        check_secrets(settings)
        check_http_files(settings)
    except StartCheckError as exc:
        _fail(str(exc), EXIT_CONFIG)
    warn_if_exposed(settings)
    try:
        node = make_node(settings)
    except zmq.ZMQError as exc:
        _fail(f"node {settings.node.id}: cannot bind its endpoints: {exc}", EXIT_RUNTIME)
    except RaftKVError as exc:
        _fail(f"node {settings.node.id}: {exc}", EXIT_RUNTIME)
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    signal.signal(signal.SIGINT, lambda *_: node.stop())
    signal.signal(signal.SIGHUP, lambda *_: node.reload())
    try:
        node.run()
    except RaftKVError as exc:
        _fail(f"node {settings.node.id}: {exc}", EXIT_RUNTIME)


def _node_settings(config_path: str | None, node_id: int | None, data_dir: str | None) -> Settings:
    try:
        return load_settings(config_path, node_id=node_id, data_dir=data_dir)
    except SettingsError as exc:
        _fail(str(exc), EXIT_CONFIG)
        raise AssertionError("unreachable") from exc


@cli.command()
@click.argument("backup", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@node_options
def restore(backup: Path, config_path: str | None, node_id: int | None, data_dir: str | None) -> None:
    """Seed a new node's empty data dir from FILE, a backup made by `raftctl snapshot save`.

    Restore every node of a new cluster from the same file, each with its --id; the new
    cluster's members are the nodes of the cluster file (--config), whatever the backup's
    were. Then start the nodes as usual. A damaged or truncated FILE, or a data dir that is
    not empty, is refused (exit 2) and nothing is written.
    """
    from .offline.restore import restore as run_restore

    settings = _node_settings(config_path, node_id, data_dir)
    try:
        done = run_restore(backup, settings)
    except (RaftKVError, BackupError, OSError) as exc:
        _fail(f"restore: {exc}", EXIT_CONFIG)
    click.echo(f"restored node {settings.node.id} into {done.data_dir}: index {done.info.index}, "
               f"{done.info.keys} keys, members {', '.join(map(str, done.voters))} "
               f"({done.seconds:.1f}s)")


@cli.command()
@node_options
@click.option("--force-new-cluster", is_flag=True,
              help="Required: make this node the only member of a new cluster.")
def recover(config_path: str | None, node_id: int | None, data_dir: str | None,
            force_new_cluster: bool) -> None:
    """Disaster recovery when a majority is lost for good: turn this stopped node into a
    one-member cluster that keeps all its data (every entry of its log is applied).

    Run it on the survivor with the highest last log index; start it with `raftkvd run`,
    then add the others back as new nodes: `raftctl member add`, and `raftkvd run --join`
    on an empty data dir. See the README's runbook.
    """
    from .offline.recover import recover as run_recover

    if not force_new_cluster:
        _fail("recover rewrites the membership: confirm with --force-new-cluster", EXIT_CONFIG)
    settings = _node_settings(config_path, node_id, data_dir)
    try:
        done = run_recover(settings)
    except (RaftKVError, OSError) as exc:
        _fail(f"recover: {exc}", EXIT_CONFIG)
    click.echo(f"node {settings.node.id} is now the only member (was: "
               f"{', '.join(map(str, done.former_members)) or 'none'}): index {done.index}, term "
               f"{done.term}, {done.keys} keys ({done.index - done.applied_before} entries "
               "applied); start it, then add members back with `raftctl member add`")


_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@cli.command()
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
def keygen(directory: Path, names: tuple[str, ...]) -> None:
    """Make a CurveZMQ key pair per NAME in DIR: NAME.key (public) and NAME.key_secret
    (secret, mode 0600), in pyzmq's certificate format.

    Nodes are named node<ID> (node 1 uses curve_dir/node1.key_secret); put the public keys
    of clients (raftctl, scripts) under curve_dir/clients/ and give each client its
    .key_secret (raftctl --key). Existing files are never overwritten.
    """
    from raftkv.curve import KeyFileError
    from raftkv.curve import keygen as make_pair

    for name in names:
        if not _KEY_NAME.fullmatch(name):
            _fail(f"keygen: {name!r} is not a key name (letters, digits, '_', '-', '.'; "
                  "up to 64)", EXIT_CONFIG)
    for name in names:
        try:
            public, secret = make_pair(directory, name)
        except (KeyFileError, OSError) as exc:
            _fail(f"keygen: {exc}", EXIT_CONFIG)
        click.echo(f"{public}  {secret}")


@cli.group()
def token() -> None:
    """Bearer tokens for the REST API ([security] tokens_file); nodes re-read the file on SIGHUP."""


_tokens_file = click.option("--tokens-file", required=True, envvar="RAFTKVD_TOKENS_FILE",
                            type=click.Path(dir_okay=False, path_type=Path),
                            help="The tokens file (env RAFTKVD_TOKENS_FILE).")


@token.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["read", "write", "admin"]),
              help="read may GET; write also PUT and DELETE keys; admin anything.")
@_tokens_file
@click.option("--replace", is_flag=True, help="Revoke NAME's token and make a new one.")
def token_add(name: str, role: str, tokens_file: Path, replace: bool) -> None:
    """Make a token for NAME and print it, once: the file keeps only its hash (created mode
    0600). Then SIGHUP the nodes (or restart them) to let it in."""
    from .http.tokens import Role, TokenFileError, add_token

    try:
        made = add_token(tokens_file, name, Role.parse(role), replace=replace)
    except (TokenFileError, OSError) as exc:
        _fail(f"token add: {exc}", EXIT_CONFIG)
    click.echo(made)


@token.command("list")
@_tokens_file
def token_list(tokens_file: Path) -> None:
    """The names and roles in the tokens file (never a hash)."""
    from .http.tokens import TokenFileError, read_entries

    try:
        entries = read_entries(tokens_file)
    except TokenFileError as exc:
        _fail(f"token list: {exc}", EXIT_CONFIG)
    for entry in entries:
        click.echo(f"{entry.name}\t{entry.role.label}")


@cli.group()
def cluster() -> None:
    """The local development cluster: every node of a cluster file as a background process."""


_config_option = click.option(
    "--config", "config_path", envvar="RAFTKVD_CONFIG", default="conf/cluster.toml", show_default=True,
    type=click.Path(dir_okay=False), help="Cluster TOML file.",
)


def _local_cluster(config_path: str, *, asks_status: bool = True) -> LocalCluster:
    """`asks_status`: load the key the status fetches need (stopping needs none)."""
    try:
        settings = load_cluster(config_path)
        keys = status_keys(settings) if asks_status else None
        return LocalCluster(settings, Path(config_path), keys)
    except (SettingsError, LocalClusterError) as exc:
        _fail(str(exc), EXIT_CONFIG)
        raise AssertionError("unreachable") from exc


@cluster.command()
@_config_option
@click.option("--timeout", default=20.0, show_default=True, help="Seconds to wait for a leader.")
def start(config_path: str, timeout: float) -> None:
    """Start every node in the background (pid and log in each data dir); succeed only once
    every node serves and a leader is elected, else name each node that does not, and why."""
    local = _local_cluster(config_path)
    for line in local.start():
        click.echo(line)
    leader, problems = local.wait_until_serving(timeout)
    for line in problems:
        click.echo(line, err=True)
    if problems:
        _fail(f"{len(problems)} of {len(local.cluster.nodes)} node(s) did not start; stop the "
              "others with `raftkvd cluster stop`", EXIT_RUNTIME)
    if leader is None:
        _fail(f"no leader elected within {timeout:.0f}s; see the logs in each data dir", EXIT_RUNTIME)
    click.echo(f"cluster ready: every node serves, leader is node {leader}")


@cluster.command()
@_config_option
def stop(config_path: str) -> None:
    """Stop the nodes started by `cluster start` (SIGTERM, then SIGKILL after 10 s), by pid."""
    for line in _local_cluster(config_path, asks_status=False).stop():
        click.echo(line)


@cluster.command()
@_config_option
def status(config_path: str) -> None:
    """Show each local node: process state and Raft role."""
    for line in _local_cluster(config_path).status_lines():
        click.echo(line)


def main(args: list[str] | None = None, node_factory: Callable[..., Any] | None = None) -> None:
    """Console-script entry point: usage errors are one line and exit code 2, like config errors.
    `node_factory(settings)` builds the node `run` runs (tests pass seams in through it)."""
    obj = {NODE_FACTORY: node_factory} if node_factory is not None else None
    try:
        cli.main(args=args, prog_name="raftkvd", standalone_mode=False, obj=obj)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(EXIT_CONFIG)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", EXIT_CONFIG)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
