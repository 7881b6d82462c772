from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from api.alerts.models import EventId
from api.db import Base, JSONType, UTCDateTime, new_id, utcnow

QueueId = BigInteger().with_variant(Integer(), "sqlite")


class Webhook(Base):
    """A subscription: where to POST which alert events of which teams."""

    __tablename__ = "webhooks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSONType)
    # None: every team.
    teams: Mapped[list[str] | None] = mapped_column(JSONType)
    # Sealed with WEBHOOK_SECRETS_KEY when set, else as given (api/notifications/secrets.py).
    # Never returned after creation.
    secret: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    # Deleted subscriptions stay for their delivery log; nothing more is sent to them.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last event id looked at for this subscription (fan-out is keyset paging on event id).
    last_event_id: Mapped[int] = mapped_column(EventId, default=0)


class WebhookDelivery(Base):
    """One event to deliver to one subscription: the job queue, leased row by row."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("uq_webhook_deliveries_event", "webhook_id", "event_id", unique=True),
        # What the job loop leases: due, pending deliveries.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(QueueId, Identity(), primary_key=True)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id"))
    event_id: Mapped[int] = mapped_column(EventId, ForeignKey("alert_events.id"))
    event_type: Mapped[str] = mapped_column(String(32))
    # The exact body, fixed when queued: every retry sends (and signs) the same bytes.
    body: Mapped[str] = mapped_column(Text)
    # pending | delivered | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Who is sending it now, and until when that lease holds (a crashed holder's lease runs out).
    leased_by: Mapped[str | None] = mapped_column(String(100))
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    """The delivery log: one row per attempt."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_webhook", "webhook_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(QueueId, Identity(), primary_key=True)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id"))
    delivery_id: Mapped[int] = mapped_column(QueueId, ForeignKey("webhook_deliveries.id"))
    event_id: Mapped[int] = mapped_column(EventId)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(200))
    # delivered | retrying | failed (the last attempt of a delivery that gave up)
    outcome: Mapped[str] = mapped_column(String(16))
