"""Settings, read once from the environment and `.env` (pydantic-settings)."""

import os
import re
import secrets
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The value `.env.example` ships with; production refuses it like a missing key.
SAMPLE_SECRET_KEY = "change-me-to-a-long-random-string-of-at-least-32-bytes"  # noqa: S105
MIN_SECRET_KEY_BYTES = 32

Environment = Literal["development", "test", "production"]
# An absolute http(s) URL without spaces or control characters: it goes into
# a message's text as it is.
_DOMAIN = re.compile(r"[A-Za-z0-9.-]{1,253}")
_HTTP_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f]+")


def _split_commas(value: object) -> object:
    """Lets list settings be written `a,b,c` in the environment instead of JSON."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        # A settings error must not echo the values it was given: they hold secrets.
        hide_input_in_errors=True,
    )

    environment: Environment = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] | None = None

    database_url: str | None = None
    # A streaming replica for the reads that need no read-your-writes
    # (anonymous product reads and lists); the primary serves them while the
    # replica is down or more than READ_REPLICA_MAX_LAG_SECONDS behind.
    database_read_url: str | None = None
    read_replica_max_lag_seconds: float = Field(default=5.0, gt=0, le=3600)
    data_dir: Path = Path(".data")
    # The connections one server (a Gunicorn master and all its workers) may
    # hold: each of its `web_concurrency` workers gets an equal share, opened
    # as needed and kept open. DB_POOL_SIZE and DB_MAX_OVERFLOW, when set, fix
    # a worker's pool instead. See pool_limits.
    db_max_connections: int = Field(default=40, ge=2, le=10_000)
    db_pool_size: int | None = Field(default=None, ge=1, le=500)
    db_max_overflow: int | None = Field(default=None, ge=0, le=500)
    # Worker processes of this server; gunicorn.conf.py exports its count.
    web_concurrency: int = Field(default=1, ge=1, le=1000)
    # With the database unreachable, a request fails after at most about
    # command + connect timeout (a statement on a dead connection, or a
    # reconnect): 4 s with these defaults, inside the contract's 5 s.
    db_pool_timeout: float = Field(default=2.0, gt=0)
    db_connect_timeout: float = Field(default=2.0, gt=0)
    db_command_timeout: float = Field(default=2.0, gt=0)
    # asyncpg's prepared statements kept per connection (and SQLAlchemy's). 0
    # behind a transaction-mode pooler (PgBouncer): each transaction may run
    # on another server connection, so no statement may outlive it.
    db_statement_cache_size: int = Field(default=100, ge=0, le=10_000)

    secret_key: SecretStr | None = None
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = []
    jwt_issuer: str = "storefront-api"
    jwt_audience: str = "storefront-api"
    access_token_expire_minutes: int = Field(default=15, ge=1, le=24 * 60)
    refresh_token_expire_days: int = Field(default=14, ge=1, le=365)

    password_hash_memory_kib: int = Field(default=19 * 1024, ge=8)
    password_hash_iterations: int = Field(default=2, ge=1)
    password_hash_parallelism: int = Field(default=1, ge=1)
    password_hash_concurrency: int = Field(default=4, ge=1)

    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A product page's `total` is counted exactly up to this many matches;
    # beyond, PostgreSQL's estimate stands in (see app/products/repository.py).
    exact_total_limit: int = Field(default=10_000, ge=0)
    cors_origins: Annotated[list[str], NoDecode] = []
    docs_enabled: bool = True

    first_admin_username: str | None = None
    first_admin_email: str | None = None
    first_admin_password: SecretStr | None = None

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "no-reply@localhost"
    smtp_starttls: bool = True
    smtp_timeout: float = Field(default=10.0, gt=0, le=300)

    # Where messages come from, and where their links point. Templates hold
    # `{token}`; without one, links lead to pages this service serves itself,
    # under PUBLIC_URL (the address users reach the service at).
    public_url: str = Field(
        default_factory=lambda: f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"
    )
    email_verification_url: str | None = None
    password_reset_url: str | None = None
    email_verification_expire_hours: int = Field(default=48, ge=1, le=24 * 365)
    password_reset_expire_minutes: int = Field(default=30, ge=1, le=24 * 60)
    password_reset_max_per_hour: int = Field(default=3, ge=1, le=1000)
    email_verification_max_per_hour: int = Field(default=5, ge=1, le=1000)

    # The mail outbox (app/mail): who sends, how often it looks, how it retries.
    mail_dispatcher: Literal["api", "worker"] = "api"
    mail_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    mail_retry_seconds: float = Field(default=10.0, gt=0, le=3600)
    mail_max_attempts: int = Field(default=10, ge=1, le=100)
    # A claimed message is another process's to take once this has passed
    # without a result: its sender died. Longer than any one send may take.
    mail_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    mail_retention_days: int = Field(default=7, ge=1, le=3650)

    # Live product events (app/events). LISTEN needs a session of its own: behind
    # a transaction-mode pooler, point this at the database directly.
    database_listen_url: str | None = None
    events_retention_seconds: int = Field(default=3600, ge=60, le=30 * 24 * 3600)
    events_client_buffer: int = Field(default=1000, ge=1, le=100_000)
    events_max_clients: int = Field(default=1000, ge=1, le=100_000)
    # The contract: a comment line at least every 15 seconds.
    events_heartbeat_seconds: float = Field(default=15.0, gt=0, le=15)
    # How often a worker looks for new events without a notification: the
    # only way on SQLite, a safety net on PostgreSQL.
    events_poll_seconds: float = Field(default=0.5, gt=0, le=60)

    _split_lists = field_validator("previous_secret_keys", "cors_origins", mode="before")(
        _split_commas
    )

    @model_validator(mode="after")
    def _check_secret_key(self) -> "Settings":
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if self.environment == "production":
            if not key:
                raise ValueError("SECRET_KEY must be set when ENVIRONMENT=production")
            if len(key.encode()) < MIN_SECRET_KEY_BYTES:
                raise ValueError(
                    f"SECRET_KEY must be at least {MIN_SECRET_KEY_BYTES} bytes in production"
                )
            if key == SAMPLE_SECRET_KEY or "change-me" in key.lower():
                raise ValueError("SECRET_KEY is the sample value from .env.example; replace it")
        return self

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        if not _HTTP_URL.fullmatch(value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("email_verification_url", "password_reset_url")
    @classmethod
    def _check_link_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _HTTP_URL.fullmatch(value) or value.count("{token}") != 1:
            raise ValueError("must be an http:// or https:// URL holding {token} once")
        return value

    @model_validator(mode="after")
    def _check_mail_lease(self) -> "Settings":
        # A send is cut off after SMTP_TIMEOUT; the claim must outlast it, or a
        # second process could take a message that is still being sent.
        if self.mail_lease_seconds < 2 * self.smtp_timeout:
            raise ValueError("MAIL_LEASE_SECONDS must be at least twice SMTP_TIMEOUT")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with an async driver, whatever form it was given in."""
        return _with_async_driver(self.database_url or f"sqlite:///{self.data_dir / 'app.db'}")

    @property
    def read_sqlalchemy_url(self) -> str | None:
        """DATABASE_READ_URL with an async driver; None without a read replica."""
        return _with_async_driver(self.database_read_url) if self.database_read_url else None

    @property
    def listen_dsn(self) -> str | None:
        """A libpq URL for LISTEN (DATABASE_LISTEN_URL, else DATABASE_URL); None on SQLite."""
        url = self.database_listen_url or self.sqlalchemy_url
        scheme, sep, rest = url.partition("://")
        if scheme.split("+")[0] not in ("postgres", "postgresql"):
            return None
        return f"postgresql{sep}{rest}"

    @property
    def pool_limits(self) -> tuple[int, int]:
        """A worker's pool: (connections kept, more opened under load).

        With 40 connections for a server of two workers, each opens up to 20
        as load needs them and keeps them. Two such servers (two replicas, or
        a deploy's old and new one side by side) fit PostgreSQL's default
        max_connections of 100, with room for migrate and administration.

        Kept, not closed after each burst: a pool that kept half and opened
        the rest per burst (SQLAlchemy closes overflow connections on return)
        made PostgreSQL start a process for most requests under 64
        connections. bench.perf, GET /products/{id} at 64 connections, 5 s:
        943 req/s and p99 224 ms with half kept, 1,406 and 80 ms with all
        kept (workers' CPU 3.4 and 4.3 s of 5: the pool, not the CPU, was
        what they waited on).
        """
        share = max(2, self.db_max_connections // self.web_concurrency)
        kept = self.db_pool_size if self.db_pool_size is not None else share
        extra = self.db_max_overflow if self.db_max_overflow is not None else share - kept
        return kept, extra

    @property
    def signing_key(self) -> str:
        """The key new tokens are signed with.

        Outside production a missing key is generated once and kept in
        `DATA_DIR`, so every worker and every restart agree on it.
        """
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        return _load_or_create_local_secret(self.data_dir)

    @property
    def verification_keys(self) -> list[str]:
        """Keys a token may be signed with: the current one first, then retired ones."""
        return [self.signing_key, *(k.get_secret_value() for k in self.previous_secret_keys)]

    @property
    def message_id_domain(self) -> str:
        """The domain of every Message-ID: SMTP_FROM's."""
        _, address = parseaddr(self.smtp_from)
        domain = address.rpartition("@")[2]
        return domain if _DOMAIN.fullmatch(domain) else "localhost"

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "text" if self.environment == "development" else "json"


def _with_async_driver(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    drivers = {
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }
    return f"{drivers.get(scheme, scheme)}{sep}{rest}"


@lru_cache(maxsize=8)
def _load_or_create_local_secret(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        candidate = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            # link() is atomic and refuses to overwrite: when several workers
            # start at once, exactly one key wins and all of them read it.
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()


def describe_settings_error(error: ValidationError) -> str:
    """One line saying what is wrong with the settings, naming no values."""
    problems = []
    for issue in error.errors():
        name = ".".join(str(part) for part in issue["loc"]).upper()
        message = issue["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "configuration error: " + "; ".join(problems)
