"""Typed settings, read from ``CHITRAM_*`` environment variables and an optional ``.env``.

Each section is a small pydantic-settings class; :class:`Settings` groups them. Tests build
``Settings`` directly with their own sections instead of patching the environment.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CHITRAM_"
SECRET_FILE_NAME = "secret_key"  # noqa: S105 - a file name, not a secret
# Values that appear in examples and docs; production must never run with them.
UNSAFE_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "development"})
MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16


class UnsafeSettingsError(RuntimeError):
    """The configuration must not be used as it is; the message names the variable to fix."""


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class _Section(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        use_attribute_docstrings=True,
        frozen=True,
    )


class ServerSettings(_Section):
    env: Environment = Environment.DEVELOPMENT
    """`development` (the default) or `production` (refuses unsafe values)."""
    secret_key: str = ""
    """Secret for CSRF tokens and signed image links. Required in production; generated into DATA_DIR in development."""
    public_url: str = ""
    """Base URL links are built from, e.g. https://img.example.com. Required in production; empty: each request's."""
    data_dir: Path = Path("data")
    """Folder for the embedded database, stored files and the generated development secret."""
    host: str = "127.0.0.1"
    """Address `chitram` listens on."""
    port: int = 8000
    """Port `chitram` listens on."""
    workers: int = 1
    """Number of granian worker processes."""
    release: str = ""
    """Name of the running release (the Compose stack sets the image name), shown by /health/live."""
    trusted_proxies: str = ""
    """Addresses or networks of reverse proxies (e.g. Caddy), comma-separated, whose X-Forwarded-For is believed.
    Empty: the header is ignored."""

    @model_validator(mode="after")
    def _proxies_are_addresses(self) -> ServerSettings:
        from chitram.proxies import parse_trusted_proxies  # raises with the bad entry named

        parse_trusted_proxies(self.trusted_proxies)
        return self


class DatabaseSettings(_Section):
    database_url: str = ""
    """SQLAlchemy URL (postgresql+asyncpg://… or sqlite+aiosqlite:///…). Empty: SQLite in DATA_DIR."""
    database_pool_size: int = 10
    """Connections kept open per worker (PostgreSQL only)."""


class StorageBackend(StrEnum):
    FILESYSTEM = "filesystem"
    S3 = "s3"


class StorageSettings(_Section):
    storage_backend: StorageBackend = StorageBackend.FILESYSTEM
    """`filesystem` (a local folder) or `s3` (any S3-compatible server, e.g. MinIO)."""
    storage_path: Path | None = None
    """Folder for the filesystem backend. Empty: DATA_DIR/objects."""
    s3_endpoint: str = ""
    """S3 server as host:port, e.g. minio:9000."""
    s3_access_key: str = ""
    """S3 access key."""
    s3_secret_key: str = ""
    """S3 secret key."""
    s3_bucket: str = "chitram"
    """Bucket for images; created when missing (retried until S3 answers)."""
    s3_secure: bool = False
    """Use HTTPS to reach the S3 server."""
    s3_region: str | None = None
    """S3 region, when the server wants one."""
    s3_timeout_seconds: float = 5.0
    """Connect/read timeout for one S3 request; a hanging server fails requests after this."""

    @model_validator(mode="before")
    @classmethod
    def _endpoint_without_scheme(cls, values: Any) -> Any:
        """Accept http(s)://host:port too, as people copy it from their S3 console."""
        if isinstance(values, dict):
            endpoint = str(values.get("s3_endpoint") or "").strip().rstrip("/")
            if endpoint.startswith("https://"):
                values = {**values, "s3_secure": True}
            values = {**values, "s3_endpoint": endpoint.removeprefix("https://").removeprefix("http://")}
        return values

    @model_validator(mode="after")
    def _s3_needs_endpoint(self) -> StorageSettings:
        if self.storage_backend is StorageBackend.S3 and not self.s3_endpoint:
            raise ValueError("CHITRAM_STORAGE_BACKEND=s3 needs CHITRAM_S3_ENDPOINT (host:port)")
        return self


class CacheSettings(_Section):
    redis_url: str = ""
    """Redis URL for cache, sessions and rate limits. Empty: in-process memory (one process only)."""
    cache_ttl_seconds: int = 3600
    """How long image metadata stays cached."""
    redis_timeout_seconds: float = Field(default=0.15, gt=0)
    """Connect/read timeout for one Redis command; a hanging Redis fails a request after this."""
    redis_breaker_seconds: float = Field(default=5.0, gt=0)
    """After Redis stops answering, commands fail at once for this long before one tries again."""


