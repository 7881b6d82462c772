from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from api.types import NO_NUL


class AlertRead(BaseModel):
    """One alert episode of a patient and a rule: while it is open or acknowledged, new reports
    that trigger the rule add occurrences to it (and may raise its severity)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    patient_id: uuid.UUID
    report_id: uuid.UUID = Field(description="The report that opened the episode")
    rule_id: str
    rule_version: int = Field(description="The version of the rule that raised it")
    drug_code: str | None = Field(description="The drug the rule is about, if any")
    severity: str = Field(
        description="emergency (act now), urgent (within 24 h) or routine (within 72 h)"
    )
    status: str = Field(description="open, acknowledged or resolved")
    title: str
    detail: str = Field(description="Why, in words, with the values that fired it")
    evidence: dict[str, Any] = Field(
        description="The values that fired it, as data (`matched` leaves; `baseline` for weight)"
    )
    created_at: datetime
    follow_up_due_at: datetime = Field(
        description="When the care team should have followed up (the severity's window)"
    )
    last_triggered_at: datetime
    occurrences: int = Field(description="Reports that triggered the rule in this episode")
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    outcome: str | None
    escalated_at: datetime | None = Field(
        description="Set once when nobody acknowledged within the severity's window"
    )
    overdue_at: datetime | None


class AcknowledgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class ResolveBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"note": "Called the patient: fluids and review at 14:00", "outcome": "confirmed"}
            ]
        },
    )

    note: str = Field(min_length=1, max_length=2000, pattern=NO_NUL)
    outcome: Literal["confirmed", "false_alarm"] | None = None


class AlertEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    # Increasing: the live feed's and the webhooks' event id.
    id: int
    alert_id: uuid.UUID
    at: datetime
    action: str
    actor_sub: str | None
    actor_role: str | None
    report_id: uuid.UUID | None
    severity: str | None
    from_status: str | None
    to_status: str
    note: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def type(self) -> str:
        """As in the live feed and webhooks: ``alert.`` + action."""
        return f"alert.{self.action}"


class SummaryCounts(BaseModel):
    total: int
    overdue: int
    by_severity: dict[str, int]
    by_status: dict[str, int]
    by_severity_and_status: dict[str, dict[str, int]]
