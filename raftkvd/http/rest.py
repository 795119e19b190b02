"""The REST API of one node (SPEC §5): routing, validation and errors, on connection.py's
requests and responses.

The handlers never touch the consensus core or LMDB: key-value requests, /cluster, /metrics
and the node's status travel over the node's own ZeroMQ client protocol (forward.py).
/health and /ready read the latest status, which the server polls from the node
(httpserver.StatusPoller). Validation happens here; meaning, at the node.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from raftkv import protocol
from raftkv.protocol import Code
from raftkvd.errors import Unavailable
from raftkvd.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from raftkvd.metrics import HttpMetrics, Snapshot
from raftkvd.ratelimit import RateLimiter, refusal, retry_after_header

from .auth import Authorizer
from .connection import JSON_TYPE, Request, Response, error_response, json_response
from .forward import ForwardClient, NoLeader
from .sse import CONTENT_TYPE as EVENT_STREAM_TYPE
from .sse import WatchHub, WatchStream
from .tokens import Role
from .webview import STATIC_PREFIX, WebView

log = logging.getLogger(__name__)

BODY_SLACK_BYTES = 64 * 1024
"""Room for the JSON around a value of max_value_bytes (and some escapes) in a PUT body."""
MAX_QUERY_FIELDS = 16
MAX_LIST_LIMIT = 2**32
MAX_REVISION = 2**63 - 1
STATUS_STALE_S = 2.0
"""A node whose latest status is older than this is stuck: /health says unhealthy."""
OPENAPI_RESOURCE = "openapi.json"
KV_PREFIX = "/kv/"
KV_ROUTE = "/kv/{key}"
STATIC_ROUTE = STATIC_PREFIX + "{name}"
UNMATCHED_ROUTE = "unmatched"
TRACE_HEADER = "x-raftkv-trace"
"""`X-Raftkv-Trace: 1` on a PUT: the answer carries its stage timestamps (server/tracing.py)."""
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
_REPLY_STATUS = {
    Code.INVALID.value: 400,
    Code.NOT_FOUND.value: 404,
    Code.COMPARE_FAILED.value: 409,
    Code.TOO_LARGE.value: 413,
    Code.NO_SPACE.value: 507,
    Code.RATE_LIMITED.value: 429,
}

WRITE_REQUESTS = frozenset({("PUT", KV_ROUTE), ("DELETE", KV_ROUTE)})
PUBLIC_ROUTES = frozenset({"/", STATIC_ROUTE})
"""The web view's own files, the same on every node and holding no data: a browser cannot
send a bearer token when it opens a page, so these are served to anyone; the page's data
(/cluster) needs a token like any other request (see the README)."""

Handler = Callable[[Request], Awaitable[Response]]


def required_role(method: str, route: str) -> Role:
    """The role table, in one place (SPEC §8): `read` may GET, `write` also PUT and DELETE
    keys, `admin` anything else (a mutating request added later is admin-only unless it is
    listed here)."""
    if method == "GET":
        return Role.READ
    if (method, route) in WRITE_REQUESTS:
        return Role.WRITE
    return Role.ADMIN


class BadRequest(Exception):
    """A request this API refuses before forwarding it: (HTTP status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _load_openapi() -> bytes:
    return resources.files(__package__).joinpath(OPENAPI_RESOURCE).read_bytes()


class RestApi:
    """The handlers: validation here, meaning at the node (reached through `forward`)."""

    def __init__(
        self,
        forward: ForwardClient,
        snapshot: Callable[[], Snapshot | None],
        metrics: HttpMetrics | None,
        max_value_bytes: int,
        auth: Authorizer | None = None,
        limiter: RateLimiter | None = None,
        unlimited_paths: frozenset[str] = frozenset(),
    ) -> None:
        """`auth`: the bearer-token check, when [security] tokens_file is set; `limiter`: the
        per-client limit ([limits]), None for none; `unlimited_paths`: the routes it does not
        hold (the open paths: operators' probes must see an overloaded node)."""
        self.forward = forward
        self.limiter = limiter
        self.unlimited_paths = unlimited_paths
        self.snapshot = snapshot
        self.metrics = metrics
        self.max_value_bytes = max_value_bytes
        """Changed at run time by a reload (HttpServer.set_max_value_bytes)."""
        self.auth = auth
        self.watches = WatchHub(forward)
        self.openapi = _load_openapi()
        self.web = WebView()
        self.routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": self.health},
            "/ready": {"GET": self.ready},
            "/cluster": {"GET": self.cluster},
            "/metrics": {"GET": self.metrics_text},
            "/openapi.json": {"GET": self.openapi_json},
            "/": {"GET": self.web.index},
            STATIC_ROUTE: {"GET": self.web.static},
            "/kv": {"GET": self.kv_list},
            KV_ROUTE: {"GET": self.kv_get, "PUT": self.kv_put, "DELETE": self.kv_delete},
            "/watch": {"GET": self.watch},
        }
        """Route template -> method -> handler; HEAD is answered as GET, without the body."""
        if self.metrics is not None:
            for route, methods in self.routes.items():
                for method in methods:
                    self.metrics.declare(method, route, 200)

    @property
    def body_limit(self) -> int:
        """The largest PUT body worth reading: a value of max_value_bytes in its JSON."""
        return self.max_value_bytes + BODY_SLACK_BYTES

    @staticmethod
    def route_of(path: str) -> str:
        if path.startswith(KV_PREFIX):
            return KV_ROUTE  # any character after the prefix: the key is taken from the raw path
        if path.startswith(STATIC_PREFIX):
            return STATIC_ROUTE
        return path

    # ---- errors and metrics, around every handler --------------------------------------
    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        route = self.route_of(request.path)
        methods = self.routes.get(route)
        if methods is None:
            route = UNMATCHED_ROUTE
        # The token first: a limit then holds the token, not the address it came from.
        refused = self.auth.check(request, route) if self.auth is not None else None
        if refused is None:
            refused = self._over_limit(request, route)
        response = refused if refused is not None else await self._answer(request, methods)
        if self.metrics is not None:
            method = request.method if request.method in KNOWN_METHODS else "OTHER"
            self.metrics.observe(method, route, response.status, time.perf_counter() - started)
        return response

    def _over_limit(self, request: Request, route: str) -> Response | None:
        """429 for a client over its rate, before any forwarding (SPEC §5): its flood costs
        the others one bucket check per request."""
        limiter = self.limiter
        if limiter is None or limiter.rate is None or route in self.unlimited_paths:
            return None
        wait = limiter.check(request.client)
        if not wait:
            return None
        if self.metrics is not None:
            self.metrics.rate_limited += 1
        return json_response({"error": refusal(limiter.rate, wait)}, 429,
                             [("Retry-After", retry_after_header(wait))])

    async def _answer(self, request: Request, methods: dict[str, Handler] | None) -> Response:
        if methods is None:
            return error_response(404, f"no such resource: {request.path}")
        handler = methods.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            allow = ",".join(sorted({*methods, "HEAD"} if "GET" in methods else set(methods)))
            return json_response({"error": f"method {request.method} not allowed; allowed: {allow}"},
                                 405, [("Allow", allow)])
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        except Unavailable as exc:
            return error_response(503, f"unavailable: {exc}")
        except Exception:
            log.exception("event=http_handler_error method=%s path=%.200s", request.method, request.path)
            return error_response(500, "internal error")

    # ---- node state ----------------------------------------------------------------------
    def _status(self) -> tuple[dict[str, Any], str | None]:
        """The latest published status, and why it is unusable if it is."""
        snap = self.snapshot()
        if snap is None:
            return {}, "node is starting"
        age = time.monotonic() - snap.at
        if age > STATUS_STALE_S:
            return snap.status, f"node status is {age:.1f}s old: the node loop is stuck"
        return snap.status, None

    async def health(self, request: Request) -> Response:
        st, problem = self._status()
        if not st:  # the same shape, with nothing known yet
            return error_response(503, problem or "no status", status="unhealthy", keys=None,
                                  node_id=None, role=None, term=None, leader_id=None)
        if problem is None and not st.get("healthy"):
            problem = "no leader known"
        body = {
            "status": "unhealthy" if problem else "healthy",
            "keys": str(st["keys"]),
            "node_id": st["id"],
            "role": st["role"],
            "term": st["term"],
            "leader_id": st["leader_id"] or None,
        }
        if problem:
            return json_response({**body, "error": problem}, 503)
        return json_response(body)

    async def ready(self, request: Request) -> Response:
        st, problem = self._status()
        if problem is None and not st.get("ready"):
            problem = ("no leader known" if not st.get("healthy")
                       else "still applying what was committed when the node started")
        if problem:
            return error_response(503, problem, status="not ready")
        return json_response({"status": "ready", "node_id": st["id"], "leader_id": st["leader_id"],
                              "applied": st["applied"]})

    async def cluster(self, request: Request) -> Response:
        """Every member, as the leader sees them; with no leader, 503 with this node's own
        view in "nodes", so the web view still shows what it can."""
        try:
            reply = _checked(await self.forward.leader_call({"op": protocol.Op.CLUSTER.value}))
        except NoLeader as exc:
            own = await self.forward.local_call({"op": protocol.Op.STATUS.value})
            nodes = [{**own["status"], "reachable": True}] if own.get("code") == Code.OK.value else []
            return json_response({"error": f"unavailable: no leader ({exc})", "nodes": nodes}, 503)
        return json_response(reply["nodes"])

    async def metrics_text(self, request: Request) -> Response:
        if self.metrics is None:
            return error_response(404, "metrics are not enabled")
        node = _checked(await self.forward.local_call({"op": protocol.Op.METRICS.value}))
        node_text = self.metrics.with_rest_rate_limited(node["text"].encode())
        return Response(200, node_text + self.metrics.exposition(), METRICS_CONTENT_TYPE)

    async def openapi_json(self, request: Request) -> Response:
        return Response(200, self.openapi, JSON_TYPE)

    # ---- keys and values --------------------------------------------------------------------
    async def kv_get(self, request: Request) -> Response:
        key = _key(request)
        consistency = _consistency(_query(request))
        call = {"op": protocol.Op.GET.value, "key": key, "consistency": consistency}
        if consistency == protocol.CONSISTENCY_SERIALIZABLE:
            reply = await self.forward.local_call(call)
        else:
            reply = await self.forward.leader_call(call)
        if reply.get("code") == Code.NOT_FOUND.value:
            return error_response(404, "key not found", key=key)
        return json_response({"key": key, "value": _checked(reply)["value"]})

    async def kv_put(self, request: Request) -> Response:
        key = _key(request)
        value = _value(request.body, self.max_value_bytes)
        call = {"op": protocol.Op.PUT.value, "key": key, "value": value}
        if request.headers.get(TRACE_HEADER) != "1":
            _checked(await self.forward.write(call))
            return json_response({"key": key, "value": value, "status": "ok"})
        reply = _checked(await self.forward.write({**call, "trace": True}))
        trace = {"http_received": request.received, **reply.get("trace", {}),
                 "http_answered": time.monotonic()}
        return json_response({"key": key, "value": value, "status": "ok", "trace": trace})

    async def kv_delete(self, request: Request) -> Response:
        key = _key(request)
        reply = _checked(await self.forward.write({"op": protocol.Op.DELETE.value, "key": key}))
        if not reply.get("deleted"):
            return error_response(404, "key not found", key=key)
        return json_response({"key": key, "status": "deleted"})

    async def kv_list(self, request: Request) -> Response:
        query = _query(request)
        prefix = query.get("prefix", "")
        if len(_utf8(prefix, "prefix")) > protocol.MAX_KEY_BYTES:
            raise BadRequest(400, f"prefix must be at most {protocol.MAX_KEY_BYTES} bytes")
        limit = _limit(query.get("limit"))
        consistency = _consistency(query)
        call = {"op": protocol.Op.LIST.value, "prefix": prefix, "limit": limit,
                "consistency": consistency}
        if consistency == protocol.CONSISTENCY_SERIALIZABLE:
            reply = await self.forward.local_call(call)
        else:
            reply = await self.forward.leader_call(call)
        # One small dumps per key rather than one for the whole list: the C encoder holds the
        # GIL throughout, and a long list must not stall the Raft loop of this process.
        entries = ", ".join(json.dumps({"key": k, "value": v}, ensure_ascii=False)
                            for k, v in _checked(reply)["items"])
        return Response(200, f'{{"keys": [{entries}]}}'.encode())

    # ---- watches ----------------------------------------------------------------------------
    async def watch(self, request: Request) -> Response:
        """An event stream (sse.py) from this node's history. From Last-Event-ID + 1 (a
        browser resuming), else from `rev`, else after the cluster's current revision, asked
        of the leader (ReadIndex), so that a write acknowledged before is never streamed as
        new nor missed. A start older than the history: 410 with the oldest revision held."""
        query = _query(request)
        selector = _watch_selector(query)
        start = _watch_start(request.headers.get("last-event-id"), query.get("rev"))
        if start is None:
            current = _checked(await self.forward.leader_call(
                {"op": protocol.Op.LIST.value, "prefix": "", "limit": 0,
                 "consistency": protocol.CONSISTENCY_LINEARIZABLE}))
            start = int(current["revision"]) + 1
        first = await self.watches.poll(selector, start, 0)
        if first.reply.get("code") == Code.COMPACTED.value:
            return error_response(410, str(first.reply.get("error")), oldest=first.reply.get("oldest"))
        _checked(first.reply)
        return Response(200, content_type=EVENT_STREAM_TYPE,
                        headers=[("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")],
                        stream=WatchStream(self.watches, selector, first, self.metrics))


