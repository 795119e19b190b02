"""raftkv.frames: client frames round-trip with the protocol version; anything else raises FrameError."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from msgpack_strategies import msgpack_values

from raftkv import protocol
from raftkv.frames import (
    MAX_BATCH,
    MAX_CLIENT_FRAME_BYTES,
    FrameError,
    decode_batch,
    decode_client,
    encode_batch,
    encode_client,
)


def test_client_map_round_trips_with_protocol_version() -> None:
    request = {"id": 7, "op": "put", "session": "s", "seq": 1, "key": "k", "value": "ü"}
    decoded = decode_client(encode_client(request))
    assert decoded == {**request, "v": protocol.VERSION}


def test_encode_client_stamps_the_current_version() -> None:
    assert decode_client(encode_client({"v": 99, "id": 1}))["v"] == protocol.VERSION


@pytest.mark.parametrize("obj", [[1, 2], "put", 3, None, b"map"])
def test_client_frame_that_is_not_a_map_raises_frame_error(obj: Any) -> None:
    with pytest.raises(FrameError, match="map"):
        decode_client(msgpack.packb(obj))


@pytest.mark.parametrize("version", [None, 0, 2, "1", True, 1.0])
def test_client_frame_with_wrong_version_raises_frame_error(version: Any) -> None:
    obj = {"id": 1, "op": "get"}
    if version is not None:
        obj["v"] = version
    with pytest.raises(FrameError, match="version"):
        decode_client(msgpack.packb(obj))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81\xa1v", b"\x81\xa1\xff\x01"])
def test_client_bytes_that_are_not_msgpack_raise_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_client(data)


def test_oversized_client_frame_raises_frame_error() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        decode_client(b"\x00" * (MAX_CLIENT_FRAME_BYTES + 1))


@given(msgpack_values)
@settings(max_examples=300)
def test_random_client_frames_decode_to_a_map_or_raise_frame_error(obj: Any) -> None:
    try:
        decoded = decode_client(msgpack.packb(obj))
    except FrameError:
        return
    assert isinstance(decoded, dict)
    assert decoded["v"] == protocol.VERSION


def test_frame_error_is_a_value_error_so_callers_may_catch_either() -> None:
    with pytest.raises(ValueError):
        decode_client(b"\xc1")


def test_a_batch_is_one_map_for_one_message_and_an_array_for_more() -> None:
    one = [{"id": 1, "op": "get"}]
    assert msgpack.unpackb(encode_batch(one)) == {**one[0], "v": protocol.VERSION}
    many = [{"id": i, "op": "get"} for i in range(3)]
    assert decode_batch(encode_batch(many)) == ([{**m, "v": protocol.VERSION} for m in many], True)
    assert decode_batch(encode_client(one[0])) == ([{**one[0], "v": protocol.VERSION}], False)


@pytest.mark.parametrize("obj", [[], [{"v": protocol.VERSION}, 3], [{"v": 99}],
                                 [{"v": protocol.VERSION}] * (MAX_BATCH + 1), "x"])
def test_a_malformed_batch_raises_frame_error(obj: Any) -> None:
    with pytest.raises(FrameError):
        decode_batch(msgpack.packb(obj))
