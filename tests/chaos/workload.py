"""Chaos clients: threads issuing random operations on a few keys, every one recorded.

Half the clients speak raftkvd's client protocol through raftctl.Client (put, get, delete, cas;
each Client is rebuilt every few operations with its endpoints shuffled, so requests enter through
random nodes and follow redirects), half the REST API of a random node per request (put, get,
delete: REST has no cas). Values are unique per write (`c3-117`), so a read names its write.

Outcomes, conservatively:
- a reply -> complete, with what it said (value / not found, deleted or not, cas applied or the
  current value it reported);
- a timeout, a dropped connection, "unavailable" after retries, any error we cannot prove
  harmless -> indeterminate: the write may still take effect at any later time;
- only a request that never left (the REST connection, or its TLS handshake, failed before the
  request was sent) -> failed, out of the history.

On a secured cluster (ChaosCluster(secure=True)) raftctl clients use the cluster's client key
(`curve`) and REST clients HTTPS and a bearer token (`rest`).
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence

from history import Recorder
from linearizability import CasResult, OpKind

from raftctl import Client
from raftctl.errors import CompareFailed, KeyNotFound
from raftkv.curve import ClientCurve

RAFTCTL_TIMEOUT_S = 3.0
REST_TIMEOUT_S = 4.0
"""Above one try of the REST forwarder, so most REST failures come back as a definite 503."""
RECREATE_EVERY = 20
"""raftctl operations per Client before a new one with a reshuffled endpoint order."""
RAFTCTL_MIX = ((OpKind.GET, 40), (OpKind.PUT, 25), (OpKind.CAS, 25), (OpKind.DELETE, 10))
REST_MIX = ((OpKind.GET, 45), (OpKind.PUT, 40), (OpKind.DELETE, 15))
THINK_S = (0.0, 0.01)
"""Pause between a client's operations: enough to let the other threads in."""


