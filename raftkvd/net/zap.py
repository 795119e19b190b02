"""The node's ZAP handler (RFC 27): who may complete a CurveZMQ handshake with this node.

- domain "raft" (the Raft ROUTER): only the public key of a current member, node<ID>.key
  for each id in the membership; `follow` is told every membership the node applies, so an
  added learner gets in once it is in the configuration and a removed member is refused
  from then on (SPEC §8: it cannot vote or append).
- domain "client" (the client ROUTER): the keys in curve_dir/clients/ (re-read on SIGHUP,
  `reload_clients`), this node's own key (its HTTP process forwards with it) and the other
  members' keys (the leader fetches every member's status from its client endpoint).

An accepted handshake's User-Id is the key's name (the file's stem: "ops", "node2"); every
message on that connection carries it as frame metadata, for per-client limits.

A thread, not the event loop: libzmq holds a handshake until ZAP answers, and the loop may
be busy for a while (an fsync, a large batch); a thread answers within its own poll. It
only reads the allowed-key maps, which the loop replaces whole (rebinding a reference is
atomic), so there is no lock. The same thread drains a monitor of each secured socket:
every refused handshake, whether ZAP denied it (EVENT_HANDSHAKE_FAILED_AUTH) or it failed
before ZAP (a plain NULL peer, a client that expected another server key:
EVENT_HANDSHAKE_FAILED_PROTOCOL / _NO_DETAIL), is one monitor event, counted once there.
A ZAP denial is logged with its source address; a failure before ZAP has none to give.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from raftkv.curve import as_server, node_key_name
from raftkv.sockets import HANDSHAKE_FAILED

from .nodekeys import NodeKeys, quoted

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
RAFT_DOMAIN = "raft"
CLIENT_DOMAIN = "client"
ZAP_VERSION = b"1.0"
POLL_MS = 100
"""How soon the thread notices `close`."""
LOG_INTERVAL_S = 60.0
"""At most one refusal line per endpoint and source address per interval."""
MAX_SOURCES = 10_000
"""Sources remembered for the log limit; beyond this the oldest are forgotten."""
UNKNOWN_SOURCE = "unknown"

Allowed = dict[bytes, str]
"""Z85 public key -> the name reported as User-Id."""


class Gate:
    """Owned by the node; `serve` before binding, `start` once every socket is served."""

    def __init__(self, ctx: zmq.Context, keys: NodeKeys, members: Iterable[int],
                 rejected: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        """`rejected(endpoint)`: counts one refused handshake (the metric)."""
        self.keys = keys
        self._ctx = ctx
        self._rejected = rejected
        self._clock = clock
        self._members: frozenset[int] = frozenset()
        self._member_keys: Allowed = {}
        self._client_keys: Allowed = {}
        self._allowed: dict[bytes, Allowed] = {}
        self.follow(frozenset(members))
        self.reload_clients()
        self._zap = ctx.socket(zmq.ROUTER)
        self._zap.setsockopt(zmq.LINGER, 0)
        self._zap.bind(ZAP_ENDPOINT)
        self._monitors: dict[zmq.Socket, str] = {}
        self._logged: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"zap-{keys.node_id}", daemon=True)

    # ---- the loop's side -------------------------------------------------------------------
    def serve(self, socket: zmq.Socket, domain: str) -> None:
        """Before bind: `socket` accepts only CURVE clients this gate lets into `domain`."""
        as_server(socket, self.keys.own, domain)
        address = f"inproc://raftkvd-handshakes-{self.keys.node_id}-{domain}-{id(socket):x}"
        socket.monitor(address, HANDSHAKE_FAILED)
        monitor = self._ctx.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(address)
        self._monitors[monitor] = domain

    def start(self) -> None:
        self._thread.start()

    def follow(self, members: frozenset[int]) -> None:
        """Let exactly these members in (cheap when unchanged: the loop calls it every turn)."""
        if members == self._members:
            return
        keys: Allowed = {}
        for node_id in sorted(members):
            key = self.keys.node_public(node_id)
            if key is not None:
                keys[key] = node_key_name(node_id)
        self._members = members
        self._member_keys = keys
        self._publish()
        log.info("node=%d event=curve_members members=%s", self.keys.node_id,
                 ",".join(map(str, sorted(members))))

    def reload_clients(self) -> None:
        """Re-read curve_dir/clients/; on an unusable file the keys in use stay (logged)."""
        try:
            clients = self.keys.clients()
        except ValueError as exc:  # KeyFileError names the file
            log.error("node=%d event=client_keys_not_reloaded error=%s", self.keys.node_id,
                      quoted(str(exc)))
            return
        self._client_keys = clients
        self._publish()
        log.info("node=%d event=client_keys_loaded count=%d", self.keys.node_id, len(clients))

    def _publish(self) -> None:
        own = {self.keys.own.public: node_key_name(self.keys.node_id)}
        self._allowed = {RAFT_DOMAIN.encode(): dict(self._member_keys),
                         CLIENT_DOMAIN.encode(): {**self._client_keys, **self._member_keys, **own}}

    def close(self) -> None:
        """Stop the thread; it closes its sockets (the ZAP endpoint is free again)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        else:
            self._close_sockets()

    # ---- the thread's side ---------------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        for monitor in self._monitors:
            poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(POLL_MS):
                    if sock is self._zap:
                        self._answer(sock.recv_multipart())
                    else:
                        self._handshake_failed(self._monitors[sock],
                                               parse_monitor_message(sock.recv_multipart()))
        finally:
            self._close_sockets()

    def _answer(self, frames: list[bytes]) -> None:
        """One ZAP request: [routing id, "", version, request id, domain, address, identity,
        mechanism, credentials...]; a CURVE credential is the client's 32-byte public key."""
        if len(frames) < 8 or frames[1] != b"":
            return  # not a ZAP request: nothing to answer
        _, _, version, request_id, domain, address, _, mechanism, *credentials = frames
        name = None
        if version == ZAP_VERSION and mechanism == b"CURVE" and len(credentials) == 1 \
                and len(credentials[0]) == 32:
            name = self._allowed.get(domain, {}).get(z85.encode(credentials[0]))
        if name is None:
            self._log_refusal(domain.decode(errors="replace"), address.decode(errors="replace"))
            reply = [b"400", b"not an allowed key", b""]
        else:
            reply = [b"200", b"OK", name.encode()]
        self._zap.send_multipart([frames[0], b"", ZAP_VERSION, request_id, *reply, b""])

    def _handshake_failed(self, domain: str, event: dict) -> None:
        if not event["event"] & HANDSHAKE_FAILED:
            return
        self._rejected(domain)
        if event["event"] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # ZAP denials were logged there
            self._log_refusal(domain, UNKNOWN_SOURCE)

    def _log_refusal(self, endpoint: str, source: str) -> None:
        """One line per endpoint and source per minute; never the key that was offered."""
        now = self._clock()
        last = self._logged.get((endpoint, source))
        if last is not None and now - last < LOG_INTERVAL_S:
            return
        if len(self._logged) >= MAX_SOURCES:
            self._logged = {k: t for k, t in self._logged.items() if now - t < LOG_INTERVAL_S}
            if len(self._logged) >= MAX_SOURCES:
                return
        self._logged[(endpoint, source)] = now
        log.warning("node=%d event=security_rejected endpoint=%s source=%s", self.keys.node_id,
                    endpoint, source[:64])

    def _close_sockets(self) -> None:
        for monitor in self._monitors:
            monitor.close(0)
        self._monitors = {}
        self._zap.close(0)
