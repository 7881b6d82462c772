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
    """A symptom report from the patient's app: at least one symptom (grade 0 is "I'm fine")
    or one vital."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "client_report_id": "3f1c2b9e-8d4a-4f7e-9c1d-5a6b7c8d9e0f",
                    "recorded_at": "2026-11-27T08:05:00+01:00",
                    "symptoms": [
                        {"code": "fever", "grade": 2, "note": "since last night"},
                        {"code": "dizziness", "grade": 1},
                    ],
                    "vitals": {
                        "temperature_c": 38.6,
                        "systolic_bp": 88,
                        "diastolic_bp": 55,
                        "heart_rate": 112,
                        "weight_kg": 71.5,
                        "spo2": 95,
                    },
                    "note": "felt dizzy when standing",
                }
            ]
        },
    )

    client_report_id: uuid.UUID = Field(
        description="Chosen by the app, once per report: the idempotency key of retries"
    )
    recorded_at: Timestamp = Field(
        description="When the patient filled it in, with the phone's UTC offset"
    )

    @field_validator("recorded_at")
    @classmethod
    def _not_in_future(cls, value: datetime) -> datetime:
        # The offset is kept: therapy days are the patient's local days. Stored as UTC.
        if value - datetime.now(UTC) > MAX_FUTURE:
            raise ValueError("is more than 5 minutes in the future")
        return value


class BatchCreate(BaseModel):
    """Reports an app kept while offline, sent together."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "reports": [
                        {
                            "client_report_id": "0b7d6c1e-2f3a-4b5c-8d9e-0a1b2c3d4e5f",
                            "recorded_at": "2026-11-26T20:00:00+01:00",
                            "symptoms": [{"code": "fatigue", "grade": 1}],
                        },
                        {
                            "client_report_id": "9c8b7a6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                            "recorded_at": "2026-11-27T08:00:00+01:00",
                            "symptoms": [{"code": "fatigue", "grade": 3}],
                            "vitals": {"temperature_c": 37.4},
                        },
                    ]
                }
            ]
        },
    )

    # Items are validated one by one, so one bad item rejects only itself.
    reports: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="Up to 100 report bodies, each shaped like POST /reports",
    )


class ReportedSymptom(BaseModel):
    code: str
    grade: int = Field(description="0 none, 1 mild, 2 moderate, 3 severe, 4 very severe")
    note: str | None = None


class Advice(BaseModel):
    """What the app shows the patient at once: the advice for the highest severity raised."""

    severity: str = Field(description="emergency, urgent or routine")
    message: str


class ReportRead(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    client_report_id: uuid.UUID
    recorded_at: datetime
    received_at: datetime
    symptoms: list[ReportedSymptom]
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