class KeySpace:
    """The keys clients use now: a fresh set every `epoch_s`, so each key's history stays short
    enough for the checker however long the run (at most `per_epoch` + 2 keys are live)."""

    def __init__(self, per_epoch: int, epoch_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_epoch = per_epoch
        self.epoch_s = epoch_s
        self.clock = clock
        self.started = clock()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def epoch(self) -> int:
        return int((self.clock() - self.started) // self.epoch_s)

    def workload_keys(self) -> list[str]:
        epoch = self.epoch()
        return [self._note(f"e{epoch}-k{i}") for i in range(self.per_epoch)]

    def special_key(self, role: str) -> str:
        """The nemesis's own key, or the recovery probes', of the current epoch."""
        return self._note(f"e{self.epoch()}-{role}")

    def all_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._seen)

    def _note(self, key: str) -> str:
        with self._lock:
            self._seen.add(key)
        return key


class Workload:
    """`clients` threads (at least one of each kind) until `stop()`."""

    def __init__(
        self,
        recorder: Recorder,
        keys: KeySpace,
        client_endpoints: Sequence[str],
        http_addresses: Sequence[tuple[str, int]],
        clients: int = 6,
        seed: int = 0,
        *,
        curve: ClientCurve | None = None,
        rest_tls: ssl.SSLContext | None = None,
        rest_headers: dict[str, str] | None = None,
    ) -> None:
        self.recorder = recorder
        self.keys = keys
        self.client_endpoints = list(client_endpoints)
        self.http_addresses = list(http_addresses)
        self.clients = clients
        self.seed = seed
        self.curve = curve
        self.rest_tls = rest_tls
        self.rest_headers = dict(rest_headers or {})
        self.stats: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self.clients):
            target = self._raftctl_loop if n % 2 == 0 else self._rest_loop
            thread = threading.Thread(target=target, args=(n, random.Random(self.seed * 1000 + n)),
                                      name=f"chaos-client-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def _count(self, api: str, kind: OpKind, outcome: str, error: str | None = None) -> None:
        with self._stats_lock:
            self.stats[f"{api}.{kind.value}.{outcome}"] += 1
            if error:
                self.errors[error] += 1

    def _pick(self, rng: random.Random, mix: tuple[tuple[OpKind, int], ...]) -> tuple[OpKind, str]:
        kind = rng.choices([k for k, _ in mix], [w for _, w in mix])[0]
        return kind, rng.choice(self.keys.workload_keys())

    # ---- raftctl.Client ----------------------------------------------------------------------
    def _raftctl_loop(self, cid: int, rng: random.Random) -> None:
        client: Client | None = None
        used = 0
        written = 0
        last_seen: dict[str, str | None] = {}
        try:
            while not self._stop.is_set():
                if client is None or used >= RECREATE_EVERY:
                    if client is not None:
                        client.close()
                    endpoints = self.client_endpoints[:]
                    rng.shuffle(endpoints)
                    client, used = Client(endpoints, timeout=RAFTCTL_TIMEOUT_S, curve=self.curve), 0
                used += 1
                kind, key = self._pick(rng, RAFTCTL_MIX)
                written += 1
                value = f"c{cid}-{written}"
                expected = None
                if kind is OpKind.CAS:
                    # Mostly the value this client last saw (often still current), sometimes absent.
                    expected = last_seen.get(key) if rng.random() < 0.8 else None
                outcome = self._raftctl_op(client, cid, kind, key, value, expected, last_seen)
                self._count("raftctl", kind, outcome[0], outcome[1])
                time.sleep(rng.uniform(*THINK_S))
        finally:
            if client is not None:
                client.close()

    def _raftctl_op(self, client: Client, cid: int, kind: OpKind, key: str, value: str,
                    expected: str | None, last_seen: dict[str, str | None]) -> tuple[str, str | None]:
        rec = self.recorder
        handle = rec.invoke(cid, kind, key, value=value if kind in (OpKind.PUT, OpKind.CAS) else None,
                            expected=expected)
        try:
            if kind is OpKind.PUT:
                client.put(key, value)
                rec.complete(handle)
                last_seen[key] = value
            elif kind is OpKind.GET:
                try:
                    found: str | None = client.get(key)
                except KeyNotFound:
                    found = None
                rec.complete(handle, found)
                last_seen[key] = found
            elif kind is OpKind.DELETE:
                rec.complete(handle, client.delete(key))
                last_seen[key] = None
            else:
                try:
                    client.cas(key, expected, value)
                    rec.complete(handle, CasResult(ok=True))
                    last_seen[key] = value
                except CompareFailed as failed:
                    rec.complete(handle, CasResult(ok=False, current=failed.current))
                    last_seen[key] = failed.current
        except Exception as exc:  # anything else: the request may have been applied
            rec.indeterminate(handle)
            return "indeterminate", type(exc).__name__
        return "ok", None

    # ---- REST ----------------------------------------------------------------------------------
    def _rest_loop(self, cid: int, rng: random.Random) -> None:
        written = 0
        while not self._stop.is_set():
            kind, key = self._pick(rng, REST_MIX)
            written += 1
            host, port = rng.choice(self.http_addresses)
            outcome = self._rest_op(cid, host, port, kind, key, f"c{cid}-{written}")
            self._count("rest", kind, outcome[0], outcome[1])
            time.sleep(rng.uniform(*THINK_S))

    def _rest_op(self, cid: int, host: str, port: int, kind: OpKind, key: str,
                 value: str) -> tuple[str, str | None]:
        rec = self.recorder
        path = "/kv/" + urllib.parse.quote(key, safe="")
        handle = rec.invoke(cid, kind, key, value=value if kind is OpKind.PUT else None)
        conn = (http.client.HTTPConnection(host, port, timeout=REST_TIMEOUT_S) if self.rest_tls is None
                else http.client.HTTPSConnection(host, port, timeout=REST_TIMEOUT_S, context=self.rest_tls))
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                rec.fail(handle)  # nothing was sent: the node is down
                return "failed", "ConnectionRefused"
            except OSError as exc:  # the TLS handshake failed or timed out: nothing was sent either
                rec.fail(handle)
                return "failed", f"connect: {type(exc).__name__}"
            if kind is OpKind.PUT:
                conn.request("PUT", path, body=json.dumps({"value": value}),
                             headers={"Content-Type": "application/json", **self.rest_headers})
            else:
                conn.request("GET" if kind is OpKind.GET else "DELETE", path, headers=self.rest_headers)
            response = conn.getresponse()
            status, body = response.status, response.read()
        except Exception as exc:  # timeout, reset, a node killed mid-request
            rec.indeterminate(handle)
            return "indeterminate", type(exc).__name__
        finally:
            conn.close()
        return self._rest_outcome(handle, kind, status, body)

    def _rest_outcome(self, handle: int, kind: OpKind, status: int, body: bytes) -> tuple[str, str | None]:
        rec = self.recorder
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        not_found = status == 404 and doc.get("error") == "key not found"
        if status == 200 and kind is OpKind.GET and isinstance(doc.get("value"), str):
            rec.complete(handle, doc["value"])
        elif status == 200 and kind is OpKind.PUT:
            rec.complete(handle)
        elif kind is OpKind.DELETE and (status == 200 or not_found):
            rec.complete(handle, status == 200)
        elif kind is OpKind.GET and not_found:
            rec.complete(handle, None)
        else:  # 503 (no leader, timeout), 500, or anything unexpected: unknown fate
            rec.indeterminate(handle)
            return "indeterminate", f"HTTP {status}"
        return "ok", None
