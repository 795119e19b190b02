"""msgpack frames of the client protocol (SPEC §7: versioned; a malformed frame is an error).

Decoding trusts nothing: any input either decodes to a map of the current protocol version
or raises `FrameError`, so neither a hostile client nor a garbled answer can crash the side
that reads it. The daemon's peer frames (raftkvd/net/peerwire.py) unpack the same way.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .protocol import VERSION

MAX_CLIENT_FRAME_BYTES = 72 * 1024 * 1024
"""Largest client frame: a maximal value (64 MiB, the config's ceiling) plus its framing."""


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


def decode_client(data: bytes) -> dict[str, Any]:
    """Parse one client frame: a map of the current protocol version. Field checks
    belong to the server and the client, which know what each operation needs."""
    obj = unpack(data)
    if type(obj) is not dict:
        raise FrameError("client frame is not a map")
    check_version(obj.get("v"), VERSION)
    return obj
