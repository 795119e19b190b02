"""msgpack encoding of the Raft messages between nodes (SPEC §7: versioned, malformed = dropped).

A Raft message is one msgpack array in a fixed field order, version first, so a
heartbeat costs a few dozen bytes and decoding is a single unpack plus cheap
`type(x) is int` checks. Decoding trusts nothing: any input either decodes to a
well-formed value or raises `FrameError`, so a hostile or buggy peer can never
crash a node (SPEC §6).

Message layout (WIRE_VERSION = 1):
    [version, type, to, frm, term, log_term, index, entries, commit, reject,
     reject_hint, context, snapshot_meta, snapshot_data, offset, done]
    entry:         [index, term, type, data]
    snapshot_meta: [index, term, voters, learners] or nil

Besides Raft messages, one notice of the node layer (not the core's): a member tells a node
that the log removed it, as etcd's peers answer a removed member, so that a node which missed
its own removal (stopped, partitioned) stops instead of campaigning for ever:
    [version, REMOVED_NOTICE, to, frm, index]      index: the entry that removed `to`
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from raftkv.frames import FrameError, check_version, unpack
from raftkvd.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)

WIRE_VERSION = 1
MAX_FRAME_BYTES = 65 * 1024 * 1024
"""Largest frame accepted: a maximal value (64 MiB, config's ceiling) plus key and framing."""

_MESSAGE_FIELDS = 16
_UINT_FIELDS = ("to", "frm", "term", "log_term", "index", "commit", "reject_hint", "offset")
_NOTICE_FIELDS = 5
REMOVED_NOTICE = 100
"""The frame type of a RemovedNotice; no MessageType uses it."""
_MESSAGE_TYPES = {t.value: t for t in MessageType}
_ENTRY_TYPES = {t.value: t for t in EntryType}


@dataclass(frozen=True, slots=True)
class RemovedNotice:
    """`frm` applied the entry at `index` that removed `to` from the cluster."""

    to: int
    frm: int
    index: int


def encode_notice(notice: RemovedNotice) -> bytes:
    return msgpack.packb([WIRE_VERSION, REMOVED_NOTICE, notice.to, notice.frm, notice.index])


def encode_message(msg: Message) -> bytes:
    """The wire form of `msg`; the inverse of `decode_message`."""
    meta = msg.snapshot_meta
    return msgpack.packb(
        [
            WIRE_VERSION,
            int(msg.type),
            msg.to,
            msg.frm,
            msg.term,
            msg.log_term,
            msg.index,
            [[e.index, e.term, int(e.type), e.data] for e in msg.entries],
            msg.commit,
            msg.reject,
            msg.reject_hint,
            msg.context,
            None if meta is None else _encode_meta(meta),
            msg.snapshot_data,
            msg.offset,
            msg.done,
        ]
    )


def _encode_meta(meta: SnapshotMeta) -> list[Any]:
    return [meta.index, meta.term, sorted(meta.conf.voters), sorted(meta.conf.learners)]


def decode_frame(data: bytes) -> Message | RemovedNotice:
    """Parse one peer frame; raises FrameError for anything but a well-formed one."""
    obj = unpack(data, MAX_FRAME_BYTES)
    if type(obj) is not list or not obj:
        raise FrameError("message is not a non-empty array")
    check_version(obj[0], WIRE_VERSION)
    if len(obj) > 1 and obj[1] == REMOVED_NOTICE and type(obj[1]) is int:
        return _decode_notice(obj)
    return _decode_message(obj)


def decode_message(data: bytes) -> Message:
    """Parse one Raft message; raises FrameError for anything else."""
    frame = decode_frame(data)
    if not isinstance(frame, Message):
        raise FrameError("a removed notice, not a Raft message")
    return frame


def _decode_notice(obj: list[Any]) -> RemovedNotice:
    if len(obj) != _NOTICE_FIELDS:
        raise FrameError(f"removed notice has {len(obj)} fields, expected {_NOTICE_FIELDS}")
    _, _, to, frm, index = obj
    if any(type(v) is not int or v <= 0 for v in (to, frm, index)):
        raise FrameError("removed notice fields must be positive integers")
    return RemovedNotice(to, frm, index)


def _decode_message(obj: list[Any]) -> Message:
    if len(obj) != _MESSAGE_FIELDS:
        raise FrameError(f"message has {len(obj)} fields, expected {_MESSAGE_FIELDS}")
    (
        _,
        mtype,
        to,
        frm,
        term,
        log_term,
        index,
        raw_entries,
        commit,
        reject,
        reject_hint,
        context,
        raw_meta,
        snapshot_data,
        offset,
        done,
    ) = obj
    _check_uints((to, frm, term, log_term, index, commit, reject_hint, offset))
    if type(mtype) is not int or mtype not in _MESSAGE_TYPES:
        raise FrameError(f"unknown message type {mtype!r}")
    if to == 0 or frm == 0:
        raise FrameError("message must name both its sender and its receiver")
    if type(reject) is not bool or type(done) is not bool:
        raise FrameError("reject and done must be booleans")
    if type(context) is not bytes or type(snapshot_data) is not bytes:
        raise FrameError("context and snapshot_data must be binary")
    entries = _decode_entries(raw_entries)
    if mtype == MessageType.APPEND:
        _check_append_entries(entries, index, log_term, term)
    meta = None if raw_meta is None else _decode_meta(raw_meta)
    if meta is None and mtype == MessageType.SNAPSHOT:
        raise FrameError("snapshot message without snapshot metadata")
    return Message(
        type=_MESSAGE_TYPES[mtype],
        to=to,
        frm=frm,
        term=term,
        log_term=log_term,
        index=index,
        entries=entries,
        commit=commit,
        reject=reject,
        reject_hint=reject_hint,
        context=context,
        snapshot_meta=meta,
        snapshot_data=snapshot_data,
        offset=offset,
        done=done,
    )


def _check_uints(values: tuple[Any, ...]) -> None:
    """Fast path: one loop; the failing field is named only when there is one."""
    for value in values:
        if type(value) is not int or value < 0:
            break
    else:
        return
    for name, value in zip(_UINT_FIELDS, values, strict=True):
        if type(value) is not int or value < 0:
            raise FrameError(f"{name} must be a non-negative integer, got {value!r}")


def _decode_entries(raw: Any) -> tuple[Entry, ...]:
    if type(raw) is not list:
        raise FrameError("entries must be an array")
    return tuple(_decode_entry(e) for e in raw)


def _decode_entry(raw: Any) -> Entry:
    if type(raw) is not list or len(raw) != 4:
        raise FrameError(f"entry must be [index, term, type, data], got {raw!r:.80}")
    index, term, etype, data = raw
    if type(index) is not int or type(term) is not int or index < 0 or term < 0:
        raise FrameError(f"entry index and term must be non-negative integers: {raw!r:.80}")
    if type(etype) is not int or etype not in _ENTRY_TYPES:
        raise FrameError(f"unknown entry type {etype!r}")
    if type(data) is not bytes:
        raise FrameError("entry data must be binary")
    return Entry(index, term, _ENTRY_TYPES[etype], data)


def _check_append_entries(entries: tuple[Entry, ...], prev: int, prev_term: int, term: int) -> None:
    """Appended entries follow `prev` with consecutive indexes and terms that never
    decrease nor pass the leader's (Raft §5.3 Log Matching); anything else would
    corrupt the follower's log."""
    last_term = prev_term
    for offset, entry in enumerate(entries, start=1):
        if entry.index != prev + offset:
            raise FrameError(f"append entry {entry.index} does not follow index {prev + offset - 1}")
        if not last_term <= entry.term <= term:
            raise FrameError(f"append entry {entry.index} has out-of-order term {entry.term}")
        last_term = entry.term


def _decode_meta(raw: Any) -> SnapshotMeta:
    if type(raw) is not list or len(raw) != 4:
        raise FrameError("snapshot meta must be [index, term, voters, learners]")
    index, term, voters, learners = raw
    if type(index) is not int or type(term) is not int or index < 0 or term < 0:
        raise FrameError("snapshot index and term must be non-negative integers")
    voter_set, learner_set = _node_ids(voters, "voters"), _node_ids(learners, "learners")
    if voter_set & learner_set:
        raise FrameError("a node cannot be both voter and learner")
    return SnapshotMeta(index, term, ConfState(voter_set, learner_set))


def _node_ids(raw: Any, name: str) -> frozenset[int]:
    if type(raw) is not list or any(type(i) is not int or i <= 0 for i in raw):
        raise FrameError(f"snapshot {name} must be an array of positive node ids")
    return frozenset(raw)
