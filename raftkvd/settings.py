"""Cluster TOML + environment + flags -> validated, typed settings (SPEC §2).

Precedence: flags > environment (RAFTKVD_*) > file > defaults. Everything is
checked before the node touches disk or network, and every problem is reported
as one line naming the offending field, so a typo fails at start (exit 2)
instead of surfacing later as a baffling runtime error. Unknown keys are
errors too: `heartbeat_intervall_ms` must not silently mean "use the default".

Relative `data_dir` paths are relative to the current working directory (so
`data_dir = "data/node1"` means ./data/node1 when run from the repo root, as
`make run` does), and are made absolute at load time.

Settings remember how they were loaded (`Origin`): a reload (SIGHUP) reads the file again
with the same id, flags and environment, so a flag given at start still wins over the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from raftkvd.errors import RaftKVError

MIB = 1024 * 1024
DEFAULT_ELECTION_TIMEOUT_MS = (150, 300)
DEFAULT_HEARTBEAT_INTERVAL_MS = 50
DEFAULT_MAX_VALUE_BYTES = 1 * MIB
MAX_VALUE_BYTES_LIMIT = 64 * MIB
"""Ceiling for max_value_bytes: a value travels in one frame (wire.MAX_FRAME_BYTES)."""
DEFAULT_MAP_SIZE_MB = 1024
MAX_MAP_SIZE_MB = 1024 * 1024
"""1 TiB: a sanity ceiling that catches a byte count given where MiB were meant."""
DEFAULT_SNAPSHOT_THRESHOLD = 10_000
DEFAULT_WATCH_HISTORY = 100_000
"""Revisions of changes kept for watches: about 100 s at 1,000 writes/s, a few MB of LMDB per
100-byte value; a watcher away for longer starts again from a fresh read."""
DEFAULT_LOG_LEVEL = "INFO"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_NODE_ID = 2**63 - 1

ENV_CONFIG = "RAFTKVD_CONFIG"
ENV_ID = "RAFTKVD_ID"
ENV_DATA_DIR = "RAFTKVD_DATA_DIR"
ENV_LOG_LEVEL = "RAFTKVD_LOG_LEVEL"
ENV_MAP_SIZE = "RAFTKVD_MAP_SIZE"
ENV_JOIN = "RAFTKVD_JOIN"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
"""One line per event on stderr, the same for the node and its HTTP process."""

CLUSTER_KEYS = frozenset(
    {
        "election_timeout_ms",
        "heartbeat_interval_ms",
        "max_value_bytes",
        "map_size_mb",
        "snapshot_threshold",
        "read_lease",
        "log_level",
        "watch_history",
    }
)
NODE_KEYS = frozenset({"id", "raft", "client", "http", "data_dir"})
SECURITY_KEYS = frozenset({"curve_dir", "tls_cert_file", "tls_key_file", "tokens_file", "open_paths"})
LIMITS_KEYS = frozenset({"client_rate", "client_burst"})
TOP_LEVEL_KEYS = frozenset({"cluster", "node", "security", "limits"})
DEFAULT_OPEN_PATHS = ("/health", "/ready", "/metrics")

_HOST = r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
_TCP_ENDPOINT = re.compile(rf"tcp://{_HOST}:(?P<port>[0-9]{{1,5}})")
_HTTP_ADDRESS = re.compile(rf"{_HOST}:(?P<port>[0-9]{{1,5}})")
_SIZE = re.compile(r"\s*([0-9]+)\s*(?:([KMGT])(?:I?B)?)?\s*", re.IGNORECASE)
_SIZE_UNITS = {None: MIB, "K": 1024, "M": MIB, "G": 1024 * MIB, "T": 1024 * 1024 * MIB}


class SettingsError(RaftKVError, ValueError):
    """Invalid configuration; `str()` is the single line shown to the user."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"config error: {field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class NodeSettings:
    id: int
    raft: str
    """Peer RPC endpoint, tcp://HOST:PORT; this node's ROUTER binds here."""
    client: str
    """raftctl endpoint, tcp://HOST:PORT."""
    http: str
    """REST/metrics address, HOST:PORT."""
    data_dir: Path


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """SPEC §8. Each part is on when its file is given; nothing given: the open development
    cluster. Paths are absolute (relative ones are relative to the working directory)."""

    curve_dir: Path | None = None
    """CurveZMQ keys: node<N>.key(_secret) per node, clients/*.key for the clients let in."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tokens_file: Path | None = None
    """Bearer tokens for REST (hashes only, `raftkvd token add`)."""
    open_paths: tuple[str, ...] = DEFAULT_OPEN_PATHS
    """REST paths served without a token."""

    @property
    def enabled(self) -> bool:
        return any(p is not None for p in (self.curve_dir, self.tls_cert_file, self.tokens_file))

    def to_json(self) -> str:
        """For the HTTP process's command line (worker.py): it runs with its node's settings."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.dumps({k: v if not isinstance(v, Path) else str(v) for k, v in fields.items()}
                          | {"open_paths": list(self.open_paths)})

    @classmethod
    def from_json(cls, text: str) -> SecuritySettings:
        raw = json.loads(text)
        paths = {k: None if raw[k] is None else Path(raw[k])
                 for k in ("curve_dir", "tls_cert_file", "tls_key_file", "tokens_file")}
        return cls(open_paths=tuple(raw["open_paths"]), **paths)


