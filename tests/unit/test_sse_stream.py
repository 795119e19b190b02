"""The body of `GET /watch` (raftkvd/http/sse.py) against a scripted node and a client whose
unread backlog the test chooses: events framed with their revision as id, heartbeats on
empty answers, resumes asked from `next`, and the last words (cut, compacted, unavailable)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from raftkv.protocol import Code
from raftkvd.http import sse
from raftkvd.http.forward import ForwardTimeout
from raftkvd.metrics import HttpMetrics


def ok(events: list[dict[str, Any]], next_rev: int) -> dict[str, Any]:
    return {"code": Code.OK.value, "events": events, "next": next_rev, "revision": next_rev - 1}


def put(rev: int) -> dict[str, Any]:
    return {"type": "put", "key": f"k{rev}", "value": "v", "revision": rev}


class Node:
    """Answers the stream's long polls from a script; an exception in it is raised."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.asked: list[dict[str, Any]] = []

    async def watch(self, request: dict[str, Any], wait: float) -> dict[str, Any]:
        self.asked.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Client:
    """The connection: what was written, and how much of it the client left unread."""

    def __init__(self, backlog: list[int] | None = None) -> None:
        self.written = b""
        self.backlog = backlog or []

    def write(self, data: bytes) -> None:
        self.written += data

    def buffered(self) -> int:
        return self.backlog.pop(0) if self.backlog else 0

    def frames(self) -> list[str]:
        return [frame for frame in self.written.decode().split("\n\n") if frame]


def run(node: Node, client: Client, first: dict[str, Any], metrics: HttpMetrics | None = None,
        clock: list[float] | None = None) -> None:
    """Stream `first`, then the node's answers, to `client`; `clock`: the times the stream
    reads, one per answer with a backlog."""
    times = iter(clock or [])

    async def main() -> None:
        hub = sse.WatchHub(node)  # type: ignore[arg-type]
        opening = sse.Round(first, b"".join(sse.event_frame(e) for e in first.get("events", [])))
        await sse.WatchStream(hub, {"prefix": "k"}, opening, metrics, clock=lambda: next(times))(client)

    asyncio.run(main())


def last_word(client: Client) -> tuple[str, dict[str, Any]]:
    name, data = client.frames()[-1].split("\n")
    return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))


def test_events_carry_their_revision_as_id_and_an_empty_answer_is_a_heartbeat() -> None:
    node = Node([ok([], 3), ok([put(3)], 4), ForwardTimeout("node gone")])
    client = Client()
    run(node, client, ok([put(1), put(2)], 3))
    frames = client.frames()
    assert frames[0] == f"retry: {sse.RETRY_MS}"
    assert frames[1] == 'id: 1\ndata: {"type":"put","key":"k1","value":"v","revision":1}'
    assert frames[2].startswith("id: 2\n") and frames[3] == ": heartbeat"
    assert frames[4].startswith("id: 3\n")
    assert [asked["rev"] for asked in node.asked] == [3, 3, 4]
    assert all(asked["wait"] == sse.HEARTBEAT_S and asked["prefix"] == "k" for asked in node.asked)
    assert last_word(client) == ("unavailable", {"error": "node gone; resume from revision 4",
                                                 "resume": 4})


def test_a_first_answer_without_events_writes_no_heartbeat() -> None:
    client = Client()
    run(Node([ForwardTimeout("x")]), client, ok([], 7))
    assert [f.split("\n")[0] for f in client.frames()] == [f"retry: {sse.RETRY_MS}", "event: unavailable"]


def test_a_backlog_over_the_bound_is_cut_with_the_revision_to_resume_from() -> None:
    metrics = HttpMetrics()
    client = Client(backlog=[0, sse.BUFFER_BYTES + 1])
    run(Node([ok([put(5)], 6)]), client, ok([put(4)], 5), metrics, clock=[100.0])
    assert last_word(client) == ("cut", {"error": "too slow, resume from revision 6", "resume": 6})
    assert b"id: 5\n" in client.written
    text = metrics.exposition().decode()
    assert "raftkvd_http_watch_cut_total 1.0" in text
    assert "raftkvd_http_watch_streams 0.0" in text  # the stream is over


def test_a_backlog_that_does_not_empty_for_the_stall_time_is_cut() -> None:
    client = Client(backlog=[10, 10, 10])
    run(Node([ok([put(2)], 3), ok([put(3)], 4)]), client, ok([put(1)], 2),
        clock=[100.0, 100.0 + sse.STALL_S / 2, 100.0 + sse.STALL_S])
    assert last_word(client) == ("cut", {"error": "too slow, resume from revision 4", "resume": 4})


def test_a_backlog_that_empties_in_between_starts_the_stall_time_again() -> None:
    client = Client(backlog=[10, 0, 10, 10])
    run(Node([ok([put(2)], 3), ok([put(3)], 4), ok([put(4)], 5), ForwardTimeout("x")]), client,
        ok([put(1)], 2), clock=[100.0, 100.0 + sse.STALL_S + 1, 100.0 + sse.STALL_S + 2])
    assert last_word(client)[0] == "unavailable"


def test_a_stream_that_falls_behind_the_history_ends_with_compacted() -> None:
    client = Client()
    compacted = {"code": Code.COMPACTED.value, "oldest": 90, "error": "revision 3 is compacted"}
    run(Node([compacted]), client, ok([put(2)], 3))
    assert last_word(client) == ("compacted", {"error": "revision 3 is compacted", "oldest": 90})


def test_streams_in_step_share_one_long_poll_and_one_framing() -> None:
    class Slow(Node):
        async def watch(self, request: dict[str, Any], wait: float) -> dict[str, Any]:
            self.asked.append(request)
            await asyncio.sleep(0.01)
            return ok([put(request["rev"])], request["rev"] + 1)

    async def main() -> tuple[list[sse.Round], Slow]:
        node = Slow([])
        hub = sse.WatchHub(node)  # type: ignore[arg-type]
        leaving = asyncio.ensure_future(hub.poll({"prefix": "k"}, 5, 1.0))
        staying = [asyncio.ensure_future(hub.poll({"prefix": "k"}, 5, 1.0)) for _ in range(99)]
        other = asyncio.ensure_future(hub.poll({"prefix": "k"}, 6, 1.0))
        await asyncio.sleep(0)
        leaving.cancel()  # its client went away: the round goes on for the others
        rounds = await asyncio.gather(*staying, other)
        return rounds, node

    rounds, node = asyncio.run(main())
    assert [asked["rev"] for asked in node.asked] == [5, 6]
    assert len({id(r) for r in rounds[:99]}) == 1 and rounds[0].chunk.startswith(b"id: 5\n")
    assert rounds[99].chunk.startswith(b"id: 6\n")
