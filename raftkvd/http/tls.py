"""HTTPS on a node's http address (SPEC §8): the server's ssl.SSLContext, and a one-line
reason naming the file when the certificate or key cannot be used.

TLS 1.2 at least: older versions are broken or deprecated everywhere (RFC 8996). The key is
never prompted for: an encrypted key is refused, since a daemon has no one to ask.
"""

from __future__ import annotations

import ssl
from pathlib import Path

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsError(ValueError):
    """A certificate or key that cannot be loaded; `str()` is one line naming the file."""


def _no_password() -> bytes:
    """OpenSSL would prompt on the terminal for an encrypted key; an empty one fails it."""
    return b""


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server context for `cert_file` (PEM, the chain after the certificate) and
    `key_file` (PEM, unencrypted); TlsError naming the file at fault."""
    for what, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsError(f"security.{what} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as exc:
        raise TlsError(_reason(cert_file, key_file, exc)) from None
    return context


def _reason(cert_file: Path, key_file: Path, exc: ssl.SSLError) -> str:
    """Which file load_cert_chain's error is about (OpenSSL's message does not say)."""
    try:
        ssl.create_default_context(cafile=str(cert_file))
    except ssl.SSLError:
        return f"security.tls_cert_file {cert_file}: not a PEM certificate"
    if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
        return f"security.tls_key_file {key_file} is not the key of certificate {cert_file}"
    return f"security.tls_key_file {key_file}: not an unencrypted PEM private key"


def client_context_unverified() -> ssl.SSLContext:
    """For a node asking its own port on loopback (healthcheck.py): the point is whether it
    answers, on a path that sends no token, so the certificate (issued for the node's public
    name, not for 127.0.0.1) is not checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