class UploadSettings(_Section):
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    """Largest accepted upload in bytes (default 25 MiB)."""
    max_pixels: int = Field(default=50_000_000, gt=0)
    """Largest accepted frame in pixels (width × height)."""
    max_frames: int = Field(default=1000, gt=0)
    """Most frames accepted in an animation."""
    max_total_pixels: int = Field(default=250_000_000, gt=0)
    """Most pixels accepted across all frames of an animation."""
    upload_deadline_seconds: float = Field(default=30.0, gt=0)
    """Seconds from an upload's last byte to storing it; later (or once its client is gone) nothing is kept."""
    processing_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)
    """Images decoded at once per worker; more wait their turn. Default: number of cores."""


class RequestSettings(_Section):
    header_timeout_seconds: float = Field(default=10.0, ge=1, le=60)
    """Time for a request's headers to arrive; also how long an idle keep-alive connection stays open."""
    body_timeout_seconds: float = Field(default=20.0, gt=0)
    """Time for a request body to arrive before the data-rate allowance below adds to it."""
    body_min_bytes_per_second: int = Field(default=16 * 1024, gt=0)
    """Each this many bytes received add one second to the body's time (default 16 KiB/s, ~128 kbit/s)."""
    body_max_seconds: float = Field(default=1800.0, gt=0)
    """Longest any request body may take, however fast it keeps coming (default 30 minutes)."""
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    """Largest body for every route except uploads: forms and JSON (default 64 KiB)."""
    max_requests_per_client: int = Field(default=64, ge=0)
    """Requests one client address may have in progress at once, per worker process. 0: no limit."""


class AccountSettings(_Section):
    allow_anonymous_uploads: bool = True
    """Let visitors upload without an account. False: uploading needs a login or an API token."""
    allow_registration: bool = True
    """Let anyone create an account on /register. False: only `chitram-admin user create`."""
    session_days: int = Field(default=30, gt=0)
    """A web login lasts this many days (then log in again)."""
    account_quota_bytes: int = Field(default=2 * 1024**3, ge=0)
    """Bytes of originals one account may keep (default 2 GiB). 0: no quota."""
    trusted_device_days: int = Field(default=180, gt=0)
    """A browser that logged in stays trusted this many days: failures from elsewhere never lock it out."""


class LimitSettings(_Section):
    uploads_per_hour_per_ip: int = Field(default=120, ge=0)
    """Uploads one client address may make per hour, with or without an account. 0: no limit."""
    anonymous_uploads_per_hour_per_ip: int = Field(default=30, ge=0)
    """Uploads without an account one client address may make per hour. 0: no limit."""
    uploads_per_hour_per_account: int = Field(default=300, ge=0)
    """Uploads one account may make per hour, from any address. 0: no limit."""
    anonymous_bytes_per_day_per_ip: int = Field(default=200 * 1024**2, ge=0)
    """Bytes one client address may upload without an account per day (default 200 MiB). 0: no limit."""
    login_failures_per_account_and_ip: int = Field(default=5, ge=1)
    """Wrong passwords for one account from one address before that pair must wait."""
    login_failures_per_ip: int = Field(default=30, ge=1)
    """Wrong passwords from one address, over all accounts, before it must wait."""
    login_failures_per_account: int = Field(default=100, ge=1)
    """Wrong passwords for one account from all addresses before it must wait (high, so nobody locks a victim out)."""
    login_window_seconds: int = Field(default=900, gt=0)
    """How long login failures are counted, and so the longest wait they cause."""
    registrations_per_hour_per_ip: int = Field(default=10, ge=0)
    """Accounts one client address may create per hour. 0: no limit."""


class HealthSettings(_Section):
    health_timeout_seconds: float = 2.0
    """Each readiness check (database, storage, cache) fails after this many seconds."""


