"""`raftkvd recover --force-new-cluster`: disaster recovery when a majority is lost for good
(SPEC §3), as etcd's --force-new-cluster.

A cluster that lost most of its voters can never commit again. On a stopped survivor this
keeps every entry of its log: each is applied (what was committed anywhere is in the log of
at least one member of every majority, so the most advanced survivor has it; entries that
were never committed are kept too, as etcd keeps them), the log is compacted to its last
index, and the membership becomes this node alone. Started again, it elects itself and
serves; the others join back as new, empty nodes (`raftctl member add`, `raftkvd run --join`).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from ..errors import RaftKVError
from ..kv.statemachine import KVStateMachine
from ..raft.messages import ConfState, HardState, Snapshot, SnapshotMeta
from ..settings import Settings
from ..storage.lmdbenv import LmdbEnv
from ..storage.logstore import LogStore

APPLY_BATCH = 1000


class RecoverError(RaftKVError):
    """Why nothing was changed; one line for the user."""


@dataclass(frozen=True, slots=True)
class Recovered:
    index: int
    term: int
    keys: int
    applied_before: int
    former_members: list[int]


def recover(settings: Settings) -> Recovered:
    node = settings.node
    if not (node.data_dir / "data.mdb").is_file():
        raise RecoverError(f"no data in {node.data_dir}: recover works on an existing node's data dir")
    _check_stopped(settings)
    with LmdbEnv(node.data_dir, settings.cluster.map_size_bytes) as env:
        sm = KVStateMachine(env)
        log = LogStore(env, sm)
        hard_state, former = log.initial_state()
        applied_before = sm.applied_index()
        last = log.last_index()  # never below the applied index: the log covers it
        last_term = log.term(last)
        conf = ConfState(frozenset({node.id}))
        with env.write() as batch:
            for lo in range(applied_before + 1, last + 1, APPLY_BATCH):
                sm.apply(log.entries(lo, min(lo + APPLY_BATCH, last + 1)), batch)
            sm.force_membership(conf, {node.id: settings.cluster.addresses()[node.id]}, batch)
            seal = Snapshot(SnapshotMeta(last, last_term, conf))
            log.save(HardState(hard_state.term, 0, last), [], seal, batch=batch)
        return Recovered(last, last_term, sm.key_count(), applied_before, sorted(former.ids()))


def _check_stopped(settings: Settings) -> None:
    """A running node holds its raft port: refuse to pull its data dir from under it."""
    host, _, port = settings.node.raft.removeprefix("tcp://").rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RecoverError(f"node {settings.node.id} seems to be running (its raft address "
                                   f"{settings.node.raft} is in use): stop it first") from None
