"""Headless Chromium (Debian's `chromium` package) for the web-view tests: a live page driven
over the DevTools protocol (devtools.py), its DOM parsed into something to assert on, and
screenshots.

A page is read while it runs rather than dumped once its loading is over: the web view keeps
an EventSource open for good, so it never is.

`make test` installs the browser when it is missing and it runs as root
(scripts/ensure-test-tools.sh); elsewhere the tests that need it skip, saying why.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import devtools

CHROMIUM_ENV = "CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
WINDOW_SIZE = (1280, 800)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})


def chromium_path() -> str | None:
    """$CHROMIUM, else /usr/bin/chromium, else `chromium` on PATH; None when there is none."""
    candidate = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    if os.access(candidate, os.X_OK):
        return candidate
    return shutil.which("chromium")


MISSING_REASON = (
    f"headless Chromium not found ({DEFAULT_CHROMIUM} or ${CHROMIUM_ENV}): `make test` installs "
    "Debian's chromium package when run as root (scripts/ensure-test-tools.sh); otherwise "
    "`sudo apt-get install -y chromium`"
)


class Chromium:
    """Opens pages in a fresh browser profile (under `profile`), one browser per page."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.executable = executable
        self.profile = profile

    def open(self, url: str) -> BrowserPage:
        return BrowserPage(self.executable, self.profile, url)


class BrowserPage(devtools.Page):
    """A page as the web-view tests look at it, in a viewport of WINDOW_SIZE."""

    def __init__(self, executable: str, profile: Path, url: str) -> None:
        super().__init__(executable, profile, url)
        width, height = WINDOW_SIZE
        try:
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            page = url.partition("#")[0]  # the page may drop its fragment (app.js: a token)
            self.wait_for(f"{page} to load", f"location.href.split('#')[0] === {json.dumps(page)}"
                          " && document.readyState !== 'loading'", devtools.COMMAND_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def dom(self) -> Dom:
        """The page's DOM as it is now."""
        return Dom.parse(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path) -> tuple[int, int]:
        """A PNG of the page's viewport (WINDOW_SIZE); returns its (width, height)."""
        data = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return png_size(data)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; AssertionError if it is not a PNG."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text inside, whitespace collapsed."""
        return " ".join("".join(self.parts).split())

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class Dom(HTMLParser):
    """The elements of a page that tests look at: every element with an id (by id), every
    element with `data-node-id` (in document order), and the <body>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, Element] = {}
        self.nodes: list[Element] = []
        self.body: Element | None = None
        self._open: list[Element] = []

    @classmethod
    def parse(cls, html: str) -> Dom:
        dom = cls()
        dom.feed(html)
        dom.close()
        return dom

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        if "id" in element.attrs:
            self.by_id[element.attrs["id"]] = element
        if "data-node-id" in element.attrs:
            self.nodes.append(element)
        if tag == "body":
            self.body = element
        if tag not in _VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.parts.append(data)

    def text(self, element_id: str) -> str:
        return self.by_id[element_id].text
