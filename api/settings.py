from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Used only in development mode when no secret is configured; refused in production.
DEV_JWT_SECRET = "development-only-secret-not-for-production-use"  # noqa: S105
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", DEV_JWT_SECRET}


class DatabaseSettings(BaseSettings):
    """What reaching the database takes, and nothing more: migrations read only this."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./symptoms.db"
    # Connections per worker process; requests beyond them wait their turn (first come, first
    # served) for at most db_pool_timeout, then get 503.
    # No overflow by default: the pool closes an overflow connection when it is returned to a
    # full pool, so under a steady load overflow means a new connection every few requests.
    db_pool_size: int = Field(default=8, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    # No statement of this service needs seconds (the slowest, a backtest page, takes
    # milliseconds); with the response bound below, a silent database gives 503 within ~7 s.
    db_statement_timeout_ms: int = Field(default=5_000, ge=0)
    # A connection whose database sends nothing for this long is dropped (503): a silent
    # network must not hang requests. Unset: the statement timeout plus 2 s (or 30 s).
    db_response_timeout_s: float | None = Field(default=None, gt=0)

    @property
    def db_response_timeout(self) -> float:
        if self.db_response_timeout_s is not None:
            return self.db_response_timeout_s
        if self.db_statement_timeout_ms:
            return self.db_statement_timeout_ms / 1000 + 2
        return 30.0


class Settings(DatabaseSettings):
    app_env: Literal["development", "production"] = "development"
    jwt_secret: SecretStr = SecretStr("")
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwt_max_lifetime_s: int = Field(default=86_400, ge=60)
    # An identity provider's keys (api/identity.py): RS256/ES256 tokens; HS256 only if a
    # JWT_SECRET is set as well.
    jwt_jwks_url: str | None = None
    jwt_jwks_cache_s: float = Field(default=300.0, gt=0)
    jwt_jwks_refetch_s: float = Field(default=30.0, ge=0)
    jwt_role_claim: str = Field(default="role", min_length=1, max_length=200)
    jwt_teams_claim: str = Field(default="teams", min_length=1, max_length=200)
    jwt_patient_claim: str = Field(default="patient_id", min_length=1, max_length=200)
    # GET /metrics asks for this bearer token when set (Prometheus' `authorization` config).
    metrics_token: SecretStr | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_header_bytes: int = Field(default=16 * 1024, ge=4096, le=1024 * 1024)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    rate_limit_per_minute: int = Field(default=0, ge=0)
    redis_url: str | None = None
    rate_limit_key_prefix: str = Field(default="symptoms", min_length=1, max_length=64)
    cors_origins: str = ""
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
    stream_max_s: float = Field(default=3600.0, gt=0)
    # Fernet key(s) sealing webhook secrets at rest (api/notifications/secrets.py).
    webhook_secrets_key: SecretStr = SecretStr("")

    @field_validator("jwt_issuer", "jwt_audience", "jwt_jwks_url", "redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `JWT_ISSUER=` as copied from .env.example means "not set", not "an empty issuer".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_secrets_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr) -> SecretStr:
        from api.notifications.secrets import check_keys

        check_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _secret_outside_development(self) -> Settings:
        if self.app_env == "production":
            secret = self.jwt_secret.get_secret_value()
            if self.jwt_jwks_url and not secret:
                return self  # the identity provider's tokens only
            if secret in _PLACEHOLDERS or len(secret.encode()) < 32:
                raise ValueError(
                    "JWT_SECRET must be set to a random value of at least 32 bytes in production"
                )
        return self

    @property
    def effective_jwt_secret(self) -> str:
        return self.jwt_secret.get_secret_value() or DEV_JWT_SECRET

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
