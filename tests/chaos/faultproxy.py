"""A TCP fault proxy on raftkvd's peer links: real network faults between real processes.

Each node's advertised `raft` address (the one in the cluster file, which every peer dials) is a
front port of this proxy; the node itself binds elsewhere (node_main.py passes the
bind address in) and the proxy forwards every accepted connection there. All peers of node
j dial the same front port, so the proxy tells the links apart by where they come from: each
node dials its peers from a loopback address of its own (`FaultNet.source`, 127.0.0.100+id;
node_main.py passes it in as the node's `raft_source`), and the proxy maps a connection's source
IP to the node id. That works the same with CurveZMQ on the links, where the handshake's
metadata (the DEALER's identity) is encrypted. One front per node, faults per directed link
(i -> j).

A DEALER->ROUTER connection from i to j carries i's messages to j (plus ZMTP heartbeats both
ways); j's answers travel over j's own DEALER, link (j -> i). A one-way partition i -/-> j is a
fault on link (i, j) alone; a full partition faults both directions.

Faults are only what a network can do to TCP users, never corrupted or reordered bytes:
- DELAY: every chunk is held for delay +- jitter; order is kept (it is one TCP stream).
- BLACKHOLE: nothing is read or forwarded in either direction: kernel buffers fill, then
  ZeroMQ's queues, then sends fail; ZeroMQ's heartbeat gives up on the connection after a few
  seconds and redials into the same hole. On heal the held bytes flow again (a long stall), or
  the connections are reset (what a real timeout would have done).
- CUT: connections are reset, and new ones are reset as soon as they are accepted;
  everything in flight is lost, ZeroMQ keeps redialing.
- FLAKY: connections are reset at random times and stall at random: message loss as a lossy
  network presents it to TCP users.

The proxy runs its own asyncio loop in a daemon thread; the methods of `FaultNet` are called
from other threads and return once the change is in effect.
"""

from __future__ import annotations

import asyncio
import enum
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field

HOST = "127.0.0.1"
SOURCE_BASE = "127.0.0."
SOURCE_OFFSET = 100
"""Node N dials its peers from 127.0.0.(100+N): Linux routes all of 127.0.0.0/8 to lo."""
CHUNK_BYTES = 64 * 1024
QUEUE_CHUNKS = 256
"""Chunks held per direction of a connection before its reader stops (backpressure)."""
CONNECT_TIMEOUT_S = 1.0
CALL_TIMEOUT_S = 10.0


class Mode(enum.Enum):
    OK = "ok"
    DELAY = "delay"
    BLACKHOLE = "blackhole"
    CUT = "cut"
    FLAKY = "flaky"


@dataclass(frozen=True, slots=True)
class Fault:
    """What happens to one directed link."""

    mode: Mode = Mode.OK
    delay_s: float = 0.0
    jitter_s: float = 0.0
    resets_per_s: float = 0.0
    """FLAKY: mean rate of connection resets and stalls (half each)."""
    stall_s: float = 0.0
    """FLAKY: longest stall."""


HEALTHY = Fault()


def delay(delay_s: float, jitter_s: float = 0.0) -> Fault:
    return Fault(Mode.DELAY, delay_s=delay_s, jitter_s=jitter_s)


BLACKHOLE = Fault(Mode.BLACKHOLE)
CUT = Fault(Mode.CUT)


def flaky(resets_per_s: float, stall_s: float) -> Fault:
    return Fault(Mode.FLAKY, resets_per_s=resets_per_s, stall_s=stall_s)


def source_address(node_id: int) -> str:
    """The loopback address node `node_id` dials its peers from."""
    if not 0 < node_id < 256 - SOURCE_OFFSET:
        raise ValueError(f"node id {node_id} has no source address (1..{255 - SOURCE_OFFSET})")
    return f"{SOURCE_BASE}{SOURCE_OFFSET + node_id}"


