"""Server-side web sessions in the shared store (Redis, or memory when embedded).

The cookie holds a random token; the store holds, under the token's SHA-256, whose session it
is and the user's session epoch when it began. A store key is never the token itself, so a
leaked store dump logs nobody in. Anonymous visitors get no session at all.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import msgspec

from chitram.stores import NAMESPACE, Stores

SESSION_COOKIE = "chitram_session"
SESSION_TOKEN_BYTES = 32
_KEY_PREFIX = f"{NAMESPACE}:session:"


class SessionRecord(msgspec.Struct, frozen=True):
    user_id: int
    epoch: int
    created_at: datetime


class SessionStore:
    def __init__(self, stores: Stores, *, lifetime_seconds: int) -> None:
        self._redis = stores.redis
        self._memory = stores.memory
        self.lifetime_seconds = lifetime_seconds

    async def create(self, user_id: int, epoch: int) -> str:
        """A new session with a new token: never one the browser brought (no fixation)."""
        token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
        record = SessionRecord(user_id=user_id, epoch=epoch, created_at=datetime.now(UTC))
        value = msgspec.json.encode(record)
        if self._redis is not None:
            await self._redis.set(_key(token), value, ex=self.lifetime_seconds)
        else:
            await self._memory.set(_key(token), value, expires_in=self.lifetime_seconds)
        return token

    async def get(self, token: str) -> SessionRecord | None:
        if not token or len(token) > 128:
            return None
        if self._redis is not None:
            raw: bytes | None = await self._redis.get(_key(token))
        else:
            raw = await self._memory.get(_key(token))
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=SessionRecord)
        except msgspec.DecodeError:
            return None

    async def delete(self, token: str) -> None:
        if self._redis is not None:
            await self._redis.delete(_key(token))
        else:
            await self._memory.delete(_key(token))


def _key(token: str) -> str:
    return _KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()
