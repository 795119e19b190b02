"""The live web view of the cluster (SPEC §5 `GET /`): static HTML, JavaScript and CSS
shipped in this package (raftkvd/http/web/), served from memory.

No build step and nothing fetched from elsewhere, so it works offline and on an isolated
network: the page polls this node's `/cluster` once a second and draws everything itself.
The files are read once, at start; only the names in WEB_FILES are ever served, so a
request path can never reach the file system.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from .connection import Request, Response, error_response

WEB_DIR = "web"
INDEX = "index.html"
STATIC_PREFIX = "/static/"
WEB_FILES = {
    INDEX: "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
"""File name -> Content-Type; index.html is served at `/`, the others at /static/NAME."""
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page loads its own script and stylesheet and fetches /cluster from its own origin;
nothing else, and nothing inline."""
_HEADERS = {
    "Cache-Control": "no-cache",  # revalidate: an upgraded node serves its new files at once
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class WebFile:
    body: bytes
    content_type: str


def load_web_files() -> dict[str, WebFile]:
    folder = resources.files(__package__).joinpath(WEB_DIR)
    return {name: WebFile(folder.joinpath(name).read_bytes(), content_type)
            for name, content_type in WEB_FILES.items()}


class WebView:
    """Handlers for `/` and `/static/{name}`."""

    def __init__(self) -> None:
        self.files = load_web_files()

    async def index(self, request: Request) -> Response:
        return self._file(INDEX)

    async def static(self, request: Request) -> Response:
        name = request.path[len(STATIC_PREFIX):]
        if name == INDEX or name not in self.files:
            return error_response(404, f"no such resource: {request.path}")
        return self._file(name)

    def _file(self, name: str) -> Response:
        file = self.files[name]
        return Response(200, file.body, f"{file.content_type}; charset=utf-8", list(_HEADERS.items()))
