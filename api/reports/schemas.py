from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from api.alerts.schemas import AlertRead
from api.rules.definitions import CODE_PATTERN
from api.types import NO_NUL, Timestamp

MAX_FUTURE = timedelta(minutes=5)
MAX_BATCH = 100
Grade = Annotated[int, Field(ge=0, le=4, strict=True)]


@cache
def vital_ranges() -> dict[str, tuple[float, float]]:
    """The physiological input ranges of CLINICAL.md, from the shipped vitals catalog."""
    path = Path(__file__).parents[1] / "catalog" / "data" / "vitals.yaml"
    return {v["name"]: (v["min"], v["max"]) for v in yaml.safe_load(path.read_text("utf-8"))}


class SymptomEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE_PATTERN, max_length=64)
    grade: Grade
    note: str | None = Field(default=None, max_length=1000, pattern=NO_NUL)


class Vitals(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    temperature_c: float | None = Field(default=None, description="°C, 30-45 (LOINC 8310-5)")
    systolic_bp: float | None = Field(default=None, description="mm Hg, 40-300 (LOINC 8480-6)")
    diastolic_bp: float | None = Field(default=None, description="mm Hg, 20-200 (LOINC 8462-4)")
    heart_rate: float | None = Field(default=None, description="/min, 20-250 (LOINC 8867-4)")
    weight_kg: float | None = Field(default=None, description="kg, 2-500 (LOINC 29463-7)")
    spo2: float | None = Field(default=None, description="%, 50-100 (LOINC 59408-5)")

    @field_validator("*")
    @classmethod
    def _physiological(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.field_name is not None:
            low, high = vital_ranges()[info.field_name]
            if not low <= value <= high:
                raise ValueError(f"outside the physiological range {low:g}-{high:g}")
        return value

    def present(self) -> dict[str, float]:
        return self.model_dump(exclude_none=True)


class ReportBody(BaseModel):
    """A report as the app sends it; also the ``report`` of a rules dry run."""

    model_config = ConfigDict(extra="forbid")

    symptoms: list[SymptomEntry] = Field(default_factory=list, max_length=100)
    vitals: Vitals | None = None
    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)

    @field_validator("symptoms")
    @classmethod
    def _each_code_once(cls, value: list[SymptomEntry]) -> list[SymptomEntry]:
        seen: set[str] = set()
        for entry in value:
            if entry.code in seen:
                raise ValueError(f"symptom '{entry.code}' is given twice")
            seen.add(entry.code)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ReportBody:
        if not self.symptoms and not (self.vitals and self.vitals.present()):
            raise ValueError("a report holds at least one symptom or one vital")
        return self


class ReportCreate(ReportBody):
    client_report_id: uuid.UUID
    recorded_at: Timestamp

    @field_validator("recorded_at")
    @classmethod
    def _not_in_future(cls, value: datetime) -> datetime:
        # The offset is kept: therapy days are the patient's local days. Stored as UTC.
        if value - datetime.now(UTC) > MAX_FUTURE:
            raise ValueError("is more than 5 minutes in the future")
        return value


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Items are validated one by one, so one bad item rejects only itself.
    reports: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="Up to 100 report bodies, each shaped like POST /reports",
    )


class SymptomRead(BaseModel):
    code: str
    grade: int
    note: str | None = None


class Advice(BaseModel):
    severity: str
    message: str


class ReportRead(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    client_report_id: uuid.UUID
    recorded_at: datetime
    received_at: datetime
    symptoms: list[SymptomRead]
    vitals: dict[str, float] | None
    note: str | None


class ReportCreated(ReportRead):
    alerts: list[AlertRead]
    advice: Advice | None


class BatchItemError(BaseModel):
    loc: list[str | int]
    msg: str


class BatchResult(BaseModel):
    client_report_id: str | None
    status: str
    report_id: uuid.UUID | None = None
    errors: list[BatchItemError] | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]
