"""One raftkvd node in production: the loop that owns time and sockets around its replica.

Each turn: wait for a socket (or the next tick), hand peer messages and client requests to
the replica, tick the core on the wall clock, then let the replica turn every Ready into
I/O (replica.py, driver.py). Around that: the node's HTTP process (http/process.py), work
that may block (background.py), the status the metrics and the HTTP process read, and
reloads of the cluster file (reload.py).
"""

from __future__ import annotations

import errno
import functools
import gc
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import zmq

from raftkv.protocol import Code, Op

from ..http import control
from ..http.process import HttpProcess
from ..kv.statemachine import KVStateMachine
from ..metrics import NodeMetrics, Snapshot
from ..net.clientendpoint import ClientEndpoint, Request
from ..net.nodekeys import NodeKeys
from ..net.peerstatus import StatusFetcher
from ..net.transport import Transport
from ..net.zap import CLIENT_DOMAIN, RAFT_DOMAIN, Gate
from ..raft import RaftConfig
from ..raft.messages import NONE, ConfState, StateRole
from ..ratelimit import RateLimiter
from ..settings import Settings
from ..storage.lmdbenv import LmdbEnv
from ..storage.logstore import LogStore
from . import reload, sdnotify
from .background import Background
from .backups import Backups
from .reads import Reads
from .replica import Replica
from .watches import Watches

log = logging.getLogger(__name__)

TICK_MS = 10
BIND_RETRY_S = 5.0
GC_YOUNG_THRESHOLD = 50_000
MAX_BATCH = 4096
"""Messages or requests taken from one socket per loop turn: bounds a turn's latency."""
CLUSTER_STATUS_TIMEOUT_S = 0.5
"""How long the leader waits for a member's status; a member that is down costs nothing."""
PUBLISH_INTERVAL_S = 0.1
"""How often the loop hands a fresh status Snapshot to the metrics collector (/metrics gauges)."""
HANDOFF_TIMEOUT_S = 2.0
"""How long a stopping leader waits for another voter to take over before it exits anyway."""
REMOVED_GRACE_S = 0.5
"""How long a removed node runs on: its last answers (a leader's to its own removal) leave."""
T = TypeVar("T")


