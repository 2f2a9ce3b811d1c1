"""Password hashing with argon2id (argon2-cffi), off the event loop, with bounded memory and a
fair queue: checks for sources that keep failing wait in a lane of their own, so a crowd of
wrong guesses cannot stand between an honest login and the CPU (docs/decisions/0008)."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
# Checks for failing sources share one slot: beside an honest check they take at most one core,
# so an honest login costs at most about twice its time alone, however many guesses wait.
SUSPECT_CONCURRENCY = 1
# Guesses waiting beyond this are refused at once (429) instead of queueing without end.
SUSPECT_QUEUE_LIMIT = 64
SUSPECT_RETRY_SECONDS = 5


class HashingBusyError(Exception):
    """Too many checks for failing sources are waiting; the caller answers 429."""


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class FairGate:
    """Slots for argon2 work, handed out in two lanes.

    Honest work (hashing, and checks from trusted devices or sources with no recent failures)
    takes any free slot first. Suspect checks (sources that failed recently) run at most
    `suspect_slots` at a time and only when no honest work waits; among them, sources take turns
    (round robin), so one busy address cannot starve a quieter one. In-process: each worker
    schedules its own CPU.
    """

    def __init__(
        self,
        slots: int = HASHING_CONCURRENCY,
        *,
        suspect_slots: int = SUSPECT_CONCURRENCY,
        suspect_queue_limit: int = SUSPECT_QUEUE_LIMIT,
    ) -> None:
        self._free = slots
        self._suspect_slots = suspect_slots
        self._suspect_running = 0
        self._suspect_queue_limit = suspect_queue_limit
        self._honest: deque[_Waiter] = deque()
        self._suspects: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        self.suspect_waiting = 0

    @asynccontextmanager
    async def slot(self, *, suspect: bool = False, source: str = "") -> AsyncIterator[None]:
        waiter = _Waiter()
        if suspect:
            if self.suspect_waiting >= self._suspect_queue_limit:
                raise HashingBusyError
            self._suspects.setdefault(source, deque()).append(waiter)
            self.suspect_waiting += 1
        else:
            self._honest.append(waiter)
        self._dispatch()
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self._release(suspect)
            else:
                self._forget(waiter, suspect, source)
            raise
        try:
            yield
        finally:
            self._release(suspect)

    def _dispatch(self) -> None:
        while self._free and self._honest:
            self._grant(self._honest.popleft())
        while self._free and self._suspects and self._suspect_running < self._suspect_slots:
            source, queue = next(iter(self._suspects.items()))
            waiter = queue.popleft()
            # The source goes to the back of the line (round robin), or leaves it when it has no more.
            del self._suspects[source]
            if queue:
                self._suspects[source] = queue
            self.suspect_waiting -= 1
            self._suspect_running += 1
            self._grant(waiter)

    def _grant(self, waiter: _Waiter) -> None:
        self._free -= 1
        waiter.granted = True
        waiter.event.set()

    def _release(self, suspect: bool) -> None:
        self._free += 1
        if suspect:
            self._suspect_running -= 1
        self._dispatch()

    def _forget(self, waiter: _Waiter, suspect: bool, source: str) -> None:
        if not suspect:
            self._honest.remove(waiter)
            return
        queue = self._suspects.get(source)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self.suspect_waiting -= 1
            if not queue:
                del self._suspects[source]


class Passwords:
    """argon2id with the library's defaults (RFC 9106 second recommendation: 64 MiB, t=3, p=4)."""

    def __init__(self, hasher: PasswordHasher | None = None, gate: FairGate | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self.gate = gate or FairGate()
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        async with self.gate.slot():
            return await anyio.to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str, *, suspect: bool = False, source: str = "") -> bool:
        """Check a password. With no stored hash (unknown email) it still does the same work, so
        the response time never tells whether an account exists. `suspect` checks (a source that
        has been failing) wait in the slow lane, taking turns by `source`; HashingBusyError when
        that lane is full."""
        matched_hash = stored_hash if stored_hash is not None else await self._dummy()
        async with self.gate.slot(suspect=suspect, source=source):
            matches = await anyio.to_thread.run_sync(self._matches, matched_hash, password)
        return matches and stored_hash is not None

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
