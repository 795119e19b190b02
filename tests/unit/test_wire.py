"""raftkvd.net.peerwire: every message round-trips; every malformed frame raises FrameError, nothing else."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgpack_strategies import msgpack_scalars, msgpack_values

from raftkv.frames import FrameError
from raftkvd.net.peerwire import (
    MAX_FRAME_BYTES,
    REMOVED_NOTICE,
    WIRE_VERSION,
    RemovedNotice,
    decode_frame,
    decode_message,
    encode_message,
    encode_notice,
)
from raftkvd.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)

UINT64_MAX = 2**64 - 1
uints = st.integers(min_value=0, max_value=UINT64_MAX)
small_uints = st.integers(min_value=0, max_value=1_000_000)
node_ids = st.integers(min_value=1, max_value=2**63 - 1)
blobs = st.binary(max_size=64)
entries = st.builds(Entry, index=uints, term=uints, type=st.sampled_from(EntryType), data=blobs)


@st.composite
def snapshot_metas(draw: st.DrawFn) -> SnapshotMeta:
    voters = draw(st.frozensets(node_ids, max_size=5))
    learners = draw(st.frozensets(node_ids, max_size=3)) - voters
    return SnapshotMeta(draw(uints), draw(uints), ConfState(voters, learners))


@st.composite
def append_entries(draw: st.DrawFn, prev: int, prev_term: int, term: int) -> tuple[Entry, ...]:
    """Entries that follow `prev` the way a leader sends them: consecutive, terms in order."""
    terms = sorted(draw(st.lists(st.integers(prev_term, term), max_size=5)))
    kinds = st.sampled_from(EntryType)
    return tuple(Entry(prev + i, t, draw(kinds), draw(blobs)) for i, t in enumerate(terms, start=1))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    mtype = draw(st.sampled_from(MessageType))
    term = draw(small_uints)
    log_term = draw(st.integers(0, term))
    index = draw(small_uints)
    if mtype == MessageType.APPEND:
        ents = draw(append_entries(index, log_term, term))
    else:
        ents = tuple(draw(st.lists(entries, max_size=4)))
    meta = draw(snapshot_metas() if mtype == MessageType.SNAPSHOT else st.none() | snapshot_metas())
    return Message(
        type=mtype,
        to=draw(node_ids),
        frm=draw(node_ids),
        term=term,
        log_term=log_term,
        index=index,
        entries=ents,
        commit=draw(uints),
        reject=draw(st.booleans()),
        reject_hint=draw(uints),
        context=draw(blobs),
        snapshot_meta=meta,
        snapshot_data=draw(blobs),
        offset=draw(uints),
        done=draw(st.booleans()),
    )


def sample_message() -> Message:
    return Message(
        type=MessageType.APPEND,
        to=2,
        frm=1,
        term=5,
        log_term=4,
        index=10,
        entries=(Entry(11, 4, EntryType.NORMAL, b"a"), Entry(12, 5, EntryType.CONF_CHANGE, b"b")),
        commit=9,
        context=b"ctx",
    )


def wire_fields(msg: Message) -> list[Any]:
    """The decoded msgpack array of `msg`, to be corrupted one field at a time."""
    return msgpack.unpackb(encode_message(msg))


def field_at(name: str) -> int:
    order = [
        "version", "type", "to", "frm", "term", "log_term", "index", "entries", "commit",
        "reject", "reject_hint", "context", "snapshot_meta", "snapshot_data", "offset", "done",
    ]  # fmt: skip
    return order.index(name)


def with_field(name: str, value: Any, msg: Message | None = None) -> bytes:
    fields = wire_fields(msg or sample_message())
    fields[field_at(name)] = value
    return msgpack.packb(fields)


def decodes_or_rejects(data: Any) -> None:
    """The decoder's whole contract: a Message or a FrameError, never another exception."""
    try:
        assert isinstance(decode_message(data), Message)
    except FrameError:
        pass


# --- round trips -----------------------------------------------------------------------


@given(messages())
@settings(max_examples=500)
def test_every_message_round_trips_exactly(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@pytest.mark.parametrize("mtype", list(MessageType))
def test_each_message_type_round_trips_with_defaults(mtype: MessageType) -> None:
    meta = SnapshotMeta(7, 3, ConfState(frozenset({1, 2}), frozenset({3})))
    msg = Message(mtype, to=3, frm=1, snapshot_meta=meta if mtype == MessageType.SNAPSHOT else None)
    decoded = decode_message(encode_message(msg))
    assert decoded == msg
    assert type(decoded.type) is MessageType


def test_decoded_entries_carry_entry_type_enums() -> None:
    decoded = decode_message(encode_message(sample_message()))
    assert [type(e.type) for e in decoded.entries] == [EntryType, EntryType]
    assert isinstance(decoded.entries, tuple)


def test_heartbeat_encoding_is_compact() -> None:
    heartbeat = Message(MessageType.HEARTBEAT, to=2, frm=1, term=3, commit=100)
    assert len(encode_message(heartbeat)) < 32


def test_frame_at_the_size_limit_is_not_rejected_for_size() -> None:
    data = b"\x00" * MAX_FRAME_BYTES
    with pytest.raises(FrameError, match="not a non-empty array|not msgpack"):
        decode_message(data)


# --- malformed frames ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack code
        b"\x9f",  # array header without items
        msgpack.packb([1, 2]) + b"\x00",  # trailing bytes
        b"\xa1\xff",  # str with invalid UTF-8
        b"\x81\x90\x01",  # map with an array key
        b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
        b"\x91" * 100_000,  # nesting deeper than any stack
    ],
    ids=["empty", "reserved", "truncated", "trailing", "bad-utf8", "list-key", "huge-array", "deep"],
)
def test_bytes_that_are_not_msgpack_raise_wire_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_message(data)