def _bind_retrying(make: Callable[[], T]) -> T:
    """Retry a bind that fails with EADDRINUSE for a few seconds: on one host, a peer's
    short-lived outgoing connection may hold our port as its ephemeral source port."""
    deadline = time.monotonic() + BIND_RETRY_S
    while True:
        try:
            return make()
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def raft_config(settings: Settings, applied: int) -> RaftConfig:
    cluster = settings.cluster
    heartbeat = max(1, round(cluster.heartbeat_interval_ms / TICK_MS))
    low, high = cluster.election_timeout_ms
    election = max(heartbeat + 1, low // TICK_MS)
    return RaftConfig(
        id=settings.node.id,
        election_tick=election,
        election_tick_max=max(election + 1, high // TICK_MS),
        heartbeat_tick=heartbeat,
        applied=applied,
    )


class Node:
    def __init__(self, settings: Settings, ctx: zmq.Context | None = None, *,
                 raft_bind: str | None = None, raft_source: str | None = None,
                 reads: type[Reads] = Reads) -> None:
        """`raft_bind`: bind the Raft ROUTER there instead of the node's `raft` address,
        which peers keep dialing (tests/chaos puts a fault proxy between the two).
        `raft_source`: the local IP address the links to peers are dialed from (tests/chaos
        gives each node its own, so that the proxy tells the links apart even under CURVE).
        `reads`: the read path (tests/chaos passes a broken one to prove its checker)."""
        self.settings = settings
        self.id = settings.node.id
        # First, so that the HTTP process's start overlaps ours; it gets ready in run().
        self.http = HttpProcess(self.id, settings.node.http, settings.node.client,
                                settings.cluster.max_value_bytes, settings.log_level,
                                settings.cluster.security, settings.cluster.limits)
        try:
            self._open(settings, ctx, raft_bind or settings.node.raft, raft_source, reads)
        except BaseException:
            self.http.stop()
            raise

    def _open(self, settings: Settings, ctx: zmq.Context | None, raft_bind: str,
              raft_source: str | None, reads: type[Reads]) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.raft_bind = raft_bind
        self.env = LmdbEnv(settings.node.data_dir, settings.cluster.map_size_bytes)
        self.sm = KVStateMachine(self.env, history_window=settings.cluster.watch_history)
        if not settings.join:
            # A brand-new data dir takes its first membership from the cluster file, unless the
            # node joins a running cluster: then the leader's snapshot brings the membership.
            founders = settings.cluster.addresses()
            self.sm.bootstrap(ConfState(frozenset(founders)), founders)
        self.published: Snapshot | None = None
        self.metrics = NodeMetrics(lambda: self.published)
        self.gate, keys = self._secure(settings)
        serve_raft = serve_client = dial = None
        if self.gate is not None and keys is not None:
            serve_raft = functools.partial(self.gate.serve, domain=RAFT_DOMAIN)
            serve_client = functools.partial(self.gate.serve, domain=CLIENT_DOMAIN)
            dial = keys.dial
        self.transport = _bind_retrying(lambda: Transport(self.ctx, self.id, raft_bind, {},
                                                          serve=serve_raft, dial=dial,
                                                          source=raft_source))
        limits = settings.cluster.limits
        self.client = _bind_retrying(
            lambda: ClientEndpoint(self.ctx, settings.node.client, settings.cluster.max_value_bytes,
                                   RateLimiter(limits.client_rate, limits.burst), serve=serve_client))
        self.client.observer = self.metrics.observe_client
        self.client.on_rate_limited = self.metrics.rate_limited.inc
        for op in Op:
            self.metrics.declare_client(op.value, Code.OK.value)
        low, high = settings.cluster.election_timeout_ms
        self.replica = Replica(
            raft_config(settings, self.sm.applied_index()), store=self.env,
            logstore=LogStore(self.env, self.sm), sm=self.sm, transport=self.transport,
            replies=self.client, clock=time.monotonic, metrics=self.metrics,
            founders=settings.cluster.addresses(), snapshot_threshold=settings.cluster.snapshot_threshold,
            silent_after_s=2 * high / 1000, reads=reads, tick_s=TICK_MS / 1000,
            read_lease=settings.cluster.read_lease)
        self.background = Background(self.ctx, self.id)
        self.backups = Backups(self.env, self.sm, self.id)
        self.watches = Watches(self.sm.events, self.sm.revision, self.client, time.monotonic)
        self.statuses = StatusFetcher(self.ctx, dial=dial)
        if self.gate is not None:
            self.gate.start()
        self._stopping = False
        self._reload_requested = False
        self._handoff_deadline: float | None = None
        self._removed_deadline: float | None = None
        self._next_publish = 0.0

    def _secure(self, settings: Settings) -> tuple[Gate | None, NodeKeys | None]:
        """With [security] curve_dir: the node's keys and its ZAP handler (SPEC §8); the
        handler starts with the cluster file's nodes and then follows the membership."""
        self._founder_ids = frozenset(settings.cluster.addresses())
        curve_dir = settings.cluster.security.curve_dir
        if curve_dir is None:
            return None, None
        keys = NodeKeys(curve_dir, self.id)
        self.metrics.declare_security((RAFT_DOMAIN, CLIENT_DOMAIN))
        return Gate(self.ctx, keys, self._founder_ids, self.metrics.security_rejected), keys

    def _follow_membership(self) -> None:
        """Let in exactly the current members' keys (a set comparison when unchanged)."""
        if self.gate is not None:
            self.gate.follow(self.replica.membership.member_ids or self._founder_ids)

    # ==== the loop ===============================================================================
    def stop(self) -> None:
        """Safe from a signal handler: the loop notices within one tick."""
        self._stopping = True

    def reload(self) -> None:
        """Safe from a signal handler (SIGHUP): the loop re-reads the cluster file within one tick."""
        self._reload_requested = True

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in (self.transport.socket, self.client.socket, self.background.socket):
            poller.register(sock, zmq.POLLIN)
        tick_s = TICK_MS / 1000
        next_tick = time.monotonic() + tick_s
        try:
            self._publish()
            log.info("node=%d event=serving raft=%s client=%s http=%s", self.id, self.settings.node.raft,
                     self.settings.node.client, self.settings.node.http)
            if self.raft_bind != self.settings.node.raft:
                log.warning("node=%d event=raft_bind_elsewhere bind=%s", self.id, self.raft_bind)
            http_ready = False
            # The loop allocates many short-lived messages and entries: collect young objects
            # less often, and never rescan what startup left behind.
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
            while not self._may_exit():
                poller.poll(max(0.0, (next_tick - time.monotonic()) * 1000))
                if self._reload_requested:
                    self._reload()
                self._receive()
                next_tick = self._tick(next_tick, tick_s)
                self.replica.end_turn()
                self.watches.serve()
                self._follow_membership()
                self.client.flush()
                if not http_ready and self.http.poll_ready():
                    http_ready = True
                    sdnotify.notify("READY=1")  # every endpoint serves now
                if time.monotonic() >= self._next_publish:
                    self._publish()
                    self.http.supervise()
                    self.replica.periodic()
                    self.backups.expire()
                    self.client.flush()
        finally:
            sdnotify.notify("STOPPING=1")
            self._shutdown()

    def _reload(self) -> None:
        """Re-read the cluster file and apply what may change at run time (reload.py decides)."""
        self._reload_requested = False  # first: a SIGHUP during this reload asks for another
        if self.gate is not None:
            self.gate.reload_clients()  # keys in curve_dir/clients/, whatever the file says
        log.debug("node=%d event=reload_requested config=%s", self.id, self.settings.config_path)
        outcome = reload.reread(self.settings)
        if outcome is None:
            return  # the file is invalid: the running settings stay (reread logged why)
        self.settings = outcome.settings
        self._apply_reloadable(outcome.settings)
        log.info("node=%d event=reloaded changed=%s log_level=%s max_value_bytes=%d", self.id,
                 ",".join(outcome.applied) or "none", outcome.settings.log_level,
                 outcome.settings.cluster.max_value_bytes)

    def _apply_reloadable(self, settings: Settings) -> None:
        """Where each setting of reload.RELOADABLE takes effect: this process's root logger and
        client endpoint (native protocol's TOO_LARGE and rate limit), and the HTTP process
        (REST 413 and 429)."""
        logging.getLogger().setLevel(settings.log_level)
        limits = settings.cluster.limits
        self.client.max_value_bytes = settings.cluster.max_value_bytes
        self.client.limiter.configure(limits.client_rate, limits.burst)
        self.http.reload(control.Reload(settings.cluster.max_value_bytes, settings.log_level, limits))

    def _may_exit(self) -> bool:
        """A removed node exits (0, so that its supervisor leaves it down) after a grace;
        otherwise the loop runs until a stop is requested and may be done."""
        if self.replica.removal.removed:
            now = time.monotonic()
            if self._removed_deadline is None:
                self._removed_deadline = now + REMOVED_GRACE_S
            return now >= self._removed_deadline
        return self._stopping and self._may_stop()

    def _may_stop(self) -> bool:
        """Asked once a stop was requested: a leader first hands leadership over (SPEC §3,
        rolling restarts) and the loop runs on until a new leader is known, or for at most
        HANDOFF_TIMEOUT_S; any other node stops at once."""
        now = time.monotonic()
        if self._handoff_deadline is None:
            self._handoff_deadline = now + HANDOFF_TIMEOUT_S
            target = self.replica.hand_off()
            if target == NONE:
                return True
            log.info("node=%d event=handing_off_leadership to=%d", self.id, target)
            return False
        if self.replica.core.role != StateRole.LEADER:
            return True
        if now > self._handoff_deadline:
            log.warning("node=%d event=handoff_timed_out after_s=%g", self.id, HANDOFF_TIMEOUT_S)
            return True
        return False

    def _receive(self) -> None:
        for msg in self.transport.recv_all(MAX_BATCH):
            self.replica.step(msg)
        for request in self.client.recv_all(MAX_BATCH):
            self._handle(request)
        self.background.answer_finished(self.client)

    def _tick(self, next_tick: float, tick_s: float) -> float:
        now = time.monotonic()
        if now - next_tick > 50 * tick_s:
            next_tick = now  # we were stalled (e.g. SIGSTOP): don't replay a burst of ticks
        while now >= next_tick:
            self.replica.tick()
            next_tick += tick_s
        return next_tick

    def _handle(self, request: Request) -> None:
        """What needs this process's threads (off-loop work) here; the rest is the replica's."""
        if request.op == Op.STATUS:
            self.client.respond(request, {"code": Code.OK.value, "status": self.status()})
        elif request.op == Op.CLUSTER:
            if self.replica.core.role != StateRole.LEADER:
                self.replica.redirect(request)  # membership is the leader's to tell
                return
            members = {i: self.replica.membership.addresses.get(i, {})
                       for i in self.replica.membership.ids()}
            gather = functools.partial(self._gather_cluster, members)
            self.background.submit(request, gather)
        elif request.op == Op.METRICS:
            self.background.submit(request, self._metrics_text)
        elif request.op == Op.BACKUP:
            if self.replica.core.role != StateRole.LEADER:
                self.replica.redirect(request)  # a backup holds what the leader applied
                return
            self.client.respond(request, self.backups.open())
        elif request.op == Op.WATCH:
            self.watches.handle(request)
        elif request.op == Op.BACKUP_READ:
            read = functools.partial(self.backups.read, request.body["stream"], request.body["seq"])
            self.background.submit(request, read)
        else:
            self.replica.handle(request)

    def _gather_cluster(self, members: dict[int, dict[str, str]]) -> dict[str, Any]:
        return {"nodes": self.statuses.fetch(members, CLUSTER_STATUS_TIMEOUT_S)}

    def _metrics_text(self) -> dict[str, Any]:
        return {"text": self.metrics.exposition().decode()}

    # ==== status ====================================================================================
    def status(self) -> dict[str, Any]:
        """The replica's status and what only this process knows (its sockets)."""
        info = self.replica.status()
        info["malformed_frames"] = self.transport.malformed_total + self.client.malformed_total
        info["watches_held"] = self.watches.held
        return info

    def _publish(self) -> None:
        """Hand a fresh, never-mutated status to other threads; rebinding is atomic."""
        failures = {peer: s.send_failures for peer, s in self.transport.stats().items()}
        self.published = Snapshot(time.monotonic(), self.status(), failures)
        self._next_publish = self.published.at + PUBLISH_INTERVAL_S

    def _shutdown(self) -> None:
        self.http.stop()
        for pending in self.replica.writes.pending.values():
            self.client.respond(pending.request, {"code": Code.UNAVAILABLE.value,
                                                  "error": "node shutting down"})
        self.watches.cancel_all({"code": Code.UNAVAILABLE.value, "error": "node shutting down"})
        self.client.flush()
        self.background.close()
        self.backups.close()
        self.statuses.close()
        self.transport.close()
        self.client.close()
        if self.gate is not None:
            self.gate.close()
        self.env.close()
        log.info("node=%d event=stopped", self.id)