def _check_bindable(address: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError as exc:
            raise RuntimeError(f"cannot bind the loopback address {address} ({exc.strerror}): the "
                               "fault proxy tells peer links apart by their source address, and needs "
                               "127.0.0.0/8 routed to lo (as Linux does)") from None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a dead network path or a timeout would."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    src: int
    dst: int
    fault: Fault = HEALTHY
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    conns: set[_Conn] = field(default_factory=set)
    flaky_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.flowing.set()

    def reset_all(self) -> int:
        conns = list(self.conns)
        for conn in conns:
            conn.reset()
        return len(conns)


@dataclass(eq=False)
class _Conn:
    net: FaultNet
    dst: int
    client_r: asyncio.StreamReader
    client_w: asyncio.StreamWriter
    up_r: asyncio.StreamReader | None = None
    up_w: asyncio.StreamWriter | None = None
    link: _Link | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False

    async def gate(self) -> None:
        if self.link is not None:
            await self.link.flowing.wait()

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        _reset(self.client_w)
        if self.up_w is not None:
            _reset(self.up_w)
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.net.open.discard(self)
        if self.link is not None:
            self.link.conns.discard(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_w, self.up_w):
            if writer is not None:
                writer.transport.close()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.net.open.discard(self)
        if self.link is not None:
            self.link.conns.discard(self)


class FaultNet:
    """Fault proxies in front of every node's Raft port, with per-directed-link faults."""

    def __init__(self, host: str = HOST, seed: int | None = None,
                 avoid_ports: frozenset[int] = frozenset()) -> None:
        self.host = host
        self.rng = random.Random(seed)
        self.avoid_ports = avoid_ports
        self.backends: dict[int, int] = {}
        self.fronts: dict[int, int] = {}
        self.sources: dict[str, int] = {}
        """Source IP -> the node that dials from it."""
        self.open: set[_Conn] = set()
        """Every connection not closed yet, on a link or not (all reset by `close`)."""
        self.stats: Counter[str] = Counter()
        self._links: dict[tuple[int, int], _Link] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultnet", daemon=True)
        self._thread.start()

    # ---- called from other threads ----------------------------------------------------------
    def add_node(self, node_id: int, backend_port: int) -> int:
        """Listen on a free front port for `node_id`, forwarding to `backend_port`; returns it.
        The node must dial its peers from `source(node_id)`."""
        address = source_address(node_id)
        _check_bindable(address)
        self.sources[address] = node_id
        self.backends[node_id] = backend_port
        port = self._call(self._listen(node_id))
        self.fronts[node_id] = port
        return port

    def set_faults(self, faults: dict[tuple[int, int], Fault], reset_on_heal: bool = False) -> None:
        """Give each listed directed link (src, dst) its fault, all in one step of the loop."""
        self._call(self._set_faults(faults, reset_on_heal))

    def heal(self, reset: bool = False) -> None:
        """Every link back to OK; `reset`: drop the connections that were held or stalled."""
        self.set_faults({key: HEALTHY for key in self._all_links()}, reset_on_heal=reset)

    def faults(self) -> dict[tuple[int, int], Fault]:
        """The links that are not healthy now."""
        return {k: link.fault for k, link in list(self._links.items()) if link.fault.mode is not Mode.OK}

    @staticmethod
    def source(node_id: int) -> str:
        """The local address node `node_id` must dial its peers from (its `raft_source`)."""
        return source_address(node_id)

    def connections(self) -> dict[tuple[int, int], int]:
        return {k: len(link.conns) for k, link in list(self._links.items())}

    def close(self) -> None:
        if not self._loop.is_running():
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> FaultNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)  # type: ignore[arg-type]

    def _all_links(self) -> list[tuple[int, int]]:
        ids = sorted(self.backends)
        return [(s, d) for s in ids for d in ids if s != d]

    # ---- on the loop --------------------------------------------------------------------------
    def _link(self, src: int, dst: int) -> _Link:
        link = self._links.get((src, dst))
        if link is None:
            link = self._links[(src, dst)] = _Link(src, dst)
        return link

    async def _listen(self, node_id: int) -> int:
        while True:
            server = await asyncio.start_server(
                lambda r, w: self._accept(node_id, r, w), self.host, 0, reuse_address=True
            )
            port = server.sockets[0].getsockname()[1]
            if port not in self.avoid_ports:
                self._servers.append(server)
                return port
            server.close()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for link in self._links.values():
            if link.flaky_task is not None:
                link.flaky_task.cancel()
            link.flowing.set()
        for conn in list(self.open):
            conn.reset()

    async def _set_faults(self, faults: dict[tuple[int, int], Fault], reset_on_heal: bool) -> None:
        for (src, dst), fault in faults.items():
            link = self._link(src, dst)
            old = link.fault
            link.fault = fault
            if link.flaky_task is not None and fault.mode is not Mode.FLAKY:
                link.flaky_task.cancel()
                link.flaky_task = None
            if fault.mode is Mode.CUT:
                self.stats["resets"] += link.reset_all()
            elif fault.mode is Mode.BLACKHOLE:
                link.flowing.clear()
            else:
                if old.mode in (Mode.BLACKHOLE, Mode.FLAKY) and reset_on_heal:
                    self.stats["resets"] += link.reset_all()
                link.flowing.set()
                if fault.mode is Mode.FLAKY and link.flaky_task is None:
                    link.flaky_task = asyncio.get_running_loop().create_task(self._flap(link))

    async def _flap(self, link: _Link) -> None:
        """FLAKY: at random times either reset the link's connections or stall it briefly."""
        try:
            while link.fault.mode is Mode.FLAKY:
                await asyncio.sleep(self.rng.expovariate(max(link.fault.resets_per_s, 0.01)))
                if link.fault.mode is not Mode.FLAKY:
                    break
                if self.rng.random() < 0.5:
                    self.stats["resets"] += link.reset_all()
                else:
                    self.stats["stalls"] += 1
                    link.flowing.clear()
                    await asyncio.sleep(self.rng.uniform(0, link.fault.stall_s))
                    link.flowing.set()
        finally:
            if link.fault.mode is not Mode.BLACKHOLE:
                link.flowing.set()

    async def _accept(self, dst: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(self, dst, reader, writer)
        self.open.add(conn)
        self.stats["accepted"] += 1
        if not self._identify(conn, writer.get_extra_info("peername")):
            return
        try:
            conn.up_r, conn.up_w = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.backends[dst]), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            self.stats["backend_down"] += 1
            conn.reset()
            return
        if conn.closed:  # cut while we connected
            _reset(conn.up_w)
            return
        to_up: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(QUEUE_CHUNKS)
        to_client: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(QUEUE_CHUNKS)
        loop = asyncio.get_running_loop()
        conn.tasks = [
            loop.create_task(self._read(conn, reader, to_up)),
            loop.create_task(self._write(conn, to_up, conn.up_w)),
            loop.create_task(self._read(conn, conn.up_r, to_client)),
            loop.create_task(self._write(conn, to_client, writer)),
        ]

    def _identify(self, conn: _Conn, peer: object) -> bool:
        """Put the connection on its link (i -> dst) by its source address; False if the link
        is cut and so was the connection. An unknown source stays on no link (never faulted)."""
        src = self.sources.get(peer[0]) if isinstance(peer, tuple) and peer else None
        if src is None or src == conn.dst:
            self.stats["unidentified"] += 1
            return True
        link = self._link(src, conn.dst)
        conn.link = link
        link.conns.add(conn)
        self.stats["identified"] += 1
        if link.fault.mode is Mode.CUT:
            self.stats["refused"] += 1
            conn.reset()
            return False
        return True

    def _due(self, conn: _Conn, last: float) -> float:
        now = asyncio.get_running_loop().time()
        fault = conn.link.fault if conn.link is not None else HEALTHY
        if fault.mode is not Mode.DELAY:
            return max(now, last)
        wait = fault.delay_s + self.rng.uniform(-fault.jitter_s, fault.jitter_s)
        return max(now + max(0.0, wait), last)  # one TCP stream: never overtake earlier bytes

    async def _read(self, conn: _Conn, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[float, bytes | None]]) -> None:
        last = 0.0
        try:
            while True:
                await conn.gate()
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                last = self._due(conn, last)
                await queue.put((last, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        if not conn.closed:
            await queue.put((0.0, None))

    async def _write(self, conn: _Conn, queue: asyncio.Queue[tuple[float, bytes | None]],
                     writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                await conn.gate()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                    await conn.gate()
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        except asyncio.CancelledError:
            return
        conn.close()
