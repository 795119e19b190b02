"""raftkv.routing, the client core every raftkv client shares, driven by hand: no sockets, a
made-up clock. Each test states one rule of how a request finds the node that can answer it."""

from __future__ import annotations

import pytest

from raftkv.routing import (
    BACKOFF_START_S,
    HEDGE_AFTER_S,
    MAX_REDIRECTS,
    SILENCE_S,
    Call,
    Outcome,
    Route,
    Router,
    leader_hint,
    normalize_endpoint,
)

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"
OK = {"code": "ok", "value": "v"}
NO_LEADER = {"code": "no_leader", "error": "no leader"}
UNAVAILABLE = {"code": "unavailable", "error": "leadership changed; retry"}
DEADLINE = 5.0


def redirect(to: str) -> dict[str, object]:
    return {"code": "not_leader", "leader_id": 2, "leader": to}


def call(router: Router | None = None, route: Route = Route.LEADER, **kw: object) -> Call:
    return Call(router or Router([A, B, C]), route, 0.0, DEADLINE, **kw)  # type: ignore[arg-type]


def sent(c: Call, endpoints: list[str], at: float = 0.0) -> list[str]:
    for endpoint in endpoints:
        c.sent(endpoint, at)
    return endpoints


def test_with_no_leader_known_a_call_asks_every_endpoint_at_once() -> None:
    c = call()
    assert c.start() == [A, B, C]


def test_the_answer_of_the_leader_ends_the_call_and_is_remembered() -> None:
    router = Router([A, B, C])
    c = call(router)
    sent(c, c.start())
    assert c.answered(B, redirect(C), 0.01) == []  # C is being asked already: wait for it
    assert c.answered(C, OK, 0.01) == []
    assert c.outcome is Outcome.DONE and c.reply == OK and router.leader == C
    assert call(router).start() == [C], "the next call asks the remembered leader alone"


def test_a_hint_to_an_endpoint_not_asked_yet_is_followed_at_once() -> None:
    router = Router([A])
    c = call(router)
    sent(c, c.start())
    assert c.answered(A, redirect(B), 0.01) == [B]
    assert router.leader == B


def test_redirects_are_bounded_per_round() -> None:
    c = call(Router([A]))
    sent(c, c.start())
    hops = [f"tcp://n{i}:1" for i in range(MAX_REDIRECTS + 2)]
    followed = []
    at = A
    for hop in hops:
        followed += c.answered(at, redirect(hop), 0.01)
        at = hop
    assert len(followed) == MAX_REDIRECTS


def test_no_leader_everywhere_retries_after_a_backoff_then_asks_everyone_again() -> None:
    c = call()
    sent(c, c.start())
    for endpoint in (A, B, C):
        assert c.answered(endpoint, NO_LEADER, 0.01) == []
    assert c.wakeup() == pytest.approx(0.01 + BACKOFF_START_S)
    assert c.due(0.01 + BACKOFF_START_S) == [A, B, C]
    assert c.outcome is Outcome.PENDING


def test_no_leader_for_longer_than_the_patience_gives_up_with_no_leader() -> None:
    c = call(patience=0.5)
    now, asks = 0.0, c.start()
    while not c.done:
        for endpoint in sent(c, asks, now):
            c.answered(endpoint, NO_LEADER, now)
        if c.done:
            break
        now = c.wakeup()
        asks = c.due(now)
    assert c.outcome is Outcome.NO_LEADER and 0.5 <= now < 1.0


def test_a_silent_remembered_leader_is_hedged_for_an_idempotent_call() -> None:
    router = Router([A, B, C], leader=A)
    c = call(router)
    sent(c, c.start())
    assert c.due(HEDGE_AFTER_S - 0.01) == []
    assert c.due(HEDGE_AFTER_S) == [B, C]
    assert c.answered(B, OK, HEDGE_AFTER_S + 0.01) == []
    assert c.outcome is Outcome.DONE and router.leader == B


def test_a_non_idempotent_call_is_never_hedged_nor_resent_after_silence() -> None:
    c = call(Router([A, B, C], leader=A), idempotent=False)
    sent(c, c.start())
    for now in (HEDGE_AFTER_S, SILENCE_S, 2 * SILENCE_S, DEADLINE - 0.1):
        assert c.due(now) == []
    assert c.due(DEADLINE) == [] and c.outcome is Outcome.TIMEOUT


def test_unavailable_is_final_for_a_non_idempotent_call_and_retried_for_others() -> None:
    admin = call(idempotent=False)
    sent(admin, admin.start())
    admin.answered(A, UNAVAILABLE, 0.01)
    assert admin.outcome is Outcome.DONE and admin.reply == UNAVAILABLE
    write = call()
    sent(write, write.start())
    write.answered(A, UNAVAILABLE, 0.01)
    assert write.outcome is Outcome.PENDING


