"""The simulator's clients: real client-protocol requests to the replicas, answered through the
replicas' own request handling (writes, ReadIndex batches, transfers, membership).

A retrying client behaves as raftctl's does: its own session, numbered writes, one request in
flight, redirects followed, and after silence or "no leader" the same request again elsewhere,
so the state machine's once-per-session rule is exercised by real retries. A one-shot request
(the scenarios' `propose`) is sent once; a refusal that comes at once is reported as such.
Every answer is judged: an acknowledged write by where its answer says it committed, a
linearizable read by the history (checker.py).
"""

from __future__ import annotations

import enum
import itertools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raftkv.protocol import CONSISTENCY_LINEARIZABLE, Code, Op
from raftkvd.net.clientendpoint import Request

from .checker import Ack, SafetyViolation

if TYPE_CHECKING:
    from .cluster import SimCluster

REQUEST_TIMEOUT_TICKS = 30
"""Silence after which a retrying client asks another node (the same request)."""
RETRY_TICKS = (1, 5)
"""A retrying client waits this many ticks (drawn) after "no leader" before asking again."""
KEYS = tuple(f"k{i}" for i in range(3))
"""Few keys, so that writes and reads meet on the same key often."""
_RETRY_CODES = frozenset({Code.NOT_LEADER.value, Code.NO_LEADER.value, Code.UNAVAILABLE.value})
_FINAL_CODES = frozenset({Code.OK.value, Code.NOT_FOUND.value})


class Outcome(enum.Enum):
    PENDING = "pending"
    REFUSED = "refused"
    """Answered at once with a refusal (not the leader, no leader, a transfer under way)."""
    DONE = "done"
    FAILED = "failed"
    """A one-shot request answered later with a failure (leadership changed, ...)."""


@dataclass(eq=False)
class ClientOp:
    session: str
    op: Op
    body: dict[str, Any]
    target: int
    retrying: bool
    floor: int = 0
    """For reads: the highest acknowledged write index when the read began."""
    outcome: Outcome = Outcome.PENDING
    answer: dict[str, Any] | None = None
    sent_at: int = 0
    retry_at: int | None = None
    request_ids: set[int] = field(default_factory=set)

    @property
    def value(self) -> str:
        return str(self.body.get("value"))


