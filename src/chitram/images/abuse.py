"""Brakes on uploading: who may upload at all, how often, and how many bytes without an account.

Every counter lives in the shared store, so the limits hold across replicas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from chitram.accounts.auth import BEARER_CHALLENGE, Viewer
from chitram.errors import NotAuthenticatedError, format_bytes
from chitram.limits import Limit, RateLimiter
from chitram.settings import Settings

HOUR = 3600
DAY = 24 * HOUR


@dataclass(frozen=True)
class UploadPolicy:
    allow_anonymous: bool
    per_ip: Limit
    anonymous_per_ip: Limit
    per_account: Limit
    anonymous_bytes_per_ip: Limit
    quota_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadPolicy:
        limits = settings.limits
        return cls(
            allow_anonymous=settings.accounts.allow_anonymous_uploads,
            per_ip=Limit("uploads-ip", limits.uploads_per_hour_per_ip, HOUR),
            anonymous_per_ip=Limit("anonymous-uploads-ip", limits.anonymous_uploads_per_hour_per_ip, HOUR),
            per_account=Limit("uploads-account", limits.uploads_per_hour_per_account, HOUR),
            anonymous_bytes_per_ip=Limit("anonymous-bytes-ip", limits.anonymous_bytes_per_day_per_ip, DAY),
            quota_bytes=settings.accounts.account_quota_bytes,
        )


class UploadGate:
    """Asked before an upload's body is read (may this client upload now?) and once its size is
    known (does it fit the anonymous daily budget?)."""

    def __init__(self, policy: UploadPolicy, limiter: RateLimiter) -> None:
        self.policy = policy
        self.limiter = limiter

    async def admit(self, viewer: Viewer | None, client_ip: str) -> None:
        policy = self.policy
        if viewer is None and not policy.allow_anonymous:
            raise NotAuthenticatedError(
                "uploading needs an account on this site: log in, or send an API token as 'Authorization: Bearer …'",
                headers=BEARER_CHALLENGE,
            )
        await self.limiter.hit(
            policy.per_ip, client_ip, message="this address has uploaded too many images in the last hour"
        )
        if viewer is None:
            await self.limiter.hit(
                policy.anonymous_per_ip,
                client_ip,
                message="this address has uploaded too many images without an account; log in to upload more",
            )
        else:
            await self.limiter.hit(
                policy.per_account, str(viewer.id), message="your account has uploaded too many images in the last hour"
            )

    @asynccontextmanager
    async def budget(self, viewer: Viewer | None, client_ip: str, size: int) -> AsyncIterator[None]:
        """Charge an anonymous upload's bytes to its address for the day; refunded if it fails."""
        if viewer is not None or size <= 0:
            yield
            return
        limit = self.policy.anonymous_bytes_per_ip
        await self.limiter.charge(
            limit,
            client_ip,
            size,
            message=(
                f"this address has used its daily allowance of {format_bytes(limit.limit)} for uploads "
                "without an account; log in to upload more"
            ),
        )
        try:
            yield
        except BaseException:
            await self.limiter.refund(limit, client_ip, size)
            raise
