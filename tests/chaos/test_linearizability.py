"""The linearizability checker must accept every linearizable history and reject the classic
anomalies a broken Raft KV produces (stale reads, lost writes, reads from the future)."""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from dataclasses import replace

import pytest
from history import Recorder
from hypothesis import given, settings
from hypothesis import strategies as st
from linearizability import (
    CAS_OK,
    INDETERMINATE,
    UNKNOWN,
    CasResult,
    Operation,
    OpKind,
    State,
    Verdict,
    check,
    from_recording,
    step,
)

K = "k"
BIG_HISTORY_OPS = 5_000
BIG_HISTORY_KEYS = 10
BIG_HISTORY_CLIENTS = 8
BIG_HISTORY_BUDGET_S = 10.0
"""Wall-clock bound asserted for the 5,000-op history (typically well under a second)."""
SINGLE_KEY_OPS = 2_000


# --- building blocks -------------------------------------------------------------------------


def put(call: float, ret: float, value: str, *, client: int = 0, key: str = K) -> Operation:
    return Operation(client, OpKind.PUT, key, call, ret, value=value)


def get(call: float, ret: float, output: str | None, *, client: int = 0, key: str = K) -> Operation:
    return Operation(client, OpKind.GET, key, call, ret, output=output)


def delete(call: float, ret: float, deleted: bool, *, client: int = 0, key: str = K) -> Operation:
    return Operation(client, OpKind.DELETE, key, call, ret, output=deleted)


def cas(
    call: float,
    ret: float,
    expected: str | None,
    new: str,
    result: CasResult,
    *,
    client: int = 0,
    key: str = K,
) -> Operation:
    return Operation(client, OpKind.CAS, key, call, ret, value=new, expected=expected, output=result)


FAILED = CasResult(ok=False)


def assert_linearizable(history: list[Operation]) -> None:
    result = check(history)
    assert result.ok is True, result.explanation


def assert_not_linearizable(history: list[Operation]) -> str:
    result = check(history)
    assert result.ok is False
    assert result.explanation
    return result.explanation


# --- known-linearizable histories ------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    assert check([]).ok is True


def test_sequential_history_following_the_model_is_linearizable() -> None:
    assert_linearizable(
        [
            get(0, 1, None),
            put(2, 3, "a"),
            get(4, 5, "a"),
            put(6, 7, "b"),
            get(8, 9, "b"),
            delete(10, 11, True),
            get(12, 13, None),
        ]
    )


def test_read_concurrent_with_a_write_may_return_the_old_value() -> None:
    assert_linearizable([put(0, 1, "a"), put(2, 10, "b"), get(3, 4, "a"), get(11, 12, "b")])


def test_read_concurrent_with_a_write_may_return_the_new_value() -> None:
    assert_linearizable([put(0, 1, "a"), put(2, 10, "b"), get(3, 4, "b"), get(11, 12, "b")])


def test_overlapping_writes_may_take_effect_in_either_order() -> None:
    a_then_b = [put(0, 10, "a", client=1), put(1, 11, "b", client=2), get(12, 13, "b")]
    b_then_a = [put(0, 10, "a", client=1), put(1, 11, "b", client=2), get(12, 13, "a")]
    assert_linearizable(a_then_b)
    assert_linearizable(b_then_a)


def test_concurrent_reads_may_straddle_a_write() -> None:
    """One read sees the old value, one the new, both overlapping the write: old read goes first."""
    assert_linearizable(
        [put(0, 1, "a"), put(2, 20, "b"), get(3, 15, "b", client=1), get(5, 18, "a", client=2)]
    )


def test_touching_intervals_count_as_concurrent() -> None:
    assert_linearizable([put(0, 5, "a"), get(5, 6, None)])


def test_cas_chain_where_each_swap_sees_the_previous_one_is_linearizable() -> None:
    assert_linearizable(
        [
            cas(0, 1, None, "1", CAS_OK),
            cas(2, 3, "1", "2", CAS_OK),
            cas(4, 5, "1", "3", CasResult(ok=False, current="2")),
            cas(6, 7, "2", "3", CAS_OK),
            get(8, 9, "3"),
        ]
    )


