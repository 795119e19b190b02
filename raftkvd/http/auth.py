"""Who may make a REST request (SPEC §8): the bearer token's role against the role the
request needs (rest.py's ROLE table). Checked before a handler runs, so nothing of a refused
request reaches the node.

Error bodies name the token's name and role at most, never the token; the header's value is
never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from .connection import Request, Response, json_response
from .tokens import Role, TokenStore

BEARER = "bearer"
CHALLENGE = [("WWW-Authenticate", 'Bearer realm="raftkv"')]

RequiredRole = Callable[[str, str], Role]
"""(method, route template) -> the least role that may make the request."""


class Authorizer:
    """Checks one request; `store` is swapped whole on a reload (HttpServer.reload_tokens)."""

    def __init__(self, store: TokenStore, open_paths: Collection[str], public_routes: Collection[str],
                 required: RequiredRole) -> None:
        """`open_paths`: exact paths served to anyone ([security] open_paths); `public_routes`:
        route templates that carry no data (the web view's own files)."""
        self.store = store
        self.open_paths = frozenset(open_paths)
        self.public_routes = frozenset(public_routes)
        self.required = required

    def check(self, request: Request, route: str) -> Response | None:
        """None if the request may go on (and `request.client` names its token), else the
        401 or 403 answer."""
        if request.path in self.open_paths or route in self.public_routes:
            return None
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != BEARER or not token:
            return _unauthorized("this request needs an Authorization: Bearer token")
        entry = self.store.lookup(token)
        if entry is None:
            return _unauthorized("unknown or revoked token")
        request.client = f"token:{entry.name}"
        method = "GET" if request.method == "HEAD" else request.method
        needed = self.required(method, route)
        if entry.role < needed:
            return json_response({"error": f"token {entry.name} has role {entry.role.label}; "
                                           f"{method} {route} needs {needed.label}"}, 403)
        return None


def _unauthorized(message: str) -> Response:
    return json_response({"error": message}, 401, CHALLENGE)
