from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Used only in development mode when no secret is configured; refused in production.
DEV_JWT_SECRET = "development-only-secret-not-for-production-use"  # noqa: S105
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", DEV_JWT_SECRET}


class PoolSettings(BaseSettings):
    """Connection pool size per worker process; read at import to size the request limiter."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    db_pool_size: int = Field(default=4, ge=1)
    db_max_overflow: int = Field(default=4, ge=0)

    @property
    def db_capacity(self) -> int:
        return self.db_pool_size + self.db_max_overflow


class Settings(PoolSettings):
    app_env: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///./symptoms.db"
    jwt_secret: SecretStr = SecretStr("")
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=10_000, ge=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    rate_limit_per_minute: int = Field(default=0, ge=0)
    # Notifications (api/notifications): the job loop, acknowledge windows, webhooks, live feed.
    worker_mode: Literal["inline", "off"] = "inline"
    worker_interval_s: float = Field(default=1.0, gt=0, le=60)
    ack_window_emergency_s: int | None = Field(default=None, ge=1)
    ack_window_urgent_s: int | None = Field(default=None, ge=1)
    ack_window_routine_s: int | None = Field(default=None, ge=1)
    webhook_allow_http: bool = False
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_base_s: float = Field(default=10.0, gt=0)
    webhook_retry_max_s: float = Field(default=900.0, gt=0)
    webhook_retry_for_s: float = Field(default=25 * 3600.0, gt=0)
    stream_heartbeat_s: float = Field(default=15.0, gt=0)
    stream_poll_s: float = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _secret_outside_development(self) -> Settings:
        if self.app_env == "production":
            secret = self.jwt_secret.get_secret_value()
            if secret in _PLACEHOLDERS or len(secret.encode()) < 32:
                raise ValueError(
                    "JWT_SECRET must be set to a random value of at least 32 bytes in production"
                )
        return self

    @property
    def effective_jwt_secret(self) -> str:
        return self.jwt_secret.get_secret_value() or DEV_JWT_SECRET

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