def test_concurrent_cas_from_the_same_value_lets_exactly_one_win() -> None:
    assert_linearizable(
        [
            put(0, 1, "0"),
            cas(2, 10, "0", "x", CAS_OK, client=1),
            cas(3, 9, "0", "y", CasResult(ok=False, current="x"), client=2),
            get(11, 12, "x"),
        ]
    )


def test_cas_on_an_absent_key_succeeds_only_when_expecting_absence() -> None:
    assert_linearizable(
        [cas(0, 1, "a", "b", CasResult(ok=False, current=None)), cas(2, 3, None, "b", CAS_OK)]
    )


def test_delete_reports_whether_the_key_existed() -> None:
    assert_linearizable(
        [
            delete(0, 1, False),
            put(2, 3, "a"),
            delete(4, 5, True),
            delete(6, 7, False),
            get(8, 9, None),
        ]
    )


def test_indeterminate_write_that_never_shows_up_is_linearizable() -> None:
    assert_linearizable([put(0, 1, "a"), put(2, INDETERMINATE, "lost"), get(5, 6, "a"), get(100, 101, "a")])


def test_indeterminate_write_that_shows_up_later_is_linearizable() -> None:
    assert_linearizable(
        [
            put(0, 1, "a"),
            put(2, INDETERMINATE, "late", client=1),
            get(5, 6, "a"),
            get(50, 51, "late"),
            get(60, 61, "late"),
        ]
    )


def test_indeterminate_cas_and_delete_may_or_may_not_have_applied() -> None:
    assert_linearizable(
        [
            put(0, 1, "a"),
            Operation(1, OpKind.CAS, K, 2, INDETERMINATE, value="b", expected="a"),
            get(3, 4, "a"),
            get(5, 6, "b"),
            Operation(2, OpKind.DELETE, K, 7, INDETERMINATE),
            get(8, 9, "b"),
            get(10, 11, None),
        ]
    )


def test_several_indeterminate_ops_may_all_take_effect_in_order() -> None:
    """cas(absent -> 1) and a delete both timed out; reads saw 1, then the key gone."""
    assert_linearizable(
        [
            cas(0, INDETERMINATE, None, "1", CAS_OK, client=1),
            get(3, 3, "1", client=2),
            delete(3, INDETERMINATE, False, client=3),
            get(5, 8, None, client=4),
        ]
    )


def test_indeterminate_write_seen_only_through_an_indeterminate_cas_still_counts() -> None:
    """Nobody read "mid", but the timed-out cas(mid -> end) did, and a read saw "end"."""
    assert_linearizable(
        [
            put(0, 1, "start"),
            cas(2, INDETERMINATE, "start", "mid", CAS_OK, client=1),
            cas(3, INDETERMINATE, "mid", "end", CAS_OK, client=2),
            get(10, 11, "end"),
        ]
    )


def test_indeterminate_read_is_kept_but_constrains_nothing() -> None:
    result = check([put(0, 1, "a"), Operation(1, OpKind.GET, K, 2, INDETERMINATE), get(3, 4, "a")])
    assert result.ok is True
    assert result.keys[K].operations == 3


def test_keys_are_independent_registers() -> None:
    assert_linearizable(
        [put(0, 1, "a", key="x"), put(0, 1, "b", key="y"), get(2, 3, "a", key="x"), get(2, 3, "b", key="y")]
    )


# --- known-non-linearizable histories --------------------------------------------------------


def test_stale_read_after_a_newer_write_completed_is_illegal() -> None:
    explanation = assert_not_linearizable(
        [
            put(0, 1, "old", client=1),
            put(2, 3, "new", client=1),
            get(4, 5, "old", client=2),
        ]
    )
    assert "get('k') -> 'old'" in explanation.split("!!")[1]
    assert "value after that prefix: 'new'" in explanation


