"""The rules for accounts: registration, login (throttled), passwords, tokens, disabling, deletion."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from chitram.accounts.devices import DeviceTokens
from chitram.accounts.models import ApiToken, User
from chitram.accounts.passwords import (
    MAX_PASSWORD_LENGTH,
    SUSPECT_RETRY_SECONDS,
    HashingBusyError,
    Passwords,
    check_new_password,
)
from chitram.errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotAuthenticatedError,
    NotFoundError,
    RateLimitedError,
)
from chitram.limits import Limit, RateLimiter, human_wait
from chitram.settings import LimitSettings

MAX_EMAIL_LENGTH = 254  # RFC 5321's path limit, minus the angle brackets
MAX_TOKEN_NAME_LENGTH = 100
TOKEN_PREFIX = "chi_"  # noqa: S105 - a marker that makes leaked tokens easy to scan for
TOKEN_BYTES = 32
# Writing last_used_at on every API call would turn each read into a write; a minute is
# precise enough for "last used".
LAST_USED_PRECISION = timedelta(minutes=1)


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_DATABASE_ID = 2**63 - 1


def email_key(email: str) -> str:
    """What makes two addresses the same account: Unicode-normalised and casefolded (control
    characters dropped: no database takes a NUL, and no address has one)."""
    return _CONTROL_CHARS.sub("", unicodedata.normalize("NFKC", email)).strip().casefold()


def clean_email(raw: str) -> str:
    email = unicodedata.normalize("NFKC", raw).strip()
    local, at, domain = email.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain.strip(".")
        or any(c.isspace() for c in email)
        or _CONTROL_CHARS.search(email)
    ):
        raise InvalidRequestError("enter an email address like name@example.com")
    # The casefolded key can be longer than the address ("ß" becomes "ss"); both must fit.
    if max(len(email), len(email_key(email))) > MAX_EMAIL_LENGTH:
        raise InvalidRequestError(f"the email address is longer than {MAX_EMAIL_LENGTH} characters")
    return email


def _check_id(value: int, what: str) -> None:
    """Ids beyond the database's integer range cannot exist (and would fail in the driver)."""
    if not 1 <= value <= MAX_DATABASE_ID:
        raise NotFoundError(f"no {what} has the id {value}")


def hash_api_token(token: str) -> str:
    # Tokens carry 256 random bits: a fast hash is enough, there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccountLimits:
    """New accounts per address, and the three counters of login attempts: tight per account and
    client (address, or trusted device), looser per address, loosest per account. A trusted
    device counts only on its own account-and-device counter, so an attacker spread over many
    addresses cannot lock the owner's browser out (docs/decisions/0008-login-brakes.md)."""

    per_account_and_ip: Limit
    per_ip: Limit
    per_account: Limit
    registrations_per_ip: Limit

    @classmethod
    def from_settings(cls, limits: LimitSettings) -> AccountLimits:
        window = limits.login_window_seconds
        return cls(
            per_account_and_ip=Limit("login-account-ip", limits.login_failures_per_account_and_ip, window),
            per_ip=Limit("login-ip", limits.login_failures_per_ip, window),
            per_account=Limit("login-account", limits.login_failures_per_account, window),
            registrations_per_ip=Limit("registrations-ip", limits.registrations_per_hour_per_ip, 3600),
        )


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # shown once


@dataclass(frozen=True)
class LoginResult:
    user: User
    device_token: str
    """The trusted-device token for this browser: the one it brought if still valid, else a new one."""


