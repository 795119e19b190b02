"""msgpack frames of the client protocol (SPEC §7: versioned; a malformed frame is an error).

A frame is one message (a map) or a batch (an array of maps): a client with many requests in
flight on one link sends what it has in one frame, and the node answers the batched requests
of that client in one frame, so the cost of a send (a syscall and a wake-up of ZeroMQ's I/O
thread) is paid once per batch instead of once per request. A client that sends plain maps
gets plain maps back. Each map carries the protocol version.

Decoding trusts nothing: any input either decodes to maps of the current protocol version
or raises `FrameError`, so neither a hostile client nor a garbled answer can crash the side
that reads it. The daemon's peer frames (raftkvd/net/peerwire.py) unpack the same way.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .protocol import VERSION

MAX_CLIENT_FRAME_BYTES = 72 * 1024 * 1024
"""Largest client frame: a maximal value (64 MiB, the config's ceiling) plus its framing."""
MAX_BATCH = 4096
"""Messages in one frame at most."""


class FrameError(ValueError):
    """A frame that is not a valid encoding; the receiver counts it and drops it."""


def unpack(data: bytes, max_bytes: int = MAX_CLIENT_FRAME_BYTES) -> Any:
    """msgpack.unpackb, with every failure mapped to FrameError."""
    try:
        size = len(data)
    except TypeError:
        raise FrameError(f"frame is {type(data).__name__}, not bytes") from None
    if size > max_bytes:
        raise FrameError(f"frame of {size} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_reject_ext)
    except FrameError:
        raise
    except Exception as exc:  # msgpack signals bad input with many exception types
        raise FrameError(f"not msgpack: {exc}") from None


def _reject_ext(code: int, data: bytes) -> Any:
    raise FrameError(f"msgpack extension type {code} is not part of the protocol")


def check_version(version: Any, expected: int) -> None:
    if type(version) is not int or version != expected:
        raise FrameError(f"unsupported wire version {version!r} (this side speaks {expected})")


def encode_client(obj: dict[str, Any]) -> bytes:
    """One client-protocol map (raftkv.protocol), stamped with the protocol version."""
    return msgpack.packb({**obj, "v": VERSION})


def encode_batch(objs: list[dict[str, Any]]) -> bytes:
    """One frame for `objs`: a map for one, an array of maps for more."""
    if len(objs) == 1:
        return encode_client(objs[0])
    return msgpack.packb([{**obj, "v": VERSION} for obj in objs])


def decode_client(data: bytes) -> dict[str, Any]:
    """Parse a frame of one message: a map of the current protocol version. Field checks
    belong to the server and the client, which know what each operation needs."""
    obj = unpack(data)
    if type(obj) is not dict:
        raise FrameError("client frame is not a map")
    check_version(obj.get("v"), VERSION)
    return obj


def decode_batch(data: bytes) -> tuple[list[dict[str, Any]], bool]:
    """Parse a frame of one message or a batch of them (see the module's doc): the messages,
    and whether the frame was a batch (whose sender then reads batches too)."""
    obj = unpack(data)
    batched = type(obj) is list
    items = obj if batched else [obj]
    if not 1 <= len(items) <= MAX_BATCH:
        raise FrameError(f"a batch holds 1 to {MAX_BATCH} messages, not {len(items)}")
    for item in items:
        if type(item) is not dict:
            raise FrameError("client frame is not a map nor an array of maps")
        check_version(item.get("v"), VERSION)
    return items, batched
