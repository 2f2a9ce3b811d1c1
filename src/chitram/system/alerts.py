"""Alerts without a monitoring server: one JSON POST to a webhook the operator chose.

The body suits the common receivers at once: `text` (Slack, Mattermost, Rocket.Chat, an ntfy
template), `content` (Discord) and structured fields for anything else; a Healthchecks.io check
can tell success from failure by the keywords `ok` / `ATTENTION` in it (docs/operations/monitoring.md).
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

DISCORD_LIMIT = 2000  # Discord refuses longer `content`


def check_webhook_url(url: str) -> None:
    """Refuse a webhook URL that cannot work or would leak: raises ValueError saying what to fix."""
    name = "CHITRAM_ALERT_WEBHOOK_URL"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{name} must start with https:// (or http://); got {parts.scheme or 'no scheme'}")
    if not parts.hostname:
        raise ValueError(f"{name} has no host; give the full URL the service gave you, e.g. https://hooks.slack.com/…")
    if parts.scheme == "http" and (parts.username or parts.password):
        raise ValueError(
            f"{name} carries a user name or password over plain http://; use https:// so they are not sent in the clear"
        )


def alert_body(*, event: str, ok: bool, summary: str, details: dict[str, Any]) -> dict[str, Any]:
    """The JSON sent: one readable line for chat services, the facts for machines."""
    state = "ok" if ok else "ATTENTION"
    text = f"[chitram on {socket.gethostname()}] {state}: {summary}"
    return {
        "text": text,
        "content": text[:DISCORD_LIMIT],
        "event": event,
        "ok": ok,
        "host": socket.gethostname(),
        "time": datetime.now(UTC).isoformat(),
        **details,
    }


def send_alert(url: str, body: dict[str, Any], *, timeout: float) -> str | None:
    """POST the body; None when the webhook took it, else why not (never raises: an alert
    that fails must not fail what it reports on)."""
    try:
        response = httpx.post(url, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        if response.is_success:
            return None
        reason = f"it answered {response.status_code} {response.text[:200]!r}"
    where = urlsplit(url).hostname  # the rest of the URL is often the secret
    logger.warning("the alert webhook at %s failed: %s", where, reason)
    return f"the alert webhook at {where} failed: {reason}"
