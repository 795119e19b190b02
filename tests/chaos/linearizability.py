"""A linearizability checker for raftkv's key-value API (Wing & Gong's search, as improved by Lowe).

The search is the one Porcupine (`checker.go`) and Knossos run: walk a doubly-linked list of
call/return entries, linearize any call whose model step is legal, backtrack when a return is
reached before its call was linearized, and memoize (linearized-set, model state) pairs so that
equivalent interleavings are explored once. Keys are independent registers, so the history is
split by key and each key is searched on its own, with its own time budget (Porcupine's
`Model.Partition`, Jepsen's independent keys).

What goes in the history:
- every operation that completed, with its observed output;
- every operation whose fate is unknown (timeout, lost connection, leader died mid-request) as
  *indeterminate*: its return time is +infinity, so it may take effect at any point after its
  invocation, or never (Jepsen's `:info`). Never drop these: dropping an indeterminate write turns
  a later read of its value into a "read of a value never written";
- NOT operations that definitely failed (rejected before reaching the cluster, or refused with an
  error that guarantees no effect, such as NotLeader before proposing). The caller leaves those
  out; they are not part of the history.

Cost: thousands of operations check in well under a second when each key sees a handful of
concurrent clients. Many clients on one hot key plus dozens of indeterminate ops can exhaust a
key's budget; that key is then reported UNKNOWN, never given a verdict it did not prove.

Times are any monotonic clock (e.g. `time.monotonic()` on one machine). Operation `a` precedes
`b` only if `a.ret < b.call`; equal instants count as concurrent, the permissive reading.
"""

from __future__ import annotations

import enum
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

INDETERMINATE = math.inf
"""Return time of an operation whose outcome is unknown: it stays pending for ever."""

DEFAULT_TIMEOUT_S = 30.0
TIMEOUT_CHECK_EVERY = 1024
"""Search steps between clock reads; reading the clock every step costs more than the step."""

PREFIX_TAIL_SHOWN = 8
"""How many of the last linearized operations an explanation prints before the failure."""


class OpKind(enum.Enum):
    PUT = "put"
    GET = "get"
    DELETE = "delete"
    CAS = "cas"


class Unknown(enum.Enum):
    """Marks an output that was not observed (kept distinct from None, which means "absent")."""

    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN


