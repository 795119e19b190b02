"""One raftkvd node: the event loop that owns time and I/O and ties the parts together.

Each loop turn: receive peer messages and client requests, tick the core, then turn
every Ready into I/O. Leader replication and heartbeats leave before the disk write;
the write itself (log entries, hard state, snapshot, applied entries and the applied
index) is one LMDB transaction per turn, durable on disk before votes and acknowledgements
leave (SPEC §7). A turn that only applies committed entries skips the final meta-page flush
(`needs_durability`): a crash can at worst undo it, and the log redoes it.
"""

from __future__ import annotations

import errno
import functools
import gc
import itertools
import logging
import os
import queue
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
import zmq

from raftkv import protocol
from raftkv.protocol import Code, Op

from ..errors import InvalidRequest, NoSpaceError
from ..http.process import HttpProcess
from ..kv.statemachine import KVStateMachine
from ..metrics import NodeMetrics, Snapshot
from ..net.clientendpoint import ClientEndpoint, Request
from ..net.peerstatus import fetch_statuses
from ..net.transport import Transport
from ..raft import ProposalDropped, RaftConfig, RaftNode
from ..raft.log import RaftLogError
from ..raft.messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    Message,
    MessageType,
    Ready,
    StateRole,
)
from ..settings import Settings
from ..storage.lmdbenv import LmdbEnv
from ..storage.logstore import LogStore
from . import sdnotify

log = logging.getLogger(__name__)

TICK_MS = 10
BIND_RETRY_S = 5.0
T = TypeVar("T")
GC_YOUNG_THRESHOLD = 50_000
MAX_BATCH = 4096
"""Messages or requests taken from one socket per loop turn: bounds a turn's latency."""
NO_SPACE_FRACTION = 0.95
"""Writes are refused above this share of the LMDB map, so committed entries always fit."""
TRANSFER_TIMEOUT_S = 3.0
CLUSTER_STATUS_TIMEOUT_S = 1.0
COMPACTION_KEEP = 1000
"""Entries kept behind a compaction so slightly lagging followers need no snapshot."""
PUBLISH_INTERVAL_S = 0.1
"""How often the loop hands a fresh status Snapshot to the metrics collector (/metrics gauges)."""
ENV_TEST_UNSAFE_LOCAL_READS = "RAFTKVD_TEST_UNSAFE_LOCAL_READS"
"""TEST ONLY (tests/chaos): "1" makes a leader answer linearizable reads from its own state
without a ReadIndex round, a deliberately broken read path whose stale reads the chaos checker
must catch. Never set it outside that test; the node logs a loud warning when it is on."""
ENV_TEST_RAFT_BIND = "RAFTKVD_TEST_RAFT_BIND"
"""TEST ONLY (tests/chaos): bind the Raft ROUTER here (tcp://HOST:PORT) instead of the node's
`raft` address, which peers keep dialing: a fault proxy listens there and forwards to this."""


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


@dataclass
class PendingWrite:
    request: Request
    term: int


@dataclass
class ReadBatch:
    """Linearizable reads that share one ReadIndex round."""

    requests: list[Request] = field(default_factory=list)
    index: int = 0


