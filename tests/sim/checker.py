"""Safety invariants of Raft, checked by the simulator after every event (paper Figure 3).

The checker keeps a global, append-only view of what the cluster has ever said:
- `leaders`: the leader of each term (Election Safety);
- `registry`: every (index, term) ever persisted, with its data and the term before it,
  so that two logs holding the same (index, term) agree on the whole prefix (Log Matching);
- `commit_term`/`commit_entry_term`: every index known committed, and the term in which it
  was first reported committed, so later leaders must hold it (Leader Completeness);
- `history`/`values`: the one sequence every node's applied entries must be a prefix of
  (State Machine Safety);
- `acked`: client writes reported committed, which must never be lost.
Each check costs O(1) or O(what changed), so it can run after every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkvd.raft.messages import Entry, EntryType, ReadState, Snapshot, StateRole

if TYPE_CHECKING:
    from .cluster import PendingRead, SimNode


class SafetyViolation(AssertionError):
    """A Raft safety property failed; the message names the property and the evidence."""


@dataclass(slots=True)
class NodeObservation:
    """What the checker last saw of one incarnation of a node."""

    commit: int = 0
    applied: int = 0
    leader_term: int = 0
    durable_commit: int = 0
    durable_applied: int = 0


class Checker:
    direct_apply_checks = True
    """Also check applied <= commit directly; tests switch it off to show that State Machine
    Safety alone catches a core that applies before commit."""

    def __init__(self, nodes: dict[int, SimNode]) -> None:
        self.nodes = nodes
        self.leaders: dict[int, int] = {}
        self.current_leaders: dict[int, int] = {}
        self.registry: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.commit_entry_term: list[int] = [0]
        self.commit_term: list[int] = [0]
        self.history: list[tuple[int, int, bytes] | None] = [None]
        self.values: list[bytes] = []
        self.value_pos: dict[bytes, int] = {}
        self.acked: list[tuple[bytes, int]] = []
        self.acked_max_index = 0
        self.acked_max_pos = -1
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

    # ---- persistence ----------------------------------------------------------------------
    def on_persist(self, node: SimNode, entries: list[Entry]) -> None:
        """Log Matching, inductively: each (index, term) is one entry with one predecessor term."""
        storage = node.storage
        first = storage.first_index()
        registry = self.registry
        prev_term = None
        for entry in entries:
            if entry.index < first:
                continue
            if prev_term is None:
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

    def on_hard_state(self, node: SimNode, commit: int) -> None:
        obs = self.observation(node.id)
        if commit < obs.durable_commit:
            self.fail(
                "commit index decreased", f"node {node.id} persisted commit {commit} < {obs.durable_commit}"
            )
        obs.durable_commit = commit

    def on_restore(self, node: SimNode, snap: Snapshot, values: list[bytes]) -> None:
        """A snapshot carries an applied sequence: it must be a prefix of the one history."""
        index = snap.meta.index
        if index < len(self.commit_entry_term) and self.commit_entry_term[index] != snap.meta.term:
            self.fail(
                "State Machine Safety",
                f"node {node.id} installs a snapshot at ({index}, term {snap.meta.term}) but "
                f"({index}, term {self.commit_entry_term[index]}) is committed",
            )
        if index >= len(self.commit_entry_term):
            self.fail("State Machine Safety", f"node {node.id} installs an uncommitted snapshot at {index}")
        if values != self.values[: len(values)]:
            self.fail("State Machine Safety", f"node {node.id} restores a sequence that is not a prefix")

    # ---- applying ---------------------------------------------------------------------------
    def on_apply(self, node: SimNode, entry: Entry, position: int) -> None:
        """State Machine Safety: the node applies, in order, the one entry the history has there."""
        raft = node.raft
        assert raft is not None
        if entry.index != node.app.applied + 1:
            self.fail("apply order", f"node {node.id} applies {entry.index} after {node.app.applied}")
        if entry.index > raft.log.committed and self.direct_apply_checks:
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
        else:
            self.fail("State Machine Safety", f"node {node.id} applies {entry.index} past the history")
        if entry.type == EntryType.NORMAL and entry.data:
            values = self.values
            if position < len(values):
                if values[position] != entry.data:
                    self.fail(
                        "State Machine Safety",
                        f"node {node.id} applies value {entry.data!r} at position {position}; "
                        f"history has {values[position]!r}",
                    )
            elif position == len(values):
                values.append(entry.data)
                self.value_pos[entry.data] = position
            else:
                self.fail("State Machine Safety", f"node {node.id} skips values before {position}")

    def on_ack(self, value: bytes, index: int) -> None:
        """A client heard `value` committed at `index`."""
        self.acked.append((value, index))
        self.acked_max_index = max(self.acked_max_index, index)
        self.acked_max_pos = max(self.acked_max_pos, self.value_pos[value])

    def on_read(self, node: SimNode, rs: ReadState, read: PendingRead) -> None:
        """Linearizable read (thesis §6.4): the read index covers every write acknowledged before the
        read was issued, and the state served includes them."""
        if rs.index < read.acked_max_index:
            self.fail(
                "ReadIndex",
                f"node {node.id} read {rs.context!r} at index {rs.index}, but index "
                f"{read.acked_max_index} was acknowledged before the read was issued",
            )
        values = node.app.values
        pos = read.acked_max_pos
        if pos >= 0 and (len(values) <= pos or values[pos] != self.values[pos]):
            self.fail(
                "ReadIndex",
                f"node {node.id} served read {rs.context!r} without acknowledged write {self.values[pos]!r}",
            )

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
        if node.app.applied > max(hs.commit, node.storage.first_index() - 1):
            self.fail(
                "restart", f"node {node.id} applied {node.app.applied} beyond durable commit {hs.commit}"
            )
        if raft.log.applied != node.app.applied:
            self.fail(
                "restart",
                f"node {node.id} restarted at applied {raft.log.applied}, durable {node.app.applied}",
            )
        self._record_commits(node, 0, raft.log.committed)
        obs.commit = raft.log.committed
        obs.applied = raft.log.applied
        if obs.commit < obs.durable_commit:
            self.fail("commit index decreased", f"node {node.id} restarted at commit {obs.commit}")
