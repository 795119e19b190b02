"""Prometheus metrics of one node (REFERENCES §5: etcd's names with a raftkvd_ prefix).

Two processes, two registries: the node process's (`NodeMetrics`) and the HTTP process's
(`HttpMetrics`, REST requests); a scrape of /metrics returns the first, fetched over the
client protocol, followed by the second.

In the node process, two kinds, so that a scrape never touches the event loop's state:
- gauges and state counters (term, indices, leader, LMDB size, peer send failures) are
  read at scrape time from the `Snapshot` the node loop publishes every turn or so:
  one attribute holding a fresh, never-mutated status dict, so the scraping thread reads
  a consistent view without a lock (rebinding a reference is atomic under the GIL);
- event counters and latency histograms (fsync, apply, client requests, peer RTT) are
  updated directly by the node loop, through label children cached here so the hot
  path costs a dict lookup and one observe.

Every node has its own CollectorRegistry: several nodes in one process never collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
DISK_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
                2.048, 4.096, 8.192)
"""etcd's disk buckets (0.5 ms doubling to 8 s): the alerts are on p99 < 10 ms / 25 ms."""
RTT_BUCKETS = (0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512,
               0.1024, 0.2048, 0.4096, 0.8192, 1.6384)
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RATE_LIMITED = "raftkvd_rate_limited"
RATE_LIMITED_HELP = "Requests refused because their client was over its [limits] rate."
ENDPOINT_REST = "rest"
ENDPOINT_CLIENT = "client"
HEARTBEAT_STALE_S = 2.0
"""A heartbeat unanswered for this long was lost: the next one starts a new measurement."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the node loop publishes for other threads: taken at `at` (time.monotonic)."""

    at: float
    status: dict[str, Any]
    peer_send_failures: dict[int, int] = field(default_factory=dict)


class PeerRtt:
    """Round trip per peer, from a leader's heartbeat to that peer's response.

    Only one heartbeat per peer is timed at a time (the first sent after the previous
    answer), so a response is never paired with a later heartbeat than its own.
    """

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._sent: dict[int, float] = {}
        self._children: dict[int, Any] = {}

    def heartbeat_sent(self, peer: int, now: float) -> None:
        sent = self._sent.get(peer)
        if sent is None or now - sent > HEARTBEAT_STALE_S:
            self._sent[peer] = now

    def heartbeat_answered(self, peer: int, now: float) -> None:
        sent = self._sent.pop(peer, None)
        if sent is None:
            return
        child = self._children.get(peer)
        if child is None:
            child = self._children[peer] = self._histogram.labels(peer=str(peer))
        child.observe(now - sent)


