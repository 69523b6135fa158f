"""Signed, expiring links: a URL that grants one thing, to whoever holds it, for a while.

Used where a browser fetches a file without sending a form (a call recording in
an ``<audio>`` tag).  The link names what it grants and until when, and carries
an HMAC-SHA256 over both and its purpose; nothing else (no path) is in it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(secret: bytes, purpose: str, body: str) -> str:
    return _b64(hmac.digest(secret, f"{purpose}\x00{body}".encode(), hashlib.sha256)[:20])


def sign_link(
    secret: bytes, purpose: str, value: str, ttl_s: float, now: float | None = None
) -> str:
    """A token granting ``value`` for ``purpose`` until ``ttl_s`` seconds from now."""
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{_b64(value.encode())}.{expires:x}"
    return f"{body}.{_mac(secret, purpose, body)}"


def verify_link(secret: bytes, purpose: str, token: str, now: float | None = None) -> str | None:
    """The value a token grants, or None if it is forged, altered, expired or malformed."""
    try:
        encoded, expires_hex, mac = token.split(".")
        expires = int(expires_hex, 16)
        value = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(_mac(secret, purpose, f"{encoded}.{expires_hex}"), mac):
        return None
    if (time.time() if now is None else now) > expires:
        return None
    return value