def needs_durability(rd: Ready, durable_term_vote: tuple[int, int]) -> bool:
    """Entries, a snapshot, a new term or vote must survive any crash before we act on
    them. A commit index and applied entries need not: they are redone from the log."""
    if rd.entries or rd.snapshot is not None:
        return True
    hs = rd.hard_state
    return hs is not None and (hs.term, hs.vote) != durable_term_vote


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
    def __init__(self, settings: Settings, ctx: zmq.Context | None = None) -> None:
        self.settings = settings
        self.id = settings.node.id
        # First, so that the HTTP process's start overlaps ours; it gets ready in run().
        self.http = HttpProcess(self.id, settings.node.http, settings.node.client,
                                settings.cluster.max_value_bytes, settings.log_level)
        try:
            self._open(settings, ctx)
        except BaseException:
            self.http.stop()
            raise

    def _open(self, settings: Settings, ctx: zmq.Context | None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.env = LmdbEnv(settings.node.data_dir, settings.cluster.map_size_bytes)
        self.sm = KVStateMachine(self.env)
        self._bootstrap()
        self.logstore = LogStore(self.env, self.sm)
        self.applied = self.sm.applied_index()
        hard_state, _ = self.logstore.initial_state()
        self._durable_term_vote = (hard_state.term, hard_state.vote)
        self.core = RaftNode(raft_config(settings, self.applied), self.logstore, random.Random())
        self.members = self._member_addresses()
        self.raft_bind = os.environ.get(ENV_TEST_RAFT_BIND) or settings.node.raft
        self.unsafe_local_reads = os.environ.get(ENV_TEST_UNSAFE_LOCAL_READS) == "1"
        self.transport = _bind_retrying(
            lambda: Transport(self.ctx, self.id, self.raft_bind, self._raft_peers())
        )
        self.client = _bind_retrying(
            lambda: ClientEndpoint(self.ctx, settings.node.client, settings.cluster.max_value_bytes)
        )
        self._wake_pull = self.ctx.socket(zmq.PULL)
        self._wake_addr = f"inproc://raftkvd-wake-{id(self)}"
        self._wake_pull.bind(self._wake_addr)
        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="raftkvd-status")
        self._background_results: queue.Queue[tuple[Request, dict[str, Any]]] = queue.Queue()
        self.pending_writes: dict[int, PendingWrite] = {}
        self.read_batch = ReadBatch()
        self.reads_by_ctx: dict[bytes, ReadBatch] = {}
        self.reads_waiting: list[ReadBatch] = []
        self.pending_transfer: tuple[Request, float] | None = None
        self._read_ids = itertools.count(1)
        self._stopping = False
        self._no_space = False
        self.role = StateRole.FOLLOWER
        self.leader_id = NONE
        self.leader_changes = 0
        self.started_at = time.monotonic()
        self._start_commit = self._seen_commit = self.core.status().commit
        self._caught_up = False
        self.published: Snapshot | None = None
        self._next_publish = 0.0
        self.metrics = NodeMetrics(lambda: self.published)
        self.client.observer = self.metrics.observe_client
        for op in Op:
            self.metrics.declare_client(op.value, Code.OK.value)

    # ==== setup ================================================================================
    def _bootstrap(self) -> None:
        """A brand-new data dir takes its first membership from the cluster file, unless the
        node joins a running cluster: then the leader's snapshot brings the membership."""
        if self.settings.join:
            return
        nodes = self.settings.cluster.nodes
        conf = ConfState(frozenset(n.id for n in nodes))
        addresses = {n.id: {"raft": n.raft, "client": n.client, "http": n.http} for n in nodes}
        self.sm.bootstrap(conf, addresses)

    def _member_addresses(self) -> dict[int, dict[str, str]]:
        addresses = {
            n.id: {"raft": n.raft, "client": n.client, "http": n.http}
            for n in self.settings.cluster.nodes
        }
        addresses.update(self.sm.members())
        return addresses

    def _raft_peers(self) -> dict[int, str]:
        # A joining node knows no membership yet: it answers whoever in the file calls.
        ids = self.core.status().conf.ids() or {n.id for n in self.settings.cluster.nodes}
        return {i: self.members[i]["raft"] for i in ids if i != self.id and i in self.members}

    # ==== the loop ===============================================================================
    def stop(self) -> None:
        """Safe from a signal handler: the loop notices within one tick."""
        self._stopping = True

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in (self.transport.socket, self.client.socket, self._wake_pull):
            poller.register(sock, zmq.POLLIN)
        tick_s = TICK_MS / 1000
        next_tick = time.monotonic() + tick_s
        try:
            self._publish()
            log.info("node=%d event=serving raft=%s client=%s http=%s", self.id, self.settings.node.raft,
                     self.settings.node.client, self.settings.node.http)
            if self.raft_bind != self.settings.node.raft:
                log.warning("node=%d event=test_hook %s=%s", self.id, ENV_TEST_RAFT_BIND, self.raft_bind)
            if self.unsafe_local_reads:
                log.warning("node=%d event=test_hook %s=1 UNSAFE: linearizable reads are served locally "
                            "without ReadIndex and may be stale; for the chaos checker's own test only",
                            self.id, ENV_TEST_UNSAFE_LOCAL_READS)
            http_ready = False
            # The loop allocates many short-lived messages and entries: collect young objects
            # less often, and never rescan what startup left behind.
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
            while not self._stopping:
                timeout_ms = max(0.0, (next_tick - time.monotonic()) * 1000)
                poller.poll(timeout_ms)
                self._receive()
                next_tick = self._tick(next_tick, tick_s)
                self._flush_reads()
                self._process_ready()
                if not http_ready and self.http.poll_ready():
                    http_ready = True
                    sdnotify.notify("READY=1")  # every endpoint serves now
                if time.monotonic() >= self._next_publish:
                    self._publish()
                    self.http.supervise()
                    self._promote_caught_up_learners()
        finally:
            sdnotify.notify("STOPPING=1")
            self._shutdown()

    def _receive(self) -> None:
        for msg in self.transport.recv_all(MAX_BATCH):
            if msg.type == MessageType.HEARTBEAT_RESP:
                self.metrics.peer_rtt.heartbeat_answered(msg.frm, time.monotonic())
            try:
                self.core.step(msg)
            except RaftLogError as exc:  # a message contradicting committed state: drop it
                log.error("node=%d event=message_rejected type=%s frm=%d error=%s",
                          self.id, msg.type.name, msg.frm, exc)
        self._no_space = self.env.used_bytes() > NO_SPACE_FRACTION * self.env.map_size
        for request in self.client.recv_all(MAX_BATCH):
            try:
                self._handle(request)
            except InvalidRequest as exc:
                self._fail(request, Code.INVALID, str(exc))
            except NoSpaceError as exc:
                self._fail(request, Code.NO_SPACE, str(exc))
        while True:
            try:
                self._wake_pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        while not self._background_results.empty():
            self.client.respond(*self._background_results.get_nowait())

    def _tick(self, next_tick: float, tick_s: float) -> float:
        now = time.monotonic()
        if now - next_tick > 50 * tick_s:
            next_tick = now  # we were stalled (e.g. SIGSTOP): don't replay a burst of ticks
        while now >= next_tick:
            self.core.tick()
            next_tick += tick_s
        if self.pending_transfer and now > self.pending_transfer[1]:
            request, _ = self.pending_transfer
            self.pending_transfer = None
            self._fail(request, Code.UNAVAILABLE, "leadership transfer did not finish in time")
        return next_tick

    # ==== Ready: the I/O contract of the core ========================================================
    def _process_ready(self) -> None:
        for _ in range(8):
            if not self.core.has_ready():
                return
            self._handle_ready(self.core.ready())

    def _handle_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._on_role_change(rd.soft_state.role, rd.soft_state.leader)
        self._send_all(rd.messages)
        if rd.must_sync() or rd.committed_entries:
            self._persist_and_apply(rd)
        self._send_all(rd.persisted_messages)
        membership_changed = rd.snapshot is not None
        if rd.snapshot is not None:
            self.applied = rd.snapshot.meta.index
        if rd.hard_state is not None and rd.hard_state.commit > self._seen_commit:
            self.metrics.proposals_committed.inc(rd.hard_state.commit - self._seen_commit)
            self._seen_commit = rd.hard_state.commit
        if rd.committed_entries:
            self.applied = rd.committed_entries[-1].index
            self.metrics.proposals_applied.inc(len(rd.committed_entries))
            membership_changed |= any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)
        for state in rd.read_states:
            batch = self.reads_by_ctx.pop(state.context, None)
            if batch is not None:
                batch.index = state.index
                self.reads_waiting.append(batch)
        self.core.advance(rd)
        if membership_changed:  # after advance: the core applies conf changes there
            self._membership_changed()
        self._serve_reads()

    def _send_all(self, messages: list[Message]) -> None:
        for msg in messages:
            if msg.type == MessageType.HEARTBEAT:
                self.metrics.peer_rtt.heartbeat_sent(msg.to, time.monotonic())
            if not self.transport.send(msg):
                self.core.report_unreachable(msg.to)  # stop streaming into a full or dead link

    def _persist_and_apply(self, rd: Ready) -> None:
        started = time.perf_counter()
        durable = needs_durability(rd, self._durable_term_vote)
        try:
            with self.env.write(durable=durable) as batch:
                self.logstore.save(rd.hard_state, rd.entries, rd.snapshot, batch=batch)
                if rd.snapshot is not None:
                    self.sm.restore(rd.snapshot.data, batch=batch)
                if rd.committed_entries:
                    apply_started = time.perf_counter()
                    results = self.sm.apply(rd.committed_entries, batch=batch)
                    self.metrics.apply_txn.observe(time.perf_counter() - apply_started)
                    # Committed entries are durable on a majority already, and a crash before this
                    # transaction commits re-applies them identically: answer before our fsync.
                    self._answer_writes(rd, results)
                    self._maybe_compact(rd, batch)
        except NoSpaceError:
            # Nothing of this Ready reached disk; acknowledging it would lie. Stop cleanly
            # (the supervisor restarts us) rather than run with memory ahead of disk.
            log.critical("node=%d event=storage_full action=stopping", self.id)
            self._stopping = True
            raise
        if rd.hard_state is not None:
            self._durable_term_vote = (rd.hard_state.term, rd.hard_state.vote)
        self.metrics.log_fsync.observe(time.perf_counter() - started)

    def _maybe_compact(self, rd: Ready, batch: Any) -> None:
        applied = rd.committed_entries[-1].index
        threshold = self.settings.cluster.snapshot_threshold
        if applied - self.logstore.first_index() > threshold + COMPACTION_KEEP:
            self.logstore.compact(applied - COMPACTION_KEEP, batch=batch)

    def _answer_writes(self, rd: Ready, results: list[dict[str, Any]]) -> None:
        for entry, result in zip(rd.committed_entries, results, strict=True):
            pending = self.pending_writes.pop(entry.index, None)
            if pending is None:
                continue
            if pending.term != entry.term:
                self.metrics.proposals_failed.inc()
                self._fail(pending.request, Code.UNAVAILABLE, "leadership changed; retry")
            elif pending.request.op in protocol.MEMBER_OPS:
                self.client.respond(pending.request, {**result, "index": entry.index})
            else:
                self.client.respond(pending.request, result)

    def _membership_changed(self) -> None:
        self.members = self._member_addresses()
        wanted = self._raft_peers()
        current = self.transport.peers
        for peer in set(current) - set(wanted):
            self.transport.remove_peer(peer)
        for peer, endpoint in wanted.items():
            if current.get(peer) != endpoint:
                self.transport.add_peer(peer, endpoint)

    def _on_role_change(self, role: StateRole, leader: int) -> None:
        self._next_publish = 0.0  # the metrics learn of it at the end of this turn
        if leader != self.leader_id:
            self.leader_changes += 1
            log.info("node=%d term=%d event=leader_changed leader=%d role=%s",
                     self.id, self.core.term, leader, role.value)
        was_leader = self.role == StateRole.LEADER
        self.role, self.leader_id = role, leader
        if was_leader and role != StateRole.LEADER:
            self._fail_all_pending()
        if self.pending_transfer and leader not in (NONE, self.id):
            request, _ = self.pending_transfer
            self.pending_transfer = None
            self.client.respond(request, {"code": Code.OK.value, "leader_id": leader})

    def _fail_all_pending(self) -> None:
        """Leadership is gone: answer now so clients retry elsewhere (their session dedups)."""
        self.metrics.proposals_failed.inc(len(self.pending_writes))
        for pending in self.pending_writes.values():
            self._redirect(pending.request)
        self.pending_writes.clear()
        batches = [self.read_batch, *self.reads_by_ctx.values(), *self.reads_waiting]
        for batch in batches:
            for request in batch.requests:
                self._redirect(request)
        self.read_batch, self.reads_by_ctx, self.reads_waiting = ReadBatch(), {}, []

    # ==== client requests =============================================================================
    def _handle(self, request: Request) -> None:
        op = request.op
        if op == Op.STATUS:
            self.client.respond(request, {"code": Code.OK.value, "status": self.status()})
        elif op == Op.CLUSTER:
            gather = functools.partial(self._gather_cluster, self._member_clients())
            self._background.submit(self._in_background, request, gather)
        elif op == Op.METRICS:
            self._background.submit(self._in_background, request, self._metrics_text)
        elif op in (Op.GET, Op.LIST):
            self._handle_read(request)
        elif op in protocol.WRITE_OPS:
            self._handle_write(request)
        elif op == Op.TRANSFER:
            self._handle_transfer(request)
        elif op == Op.SNAPSHOT:
            self._handle_snapshot(request)
        elif op == Op.MEMBER_ADD:
            self._handle_member_add(request)
        elif op == Op.MEMBER_REMOVE:
            self._handle_member_remove(request)
        elif op == Op.HASH:  # scans every key: on request only, never in status()
            self.client.respond(
                request, {"code": Code.OK.value, "hash": self.sm.hash(), "applied": self.applied}
            )

    def _handle_write(self, request: Request) -> None:
        if self.role != StateRole.LEADER:
            self._redirect(request)
            return
        if self._no_space:
            self.metrics.proposals_failed.inc()
            self._fail(request, Code.NO_SPACE, "storage full: writes are refused, reads still work")
            return
        body = request.body
        command = {k: body.get(k) for k in ("op", "key", "value", "expected", "session", "seq")}
        try:
            index = self.core.propose(msgpack.packb(command))
        except ProposalDropped as exc:
            self.metrics.proposals_failed.inc()
            self._fail(request, Code.UNAVAILABLE, str(exc))
            return
        self.pending_writes[index] = PendingWrite(request, self.core.term)

    def _handle_read(self, request: Request) -> None:
        if request.body.get("consistency") == protocol.CONSISTENCY_SERIALIZABLE:
            self._serve_read(request)
        elif self.role != StateRole.LEADER:
            self._redirect(request)
        elif self.unsafe_local_reads:
            self._serve_read(request)  # TEST ONLY (ENV_TEST_UNSAFE_LOCAL_READS): may be stale
        else:
            self.read_batch.requests.append(request)

    def _flush_reads(self) -> None:
        """One ReadIndex round for every linearizable read that arrived this turn."""
        if not self.read_batch.requests:
            return
        ctx = f"{self.id}:{next(self._read_ids)}".encode()
        batch, self.read_batch = self.read_batch, ReadBatch()
        try:
            self.core.read_index(ctx)
        except ProposalDropped as exc:
            for request in batch.requests:
                self._fail(request, Code.UNAVAILABLE, str(exc))
            return
        self.reads_by_ctx[ctx] = batch

    def _serve_reads(self) -> None:
        still_waiting = []
        for batch in self.reads_waiting:
            if batch.index <= self.applied:
                for request in batch.requests:
                    self._serve_read(request)
            else:
                still_waiting.append(batch)
        self.reads_waiting = still_waiting

    def _serve_read(self, request: Request) -> None:
        body = request.body
        if request.op == Op.GET:
            found = self.sm.get(body["key"])
            if found is None:
                self._fail(request, Code.NOT_FOUND, f"key not found: {body['key']}")
            else:
                self.client.respond(
                    request, {"code": Code.OK.value, "value": found[0], "revision": found[1]}
                )
        else:
            items = self.sm.list(body.get("prefix") or "", body.get("limit"))
            self.client.respond(request, {"code": Code.OK.value, "items": [list(i) for i in items]})

    def _handle_transfer(self, request: Request) -> None:
        if self.role != StateRole.LEADER:
            self._redirect(request)
            return
        if self.pending_transfer is not None:
            self._fail(request, Code.UNAVAILABLE, "a leadership transfer is already in progress")
            return
        target = request.body.get("to") or self._best_transferee()
        if target == NONE or target == self.id:
            self._fail(request, Code.INVALID, "no other voter to transfer leadership to")
            return
        if target not in self.core.status().conf.voters:
            self._fail(request, Code.INVALID, f"node {target} is not a voter of this cluster")
            return
        self.core.transfer_leadership(target)
        self.pending_transfer = (request, time.monotonic() + TRANSFER_TIMEOUT_S)

    def _best_transferee(self) -> int:
        status = self.core.status()
        candidates = [
            (p.match, pid) for pid, p in status.progress.items()
            if pid != self.id and pid in status.conf.voters
        ]
        return max(candidates)[1] if candidates else NONE

    # ---- membership (thesis §4.1: one server at a time; new servers catch up as learners) ----
    def _handle_member_add(self, request: Request) -> None:
        if self.role != StateRole.LEADER:
            self._redirect(request)
            return
        body = request.body
        node_id = body["node_id"]
        if node_id in self.core.status().conf.ids():
            self._fail(request, Code.INVALID, f"node {node_id} is already a member")
            return
        if self.logstore.first_index() <= 1:
            # The founding membership is not in the log (it came from the cluster file):
            # compact, so the new node starts from a snapshot, which carries it.
            self._compact_to_applied()
        context = msgpack.packb({k: body[k] for k in ("raft", "client", "http")})
        self._propose_member_change(request, ConfChange(ConfChangeType.ADD_LEARNER, node_id, context))

    def _handle_member_remove(self, request: Request) -> None:
        if self.role != StateRole.LEADER:
            self._redirect(request)
            return
        node_id = request.body["node_id"]
        if node_id not in self.core.status().conf.ids():
            self._fail(request, Code.INVALID, f"node {node_id} is not a member")
            return
        self._propose_member_change(request, ConfChange(ConfChangeType.REMOVE_NODE, node_id))

    def _propose_member_change(self, request: Request, change: ConfChange) -> None:
        """Answered once the change is applied, like a write."""
        try:
            index = self.core.propose_conf_change(change)
        except ProposalDropped as exc:
            self._fail(request, Code.UNAVAILABLE, str(exc))
            return
        log.info("node=%d event=member_change type=%s member=%d index=%d", self.id,
                 change.type.name, change.node_id, index)
        self.pending_writes[index] = PendingWrite(request, self.core.term)

    def _promote_caught_up_learners(self) -> None:
        """The leader makes a learner a voter once its log has caught up with the commit
        index, so adding a server never leaves the cluster waiting on an empty log."""
        if self.role != StateRole.LEADER:
            return
        st = self.core.status()
        for learner in sorted(st.conf.learners):
            progress = st.progress.get(learner)
            if progress is None or progress.match < st.commit:
                continue
            try:
                index = self.core.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, learner))
            except ProposalDropped:
                return  # another change is still pending: one at a time
            log.info("node=%d event=promote_learner member=%d match=%d index=%d", self.id, learner,
                     progress.match, index)
            return

    def _handle_snapshot(self, request: Request) -> None:
        self._compact_to_applied()
        self.client.respond(request, {"code": Code.OK.value, "index": self.applied})

    def _compact_to_applied(self) -> None:
        with self.env.write() as batch:
            self.logstore.compact(self.applied, batch=batch)

    def _member_clients(self) -> dict[int, str]:
        """Client endpoints of the current members (of the file's nodes while we know none):
        a removed node lists the cluster it left, without itself."""
        ids = self.core.status().conf.ids() or set(self.members)
        return {i: a["client"] for i, a in self.members.items() if i in ids}

    def _gather_cluster(self, members: dict[int, str]) -> dict[str, Any]:
        return {"nodes": fetch_statuses(self.ctx, members, CLUSTER_STATUS_TIMEOUT_S)}

    def _metrics_text(self) -> dict[str, Any]:
        return {"text": self.metrics.exposition().decode()}

    def _in_background(self, request: Request, work: Callable[[], dict[str, Any]]) -> None:
        """Run `work` off the loop (it may block or take long); the loop sends its answer."""
        try:
            fields = {"code": Code.OK.value, **work()}
        except Exception as exc:  # answer, never leave the client waiting
            log.exception("node=%d event=background_failed op=%s", self.id, request.op.value)
            fields = {"code": Code.INTERNAL.value, "error": f"{request.op.value} failed: {exc}"}
        self._background_results.put((request, fields))
        wake = self.ctx.socket(zmq.PUSH)
        try:
            wake.connect(self._wake_addr)
            wake.send(b"", zmq.NOBLOCK)
        finally:
            wake.close(0)

    def _redirect(self, request: Request) -> None:
        if self.leader_id in (NONE, self.id):
            self._fail(request, Code.UNAVAILABLE, "no leader")
            return
        leader = self.members.get(self.leader_id, {}).get("client", "")
        self.client.respond(
            request,
            {"code": Code.NOT_LEADER.value, "error": "not the leader", "leader_id": self.leader_id,
             "leader": leader},
        )

    def _fail(self, request: Request, code: Code, message: str) -> None:
        self.client.respond(request, {"code": code.value, "error": message})

    # ==== status ====================================================================================
    def status(self) -> dict[str, Any]:
        """The one status object behind raftctl status, /cluster, /health and /metrics."""
        st = self.core.status()
        own = self.members.get(self.id, {})
        info: dict[str, Any] = {
            "id": self.id,
            "endpoint": own.get("client", self.settings.node.client),
            "raft": own.get("raft", self.settings.node.raft),
            "http": own.get("http", self.settings.node.http),
            "role": st.role.value,
            "term": st.term,
            "leader_id": st.leader,
            "last_index": st.last_index,
            "first_index": st.first_index,
            "commit": st.commit,
            "applied": self.applied,
            "keys": self.sm.key_count(),
            "healthy": st.leader != NONE,
            "ready": self._is_ready(st.leader),
            "pending_proposals": len(self.pending_writes),
            "voters": sorted(st.conf.voters),
            "learners": sorted(st.conf.learners),
            "leader_changes": self.leader_changes,
            "db_used_bytes": self.env.used_bytes(),
            "db_size_bytes": self.env.map_size,
            "no_space": self._no_space,
            "malformed_frames": self.transport.malformed_total + self.client.malformed_total,
        }
        if st.role == StateRole.LEADER:
            info["progress"] = {str(pid): p.match for pid, p in st.progress.items()}
        return info

    def _is_ready(self, leader: int) -> bool:
        """/ready: a leader is known, and what was committed when this node started has been
        applied (latched: once caught up, only the leader decides)."""
        if not self._caught_up and self.applied >= self._start_commit:
            self._caught_up = True
        return self._caught_up and leader != NONE

    def _publish(self) -> None:
        """Hand a fresh, never-mutated status to other threads; rebinding is atomic."""
        failures = {peer: s.send_failures for peer, s in self.transport.stats().items()}
        self.published = Snapshot(time.monotonic(), self.status(), failures)
        self._next_publish = self.published.at + PUBLISH_INTERVAL_S

    def _shutdown(self) -> None:
        self.http.stop()
        for pending in self.pending_writes.values():
            self._fail(pending.request, Code.UNAVAILABLE, "node shutting down")
        self._background.shutdown(wait=True, cancel_futures=True)
        self.transport.close()
        self.client.close()
        self._wake_pull.close(0)
        self.env.close()
        log.info("node=%d event=stopped", self.id)
