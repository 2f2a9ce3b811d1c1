"""How each upload ended — stored, or refused and why — counted for `status`, /admin and /metrics.

Counted twice on purpose: per hour in the database (durable, the same for every process and
replica, what `chitram-admin status` reads) and in the Prometheus counter (what a scraper rates).
"""

from __future__ import annotations

import logging
from enum import StrEnum

from litestar.exceptions import HTTPException
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from chitram.errors import PayloadTooLargeError, RateLimitedError
from chitram.images.processing import CorruptImage, ImageDimensionsTooLarge, UnsupportedImageType
from chitram.images.services import QuotaExceededError
from chitram.system.facts import count_upload_outcome

logger = logging.getLogger(__name__)


class UploadOutcome(StrEnum):
    STORED = "stored"
    TOO_LARGE = "too_large"
    NOT_AN_IMAGE = "not_an_image"
    TOO_MANY_PIXELS = "too_many_pixels"
    CORRUPT = "corrupt"
    UNSUPPORTED = "unsupported"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    OTHER = "other"


UPLOADS_TOTAL = Counter(
    "chitram_uploads_total", "Uploads by how they ended: stored, or the refusal reason.", ["outcome"]
)
for _outcome in UploadOutcome:  # every series exists from the start, so rate() sees the first refusal
    UPLOADS_TOTAL.labels(outcome=_outcome.value)

_SIMPLE: tuple[tuple[type[BaseException], UploadOutcome], ...] = (
    (PayloadTooLargeError, UploadOutcome.TOO_LARGE),
    (ImageDimensionsTooLarge, UploadOutcome.TOO_MANY_PIXELS),
    (CorruptImage, UploadOutcome.CORRUPT),
    (RateLimitedError, UploadOutcome.RATE_LIMITED),
    (QuotaExceededError, UploadOutcome.QUOTA),
)


def classify(exc: BaseException | None) -> UploadOutcome:
    """The outcome of an upload that raised `exc` (None: it was stored)."""
    if exc is None:
        return UploadOutcome.STORED
    for kind, outcome in _SIMPLE:
        if isinstance(exc, kind):
            return outcome
    if isinstance(exc, UnsupportedImageType):
        return _unsupported(exc)
    if isinstance(exc, HTTPException) and exc.status_code == 413:  # the server's body limit
        return UploadOutcome.TOO_LARGE
    return UploadOutcome.OTHER


def _unsupported(exc: UnsupportedImageType) -> UploadOutcome:
    """An image in a format we do not host (HEIC, TIFF, BMP, ICO) versus something that is no
    image at all (empty, a PDF, HTML, a ZIP…). processing.py names the former "… image"/"… icon"
    when it recognises the bytes; a test pins each case."""
    detail = exc.detail.lower()
    if detail.startswith("this looks like") and (" image," in detail or " icon," in detail):
        return UploadOutcome.UNSUPPORTED
    return UploadOutcome.NOT_AN_IMAGE


async def record_outcome(session: AsyncSession, outcome: UploadOutcome) -> None:
    """Count the outcome; never fails the request (the upload's own answer matters more)."""
    UPLOADS_TOTAL.labels(outcome=outcome.value).inc()
    try:
        await session.rollback()  # whatever the failed upload left open
        await count_upload_outcome(session, outcome.value)
    except Exception:  # e.g. the database is down: the upload's own answer says so
        logger.warning("could not count an upload outcome (%s)", outcome.value, exc_info=True)
        await _quiet_rollback(session)


async def _quiet_rollback(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception:  # nothing more to do for a dead connection
        logger.debug("rollback after a failed outcome count failed too", exc_info=True)
