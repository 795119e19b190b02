"""Per-client token buckets (SPEC §8 [limits]): pure, with an injected clock.

Both doors of a node use it before any other work: the HTTP process for REST clients
(rest.py, 429) and the node's client endpoint for native clients (clientendpoint.py,
"rate_limited"). A request costs one dict lookup, a move to the end of an ordered dict and a
few float operations, so a client over its limit costs the others almost nothing.

Memory is bounded two ways:
- A bucket that has refilled is the same as no bucket: buckets are kept in order of last
  use, and the least recently used ones that are full again are forgotten as requests arrive
  (at most EVICT_PER_CHECK per request, so no request pays for a sweep).
- At most `max_clients` buckets exist. Beyond that, identities without a bucket share one
  overflow bucket: a flood of new identities (addresses, reconnections) is limited as one
  client and cannot push the known clients' buckets out, nor grow memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_MAX_CLIENTS = 10_000
EVICT_PER_CHECK = 2
"""Idle buckets forgotten per request at most: the amortized cost of the memory bound."""
OVERFLOW = "\x00overflow"
"""The shared bucket of identities that found the table full (no real identity starts with NUL)."""


class RateLimiter:
    """Token buckets of `burst` requests refilled at `rate` per second, one per client key."""

    def __init__(self, rate: float | None, burst: float, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self._clock = clock
        self._max = max(1, max_clients)
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        """key -> [tokens, time of the last request], least recently used first."""
        self.configure(rate, burst)

    def configure(self, rate: float | None, burst: float) -> None:
        """New limits (SIGHUP): buckets are kept, but none holds more than the new burst."""
        self.rate = rate
        self.burst = max(1.0, burst)
        self._full_after = self.burst / rate if rate else 0.0
        if rate is None:
            self._buckets.clear()
        for bucket in self._buckets.values():
            bucket[0] = min(bucket[0], self.burst)

    @property
    def enabled(self) -> bool:
        return self.rate is not None

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str) -> float:
        """Take one token from `key`'s bucket: 0.0 if it had one (go ahead), else the seconds
        until it will have one (refuse, and say when to come back)."""
        rate = self.rate
        if rate is None:
            return 0.0
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._forget_idle(now)
            if len(buckets) >= self._max:
                key = OVERFLOW
                bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = [self.burst, now]
        buckets.move_to_end(key)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / rate

    def _forget_idle(self, now: float) -> None:
        """Drop the least recently used buckets that have refilled by now."""
        buckets = self._buckets
        for _ in range(EVICT_PER_CHECK):
            if not buckets:
                return
            key, bucket = next(iter(buckets.items()))
            if now - bucket[1] < self._full_after * (1.0 - bucket[0] / self.burst):
                return
            del buckets[key]


def refusal(rate: float | None, wait: float) -> str:
    """The error of a refused request, the same at both doors."""
    return f"rate limited: over {rate:g} requests/s, retry in {wait:.3f}s"


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, at least 1 (RFC 9110 §10.2.3 allows no fractions)."""
    return str(max(1, math.ceil(seconds)))
