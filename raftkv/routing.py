"""The client core: how one request finds the node that can answer it, without any I/O.

Every client of the client protocol follows the leader the same way: raftctl.Client and
`raftctl bench` (raftctl/links.py drives it over blocking ZeroMQ polls) and the REST
server's forwarder (raftkvd/http/forward.py, on asyncio). They hand this module what
happened (a try was sent, answered or lost; time passed) and it says where to send next.

The rules, so that a dead or paused minority costs no more than one round trip:
- With no leader known, a call asks every endpoint at once: the leader answers, the
  followers name it; a node that is down is simply never heard from.
- A remembered leader is asked alone; if it stays silent for HEDGE_AFTER_S, an idempotent
  call asks the others too (a paused leader costs half a second, not a timeout).
- A try is never abandoned for being slow: the node may need long (a cluster status, a
  leadership transfer), and its late answer is still the answer. Silence only stops holding
  a round open, so an idempotent call can start the next round without it.
- "not_leader" with a hint is followed at once (a bounded number of times per round);
  "no_leader" and lost tries end the round, and the next one starts after an exponential
  backoff, so an election is waited out rather than hammered.
- "rate_limited" (the client is over its rate at that node; the request did not run) is
  retried at the same node once its `retry_after` has passed, whatever the call; if the
  deadline comes first, that answer is the call's answer (the client reports it).
- Non-idempotent calls (leadership transfer, membership changes) are never hedged nor
  repeated after silence: only an explicit "no_leader" or a lost connection (the request
  did not run) starts another round. Their "unavailable" answers are final.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from .protocol import Code

Reply = dict[str, Any]

HEDGE_AFTER_S = 0.5
"""Silence of the remembered leader after which an idempotent call asks every node (at most
half the silence below)."""
SILENCE_S = 1.0
"""Silence after which a try no longer keeps an idempotent call's round open (at most a
third of the call's time, so that a short call still gets a second round)."""
BACKOFF_START_S = 0.01
BACKOFF_CAP_S = 0.2
MAX_REDIRECTS = 3
"""Leader hints followed per round (a hint may be stale during an election)."""
_RETRY_ALWAYS = frozenset({Code.NOT_LEADER.value, Code.NO_LEADER.value})
_RETRY_IDEMPOTENT = _RETRY_ALWAYS | {Code.UNAVAILABLE.value}
TCP_SCHEME = "tcp://"


class Route(enum.Enum):
    """Who may answer a request."""

    LEADER = "leader"
    """Writes, linearizable reads, cluster status and administration: followers redirect."""
    ANY = "any"
    """Serializable reads and a node's own status: whichever node answers first."""
    NODE = "node"
    """A question about one given node: that node, no redirects."""


class Outcome(enum.Enum):
    PENDING = "pending"
    DONE = "done"
    NO_LEADER = "no_leader"
    """Every node that answered knows no leader (for longer than the call's patience)."""
    TIMEOUT = "timeout"
    """No usable answer before the deadline; a write may or may not have been applied."""


class _State(enum.Enum):
    QUEUED = "queued"
    """Handed to the driver, not yet on a connection (the node may be down)."""
    SENT = "sent"
    ANSWERED = "answered"
    LOST = "lost"


@dataclass(slots=True)
class _Try:
    state: _State = _State.QUEUED
    sent_at: float = 0.0


def normalize_endpoint(text: str) -> str | None:
    """"host:port" or "tcp://host:port" in the ZeroMQ form; None if it is neither."""
    address = text.strip().removeprefix(TCP_SCHEME)
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        return None
    return TCP_SCHEME + address


def leader_hint(reply: Reply | None) -> str | None:
    """The leader's client endpoint from a "not_leader" answer, when it names a usable one."""
    if reply is None or reply.get("code") != Code.NOT_LEADER.value:
        return None
    leader = reply.get("leader")
    return normalize_endpoint(leader) if isinstance(leader, str) and leader else None


@dataclass
class Router:
    """What a client remembers between calls: the endpoints it knows, the leader it saw."""

    endpoints: list[str]
    leader: str | None = None

    def forget(self, endpoint: str) -> None:
        if self.leader == endpoint:
            self.leader = None


