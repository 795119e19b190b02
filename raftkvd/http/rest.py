"""The REST API of one node (SPEC §5): the aiohttp handlers, their validation and errors.

The handlers never touch the consensus core or LMDB: key-value requests, /cluster, /metrics
and the node's status travel over the node's own ZeroMQ client protocol (forward.py).
/health and /ready read the latest status, which the server polls from the node
(httpserver.StatusPoller). Validation happens here; meaning, at the node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from raftkv import protocol
from raftkv.protocol import Code
from raftkvd.errors import Unavailable
from raftkvd.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from raftkvd.metrics import HttpMetrics, Snapshot

from .forward import ForwardClient, NoLeader
from .webview import WebView

if TYPE_CHECKING:
    from .guards import ConnectionGuard

log = logging.getLogger(__name__)

BODY_SLACK_BYTES = 64 * 1024
"""Room for the JSON around a value of max_value_bytes (and some escapes) in a PUT body."""
BODY_TIMEOUT_S = 10.0
MAX_QUERY_FIELDS = 16
MAX_LIST_LIMIT = 2**32
STATUS_STALE_S = 2.0
"""A node whose latest status is older than this is stuck: /health says unhealthy."""
RETRY_AFTER_S = "1"
OPENAPI_RESOURCE = "openapi.json"
KV_PREFIX = "/kv/"
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
_JSON_CONTENT_TYPE = "application/json"
_REPLY_STATUS = {
    Code.INVALID.value: 400,
    Code.NOT_FOUND.value: 404,
    Code.COMPARE_FAILED.value: 409,
    Code.TOO_LARGE.value: 413,
    Code.NO_SPACE.value: 507,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """A request this API refuses before forwarding it: (HTTP status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(http_status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, http_status)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response; every 503 also says when to retry."""
    if status == 503:
        headers = {**(headers or {}), "Retry-After": RETRY_AFTER_S}
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode(), status=status,
        content_type=_JSON_CONTENT_TYPE, headers=headers,
    )


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
        guards: dict[asyncio.BaseTransport, ConnectionGuard] | None = None,
    ) -> None:
        self.forward = forward
        self.guards = guards if guards is not None else {}
        self.snapshot = snapshot
        self.metrics = metrics
        self.max_value_bytes = max_value_bytes
        self.body_limit = max_value_bytes + BODY_SLACK_BYTES
        self.openapi = _load_openapi()
        self.web = WebView()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.body_limit, middlewares=[self._middleware])
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/cluster", self.cluster)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/openapi.json", self.openapi_json)
        self.web.add_routes(app.router)  # GET /: the live web view
        app.router.add_get("/kv", self.kv_list)
        # any character, newlines included: the key itself is taken from the raw path (_key)
        app.router.add_get("/kv/{key:[\\s\\S]*}", self.kv_get)
        app.router.add_put("/kv/{key:[\\s\\S]*}", self.kv_put)
        app.router.add_delete("/kv/{key:[\\s\\S]*}", self.kv_delete)
        if self.metrics is not None:
            for route in app.router.routes():
                if route.method != "HEAD":
                    self.metrics.declare(route.method, route.resource.canonical, 200)
        return app

    # ---- errors and metrics, around every handler --------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        guard = self.guards.get(request.transport) if request.transport is not None else None
        if guard is not None:
            guard.busy += 1
        try:
            response = await self._answer(request, handler)
        finally:
            if guard is not None:
                guard.request_done()
        if self.metrics is not None:
            resource_ = getattr(request.match_info.route, "resource", None)
            route = resource_.canonical if resource_ is not None else UNMATCHED_ROUTE
            method = request.method if request.method in KNOWN_METHODS else "OTHER"
            self.metrics.observe(method, route, response.status, time.perf_counter() - started)
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.body_limit:
            # Answer from the header alone and drop the connection: the body is never read.
            response = error_response(
                413, f"request body is {length} bytes, the limit is {self.body_limit}"
            )
            response.force_close()
            return response
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        except Unavailable as exc:
            return error_response(503, f"unavailable: {exc}")
        except web.HTTPRequestEntityTooLarge:
            response = error_response(413, f"request body is over the limit of {self.body_limit} bytes")
            response.force_close()
            return response
        except web.HTTPException as exc:  # the router's 404 and 405
            if exc.status == 405:
                allow = exc.headers.get("Allow", "")
                return _json({"error": f"method {request.method} not allowed; allowed: {allow}"},
                             405, {"Allow": allow})
            if exc.status == 404:
                return error_response(404, f"no such resource: {request.path}")
            return error_response(exc.status, exc.reason)
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

    async def health(self, request: web.Request) -> web.Response:
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
            return _json({**body, "error": problem}, 503)
        return _json(body)

    async def ready(self, request: web.Request) -> web.Response:
        st, problem = self._status()
        if problem is None and not st.get("ready"):
            problem = ("no leader known" if not st.get("healthy")
                       else "still applying what was committed when the node started")
        if problem:
            return error_response(503, problem, status="not ready")
        return _json({"status": "ready", "node_id": st["id"], "leader_id": st["leader_id"],
                      "applied": st["applied"]})

    async def cluster(self, request: web.Request) -> web.Response:
        """Every member, as the leader sees them; with no leader, 503 with this node's own
        view in "nodes", so the web view still shows what it can."""
        try:
            reply = _checked(await self.forward.leader_call({"op": protocol.Op.CLUSTER.value}))
        except NoLeader as exc:
            own = await self.forward.local_call({"op": protocol.Op.STATUS.value})
            nodes = [{**own["status"], "reachable": True}] if own.get("code") == Code.OK.value else []
            return _json({"error": f"unavailable: no leader ({exc})", "nodes": nodes}, 503)
        return _json(reply["nodes"])

    async def metrics_text(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return error_response(404, "metrics are not enabled")
        node = _checked(await self.forward.local_call({"op": protocol.Op.METRICS.value}))
        response = web.Response(body=node["text"].encode() + self.metrics.exposition())
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self.openapi, content_type=_JSON_CONTENT_TYPE)

    # ---- keys and values --------------------------------------------------------------------
    async def kv_get(self, request: web.Request) -> web.Response:
        key = _key(request)
        consistency = _consistency(_query(request))
        call = {"op": protocol.Op.GET.value, "key": key, "consistency": consistency}
        if consistency == protocol.CONSISTENCY_SERIALIZABLE:
            reply = await self.forward.local_call(call)
        else:
            reply = await self.forward.leader_call(call)
        if reply.get("code") == Code.NOT_FOUND.value:
            return error_response(404, "key not found", key=key)
        return _json({"key": key, "value": _checked(reply)["value"]})

    async def kv_put(self, request: web.Request) -> web.Response:
        key = _key(request)
        value = _value(await self._body(request), self.max_value_bytes)
        _checked(await self.forward.write({"op": protocol.Op.PUT.value, "key": key, "value": value}))
        return _json({"key": key, "value": value, "status": "ok"})

    async def kv_delete(self, request: web.Request) -> web.Response:
        key = _key(request)
        reply = _checked(await self.forward.write({"op": protocol.Op.DELETE.value, "key": key}))
        if not reply.get("deleted"):
            return error_response(404, "key not found", key=key)
        return _json({"key": key, "status": "deleted"})

    async def kv_list(self, request: web.Request) -> web.Response:
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
        return web.Response(body=f'{{"keys": [{entries}]}}'.encode(), content_type=_JSON_CONTENT_TYPE)

    async def _body(self, request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                return await request.read()
        except TimeoutError:
            raise BadRequest(408, f"request body not received within {BODY_TIMEOUT_S:g}s") from None


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    """The node's answer if it is a success; else the matching HTTP error."""
    code = reply.get("code")
    if code == Code.OK.value:
        return reply
    status = _REPLY_STATUS.get(str(code), 500)
    raise BadRequest(status, str(reply.get("error") or code))


def _key(request: web.Request) -> str:
    """The key from the raw request path, percent-decoded as UTF-8 ("%2F" is a "/")."""
    raw = request.raw_path.partition("?")[0]
    if raw.startswith(KV_PREFIX):
        raw = raw[len(KV_PREFIX):]
        try:
            key = urllib.parse.unquote(raw, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(400, "key is not valid percent-encoded UTF-8") from None
    else:  # an absolute-form request target: trust the router's decoding
        key = request.match_info.get("key", "")
    size = len(_utf8(key, "key"))
    if not 1 <= size <= protocol.MAX_KEY_BYTES:
        raise BadRequest(400, f"key must be 1 to {protocol.MAX_KEY_BYTES} bytes of UTF-8, got {size}")
    return key


def _query(request: web.Request) -> dict[str, str]:
    raw = request.raw_path.partition("?")[2]
    try:
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, encoding="utf-8",
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
