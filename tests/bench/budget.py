"""`make budget`: where the time of one write goes, over REST and over the native protocol.

    python -m tests.bench.budget [--writes 1000] [--out artifacts/budget.json]

A fresh 3-node cluster on free loopback ports. One client writes WRITES traced PUTs (100-byte
values) one after another to the leader: over REST on a keep-alive connection with the header
`X-Raftkv-Trace: 1`, then over one DEALER on the leader's client endpoint with `"trace": true`.
Each answer carries the leader's stage timestamps (raftkvd/server/tracing.py) and, over REST,
the HTTP process's; the client adds its own. Every process reads time.monotonic, one clock
for the whole host, so the stages line up across processes. Prints the median and p90 of each
stage as a Markdown table (docs/perf.md keeps the current one) and writes the raw stages as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "integration")]

from cluster import HOST, ProcCluster  # noqa: E402

from raftkv.frames import decode_client, encode_client  # noqa: E402

VALUE = "x" * 100
WARMUP = 200
TIMEOUT_S = 5.0

STAGES = [
    ("client_sent", "http_received", "client -> HTTP request parsed"),
    ("http_received", "node_received", "HTTP process -> leader (forward, ZeroMQ)"),
    ("client_sent", "node_received", "client -> leader (ZeroMQ)"),
    ("node_received", "proposed", "leader: request -> proposed"),
    ("proposed", "ready", "proposed -> its Ready (end of the loop turn)"),
    ("ready", "leader_persisted", "leader's transaction durable (2 fsyncs)"),
    ("leader_persisted", "follower_acked", "first follower's ack, after the leader's fsync"),
    ("follower_acked", "committed", "ack -> commit seen in a Ready"),
    ("committed", "applied", "apply and answer (before the apply flush)"),
    ("applied", "http_answered", "leader -> HTTP process (reply)"),
    ("http_answered", "client_received", "HTTP answer -> client"),
    ("applied", "client_received", "leader -> client (reply)"),
    ("client_sent", "client_received", "total, as the client sees it"),
]


def rest_writes(port: int, count: int, traced: bool, tls: ssl.SSLContext | None = None,
                token: str | None = None) -> list[dict[str, float]]:
    """`tls`, `token`: for a node with HTTPS and bearer tokens on (SPEC §8)."""
    connection = (http.client.HTTPSConnection(HOST, port, timeout=TIMEOUT_S, context=tls)
                  if tls is not None else http.client.HTTPConnection(HOST, port, timeout=TIMEOUT_S))
    headers = {"Content-Type": "application/json", "X-Raftkv-Trace": "1" if traced else "0"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"value": VALUE})
    traces = []
    try:
        for n in range(count):
            sent = time.monotonic()
            connection.request("PUT", f"/kv/budget/{n % 1000}", body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            received = time.monotonic()
            if response.status != 200:
                raise RuntimeError(f"PUT answered {response.status}: {raw[:200]!r}")
            if traced:
                traces.append({"client_sent": sent, **json.loads(raw)["trace"], "client_received": received})
    finally:
        connection.close()
    return traces


def native_writes(endpoint: str, count: int, traced: bool) -> list[dict[str, float]]:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(TIMEOUT_S * 1000))
    sock.connect(endpoint)
    session = f"budget-{uuid.uuid4().hex[:12]}"
    traces = []
    try:
        for n in range(count):
            request = {"id": n + 1, "op": "put", "key": f"budget/{n % 1000}", "value": VALUE,
                       "session": session, "seq": n + 1, "trace": traced}
            sent = time.monotonic()
            sock.send(encode_client(request))
            reply = decode_client(sock.recv())
            received = time.monotonic()
            if reply.get("code") != "ok":
                raise RuntimeError(f"put answered {reply}")
            if traced:
                traces.append({"client_sent": sent, **reply["trace"], "client_received": received})
    finally:
        sock.close(0)
    return traces


def table(traces: list[dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for start, end, label in STAGES:
        spans = [1000 * (t[end] - t[start]) for t in traces if start in t and end in t]
        if not spans:
            continue
        spans.sort()
        rows.append({"stage": label, "from": start, "to": end,
                     "p50_ms": round(statistics.median(spans), 3),
                     "p90_ms": round(spans[int(0.9 * (len(spans) - 1))], 3)})
    return rows


def markdown(name: str, rows: list[dict[str, Any]], count: int) -> str:
    lines = [f"{name} ({count} sequential writes)", "",
             "| stage | p50 ms | p90 ms |", "| --- | ---: | ---: |"]
    lines += [f"| {r['stage']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("artifacts/budget.json"))
    args = parser.parse_args()
    with ProcCluster(Path(tempfile.mkdtemp(prefix="raftkv-budget-")), log_level="warning") as cluster:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        spec = cluster.specs[leader]
        cluster.wait_http(leader)
        rest_writes(spec.http_port, WARMUP, traced=False)
        rest = rest_writes(spec.http_port, args.writes, traced=True)
        native_writes(spec.client, WARMUP, traced=False)
        native = native_writes(spec.client, args.writes, traced=True)
    result = {"rest": table(rest), "native": table(native)}
    print(markdown("REST PUT to the leader", result["rest"], len(rest)))
    print()
    print(markdown("Native put to the leader", result["native"], len(native)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**result, "raw": {"rest": rest, "native": native}}, indent=1))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