@dataclass(eq=False)
class Call:
    """One request on its way: feed it events, send where it says, until `outcome` is final.

    Times are the driver's monotonic clock in seconds. Every method that may want more
    sends returns the endpoints to send the request to now (a fresh request id each).
    """

    router: Router
    route: Route
    now: float
    deadline: float
    idempotent: bool = True
    patience: float = math.inf
    """How long "no leader" answers are waited out before the call gives up with NO_LEADER."""
    target: str | None = None
    """The one endpoint of a Route.NODE call."""
    outcome: Outcome = Outcome.PENDING
    reply: Reply | None = None
    last_error: str = ""
    _silence: float = SILENCE_S
    _hedge_after: float = HEDGE_AFTER_S
    _tries: dict[str, _Try] = field(default_factory=dict)
    _redirects: int = 0
    _hedged: bool = False
    _backoff: float = BACKOFF_START_S
    _retry_at: float | None = None
    _no_leader_since: float | None = None
    rate_limited: int = 0
    """rate_limited answers this call was given (each one retried)."""
    _limited: Reply | None = None
    """The last rate_limited answer, while its node is the one to retry."""
    _limited_by: str | None = None

    def __post_init__(self) -> None:
        # A short call still gets a second round: silence counts after a third of it.
        self._silence = min(SILENCE_S, (self.deadline - self.now) / 3)
        self._hedge_after = min(HEDGE_AFTER_S, self._silence / 2)

    # ---- what the driver calls -----------------------------------------------------------
    def start(self) -> list[str]:
        """The first sends."""
        if self.route is Route.NODE:
            assert self.target is not None, "a NODE call names its target"
            return self._send([self.target])
        return self._new_round()

    def sent(self, endpoint: str, now: float) -> None:
        """The try to `endpoint` is on a live connection now."""
        attempt = self._tries.get(endpoint)
        if attempt is not None and attempt.state is _State.QUEUED:
            attempt.state, attempt.sent_at = _State.SENT, now

    def answered(self, endpoint: str, reply: Reply, now: float) -> list[str]:
        """`endpoint` answered (possibly a try of an earlier round: the answer counts)."""
        if self.outcome is not Outcome.PENDING:
            return []
        self._mark(endpoint, _State.ANSWERED)
        code = reply.get("code")
        if code == Code.RATE_LIMITED.value:
            return self._rate_limited(endpoint, reply, now)
        self._limited = None  # a newer answer: no longer the one to report
        retry = _RETRY_IDEMPOTENT if self.idempotent else _RETRY_ALWAYS
        if self.route is Route.NODE or code not in retry:
            self.outcome, self.reply = Outcome.DONE, reply
            if self.route is Route.LEADER:
                self.router.leader = endpoint
            return []
        self.last_error = f"{endpoint}: {reply.get('error') or code}"
        hint = leader_hint(reply)
        if hint is not None:
            self.router.leader = hint
            if hint not in self._tries and self._redirects < MAX_REDIRECTS:
                self._redirects += 1
                return self._send([hint])
        else:
            self.router.forget(endpoint)
            if self._no_leader_since is None:
                self._no_leader_since = now
        return self._after_failure(now)

    def lost(self, endpoint: str, now: float) -> list[str]:
        """The try to `endpoint` failed: its connection dropped, or it could not be sent."""
        if self.outcome is not Outcome.PENDING:
            return []
        self._mark(endpoint, _State.LOST)
        self._limited = None
        self.router.forget(endpoint)
        self.last_error = f"{endpoint} did not answer"
        if self.route is Route.NODE:
            self.outcome = Outcome.TIMEOUT
            return []
        return self._after_failure(now)

    def due(self, now: float) -> list[str]:
        """Timers: the deadline, hedging, the next round."""
        if self.outcome is not Outcome.PENDING:
            return []
        if now >= self.deadline:
            if self._limited is not None:
                self.outcome, self.reply = Outcome.DONE, self._limited
            else:
                self.outcome = Outcome.NO_LEADER if self._no_leader_since is not None else Outcome.TIMEOUT
            return []
        if self.route is Route.NODE and self._limited_by is None:
            return []
        if self._retry_at is None:
            if self.idempotent and not self._hedged and self._waiting_since(now) >= self._hedge_after:
                self._hedged = True
                return self._send([e for e in self._all_endpoints() if e not in self._tries])
            if self.idempotent and self._round_over(now):
                self._schedule_retry(now)
        if self._retry_at is not None and now >= self._retry_at:
            return self._new_round()
        return []

    def wakeup(self) -> float:
        """When `due` has something to do next (never later than the deadline)."""
        if self.outcome is not Outcome.PENDING:
            return math.inf
        times = [self.deadline]
        if self._retry_at is not None:
            times.append(self._retry_at)
        elif self.idempotent and self.route is not Route.NODE:
            sent = [t.sent_at for t in self._tries.values() if t.state is _State.SENT]
            if sent:
                first = min(sent)
                times.append(first + (self._silence if self._hedged else self._hedge_after))
        return min(times)

    @property
    def done(self) -> bool:
        return self.outcome is not Outcome.PENDING

    # ---- rounds ------------------------------------------------------------------------------
    def _all_endpoints(self) -> list[str]:
        known = list(self.router.endpoints)
        if self.router.leader is not None and self.router.leader not in known:
            known.append(self.router.leader)
        return known

    def _rate_limited(self, endpoint: str, reply: Reply, now: float) -> list[str]:
        """Come back to the same node once it will take the request (the leader stays known)."""
        self.last_error = f"{endpoint}: {reply.get('error') or Code.RATE_LIMITED.value}"
        self.rate_limited += 1
        self._limited, self._limited_by = reply, endpoint
        wait = reply.get("retry_after")
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 < wait < math.inf:
            wait = self._backoff
        self._retry_at = min(self.deadline, now + max(wait, BACKOFF_START_S))
        return []

    def _new_round(self) -> list[str]:
        """The remembered leader alone on the first round, the node that rate limited us
        after that; every endpoint after another failure."""
        first_round = not self._tries and self._retry_at is None
        limited_by, self._limited_by = self._limited_by, None
        self._tries, self._redirects, self._hedged, self._retry_at = {}, 0, False, None
        if limited_by is not None:
            self._hedged = True  # a node that answered is not silent: no hedging
            return self._send([limited_by])
        if first_round and self.router.leader is not None:
            return self._send([self.router.leader])
        self._hedged = True  # asking everyone already
        return self._send(self._all_endpoints())

    def _send(self, endpoints: list[str]) -> list[str]:
        for endpoint in endpoints:
            self._tries[endpoint] = _Try()
        return endpoints

    def _mark(self, endpoint: str, state: _State) -> None:
        attempt = self._tries.get(endpoint)
        if attempt is not None and attempt.state in (_State.QUEUED, _State.SENT):
            attempt.state = state

    def _after_failure(self, now: float) -> list[str]:
        if (self._no_leader_since is not None and now - self._no_leader_since >= self.patience
                and not self._outstanding(now)):
            self.outcome = Outcome.NO_LEADER
            return []
        if self._retry_at is None and self._round_over(now):
            self._schedule_retry(now)
        return []

    def _outstanding(self, now: float) -> bool:
        """A try that may still answer: queued ones always (the driver sends or loses them
        within its connect timeout), sent ones unless an idempotent call gave up waiting."""
        for attempt in self._tries.values():
            if attempt.state is _State.QUEUED:
                return True
            if attempt.state is _State.SENT and (
                not self.idempotent or now - attempt.sent_at < self._silence
            ):
                return True
        return False

    def _round_over(self, now: float) -> bool:
        return bool(self._tries) and not self._outstanding(now)

    def _waiting_since(self, now: float) -> float:
        """How long the oldest try still on a connection has waited (0 when none is)."""
        return max((now - t.sent_at for t in self._tries.values() if t.state is _State.SENT),
                   default=0.0)

    def _schedule_retry(self, now: float) -> None:
        self._retry_at = min(self.deadline, now + self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_CAP_S)
