"""Safety invariants of Raft and of the key-value service, checked by the simulator after every
event (paper Figure 3, and what a client may observe).

The checker keeps a global, append-only view of what the cluster has ever said:
- `leaders`: the leader of each term (Election Safety);
- `registry`: every (index, term) ever persisted, with its data and the term before it,
  so that two logs holding the same (index, term) agree on the whole prefix (Log Matching);
- `commit_term`/`commit_entry_term`: every index known committed, and the term in which it
  was first reported committed, so later leaders must hold it (Leader Completeness);
- `history`: the one entry every node applies at each index, and `states`: the digest of
  the key-value state after each index some node stopped at (State Machine Safety);
- from the history, the writes that took effect (the first (session, seq) of each client
  write, as the state machine's once-per-session rule has it) and each key's changes, against
  which every acknowledged write and every linearizable read is judged.
Each check costs O(1) or O(what changed), so it can run after every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.protocol import Op
from raftkvd.kv import commands
from raftkvd.raft.messages import Entry, EntryType, HardState, Snapshot, StateRole

if TYPE_CHECKING:
    from .cluster import SimNode


class SafetyViolation(AssertionError):
    """A safety property failed; the message names the property and the evidence."""


@dataclass(slots=True)
class NodeObservation:
    """What the checker last saw of one incarnation of a node."""

    commit: int = 0
    applied: int = 0
    leader_term: int = 0
    durable_commit: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    """A client heard its write committed: the answer named the entry's index."""

    session: str
    seq: int
    index: int
    key: str
    value: str | None


