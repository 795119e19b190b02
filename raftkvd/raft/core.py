"""The Raft node as a pure, deterministic state machine (etcd-io/raft raft.go + rawnode.go).

Inputs: `tick`, `step(message)`, `propose`, `propose_conf_change`, `read_index`,
`transfer_leadership`. Outputs: a `Ready` (what to persist, send and apply), then
`advance`. Time is counted in ticks; randomness comes from the injected RNG.
Section numbers refer to the Raft paper (§) and Ongaro's dissertation (thesis §).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from . import quorum
from .config import RaftConfig
from .log import RaftLog
from .messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMeta,
    SoftState,
    StateRole,
    apply_conf_change,
)
from .progress import Progress, ProgressState
from .readonly import ReadOnly
from .storage import CompactedError, Storage

MT = MessageType
CAMPAIGN_TRANSFER = b"transfer"
"""Context of a vote request caused by leadership transfer: it may disrupt a live leader."""

_EARLY_LEADER_MESSAGES = frozenset(
    {MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT, MT.TIMEOUT_NOW, MT.READ_INDEX_RESP}
)
_RESPONSE_TO = {
    MT.VOTE: MT.VOTE_RESP,
    MT.PRE_VOTE: MT.PRE_VOTE_RESP,
}


class ProposalDropped(Exception):
    """The proposal was not accepted: not the leader, a transfer is under way, or a conf change is pending."""


class RNG(Protocol):
    def randrange(self, start: int, stop: int) -> int: ...


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: str
    is_learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    last_index: int
    first_index: int
    leader: int
    role: StateRole
    conf: ConfState
    lead_transferee: int
    progress: dict[int, ProgressStatus]


class RaftNode:
    def __init__(self, config: RaftConfig, storage: Storage, rng: RNG) -> None:
        config.validate()
        self.cfg = config
        self.id = config.id
        self.rng = rng
        self.storage = storage
        self.log = RaftLog(storage)
        hard_state, conf = storage.initial_state()
        if not conf.voters and not conf.learners:
            conf = ConfState(frozenset(config.peers))
        self.conf = conf
        self.term = hard_state.term
        self.vote = hard_state.vote
        if hard_state.commit:
            self.log.commit_to(hard_state.commit)
        if config.applied > self.log.applied:
            self.log.applied_to(min(config.applied, self.log.committed))
        self.prev_hard_state = hard_state
        self.prev_soft_state = SoftState()

        self.role = StateRole.FOLLOWER
        self.leader_id = NONE
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.readonly = ReadOnly()
        self.pending_reads: list[Message] = []
        self.pending_conf_index = 0
        self.lead_transferee = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.need_broadcast = False
        self.snapshot_buffer: tuple[tuple[SnapshotMeta, int, int], bytearray] | None = None
        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election
        self.become_follower(self.term, NONE)
        self._fresh = self.term > 0
        """Restarted: for one election timeout, vote as if a leader were still heard from.
        Before the crash this node may have been in a leader's lease, which leader-lease reads
        count on (thesis §6.4.1); a restart must not let it vote that lease away sooner. (At
        term 0 it never heard from a leader.)"""

    # ==== public driving API =============================================================
    def tick(self) -> None:
        self._tick_role()

    def campaign(self) -> None:
        self._campaign(transfer=False, pre_vote=self.cfg.pre_vote)

    def propose(self, data: bytes) -> int:
        return self._append_proposal(Entry(0, 0, EntryType.NORMAL, data))

    def propose_conf_change(self, cc: ConfChange) -> int:
        if self.role == StateRole.LEADER:
            if self.pending_conf_index > self.log.applied:
                raise ProposalDropped("a membership change is still pending")
            if cc.type == ConfChangeType.REMOVE_NODE and self.conf.voters == {cc.node_id}:
                raise ProposalDropped("cannot remove the last voter")
            if cc.type == ConfChangeType.ADD_LEARNER and cc.node_id in self.conf.voters:
                raise ProposalDropped("demoting a voter to a learner is not supported")
        index = self._append_proposal(Entry(0, 0, EntryType.CONF_CHANGE, cc.encode()))
        self.pending_conf_index = index
        return index

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; it arrives as a ReadState in a later Ready (thesis §6.4)."""
        request = Message(MT.READ_INDEX, to=NONE, frm=self.id, context=ctx)
        if self.role == StateRole.LEADER:
            self._leader_read_index(request)
        elif self.leader_id == NONE:
            raise ProposalDropped("no leader")
        else:
            self._send(Message(MT.READ_INDEX, to=self.leader_id, frm=self.id, context=ctx))

    def transfer_leadership(self, to: int) -> None:
        if self.role == StateRole.LEADER:
            self._leader_transfer(to)
        elif self.leader_id != NONE:
            self._send(Message(MT.TRANSFER_LEADER, to=self.leader_id, frm=self.id, index=to))

    def report_unreachable(self, peer: int) -> None:
        pr = self.prs.get(peer)
        if self.role == StateRole.LEADER and pr and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def step(self, m: Message) -> None:
        if m.term == 0:
            self._step_local(m)
            return
        if m.term > self.term:
            if not self._accept_higher_term(m):
                return
        elif m.term < self.term:
            self._answer_stale_term(m)
            return
        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self._step_role(m)

    def has_ready(self) -> bool:
        return bool(
            self.need_broadcast
            or self.msgs
            or self.msgs_after_persist
            or self.read_states
            or self.log.unstable.entries
            or self.log.unstable.snapshot is not None
            or self.log.has_next_committed_entries()
            or self._hard_state() != self.prev_hard_state
            or self._soft_state() != self.prev_soft_state
        )

    def ready(self) -> Ready:
        if self.need_broadcast:
            self.need_broadcast = False
            if self.role == StateRole.LEADER:
                self._broadcast_append(send_if_empty=False)
        rd = Ready(
            entries=list(self.log.unstable.entries),
            snapshot=self.log.unstable.snapshot,
            committed_entries=self.log.next_committed_entries(self.cfg.max_apply_bytes),
            messages=self.msgs,
            persisted_messages=self.msgs_after_persist,
            read_states=self.read_states,
        )
        soft, hard = self._soft_state(), self._hard_state()
        if soft != self.prev_soft_state:
            rd.soft_state = soft
        if hard != self.prev_hard_state:
            rd.hard_state = hard
        self.msgs, self.msgs_after_persist, self.read_states = [], [], []
        return rd

    def advance(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self.prev_soft_state = rd.soft_state
        if rd.hard_state is not None:
            self.prev_hard_state = rd.hard_state
        if rd.snapshot is not None:
            self.log.stable_snap_to(rd.snapshot.meta.index)
            self.log.applied = max(self.log.applied, rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == StateRole.LEADER:
                self._on_leader_persisted(last)
        for entry in rd.committed_entries:
            self.log.applied_to(entry.index)
            if entry.type == EntryType.CONF_CHANGE:
                self._apply_conf_change(ConfChange.decode(entry.data))

    def status(self) -> Status:
        progress = {
            pid: ProgressStatus(pr.match, pr.next, pr.state.value, pr.is_learner)
            for pid, pr in self.prs.items()
        }
        return Status(
            id=self.id,
            term=self.term,
            vote=self.vote,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            first_index=self.log.first_index(),
            leader=self.leader_id,
            role=self.role,
            conf=self.conf,
            lead_transferee=self.lead_transferee,
            progress=progress,
        )

    # ==== state of the node ==============================================================
    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.leader_id, self.role)

    def _promotable(self) -> bool:
        """Only voters campaign: learners and removed nodes never disrupt the cluster."""
        return self.id in self.conf.voters

    def _quorum_active(self) -> bool:
        active = [pid for pid, pr in self.prs.items() if pr.recent_active or pid == self.id]
        return quorum.has_quorum(self.conf.voters, active)

    def _in_lease(self) -> bool:
        """CheckQuorum lease (thesis §4.2.3): a follower that heard from a leader recently ignores votes."""
        return (
            self.cfg.check_quorum
            and (self.leader_id != NONE or self._fresh)
            and self.election_elapsed < self.cfg.election_tick
        )

    # ==== role transitions ===============================================================
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader_id = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._fresh = False
        self.randomized_election_timeout = self.rng.randrange(
            self.cfg.election_tick, self.cfg.randomized_election_max
        )
        self.lead_transferee = NONE
        self.votes = {}
        self.readonly = ReadOnly()
        self.pending_reads = []
        self.pending_conf_index = 0
        self.need_broadcast = False
        self.prs = {}
        last = self.log.last_index()
        for pid in self.conf.ids():
            self.prs[pid] = Progress(
                match=0,
                next=last + 1,
                max_inflight=self.cfg.max_inflight_msgs,
                is_learner=pid in self.conf.learners,
            )

    def become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.leader_id = leader
        self.role = StateRole.FOLLOWER
        self._step_role = self._step_follower
        self._tick_role = self._tick_election

    def _become_pre_candidate(self) -> None:
        """PreVote (thesis §9.6): ask first, without touching the term, so a returning node can't disrupt."""
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        self.votes = {}
        self.leader_id = NONE
        self.role = StateRole.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = StateRole.CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.leader_id = self.id
        self.role = StateRole.LEADER
        self._step_role = self._step_leader
        self._tick_role = self._tick_heartbeat
        stable_last = self.log.unstable.offset - 1
        for pid, pr in self.prs.items():
            pr.recent_active = True
            if pid == self.id:
                pr.match = stable_last if self.log.unstable.snapshot is None else 0
                pr.become_replicate()
                pr.next = self.log.last_index() + 1
        # Uncommitted conf entries may be in the log: allow no new change until they apply.
        self.pending_conf_index = self.log.last_index()
        # A no-op opens the term so earlier entries can commit (§5.4.2, thesis §6.4).
        self._append_entries([Entry(0, 0, EntryType.NORMAL, b"")])
        self.need_broadcast = True

    # ==== ticks ============================================================================
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self._fresh = False
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.campaign()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                if not self._quorum_active():
                    self.become_follower(self.term, NONE)
                    return
                for pid, pr in self.prs.items():
                    pr.recent_active = pid == self.id
            self.lead_transferee = NONE  # a transfer that did not finish in time is abandoned
        self._tick_snapshot_transfers()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self.readonly.last_pending_context() or b"")

    def _tick_snapshot_transfers(self) -> None:
        """Resend the current chunk when a follower has not acknowledged it for an election timeout."""
        for pid, pr in self.prs.items():
            if pr.transfer is not None:
                pr.transfer.idle_ticks += 1
                if pr.transfer.idle_ticks >= self.cfg.election_tick:
                    pr.transfer.idle_ticks = 0
                    self._send_snapshot_chunk(pid, pr)

    # ==== elections (§5.2) =====================================================================
    def _campaign(self, transfer: bool, pre_vote: bool) -> None:
        if not self._promotable():
            return
        if pre_vote:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.votes[self.id] = True
        if quorum.vote_result(self.conf.voters, self.votes) == quorum.VoteResult.WON:
            self._on_election_won(pre_vote)
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for pid in sorted(self.conf.voters):
            if pid != self.id:
                self._send(
                    Message(
                        vote_type,
                        to=pid,
                        frm=self.id,
                        term=term,
                        index=self.log.last_index(),
                        log_term=self.log.last_term(),
                        context=ctx,
                    )
                )

    def _on_election_won(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(transfer=False, pre_vote=False)
        else:
            self._become_leader()

    def _handle_vote_request(self, m: Message) -> None:
        """Grant at most one vote per term (§5.2), only to an up-to-date log (§5.4.1)."""
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader_id == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        response = _RESPONSE_TO[m.type]
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(response, to=m.frm, frm=self.id, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(response, to=m.frm, frm=self.id, term=self.term, reject=True))

    def _accept_higher_term(self, m: Message) -> bool:
        """§5.1: a higher term makes us a follower, except where PreVote and leases say otherwise."""
        if m.type in (MT.VOTE, MT.PRE_VOTE):
            if m.context != CAMPAIGN_TRANSFER and self._in_lease():
                return False
        if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
            return True  # a pre-vote never changes anyone's term
        if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self.become_follower(m.term, m.frm)
        else:
            self.become_follower(m.term, NONE)
        return True

    def _answer_stale_term(self, m: Message) -> None:
        """Tell a deposed leader its term is over, so it steps down (needed with CheckQuorum/PreVote)."""
        if m.type in (MT.APPEND, MT.HEARTBEAT):
            self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, term=self.term))
        elif m.type == MT.PRE_VOTE:
            self._send(
                Message(MT.PRE_VOTE_RESP, to=m.frm, frm=self.id, term=self.term, reject=True)
            )

    # ==== per-role message handling ============================================================
    def _step_local(self, m: Message) -> None:
        """Term-less messages: reads and transfers forwarded by followers."""
        if m.type == MT.READ_INDEX and self.role == StateRole.LEADER:
            self._leader_read_index(m)
        elif m.type == MT.TRANSFER_LEADER:
            if self.role == StateRole.LEADER:
                self._leader_transfer(m.index)
            elif self.leader_id != NONE:
                self._send(Message(MT.TRANSFER_LEADER, to=self.leader_id, frm=m.frm, index=m.index))

    def _step_follower(self, m: Message) -> None:
        if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self.election_elapsed = 0
            self.leader_id = m.frm
            self._handle_from_leader(m)
        elif m.type == MT.TIMEOUT_NOW:
            self._campaign(transfer=True, pre_vote=False)  # thesis §3.10: skip PreVote, force
        elif m.type == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self.become_follower(m.term, m.frm)  # another node won this term
            self._handle_from_leader(m)
            return
        expected = MT.PRE_VOTE_RESP if self.role == StateRole.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type != expected:
            return
        self.votes.setdefault(m.frm, not m.reject)
        result = quorum.vote_result(self.conf.voters, self.votes)
        if result == quorum.VoteResult.WON:
            self._on_election_won(self.role == StateRole.PRE_CANDIDATE)
        elif result == quorum.VoteResult.LOST:
            self.become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if m.type == MT.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif m.type == MT.HEARTBEAT_RESP:
            self._handle_heartbeat_response(m, pr)
        elif m.type == MT.SNAPSHOT_RESP:
            pr.recent_active = True
            self._handle_snapshot_response(m, pr)

    def _handle_from_leader(self, m: Message) -> None:
        if m.type == MT.APPEND:
            self._handle_append(m)
        elif m.type == MT.HEARTBEAT:
            self.log.commit_to(m.commit)
            self._send(Message(MT.HEARTBEAT_RESP, to=m.frm, frm=self.id, context=m.context))
        else:
            self._handle_snapshot_chunk(m)

    # ==== replication, follower side (§5.3) ==================================================
    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, index=last_new))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self._send(
            Message(
                MT.APPEND_RESP,
                to=m.frm,
                frm=self.id,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_snapshot_chunk(self, m: Message) -> None:
        """Assemble chunks in order; a gap or a stale chunk is answered with the offset we hold.

        Only offset 0 of another stream (snapshot, sender or term) starts a new buffer: a late
        duplicate of chunk 0 must not throw away what this stream has assembled.
        """
        meta = m.snapshot_meta
        if meta is None:
            return
        stream = (meta, m.frm, m.term)
        held = self.snapshot_buffer
        buf = held[1] if held is not None and held[0] == stream else None
        if m.offset == 0 and buf is None:
            buf = bytearray()
        self.snapshot_buffer = (stream, buf) if buf is not None else None
        if buf is None or len(buf) != m.offset:
            have = len(buf) if buf is not None else 0
            self._send(self._snapshot_ack(m, have, reject=True))
            return
        buf.extend(m.snapshot_data)
        if not m.done:
            self._send(self._snapshot_ack(m, len(buf), reject=False))
            return
        self.snapshot_buffer = None
        restored = self._restore(Snapshot(meta, bytes(buf)))
        index = self.log.last_index() if restored else self.log.committed
        self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, index=index))

    def _snapshot_ack(self, m: Message, offset: int, reject: bool) -> Message:
        assert m.snapshot_meta is not None
        return Message(
            MT.SNAPSHOT_RESP, to=m.frm, frm=self.id, index=m.snapshot_meta.index,
            offset=offset, reject=reject,
        )

    def _restore(self, snap: Snapshot) -> bool:
        """Install a snapshot unless our log already covers it (§7); True when installed."""
        if snap.meta.index <= self.log.committed:
            return False
        if self.log.match_term(snap.meta.index, snap.meta.term):
            self.log.commit_to(snap.meta.index)  # fast-forward: we hold these entries already
            return False
        self.log.restore(snap)
        self.conf = snap.meta.conf
        for pid in list(self.prs):
            if pid not in self.conf.ids():
                del self.prs[pid]
        return True

    # ==== replication, leader side ==========================================================
    def _append_proposal(self, entry: Entry) -> int:
        if self.role != StateRole.LEADER:
            raise ProposalDropped("not the leader")
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        self._append_entries([entry])
        self.need_broadcast = True  # replicate in this loop turn, once per peer (not per proposal)
        return self.log.last_index()

    def _append_entries(self, entries: list[Entry]) -> None:
        last = self.log.last_index()
        stamped = [Entry(last + 1 + i, self.term, e.type, e.data) for i, e in enumerate(entries)]
        self.log.append(stamped)

    def _on_leader_persisted(self, last: Entry) -> None:
        """Our own disk write counts toward commitment only once done (thesis §10.2.1)."""
        pr = self.prs.get(self.id)
        if pr is not None and last.term == self.term and pr.maybe_update(last.index):
            self._maybe_commit()

    def _maybe_commit(self) -> bool:
        match = {pid: pr.match for pid, pr in self.prs.items()}
        index = quorum.committed_index(self.conf.voters, match)
        if not self.log.maybe_commit(index, self.term):
            return False
        self._release_pending_reads()
        return True

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()  # it installed a snapshot we have since compacted past: send a newer one
        else:
            pr.inflights.free_le(m.index)
        self._maybe_commit()
        while self._send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to=m.frm, frm=self.id))

    def _handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()  # a lost append must not stall the pipeline forever
        if pr.match < self.log.last_index():
            self._send_append(m.frm)
        if m.context:
            self._ack_read_round(m.frm, m.context)

    def _handle_snapshot_response(self, m: Message, pr: Progress) -> None:
        """Stop-and-wait: only a response that moves the offset forward, or a rejection saying the
        follower lost chunks, sends a chunk; stale or duplicated responses must not start new streams."""
        transfer = pr.transfer
        if transfer is None or m.index != transfer.snapshot.meta.index:
            return
        if m.offset > transfer.offset or (m.reject and m.offset < transfer.offset):
            transfer.offset = m.offset
            transfer.idle_ticks = 0
            self._send_snapshot_chunk(m.frm, pr)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send what `to` is missing, or a snapshot when it is compacted away; False when nothing went out."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        try:
            entries = self.log.entries_from(pr.next, self.cfg.max_size_per_msg)
        except CompactedError:
            entries = None
        if prev_term is None or entries is None:
            return self._start_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        if entries:
            last = entries[-1].index
            if pr.state == ProgressState.REPLICATE:
                pr.optimistic_update(last)
                pr.inflights.add(last)
            else:
                pr.probe_sent = True
        self._send(
            Message(
                MT.APPEND,
                to=to,
                frm=self.id,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(entries),
                commit=self.log.committed,
            )
        )
        return True

    def _start_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        snap = self.storage.snapshot()
        if snap.is_empty():
            return False
        pr.become_snapshot(snap)
        self._send_snapshot_chunk(to, pr)
        return True

    def _send_snapshot_chunk(self, to: int, pr: Progress) -> None:
        transfer = pr.transfer
        if transfer is None:
            return
        data = transfer.snapshot.data
        chunk = data[transfer.offset : transfer.offset + self.cfg.max_size_per_msg]
        self._send(
            Message(
                MT.SNAPSHOT,
                to=to,
                frm=self.id,
                snapshot_meta=transfer.snapshot.meta,
                snapshot_data=chunk,
                offset=transfer.offset,
                done=transfer.offset + len(chunk) >= len(data),
            )
        )

    def _broadcast_append(self, send_if_empty: bool = True) -> None:
        for pid in self.prs:
            if pid != self.id:
                self._send_append(pid, send_if_empty)

    def _broadcast_heartbeat(self, ctx: bytes) -> None:
        for pid, pr in self.prs.items():
            if pid != self.id:
                commit = min(pr.match, self.log.committed)
                self._send(Message(MT.HEARTBEAT, to=pid, frm=self.id, commit=commit, context=ctx))

    # ==== ReadIndex (thesis §6.4) ==============================================================
    def _committed_in_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _leader_read_index(self, request: Message) -> None:
        if not self._committed_in_current_term():
            self.pending_reads.append(request)  # the read index is only safe after our no-op commits
            return
        index = self.log.committed
        if self.conf.voters == {self.id}:
            self._answer_read(request, index)
            return
        self.readonly.add_request(index, request)
        self._ack_read_round(self.id, request.context)
        self._broadcast_heartbeat(request.context)

    def _ack_read_round(self, frm: int, ctx: bytes) -> None:
        acks = self.readonly.recv_ack(frm, ctx)
        if acks is None or not quorum.has_quorum(self.conf.voters, acks):
            return
        for status in self.readonly.advance(ctx):
            self._answer_read(status.request, status.index)

    def _answer_read(self, request: Message, index: int) -> None:
        if request.frm in (NONE, self.id):
            self.read_states.append(ReadState(index, request.context))
        else:
            self._send(
                Message(
                    MT.READ_INDEX_RESP, to=request.frm, frm=self.id, index=index,
                    context=request.context,
                )
            )

    def _release_pending_reads(self) -> None:
        if self.pending_reads and self._committed_in_current_term():
            pending, self.pending_reads = self.pending_reads, []
            for request in pending:
                self._leader_read_index(request)

    # ==== leadership transfer (thesis §3.10) =====================================================
    def _leader_transfer(self, to: int) -> None:
        pr = self.prs.get(to)
        if pr is None or pr.is_learner or to == self.id or to == self.lead_transferee:
            return
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        if pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to=to, frm=self.id))
        else:
            self._send_append(to)

    # ==== membership (thesis §4.1, one server at a time) =========================================
    def _apply_conf_change(self, cc: ConfChange) -> None:
        self.conf = apply_conf_change(self.conf, cc)
        last = self.log.last_index()
        for pid in self.conf.ids():
            if pid not in self.prs:
                pr = Progress(match=0, next=last + 1, max_inflight=self.cfg.max_inflight_msgs)
                pr.recent_active = True
                self.prs[pid] = pr
            self.prs[pid].is_learner = pid in self.conf.learners
        for pid in list(self.prs):
            if pid not in self.conf.ids():
                del self.prs[pid]
        if self.role != StateRole.LEADER:
            return
        if self.id not in self.conf.voters:
            self.become_follower(self.term, NONE)  # a removed leader steps down once removal commits
            return
        if self.lead_transferee not in self.prs:
            self.lead_transferee = NONE
        if self._maybe_commit():
            self.need_broadcast = True

    # ==== output ===============================================================================
    def _send(self, m: Message) -> None:
        if m.type not in (MT.READ_INDEX, MT.TRANSFER_LEADER) and m.term == 0:
            m = _with_term(m, self.term)
        if self.role == StateRole.LEADER and m.type in _EARLY_LEADER_MESSAGES:
            self.msgs.append(m)
        else:
            self.msgs_after_persist.append(m)


def _with_term(m: Message, term: int) -> Message:
    return replace(m, term=term)
