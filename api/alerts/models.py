from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, JSONType, UTCDateTime, new_id, utcnow

OPEN_STATUSES = ("open", "acknowledged")


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        # One episode per (patient, rule) while it is being worked: concurrent reports cannot
        # open a second one.
        Index(
            "uq_alerts_open_episode",
            "patient_id",
            "rule_id",
            unique=True,
            postgresql_where=text("status IN ('open', 'acknowledged')"),
            sqlite_where=text("status IN ('open', 'acknowledged')"),
        ),
        # The dashboard's triage order within a team: severity, escalated first, then due time.
        Index(
            "ix_alerts_team_triage",
            "care_team",
            "triage_rank",
            "escalation_rank",
            "follow_up_due_at",
            "id",
        ),
        Index("ix_alerts_patient", "patient_id", "created_at"),
        # What the job loop scans for: open alerts not yet escalated, unresolved ones not yet
        # marked overdue. Partial, so they stay as small as the work left to do.
        Index(
            "ix_alerts_ack_watch",
            "created_at",
            postgresql_where=text("status = 'open' AND escalated_at IS NULL"),
            sqlite_where=text("status = 'open' AND escalated_at IS NULL"),
        ),
        Index(
            "ix_alerts_due_watch",
            "follow_up_due_at",
            postgresql_where=text("status IN ('open', 'acknowledged') AND overdue_at IS NULL"),
            sqlite_where=text("status IN ('open', 'acknowledged') AND overdue_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"))
    # Copied from the patient (teams never change) so team scoping needs no join.
    care_team: Mapped[str] = mapped_column(String(64))
    report_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reports.id"))
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    drug_code: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    # 0 emergency, 1 urgent, 2 routine: ascending order is triage order.
    triage_rank: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(16), default="open")
    title: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    follow_up_due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_triggered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolution_note: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(16))
    # Set once, by the job loop, when an open alert outlived its acknowledge window.
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # 1 until escalated, then 0: ascending order puts escalated alerts first within a severity.
    # A column of its own (not folded into triage_rank) so writers of triage_rank keep 0-2.
    escalation_rank: Mapped[int] = mapped_column(SmallInteger, default=1, server_default="1")
    # Set once, by the job loop, when an unresolved alert passed follow_up_due_at.
    overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# Event ids increase in commit order (see api/alerts/events.py): readers page the feed by id.
EventId = BigInteger().with_variant(Integer(), "sqlite")


class AlertEvent(Base):
    __tablename__ = "alert_events"
    __table_args__ = (
        Index("ix_alert_events_alert", "alert_id", "id"),
        Index("ix_alert_events_report", "report_id"),
        # SQLite: AUTOINCREMENT, so an id is never handed out twice, even after deletes.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(EventId, Identity(), primary_key=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # raised | retriggered | severity_raised | acknowledged | resolved | escalated | overdue;
    # the event's type is "alert." + action.
    action: Mapped[str] = mapped_column(String(16))
    actor_sub: Mapped[str | None] = mapped_column(String(200))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    report_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("reports.id"))
    severity: Mapped[str | None] = mapped_column(String(16))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
