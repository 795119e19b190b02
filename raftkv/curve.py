"""CurveZMQ key files (pyzmq's certificate format, `zmq.auth`) and the socket options that
use them: one place for both the daemon and raftctl (SPEC §8).

A key pair is NAME.key (the public key) beside NAME.key_secret (both keys, mode 0600).
A secret file that group or others may read is refused before it is used: a leaked secret
lets anyone speak as that node or client, and a loose mode is how it leaks.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
CLIENTS_DIR = "clients"
"""The public keys of the clients a node lets in, under its curve_dir."""


class KeyFileError(ValueError):
    """A key file that cannot be used; `str()` names the file, never its contents."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes
    """Z85, 40 bytes."""
    secret: bytes = field(repr=False)
    """Z85, 40 bytes; left out of repr, so no log line or traceback shows it."""


def node_key_name(node_id: int) -> str:
    return f"node{node_id}"


def check_private(path: Path) -> None:
    """KeyFileError unless only its owner may read `path` (mode 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: readable by group or others (mode {stat.S_IMODE(mode):04o}); "
                           f"run chmod 600 {path}")


def load_secret(path: Path) -> KeyPair:
    """The key pair in a NAME.key_secret file, after checking its mode."""
    check_private(path)
    public, secret = _load(path)
    if not secret:
        raise KeyFileError(f"{path}: no secret key in it (is it a .key file?)")
    return KeyPair(public, secret)


def load_public(path: Path) -> bytes:
    return _load(path)[0]


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError):
        raise KeyFileError(f"{path}: not a CurveZMQ key file") from None
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise KeyFileError(f"{path}: not a CurveZMQ key file (a key is 40 Z85 characters)")
    return public, secret


def public_keys_in(directory: Path) -> set[bytes]:
    """Every public key in `directory` (its *.key files); an empty set when it is missing."""
    return set(named_keys_in(directory))


def named_keys_in(directory: Path) -> dict[bytes, str]:
    """public key -> its file's stem (the name a ZAP handler reports as User-Id) for every
    *.key in `directory`; empty when it is missing."""
    if not directory.is_dir():
        return {}
    return {load_public(p): p.name.removesuffix(PUBLIC_SUFFIX)
            for p in sorted(directory.glob(f"*{PUBLIC_SUFFIX}"))}


def node_public_path(curve_dir: Path, node_id: int) -> Path:
    return curve_dir / f"{node_key_name(node_id)}{PUBLIC_SUFFIX}"


def node_secret_path(curve_dir: Path, node_id: int) -> Path:
    return curve_dir / f"{node_key_name(node_id)}{SECRET_SUFFIX}"


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    """A new key pair as directory/NAME.key and NAME.key_secret; the secret is created 0600
    (never readable by others, not even for a moment). Existing files are not overwritten."""
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    secret_path = directory / f"{name}{SECRET_SUFFIX}"
    for path in (public_path, secret_path):
        if path.exists():
            raise KeyFileError(f"{path}: already exists (remove it to make a new key)")
    old = os.umask(0o077)
    try:
        made_public, made_secret = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    os.chmod(made_public, 0o644)
    return Path(made_public), Path(made_secret)


def as_client(socket: zmq.Socket, own: KeyPair, server_public: bytes) -> None:
    """Before connect: speak CURVE to a server whose public key is `server_public`."""
    socket.curve_secretkey = own.secret
    socket.curve_publickey = own.public
    socket.curve_serverkey = server_public


def as_server(socket: zmq.Socket, own: KeyPair, domain: str) -> None:
    """Before bind: accept only CURVE clients; the ZAP handler decides per `domain` which."""
    socket.curve_secretkey = own.secret
    socket.curve_publickey = own.public
    socket.curve_server = True
    socket.zap_domain = domain.encode()


class ServerKeys:
    """Which public key each node's client endpoint must present, for a client that dials
    them (raftctl, the HTTP process's forwarder): known endpoints from the start, and a
    leader's endpoint learned from a "not_leader" answer that names its id, so a redirect
    to a node added after the client's cluster file was written still finds its key."""

    def __init__(self, curve_dir: Path, endpoints: dict[str, int]) -> None:
        self._curve_dir = curve_dir
        self._ids = {_endpoint(e): node_id for e, node_id in endpoints.items()}

    def learn(self, reply: dict) -> None:
        """Remember the leader named in a redirect (its endpoint and id)."""
        leader, leader_id = reply.get("leader"), reply.get("leader_id")
        if isinstance(leader, str) and leader and type(leader_id) is int and leader_id > 0:
            self._ids.setdefault(_endpoint(leader), leader_id)

    def key_for(self, endpoint: str) -> bytes:
        """The endpoint's node public key; KeyFileError names what is missing."""
        node_id = self._ids.get(_endpoint(endpoint))
        if node_id is None:
            raise KeyFileError(f"no CurveZMQ key known for {endpoint} (not a node of the cluster file)")
        return load_public(node_public_path(self._curve_dir, node_id))


def _endpoint(text: str) -> str:
    address = text.strip().removeprefix("tcp://")
    return f"tcp://{address.lower()}"


@dataclass(frozen=True, slots=True)
class ClientCurve:
    """What a CURVE client of the nodes needs: its own key pair and the nodes' keys."""

    own: KeyPair
    servers: ServerKeys

    def for_endpoint(self, endpoint: str) -> tuple[KeyPair, bytes]:
        """(own, the endpoint's server key) for sockets.open_link; KeyFileError if unknown."""
        return self.own, self.servers.key_for(endpoint)
