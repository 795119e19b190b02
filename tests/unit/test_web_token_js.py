"""The web view with tokens on (SPEC §8, README): opened as /#token=TOKEN, app.js keeps the
token for the tab, drops it from the address bar and sends it as a bearer token on /cluster.
Run under Node.js with stand-ins for the browser's globals (skipped without `node`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

NODE = shutil.which("node")
HARNESS = r"""
// exercise takeToken() from app.js with stand-ins for the browser globals
const fs = require("fs");
const src = fs.readFileSync(process.argv[2], "utf8");
const store = {};
global.window = { location: { hash: "#token=rkv_abc%2Ddef", pathname: "/", search: "" } };
global.sessionStorage = { setItem: (k, v) => { store[k] = v; }, getItem: (k) => store[k] ?? null };
let replaced = null;
global.history = { replaceState: (a, b, url) => { replaced = url; } };
global.document = { getElementById: () => ({}), body: { dataset: {} } };
const calls = [];
global.fetch = async (url, opts) => {
  calls.push(opts.headers);
  return { status: 401, ok: false, json: async () => ({ error: "x" }) };
};
global.setTimeout = () => 0; global.clearTimeout = () => 0;
global.performance = { now: () => 0 };
global.AbortController = class { constructor() { this.signal = null; } abort() {} };
eval(src + "\n;globalThis.__token = token;");
setImmediate(() => console.log(JSON.stringify(
  { token: globalThis.__token, replaced, header: calls[0] && calls[0].Authorization })));
"""


@pytest.mark.skipif(NODE is None, reason="needs node (Node.js)")
def test_the_web_view_sends_the_token_from_the_url_fragment_and_drops_it(tmp_path: Path) -> None:
    assert NODE is not None
    script = tmp_path / "harness.js"
    script.write_text(HARNESS)
    app = resources.files("raftkvd.http").joinpath("web/app.js")
    with resources.as_file(app) as app_path:
        done = subprocess.run([NODE, str(script), str(app_path)], capture_output=True, text=True,
                              timeout=30)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"token": "rkv_abc-def", "replaced": "/", "header": "Bearer rkv_abc-def"}
