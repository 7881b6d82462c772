from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, UTCDateTime, new_id


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (
        # The idempotency guarantee: a retried report can never be stored twice.
        UniqueConstraint("patient_id", "client_report_id"),
        Index("ix_reports_patient_recorded", "patient_id", "recorded_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"))
    client_report_id: Mapped[uuid.UUID]
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    systolic_bp: Mapped[float | None] = mapped_column(Float)
    diastolic_bp: Mapped[float | None] = mapped_column(Float)
    heart_rate: Mapped[float | None] = mapped_column(Float)
    weight_kg: Mapped[float | None] = mapped_column(Float)
    spo2: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text)
    # sha256 of the canonical body: tells a retry (same body) from a conflicting reuse of the key.
    body_hash: Mapped[str] = mapped_column(String(64))
    advice_severity: Mapped[str | None] = mapped_column(String(16))


class ReportSymptom(Base):
    __tablename__ = "report_symptoms"

    report_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    symptom_code: Mapped[str] = mapped_column(ForeignKey("symptoms.code"), primary_key=True)
    grade: Mapped[int] = mapped_column(SmallInteger)
    note: Mapped[str | None] = mapped_column(Text)