def test_lost_write_never_seen_by_later_reads_is_illegal() -> None:
    assert_not_linearizable([put(0, 1, "a"), put(2, 3, "b"), get(4, 5, "a"), get(6, 7, "a")])


def test_lost_write_on_a_fresh_key_is_illegal() -> None:
    assert_not_linearizable([put(0, 1, "a"), get(2, 3, None), get(4, 5, None)])


def test_read_of_a_value_never_written_is_illegal() -> None:
    explanation = assert_not_linearizable([put(0, 1, "a"), get(2, 3, "phantom")])
    assert "phantom" in explanation


def test_read_going_back_in_time_is_illegal() -> None:
    """A, then B, then A again, with no write of A in between: the register went backwards."""
    assert_not_linearizable(
        [
            put(0, 1, "A", client=1),
            put(2, 10, "B", client=2),
            get(3, 4, "A", client=3),
            get(5, 6, "B", client=3),
            get(7, 8, "A", client=3),
        ]
    )


def test_cas_that_succeeded_against_a_value_that_was_not_current_is_illegal() -> None:
    assert_not_linearizable([put(0, 1, "a"), put(2, 3, "b"), cas(4, 5, "a", "c", CAS_OK)])


def test_cas_that_failed_although_the_value_matched_is_illegal() -> None:
    assert_not_linearizable([put(0, 1, "a"), cas(2, 3, "a", "c", FAILED)])


def test_cas_failure_reporting_a_current_value_that_was_not_current_is_illegal() -> None:
    assert_not_linearizable([put(0, 1, "a"), cas(2, 3, "z", "c", CasResult(ok=False, current="stale"))])


def test_delete_claiming_to_remove_an_absent_key_is_illegal() -> None:
    assert_not_linearizable([put(0, 1, "a"), delete(2, 3, True), delete(4, 5, True)])


def test_indeterminate_write_taking_effect_before_its_invocation_is_illegal() -> None:
    assert_not_linearizable([get(0, 1, None), get(2, 3, "early"), put(10, INDETERMINATE, "early")])


def test_one_illegal_key_makes_the_whole_history_illegal_and_names_the_key() -> None:
    result = check(
        [
            put(0, 1, "a", key="good"),
            get(2, 3, "a", key="good"),
            put(0, 1, "a", key="bad"),
            put(2, 3, "b", key="bad"),
            get(4, 5, "a", key="bad"),
        ]
    )
    assert result.ok is False
    assert result.keys["good"].verdict is Verdict.OK
    assert result.keys["bad"].verdict is Verdict.ILLEGAL
    assert [op.value for op in result.keys["bad"].longest_prefix] == ["a", "b"]
    assert result.keys["bad"].state_after_prefix == "b"
    assert result.keys["bad"].stuck[0].output == "a"
    assert "key 'bad'" in result.explanation and "key 'good'" not in result.explanation


def test_search_exceeding_its_budget_reports_unknown_rather_than_a_verdict() -> None:
    """40 mutually concurrent writes then an impossible read: 2^40 subsets to rule out."""
    writes = [put(0, 100, str(i), client=i) for i in range(40)]
    result = check([*writes, get(1, 99, "never", client=99)], timeout_s=0.2)
    assert result.ok is None
    assert result.keys[K].verdict is Verdict.UNKNOWN
    assert "unknown" in result.explanation


def test_search_is_iterative_so_a_very_long_single_key_history_checks() -> None:
    n = max(3 * sys.getrecursionlimit(), 6_000)
    history = [
        put(2 * i, 2 * i + 1, str(i)) if i % 2 == 0 else get(2 * i, 2 * i + 1, str(i - 1)) for i in range(n)
    ]
    assert_linearizable(history)
    history[-1] = replace(history[-1], output="0")
    assert_not_linearizable(history)


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "op", "legal", "after"),
    [
        (None, put(0, 1, "v"), True, "v"),
        ("v", get(0, 1, "v"), True, "v"),
        ("v", get(0, 1, None), False, "v"),
        (None, delete(0, 1, False), True, None),
        ("v", delete(0, 1, False), False, None),
        ("v", cas(0, 1, "v", "w", CAS_OK), True, "w"),
        (None, cas(0, 1, None, "w", CAS_OK), True, "w"),
        ("v", cas(0, 1, None, "w", CasResult(ok=False, current="v")), True, "v"),
        ("v", cas(0, 1, "x", "w", CasResult(ok=False, current="x")), False, "v"),
    ],
)
def test_sequential_model_of_one_key(state: State, op: Operation, legal: bool, after: State) -> None:
    assert step(state, op) == (legal, after)


