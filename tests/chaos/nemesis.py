"""The nemesis: real faults against a ChaosCluster, one after another, each healed and followed by
a recovery probe (a write must be acknowledged within WRITE_RECOVERY_S of the heal).

Fault kinds (category in brackets), after the etcd functional tester's cases, hashicorp/raft's
fuzzy LeaderPartitions and Jepsen's partition nemeses:
- kill-leader, kill-follower, kill-minority [kill]: SIGKILL, restart at heal.
- terminate-node [kill]: SIGTERM (a clean shutdown must finish in time), restart at heal.
- kill-follower-snapshot [kill]: SIGKILL a follower, let writes go on, make every live node
  compact its log (the `snapshot` op), restart: the follower can only catch up by a snapshot
  (etcd's "until a snapshot triggers" cases).
- pause-leader, pause-follower [pause]: SIGSTOP, SIGCONT at heal.
- partition-halves [partition]: a random minority against the majority, both ways, blackholed or cut.
- partition-leader [partition]: the leader alone against everyone.
- partition-one-way [partition]: the leader cannot send, or cannot receive, or one node cannot
  reach some others; the links the other way keep working.
- isolated-leader-reads [partition, pause]: pause the leader and blackhole it, write through the
  majority, resume it (still isolated, still believing it leads) and read at once from it: the
  scenario that catches reads served without ReadIndex / a valid lease.
- delay [delay]: every link a little, or one node's links up to a second (with jitter).
- drop [drop]: a random set of links resets connections and stalls at random.
- mixed: two of the above (not isolated-leader-reads) at once.

A share of the faults is held long (5-10 s by default) rather than 1-3 s: long enough for
ZeroMQ's heartbeat to drop a blackholed connection and redial, so a healed blackhole then
delivers old bytes after newer ones (stale, reordered messages).

Every operation the nemesis itself issues (probe writes, the reads and writes of
isolated-leader-reads) goes into the same history as the clients'.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq
from chaoscluster import ChaosCluster
from faultproxy import BLACKHOLE, CUT, Fault, delay, flaky
from history import Recorder
from linearizability import OpKind
from workload import KeySpace

from raftctl import Client
from raftkv.curve import KeyPair, as_client
from raftkv.frames import FrameError, decode_client, encode_client

KIND_CATEGORIES: dict[str, tuple[str, ...]] = {
    "kill-leader": ("kill",),
    "kill-follower": ("kill",),
    "kill-minority": ("kill",),
    "kill-follower-snapshot": ("kill",),
    "terminate-node": ("kill",),
    "pause-leader": ("pause",),
    "pause-follower": ("pause",),
    "partition-halves": ("partition",),
    "partition-leader": ("partition",),
    "partition-one-way": ("partition",),
    "isolated-leader-reads": ("partition", "pause"),
    "delay": ("delay",),
    "drop": ("drop",),
    "mixed": (),
}
ALL_KINDS = tuple(KIND_CATEGORIES)
CATEGORIES = ("kill", "pause", "partition", "delay", "drop")
MIXABLE = tuple(k for k in ALL_KINDS if k not in ("mixed", "isolated-leader-reads", "kill-follower-snapshot"))
WRITE_RECOVERY_S = 5.0
"""After a heal the cluster must acknowledge a write within this (SPEC §6: about two election
timeouts after the old leader dies; this bound also covers client failover)."""
PROBE_GIVE_UP_S = 30.0
PROBE_TRY_TIMEOUT_S = 1.0
LEADER_WAIT_S = 3.0
MAJORITY_WRITE_S = 10.0
CATCH_UP_S = 15.0
STALE_READ_WINDOW_S = 1.0
STALE_READS = 8


@dataclass
class FaultEvent:
    kind: str
    detail: str
    started: float
    healed: float = 0.0
    recovery_s: float | None = None


@dataclass
class _Applied:
    """What a fault did, so that heal_all can undo it."""

    detail: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)


class Nemesis:
    """Injects faults from `kinds` until `run`'s deadline; thread-safe counters for the report."""

    def __init__(
        self,
        cluster: ChaosCluster,
        recorder: Recorder,
        keys: KeySpace,
        rng: random.Random,
        kinds: tuple[str, ...] = ALL_KINDS,
        hold_s: tuple[float, float] = (1.0, 3.0),
        quiet_s: tuple[float, float] = (0.5, 1.5),
        long_hold_s: tuple[float, float] = (5.0, 10.0),
        long_hold_share: float = 0.0,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        unknown = set(kinds) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
        self.cluster = cluster
        self.recorder = recorder
        self.keys = keys
        self.rng = rng
        self.kinds = kinds
        self.hold_s = hold_s
        self.quiet_s = quiet_s
        self.long_hold_s = long_hold_s
        self.long_hold_share = long_hold_share
        self.log = log
        self.down: set[int] = set()
        """Nodes we killed and have not restarted yet (a node exiting on its own is a crash)."""
        self.counts: Counter[str] = Counter()
        self.categories: Counter[str] = Counter()
        self.events: list[FaultEvent] = []
        self.anomalies: list[str] = []
        self.snapshots_installed = 0
        """Restarted followers seen catching up by a snapshot (their log now starts past its old end)."""
        self._catch_up: tuple[int, int, int] | None = None
        self.stop_event = threading.Event()
        self._values = 0
        self._started = time.monotonic()

    # ---- the loop --------------------------------------------------------------------------------
    def plan(self) -> list[str]:
        """Every kind once (shuffled) first, so even a short run covers them all; then at random."""
        first = list(self.kinds)
        self.rng.shuffle(first)
        return first

    def run(self, until: float) -> None:
        """Inject faults until `until`, and at least every kind once."""
        queue = self.plan()
        while (queue or time.monotonic() < until) and not self.stop_event.is_set():
            kind = queue.pop(0) if queue else self.rng.choice(self.kinds)
            self.inject(kind)
            self._wait(self.rng.uniform(*self.quiet_s))

    def stop(self) -> None:
        self.stop_event.set()

    def inject(self, kind: str) -> FaultEvent:
        event = FaultEvent(kind, "", time.monotonic())
        applied = _Applied()
        try:
            if kind == "isolated-leader-reads":
                self._isolated_leader_reads(applied)
            elif kind == "kill-follower-snapshot":
                self._kill_follower_snapshot(applied)
            else:
                for sub in self.rng.sample(MIXABLE, 2) if kind == "mixed" else [kind]:
                    self._apply(sub, applied)
                long = self.rng.random() < self.long_hold_share
                hold = self.rng.uniform(*(self.long_hold_s if long else self.hold_s))
                applied.detail.append(f"held {hold:.1f}s")
                self._wait(hold)
        finally:
            self.heal_all()
            event.healed = time.monotonic()
        event.detail = "; ".join(applied.detail)
        self.counts[kind] += 1
        self.categories.update(applied.categories)
        event.recovery_s = self.probe_recovery(kind, event.healed)
        if self._catch_up is not None:
            event.detail += "; " + self._verify_catch_up(*self._catch_up)
            self._catch_up = None
        recovered = "never" if event.recovery_s is None else f"{event.recovery_s:.2f}s"
        self.log(f"[{event.started - self._started:7.1f}s] {kind}: {event.detail}; "
                 f"write after heal: {recovered}")
        self.events.append(event)
        return event

    def heal_all(self) -> None:
        """Links healed (held bytes flow again or connections reset), paused nodes resumed, killed
        nodes restarted."""
        cluster = self.cluster
        cluster.net.heal(reset=self.rng.random() < 0.5)
        for node_id in sorted(cluster.paused):
            if cluster.is_running(node_id):
                cluster.resume(node_id)
        for node_id in sorted(self.down):
            if not cluster.is_running(node_id):
                cluster.start(node_id)
            self.down.discard(node_id)

    def _wait(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    # ---- fault injectors ---------------------------------------------------------------------------
    def _apply(self, kind: str, applied: _Applied) -> None:
        cluster, rng = self.cluster, self.rng
        ids = cluster.ids
        leader = self._leader()
        applied.categories += KIND_CATEGORIES[kind]
        if kind.startswith("kill"):
            victims = self._victims(kind, leader)
            for node_id in victims:
                if cluster.is_running(node_id):
                    self.down.add(node_id)  # first: the monitor must not take the exit for a crash
                    cluster.kill(node_id)  # SIGKILL works on a stopped process too
            applied.detail.append(f"{kind} {victims} (leader {leader})")
        elif kind == "terminate-node":
            node_id = leader if leader is not None and rng.random() < 0.5 else rng.choice(ids)
            if cluster.is_running(node_id):
                self.down.add(node_id)
                try:
                    code = cluster.stop(node_id)  # SIGTERM, then wait for the exit
                except AssertionError as exc:
                    self.anomalies.append(f"terminate-node: {exc}\n{cluster.log_tail(node_id)}")
                else:
                    if code != 0:
                        self.anomalies.append(f"terminate-node: node {node_id} exited with code {code} "
                                              f"on SIGTERM\n{cluster.log_tail(node_id)}")
            applied.detail.append(f"terminate-node [{node_id}] (leader {leader})")
        elif kind.startswith("pause"):
            victims = self._victims(kind, leader)
            for node_id in victims:
                if cluster.is_running(node_id) and node_id not in cluster.paused:
                    cluster.pause(node_id)
            applied.detail.append(f"{kind} {victims} (leader {leader})")
        elif kind in ("partition-halves", "partition-leader"):
            if kind == "partition-leader" and leader is not None:
                minority = [leader]
            else:
                shuffled = ids[:]
                rng.shuffle(shuffled)
                minority = shuffled[: rng.randint(1, (len(ids) - 1) // 2)]
            majority = [i for i in ids if i not in minority]
            fault = rng.choice([BLACKHOLE, CUT])
            self._faults([(a, b) for a in minority for b in majority]
                         + [(b, a) for a in minority for b in majority], fault)
            applied.detail.append(
                f"{kind} {sorted(minority)} | {majority} {fault.mode.value} (leader {leader})"
            )
        elif kind == "partition-one-way":
            node = leader if leader is not None and rng.random() < 0.7 else rng.choice(ids)
            others = [i for i in ids if i != node]
            variant = rng.choice(["mute", "deaf", "some"])
            if variant == "mute":
                links = [(node, o) for o in others]
            elif variant == "deaf":
                links = [(o, node) for o in others]
            else:
                links = [(node, o) for o in rng.sample(others, rng.randint(1, len(others)))]
            fault = rng.choice([BLACKHOLE, CUT])
            self._faults(links, fault)
            applied.detail.append(
                f"{kind} {variant} node {node}: {links} {fault.mode.value} (leader {leader})"
            )
        elif kind == "delay":
            if rng.random() < 0.5:
                base = rng.uniform(0.02, 0.12)
                links = self._links()
            else:
                node = rng.choice(ids)
                base = rng.uniform(0.1, 1.0)
                links = [lk for lk in self._links() if node in lk]
            self._faults(links, delay(base, base * rng.uniform(0.1, 0.6)))
            applied.detail.append(f"delay {base * 1000:.0f} ms on {len(links)} links")
        elif kind == "drop":
            all_links = self._links()
            links = rng.sample(all_links, rng.randint(max(1, len(all_links) // 3), len(all_links)))
            rate, stall = rng.uniform(1.0, 5.0), rng.uniform(0.1, 0.5)
            self._faults(links, flaky(rate, stall))
            applied.detail.append(
                f"drop on {len(links)} links ({rate:.1f}/s resets and stalls <= {stall:.2f}s)"
            )
        else:
            raise ValueError(kind)

    def _victims(self, kind: str, leader: int | None) -> list[int]:
        ids = self.cluster.ids
        followers = [i for i in ids if i != leader]
        if kind.endswith("leader"):
            return [leader] if leader is not None else [self.rng.choice(ids)]
        if kind.endswith("follower"):
            return [self.rng.choice(followers)]
        return sorted(self.rng.sample(ids, (len(ids) - 1) // 2))

    def _links(self) -> list[tuple[int, int]]:
        ids = self.cluster.ids
        return [(a, b) for a in ids for b in ids if a != b]

    def _faults(self, links: list[tuple[int, int]], fault: Fault) -> None:
        current = self.cluster.net.faults()
        self.cluster.net.set_faults({link: fault for link in links if link not in current})

    def _leader(self, exclude: tuple[int, ...] = ()) -> int | None:
        deadline = time.monotonic() + LEADER_WAIT_S
        while time.monotonic() < deadline and not self.stop_event.is_set():
            leader = self.cluster.leader()
            if leader is not None and leader not in exclude:
                return leader
            self._wait(0.05)
        return None

    def _kill_follower_snapshot(self, applied: _Applied) -> None:
        cluster = self.cluster
        applied.categories += KIND_CATEGORIES["kill-follower-snapshot"]
        leader = self._leader()
        victim = self._victims("kill-follower", leader)[0]
        before = cluster.status(victim)
        if cluster.is_running(victim):
            self.down.add(victim)
            cluster.kill(victim)
        self._wait(self.rng.uniform(*self.hold_s))  # the others move on without it
        compacted = {}
        for node_id in cluster.ids:
            if node_id != victim and cluster.is_running(node_id) and node_id not in cluster.paused:
                reply = cluster.request(node_id, {"op": "snapshot"}, 2.0)
                compacted[node_id] = reply.get("index") if reply else None
        indices = [i for i in compacted.values() if isinstance(i, int)]
        if before is not None and indices:
            self._catch_up = (victim, int(before["last_index"]), min(indices))
        applied.detail.append(
            f"kill-follower-snapshot [{victim}] (leader {leader}), logs compacted at {compacted}"
        )

    def _verify_catch_up(self, victim: int, old_last: int, compacted: int) -> str:
        """Wait for the restarted victim to pass the compaction point; did a snapshot take it there?"""
        deadline = time.monotonic() + CATCH_UP_S
        while time.monotonic() < deadline and not self.stop_event.is_set():
            status = self.cluster.status(victim)
            if status is not None and status["applied"] >= compacted:
                if status["first_index"] > old_last + 1:
                    self.snapshots_installed += 1
                    return f"node {victim} caught up by a snapshot (log starts at {status['first_index']})"
                return f"node {victim} caught up from its log (no snapshot needed)"
            self._wait(0.1)
        return f"node {victim} had not caught up with index {compacted} after {CATCH_UP_S:.0f}s"

    # ---- the stale-read scenario ------------------------------------------------------------------
    def _isolated_leader_reads(self, applied: _Applied) -> None:
        """The leader is paused and cut off; the majority elects another and acknowledges a write;
        reads sent to the old leader after that, queued while it sleeps, reach it when it resumes,
        still isolated and still believing it leads. A node that answers them without confirming
        its leadership with a quorum (ReadIndex) returns the overwritten value: a stale read."""
        cluster = self.cluster
        applied.categories += KIND_CATEGORIES["isolated-leader-reads"]
        key = self.keys.special_key("nemesis")
        with Client(cluster.endpoints(), timeout=3.0, curve=cluster.curve) as client:
            if not self._recorded_put(client, "nemesis", key):
                applied.detail.append("skipped: no write before isolation")
                return
        leader = self._leader()
        if leader is None:
            applied.detail.append("skipped: no leader")
            return
        others = [i for i in cluster.ids if i != leader]
        endpoint = cluster.specs[leader].client
        reader = _Reader(cluster.ctx, endpoint, self.recorder,
                         None if cluster.curve is None else cluster.curve.for_endpoint(endpoint))
        try:
            reader.connect()
            cluster.pause(leader)
            self._faults([(leader, o) for o in others] + [(o, leader) for o in others], BLACKHOLE)
            written = False
            deadline = time.monotonic() + MAJORITY_WRITE_S
            with Client(cluster.endpoints(others), timeout=2.0, curve=cluster.curve) as client:
                while not written and time.monotonic() < deadline and not self.stop_event.is_set():
                    written = self._recorded_put(client, "nemesis", key)
            for _ in range(STALE_READS):  # queued in the sleeping node's socket
                reader.send_get(key)
            cluster.resume(leader)
            answers = reader.collect(STALE_READ_WINDOW_S)
        finally:
            reader.close()
        applied.detail.append(f"old leader {leader} isolated+paused, majority write "
                              f"{'acknowledged' if written else 'failed'}, reads from it: {answers}")
        self._wait(self.rng.uniform(*self.hold_s))

    def _recorded_put(self, client: Client, who: str, key: str) -> bool:
        self._values += 1
        value = f"{who}-{self._values}"
        handle = self.recorder.invoke(who, OpKind.PUT, key, value=value)
        try:
            client.put(key, value)
        except Exception:
            self.recorder.indeterminate(handle)
            return False
        self.recorder.complete(handle)
        return True

    # ---- recovery -------------------------------------------------------------------------------------
    def probe_recovery(self, kind: str, healed: float) -> float | None:
        """Seconds from the heal until a write is acknowledged; an anomaly beyond WRITE_RECOVERY_S."""
        key = self.keys.special_key("probe")
        with Client(self.cluster.endpoints(), timeout=PROBE_TRY_TIMEOUT_S,
                    curve=self.cluster.curve) as client:
            while time.monotonic() - healed < PROBE_GIVE_UP_S:
                if self._recorded_put(client, "probe", key):
                    took = time.monotonic() - healed
                    if took > WRITE_RECOVERY_S:
                        self.anomalies.append(
                            f"after {kind}: first write acknowledged {took:.1f}s after the heal "
                            f"(bound {WRITE_RECOVERY_S:.0f}s)\n{self.cluster.describe()}"
                        )
                    return took
        self.anomalies.append(f"after {kind}: no write acknowledged within {PROBE_GIVE_UP_S:.0f}s of the heal"
                              f"\n{self.cluster.describe()}")
        return None


class _Reader:
    """Linearizable gets pipelined on one DEALER straight to one node (no redirects), recorded."""

    def __init__(self, ctx: zmq.Context, endpoint: str, recorder: Recorder,
                 curve: tuple[KeyPair, bytes] | None = None) -> None:
        self.recorder = recorder
        self.endpoint = endpoint
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:  # (own key pair, the node's public key)
            as_client(self.socket, *curve)
        self.pending: dict[int, int] = {}  # request id -> recorder handle
        self._ids = itertools.count(1)

    def connect(self, timeout: float = 1.0) -> None:
        """Connect and finish the handshake now, while the node still runs."""
        self.socket.connect(self.endpoint)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            req_id = next(self._ids)
            self.socket.send(encode_client({"id": req_id, "op": "status"}))
            if self.socket.poll(100, zmq.POLLIN):
                self.socket.recv()
                return

    def send_get(self, key: str) -> None:
        req_id = next(self._ids)
        handle = self.recorder.invoke("nemesis-read", OpKind.GET, key)
        self.socket.send(encode_client({"id": req_id, "op": "get", "key": key,
                                        "consistency": "linearizable"}))
        self.pending[req_id] = handle

    def collect(self, window: float) -> str:
        """Record each answer; unanswered reads end indeterminate. Returns the codes seen."""
        codes: Counter[str] = Counter()
        deadline = time.monotonic() + window
        while self.pending and (remaining := deadline - time.monotonic()) > 0:
            if not self.socket.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                break
            try:
                reply = decode_client(self.socket.recv())
            except FrameError:
                continue
            handle = self.pending.pop(reply.get("id"), None)  # type: ignore[arg-type]
            if handle is None:
                continue
            code = str(reply.get("code"))
            codes[code] += 1
            if code == "ok":
                self.recorder.complete(handle, reply.get("value"))
            elif code == "not_found":
                self.recorder.complete(handle, None)
            else:  # not_leader / unavailable: nothing was read
                self.recorder.fail(handle)
        for handle in self.pending.values():
            codes["silent"] += 1
            self.recorder.indeterminate(handle)
        self.pending.clear()
        return ", ".join(f"{code} x{n}" for code, n in sorted(codes.items()))

    def close(self) -> None:
        for handle in self.pending.values():
            self.recorder.indeterminate(handle)
        self.pending.clear()
        self.socket.close(0)