class Checker:
    direct_apply_checks = True
    """Also check applied <= commit directly; tests switch it off to show that the client-side
    checks alone catch a core that applies before commit."""

    def __init__(self, nodes: dict[int, SimNode]) -> None:
        self.nodes = nodes
        self.leaders: dict[int, int] = {}
        self.current_leaders: dict[int, int] = {}
        self.registry: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.commit_entry_term: list[int] = [0]
        self.commit_term: list[int] = [0]
        self.history: list[tuple[int, int, bytes] | None] = [None]
        self.states: dict[int, str] = {}
        self.session_seq: dict[str, int] = {}
        self.effective: dict[tuple[str, int], int] = {}
        self.key_changes: dict[str, list[tuple[int, str | None]]] = {}
        self.acks: list[Ack] = []
        self.pending_acks: dict[int, list[Ack]] = {}
        """Acknowledged writes at indexes no node has applied yet."""
        self.acked_floor = 0
        """The highest index of an acknowledged write: every read begun later must see it."""
        self.reads_checked = 0
        self.obs: dict[int, NodeObservation] = {}
        self.checks = 0

    # ---- helpers ------------------------------------------------------------------------
    @staticmethod
    def fail(rule: str, detail: str) -> None:
        raise SafetyViolation(f"{rule}: {detail}")

    def observation(self, node_id: int) -> NodeObservation:
        obs = self.obs.get(node_id)
        if obs is None:
            obs = self.obs[node_id] = NodeObservation()
        return obs

    # ---- after every event --------------------------------------------------------------
    def observe(self, node: SimNode) -> None:
        """Election Safety, monotone commit/applied, applied <= commit, committed-entry agreement."""
        raft = node.raft
        if raft is None:
            return
        self.checks += 1
        obs = self.observation(node.id)
        term = raft.term
        if raft.role is StateRole.LEADER:
            known = self.leaders.get(term)
            if known is None:
                self.leaders[term] = node.id
            elif known != node.id:
                self.fail("Election Safety", f"term {term} has two leaders: {known} and {node.id}")
            if obs.leader_term != term:
                obs.leader_term = term
                self.current_leaders[node.id] = term
                self._check_leader_completeness(node, 1)
        elif obs.leader_term:
            obs.leader_term = 0
            self.current_leaders.pop(node.id, None)

        log = raft.log
        commit, applied = log.committed, log.applied
        if commit != obs.commit:
            if commit < obs.commit:
                self.fail("commit index decreased", f"node {node.id}: {obs.commit} -> {commit}")
            self._record_commits(node, obs.commit, commit)
            obs.commit = commit
        if applied != obs.applied:
            if applied < obs.applied:
                self.fail("applied index decreased", f"node {node.id}: {obs.applied} -> {applied}")
            obs.applied = applied
        if applied > commit and self.direct_apply_checks:
            self.fail("applied beyond commit", f"node {node.id}: applied {applied} > commit {commit}")

    def _record_commits(self, node: SimNode, old: int, new: int) -> None:
        """Newly committed indexes must agree with what others committed there; the first report
        of an index fixes its term and the term it was committed in (for Leader Completeness)."""
        raft = node.raft
        assert raft is not None
        log = raft.log
        first_known = log.first_index() - 1
        entry_terms, commit_terms = self.commit_entry_term, self.commit_term
        top = top_before = len(commit_terms) - 1
        lo = max(old + 1, first_known + 1)
        for index in range(lo, new + 1):
            term = log.term(index)
            if term is None:
                self.fail("commit without entry", f"node {node.id} commits {index} it does not hold")
            if index <= top:
                if entry_terms[index] != term:
                    self.fail(
                        "State Machine Safety",
                        f"node {node.id} committed ({index}, term {term}) but "
                        f"({index}, term {entry_terms[index]}) was committed before",
                    )
            elif index == top + 1:
                entry_terms.append(term)
                commit_terms.append(raft.term)
                top += 1
            else:
                self.fail("commit gap", f"node {node.id} commits {index} beyond known {top} + 1")
        if new > top:
            self.fail("commit gap", f"node {node.id} commits {new} beyond known {top}")
        if top > top_before:
            for leader_id, leader_term in self.current_leaders.items():
                if leader_id != node.id and leader_term > raft.term:
                    self._check_leader_completeness(self.nodes[leader_id], top_before + 1)

    def _check_leader_completeness(self, node: SimNode, lo: int) -> None:
        """§5.4: an entry committed in term T is in the log of every leader of a term > T."""
        raft = node.raft
        assert raft is not None
        log = raft.log
        term = raft.term
        compacted = log.first_index() - 1
        entry_terms, commit_terms = self.commit_entry_term, self.commit_term
        for index in range(max(lo, compacted + 1), len(commit_terms)):
            if commit_terms[index] < term and log.term(index) != entry_terms[index]:
                self.fail(
                    "Leader Completeness",
                    f"leader {node.id} of term {term} lacks ({index}, term {entry_terms[index]}) "
                    f"committed in term {commit_terms[index]}; it has term {log.term(index)} there",
                )
        if compacted > 0 and compacted < len(entry_terms) and log.term(compacted) != entry_terms[compacted]:
            self.fail("Leader Completeness", f"leader {node.id}'s snapshot at {compacted} is not committed")

    # ---- persistence (told by the node's storage twins as writes commit) -------------------
    def on_persist(self, node: SimNode, entries: list[Entry]) -> None:
        """Log Matching, inductively: each (index, term) is one entry with one predecessor term."""
        storage = node.storage
        first = storage.first_index()
        registry = self.registry
        prev_term = None
        for entry in entries:
            if entry.index < first:
                continue
            if prev_term is None:  # the entry before the first appended one was not touched
                prev_term = storage.term(entry.index - 1)
            key = (entry.index, entry.term)
            value = (int(entry.type), entry.data, prev_term)
            known = registry.get(key)
            if known is None:
                registry[key] = value
            elif known != value:
                self.fail(
                    "Log Matching",
                    f"node {node.id} persisted ({entry.index}, term {entry.term}) as "
                    f"{value[:2]} after term {prev_term}; another log has {known[:2]} after term {known[2]}",
                )
            prev_term = entry.term
        if storage.last_index() + 1 - storage.first_index() != len(storage.ents) - 1:
            self.fail("storage", f"node {node.id} storage is not contiguous")

    def on_hard_state(self, node: SimNode, hard_state: HardState) -> None:
        """Commits are recorded as they become durable too: the same write may compact the
        log past them (the driver's compaction), after which their terms cannot be read."""
        obs = self.observation(node.id)
        if hard_state.commit < obs.durable_commit:
            self.fail("commit index decreased",
                      f"node {node.id} persisted commit {hard_state.commit} < {obs.durable_commit}")
        obs.durable_commit = hard_state.commit
        if node.raft is not None and hard_state.commit > obs.commit:
            self._record_commits(node, obs.commit, hard_state.commit)
            obs.commit = hard_state.commit

    def on_restore(self, node: SimNode, snap: Snapshot, digest: str) -> None:
        """A snapshot is the state after a committed index: the one every node had there."""
        index = snap.meta.index
        if index >= len(self.commit_entry_term):
            self.fail("State Machine Safety", f"node {node.id} installs an uncommitted snapshot at {index}")
        if self.commit_entry_term[index] != snap.meta.term:
            self.fail(
                "State Machine Safety",
                f"node {node.id} installs a snapshot at ({index}, term {snap.meta.term}) but "
                f"({index}, term {self.commit_entry_term[index]}) is committed",
            )
        self.on_state(node, index, digest)

    # ---- applying ---------------------------------------------------------------------------
    def on_apply(self, node: SimNode, entry: Entry, applied_before: int) -> None:
        """State Machine Safety: the node applies, in order, the one entry the history has there."""
        raft = node.raft
        if entry.index != applied_before + 1:
            self.fail("apply order", f"node {node.id} applies {entry.index} after {applied_before}")
        if raft is not None and entry.index > raft.log.committed and self.direct_apply_checks:
            self.fail(
                "apply before commit", f"node {node.id} applies {entry.index} > commit {raft.log.committed}"
            )
        record = (entry.term, int(entry.type), entry.data)
        history = self.history
        if entry.index < len(history):
            if history[entry.index] != record:
                self.fail(
                    "State Machine Safety",
                    f"node {node.id} applies {record} at {entry.index}; history has {history[entry.index]}",
                )
        elif entry.index == len(history):
            history.append(record)
            self._record_effect(entry)
            for ack in self.pending_acks.pop(entry.index, ()):
                self._check_ack(ack)
        else:
            self.fail("State Machine Safety", f"node {node.id} applies {entry.index} past the history")

    def on_state(self, node: SimNode, index: int, digest: str) -> None:
        """Replicas that applied the same entries hold the same key-value state."""
        known = self.states.setdefault(index, digest)
        if known != digest:
            self.fail("State Machine Safety", f"node {node.id}'s state after index {index} differs "
                                              "from another node's state there")

    def _record_effect(self, entry: Entry) -> None:
        """The history grows in index order: replay the state machine's once-per-session rule
        to know which client writes took effect, and how each key changed."""
        if entry.type != EntryType.NORMAL or not entry.data:
            return
        cmd = commands.decode(entry.data)
        if cmd is None or not cmd.tracked or cmd.seq <= self.session_seq.get(cmd.session, 0):
            return  # malformed, or a retry (or a stale copy) of a write that already ran
        self.session_seq[cmd.session] = cmd.seq
        if cmd.error():
            return
        self.effective[(cmd.session, cmd.seq)] = entry.index
        if cmd.op == Op.PUT:
            self.key_changes.setdefault(cmd.key, []).append((entry.index, cmd.value))
        elif cmd.op == Op.DELETE:
            self.key_changes.setdefault(cmd.key, []).append((entry.index, None))
        else:
            self.fail("checker", f"the simulated clients send no {cmd.op!r} (index {entry.index})")

    # ---- what clients heard --------------------------------------------------------------------
    def on_ack(self, ack: Ack) -> None:
        """A client heard its write committed at `ack.index`; reads begun later must see it.
        The entry there must be that write: checked now, or when the history reaches it."""
        self.acks.append(ack)
        self.acked_floor = max(self.acked_floor, ack.index)
        if ack.index < len(self.history):
            self._check_ack(ack)
        else:
            self.pending_acks.setdefault(ack.index, []).append(ack)

    def _check_ack(self, ack: Ack) -> None:
        record = self.history[ack.index] if ack.index < len(self.history) else None
        cmd = commands.decode(record[2]) if record is not None and record[2] else None
        if cmd is None or (cmd.session, cmd.seq) != (ack.session, ack.seq):
            self.fail("acknowledged write lost",
                      f"{ack} answered as committed, but index {ack.index} holds {record!r}")

    def on_read(self, node_id: int, key: str, value: str | None, floor: int) -> None:
        """A linearizable read (thesis §6.4) returns the key's state at some index at or past
        every write acknowledged before the read began (`floor`); here is the history to say."""
        self.reads_checked += 1
        changes = self.key_changes.get(key, [])
        at_floor = None
        for index, changed in changes:
            if index > floor:
                if changed == value:
                    return  # a later state, committed by the time the read was served
                continue
            at_floor = changed
        if at_floor != value:
            self.fail("linearizable read",
                      f"node {node_id} read {key}={value!r}, but the key was {at_floor!r} after index "
                      f"{floor}, acknowledged before the read began, and never {value!r} after that")

    def ensure_acks_in_history(self, final: dict[int, dict[str, str]], applied: dict[int, int]) -> None:
        """Every acknowledged write is in the log where its answer said, took effect, and each
        node's final state is the history's (`final`: node -> its keys and values)."""
        for ack in self.acks:
            self._check_ack(ack)
            if (ack.session, ack.seq) not in self.effective:
                self.fail("acknowledged write lost", f"{ack} never took effect")
        for node_id, kv in final.items():
            expected: dict[str, str] = {}
            for key, changes in self.key_changes.items():
                value = None
                for index, changed in changes:
                    if index <= applied[node_id]:
                        value = changed
                if value is not None:
                    expected[key] = value
            if kv != expected:
                self.fail("acknowledged write lost",
                          f"node {node_id}'s final state {sorted(kv.items())[:5]}... differs from the "
                          f"history's {sorted(expected.items())[:5]}...")

    # ---- crash and restart ------------------------------------------------------------------
    def on_crash(self, node: SimNode) -> None:
        obs = self.observation(node.id)
        if obs.leader_term:
            self.current_leaders.pop(node.id, None)
        obs.leader_term = 0

    def on_restart(self, node: SimNode) -> None:
        """A restarted node resumes from exactly its durable commit and applied index."""
        raft = node.raft
        assert raft is not None
        obs = self.observation(node.id)
        hs = node.storage.hard_state
        applied = node.kv.applied_index()
        if applied > max(hs.commit, node.storage.first_index() - 1):
            self.fail("restart", f"node {node.id} applied {applied} beyond durable commit {hs.commit}")
        if raft.log.applied != applied:
            self.fail("restart", f"node {node.id} restarted at applied {raft.log.applied}, durable {applied}")
        self._record_commits(node, 0, raft.log.committed)
        obs.commit = raft.log.committed
        obs.applied = raft.log.applied
        if obs.commit < obs.durable_commit:
            self.fail("commit index decreased", f"node {node.id} restarted at commit {obs.commit}")
