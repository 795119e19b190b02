"""A thread-safe recorder of client operations, for the linearizability checker.

Clients call `invoke` just before sending a request and exactly one of `complete`,
`indeterminate` or `fail` once they know its fate. The split matters for correctness:
- `complete`: the reply arrived; its output is checked against the model.
- `indeterminate`: timeout, dropped connection, leader lost mid-request. The operation may
  still take effect later, so it stays in the history with an open-ended return (Jepsen :info).
- `fail`: definitely no effect (rejected before it reached the cluster, or an error that
  guarantees nothing was proposed). Such operations are left out of the history.
An operation still pending when `operations()` is called is reported as indeterminate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from linearizability import Operation, OpKind, from_recording


@dataclass(slots=True)
class _Pending:
    client: int | str
    kind: OpKind
    key: str
    value: str | None
    expected: str | None
    invoked_at: float
    completed_at: float | None = None
    output: object = None
    outcome: str = "pending"  # pending | complete | indeterminate | failed


class Recorder:
    """Collects invocations and completions from many client threads into one history."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[_Pending] = []

    def invoke(
        self,
        client: int | str,
        kind: OpKind | str,
        key: str,
        *,
        value: str | None = None,
        expected: str | None = None,
    ) -> int:
        """Note the invocation time; returns a handle for the matching completion call."""
        op_kind = kind if isinstance(kind, OpKind) else OpKind(kind)
        with self._lock:
            # Read the clock under the lock so handles are ordered like invocation times.
            self._ops.append(_Pending(client, op_kind, key, value, expected, self._clock()))
            return len(self._ops) - 1

    def complete(self, handle: int, output: object = None) -> None:
        """The reply arrived: get -> value or None, delete -> bool, cas -> CasResult/bool/str."""
        self._finish(handle, "complete", output)

    def indeterminate(self, handle: int) -> None:
        """The outcome is unknown: the operation may take effect at any later time, or never."""
        self._finish(handle, "indeterminate", None)

    def fail(self, handle: int) -> None:
        """The operation definitely had no effect; it is dropped from the history."""
        self._finish(handle, "failed", None)

    def _finish(self, handle: int, outcome: str, output: object) -> None:
        now = self._clock()
        with self._lock:
            pending = self._ops[handle]
            if pending.outcome != "pending":
                raise ValueError(f"operation {handle} already finished as {pending.outcome}")
            pending.outcome, pending.output = outcome, output
            pending.completed_at = now if outcome == "complete" else None

    def operations(self) -> list[Operation]:
        """The history so far, in invocation order; unfinished operations count as indeterminate."""
        with self._lock:  # a finishing client mutates its entry under this lock
            return [
                from_recording(
                    p.client,
                    p.kind,
                    p.key,
                    p.invoked_at,
                    p.completed_at,
                    value=p.value,
                    expected=p.expected,
                    output=p.output,
                )
                for p in self._ops
                if p.outcome != "failed"
            ]