NO_SECURITY = SecuritySettings()
"""The open development cluster."""


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """Per-client token buckets (SPEC §8 [limits]); client_rate None: no limit."""

    client_rate: float | None = None
    """Requests per second per client (token, key or address)."""
    client_burst: int | None = None
    """Bucket size; None: twice the rate."""

    @property
    def burst(self) -> float:
        """The bucket's size in requests (at least one)."""
        if self.client_rate is None:
            return 0.0
        return float(self.client_burst) if self.client_burst is not None else max(1.0, 2 * self.client_rate)


NO_LIMITS = LimitsSettings()
"""No rate limit (a file without [limits])."""


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    nodes: tuple[NodeSettings, ...]
    election_timeout_ms: tuple[int, int] = DEFAULT_ELECTION_TIMEOUT_MS
    heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    map_size_bytes: int = DEFAULT_MAP_SIZE_MB * MIB
    snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD
    """Applied entries between automatic log compactions."""
    read_lease: bool = True
    """Leaders answer linearizable reads within a lease (raftkvd/server/reads.py) instead of
    a ReadIndex round each; false where clocks may stop unseen (a host that suspends)."""
    watch_history: int = DEFAULT_WATCH_HISTORY
    """Revisions of changes kept for watches (raftkvd/kv/history.py); older ones are compacted."""
    log_level: str | None = None
    """The file's `log_level`, upper case; None when the file has none. Flags and the
    environment override it: Settings.log_level is the level a node runs with."""
    security: SecuritySettings = NO_SECURITY
    limits: LimitsSettings = NO_LIMITS

    def node(self, node_id: int) -> NodeSettings:
        """The node with `node_id`; KeyError when it is not in the file."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def addresses(self) -> dict[int, dict[str, str]]:
        """Every node's addresses, in the shape the membership keeps them."""
        return {n.id: {"raft": n.raft, "client": n.client, "http": n.http} for n in self.nodes}


@dataclass(frozen=True, slots=True)
class Origin:
    """The arguments settings were loaded with: a reload repeats them, so the precedence of
    flags and environment over the file holds for the re-read file too."""

    path: str | os.PathLike[str] | None
    node_id: int | None
    data_dir: str | os.PathLike[str] | None
    env: Mapping[str, str]
    log_level: str | None
    join: bool


@dataclass(frozen=True, slots=True)
class Settings:
    """What one raftkvd process runs with: the cluster plus its own node."""

    cluster: ClusterSettings
    node: NodeSettings
    config_path: Path
    origin: Origin = dataclasses.field(compare=False, repr=False)
    """How these settings were loaded; not a setting itself."""
    log_level: str = DEFAULT_LOG_LEVEL
    join: bool = False
    """Join a running cluster (after `raftctl member add`) instead of founding one: a new data
    dir then starts with no membership and learns it from the leader."""

    def reload(self) -> Settings:
        """Read the cluster file again as at start (SIGHUP); SettingsError if it is now invalid."""
        origin = self.origin
        return load_settings(origin.path, origin.node_id, origin.data_dir, origin.env,
                             origin.log_level, origin.join)


