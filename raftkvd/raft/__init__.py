"""The consensus core: a pure, deterministic Raft state machine (see API.md)."""

from .config import RaftConfig
from .core import ProposalDropped, RaftNode, Status
from .storage import MemoryStorage, Storage

__all__ = ["MemoryStorage", "ProposalDropped", "RaftConfig", "RaftNode", "Status", "Storage"]
