"""A node's CurveZMQ keys (SPEC §8): its own key pair, and the public keys of the nodes it
dials (peer links, status fetches) or lets in (raftkvd/net/zap.py).

Node N's secret is curve_dir/node<N>.key_secret; node M's public key curve_dir/node<M>.key.
A member whose key file is missing is logged (naming the file, never a key) and not dialed:
the rest of the cluster keeps working, and the link comes once the file is there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq

from raftkv.curve import (
    CLIENTS_DIR,
    KeyFileError,
    KeyPair,
    as_client,
    load_public,
    load_secret,
    named_keys_in,
    node_public_path,
    node_secret_path,
)

log = logging.getLogger(__name__)


class NodeKeys:
    def __init__(self, curve_dir: Path, node_id: int) -> None:
        """KeyFileError when the node's own secret is missing, loose or malformed."""
        self.curve_dir = curve_dir
        self.node_id = node_id
        self.own: KeyPair = load_secret(node_secret_path(curve_dir, node_id))
        self._public: dict[int, bytes] = {node_id: self.own.public}

    def node_public(self, node_id: int) -> bytes | None:
        """Node `node_id`'s public key; None (logged) when its file is missing or unusable.
        Found keys are cached; a missing one is looked for again next time."""
        key = self._public.get(node_id)
        if key is None:
            try:
                key = self._public[node_id] = load_public(node_public_path(self.curve_dir, node_id))
            except KeyFileError as exc:
                log.error("node=%d event=node_key_unusable member=%d error=%s", self.node_id,
                          node_id, quoted(str(exc)))
        return key

    def dial(self, socket: zmq.Socket, node_id: int) -> bool:
        """Before connect: make `socket` a CURVE client of node `node_id`; False without its key."""
        key = self.node_public(node_id)
        if key is None:
            return False
        as_client(socket, self.own, key)
        return True

    def clients(self) -> dict[bytes, str]:
        """public key -> name of every client key in curve_dir/clients (read now)."""
        return named_keys_in(self.curve_dir / CLIENTS_DIR)


def quoted(text: str) -> str:
    """A log value with spaces, as one key="..." token."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
