"""The tutorial baseline: report ingest as FastAPI's "SQL (Relational) Databases" tutorial has it.

What a user would write from that tutorial (its SQLAlchemy version): a sync ``def`` endpoint, a
``Session`` per request from a ``get_db`` dependency, ORM models created with
``metadata.create_all`` at import, ``add`` / ``commit``, and a pydantic response model read from
the ORM object. No authentication, no validation beyond the pydantic types, no rules, no alerts,
no idempotency, the engine's default pool (5 + 10 overflow) and, on SQLite, the tutorial's
``check_same_thread=False`` and nothing else (rollback journal, 5 s busy timeout).

One change from the tutorial: ``expire_on_commit=False`` instead of ``db.refresh(obj)`` after
the commit. With the refresh (and the relationship then lazy-loaded while the response is
serialized), each request holds a pooled connection after its endpoint returned, until the
dependency closes the session; FastAPI serializes the response of a ``def`` endpoint in the
thread pool (40 threads). Once more requests are in flight than threads + connections (5 + 10),
every thread waits for a connection held by a request that waits for a thread: nothing moves
until the pool's 30 s timeout answers 500 (``QueuePool limit of size 5 overflow 10 reached``).
Measured: 0 responses in 3 s at 64 connections on SQLite, one worker. Without the refresh the
response is built from what the insert returned, and no connection is held outside a thread.

run.py serves it with the same uvicorn settings as the service on its own database
(``DATABASE_URL``; PostgreSQL ``bench_baseline_<random>`` or a SQLite temp file), creates the
tables once by running this file before the server starts (two workers importing it at once
could race on CREATE TABLE), and drives ``POST /reports`` with bench/reports.lua in its
``baseline`` mode: the ingest bodies with the patient's id added.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime

from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, DateTime, ForeignKey, String, create_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

# --- database.py ---------------------------------------------------------------------------

SQLALCHEMY_DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///./sql_app.db")

connect_args = {"check_same_thread": False} if SQLALCHEMY_DATABASE_URL.startswith("sqlite") else {}
engine = create_engine(SQLALCHEMY_DATABASE_URL, connect_args=connect_args)
# expire_on_commit=False: see the module's docstring (the tutorial keeps the default and refreshes)
SessionLocal = sessionmaker(autocommit=False, autoflush=False, expire_on_commit=False, bind=engine)


class Base(DeclarativeBase):
    pass


# --- models.py -----------------------------------------------------------------------------


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(index=True)
    client_report_id: Mapped[uuid.UUID]
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    vitals: Mapped[dict[str, float] | None] = mapped_column(JSON)

    symptoms: Mapped[list[ReportSymptom]] = relationship(back_populates="report")


class ReportSymptom(Base):
    __tablename__ = "report_symptoms"

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    grade: Mapped[int]

    report: Mapped[Report] = relationship(back_populates="symptoms")


Base.metadata.create_all(bind=engine)


# --- schemas.py ----------------------------------------------------------------------------


class SymptomBase(BaseModel):
    code: str
    grade: int


class Symptom(SymptomBase):
    model_config = ConfigDict(from_attributes=True)

    id: int


class ReportCreate(BaseModel):
    patient_id: uuid.UUID
    client_report_id: uuid.UUID
    recorded_at: datetime
    symptoms: list[SymptomBase]
    vitals: dict[str, float] | None = None


class ReportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: uuid.UUID
    client_report_id: uuid.UUID
    recorded_at: datetime
    vitals: dict[str, float] | None
    symptoms: list[Symptom]


# --- main.py -------------------------------------------------------------------------------

app = FastAPI()


def get_db():  # type: ignore[no-untyped-def]
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


@app.post("/reports", response_model=ReportOut)
def create_report(report: ReportCreate, db: Session = Depends(get_db)):  # type: ignore[no-untyped-def]  # noqa: B008
    db_report = Report(**report.model_dump(exclude={"symptoms"}))
    db_report.symptoms = [ReportSymptom(**s.model_dump()) for s in report.symptoms]
    db.add(db_report)
    db.commit()
    return db_report