@pytest.mark.parametrize("data", ["text", None, 42, ["list"]])
def test_non_bytes_input_raises_wire_error(data: Any) -> None:
    with pytest.raises(FrameError):
        decode_message(data)


def test_frame_over_the_size_limit_is_rejected_before_parsing() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        decode_message(b"\x00" * (MAX_FRAME_BYTES + 1))


@pytest.mark.parametrize("obj", [{}, {"type": 1}, 7, "message", None, [], (), b"\x01"])
def test_frame_that_is_not_a_message_array_raises_wire_error(obj: Any) -> None:
    with pytest.raises(FrameError):
        decode_message(msgpack.packb(obj))


@pytest.mark.parametrize("version", [0, 2, WIRE_VERSION + 100, "1", True, None, 1.0, -1])
def test_unknown_wire_version_raises_wire_error(version: Any) -> None:
    with pytest.raises(FrameError, match="version"):
        decode_message(with_field("version", version))


def test_newer_version_is_reported_as_version_even_with_other_layout() -> None:
    with pytest.raises(FrameError, match="version 2"):
        decode_message(msgpack.packb([2, "a", "different", "layout"]))


@pytest.mark.parametrize("extra", [-1, 1])
def test_wrong_field_count_raises_wire_error(extra: int) -> None:
    fields = wire_fields(sample_message())
    fields = fields[:extra] if extra < 0 else [*fields, 0]
    with pytest.raises(FrameError, match="fields"):
        decode_message(msgpack.packb(fields))


@pytest.mark.parametrize("mtype", [0, 16, 255, -1, "append", True, 1.0, None])
def test_unknown_message_type_raises_wire_error(mtype: Any) -> None:
    with pytest.raises(FrameError):
        decode_message(with_field("type", mtype))


@pytest.mark.parametrize(
    "name", ["to", "frm", "term", "log_term", "index", "commit", "reject_hint", "offset"]
)
@pytest.mark.parametrize("value", [-1, -(2**63), 1.5, "3", True, None, b"\x01", [1]])
def test_number_field_of_wrong_type_or_sign_raises_wire_error_naming_it(name: str, value: Any) -> None:
    with pytest.raises(FrameError, match=name):
        decode_message(with_field(name, value))


@pytest.mark.parametrize("name", ["to", "frm"])
def test_message_without_sender_or_receiver_raises_wire_error(name: str) -> None:
    with pytest.raises(FrameError, match="sender"):
        decode_message(with_field(name, 0))


@pytest.mark.parametrize("name", ["reject", "done"])
@pytest.mark.parametrize("value", [0, 1, "true", None])
def test_flag_that_is_not_a_boolean_raises_wire_error(name: str, value: Any) -> None:
    with pytest.raises(FrameError, match="boolean"):
        decode_message(with_field(name, value))


@pytest.mark.parametrize("name", ["context", "snapshot_data"])
@pytest.mark.parametrize("value", ["text", None, 0, [1]])
def test_binary_field_of_wrong_type_raises_wire_error(name: str, value: Any) -> None:
    with pytest.raises(FrameError, match="binary"):
        decode_message(with_field(name, value))


@pytest.mark.parametrize(
    "raw_entries",
    [
        None,
        {"1": 2},
        [None],
        [[11, 4, 0]],  # too short
        [[11, 4, 0, b"", 0]],  # too long
        [[-11, 4, 0, b""]],
        [[11, -4, 0, b""]],
        [[11.0, 4, 0, b""]],
        [[11, True, 0, b""]],
        [[11, 4, 2, b""]],  # unknown entry type
        [[11, 4, "normal", b""]],
        [[11, 4, 0, "text"]],
        [[11, 4, 0, None]],
    ],
)
def test_entries_of_wrong_shape_raise_wire_error(raw_entries: Any) -> None:
    with pytest.raises(FrameError):
        decode_message(with_field("entries", raw_entries))


