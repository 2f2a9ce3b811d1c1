"""Page cursors that reveal nothing: the keyset position (an internal row id, which would tell how
many images were ever stored, private ones included) is encrypted and authenticated.

The construction is a deterministic authenticated encryption built from HMAC-SHA256 alone (SIV:
the tag is a MAC of the plaintext and is also the nonce of the keystream), with keys derived from
CHITRAM_SECRET_KEY for this purpose only. The same position always gives the same cursor, so
pages stay cacheable; a cursor is bound to its listing (the public gallery, one account's
images) and anything not minted by us is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from chitram.errors import InvalidRequestError
from chitram.security import derive_key

TAG_BYTES = 16  # 128-bit tag: forging a cursor is out of reach
POSITION_BYTES = 8
CURSOR_LENGTH = 32  # base64url of 24 bytes, no padding
_CURSOR = re.compile(rf"[A-Za-z0-9_-]{{{CURSOR_LENGTH}}}")


class InvalidCursorError(InvalidRequestError):
    problem_type = "invalid-cursor"
    title = "Invalid cursor"


class PageCursors:
    """Encodes keyset positions into opaque cursors and back."""

    def __init__(self, secret_key: str) -> None:
        base = derive_key(secret_key, "page-cursors").encode()
        self._mac_key = hmac.new(base, b"mac", hashlib.sha256).digest()
        self._stream_key = hmac.new(base, b"stream", hashlib.sha256).digest()

    def encode(self, listing: str, position: int) -> str:
        plain = position.to_bytes(POSITION_BYTES, "big")
        tag = self._tag(listing, plain)
        sealed = tag + _xor(plain, self._pad(tag))
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def decode(self, listing: str, cursor: str) -> int:
        """The position inside `cursor`; InvalidCursorError (400) for anything we did not mint
        for this listing."""
        if not _CURSOR.fullmatch(cursor):
            raise _invalid()
        try:
            sealed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise _invalid() from None
        tag, hidden = sealed[:TAG_BYTES], sealed[TAG_BYTES:]
        plain = _xor(hidden, self._pad(tag))
        if not hmac.compare_digest(tag, self._tag(listing, plain)):
            raise _invalid()
        return int.from_bytes(plain, "big")

    def _tag(self, listing: str, plain: bytes) -> bytes:
        message = listing.encode() + b"\x00" + plain
        return hmac.new(self._mac_key, message, hashlib.sha256).digest()[:TAG_BYTES]

    def _pad(self, tag: bytes) -> bytes:
        return hmac.new(self._stream_key, tag, hashlib.sha256).digest()[:POSITION_BYTES]


def _xor(data: bytes, pad: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, pad, strict=True))


def _invalid() -> InvalidCursorError:
    return InvalidCursorError(
        "the cursor is not valid: send back the next_cursor of the previous page unchanged, "
        "or leave it out to start from the first page"
    )
