"""The rules for images: upload, read, list, update, delete — and the shared, counted blobs.

Blob lifecycle (why it is safe under concurrency): every change to a blob's `refcount` and
every removal of its objects happens while holding that blob's row lock (PostgreSQL row
lock; SQLite's single writer lock). An upload takes the lock by incrementing and then writes
the objects (every upload does, so that a duplicate costs what new content costs). Collection deletes the row only while
`refcount = 0` and removes the objects before committing, so an upload of the same content
either sees the row gone and writes the objects again, or keeps the row alive.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, delete, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from chitram.accounts.auth import Viewer
from chitram.accounts.models import User
from chitram.errors import (
    ChitramError,
    ForbiddenError,
    InvalidRequestError,
    NotAuthenticatedError,
    NotFoundError,
    format_bytes,
)
from chitram.images.access import can_manage, visible_to
from chitram.images.cursors import PageCursors
from chitram.images.models import Blob, Image, Visibility
from chitram.images.processing import ImageProcessor, ProcessedImage
from chitram.images.schemas import CachedImage, StoredVariant
from chitram.images.text import clean_text
from chitram.metrics import count_image_cache
from chitram.storage import ObjectStorage, StorageUnavailable
from chitram.stores import SafeCache
from chitram.system.facts import IMAGES, STORED_BYTES, add_to_counters

logger = logging.getLogger(__name__)

PUBLIC_ID_BYTES = 9  # 72 random bits, 12 URL-safe characters
DELETE_TOKEN_BYTES = 32
MAX_PAGE_SIZE = 100
MAX_TITLE_LENGTH = 200
CACHE_PREFIX = "image:"
_PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{12}")
PUBLIC_LISTING = "public"


class UploadAbandonedError(ChitramError):
    status_code = 503
    problem_type = "upload-abandoned"
    title = "Upload not stored"


@dataclass
class UploadDeadline:
    """When an upload must be stored by (a time.monotonic() value), and whether its client still
    waits. Past either, the upload is abandoned with nothing kept: an image committed after its
    uploader gave up would exist without anyone ever receiving its delete token."""

    at: float
    seconds: float
    client_gone: Callable[[], bool] = field(default=lambda: False)

    @classmethod
    def starting_now(cls, seconds: float, client_gone: Callable[[], bool] | None = None) -> UploadDeadline:
        return cls(time.monotonic() + seconds, seconds, client_gone or (lambda: False))

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        if self.client_gone():
            raise UploadAbandonedError("the client went away before the upload was stored; nothing was kept")
        if self.remaining() <= 0:
            raise self.expired()

    def expired(self) -> UploadAbandonedError:
        return UploadAbandonedError(
            f"the upload could not be stored within {self.seconds:g} seconds (the database or storage is "
            "slow); nothing was kept, send it again",
            headers={"Retry-After": "30"},
        )

    def scope(self) -> AbstractContextManager[object]:
        """Cancels the work at the deadline (plus a moment, so the database's own limit, set by
        `bound_transaction`, ends a stalled transaction first)."""
        return anyio.fail_after(max(0.0, self.remaining()) + DEADLINE_GRACE_SECONDS)


# Our side gives up this long after the database's own idle limit for the transaction has passed.
DEADLINE_GRACE_SECONDS = 0.5


def new_public_id() -> str:
    return secrets.token_urlsafe(PUBLIC_ID_BYTES)


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def object_keys(sha256: str, extension: str) -> tuple[str, str, str]:
    """Keys derive from the content hash only; nothing a user sends ever becomes part of one."""
    shard = f"{sha256[:2]}/{sha256[2:4]}/{sha256}"
    return f"originals/{shard}.{extension}", f"thumbnails/{shard}.webp", f"previews/{shard}.webp"


def clean_title(raw: str | None) -> str | None:
    if raw is None:
        return None
    title = clean_text(raw)
    if len(title) > MAX_TITLE_LENGTH:
        raise InvalidRequestError(f"the title is {len(title)} characters long; the limit is {MAX_TITLE_LENGTH}")
    return title or None


def parse_visibility(raw: str | None) -> Visibility:
    if raw is None or raw == "":
        return Visibility.UNLISTED
    try:
        return Visibility(raw.strip().lower())
    except ValueError:
        allowed = " or ".join(f"'{v.value}'" for v in Visibility)
        raise InvalidRequestError(f"visibility '{raw}' is not known; use {allowed}") from None


def to_cached(image: Image) -> CachedImage:
    blob = image.blob
    return CachedImage(
        public_id=image.public_id,
        title=image.title,
        visibility=Visibility(image.visibility),
        original_filename=image.original_filename,
        created_at=image.created_at,
        sha256=blob.sha256,
        extension=blob.original_key.rsplit(".", 1)[-1],
        original=StoredVariant(blob.original_key, blob.size, blob.width, blob.height, blob.content_type),
        thumbnail=StoredVariant(
            blob.thumbnail_key, blob.thumbnail_size, blob.thumbnail_width, blob.thumbnail_height, "image/webp"
        ),
        preview=StoredVariant(
            blob.preview_key, blob.preview_size, blob.preview_width, blob.preview_height, "image/webp"
        ),
        delete_token_hash=image.delete_token_hash,
        owner_id=image.owner_id,
    )


class QuotaExceededError(ChitramError):
    status_code = 413
    problem_type = "quota-exceeded"
    title = "Storage quota exceeded"


@dataclass(frozen=True)
class UploadResult:
    image: CachedImage
    delete_token: str


class ImageService(SQLAlchemyAsyncRepositoryService[Image]):
    """Images and their blobs. Handlers get one per request by dependency injection."""

    class Repository(SQLAlchemyAsyncRepository[Image]):
        model_type = Image

    repository_type = Repository

    def __init__(
        self,
        session: AsyncSession,
        *,
        storage: ObjectStorage,
        cache: SafeCache,
        processor: ImageProcessor,
        cursors: PageCursors | None = None,
    ) -> None:
        super().__init__(session=session)
        self.session = session
        self.storage = storage
        self.cache = cache
        self.processor = processor
        self.cursors = cursors  # needed by the listings only

    # -- reads -------------------------------------------------------------------------

    async def cached_image(self, public_id: str) -> CachedImage | None:
        """A public or unlisted image from the cache, when it is warm. Private images are never
        cached: a warm entry would answer faster than an id that does not exist."""
        _check_public_id(public_id)
        return await self._cached(public_id)

    async def load_image_for(self, public_id: str, viewer: Viewer | None, *, signed: bool = False) -> CachedImage:
        """The image from the database if `viewer` (or a genuine signed link) may see it.

        One query whose filter is the visibility rule: for anyone who may not see it, a private
        image and an unknown id are the same empty result of the same statement, and neither
        leaves anything in the cache.
        """
        _check_public_id(public_id)
        condition = true() if signed else visible_to(viewer)
        statement = select(Image).where(Image.public_id == public_id, condition)
        image = (await self.session.scalars(statement)).one_or_none()
        result = to_cached(image) if image is not None else None
        await self.session.rollback()  # end the read transaction (rollback expires loaded objects)
        if result is None:
            raise image_not_found(public_id)
        if result.visibility is not Visibility.PRIVATE:
            await self.cache.add(CACHE_PREFIX + public_id, msgspec.json.encode(result))
        return result

    async def get_image_for(self, public_id: str, viewer: Viewer | None) -> CachedImage:
        """The image if `viewer` may see it; a private image is "not found" for everyone else,
        at the same cost as an id that does not exist."""
        cached = await self.cached_image(public_id)
        if cached is not None:
            return cached
        return await self.load_image_for(public_id, viewer)

    async def get_managed_image(self, public_id: str, viewer: Viewer | None) -> CachedImage:
        """The image if `viewer` owns it or is an administrator; others learn nothing more than
        `get_image_for` tells them."""
        if viewer is None:
            raise NotAuthenticatedError("log in to change your images")
        image = await self.get_image_for(public_id, viewer)
        if not can_manage(image, viewer):
            raise ForbiddenError("this image belongs to someone else; only its owner can change it")
        return image

    async def _cached(self, public_id: str) -> CachedImage | None:
        cached = await self._decode_cached(public_id)
        count_image_cache(hit=cached is not None)
        return cached

    async def _decode_cached(self, public_id: str) -> CachedImage | None:
        raw = await self.cache.get(CACHE_PREFIX + public_id)
        if raw is None:
            return None
        try:
            cached = msgspec.json.decode(raw, type=CachedImage)
        except msgspec.DecodeError:
            # Written by another version during a rolling deploy: treat it as a miss.
            logger.warning("ignoring an unreadable cache entry for %s", public_id)
            await self.cache.invalidate(CACHE_PREFIX + public_id)
            return None
        # Older versions cached private images too; such an entry is a miss until it expires.
        return None if cached.visibility is Visibility.PRIVATE else cached

    async def list_public(self, *, limit: int, cursor: str | None) -> tuple[list[CachedImage], str | None]:
        """Public images, newest first, one keyset page (cost independent of how many exist)."""
        condition = Image.visibility == Visibility.PUBLIC.value
        return await self._keyset_page(condition, listing=PUBLIC_LISTING, limit=limit, cursor=cursor)

    async def list_newest(self, *, limit: int, cursor: str | None) -> tuple[list[CachedImage], str | None]:
        """Every image of every visibility, newest first (for operators): walks the primary key."""
        return await self._keyset_page(true(), listing="operator", limit=limit, cursor=cursor)

    async def list_owned(
        self, owner_id: int, *, limit: int, cursor: str | None
    ) -> tuple[list[CachedImage], str | None]:
        """One account's images of every visibility, newest first, one keyset page."""
        return await self._keyset_page(
            Image.owner_id == owner_id, listing=f"owner:{owner_id}", limit=limit, cursor=cursor
        )

    async def _keyset_page(
        self, condition: ColumnElement[bool], *, listing: str, limit: int, cursor: str | None
    ) -> tuple[list[CachedImage], str | None]:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        if self.cursors is None:
            raise RuntimeError("this ImageService was made without page cursors; pass cursors= to list")
        statement = select(Image).where(condition)
        if cursor:
            statement = statement.where(Image.id < self.cursors.decode(listing, cursor))
        statement = statement.order_by(Image.id.desc()).limit(limit + 1)
        rows: Sequence[Image] = (await self.session.scalars(statement)).all()
        page = list(rows[:limit])
        next_cursor = self.cursors.encode(listing, page[-1].id) if len(rows) > limit else None
        result = [to_cached(image) for image in page]
        await self.session.rollback()  # end the read transaction
        return result, next_cursor

    async def owned_ids(self, owner_id: int) -> list[str]:
        statement = select(Image.public_id).where(Image.owner_id == owner_id).order_by(Image.id)
        ids = list((await self.session.scalars(statement)).all())
        await self.session.rollback()
        return ids

    async def disown(self, owner_id: int) -> int:
        """Leave an account's public and unlisted images online without an owner (their links and
        delete tokens keep working); nobody could ever see its private ones again, so they go."""
        private = select(Image.public_id).where(
            Image.owner_id == owner_id, Image.visibility == Visibility.PRIVATE.value
        )
        private_ids = list((await self.session.scalars(private)).all())
        await self.session.rollback()
        for public_id in private_ids:
            await self.delete_image(public_id=public_id, delete_token=None, viewer=Viewer.account(owner_id))
        await self.session.rollback()
        kept = (await self.session.scalars(select(Image.public_id).where(Image.owner_id == owner_id))).all()
        await self.session.execute(update(Image).where(Image.owner_id == owner_id).values(owner_id=None))
        await self.session.execute(update(User).where(User.id == owner_id).values(used_bytes=0))
        await self.session.commit()
        for public_id in kept:
            await self.cache.invalidate(CACHE_PREFIX + public_id)
        return len(private_ids)

    # -- upload ------------------------------------------------------------------------

    async def upload_image(
        self,
        *,
        source: Path,
        filename: str | None,
        title: str | None,
        visibility: Visibility,
        owner_id: int | None = None,
        quota_bytes: int = 0,
        size: int = 0,
        deadline: UploadDeadline | None = None,
    ) -> UploadResult:
        """Store an upload. `size` (of the file at `source`) lets the quota refuse it before decoding.
        With a `deadline`, nothing is committed after it or once the client is gone."""
        if visibility is Visibility.PRIVATE and owner_id is None:
            raise InvalidRequestError("only signed-in uploads can be private; log in or choose 'unlisted'")
        if owner_id is not None and quota_bytes:
            await self._check_quota(owner_id, size, quota_bytes)
        processed = await self.processor.process(source)
        delete_token = secrets.token_urlsafe(DELETE_TOKEN_BYTES)
        image = Image(
            public_id=new_public_id(),
            title=title,
            visibility=visibility.value,
            original_filename=_safe_stored_filename(filename),
            delete_token_hash=hash_token(delete_token),
            blob_sha256=processed.sha256,
            owner_id=owner_id,
        )
        if deadline is not None:
            deadline.check()
        limit: AbstractContextManager[object] = deadline.scope() if deadline is not None else nullcontext()
        stage = "reserve"
        try:
            with limit:
                await self._reserve_blob(processed)
                stage = "store"
                await self._bound_transaction(deadline)
                if owner_id is not None:
                    await self._charge_quota(owner_id, len(processed.original), quota_bytes)
                blob, first_reference = await self._reference_blob(processed)
                self.session.add(image)
                await self.session.flush()
                # Content already stored (a duplicate upload) adds an image but no bytes.
                stored = stored_bytes(blob) if first_reference else 0
                await add_to_counters(self.session, {IMAGES: 1, STORED_BYTES: stored})
                if deadline is not None:
                    # The last moment to give up cleanly: the client is gone, or time is up.
                    deadline.check()
                    await self._bound_transaction(deadline)
                stage = "commit"
                await self.session.commit()
        except StorageUnavailable:
            # Storage is down: cleaning up now would only wait for it again. The blob stays
            # at refcount 0 and `chitram-admin gc` removes whatever was written.
            await self.session.rollback()
            raise
        except BaseException as error:
            await self.session.rollback()
            if stage == "commit":
                # The commit was sent, and its answer never came (or came as an error): undo it
                # in case the database carried it out.
                await self._undo_upload(image.public_id, delete_token)
            await self.collect_blob(processed.sha256, quiet=True)
            if isinstance(error, TimeoutError) and deadline is not None:
                raise deadline.expired() from error
            raise
        image.blob = blob
        return UploadResult(image=to_cached(image), delete_token=delete_token)

    async def _bound_transaction(self, deadline: UploadDeadline | None) -> None:
        """On PostgreSQL, make the server itself end this transaction if it sits idle past the
        deadline: a COMMIT held up on the way (a stalled network, a paused server) then finds
        its transaction gone instead of storing an upload whose client has given up."""
        if deadline is None or self.session.get_bind().dialect.name != "postgresql":
            return
        milliseconds = max(1, int(deadline.remaining() * 1000))
        await self.session.execute(
            select(func.set_config("idle_in_transaction_session_timeout", str(milliseconds), True))
        )

    async def _undo_upload(self, public_id: str, delete_token: str) -> None:
        try:
            await self.delete_image(public_id=public_id, delete_token=delete_token, viewer=None)
        except NotFoundError:
            pass  # not committed: nothing to undo
        except Exception:
            logger.error(
                "could not check whether upload %s was stored after its commit failed; "
                "`chitram-admin gc` and the delete token cannot help, remove it by hand if it exists",
                public_id,
                exc_info=True,
            )

    async def _check_quota(self, owner_id: int, size: int, quota_bytes: int) -> None:
        """Fail fast, before decoding, when the file alone cannot fit."""
        used = (await self.session.scalars(select(User.used_bytes).where(User.id == owner_id))).one_or_none()
        await self.session.rollback()
        if used is not None and used + size > quota_bytes:
            raise _quota_exceeded(size, used, quota_bytes)

    async def _charge_quota(self, owner_id: int, size: int, quota_bytes: int) -> None:
        """Count the bytes against the account in the upload's transaction: one conditional
        UPDATE, so concurrent uploads cannot together overshoot the quota."""
        # A disabled account (or one being deleted) takes no more images, even from an upload
        # that was let in just before.
        statement = (
            update(User)
            .where(User.id == owner_id, User.is_disabled.is_(False))
            .values(used_bytes=User.used_bytes + size)
        )
        if quota_bytes:
            statement = statement.where(User.used_bytes + size <= quota_bytes)
        if (await self.session.execute(statement.returning(User.id))).scalar_one_or_none() is None:
            row = (
                await self.session.execute(select(User.used_bytes, User.is_disabled).where(User.id == owner_id))
            ).one_or_none()
            if row is None or row.is_disabled:
                raise ForbiddenError("the account this upload belongs to is disabled or deleted")
            raise _quota_exceeded(size, row.used_bytes, quota_bytes)

    async def _reserve_blob(self, processed: ProcessedImage) -> None:
        """Make sure a row exists (refcount 0) so the content always has a row to lock."""
        original_key, thumbnail_key, preview_key = object_keys(processed.sha256, processed.extension)
        values = {
            "sha256": processed.sha256,
            "content_type": processed.content_type,
            "size": len(processed.original),
            "width": processed.width,
            "height": processed.height,
            "frames": processed.frames,
            "original_key": original_key,
            "thumbnail_key": thumbnail_key,
            "thumbnail_size": len(processed.thumbnail.data),
            "thumbnail_width": processed.thumbnail.width,
            "thumbnail_height": processed.thumbnail.height,
            "preview_key": preview_key,
            "preview_size": len(processed.preview.data),
            "preview_width": processed.preview.width,
            "preview_height": processed.preview.height,
            "refcount": 0,
        }
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(Blob).values(**values).on_conflict_do_nothing(index_elements=[Blob.sha256])
        try:
            await self.session.execute(statement)
            await self.session.commit()
        except BaseException:
            await self.session.rollback()
            raise

    async def _reference_blob(self, processed: ProcessedImage) -> tuple[Blob, bool]:
        """Take the blob's lock by counting one more reference and store the objects (and say
        whether this is the first reference, for the stored-bytes counter)."""
        for _attempt in range(3):
            statement = (
                update(Blob)
                .where(Blob.sha256 == processed.sha256)
                .values(refcount=Blob.refcount + 1)
                .returning(Blob.refcount)
            )
            refcount = (await self.session.execute(statement)).scalar_one_or_none()
            if refcount is None:  # collected between reserve and reference: start again
                await self.session.rollback()
                await self._reserve_blob(processed)
                continue
            blob = await self.session.get_one(Blob, processed.sha256, populate_existing=True)
            # Written every time, not only for the first reference: skipping the writes when the
            # content is already stored would answer measurably faster, and tell an uploader that
            # someone (perhaps privately) holds this exact image. The keys derive from the
            # content, so this rewrites identical bytes, atomically, under the blob's lock.
            await self._put_objects(blob, processed)
            return blob, refcount == 1
        raise RuntimeError(f"blob {processed.sha256} kept disappearing while being referenced")

    async def _put_objects(self, blob: Blob, processed: ProcessedImage) -> None:
        await self.storage.put(blob.original_key, processed.original, content_type=processed.content_type)
        await self.storage.put(blob.thumbnail_key, processed.thumbnail.data, content_type="image/webp")
        await self.storage.put(blob.preview_key, processed.preview.data, content_type="image/webp")

    # -- changes -----------------------------------------------------------------------

    async def _locked_image(self, public_id: str, delete_token: str | None, viewer: Viewer | None) -> Image:
        _check_public_id(public_id)
        # Who may see it (or holds its token) is part of the query: a private image that this
        # request may not touch is the same empty result as an id that never existed.
        condition = visible_to(viewer)
        if delete_token:
            condition = or_(condition, Image.delete_token_hash == hash_token(delete_token))
        statement = select(Image).where(Image.public_id == public_id, condition).with_for_update(of=Image)
        image = (await self.session.scalars(statement)).one_or_none()
        if image is None:
            raise image_not_found(public_id)
        cached = to_cached(image)
        if can_manage(cached, viewer) or _token_matches(delete_token, image.delete_token_hash):
            return image
        if viewer is not None:
            raise ForbiddenError("this image belongs to someone else; only its owner can change or delete it")
        raise ForbiddenError(
            "the delete token is missing or wrong; send the token you got at upload in the X-Delete-Token header"
        )

    async def update_image(
        self,
        *,
        public_id: str,
        delete_token: str | None,
        viewer: Viewer | None = None,
        title: str | msgspec.UnsetType | None = msgspec.UNSET,
        visibility: Visibility | msgspec.UnsetType = msgspec.UNSET,
    ) -> CachedImage:
        changes: dict[str, str | None] = {}
        if title is not msgspec.UNSET:
            changes["title"] = clean_title(title)
        if visibility is not msgspec.UNSET:
            changes["visibility"] = Visibility(visibility).value
        try:
            image = await self._locked_image(public_id, delete_token, viewer)
            if changes.get("visibility") == Visibility.PRIVATE.value and image.owner_id is None:
                raise InvalidRequestError("an image uploaded without an account cannot be private; use 'unlisted'")
            # One statement that reports the row it changed: a delete that won the race
            # (SQLite ignores FOR UPDATE) turns into a 404 instead of a crash.
            statement = update(Image).where(Image.id == image.id).values(**changes).returning(Image.id)
            if changes and (await self.session.execute(statement)).scalar_one_or_none() is None:
                raise image_not_found(public_id)
            refreshed = (
                await self.session.scalars(
                    select(Image).where(Image.id == image.id).execution_options(populate_existing=True)
                )
            ).one_or_none()
            if refreshed is None:
                raise image_not_found(public_id)
            result = to_cached(refreshed)
            # Tombstone first, so nobody caches the old row while this commits; a change to
            # private that cannot clear the cache is refused (the old entry would serve it
            # publicly until it expires).
            cleared = await self.cache.invalidate(CACHE_PREFIX + public_id)
            if not cleared and result.visibility is Visibility.PRIVATE:
                raise StorageUnavailable("the cache could not be cleared; the image stays as it was")
            await self.session.commit()
        except BaseException:
            await self.session.rollback()
            raise
        await self.cache.invalidate(CACHE_PREFIX + public_id)
        return result

    async def delete_image(
        self,
        *,
        public_id: str,
        delete_token: str | None,
        viewer: Viewer | None = None,
    ) -> None:
        try:
            image = await self._locked_image(public_id, delete_token, viewer)
            # Count the row this statement really removed: SQLite ignores FOR UPDATE, so two
            # concurrent deletes can both pass the check above; only one of them deletes.
            removed = await self.session.execute(
                delete(Image).where(Image.id == image.id).returning(Image.blob_sha256, Image.owner_id)
            )
            row = removed.one_or_none()
            if row is None:
                raise image_not_found(public_id)
            sha256, owner_id = row
            unreference = update(Blob).where(Blob.sha256 == sha256).values(refcount=Blob.refcount - 1)
            left = unreference.returning(Blob.size, Blob.thumbnail_size, Blob.preview_size, Blob.refcount)
            size, thumbnail_size, preview_size, refcount = (await self.session.execute(left)).one()
            if owner_id is not None:
                await self.session.execute(
                    update(User).where(User.id == owner_id).values(used_bytes=User.used_bytes - size)
                )
            # The last reference gone: its objects are garbage now, whenever gc removes them.
            freed = size + thumbnail_size + preview_size if refcount == 0 else 0
            await add_to_counters(self.session, {IMAGES: -1, STORED_BYTES: -freed})
            await self.session.commit()
        except BaseException:
            await self.session.rollback()
            raise
        await self.cache.invalidate(CACHE_PREFIX + public_id)
        await self.collect_blob(sha256, quiet=True)

    async def collect_blob(self, sha256: str, *, quiet: bool = False) -> bool:
        """Delete an unreferenced blob: its objects, then its row, under the row's lock.

        If storage fails, the transaction rolls back and the row stays at refcount 0 for
        `chitram-admin gc` to retry. Returns whether the blob was removed.
        """
        try:
            statement = (
                delete(Blob)
                .where(Blob.sha256 == sha256, Blob.refcount == 0)
                .returning(Blob.original_key, Blob.thumbnail_key, Blob.preview_key)
            )
            row = (await self.session.execute(statement)).one_or_none()
            if row is None:
                await self.session.rollback()
                return False
            for key in row:
                await self.storage.delete(key)
            await self.session.commit()
            return True
        except Exception:
            await self.session.rollback()
            if not quiet:
                raise
            logger.warning("could not collect blob %s now; `chitram-admin gc` will retry", sha256, exc_info=True)
            return False


