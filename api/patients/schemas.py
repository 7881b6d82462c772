from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from api.rules.definitions import CODE_PATTERN
from api.types import PLAIN_NAME, TEAM_PATTERN, Day


class PatientCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "care_team": "onc-a",
                    "external_id": "MRN-004211",
                    "display_name": "A. Patient",
                    "baseline_weight_kg": 71.0,
                }
            ]
        },
    )

    care_team: str = Field(min_length=1, max_length=64, pattern=TEAM_PATTERN)
    external_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=PLAIN_NAME)
    display_name: str | None = Field(default=None, min_length=1, max_length=200, pattern=PLAIN_NAME)
    baseline_weight_kg: float | None = Field(default=None, ge=2, le=500)


class PatientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    care_team: str
    external_id: str | None
    display_name: str | None
    baseline_weight_kg: float | None
    created_at: datetime


class TherapyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"drug_code": "aldesleukin", "started_on": "2026-11-23"}]},
    )

    drug_code: str = Field(pattern=CODE_PATTERN, max_length=64)
    started_on: Day
    ended_on: Day | None = None

    @field_validator("ended_on")
    @classmethod
    def _ends_after_start(cls, value: date | None, info: ValidationInfo) -> date | None:
        started = info.data.get("started_on")
        if value is not None and started is not None and value < started:
            raise ValueError("ended_on is before started_on")
        return value


class TherapyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    patient_id: uuid.UUID
    drug_code: str
    started_on: date
    ended_on: date | None
    active: bool
    created_at: datetime


class QuestionnaireItem(BaseModel):
    code: str
    name: str
    question: str
    category: str
    grades: dict[str, str]
    frequency: str
    drugs: list[str]


class VitalItem(BaseModel):
    name: str
    label: str
    unit: str
    loinc: str
    min: float
    max: float


class Questionnaire(BaseModel):
    patient_id: uuid.UUID
    on_date: date
    drugs: list[str]
    symptoms: list[QuestionnaireItem]
    vitals: list[VitalItem]