# --- recording ------------------------------------------------------------------------------


def test_from_recording_marks_uncompleted_operations_indeterminate() -> None:
    op = from_recording(3, "put", K, 1.0, None, value="v")
    assert op.indeterminate and op.ret == INDETERMINATE
    assert (
        from_recording(3, "cas", K, 1.0, 2.0, expected="a", value="b", output="compare_failed").output
        == FAILED
    )
    with pytest.raises(ValueError):
        from_recording(3, "get", K, 2.0, 1.0, output=None)


def test_recorder_keeps_indeterminate_and_pending_ops_and_drops_definite_failures() -> None:
    ticks = itertools.count()
    recorder = Recorder(clock=lambda: float(next(ticks)))
    ok = recorder.invoke(1, "put", K, value="a")
    recorder.complete(ok)
    lost = recorder.invoke(2, "put", K, value="b")
    recorder.indeterminate(lost)
    rejected = recorder.invoke(3, "put", K, value="c")
    recorder.fail(rejected)
    recorder.invoke(4, OpKind.GET, K)  # never finished
    ops = recorder.operations()
    assert [(op.value, op.indeterminate) for op in ops] == [("a", False), ("b", True), (None, True)]
    with pytest.raises(ValueError):
        recorder.complete(ok)


def test_recorder_from_many_threads_over_a_real_register_is_linearizable() -> None:
    recorder = Recorder()
    register_lock = threading.Lock()
    register: dict[str, str | None] = {K: None}

    def client(cid: int) -> None:
        for n in range(50):
            if n % 2:
                handle = recorder.invoke(cid, OpKind.PUT, K, value=f"{cid}-{n}")
                with register_lock:
                    register[K] = f"{cid}-{n}"
                recorder.complete(handle)
            else:
                handle = recorder.invoke(cid, OpKind.GET, K)
                with register_lock:
                    value = register[K]
                recorder.complete(handle, value)

    threads = [threading.Thread(target=client, args=(cid,)) for cid in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ops = recorder.operations()
    assert len(ops) == 200
    assert_linearizable(ops)


# --- generated histories --------------------------------------------------------------------


def simulate(
    seed: int,
    n_ops: int = BIG_HISTORY_OPS,
    keys: int = BIG_HISTORY_KEYS,
    clients: int = BIG_HISTORY_CLIENTS,
    indeterminate_rate: float = 0.01,
    values: int = 0,
) -> list[Operation]:
    """A linearizable history from a real register per key: each op takes effect at one random
    instant inside its interval; indeterminate ops take effect later or never. Written values
    are unique unless `values` > 0 picks them from that many (Jepsen's register uses 5)."""
    rng = random.Random(seed)
    names = [f"key-{i}" for i in range(keys)]
    written: dict[str, list[str]] = {name: [] for name in names}
    drafts: list[tuple[float, bool, Operation]] = []  # (effect time, applies?, op without output)
    clock = [rng.uniform(0, 0.001) for _ in range(clients)]
    for n in range(n_ops):
        cid = min(range(clients), key=clock.__getitem__)  # whoever is free first acts next
        key = rng.choice(names)
        call = clock[cid]
        latency = rng.expovariate(1 / 0.002) + (rng.uniform(0.01, 0.05) if rng.random() < 0.03 else 0.0)
        ret = call + latency
        effect = rng.uniform(call, ret)
        roll = rng.random()
        value = str(rng.randrange(values)) if values else f"c{cid}-{n}"
        if roll < 0.45:
            kind, expected = OpKind.GET, None
        elif roll < 0.75:
            kind, expected = OpKind.PUT, None
            written[key].append(value)
        elif roll < 0.9:
            kind = OpKind.CAS  # mostly against the latest put, as a read-modify-write would
            recent = written[key][-3:]
            expected = recent[-1] if recent and rng.random() < 0.7 else rng.choice([None, *recent])
        else:
            kind, expected = OpKind.DELETE, None
        applies = True
        if rng.random() < indeterminate_rate:
            ret, applies = INDETERMINATE, rng.random() < 0.5
            effect = call + rng.uniform(0, 0.05)
        op = Operation(
            cid,
            kind,
            key,
            call,
            ret,
            value=value if kind in (OpKind.PUT, OpKind.CAS) else None,
            expected=expected,
        )
        drafts.append((effect, applies, op))
        clock[cid] = (call + latency if ret == INDETERMINATE else ret) + rng.uniform(0, 0.0005)
    state: dict[str, State] = dict.fromkeys(names)
    history = []
    for _, applies, op in sorted(drafts, key=lambda d: d[0]):
        before = state[op.key]
        if op.kind is OpKind.GET:
            output: object = before
        elif op.kind is OpKind.DELETE:
            output = before is not None
        elif op.kind is OpKind.CAS:
            output = CAS_OK if before == op.expected else CasResult(ok=False, current=before)
        else:
            output = None
        if applies:
            _, state[op.key] = step(before, replace(op, output=output))
        history.append(op if op.indeterminate else replace(op, output=output))
    history.sort(key=lambda op: op.call)
    return history


def stale_read_corruption(history: list[Operation]) -> tuple[int, str]:
    """A get and an old value it cannot legally return: a newer completed put separates them.

    Written values are unique, so once put(old) precedes put(new) and put(new) precedes the
    get, no linearization lets the get see `old`.
    """
    for g, op in enumerate(history):
        if op.kind is not OpKind.GET or op.indeterminate:
            continue
        puts = [p for p in history if p.key == op.key and p.kind is OpKind.PUT and p.ret < op.call]
        for newer in reversed(puts):
            older = [p for p in puts if p.ret < newer.call and p.value != op.output]
            if older:
                return g, str(older[-1].value)
    raise AssertionError("generated history has no read that can be made stale")


def test_generated_5000_operation_history_is_linearizable_within_seconds() -> None:
    history = simulate(seed=1)
    assert len(history) == BIG_HISTORY_OPS
    assert any(op.indeterminate for op in history)
    started = time.monotonic()
    result = check(history)
    elapsed = time.monotonic() - started
    assert result.ok is True, result.explanation
    assert len(result.keys) == BIG_HISTORY_KEYS
    assert elapsed < BIG_HISTORY_BUDGET_S


def test_generated_5000_operation_history_with_one_stale_read_is_illegal() -> None:
    history = simulate(seed=1)
    index, stale = stale_read_corruption(history)
    history[index] = replace(history[index], output=stale)
    started = time.monotonic()
    result = check(history)
    elapsed = time.monotonic() - started
    key = history[index].key
    assert result.ok is False
    assert result.keys[key].verdict is Verdict.ILLEGAL
    assert all(r.verdict is Verdict.OK for k, r in result.keys.items() if k != key)
    assert history[index] in result.keys[key].stuck
    assert elapsed < BIG_HISTORY_BUDGET_S


def test_generated_history_with_all_clients_on_one_key_is_linearizable() -> None:
    """The heaviest overlap per key: 8 clients hammering a single register, with slow outliers."""
    history = simulate(seed=2, n_ops=SINGLE_KEY_OPS, keys=1)
    result = check(history)
    assert result.ok is True, result.explanation


def test_generated_history_with_a_small_value_domain_is_linearizable() -> None:
    """Repeated values (Jepsen's register writes 0-4) make reads ambiguous; still provable."""
    history = simulate(seed=3, n_ops=SINGLE_KEY_OPS, keys=2, clients=5, indeterminate_rate=0.02, values=5)
    result = check(history)
    assert result.ok is True, result.explanation


# --- properties -----------------------------------------------------------------------------

VALUES = ["1", "2", "3"]


@st.composite
def sequential_histories(draw: st.DrawFn) -> list[Operation]:
    """Run random ops against the model one after another, then widen each op into an interval
    around its linearization point; indeterminate ops may apply or not and lose their output."""
    n = draw(st.integers(0, 12))
    state: dict[str, State] = {"a": None, "b": None}
    history = []
    for lp in range(n):
        key = draw(st.sampled_from(["a", "b"]))
        kind = draw(st.sampled_from(list(OpKind)))
        value = draw(st.sampled_from(VALUES)) if kind in (OpKind.PUT, OpKind.CAS) else None
        expected = draw(st.sampled_from([None, *VALUES])) if kind is OpKind.CAS else None
        call = lp - draw(st.floats(0, 4))
        ret = lp + draw(st.floats(0, 4))
        op = Operation(lp % 3, kind, key, call, ret, value=value, expected=expected)
        before = state[key]
        output: object
        if kind is OpKind.GET:
            output = before
        elif kind is OpKind.DELETE:
            output = before is not None
        elif kind is OpKind.CAS:
            output = (
                CAS_OK
                if before == expected
                else CasResult(ok=False, current=draw(st.sampled_from([before, UNKNOWN])))
            )
        else:
            output = None
        op = replace(op, output=output)
        if draw(st.booleans()) and draw(st.booleans()):  # about a quarter indeterminate
            op = replace(op, ret=INDETERMINATE, output=None)
            if not draw(st.booleans()):
                history.append(op)
                continue  # never took effect
        _, state[key] = step(before, op)
        history.append(op)
    return history


@settings(max_examples=300, deadline=None)
@given(sequential_histories())
def test_histories_from_a_sequential_execution_are_always_linearizable(history: list[Operation]) -> None:
    assert_linearizable(history)


def brute_force_linearizable(history: list[Operation]) -> bool:
    """Try every order that respects real time; indeterminate ops may sit at the end (= never)."""
    for order in itertools.permutations(history):
        if any(later.ret < earlier.call for i, earlier in enumerate(order) for later in order[i + 1 :]):
            continue
        state: State = None
        for op in order:
            legal, state = step(state, op)
            if not legal:
                break
        else:
            return True
    return False


@st.composite
def arbitrary_small_histories(draw: st.DrawFn) -> list[Operation]:
    """Random ops with random outputs on one key, so both verdicts come up. Writes may use "3",
    which reads never return, so the never-observed-write pruning gets exercised too."""
    history = []
    for client in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(list(OpKind)))
        call = draw(st.integers(0, 8))
        ret = INDETERMINATE if draw(st.integers(0, 3)) == 0 else call + draw(st.integers(0, 4))
        value = draw(st.sampled_from(["1", "2", "3"])) if kind in (OpKind.PUT, OpKind.CAS) else None
        expected = draw(st.sampled_from([None, "1", "2"])) if kind is OpKind.CAS else None
        output: object = None
        if ret == INDETERMINATE or kind is OpKind.PUT:
            pass
        elif kind is OpKind.GET:
            output = draw(st.sampled_from([None, "1", "2"]))
        elif kind is OpKind.DELETE:
            output = draw(st.booleans())
        elif draw(st.booleans()):
            output = CAS_OK
        else:
            output = CasResult(ok=False, current=draw(st.sampled_from([UNKNOWN, None, "1", "2"])))
        history.append(Operation(client, kind, K, call, ret, value=value, expected=expected, output=output))
    return history


@settings(max_examples=500, deadline=None)
@given(arbitrary_small_histories())
def test_checker_agrees_with_brute_force_on_small_histories(history: list[Operation]) -> None:
    assert check(history).ok is brute_force_linearizable(history)