class Clients:
    """Every request in flight, and what each client heard."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.rng = random.Random(cluster.seed * 13 + 5)
        self.ops: dict[int, ClientOp] = {}
        """Pending requests by the id of each of their tries."""
        self.pending: dict[int, ClientOp] = {}
        """Pending requests by their own id()."""
        self.sessions: dict[str, int] = {}
        """Retrying clients: session -> last seq used."""
        self.busy: dict[str, ClientOp] = {}
        """Retrying clients with a request in flight."""
        self._ids = itertools.count(1)
        self._values = itertools.count(1)
        self._sending: ClientOp | None = None
        self.reads_served = 0
        self.failed_writes = 0

    # ---- starting requests ---------------------------------------------------------------------
    def write_once(self, name: str, target: int, value: bytes | None = None) -> ClientOp:
        session = f"{name}-{next(self._ids)}"
        op = self._op(session, Op.PUT, self._put_body(value, 1), target, retrying=False)
        self._send(op)
        return op

    def read_once(self, name: str, target: int) -> ClientOp:
        op = self._op(name, Op.GET, self._get_body(), target, retrying=False)
        self._send(op)
        return op

    def admin(self, target: int, op: Op, fields: dict[str, Any]) -> dict[str, Any] | None:
        client_op = self._op("admin", op, {"op": op.value, **fields}, target, retrying=False)
        self._send(client_op)
        return client_op.answer

    def write_retrying(self, session: str, value: bytes | None = None) -> ClientOp:
        """A write that is retried until it is acknowledged (for `one` and liveness checks)."""
        seq = self.sessions.get(session, 0) + 1
        self.sessions[session] = seq
        op = self._op(session, Op.PUT, self._put_body(value, seq), self._any_target(), retrying=True)
        self._send(op)
        return op

    def start(self, session: str, kind: Op, target: int | None = None) -> None:
        """A workload client's next request (put, delete or linearizable get) on a random key."""
        if session in self.busy:
            return
        body: dict[str, Any]
        if kind == Op.GET:
            body = self._get_body()
        else:
            seq = self.sessions.get(session, 0) + 1
            self.sessions[session] = seq
            body = self._put_body(None, seq) if kind == Op.PUT else self._delete_body(seq)
        op = self._op(session, kind, body, target if target is not None else self._any_target(),
                      retrying=True)
        self.busy[session] = op
        self._send(op)

    def _op(self, session: str, kind: Op, body: dict[str, Any], target: int, retrying: bool) -> ClientOp:
        body = {**body, "session": session}
        floor = self.cluster.checker.acked_floor if kind == Op.GET else 0
        return ClientOp(session, kind, body, target, retrying, floor)

    def _put_body(self, value: bytes | None, seq: int) -> dict[str, Any]:
        text = value.decode() if value is not None else str(next(self._values))
        return {"op": Op.PUT.value, "key": self.rng.choice(KEYS), "value": text, "seq": seq}

    def _delete_body(self, seq: int) -> dict[str, Any]:
        return {"op": Op.DELETE.value, "key": self.rng.choice(KEYS), "seq": seq}

    def _get_body(self) -> dict[str, Any]:
        return {"op": Op.GET.value, "key": self.rng.choice(KEYS), "consistency": CONSISTENCY_LINEARIZABLE}

    def _any_target(self) -> int:
        """Mostly the leader (as a client that was redirected before knows it), else any node."""
        leader = self.cluster.leader()
        if leader is not None and self.rng.random() < 0.8:
            return leader
        return self.rng.choice(sorted(self.cluster.nodes))

    # ---- sending and answers -----------------------------------------------------------------------
    def _send(self, op: ClientOp) -> None:
        request_id = next(self._ids)
        op.request_ids.add(request_id)
        op.sent_at, op.retry_at = self.cluster.now, None
        self.ops[request_id] = op
        self.pending[id(op)] = op
        request = Request(op.session.encode(), request_id, op.op, op.body)
        self._sending = op
        try:
            reached = self.cluster.send_request(op.target, request)
        finally:
            self._sending = None
        if not reached:  # no connection to a node that is down: the client moves on at once
            if op.retrying:
                op.target, op.retry_at = self._any_target(), self.cluster.now + 1
            else:
                op.outcome = Outcome.REFUSED
                self._forget(op)

    def answered(self, request: Request, fields: dict[str, Any]) -> None:
        """A replica answers (maybe from inside its write transaction: only bookkeeping here)."""
        op = self.ops.get(request.id)
        if op is None or op.outcome is not Outcome.PENDING:
            return  # an answer to a try of a request that is over
        code = fields.get("code")
        if code in _FINAL_CODES or (op.op not in (Op.PUT, Op.DELETE, Op.GET) and code not in _RETRY_CODES):
            self._finish(op, fields)
            return
        if code not in _RETRY_CODES:
            raise SafetyViolation(f"client {op.session}: unexpected answer {fields} to {op.body}")
        if not op.retrying:
            op.answer = fields
            immediate = self._sending is op
            op.outcome = Outcome.REFUSED if immediate else Outcome.FAILED
            if not immediate and op.op == Op.PUT:
                self.failed_writes += 1
            self._forget(op)
            return
        leader = fields.get("leader_id")
        if code == Code.NOT_LEADER.value and isinstance(leader, int) and leader in self.cluster.nodes:
            op.target, op.retry_at = leader, self.cluster.now + 1
        else:
            op.target = self._any_target()
            op.retry_at = self.cluster.now + self.rng.randint(*RETRY_TICKS)

    def _finish(self, op: ClientOp, fields: dict[str, Any]) -> None:
        op.answer, op.outcome = fields, Outcome.DONE
        self._forget(op)
        if op.op in (Op.PUT, Op.DELETE) and fields.get("code") == Code.OK.value:
            value = op.body.get("value") if op.op == Op.PUT else None
            self.cluster.on_ack(Ack(op.session, op.body["seq"], fields["index"], op.body["key"], value))
        elif op.op == Op.GET:
            self.reads_served += 1
            if self.cluster.check:
                value = fields.get("value") if fields.get("code") == Code.OK.value else None
                self.cluster.checker.on_read(op.target, op.body["key"], value, op.floor)

    def _forget(self, op: ClientOp) -> None:
        self.pending.pop(id(op), None)
        for request_id in op.request_ids:
            self.ops.pop(request_id, None)
        if self.busy.get(op.session) is op:
            del self.busy[op.session]

    # ---- each tick -------------------------------------------------------------------------------
    def step(self) -> None:
        """Retrying clients ask again where they were told, or elsewhere after silence."""
        now = self.cluster.now
        for op in [op for op in self.pending.values() if op.retrying]:
            if op.outcome is not Outcome.PENDING:
                continue
            if op.retry_at is not None and now >= op.retry_at:
                self._send(op)
            elif op.retry_at is None and now - op.sent_at >= REQUEST_TIMEOUT_TICKS:
                op.target = self._any_target()
                self._send(op)

    def expire(self, max_age: int) -> None:
        horizon = self.cluster.now - max_age
        for op in list(self.pending.values()):
            if not op.retrying and op.sent_at < horizon:
                self._forget(op)
