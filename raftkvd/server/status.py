"""The one status object of a node: behind raftctl status, /cluster, /health and /metrics
(REFERENCES §5: render them from one object so that they never disagree)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..raft.messages import NONE, StateRole

if TYPE_CHECKING:
    from .replica import Replica


def replica_status(replica: Replica) -> dict[str, Any]:
    st = replica.core.status()
    own = replica.membership.addresses.get(replica.id, {})
    member = replica.membership.is_member()
    info: dict[str, Any] = {
        "id": replica.id,
        "endpoint": own.get("client", ""),
        "raft": own.get("raft", ""),
        "http": own.get("http", ""),
        "role": st.role.value,
        "term": st.term,
        "leader_id": st.leader,
        "last_index": st.last_index,
        "first_index": st.first_index,
        "commit": st.commit,
        "applied": replica.sm.applied_index(),
        "keys": replica.sm.key_count(),
        "healthy": st.leader != NONE and member,
        "member": member,
        "ready": replica.ready(),
        "pending_proposals": len(replica.writes.pending),
        "voters": sorted(st.conf.voters),
        "learners": sorted(st.conf.learners),
        "leader_changes": replica.leader_changes,
        "db_used_bytes": replica.store.used_bytes(),
        "db_size_bytes": replica.store.map_size,
        "no_space": replica.no_space(),
    }
    if st.role == StateRole.LEADER:
        info["progress"] = {str(pid): p.match for pid, p in st.progress.items()}
    return info
