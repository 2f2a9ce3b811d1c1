"""Trusted devices: a signed cookie, set by a successful login, that lets that browser past the
per-account lockout (and the slow lane for failing addresses) for that account.

An attacker without the password never gets such a cookie, so however many wrong passwords they
send from however many addresses, the owner's browser keeps logging in. The cookie names no
account: it holds a random device id and an HMAC of the id and the account's email key, so it
only counts for the account it was issued for and shows nobody whose it is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from chitram.security import derive_key

DEVICE_COOKIE = "chitram_device"
DEVICE_ID_BYTES = 16
MAX_DEVICE_TOKEN_LENGTH = 128


class DeviceTokens:
    def __init__(self, secret_key: str) -> None:
        self._key = derive_key(secret_key, "trusted-device").encode()

    def issue(self, account_key: str) -> str:
        """A new device token for the account with this email key."""
        device = secrets.token_urlsafe(DEVICE_ID_BYTES)
        return f"{device}.{self._sign(device, account_key)}"

    def device_for(self, token: str | None, account_key: str) -> str | None:
        """The device id when `token` was issued by this site for this account, else None."""
        if not token or len(token) > MAX_DEVICE_TOKEN_LENGTH:
            return None
        device, _, signature = token.partition(".")
        if not device or not hmac.compare_digest(signature, self._sign(device, account_key)):
            return None
        return device

    def _sign(self, device: str, account_key: str) -> str:
        return hmac.new(self._key, f"{device}|{account_key}".encode(), hashlib.sha256).hexdigest()