def _watch_selector(query: dict[str, str]) -> dict[str, str]:
    """{"key": K} or {"prefix": P}: exactly one of them (an empty prefix: every key)."""
    if ("key" in query) == ("prefix" in query):
        raise BadRequest(400, "watch takes key=K or prefix=P (one of them)")
    name = "key" if "key" in query else "prefix"
    size = len(_utf8(query[name], name))
    least = 1 if name == "key" else 0
    if not least <= size <= protocol.MAX_KEY_BYTES:
        raise BadRequest(400, f"{name} must be {least} to {protocol.MAX_KEY_BYTES} bytes of UTF-8, "
                              f"got {size}")
    return {name: query[name]}


def _watch_start(last_event_id: str | None, rev: str | None) -> int | None:
    """The first revision to stream: after the last one a client saw, else `rev`; None: not
    asked (start after the current revision)."""
    if last_event_id is not None and last_event_id.strip():
        seen = _revision(last_event_id.strip(), "Last-Event-ID", least=0)
        return seen + 1
    return None if rev is None else _revision(rev, "rev", least=1)


def _revision(text: str, what: str, least: int) -> int:
    if not (text.isascii() and text.isdigit()) or not least <= int(text) < MAX_REVISION:
        raise BadRequest(400, f"{what} must be an integer from {least} to {MAX_REVISION - 1}, "
                              f"not {text[:40]!r}")
    return int(text)


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    """The node's answer if it is a success; else the matching HTTP error."""
    code = reply.get("code")
    if code == Code.OK.value:
        return reply
    status = _REPLY_STATUS.get(str(code), 500)
    raise BadRequest(status, str(reply.get("error") or code))