class Verdict(enum.Enum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"  # the search ran out of time


@dataclass(frozen=True, slots=True)
class CasResult:
    """A cas reply: applied, or compare_failed with (optionally) the value the server saw."""

    ok: bool
    current: str | None | Unknown = UNKNOWN

    def __str__(self) -> str:
        if self.ok:
            return "ok"
        return "compare_failed" if self.current is UNKNOWN else f"compare_failed(current={self.current!r})"


CAS_OK = CasResult(ok=True)


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key, as the client saw it.

    `value` is the value written (put) or the new value (cas); `expected` is the cas comparand
    (None: the key must be absent). `output` is what came back: get -> value or None (not
    found), delete -> bool (deleted), cas -> CasResult, put -> ignored. An indeterminate
    operation has `ret == INDETERMINATE` and an ignored output.
    """

    client: int | str
    kind: OpKind
    key: str
    call: float
    ret: float
    value: str | None = None
    expected: str | None = None
    output: object = None

    @property
    def indeterminate(self) -> bool:
        return self.ret == INDETERMINATE

    def describe(self) -> str:
        """A one-line rendering a human can line up against a client log."""
        if self.kind is OpKind.PUT:
            text = f"put({self.key!r}, {self.value!r})"
        elif self.kind is OpKind.GET:
            text = f"get({self.key!r})"
        elif self.kind is OpKind.DELETE:
            text = f"delete({self.key!r})"
        else:
            text = f"cas({self.key!r}, {self.expected!r} -> {self.value!r})"
        if self.indeterminate:
            return f"client {self.client}: {text} -> ? (indeterminate) [{self.call:.6f}, ...)"
        if self.kind is not OpKind.PUT:
            text += f" -> {self.output!r}" if self.kind is not OpKind.CAS else f" -> {self.output}"
        return f"client {self.client}: {text} [{self.call:.6f}, {self.ret:.6f}]"


def from_recording(
    client: int | str,
    kind: OpKind | str,
    key: str,
    invoked_at: float,
    completed_at: float | None,
    *,
    value: str | None = None,
    expected: str | None = None,
    output: object = None,
) -> Operation:
    """Build an Operation from a client-side recording; `completed_at=None` means indeterminate.

    A cas output may be given as a CasResult, a bool (applied?), or "ok"/"compare_failed", so
    that recorders can pass through what the client library returned.
    """
    op_kind = kind if isinstance(kind, OpKind) else OpKind(kind)
    ret = INDETERMINATE if completed_at is None else completed_at
    if ret < invoked_at:
        raise ValueError(f"operation completed at {ret} before it was invoked at {invoked_at}")
    if op_kind is OpKind.CAS and completed_at is not None and not isinstance(output, CasResult):
        if isinstance(output, bool):
            output = CasResult(ok=output)
        elif output in ("ok", "compare_failed"):
            output = CasResult(ok=output == "ok")
        else:
            raise ValueError(f"cas output must be a CasResult, bool or 'ok'/'compare_failed', not {output!r}")
    return Operation(client, op_kind, key, invoked_at, ret, value, expected, output)


State = str | None
"""The sequential model of one key: its current value, or None when it does not exist."""


def step(state: State, op: Operation) -> tuple[bool, State]:
    """The sequential specification of one key: is `op`'s output legal in `state`, and what next.

    An indeterminate operation's output was never seen, so it is always legal; its effect is
    the one it would have had if it took effect at this point.
    """
    kind, unseen = op.kind, op.indeterminate
    if kind is OpKind.PUT:
        return True, op.value
    if kind is OpKind.GET:
        return unseen or op.output == state, state
    if kind is OpKind.DELETE:
        return unseen or op.output == (state is not None), None
    matches = state == op.expected  # expected None: the key must be absent
    if unseen:
        return True, op.value if matches else state
    result = op.output
    assert isinstance(result, CasResult), f"cas output must be a CasResult: {op!r}"
    if result.ok:
        return matches, op.value
    return (not matches) and (result.current is UNKNOWN or result.current == state), state


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key; for ILLEGAL, where the longest linearization got stuck."""

    key: str
    verdict: Verdict
    operations: int
    elapsed_s: float
    longest_prefix: tuple[Operation, ...] = ()
    """The longest linearizable prefix found, in linearization order."""
    state_after_prefix: State = None
    stuck: tuple[Operation, ...] = ()
    """Operations that had to go next (their return was reached) but none was legal there."""
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The history's verdict plus each key's, so that a failure names its key and its ops."""

    ok: bool | None
    """True: linearizable; False: some key is illegal; None: no key illegal, some timed out."""
    keys: dict[str, KeyResult] = field(default_factory=dict)
    explanation: str = ""
    elapsed_s: float = 0.0


def check(history: Iterable[Operation], timeout_s: float = DEFAULT_TIMEOUT_S) -> CheckResult:
    """Check a whole history, one key at a time, each key with its own `timeout_s` budget.

    Pass completed and indeterminate operations; leave out the ones that definitely failed.
    Keys are independent registers, so a budget per key keeps one hot key from starving the rest.
    """
    started = time.monotonic()
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    keys = {key: check_key(key, ops, timeout_s) for key, ops in sorted(by_key.items())}
    verdicts = {result.verdict for result in keys.values()}
    ok = False if Verdict.ILLEGAL in verdicts else None if Verdict.UNKNOWN in verdicts else True
    problems = [r.explanation for r in keys.values() if r.verdict is not Verdict.OK]
    return CheckResult(ok, keys, "\n\n".join(problems), time.monotonic() - started)


def check_key(key: str, ops: Sequence[Operation], timeout_s: float = DEFAULT_TIMEOUT_S) -> KeyResult:
    """WGL search over the operations of one key (all must have `op.key == key`)."""
    started = time.monotonic()
    # An indeterminate get has no effect and no observed output: it can always be linearized at
    # the very end, so leaving it out of the search changes no verdict and saves branching.
    live = [op for op in ops if not (op.indeterminate and op.kind is OpKind.GET)]
    search = _Search(live)
    verdict = search.run(started + timeout_s)
    elapsed = time.monotonic() - started
    if verdict is Verdict.OK:
        return KeyResult(key, verdict, len(ops), elapsed)
    if verdict is Verdict.UNKNOWN:
        text = f"key {key!r}: unknown, search gave up after {timeout_s:.1f}s over {len(ops)} operations"
        return KeyResult(key, verdict, len(ops), elapsed, explanation=text)
    prefix_ids, value, stuck_ids = search.dead_end()
    prefix = tuple(live[i] for i in prefix_ids)
    stuck = tuple(live[i] for i in stuck_ids)
    return KeyResult(
        key, verdict, len(ops), elapsed, prefix, value, stuck, _explain(key, prefix, value, stuck)
    )


def _explain(key: str, prefix: Sequence[Operation], state: State, stuck: Sequence[Operation]) -> str:
    """Say where the longest linearization stopped: enough to spot a stale or invented read."""
    lines = [f"key {key!r}: not linearizable; longest linearizable prefix has {len(prefix)} operations"]
    if len(prefix) > PREFIX_TAIL_SHOWN:
        lines.append(f"  ... {len(prefix) - PREFIX_TAIL_SHOWN} earlier operations")
    lines += [f"  {op.describe()}" for op in prefix[-PREFIX_TAIL_SHOWN:]]
    lines.append(f"  => value after that prefix: {state!r}")
    lines.append("  cannot linearize next (its return came before it could take effect):")
    lines += [f"  !! {op.describe()}" for op in stuck]
    return "\n".join(lines)


class _Search:
    """The iterative WGL search; entries live in parallel arrays indexed by list position.

    Node 0 is the list head; nodes 1..2n are the call/return entries sorted by time (calls
    before returns at equal times, so touching operations count as concurrent). A call node
    knows its return node (`match`) so that lifting an operation unlinks both.
    """

    def __init__(self, ops: Sequence[Operation]) -> None:
        self.ops = ops
        events = [(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, i) for i, op in enumerate(ops)]
        events.sort()
        size = len(events) + 1
        self.op_of = [-1] * size
        self.is_call = [False] * size
        self.match = [0] * size
        call_node = [0] * len(ops)
        for node, (_, kind, i) in enumerate(events, start=1):
            self.op_of[node] = i
            if kind == 0:
                self.is_call[node] = True
                call_node[i] = node
            else:
                self.match[call_node[i]] = node
        self.next = [*range(1, size), 0]  # 0 doubles as "end of list"
        self.prev = [0, *range(size - 1)]
        self.determinate = sum(1 for op in ops if not op.indeterminate)
        self.best_path: _Path = _NOT_YET
        self.best_depth = 0
        self.best_state: State = None

    def _lift(self, node: int) -> None:
        nxt, prv = self.next, self.prev
        nxt[prv[node]] = nxt[node]
        prv[nxt[node]] = prv[node]
        ret = self.match[node]
        nxt[prv[ret]] = nxt[ret]
        prv[nxt[ret]] = prv[ret]

    def _unlift(self, node: int) -> None:
        nxt, prv = self.next, self.prev
        ret = self.match[node]
        prv[nxt[ret]] = ret
        nxt[prv[ret]] = ret
        prv[nxt[node]] = node
        nxt[prv[node]] = node

    def run(self, deadline: float) -> Verdict:
        """Search for a linearization; the stack replaces recursion so depth is unbounded.

        Plain WGL drowns in indeterminate ops: each stays a candidate for ever, so it is tried
        at every point and multiplies the search. Four refinements keep that in check; each
        only skips a branch whose every completion another explored branch also has, because
        an indeterminate op can always be moved to the very end (= "never took effect"):
        - Two passes over the candidates: completed ops first, indeterminate ones (newest first)
          only once no completed op can go next. They go as late as possible, mostly never.
        - The cache prunes by dominance, not just equality: with the same completed ops placed
          and the same value, extra indeterminate ops placed are never better, so a visit to
          (D, I, value) rules out (D, I' >= I, value).
        - Right after an indeterminate op, no blind write (put, indeterminate delete): it would
          erase an effect nobody saw; the write alone is explored from the parent.
        - No indeterminate write of a never-observed value over an existing value (see
          `_unobserved_writes`).
        """
        ops, nxt, prv, is_call, op_of = self.ops, self.next, self.prev, self.is_call, self.op_of
        forever = [op.indeterminate for op in ops]
        blind = [op.kind is OpKind.PUT or (op.indeterminate and op.kind is OpKind.DELETE) for op in ops]
        unseen = _unobserved_writes(ops)
        state: State = None
        done = 0  # bitset of linearized completed ops
        extra = 0  # bitset of linearized indeterminate ops
        done_count = 0
        stack: list[tuple[int, State, bool]] = []  # (call node, state before it, indeterminate?)
        path: _Path = None  # the stack's ops as a shared linked list: O(1) snapshots
        seen: dict[tuple[int, State], list[int]] = {}  # (done, value) -> minimal `extra` sets
        node = nxt[0]
        second_pass = False
        steps = 0
        while True:
            # Once every completed op is placed, the indeterminate rest can go last: always legal.
            if done_count == self.determinate:
                return Verdict.OK
            steps += 1
            if steps % TIMEOUT_CHECK_EVERY == 0 and time.monotonic() > deadline:
                return Verdict.UNKNOWN
            if not second_pass:
                if not is_call[node]:  # the first remaining return: completed ops are stuck
                    node, second_pass = prv[node], True
                    continue
                i = op_of[node]
                usable = not forever[i]
            elif node:
                i = op_of[node]
                usable = forever[i]
            else:
                # Back at the head: nothing can go next before that return. Undo the last choice.
                if self.best_path is _NOT_YET or len(stack) > self.best_depth:
                    self.best_path, self.best_depth, self.best_state = path, len(stack), state
                if not stack:
                    return Verdict.ILLEGAL
                node, state, second_pass = stack.pop()
                path = path[1] if path else None
                i = op_of[node]
                if second_pass:
                    extra ^= 1 << i
                else:
                    done ^= 1 << i
                    done_count -= 1
                self._unlift(node)
                node = prv[node] if second_pass else nxt[node]
                continue
            if usable and not (blind[i] and stack and stack[-1][2]) and not (unseen[i] and state is not None):
                legal, after = step(state, ops[i])
                if legal:
                    new_done, new_extra = (done, extra | 1 << i) if second_pass else (done | 1 << i, extra)
                    if _first_visit(seen, (new_done, after), new_extra):
                        stack.append((node, state, second_pass))
                        path = (i, path)
                        done, extra, state = new_done, new_extra, after
                        done_count += not second_pass
                        self._lift(node)
                        node, second_pass = nxt[0], False
                        continue
            node = prv[node] if second_pass else nxt[node]

    def dead_end(self) -> tuple[list[int], State, list[int]]:
        """The deepest dead end: the longest linearizable prefix, its value, and the ops stuck.

        Replays the prefix on the list to find the first return left: that op had to take
        effect before it, and could not; the other ops listed before it could not go next either.
        """
        prefix: list[int] = []
        cell = self.best_path
        while cell:
            prefix.append(cell[0])
            cell = cell[1]
        prefix.reverse()
        calls = {self.op_of[node]: node for node in range(1, len(self.op_of)) if self.is_call[node]}
        for i in prefix:
            self._lift(calls[i])
        node = self.next[0]
        candidates = []
        while self.is_call[node]:
            candidates.append(self.op_of[node])
            node = self.next[node]
        stuck = self.op_of[node]
        return prefix, self.best_state, [stuck, *(i for i in candidates if i != stuck)]


_Path = tuple[int, "_Path"] | None
_NOT_YET: _Path = (-1, None)


def _unobserved_writes(ops: Sequence[Operation]) -> list[bool]:
    """Indeterminate writes of a value no get returned and no cas compared against or reported.

    Placing one over an existing value can only make later ops fail (a get cannot return it, a
    delete still finds a value, a cas still misses), so the search need not try it there. A
    compare_failed without its current value could have missed *because* of such a write, so
    one of those anywhere turns the rule off.
    """
    observed: set[object] = set()
    for op in ops:
        if op.kind is OpKind.GET and not op.indeterminate:
            observed.add(op.output)
        elif op.kind is OpKind.CAS:
            observed.add(op.expected)  # even an indeterminate cas can pass the value on
            result = op.output
            if not op.indeterminate and isinstance(result, CasResult) and not result.ok:
                if result.current is UNKNOWN:
                    return [False] * len(ops)
                observed.add(result.current)
    return [
        op.indeterminate and op.kind in (OpKind.PUT, OpKind.CAS) and op.value not in observed for op in ops
    ]


def _first_visit(seen: dict[tuple[int, State], list[int]], key: tuple[int, State], extra: int) -> bool:
    """Record (key, extra) unless a visited subset of `extra` under `key` already dominates it."""
    visited = seen.get(key)
    if visited is None:
        seen[key] = [extra]
        return True
    if any(old & ~extra == 0 for old in visited):
        return False
    # Keep only the minimal sets: a superset of the new one can never prune anything more.
    visited[:] = [old for old in visited if extra & ~old != 0]
    visited.append(extra)
    return True