def stored_bytes(blob: Blob) -> int:
    """What one stored content costs: the original and both variants."""
    return blob.size + blob.thumbnail_size + blob.preview_size


def _check_public_id(public_id: str) -> None:
    # Ids are generated by us; anything else cannot exist, and never reaches the database.
    if not _PUBLIC_ID.fullmatch(public_id):
        raise image_not_found(public_id)


def image_not_found(public_id: str) -> NotFoundError:
    if not _PUBLIC_ID.fullmatch(public_id):
        return NotFoundError("no image has this id; image ids are 12 letters, digits, '-' or '_'")
    return NotFoundError(f"no image has the id '{public_id}'; check the link, or it may have been deleted")


def _quota_exceeded(size: int, used: int, quota_bytes: int) -> QuotaExceededError:
    return QuotaExceededError(
        f"this upload ({format_bytes(size)}) would take your account past its quota of "
        f"{format_bytes(quota_bytes)} ({format_bytes(used)} used); delete some images on /me/images first"
    )


def _token_matches(token: str | None, expected_hash: str | None) -> bool:
    if not token or not expected_hash:
        return False
    return hmac.compare_digest(hash_token(token), expected_hash)


def _safe_stored_filename(filename: str | None) -> str | None:
    """Keep the name people gave the file (for downloads), minus paths, controls and bidi tricks."""
    if not filename:
        return None
    name = clean_text(filename.replace("\\", "/").rsplit("/", 1)[-1])
    return name[:255] or None


