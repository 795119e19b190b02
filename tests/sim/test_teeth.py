"""The simulator has teeth: deliberately broken variants of the core, patched inside the test only,
are each caught by the checker within 2,000 random seeds (usually within a few dozen).

Each broken rule is a classic Raft bug:
- commit an earlier-term entry by counting replicas (Figure 8, §5.4.2);
- grant a vote without the up-to-date check (§5.4.1);
- forget the vote on restart (Figure 2: votedFor is persistent state; raftos' bug, REFERENCES §2);
- apply entries before they are committed (§5.3).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raftkvd.raft.core import RaftNode
from raftkvd.raft.log import RaftLog
from raftkvd.raft.messages import NONE

from .checker import Checker
from .workload import SeedResult, run_seed

MAX_SEEDS = 2000
NODES = 3


def commit_old_term_entries_by_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    def maybe_commit(self: RaftLog, index: int, term: int) -> bool:
        if index > self.committed:
            self.commit_to(index)
            return True
        return False

    monkeypatch.setattr(RaftLog, "maybe_commit", maybe_commit)


def vote_without_up_to_date_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, last_index, term: True)


def forget_vote_on_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    original = RaftNode.__init__

    def init(self: RaftNode, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.vote = NONE

    monkeypatch.setattr(RaftNode, "__init__", init)


def apply_before_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    def next_committed_entries(self: RaftLog, max_bytes: int | None) -> list:
        return self.slice(max(self.applied + 1, self.first_index()), self.last_index() + 1, max_bytes)

    def applied_to(self: RaftLog, index: int) -> None:
        if index:
            self.applied = index

    monkeypatch.setattr(RaftLog, "next_committed_entries", next_committed_entries)
    monkeypatch.setattr(
        RaftLog,
        "has_next_committed_entries",
        lambda self: self.last_index() > max(self.applied, self.first_index() - 1),
    )
    monkeypatch.setattr(RaftLog, "applied_to", applied_to)


VARIANTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "commit-previous-term-by-counting": commit_old_term_entries_by_counting,
    "vote-without-up-to-date-check": vote_without_up_to_date_check,
    "forget-vote-on-restart": forget_vote_on_restart,
    "apply-before-commit": apply_before_commit,
}


def first_caught(max_seeds: int = MAX_SEEDS) -> SeedResult | None:
    for seed in range(max_seeds):
        result = run_seed(seed, NODES)
        if not result.ok:
            return result
    return None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_broken_core_is_caught_within_2000_seeds(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    VARIANTS[variant](monkeypatch)
    caught = first_caught()
    assert caught is not None, f"{variant} survived {MAX_SEEDS} seeds"
    print(
        f"\n{variant}: caught at seed {caught.seed} ({caught.seed + 1} seeds): {caught.error.splitlines()[0]}"
    )
    assert caught.kind == "SafetyViolation", caught.error


def test_applying_before_commit_is_caught_by_state_machine_safety_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the direct applied <= commit checks, the symptoms still give it away: a write reported
    committed too early is missed by a linearizable read, or applied sequences diverge."""
    apply_before_commit(monkeypatch)
    monkeypatch.setattr(Checker, "direct_apply_checks", False)
    caught = first_caught()
    assert caught is not None and caught.kind == "SafetyViolation", caught and caught.error
    print(
        f"\napply-before-commit (without the direct check): caught at seed {caught.seed}: "
        f"{caught.error.splitlines()[0]}"
    )
    assert "apply before commit" not in caught.error and "applied beyond commit" not in caught.error


def test_the_correct_core_passes_the_same_seeds() -> None:
    """The seeds that catch the broken variants are not failing for some other reason."""
    for seed in range(20):
        result = run_seed(seed, NODES)
        assert result.ok, f"{result.error}\nreplay: {result.replay_command()}"