class AccountService:
    def __init__(
        self,
        session: AsyncSession,
        *,
        passwords: Passwords,
        limiter: RateLimiter,
        limits: AccountLimits,
        devices: DeviceTokens | None = None,
    ) -> None:
        self.session = session
        self.passwords = passwords
        self.limiter = limiter
        self.limits = limits
        self.devices = devices

    # -- registration and login ---------------------------------------------------------

    async def register(
        self, email: str, password: str, *, is_admin: bool = False, client_ip: str | None = None
    ) -> User:
        """A new account. With `client_ip` (a visitor signing up, not an operator) it counts
        against that address's hourly allowance of new accounts."""
        if client_ip is not None:
            await self.limiter.hit(
                self.limits.registrations_per_ip, client_ip, message="too many accounts were created from this address"
            )
        email = clean_email(email)
        password_hash = await self.passwords.hash(check_new_password(password))
        user = User(email=email, email_key=email_key(email), password_hash=password_hash, is_admin=is_admin)
        self.session.add(user)
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise ConflictError(
                "an account with this email address exists already; log in, or use another address"
            ) from None
        return user

    async def log_in(self, email: str, password: str, *, client_ip: str, device_token: str | None = None) -> User:
        """The user whose password this is, or a 401 that says nothing about which part was wrong."""
        return (await self.log_in_device(email, password, client_ip=client_ip, device_token=device_token)).user

    async def log_in_device(
        self, email: str, password: str, *, client_ip: str, device_token: str | None = None
    ) -> LoginResult:
        """Log in, and say which trusted-device token the browser should keep.

        Throttled: attempts are counted before the password is checked, so a burst sent at once
        gets no more guesses than the limit; once any counter is full, no password is checked at
        all. A success takes its attempt back (and clears the account-and-client counter): only
        failures add up. A browser with a valid device token for this account counts only on its
        own counter, so failures from elsewhere never lock it out; an address that has failed
        recently has its password checked in the slow lane (passwords.FairGate).
        """
        key = email_key(email)
        device = self._trusted_device(device_token, key)
        counters = self._login_counters(key, client_ip, device)
        suspect = device is None and await self._is_failing(client_ip)
        await self._take_attempt(counters)
        found = (await self.session.execute(select(User.id, User.password_hash).where(User.email_key == key))).first()
        # Hand the connection back while argon2 runs (or waits for its turn): guesses queued in
        # the slow lane must not hold the pool an honest login needs.
        await self.session.rollback()
        password = password[:MAX_PASSWORD_LENGTH]
        valid = await self._verify(found.password_hash if found else None, password, counters, suspect, client_ip)
        user = await self.session.get(User, found.id) if found is not None and valid else None
        if user is None:
            await self.session.rollback()
            raise NotAuthenticatedError("the email address or the password is wrong; check both and try again")
        if user.is_disabled:
            await self.session.rollback()
            raise ForbiddenError("this account is disabled; ask the operator of this site")
        await self._give_back_attempt(counters)
        user.last_login_at = datetime.now(UTC)
        if self.passwords.needs_rehash(user.password_hash):
            user.password_hash = await self.passwords.hash(password)
        await self.session.commit()
        kept = device_token if device is not None and device_token else None
        return LoginResult(user=user, device_token=kept or self._new_device_token(key))

    def _trusted_device(self, device_token: str | None, key: str) -> str | None:
        return self.devices.device_for(device_token, key) if self.devices is not None else None

    def _new_device_token(self, key: str) -> str:
        return self.devices.issue(key) if self.devices is not None else ""

    async def _is_failing(self, client_ip: str) -> bool:
        """The cheap check before argon2: has this address had a wrong password in the window?"""
        return await self.limiter.current(self.limits.per_ip, client_ip) > 0

    async def _verify(
        self, stored_hash: str | None, password: str, counters: list[tuple[Limit, str]], suspect: bool, source: str
    ) -> bool:
        try:
            return await self.passwords.verify(stored_hash, password, suspect=suspect, source=source)
        except HashingBusyError:
            # No password was checked: the attempt does not count.
            await self.session.rollback()
            for limit, counter_key in counters:
                await self.limiter.refund(limit, counter_key, 1)
            seconds = SUSPECT_RETRY_SECONDS
            raise RateLimitedError(
                f"too many failed logins are waiting to be checked; try again in {human_wait(seconds)}",
                headers={"Retry-After": str(seconds)},
            ) from None

    async def _take_attempt(self, counters: list[tuple[Limit, str]]) -> None:
        """Count the attempt on every counter; if one refuses, the others take it back, so an
        attacker holding one counter full never fills the owner's other counters."""
        counted: list[tuple[Limit, str]] = []
        try:
            for limit, counter_key in counters:
                await self.limiter.hit(limit, counter_key, message="too many failed logins")
                counted.append((limit, counter_key))
        except RateLimitedError:
            for limit, counter_key in counted:
                await self.limiter.refund(limit, counter_key, 1)
            raise

    async def _give_back_attempt(self, counters: list[tuple[Limit, str]]) -> None:
        (pair, pair_key), *others = counters
        await self.limiter.reset(pair, pair_key)
        for limit, counter_key in others:
            await self.limiter.refund(limit, counter_key, 1)

    def _login_counters(self, key: str, client_ip: str, device: str | None = None) -> list[tuple[Limit, str]]:
        limits = self.limits
        if device is not None:
            # Only this device's own guesses count against it: nobody else can fill its counter.
            return [(limits.per_account_and_ip, f"{key}|device:{device}")]
        return [
            (limits.per_account_and_ip, f"{key}|{client_ip}"),
            (limits.per_ip, client_ip),
            (limits.per_account, key),
        ]

    # -- reading -----------------------------------------------------------------------

    async def get_user(self, user_id: int) -> User:
        _check_id(user_id, "account")
        user = await self.session.get(User, user_id, populate_existing=True)
        if user is None:
            raise NotFoundError(f"no account has the id {user_id}")
        return user

    async def find_user(self, email: str) -> User:
        user = (await self.session.scalars(select(User).where(User.email_key == email_key(email)))).one_or_none()
        if user is None:
            raise NotFoundError(f"no account has the email address {email}")
        return user

    async def list_users(self) -> Sequence[tuple[User, int]]:
        """Every account with its number of images, oldest first."""
        from chitram.images.models import Image

        images = select(func.count(Image.id)).where(Image.owner_id == User.id).scalar_subquery()
        rows = (await self.session.execute(select(User, images).order_by(User.id))).all()
        await self.end_read()
        return [(user, count) for user, count in rows]

    # -- passwords and sessions --------------------------------------------------------

    async def confirm_password(
        self, user: User, password: str, *, client_ip: str, device_token: str | None = None
    ) -> None:
        """Re-check a logged-in user's password before a grave change. Throttled like logging in,
        so a stolen session cannot be used to guess the password."""
        device = self._trusted_device(device_token, user.email_key)
        counters = self._login_counters(user.email_key, client_ip, device)
        await self._take_attempt(counters)
        if not await self._verify(user.password_hash, password[:MAX_PASSWORD_LENGTH], counters, False, client_ip):
            raise ForbiddenError("the current password is wrong; type it again")
        await self._give_back_attempt(counters)

    async def change_password(
        self, user_id: int, current: str, new: str, *, client_ip: str, device_token: str | None = None
    ) -> User:
        """Set a new password and end every session (the caller starts a fresh one)."""
        user = await self.get_user(user_id)
        try:
            await self.confirm_password(user, current, client_ip=client_ip, device_token=device_token)
        except BaseException:
            await self.session.rollback()
            raise
        user.password_hash = await self.passwords.hash(check_new_password(new))
        await self._bump_epoch(user)
        await self.session.commit()
        return user

    async def _bump_epoch(self, user: User) -> None:
        """One more epoch, counted by the database: two changes at once never end up on the same
        number (which would let a session made in between survive)."""
        statement = (
            update(User)
            .where(User.id == user.id)
            .values(session_epoch=User.session_epoch + 1)
            .returning(User.session_epoch)
        )
        epoch = (await self.session.execute(statement)).scalar_one()
        set_committed_value(user, "session_epoch", epoch)

    async def end_all_sessions(self, user_id: int) -> None:
        await self.session.execute(update(User).where(User.id == user_id).values(session_epoch=User.session_epoch + 1))
        await self.session.commit()

    async def set_disabled(self, user_id: int, disabled: bool) -> User:
        """Disabling ends the account's sessions at once; its tokens stop working with the flag."""
        user = await self.get_user(user_id)
        user.is_disabled = disabled
        if disabled:
            await self._bump_epoch(user)
        await self.session.commit()
        return user

    async def set_password(self, user_id: int, password: str) -> None:
        """For operators (`chitram-admin`): no current password needed; sessions end."""
        user = await self.get_user(user_id)
        user.password_hash = await self.passwords.hash(check_new_password(password))
        await self._bump_epoch(user)
        await self.session.commit()

    # -- API tokens --------------------------------------------------------------------

    async def create_token(self, user_id: int, name: str) -> NewToken:
        name = " ".join(_CONTROL_CHARS.sub(" ", name).split())
        if not name:
            raise InvalidRequestError("give the token a name, e.g. the tool or computer that will use it")
        if len(name) > MAX_TOKEN_NAME_LENGTH:
            raise InvalidRequestError(f"the token name is longer than {MAX_TOKEN_NAME_LENGTH} characters")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        token = ApiToken(
            user_id=user_id, name=name, token_hash=hash_api_token(secret), hint=secret[: len(TOKEN_PREFIX) + 6]
        )
        self.session.add(token)
        await self.session.commit()
        return NewToken(token=token, secret=secret)

    async def list_tokens(self, user_id: int) -> Sequence[ApiToken]:
        statement = select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())
        tokens = (await self.session.scalars(statement)).all()
        await self.end_read()
        return tokens

    async def end_read(self) -> None:
        """End the read transaction, keeping what was loaded usable (a rollback would expire it)."""
        self.session.expunge_all()
        await self.session.rollback()

    async def revoke_token(self, user_id: int, token_id: int) -> None:
        _check_id(token_id, "token")
        token = await self.session.get(ApiToken, token_id)
        if token is None or token.user_id != user_id:
            await self.session.rollback()
            raise NotFoundError("you have no token with this id; it may be revoked already")
        await self.session.delete(token)
        await self.session.commit()

    async def user_for_token(self, secret: str) -> User | None:
        """The enabled or disabled owner of a token, or None when no such token exists."""
        statement = select(ApiToken, User).join(User, User.id == ApiToken.user_id)
        row = (await self.session.execute(statement.where(ApiToken.token_hash == hash_api_token(secret)))).one_or_none()
        if row is None:
            await self.end_read()
            return None
        token, user = row
        now = datetime.now(UTC)
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
            token.last_used_at = now
            await self.session.commit()
        else:
            await self.end_read()
        return user

    # -- deletion ----------------------------------------------------------------------

    async def delete_user_row(self, user_id: int) -> None:
        """Remove the account (its tokens go with it; images it still owns lose their owner)."""
        user = await self.get_user(user_id)
        await self.session.delete(user)
        await self.session.commit()