@dataclass
class GarbageReport:
    collected_blobs: list[str]
    orphan_objects: list[str]
    missing_objects: list[str]
    dry_run: bool


async def collect_garbage(service: ImageService, *, grace_seconds: float, dry_run: bool) -> GarbageReport:
    """Remove what no image needs any more, and report what images need but is gone.

    - blobs at refcount 0 whose last change is older than the grace period;
    - stored objects that no blob row names and that are older than the grace period
      (younger ones may belong to an upload still in flight);
    - and, reported only: objects a blob row names that storage does not have.
    """
    session, storage = service.session, service.storage
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    report = GarbageReport(collected_blobs=[], orphan_objects=[], missing_objects=[], dry_run=dry_run)
    unreferenced = (
        await session.scalars(select(Blob.sha256).where(Blob.refcount == 0, Blob.updated_at < cutoff))
    ).all()
    await session.rollback()
    for sha256 in unreferenced:
        if dry_run or await service.collect_blob(sha256, quiet=True):
            report.collected_blobs.append(sha256)
    known: set[str] = set()
    needed: set[str] = set()
    keys = select(Blob.original_key, Blob.thumbnail_key, Blob.preview_key, Blob.refcount)
    for original_key, thumbnail_key, preview_key, refcount in (await session.execute(keys)).all():
        known.update((original_key, thumbnail_key, preview_key))
        if refcount > 0:
            needed.update((original_key, thumbnail_key, preview_key))
    await session.rollback()
    for prefix in ("originals/", "thumbnails/", "previews/"):
        async for info in storage.list(prefix):
            if info.key in known or info.last_modified >= cutoff:
                continue
            report.orphan_objects.append(info.key)
            if not dry_run:
                await storage.delete(info.key)
    for key in sorted(needed):
        if await storage.stat(key) is None:
            report.missing_objects.append(key)
    return report
