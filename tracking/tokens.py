"""Tracking tokens: a recipient's id, signed, so a pixel or a link names who read what.

A token is ``<key id>.<recipient id, base 36>.<HMAC-SHA256, 16 bytes, base64url>``.
The first configured key signs; every key verifies, found by its id, so keys
can be rotated (new key first) without breaking mail sent before.  A token
for the CRM's own preview is signed for another purpose and never counts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

TRACK = "track"
PREVIEW = "preview"
_MAC_BYTES = 16
VERIFIED_CACHE_SIZE = 50_000


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"rapport tracking key id\x00" + key).hexdigest()[:6]


@dataclass(frozen=True)
class Verified:
    recipient_id: int
    purpose: str


class TokenSigner:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("tracking needs at least one signing key")
        if any(len(k) < 16 for k in keys):
            raise ValueError("a tracking key must be at least 16 bytes")
        self._signing = keys[0]
        self._by_id = {key_id(k): k for k in keys}
        self._verified: dict[str, Verified] = {}

    @staticmethod
    def _mac(key: bytes, purpose: str, body: str) -> str:
        digest = hmac.digest(key, f"{purpose}\x00{body}".encode(), "sha256")
        return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).rstrip(b"=").decode()

    def sign(self, recipient_id: int, purpose: str = TRACK) -> str:
        body = f"{key_id(self._signing)}.{_base36(recipient_id)}"
        return f"{body}.{self._mac(self._signing, purpose, body)}"

    def verify(self, token: str) -> Verified | None:
        """The recipient a token names and what for, or None if it is not one of ours.

        Tokens that checked out are remembered (a pixel is fetched again and
        again); a forged one costs its HMACs every time.
        """
        known = self._verified.get(token)
        if known is not None:
            return known
        found = self._verify(token)
        if found is not None:
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = found
        return found

    def _verify(self, token: str) -> Verified | None:
        kid, _, rest = token.partition(".")
        encoded, _, mac = rest.partition(".")
        key = self._by_id.get(kid)
        if key is None or not encoded or len(encoded) > 13 or not mac:
            return None
        body = f"{kid}.{encoded}"
        for purpose in (TRACK, PREVIEW):
            if hmac.compare_digest(self._mac(key, purpose, body), mac):
                try:
                    return Verified(int(encoded, 36), purpose)
                except ValueError:
                    return None
        return None


def _base36(number: int) -> str:
    if number < 0:
        raise ValueError("recipient ids are positive")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out
