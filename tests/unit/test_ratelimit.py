"""The token bucket of raftkvd/ratelimit.py, on a fake clock."""

from __future__ import annotations

import pytest

from raftkvd.net.clientendpoint import FORWARDER_PREFIX, client_key
from raftkvd.ratelimit import OVERFLOW, RateLimiter, retry_after_header


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _allowed(limiter: RateLimiter, key: str, n: int) -> int:
    return sum(limiter.check(key) == 0.0 for _ in range(n))


def test_a_new_client_gets_its_burst_at_once_then_is_refused(clock: FakeClock) -> None:
    limiter = RateLimiter(10.0, 5, clock)
    assert _allowed(limiter, "a", 8) == 5


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(8.0, 5, clock)
    _allowed(limiter, "a", 5)
    clock.now += 0.25  # two tokens
    assert _allowed(limiter, "a", 5) == 2
    clock.now += 60.0  # long idle: the bucket holds the burst, not 600
    assert _allowed(limiter, "a", 10) == 5


def test_a_refused_request_says_how_long_until_the_next_token(clock: FakeClock) -> None:
    limiter = RateLimiter(4.0, 1, clock)
    assert limiter.check("a") == 0.0
    assert limiter.check("a") == pytest.approx(0.25)
    clock.now += 0.1
    assert limiter.check("a") == pytest.approx(0.15)
    clock.now += 0.15
    assert limiter.check("a") == 0.0


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.0) == "1"
    assert retry_after_header(1.2) == "2"


def test_clients_have_separate_buckets(clock: FakeClock) -> None:
    limiter = RateLimiter(1.0, 2, clock)
    assert _allowed(limiter, "a", 5) == 2
    assert _allowed(limiter, "b", 5) == 2


def test_no_rate_means_no_limit_and_no_memory(clock: FakeClock) -> None:
    limiter = RateLimiter(None, 0, clock)
    assert _allowed(limiter, "a", 1000) == 1000
    assert len(limiter) == 0


def test_buckets_that_refilled_are_forgotten(clock: FakeClock) -> None:
    limiter = RateLimiter(10.0, 10, clock)
    for n in range(50):
        limiter.check(f"old{n}")
    clock.now += 1.0  # every old bucket is full again
    for n in range(50):
        limiter.check(f"new{n}")
    assert len(limiter) <= 50 + 1
    assert not any(key.startswith("old") for key in limiter._buckets)


def test_a_bucket_still_refilling_is_kept(clock: FakeClock) -> None:
    limiter = RateLimiter(1.0, 10, clock)
    _allowed(limiter, "busy", 10)
    clock.now += 5.0  # half refilled
    limiter.check("other")
    assert "busy" in limiter._buckets
    assert _allowed(limiter, "busy", 10) == 5


def test_a_flood_of_new_identities_is_bounded_and_shares_one_bucket(clock: FakeClock) -> None:
    limiter = RateLimiter(1.0, 3, clock, max_clients=100)
    _allowed(limiter, "known", 2)
    allowed = sum(limiter.check(f"flood{n}") == 0.0 for n in range(10_000))
    assert len(limiter) <= 100 + 1  # the table, and the overflow bucket
    assert OVERFLOW in limiter._buckets
    assert allowed == 99 + 3  # 99 flood buckets filled the table, then the overflow's burst
    assert limiter.check("known") == 0.0  # the known client's bucket was not pushed out


def test_reconfiguring_keeps_buckets_but_caps_them_at_the_new_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(10.0, 10, clock)
    limiter.check("a")
    limiter.configure(8.0, 2)
    assert _allowed(limiter, "a", 5) == 2
    clock.now += 0.25
    assert _allowed(limiter, "a", 5) == 2


def test_native_clients_are_keyed_by_curve_key_else_by_connection() -> None:
    assert client_key(b"\x00\x01", "ops") == "key:ops"
    assert client_key(b"\x00\x01", None) == "conn:0001"
    assert client_key(b"\x00\x02", None) != client_key(b"\x00\x01", None)


def test_the_nodes_http_processes_are_exempt_from_the_native_limit() -> None:
    assert client_key(b"anything", "node3") is None, "a node's own Curve key"
    assert client_key(FORWARDER_PREFIX + b"abc", None) is None, "a forwarder without Curve"
    assert client_key(FORWARDER_PREFIX + b"abc", "ops") == "key:ops", "with Curve, the key decides"
    assert client_key(b"x", "node3x") == "key:node3x"