def load_cluster(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> ClusterSettings:
    """The cluster file at `path` (or $RAFTKVD_CONFIG), validated."""
    return _parse_cluster(_read_toml(_config_path(path, env)))


def load_settings(
    path: str | os.PathLike[str] | None,
    node_id: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] = os.environ,
    log_level: str | None = None,
    join: bool = False,
) -> Settings:
    """Settings for one node: the file, then RAFTKVD_* variables, then the flags given here."""
    origin = Origin(path, node_id, data_dir, env, log_level, join)
    config_path = _config_path(path, env)
    cluster = _parse_cluster(_read_toml(config_path))
    node = _select_node(cluster, node_id, env, config_path)
    if data_dir is not None:
        node = replace(node, data_dir=_resolve_dir(str(data_dir), "--data-dir"))
    elif env.get(ENV_DATA_DIR):
        node = replace(node, data_dir=_resolve_dir(env[ENV_DATA_DIR], ENV_DATA_DIR))
    if env.get(ENV_MAP_SIZE):
        cluster = replace(cluster, map_size_bytes=_parse_map_size(env[ENV_MAP_SIZE]))
    return Settings(cluster, node, config_path, origin, _log_level(log_level, env, cluster.log_level),
                    join or _join(env))


def _join(env: Mapping[str, str]) -> bool:
    value = env.get(ENV_JOIN, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise SettingsError(ENV_JOIN, f"expected 1 or 0, got {value!r}")


def _config_path(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """Absolute, so that processes started from elsewhere (`cluster start`) find it too."""
    if path is not None:
        return Path(os.path.abspath(path))
    if env.get(ENV_CONFIG):
        return Path(os.path.abspath(env[ENV_CONFIG]))
    raise SettingsError("--config", f"no cluster file given (use --config FILE or {ENV_CONFIG})")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SettingsError(str(path), "not valid TOML: the file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(str(path), f"not valid TOML: {exc}") from None


def _select_node(
    cluster: ClusterSettings, node_id: int | None, env: Mapping[str, str], path: Path
) -> NodeSettings:
    field = "--id"
    if node_id is None:
        field = ENV_ID
        raw = env.get(ENV_ID)
        if not raw:
            raise SettingsError("--id", f"no node id given (use --id N or {ENV_ID})")
        try:
            node_id = int(raw)
        except ValueError:
            raise SettingsError(ENV_ID, f"expected an integer node id, got {raw!r}") from None
    try:
        return cluster.node(node_id)
    except KeyError:
        ids = ", ".join(str(n.id) for n in cluster.nodes)
        raise SettingsError(field, f"node {node_id} is not in {path} (ids: {ids})") from None


def _log_level(flag: str | None, env: Mapping[str, str], from_file: str | None) -> str:
    """--log-level, else RAFTKVD_LOG_LEVEL, else the file's (already checked), else INFO."""
    field, level = ("--log-level", flag) if flag else (ENV_LOG_LEVEL, env.get(ENV_LOG_LEVEL))
    if not level:
        return from_file or DEFAULT_LOG_LEVEL
    return _checked_level(level, field)


def _checked_level(level: Any, field: str) -> str:
    if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
        raise SettingsError(field, f"expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level.upper()


def _parse_map_size(raw: str) -> int:
    """RAFTKVD_MAP_SIZE: MiB by default, or with a unit (512M, 2G, 1GiB)."""
    match = _SIZE.fullmatch(raw)
    if match is None:
        raise SettingsError(ENV_MAP_SIZE, f"expected a size like 1024 (MiB), 512M or 2G, got {raw!r}")
    unit = match.group(2).upper() if match.group(2) else None
    size_bytes = int(match.group(1)) * _SIZE_UNITS[unit]
    if not MIB <= size_bytes <= MAX_MAP_SIZE_MB * MIB:
        raise SettingsError(ENV_MAP_SIZE, f"must be between 1 MiB and 1 TiB, got {raw!r}")
    return size_bytes


def _parse_cluster(doc: dict[str, Any]) -> ClusterSettings:
    _reject_unknown(doc, TOP_LEVEL_KEYS, "")
    section = doc.get("cluster", {})
    if not isinstance(section, dict):
        raise SettingsError("cluster", "expected a [cluster] table")
    _reject_unknown(section, CLUSTER_KEYS, "cluster.")
    election = _election_timeout(section.get("election_timeout_ms", DEFAULT_ELECTION_TIMEOUT_MS))
    heartbeat = _positive_int(section, "heartbeat_interval_ms", DEFAULT_HEARTBEAT_INTERVAL_MS, "cluster.")
    if heartbeat >= election[0]:
        raise SettingsError(
            "cluster.heartbeat_interval_ms",
            f"must be below the election timeout's low end ({election[0]}), got {heartbeat}",
        )
    max_value = _positive_int(section, "max_value_bytes", DEFAULT_MAX_VALUE_BYTES, "cluster.")
    if max_value > MAX_VALUE_BYTES_LIMIT:
        raise SettingsError(
            "cluster.max_value_bytes",
            f"must be at most {MAX_VALUE_BYTES_LIMIT} (64 MiB), got {max_value}",
        )
    map_size_mb = _positive_int(section, "map_size_mb", DEFAULT_MAP_SIZE_MB, "cluster.")
    if map_size_mb > MAX_MAP_SIZE_MB:
        raise SettingsError(
            "cluster.map_size_mb", f"must be at most {MAX_MAP_SIZE_MB} (1 TiB), got {map_size_mb}"
        )
    log_level = section.get("log_level")  # TOML has no null: None means absent
    return ClusterSettings(
        nodes=_parse_nodes(doc.get("node")),
        election_timeout_ms=election,
        heartbeat_interval_ms=heartbeat,
        max_value_bytes=max_value,
        map_size_bytes=map_size_mb * MIB,
        snapshot_threshold=_positive_int(
            section, "snapshot_threshold", DEFAULT_SNAPSHOT_THRESHOLD, "cluster."
        ),
        read_lease=_bool(section, "read_lease", True, "cluster."),
        watch_history=_positive_int(section, "watch_history", DEFAULT_WATCH_HISTORY, "cluster."),
        log_level=None if log_level is None else _checked_level(log_level, "cluster.log_level"),
        security=_parse_security(_table(doc, "security")),
        limits=_parse_limits(_table(doc, "limits")),
    )


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    section = doc.get(name, {})
    if not isinstance(section, dict):
        raise SettingsError(name, f"expected a [{name}] table")
    return section


def _parse_security(section: dict[str, Any]) -> SecuritySettings:
    _reject_unknown(section, SECURITY_KEYS, "security.")
    paths = {key: _optional_path(section, key) for key in ("curve_dir", "tls_cert_file", "tls_key_file",
                                                           "tokens_file")}
    if (paths["tls_cert_file"] is None) != (paths["tls_key_file"] is None):
        given, missing = (("tls_cert_file", "tls_key_file") if paths["tls_key_file"] is None
                          else ("tls_key_file", "tls_cert_file"))
        raise SettingsError(f"security.{missing}", f"required when security.{given} is given")
    open_paths = section.get("open_paths", list(DEFAULT_OPEN_PATHS))
    if (not isinstance(open_paths, list)
            or not all(isinstance(p, str) and p.startswith("/") for p in open_paths)):
        raise SettingsError("security.open_paths",
                            f'expected a list of paths like ["/health"], got {open_paths!r}')
    return SecuritySettings(open_paths=tuple(open_paths), **paths)


def _optional_path(table: dict[str, Any], key: str) -> Path | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str):
        raise SettingsError(f"security.{key}", f"expected a path string, got {value!r}")
    return _resolve_dir(value, f"security.{key}")


def _parse_limits(section: dict[str, Any]) -> LimitsSettings:
    _reject_unknown(section, LIMITS_KEYS, "limits.")
    rate = section.get("client_rate")
    if rate is not None and (not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0):
        raise SettingsError("limits.client_rate",
                            f"expected a positive number of requests per second, got {rate!r}")
    burst = section.get("client_burst")
    if burst is not None:
        if rate is None:
            raise SettingsError("limits.client_burst", "needs limits.client_rate")
        burst = _positive_int(section, "client_burst", 1, "limits.")
    return LimitsSettings(None if rate is None else float(rate), burst)


def _reject_unknown(table: dict[str, Any], known: frozenset[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(sorted(known))})"
            raise SettingsError(f"{prefix}{key}", f"unknown key{hint}")


def _is_int(value: Any) -> bool:
    """TOML booleans are Python bools, which are ints; they are never valid numbers here."""
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(table: dict[str, Any], key: str, default: int, prefix: str) -> int:
    value = table.get(key, default)
    if not _is_int(value) or value <= 0:
        raise SettingsError(f"{prefix}{key}", f"expected a positive integer, got {value!r}")
    return value


def _bool(table: dict[str, Any], key: str, default: bool, prefix: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise SettingsError(f"{prefix}{key}", f"expected true or false, got {value!r}")
    return value


def _election_timeout(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(_is_int(v) and v > 0 for v in value)
        or value[0] > value[1]
    ):
        raise SettingsError(
            "cluster.election_timeout_ms",
            f"expected [low, high] positive milliseconds with low <= high, got {value!r}",
        )
    return (value[0], value[1])


def _parse_nodes(raw: Any) -> tuple[NodeSettings, ...]:
    if raw is None or raw == []:
        raise SettingsError("node", "at least one [[node]] table is required")
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise SettingsError("node", "expected [[node]] tables")
    nodes: list[NodeSettings] = []
    for position, table in enumerate(raw, start=1):
        nodes.append(_parse_node(table, position))
    _check_unique(nodes)
    return tuple(nodes)


def _parse_node(table: dict[str, Any], position: int) -> NodeSettings:
    node_id = table.get("id")
    if not _is_int(node_id) or not 0 < node_id <= MAX_NODE_ID:
        raise SettingsError(f"node #{position}.id", f"expected a positive integer, got {node_id!r}")
    label = f"node[{node_id}]"
    _reject_unknown(table, NODE_KEYS, f"{label}.")
    data_dir = table.get("data_dir", f"data/node{node_id}")
    if not isinstance(data_dir, str):
        raise SettingsError(f"{label}.data_dir", f"expected a path string, got {data_dir!r}")
    return NodeSettings(
        id=node_id,
        raft=_endpoint(table, "raft", label, _TCP_ENDPOINT, "tcp://HOST:PORT"),
        client=_endpoint(table, "client", label, _TCP_ENDPOINT, "tcp://HOST:PORT"),
        http=_endpoint(table, "http", label, _HTTP_ADDRESS, "HOST:PORT"),
        data_dir=_resolve_dir(data_dir, f"{label}.data_dir"),
    )


def _endpoint(table: dict[str, Any], key: str, label: str, pattern: re.Pattern[str], shape: str) -> str:
    field = f"{label}.{key}"
    if key not in table:
        raise SettingsError(field, f"missing (expected an endpoint like {shape})")
    value = table[key]
    match = pattern.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise SettingsError(field, f"expected an endpoint like {shape}, got {value!r}")
    if not 1 <= int(match.group("port")) <= 65535:
        raise SettingsError(field, f"port must be between 1 and 65535, got {match.group('port')}")
    return value


def _resolve_dir(value: str, field: str) -> Path:
    if not value.strip():
        raise SettingsError(field, "expected a path, got an empty string")
    return Path(os.path.abspath(os.path.expanduser(value)))


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    return host.lower(), int(port)


def _check_unique(nodes: list[NodeSettings]) -> None:
    """Ids, listening addresses and (per host) data dirs must not collide: two nodes
    sharing any of them would fight over a port or corrupt one LMDB environment."""
    ids: set[int] = set()
    addresses: dict[tuple[str, int], str] = {}
    dirs: dict[tuple[str, Path], str] = {}
    for node in nodes:
        label = f"node[{node.id}]"
        if node.id in ids:
            raise SettingsError(f"{label}.id", f"duplicate node id {node.id}")
        ids.add(node.id)
        for key in ("raft", "client", "http"):
            address = host_port(getattr(node, key))
            owner = addresses.setdefault(address, f"{label}.{key}")
            if owner != f"{label}.{key}":
                raise SettingsError(
                    f"{label}.{key}",
                    f"address {address[0]}:{address[1]} is already used by {owner}",
                )
        host_dir = (host_port(node.raft)[0], node.data_dir)
        owner = dirs.setdefault(host_dir, label)
        if owner != label:
            raise SettingsError(
                f"{label}.data_dir",
                f"{node.data_dir} is already used by {owner} on host {host_dir[0]}",
            )
