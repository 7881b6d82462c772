from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl

from api.types import TEAM_PATTERN

EventType = Literal[
    "alert.raised",
    "alert.retriggered",
    "alert.severity_raised",
    "alert.acknowledged",
    "alert.resolved",
    "alert.escalated",
    "alert.overdue",
]
Team = Annotated[str, Field(min_length=1, max_length=64, pattern=TEAM_PATTERN)]


def _secret(value: str) -> str:
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("the key must decode to 24 to 64 bytes")
    return value


Secret = Annotated[
    str, Field(max_length=200, pattern=r"^whsec_[A-Za-z0-9+/=]+$"), AfterValidator(_secret)
]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://paging.hospital.example/hooks/oncology",
                    "events": ["alert.raised", "alert.escalated"],
                    "teams": ["onc-a"],
                }
            ]
        },
    )

    url: HttpUrl = Field(max_length=2000)
    events: list[EventType] = Field(min_length=1, max_length=20)
    # None (or absent): every team's alerts.
    teams: list[Team] | None = Field(default=None, min_length=1, max_length=100)
    secret: Secret | None = None


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    events: list[str]
    teams: list[str] | None
    created_at: datetime


class WebhookCreated(WebhookRead):
    # Shown once, on creation.
    secret: str


class DeliveryRead(BaseModel):
    """One attempt to deliver one event."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: int
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    outcome: Literal["delivered", "retrying", "failed"]
