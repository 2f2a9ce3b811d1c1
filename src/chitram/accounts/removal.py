"""Deleting an account, with or without its images (asked explicitly; there is no default)."""

from __future__ import annotations

from chitram.accounts.auth import Viewer
from chitram.accounts.services import AccountService
from chitram.images.services import ImageService


async def delete_account(accounts: AccountService, images: ImageService, user_id: int, *, delete_images: bool) -> int:
    """Remove the account and its tokens; returns how many images were deleted.

    Kept images stay online without an owner (links and delete tokens keep working); private
    ones are deleted either way, as nobody could ever see them again.
    """
    # Disabled first: its sessions end and its tokens stop at once, so nothing can upload into
    # the account while its images are deleted (and a crash half-way leaves it locked, not open).
    await accounts.set_disabled(user_id, True)
    if delete_images:
        owned = await images.owned_ids(user_id)
        for public_id in owned:
            await images.delete_image(public_id=public_id, delete_token=None, viewer=Viewer.account(user_id))
        deleted = len(owned)
    else:
        deleted = await images.disown(user_id)
    await accounts.delete_user_row(user_id)
    return deleted
