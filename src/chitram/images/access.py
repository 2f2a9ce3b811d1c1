"""Who may see and change an image, and links to private images that expire.

- public: listed in the gallery; unlisted: anyone with the link; private: the owner (and
  administrators), or anyone holding a signed link until it expires.
- Changing or deleting: the owner, an administrator, or whoever holds the image's delete token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, true

from chitram.accounts.auth import Viewer
from chitram.images.models import Image, Visibility
from chitram.images.schemas import CachedImage
from chitram.security import derive_key

# Expiry is rounded up to the next whole quarter hour, so links minted for the same image
# around the same time are the same URL and browsers can reuse what they fetched.
EXPIRY_GRANULARITY = 900
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
SIGNATURE_BYTES = 16  # 128 bits: forging is out of reach, the URL stays short


def can_view(image: CachedImage, viewer: Viewer | None) -> bool:
    if image.visibility is not Visibility.PRIVATE:
        return True
    return viewer is not None and (viewer.is_admin or viewer.id == image.owner_id)


def visible_to(viewer: Viewer | None) -> ColumnElement[bool]:
    """`can_view` as a SQL condition, so that a query finds exactly the images `viewer` may see:
    a private image and an id that never existed are then the same empty result of the same query."""
    if viewer is not None and viewer.is_admin:
        return true()
    not_private = Image.visibility != Visibility.PRIVATE.value
    if viewer is None:
        return not_private
    return or_(not_private, Image.owner_id == viewer.id)


def can_manage(image: CachedImage, viewer: Viewer | None) -> bool:
    return viewer is not None and (viewer.is_admin or (image.owner_id is not None and viewer.id == image.owner_id))


@dataclass(frozen=True)
class SignedLink:
    expires: int  # Unix time
    signature: str

    @property
    def query(self) -> str:
        return f"expires={self.expires}&signature={self.signature}"


class LinkSigner:
    """HMAC-SHA256 over the image id and the expiry, with a key derived for this purpose only."""

    def __init__(self, secret_key: str) -> None:
        self._key = derive_key(secret_key, "signed-image-links").encode()

    def sign(self, public_id: str, lifetime_seconds: int, *, now: float | None = None) -> SignedLink:
        now = time.time() if now is None else now
        expires = math.ceil((now + lifetime_seconds) / EXPIRY_GRANULARITY) * EXPIRY_GRANULARITY
        return SignedLink(expires=expires, signature=self._signature(public_id, expires))

    def seconds_left(self, public_id: str, expires: str | None, signature: str | None) -> int | None:
        """For a genuine link, the seconds until it expires (zero or less: expired); None when the
        link is absent, malformed or tampered with."""
        # ASCII digits without a leading zero: one spelling per link ("²".isdigit() is true too).
        if not expires or not signature or not _EXPIRES.fullmatch(expires):
            return None
        expected = self._signature(public_id, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return None
        return int(expires) - int(time.time())

    def _signature(self, public_id: str, expires: int) -> str:
        digest = hmac.new(self._key, f"{public_id}:{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:SIGNATURE_BYTES]).decode().rstrip("=")
