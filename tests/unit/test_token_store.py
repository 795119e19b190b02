"""Bearer tokens (SPEC §8) without a cluster: the tokens file keeps hashes only and is made
0600; `raftkvd token add` prints a token once and refuses a name twice (exit 2) unless
--replace; the role table and the 401/403 answers (auth.py), which never echo a token."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from raftkvd.http.auth import Authorizer
from raftkvd.http.connection import Request, Response
from raftkvd.http.rest import KV_ROUTE, PUBLIC_ROUTES, required_role
from raftkvd.http.tokens import (
    Role,
    TokenFileError,
    add_token,
    digest_of,
    load_store,
    read_entries,
)


def raftkvd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKVD_")}
    return subprocess.run([sys.executable, "-m", "raftkvd", *args], capture_output=True,
                          text=True, timeout=30, env=env)


def test_token_add_prints_the_token_once_and_the_file_holds_only_its_hash(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    done = raftkvd("token", "add", "ci", "--role", "write", "--tokens-file", str(tokens))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and len(lines[0]) >= 40
    token = lines[0]
    text = tokens.read_text()
    assert token not in text and token not in done.stderr
    assert f"ci write {digest_of(token)}" in text
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    listed = raftkvd("token", "list", "--tokens-file", str(tokens))
    assert listed.stdout == "ci\twrite\n" and "sha256" not in listed.stdout


def test_adding_an_existing_name_is_refused_in_one_line_unless_replace(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    first = raftkvd("token", "add", "ci", "--role", "read", "--tokens-file", str(tokens)).stdout.strip()
    again = raftkvd("token", "add", "ci", "--role", "admin", "--tokens-file", str(tokens))
    assert again.returncode == 2 and again.stdout == ""
    assert len(again.stderr.splitlines()) == 1 and "already has a token named ci" in again.stderr
    assert load_store(tokens).lookup(first) is not None
    replaced = raftkvd("token", "add", "ci", "--role", "admin", "--tokens-file", str(tokens), "--replace")
    assert replaced.returncode == 0
    store = load_store(tokens)
    assert store.lookup(first) is None, "--replace revokes the old token"
    entry = store.lookup(replaced.stdout.strip())
    assert entry is not None and entry.role is Role.ADMIN and len(store) == 1


def test_token_add_keeps_the_owner_group_and_mode_of_the_file_it_rewrites(tmp_path: Path) -> None:
    """An operator installs the file as root:raftkvd 0640 (or raftkvd's own, 0600): adding a
    token must not turn it into root's 0600 file the daemon can no longer read."""
    path = tmp_path / "tokens"
    add_token(path, "first", Role.READ)
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    before = path.stat()
    add_token(path, "second", Role.WRITE)
    after = path.stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == \
        (before.st_uid, before.st_gid, 0o640)
    assert after.st_ino != before.st_ino, "replaced whole, not rewritten in place"
    assert [entry.name for entry in read_entries(path)] == ["first", "second"]


def test_tokens_are_distinct_and_unknown_ones_are_not_found(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    made = {add_token(tokens, f"n{i}", Role.READ) for i in range(5)}
    assert len(made) == 5
    store = load_store(tokens)
    assert all(store.lookup(t) is not None for t in made)
    assert store.lookup("rkv_" + "A" * 43) is None and store.lookup("") is None


def test_a_tokens_file_writable_by_others_is_refused_but_a_readable_one_is_not(tmp_path: Path) -> None:
    """It holds hashes only (nothing to steal by reading), but who may write it decides who
    gets in."""
    tokens = tmp_path / "tokens"
    add_token(tokens, "a", Role.READ)
    tokens.chmod(0o644)
    assert [e.name for e in read_entries(tokens)] == ["a"]
    tokens.chmod(0o620)
    with pytest.raises(TokenFileError, match="writable by group or others"):
        read_entries(tokens)


@pytest.mark.parametrize(("line", "reason"), [
    ("a read", "expected NAME ROLE"),
    ("a root sha256:" + "0" * 64, "unknown role"),
    ("a read md5:abc", "64 hex digits"),
    ("a read sha256:" + "0" * 64 + "\na write sha256:" + "1" * 64, "appears twice"),
])
def test_a_malformed_tokens_file_is_named_with_its_line(tmp_path: Path, line: str, reason: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(line + "\n")
    tokens.chmod(0o600)
    with pytest.raises(TokenFileError, match=reason) as caught:
        read_entries(tokens)
    assert f"tokens file {tokens} line" in str(caught.value)


def test_a_missing_tokens_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=f"tokens file {tmp_path / 'nope'}"):
        read_entries(tmp_path / "nope")


# ---- the check of each request ------------------------------------------------------------
@dataclass(frozen=True)
class Tokens:
    path: Path
    of: dict[Role, str]
    """role -> the token of the name "read", "write" or "admin"."""


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    path = tmp_path / "tokens"
    return Tokens(path, {role: add_token(path, role.label, role) for role in Role})


def check(tokens: Tokens, method: str, path: str, route: str,
          token: str | None) -> tuple[Response | None, Request]:
    auth = Authorizer(load_store(tokens.path), ["/health"], PUBLIC_ROUTES, required_role)
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    request = Request(method, path, path, "", headers, client="addr:127.0.0.1")
    return auth.check(request, route), request


@pytest.mark.parametrize(("role", "method", "route", "allowed"), [
    (Role.READ, "GET", KV_ROUTE, True),
    (Role.READ, "HEAD", "/cluster", True),
    (Role.READ, "PUT", KV_ROUTE, False),
    (Role.READ, "DELETE", KV_ROUTE, False),
    (Role.WRITE, "PUT", KV_ROUTE, True),
    (Role.WRITE, "DELETE", KV_ROUTE, True),
    (Role.WRITE, "POST", "/cluster", False),
    (Role.ADMIN, "POST", "/cluster", True),
    (Role.ADMIN, "PUT", KV_ROUTE, True),
])
def test_each_role_may_do_what_the_role_table_says(tokens: Tokens, role: Role, method: str,
                                                   route: str, allowed: bool) -> None:
    refused, request = check(tokens, method, "/kv/x", route, tokens.of[role])
    if allowed:
        assert refused is None
    else:
        assert refused is not None and refused.status == 403
        assert tokens.of[role] not in refused.body.decode()
    assert request.client == f"token:{role.label}"


def test_no_or_an_unknown_token_is_401_with_a_bearer_challenge(tokens: Tokens) -> None:
    wrong = "rkv_not-a-token-at-all"
    for token in (None, wrong, ""):
        refused, request = check(tokens, "GET", "/kv/x", KV_ROUTE, token)
        assert refused is not None and refused.status == 401
        assert ("WWW-Authenticate", 'Bearer realm="raftkv"') in refused.headers
        assert wrong not in refused.body.decode() and "error" in json.loads(refused.body)
        assert request.client == "addr:127.0.0.1"


def test_open_paths_and_the_web_views_files_need_no_token(tokens: Tokens) -> None:
    assert check(tokens, "GET", "/health", "/health", None)[0] is None
    assert check(tokens, "GET", "/", "/", None)[0] is None
    refused = check(tokens, "GET", "/health/x", "/health/x", None)[0]
    assert refused is not None and refused.status == 401, "open paths match exactly"
    refused = check(tokens, "GET", "/cluster", "/cluster", None)[0]
    assert refused is not None and refused.status == 401, "the web view's data needs a token"