def _key(request: Request) -> str:
    """The key from the raw request path, percent-decoded as UTF-8 ("%2F" is a "/")."""
    try:
        key = urllib.parse.unquote(request.path[len(KV_PREFIX):], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(400, "key is not valid percent-encoded UTF-8") from None
    size = len(_utf8(key, "key"))
    if not 1 <= size <= protocol.MAX_KEY_BYTES:
        raise BadRequest(400, f"key must be 1 to {protocol.MAX_KEY_BYTES} bytes of UTF-8, got {size}")
    return key


def _query(request: Request) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(request.query, keep_blank_values=True, encoding="utf-8",
                                       errors="strict", max_num_fields=MAX_QUERY_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "query string is not valid percent-encoded UTF-8 "
                              f"(at most {MAX_QUERY_FIELDS} fields)") from None
    return dict(pairs)


def _consistency(query: dict[str, str]) -> str:
    consistency = query.get("consistency", protocol.CONSISTENCY_LINEARIZABLE)
    if consistency not in (protocol.CONSISTENCY_LINEARIZABLE, protocol.CONSISTENCY_SERIALIZABLE):
        raise BadRequest(400, "consistency must be linearizable or serializable")
    return consistency


def _limit(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise BadRequest(400, f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, not {text[:40]!r}")
    return int(text)


def _value(body: bytes, max_value_bytes: int) -> str:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest(400, 'body must be JSON: {"value": "..."}') from None
    if not isinstance(document, dict) or not isinstance(document.get("value"), str):
        raise BadRequest(400, 'body must be a JSON object with a string "value"')
    value = document["value"]
    size = len(_utf8(value, "value"))
    if size > max_value_bytes:
        raise BadRequest(413, f"value is {size} bytes, the limit is {max_value_bytes}")
    return value


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(400, f"{what} is not valid UTF-8 (lone surrogate)") from None
