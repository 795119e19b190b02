"""Values that flow in and out of the consensus core.

Everything here is an immutable value: the core never shares mutable state with
its caller, so the caller may persist, send or log these objects freely.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

NONE = 0
"""Node id 0 means "nobody" (no vote, no known leader)."""


class MessageType(enum.IntEnum):
    """Every message kind the core exchanges; the values are part of the wire format."""

    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    SNAPSHOT_RESP = 10
    TIMEOUT_NOW = 11
    READ_INDEX = 12
    READ_INDEX_RESP = 13
    TRANSFER_LEADER = 14
    PROPOSE = 15


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size, used for the per-message byte limit."""
        return len(self.data) + 16


@dataclass(frozen=True, slots=True)
class HardState:
    """What Raft must never forget across a restart (Figure 2: currentTerm, votedFor, plus commit)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def ids(self) -> frozenset[int]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One-server-at-a-time membership change (thesis §4.1).

    `context` is opaque to the core; the daemon stores the new member's addresses in it.
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return json.dumps(
            {"type": int(self.type), "node_id": self.node_id, "context": self.context.hex()}
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        obj = json.loads(data)
        return cls(ConfChangeType(obj["type"]), int(obj["node_id"]), bytes.fromhex(obj["context"]))


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The membership after `cc`; shared by the core and the daemon so both agree."""
    voters, learners = set(conf.voters), set(conf.learners)
    if cc.type == ConfChangeType.ADD_NODE:
        learners.discard(cc.node_id)
        voters.add(cc.node_id)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        if cc.node_id not in voters:
            learners.add(cc.node_id)
    else:
        voters.discard(cc.node_id)
        learners.discard(cc.node_id)
    return ConfState(frozenset(voters), frozenset(learners))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A point-in-time image of the application state covering the log up to `meta.index`."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft RPC; one flat shape for all kinds, as in etcd's raftpb.Message.

    Field use by kind:
    - APPEND: index/log_term = the entry preceding `entries`; commit = leader commit.
    - APPEND_RESP: index = last matching index (accept) or rejected index (reject);
      reject_hint/log_term = a (index, term) guess for fast backtracking (thesis §5.3).
    - VOTE/PRE_VOTE: index/log_term = the candidate's last entry.
    - HEARTBEAT: commit = min(leader commit, follower match); context = read-index round.
    - SNAPSHOT: snapshot meta plus one chunk `snapshot_data` at `offset`; `done` on the last.
    - READ_INDEX(_RESP): context identifies the request; index = the read index.
    """

    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot_meta: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    offset: int = 0
    done: bool = False


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the applied index reaches `index`."""

    index: int
    context: bytes


class StateRole(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting (not persisted)."""

    leader: int = NONE
    role: StateRole = StateRole.FOLLOWER


@dataclass(slots=True)
class Ready:
    """The I/O the caller must perform, in this order:

    1. send `messages` (leader replication: safe before persisting, thesis §10.2.1);
    2. persist `snapshot` (if any), `entries` and `hard_state` (if any) durably, in one fsync;
    3. send `persisted_messages` (votes and acknowledgements vouch for what is on disk);
    4. apply `committed_entries`, serve `read_states`;
    5. call `advance(ready)`.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    persisted_messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def must_sync(self) -> bool:
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None
