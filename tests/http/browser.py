"""Headless Chromium (Debian's `chromium` package) for the web-view tests: the DOM a page has
after its scripts ran, parsed into something to assert on, and screenshots.

`make test` installs the browser when it is missing and it runs as root
(scripts/ensure-test-tools.sh); elsewhere the tests that need it skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_ENV = "CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIRTUAL_TIME_BUDGET_MS = 5000
"""Virtual time the page runs before the DOM or the screenshot is taken: about five polls
of /cluster (virtual time stands still while a request is in flight)."""
RUN_TIMEOUT_S = 90.0
WINDOW_SIZE = (1280, 800)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)
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
    """One fresh browser profile (under `profile`) per run; every run is bounded in time and
    leaves no process behind (its whole process group is killed on a timeout)."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.executable = executable
        self.profile = profile

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [self.executable, *FLAGS, f"--user-data-dir={self.profile}",
                   f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", *args]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the browser we started
            out, err = proc.communicate()
            raise AssertionError(
                f"chromium did not finish within {RUN_TIMEOUT_S:g}s: {err[-2000:]}") from None
        if proc.returncode != 0:
            raise AssertionError(f"chromium exited {proc.returncode}: {err[-2000:]}")
        return subprocess.CompletedProcess(command, proc.returncode, out, err)

    def dump_dom(self, url: str) -> Dom:
        """The page's DOM after its scripts ran for the virtual time budget."""
        return Dom.parse(self._run("--dump-dom", url).stdout)

    def screenshot(self, url: str, path: Path) -> tuple[int, int]:
        """A PNG of the page at WINDOW_SIZE; returns its (width, height)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        width, height = WINDOW_SIZE
        self._run(f"--window-size={width},{height}", f"--screenshot={path}", url)
        return png_size(path.read_bytes())


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