@pytest.mark.parametrize(
    "raw_entries",
    [
        [[12, 4, 0, b""]],  # gap after prev index 10
        [[10, 4, 0, b""]],  # overlaps prev
        [[11, 4, 0, b""], [11, 4, 0, b""]],  # repeated index
        [[11, 5, 0, b""], [12, 4, 0, b""]],  # term goes down
        [[11, 3, 0, b""]],  # term below the previous entry's (log_term 4)
        [[11, 6, 0, b""]],  # term above the leader's (5)
    ],
)
def test_append_entries_that_break_log_matching_raise_wire_error(raw_entries: Any) -> None:
    with pytest.raises(FrameError, match="append entry"):
        decode_message(with_field("entries", raw_entries))


def test_non_append_messages_may_carry_unnumbered_entries() -> None:
    """Forwarded proposals carry entries the leader numbers itself."""
    msg = Message(MessageType.PROPOSE, to=1, frm=2, entries=(Entry(0, 0, data=b"x"),) * 2)
    assert decode_message(encode_message(msg)) == msg


def test_snapshot_message_without_meta_raises_wire_error() -> None:
    msg = Message(MessageType.SNAPSHOT, to=2, frm=1)
    with pytest.raises(FrameError, match="snapshot"):
        decode_message(encode_message(msg))


@pytest.mark.parametrize(
    "raw_meta",
    [
        7,
        [],
        [1, 1, [1]],
        [1, 1, [1], [], 0],
        [-1, 1, [1], []],
        [1, "1", [1], []],
        [1, 1, "voters", []],
        [1, 1, [0], []],
        [1, 1, [-2], []],
        [1, 1, [True], []],
        [1, 1, [1], [1.5]],
        [1, 1, [1, 2], [2]],  # voter and learner at once
    ],
)
def test_snapshot_meta_of_wrong_shape_raises_wire_error(raw_meta: Any) -> None:
    msg = Message(MessageType.SNAPSHOT, to=2, frm=1, snapshot_meta=SnapshotMeta(1, 1))
    with pytest.raises(FrameError):
        decode_message(with_field("snapshot_meta", raw_meta, msg))


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb(msgpack.ExtType(1, b"x")),
        b"\xd6\xff\x00\x00\x00\x01",  # the timestamp extension
    ],
    ids=["ext", "timestamp"],
)
def test_msgpack_extension_types_raise_wire_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_message(data)
    fields = wire_fields(sample_message())
    fields[field_at("context")] = msgpack.unpackb(data)
    with pytest.raises(FrameError):
        decode_message(msgpack.packb(fields))


# --- fuzzing ---------------------------------------------------------------------------

field_values = msgpack_scalars | st.lists(msgpack_scalars | st.lists(msgpack_scalars, max_size=4), max_size=4)


@given(st.binary(max_size=512))
@settings(max_examples=1000)
def test_random_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    decodes_or_rejects(data)


@given(msgpack_values)
@settings(max_examples=500)
def test_random_msgpack_objects_decode_or_raise_wire_error(obj: Any) -> None:
    decodes_or_rejects(msgpack.packb(obj))


@given(st.lists(field_values, min_size=15, max_size=15))
@settings(max_examples=500)
def test_random_current_version_arrays_decode_or_raise_wire_error(rest: list[Any]) -> None:
    decodes_or_rejects(msgpack.packb([WIRE_VERSION, *rest]))


@given(messages(), st.data())
@settings(max_examples=500)
def test_corrupted_valid_frames_decode_or_raise_wire_error(msg: Message, data: st.DataObject) -> None:
    frame = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(frame) - 1))
        frame[position] = data.draw(st.integers(0, 255))
    decodes_or_rejects(bytes(frame))


@given(messages(), st.data())
@settings(max_examples=300)
def test_one_wrong_field_in_a_valid_frame_decodes_or_raises_wire_error(
    msg: Message, data: st.DataObject
) -> None:
    fields = wire_fields(msg)
    fields[data.draw(st.integers(0, len(fields) - 1))] = data.draw(msgpack_values)
    decodes_or_rejects(msgpack.packb(fields))


def test_a_removed_notice_round_trips_and_is_no_raft_message() -> None:
    notice = RemovedNotice(to=3, frm=1, index=12345)
    assert decode_frame(encode_notice(notice)) == notice
    assert isinstance(decode_frame(encode_message(sample_message())), Message)
    with pytest.raises(FrameError, match="not a Raft message"):
        decode_message(encode_notice(notice))


@pytest.mark.parametrize("fields", [
    [WIRE_VERSION, REMOVED_NOTICE, 3, 1],
    [WIRE_VERSION, REMOVED_NOTICE, 3, 1, 5, 6],
    [WIRE_VERSION, REMOVED_NOTICE, 0, 1, 5],
    [WIRE_VERSION, REMOVED_NOTICE, 3, -1, 5],
    [WIRE_VERSION, REMOVED_NOTICE, 3, 1, "5"],
    [WIRE_VERSION, REMOVED_NOTICE, 3, 1, True],
    [WIRE_VERSION + 1, REMOVED_NOTICE, 3, 1, 5],
])
def test_a_malformed_removed_notice_raises_frame_error(fields: list[Any]) -> None:
    with pytest.raises(FrameError):
        decode_frame(msgpack.packb(fields))