class NodeMetrics:
    """The registry of one node process and the instruments its event loop updates."""

    def __init__(self, snapshot: Callable[[], Snapshot | None]) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.log_fsync = Histogram(
            "raftkvd_disk_log_fsync_duration_seconds",
            "Duration of the node's persist transaction (log entries, hard state, applied "
            "entries; one LMDB commit and fsync per loop turn).",
            buckets=DISK_BUCKETS, registry=reg)
        self.apply_txn = Histogram(
            "raftkvd_disk_apply_txn_duration_seconds",
            "Time spent applying committed entries to the key-value state machine inside "
            "the persist transaction.",
            buckets=DISK_BUCKETS, registry=reg)
        self.peer_rtt = PeerRtt(Histogram(
            "raftkvd_network_peer_round_trip_time_seconds",
            "Leader's heartbeat to a peer until that peer's heartbeat response.",
            ["peer"], buckets=RTT_BUCKETS, registry=reg))
        self.proposals_committed = Counter(
            "raftkvd_server_proposals_committed", "Log entries this node has seen committed.",
            registry=reg)
        self.proposals_applied = Counter(
            "raftkvd_server_proposals_applied", "Log entries this node has applied.", registry=reg)
        self.proposals_failed = Counter(
            "raftkvd_server_proposals_failed",
            "Client writes that failed after reaching this node's write path (dropped "
            "proposal, leadership lost before commit, storage full).",
            registry=reg)
        self._client_requests = Counter(
            "raftkvd_client_requests", "Requests answered on the ZeroMQ client endpoint.",
            ["op", "code"], registry=reg)
        self._client_duration = Histogram(
            "raftkvd_client_request_duration_seconds",
            "Time from a ZeroMQ client request's arrival to its answer.",
            ["op"], buckets=REQUEST_BUCKETS, registry=reg)
        self._client_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._security_rejected = Counter(
            "raftkvd_security_rejected",
            "CurveZMQ handshakes refused (a key that is not allowed, or no CURVE at all), by "
            "endpoint: raft (peer links) or client.", ["endpoint"], registry=reg)
        self.rate_limited = Counter(RATE_LIMITED, RATE_LIMITED_HELP, ["endpoint"],
                                    registry=reg).labels(endpoint=ENDPOINT_CLIENT)
        """Native requests refused by the client endpoint's limiter (the HTTP process adds
        endpoint="rest" to this family on /metrics: `with_rest_rate_limited`)."""
        reg.register(_StatusCollector(snapshot))

    def declare_client(self, op: str, code: str) -> None:
        """Export (op, code) at zero before its first request, so dashboards see it from start."""
        self._client_child(op, code)

    def _client_child(self, op: str, code: str) -> tuple[Any, Any]:
        children = self._client_children.get((op, code))
        if children is None:
            children = self._client_children[(op, code)] = (
                self._client_requests.labels(op=op, code=code), self._client_duration.labels(op=op))
        return children

    def observe_client(self, op: str, code: str, received: float | None) -> None:
        """One answered ZeroMQ request (`received`: time.monotonic() at arrival, if known)."""
        children = self._client_child(op, code)
        children[0].inc()
        if received is not None:
            children[1].observe(time.monotonic() - received)

    def declare_security(self, endpoints: tuple[str, ...]) -> None:
        """Export each endpoint's refusals at zero, when the node is secured."""
        for endpoint in endpoints:
            self._security_rejected.labels(endpoint=endpoint)

    def security_rejected(self, endpoint: str) -> None:
        """One refused handshake (called from the ZAP thread: prometheus counters lock)."""
        self._security_rejected.labels(endpoint=endpoint).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric of the node process."""
        return generate_latest(self.registry)


class HttpMetrics:
    """The REST API's own instruments, kept in the HTTP process that updates them; its
    /metrics shows them after the node process's exposition (`NodeMetrics`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "raftkvd_http_requests", "Requests answered by the REST API.",
            ["method", "route", "code"], registry=self.registry)
        self._duration = Histogram(
            "raftkvd_http_request_duration_seconds", "Time to answer a REST API request.",
            ["method", "route"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self.watch_streams = Gauge(
            "raftkvd_http_watch_streams", "GET /watch event streams open.", registry=self.registry)
        self.watch_cuts = Counter(
            "raftkvd_http_watch_cut", "Event streams cut because their client read too slowly.",
            registry=self.registry)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.rate_limited = 0
        """REST requests answered 429; exported inside the node's family (one name, one
        family: a second HELP/TYPE of the same name would not parse)."""

    def declare(self, method: str, route: str, code: int) -> None:
        """Export (method, route, code) at zero before its first request."""
        self._child(method, route, code)

    def _child(self, method: str, route: str, code: int) -> tuple[Any, Any]:
        children = self._children.get((method, route, code))
        if children is None:
            children = self._children[(method, route, code)] = (
                self._requests.labels(method=method, route=route, code=str(code)),
                self._duration.labels(method=method, route=route))
        return children

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        """One answered REST request; `route` is the route template, never the raw path."""
        children = self._child(method, route, code)
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def with_rest_rate_limited(self, node_text: bytes) -> bytes:
        """The node's exposition with this process's endpoint="rest" sample placed in the
        node's raftkvd_rate_limited family (or the family on its own if the node has none)."""
        sample = f'{RATE_LIMITED}_total{{endpoint="{ENDPOINT_REST}"}} {float(self.rate_limited)}'
        lines = node_text.split(b"\n")
        prefix = f"{RATE_LIMITED}_total{{".encode()
        for at, line in enumerate(lines):
            if line.startswith(prefix):
                lines.insert(at + 1, sample.encode())
                return b"\n".join(lines)
        family = f"# HELP {RATE_LIMITED}_total {RATE_LIMITED_HELP}\n# TYPE {RATE_LIMITED}_total counter\n"
        return node_text + (family + sample + "\n").encode()


class _StatusCollector:
    """Gauges and state counters from the latest published Snapshot, at scrape time."""

    def __init__(self, snapshot: Callable[[], Snapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        if snap is None:
            return
        st = snap.status
        leader = st.get("leader_id") or 0
        yield _gauge("raftkvd_server_has_leader", "1 if this node knows a leader.", leader != 0)
        yield _gauge("raftkvd_server_is_leader", "1 if this node is the leader.", st["role"] == "leader")
        yield _gauge("raftkvd_server_ready", "1 once /ready answers 200.", bool(st.get("ready")))
        yield CounterMetricFamily(
            "raftkvd_server_leader_changes_seen", "Leader changes seen by this node since it started.",
            value=st["leader_changes"])
        yield _gauge("raftkvd_server_term", "Current Raft term.", st["term"])
        yield _gauge("raftkvd_raft_commit_index", "Highest log index known committed.", st["commit"])
        yield _gauge("raftkvd_raft_applied_index", "Highest log index applied.", st["applied"])
        yield _gauge("raftkvd_raft_last_log_index", "Index of the last log entry.", st["last_index"])
        yield _gauge("raftkvd_server_proposals_pending", "Client writes proposed and not yet answered.",
                     st.get("pending_proposals", 0))
        yield _gauge("raftkvd_server_keys", "Keys in the state machine.", st["keys"])
        yield _gauge("raftkvd_watch_requests_held", "Watch requests this node holds until an "
                     "event matches (native watchers and REST event streams alike).",
                     st.get("watches_held", 0))
        yield _gauge("raftkvd_lmdb_map_size_bytes", "LMDB map size (the most the file may grow to).",
                     st["db_size_bytes"])
        yield _gauge("raftkvd_lmdb_map_used_bytes", "LMDB map in use (high-water mark of the file).",
                     st["db_used_bytes"])
        yield CounterMetricFamily(
            "raftkvd_network_malformed_frames", "Undecodable frames dropped on the raft and client "
            "endpoints.", value=st.get("malformed_frames", 0))
        failures = CounterMetricFamily(
            "raftkvd_network_peer_sent_failures", "Raft messages to a peer dropped on send "
            "(link full or not connected).", labels=["peer"])
        for peer, count in sorted(snap.peer_send_failures.items()):
            failures.add_metric([str(peer)], count)
        yield failures
        yield _gauge("raftkvd_status_age_seconds", "Age of the node status these gauges come from.",
                     max(0.0, time.monotonic() - snap.at))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))
