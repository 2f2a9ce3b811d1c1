"""Password hashing with argon2id (argon2-cffi), off the event loop and with bounded memory."""

from __future__ import annotations

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chitram.errors import InvalidRequestError

MIN_PASSWORD_LENGTH = 8
# argon2 pre-hashes its input, so length costs nothing there; the cap keeps request bodies and
# memory small while leaving room for any passphrase or password-manager output.
MAX_PASSWORD_LENGTH = 1024
# Each hash takes 64 MiB for ~50 ms; a few at a time keeps a burst of logins from exhausting
# a small server's memory (the rest wait their turn).
HASHING_CONCURRENCY = 4


class Passwords:
    """argon2id with the library's defaults (RFC 9106 second recommendation: 64 MiB, t=3, p=4)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._limiter = anyio.CapacityLimiter(HASHING_CONCURRENCY)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Check a password. With no stored hash (unknown email) it still does the same work, so
        the response time never tells whether an account exists."""
        if stored_hash is None:
            stored_hash = await self._dummy()
            await anyio.to_thread.run_sync(self._matches, stored_hash, password, limiter=self._limiter)
            return False
        return await anyio.to_thread.run_sync(self._matches, stored_hash, password, limiter=self._limiter)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with older (weaker) parameters than today's."""
        return self._hasher.check_needs_rehash(stored_hash)

    def _matches(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def warm_up(self) -> None:
        """Make the stand-in hash at start, so the first unknown email is not slower than the rest."""
        await self._dummy()

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("not a real password: equalises timing for unknown emails")
        return self._dummy_hash


def check_new_password(password: str) -> str:
    """Refuse passwords too short to resist guessing, or absurdly long; keep everything else as typed."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequestError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequestError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters; use a shorter one")
    return password