def test_a_slow_try_keeps_its_round_open_until_it_goes_silent() -> None:
    """No try is abandoned for being slow: only after SILENCE_S does the next round start."""
    c = call(Router([A], leader=A))
    sent(c, c.start())
    assert c.due(SILENCE_S - 0.01) == []
    assert c.outcome is Outcome.PENDING
    assert c.due(SILENCE_S) == []  # the round is over: the next one after the backoff
    assert c.due(SILENCE_S + BACKOFF_START_S) == [A]


def test_a_late_answer_from_an_earlier_round_still_answers_the_call() -> None:
    c = call(Router([A], leader=A))
    sent(c, c.start())
    c.due(SILENCE_S)
    sent(c, c.due(SILENCE_S + BACKOFF_START_S), SILENCE_S + BACKOFF_START_S)
    c.answered(A, OK, SILENCE_S + 0.1)
    assert c.outcome is Outcome.DONE


def test_a_lost_try_ends_its_round_and_forgets_a_dead_leader() -> None:
    router = Router([A, B], leader=A)
    c = call(router)
    sent(c, c.start())
    assert c.lost(A, 0.01) == []
    assert router.leader is None
    assert c.due(0.01 + BACKOFF_START_S) == [A, B]


def test_a_try_that_never_reached_a_connection_holds_its_round_until_it_is_lost() -> None:
    """The driver sends or loses a queued try within its connect timeout; until then a second
    copy of a non-idempotent request must not go out."""
    c = call(Router([A, B]), idempotent=False)
    c.start()  # nothing sent: both endpoints still connecting
    c.sent(B, 0.0)
    c.answered(B, NO_LEADER, 0.01)
    assert c.due(0.5) == []
    c.lost(A, 0.2)
    assert c.due(0.2 + BACKOFF_START_S) == [A, B]


def test_past_the_deadline_a_call_times_out_or_reports_no_leader() -> None:
    silent = call()
    sent(silent, silent.start())
    silent.due(DEADLINE)
    assert silent.outcome is Outcome.TIMEOUT
    leaderless = call()
    sent(leaderless, leaderless.start())
    leaderless.answered(A, NO_LEADER, 0.01)
    leaderless.due(DEADLINE)
    assert leaderless.outcome is Outcome.NO_LEADER


def test_a_node_call_asks_its_node_only_and_takes_any_answer() -> None:
    c = call(route=Route.NODE, target=B)
    assert c.start() == [B]
    c.answered(B, NO_LEADER, 0.01)
    assert c.outcome is Outcome.DONE and c.reply == NO_LEADER
    lost = call(route=Route.NODE, target=B)
    lost.start()
    lost.lost(B, 0.01)
    assert lost.outcome is Outcome.TIMEOUT


def test_hints_and_endpoints_are_normalized() -> None:
    assert leader_hint(redirect("b:1")) == "tcp://b:1"
    assert leader_hint({"code": "not_leader", "leader": ""}) is None
    assert leader_hint(OK) is None
    assert normalize_endpoint(" tcp://h:9 ") == "tcp://h:9"
    assert normalize_endpoint("h:0") is None and normalize_endpoint("nohost") is None


RATE_LIMITED = {"code": "rate_limited", "retry_after": 0.3, "error": "rate limited"}


def test_a_rate_limited_call_retries_the_same_node_after_its_retry_after() -> None:
    router = Router([A, B, C], leader=A)
    c = call(router, idempotent=False)
    assert sent(c, c.start()) == [A]
    assert c.answered(A, RATE_LIMITED, 0.1) == []
    assert c.wakeup() == pytest.approx(0.4)
    assert c.due(0.39) == []
    assert c.due(0.4) == [A], "the same node, not every node: it answered, it is not down"
    assert router.leader == A
    assert c.answered(A, OK, 0.5) == [] and c.outcome is Outcome.DONE and c.reply == OK
    assert c.rate_limited == 1


def test_a_call_still_rate_limited_at_its_deadline_answers_rate_limited() -> None:
    c = call(Router([A, B, C], leader=A))
    sent(c, c.start())
    now = 0.0
    c.answered(A, RATE_LIMITED, now)
    while not c.done:
        now = c.wakeup()
        for endpoint in c.due(now):
            c.sent(endpoint, now)
            c.answered(endpoint, RATE_LIMITED, now)
    assert c.outcome is Outcome.DONE and c.reply == RATE_LIMITED
    assert now == DEADLINE and c.rate_limited >= DEADLINE / 0.3 - 1


def test_a_call_to_one_node_waits_out_its_rate_limit_too() -> None:
    c = call(route=Route.NODE, target=B)
    assert sent(c, c.start()) == [B]
    assert c.answered(B, RATE_LIMITED, 0.0) == []
    assert not c.done
    assert c.due(0.3) == [B]
    assert c.answered(B, OK, 0.4) == [] and c.reply == OK