class MetricsSettings(_Section):
    metrics_token: str = ""
    """Bearer token that Prometheus sends to read GET /metrics (at least 16 characters). Empty: /metrics is 404."""

    @model_validator(mode="after")
    def _token_long_enough(self) -> MetricsSettings:
        token = self.metrics_token
        if token and (len(token) < MIN_METRICS_TOKEN_LENGTH or token != token.strip()):
            # Anyone who reaches the app could guess a short one; a stray space breaks every scrape.
            raise ValueError(
                f"CHITRAM_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters without "
                "surrounding spaces; use a random value, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return self


class BackupSettings(_Section):
    backup_dest: str = ""
    """Where `chitram-admin backup` keeps backups: a folder, or s3://BUCKET[/PREFIX]. Empty: DATA_DIR/backups."""
    backup_s3_endpoint: str = ""
    """S3 server (host:port) for an s3:// backup destination. Empty: CHITRAM_S3_ENDPOINT."""
    backup_s3_access_key: str = ""
    """Access key for the backup bucket. Empty: CHITRAM_S3_ACCESS_KEY."""
    backup_s3_secret_key: str = ""
    """Secret key for the backup bucket. Empty: CHITRAM_S3_SECRET_KEY."""
    backup_s3_secure: bool | None = None
    """Use HTTPS for the backup S3 server. Empty: CHITRAM_S3_SECURE (an https:// endpoint implies it)."""
    backup_s3_region: str | None = None
    """Region of the backup bucket. Empty: CHITRAM_S3_REGION."""
    backup_keep_days: int = Field(default=7, ge=0)
    """`backup prune` keeps every backup younger than this many days."""
    backup_keep_last: int = Field(default=3, ge=0)
    """`backup prune` keeps at least this many of the newest backups, however old."""
    backup_concurrency: int = Field(default=8, gt=0)
    """Objects copied or checked at once by backup, verify and restore."""

    @model_validator(mode="before")
    @classmethod
    def _endpoint_without_scheme(cls, values: Any) -> Any:
        if isinstance(values, dict):
            if values.get("backup_s3_secure") == "":  # set but empty: as if unset, like the others
                values = {key: value for key, value in values.items() if key != "backup_s3_secure"}
            endpoint = str(values.get("backup_s3_endpoint") or "").strip().rstrip("/")
            if endpoint.startswith("https://"):
                values = {**values, "backup_s3_secure": True}
            values = {**values, "backup_s3_endpoint": endpoint.removeprefix("https://").removeprefix("http://")}
        return values


class AlertSettings(_Section):
    alert_webhook_url: str = ""
    """JSON webhook (Slack, Discord, ntfy, Healthchecks.io…) told of backups and `status --notify`. Empty: none."""
    alert_webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    """A webhook that does not answer within this many seconds is given up on (a backup never waits longer)."""
    alert_backup_max_age_hours: float = Field(default=26.0, gt=0)
    """`status` needs attention when the newest verified backup is older than this many hours."""
    alert_disk_max_percent: float = Field(default=85.0, ge=0, le=100)
    """`status` needs attention when the filesystem holding DATA_DIR is fuller than this percentage."""

    @model_validator(mode="after")
    def _webhook_is_usable(self) -> AlertSettings:
        from chitram.system.alerts import check_webhook_url  # raises with what is wrong

        if self.alert_webhook_url:
            check_webhook_url(self.alert_webhook_url)
        return self


@dataclass(frozen=True)
class Settings:
    """Every section of the configuration."""

    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    upload: UploadSettings = field(default_factory=UploadSettings)
    requests: RequestSettings = field(default_factory=RequestSettings)
    accounts: AccountSettings = field(default_factory=AccountSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)

    @classmethod
    def from_env(cls) -> Settings:
        return cls()

    @property
    def is_production(self) -> bool:
        return self.server.env is Environment.PRODUCTION

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir.expanduser().resolve()

    @property
    def database_url(self) -> str:
        if self.database.database_url:
            return self.database.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'chitram.db'}"

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def storage_path(self) -> Path:
        return (self.storage.storage_path or self.data_dir / "objects").expanduser().resolve()

    @property
    def request_body_limit(self) -> int:
        """Cap for any request body: the upload limit plus room for multipart framing and fields."""
        return self.upload.max_upload_bytes + 64 * 1024


def resolve_secret_key(settings: Settings) -> str:
    """Return the secret key, refusing unsafe ones in production and creating one in development."""
    configured = settings.server.secret_key.strip()
    if settings.is_production:
        if configured.lower() in UNSAFE_SECRETS or len(configured) < MIN_SECRET_LENGTH:
            raise UnsafeSettingsError(
                "CHITRAM_SECRET_KEY is missing, a placeholder or shorter than "
                f"{MIN_SECRET_LENGTH} characters; set it to a random value, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        return configured
    if configured:
        return configured
    return _development_secret(settings.data_dir)


def _development_secret(data_dir: Path) -> str:
    """Generate the development secret once and keep it, so links stay valid across restarts."""
    path = data_dir / SECRET_FILE_NAME
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # O_EXCL: when several workers start at once, exactly one writes the file.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


def check_production_settings(settings: Settings) -> None:
    """Fail fast on production values that are unsafe (the secret key, no public URL) or incomplete (S3 keys)."""
    if not settings.is_production:
        return
    resolve_secret_key(settings)
    problems: list[str] = []
    public_url = urlsplit(settings.server.public_url.strip())
    # Without it every link would follow the request's Host header, which any client chooses.
    if public_url.scheme not in ("http", "https") or not public_url.hostname:
        problems.append(
            "CHITRAM_PUBLIC_URL is required in production: the address people reach the site at, "
            "e.g. https://img.example.com (links are built from it, never from the request's Host)"
        )
    if settings.storage.storage_backend is StorageBackend.S3:
        for name in ("s3_access_key", "s3_secret_key"):
            if not getattr(settings.storage, name):
                problems.append(f"CHITRAM_{name.upper()} is required with CHITRAM_STORAGE_BACKEND=s3")
    if problems:
        raise UnsafeSettingsError("; ".join(problems))
