"""The one codec of what is replicated: a client write as the bytes of a log entry.

The leader builds a Command from a validated request and proposes its encoding; every
replica decodes the committed entry and applies it (kv/statemachine.py). Decoding trusts
nothing, because a log may hold what an older or buggy leader wrote: a Command is whatever
the entry says, and `error()` tells why it cannot be applied (it is then answered, not
raised, so bad input never stops the apply loop).

Format: one msgpack map {"op", "key", "value", "expected", "session", "seq"}, the keys
of the client protocol (raftkv.protocol), so data dirs written before this module read
the same.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from raftkv.protocol import MAX_KEY_BYTES, WRITE_OPS, Op

FIELDS = ("op", "key", "value", "expected", "session", "seq")


class Command(NamedTuple):
    """A write as replicated. Field types are checked by `error`, not assumed. A NamedTuple
    rather than a frozen dataclass: one is decoded per applied entry, and building a tuple
    costs a fraction of a frozen dataclass's per-field setattr."""

    op: Any
    key: Any
    value: Any = None
    expected: Any = None
    session: Any = None
    seq: Any = None

    @classmethod
    def from_request(cls, body: dict[str, Any]) -> Command:
        """The write of a client request the endpoint has validated (net/clientendpoint.py)."""
        return cls(*(body.get(name) for name in FIELDS))

    def encode(self) -> bytes:
        return msgpack.packb({name: getattr(self, name) for name in FIELDS})

    @property
    def tracked(self) -> bool:
        """Whether it belongs to a client session, so a retry of it applies once (thesis §6.3)."""
        return isinstance(self.session, str) and bool(self.session) and type(self.seq) is int

    def error(self) -> str | None:
        """Why this command cannot be applied, or None. The leader checked the request
        already; this is the backstop every replica runs."""
        op = self.op
        if type(op) is not str or op not in WRITE_OPS:  # an unhashable op must not raise
            return f"unknown op {op!r}"
        if op != Op.DELETE and not isinstance(self.value, str):  # Op is a StrEnum: no .value
            return "value must be a string"
        if op == Op.CAS and not isinstance(self.expected, str | None):
            return "expected must be a string or null"
        return key_error(self.key)


_new_command = tuple.__new__
"""Builds a Command without NamedTuple's Python-level __new__ (decode runs once per entry)."""


def decode(data: bytes) -> Command | None:
    """The command in a log entry's data; None when it is not a command map at all."""
    try:
        obj = msgpack.unpackb(data)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(obj, dict):
        return None
    get = obj.get
    return _new_command(Command, (get("op"), get("key"), get("value"), get("expected"),
                                  get("session"), get("seq")))


def key_error(key: Any) -> str | None:
    """Why `key` is not a valid key, or None: keys are 1..511 UTF-8 bytes (LMDB's limit)."""
    if not isinstance(key, str):
        return "key must be a string"
    if not 1 <= len(key.encode()) <= MAX_KEY_BYTES:
        return f"key must be 1 to {MAX_KEY_BYTES} bytes"
    return None
