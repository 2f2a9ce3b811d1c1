"""Prometheus gauges of the operational facts, refreshed when /metrics is scraped.

They are read from the database (counters and backup rounds: a few primary-key reads), so
every process reports the same numbers. In multiprocess mode "livemostrecent" exposes the value
the scraped process just set: "max" would keep a higher count another worker set before images
were deleted, and "liveall" would repeat the one number once per worker.
"""

from __future__ import annotations

import logging
from typing import Final

from prometheus_client import Gauge

from chitram.db import Database
from chitram.system.facts import backup_facts, read_totals

logger = logging.getLogger(__name__)

_MODE: Final = "livemostrecent"
IMAGES = Gauge("chitram_images", "Images stored (uploads that have not been deleted).", multiprocess_mode=_MODE)
STORED_BYTES = Gauge(
    "chitram_stored_bytes",
    "Bytes in object storage that images need: each distinct content once, original plus variants.",
    multiprocess_mode=_MODE,
)
BACKUP_LAST_SUCCESS = Gauge(
    "chitram_backup_last_success_timestamp_seconds",
    "When the newest verified backup finished (Unix time); 0 when there is none.",
    multiprocess_mode=_MODE,
)
BACKUP_LAST_OK = Gauge(
    "chitram_backup_last_ok", "1 when the newest backup round succeeded, 0 when it failed.", multiprocess_mode=_MODE
)
BACKUP_LAST_SIZE = Gauge(
    "chitram_backup_last_size_bytes", "Size of the newest backup that was written.", multiprocess_mode=_MODE
)


async def refresh_operational_gauges(database: Database) -> bool:
    """Set the gauges from the database; False (gauges left as they were) when it cannot be read,
    so a scrape still answers while the database is down."""
    try:
        async with database.sessions() as session:
            totals = await read_totals(session)
            backups = await backup_facts(session)
    except Exception:  # /metrics must answer while the database is down; logged per scrape
        logger.warning("could not read the operational facts for /metrics", exc_info=True)
        return False
    IMAGES.set(totals.images)
    STORED_BYTES.set(totals.stored_bytes)
    last, verified = backups.last_round, backups.last_verified
    BACKUP_LAST_SUCCESS.set(verified.finished_at.timestamp() if verified else 0)
    # No round yet is not a failure to alert on; "absent" is what backup_last_success = 0 says.
    BACKUP_LAST_OK.set(1 if last is None or last.ok else 0)
    if last is not None and last.size is not None:
        BACKUP_LAST_SIZE.set(last.size)
    elif verified is not None and verified.size is not None:
        BACKUP_LAST_SIZE.set(verified.size)
    return True
