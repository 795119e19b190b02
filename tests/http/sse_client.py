"""A Server-Sent Events reader for the `GET /watch` tests, on a plain socket so that a test
chooses how fast (and whether) it reads, and how small its receive buffer is."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from cluster import HOST


@dataclass
class Event:
    name: str
    """"message" for a change; "cut", "compacted", "unavailable" for a last word."""
    data: dict[str, Any]
    id: str | None = None


@dataclass
class Stream:
    """One open `GET /watch`: its status line and headers, then events as they come."""

    sock: socket.socket
    status: int
    headers: dict[str, str]
    buffer: bytes = b""
    comments: list[str] = field(default_factory=list)
    ended: bool = False

    def next_event(self, timeout: float) -> Event | None:
        """The next event (comments are kept in `comments`); None once the server closed."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" in self.buffer:
                raw, _, self.buffer = self.buffer.partition(b"\n\n")
                event = self._parse(raw.decode())
                if event is not None:
                    return event
            if self.ended:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event within {timeout:g}s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                self.ended = True
            self.buffer += chunk

    def events(self, count: int, timeout: float) -> list[Event]:
        """The next `count` events (fewer if the stream ends first), within `timeout` in all."""
        deadline = time.monotonic() + timeout
        found: list[Event] = []
        while len(found) < count:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if event is None:
                break
            found.append(event)
        return found

    def _parse(self, raw: str) -> Event | None:
        fields: dict[str, str] = {}
        for line in raw.split("\n"):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "data" not in fields:
            return None  # a comment or the retry hint
        return Event(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(port: int, query: str, headers: dict[str, str] | None = None,
                receive_buffer: int | None = None, timeout: float = 15.0) -> Stream:
    """GET /watch?`query`; returns once the response head has arrived. `receive_buffer`:
    SO_RCVBUF, set before connecting (a small one makes a slow reader's backlog show soon)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.connect((HOST, port))
    lines = [f"GET /watch?{query} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline:
            raise TimeoutError("no response head")
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Stream(sock, int(status_line.split()[1]), parsed, rest)
