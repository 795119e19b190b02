"""Bearer tokens for the REST API (SPEC §8): the tokens file, `raftkvd token add`, and the
lookup the HTTP process makes for each request.

The file holds one token a line, `NAME ROLE sha256:HEX`, and never a token itself: a token
is shown once, when it is made. A plain SHA-256 is enough here (no salt, no slow KDF): a
token is 256 random bits from `secrets`, so there is no dictionary to try and a preimage
search is out of reach; a fast hash also keeps the per-request check to one digest and one
dict lookup. The file is therefore not a secret to read, but it decides who may write:
it is created mode 0600, and one writable by group or others is refused.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TOKEN_BYTES = 32
"""256 bits of randomness per token."""
TOKEN_PREFIX = "rkv_"
"""Makes a leaked token recognisable (secret scanners, grep)."""
HASH_SCHEME = "sha256:"
FILE_MODE = 0o600
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_HASH_PATTERN = re.compile(HASH_SCHEME + r"[0-9a-f]{64}")
_HEADER = "# raftkvd tokens: NAME ROLE sha256:HEX (made by `raftkvd token add`; no tokens here)\n"


class TokenFileError(ValueError):
    """A tokens file that cannot be used, or a refused change to it; `str()` is one line
    naming the file (and never a token)."""


class Role(enum.IntEnum):
    """Each role may do what the ones below it may (SPEC §8)."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text[:20]!r} (read, write or admin)") from None


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: Role
    digest: str
    """HASH_SCHEME + the hex SHA-256 of the token."""


def digest_of(token: str) -> str:
    return HASH_SCHEME + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class TokenStore:
    """The tokens of one file, keyed by digest: a request costs one hash and one dict lookup."""

    def __init__(self, entries: Iterable[TokenEntry] = ()) -> None:
        self._by_digest = {entry.digest: entry for entry in entries}

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry of `token`, or None. The dict lookup compares digests, not tokens, so its
        timing tells a caller nothing usable about a token; the final compare is constant-time
        anyway, so the rule holds whatever the dict does."""
        digest = digest_of(token)
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        return entry


def parse_entries(text: str, path: Path) -> list[TokenEntry]:
    """The entries of a tokens file's text; TokenFileError naming the first bad line."""
    entries: list[TokenEntry] = []
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"tokens file {path} line {number}"
        if len(fields) != 3:
            raise TokenFileError(f"{where}: expected NAME ROLE {HASH_SCHEME}HEX")
        name, role_text, digest = fields
        if not NAME_PATTERN.fullmatch(name):
            raise TokenFileError(f"{where}: bad name (letters, digits, '_', '.', '@', '-'; up to 64)")
        if name in names:
            raise TokenFileError(f"{where}: name {name} appears twice")
        try:
            role = Role.parse(role_text)
        except ValueError as exc:
            raise TokenFileError(f"{where}: {exc}") from None
        if not _HASH_PATTERN.fullmatch(digest):
            raise TokenFileError(f"{where}: the hash must be {HASH_SCHEME} and 64 hex digits")
        names.add(name)
        entries.append(TokenEntry(name, role, digest))
    return entries


def read_entries(path: Path) -> list[TokenEntry]:
    """The entries of the tokens file at `path`; TokenFileError if it is missing, unreadable,
    writable by group or others, or malformed."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise TokenFileError(f"tokens file {path}: {reason}") from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise TokenFileError(f"tokens file {path} is writable by group or others "
                             f"(mode {stat.S_IMODE(mode):04o}); chmod go-w it")
    return parse_entries(text, path)


def load_store(path: Path) -> TokenStore:
    return TokenStore(read_entries(path))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def add_token(path: Path, name: str, role: Role, replace: bool = False) -> str:
    """Make a token for `name`, store its hash in `path` (created 0600 if missing) and return
    the token, the only time it exists outside its holder. An existing `name` is refused
    unless `replace`, which revokes that name's old token."""
    if not NAME_PATTERN.fullmatch(name):
        raise TokenFileError(f"{name[:70]!r} is not a token name (letters, digits, '_', '.', '@', "
                             "'-'; up to 64)")
    entries = read_entries(path) if path.exists() else []
    if any(entry.name == name for entry in entries) and not replace:
        raise TokenFileError(f"tokens file {path} already has a token named {name} "
                             "(--replace to revoke it and make a new one)")
    token = new_token()
    kept = [entry for entry in entries if entry.name != name]
    _write_entries(path, [*kept, TokenEntry(name, role, digest_of(token))])
    return token


def _write_entries(path: Path, entries: list[TokenEntry]) -> None:
    """Replace the file at once (a node reloading it sees the old or the new one, whole);
    the new file is 0600 from its first byte, then takes the owner, group and mode of the
    file it replaces (an operator's `chown raftkvd`, `chmod 0640` survive a `token add`)."""
    try:
        previous: os.stat_result | None = path.stat()
    except FileNotFoundError:
        previous = None
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            if previous is not None:
                _keep_ownership(fd, previous, path)
            out.write(_HEADER)
            out.writelines(f"{e.name} {e.role.label} {e.digest}\n" for e in entries)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _keep_ownership(fd: int, previous: os.stat_result, path: Path) -> None:
    """Owner and group first (only root may give a file away; anyone else keeps their own),
    then the mode, which chown may have cleared bits of."""
    if (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.fchown(fd, previous.st_uid, previous.st_gid)
        except PermissionError:
            raise TokenFileError(f"cannot keep the owner of tokens file {path} (uid {previous.st_uid}, "
                                 f"gid {previous.st_gid}): run `raftkvd token add` as that user "
                                 "or as root") from None
    os.fchmod(fd, stat.S_IMODE(previous.st_mode))
