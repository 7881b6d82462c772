from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from api.types import NO_NUL


class AlertRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    patient_id: uuid.UUID
    report_id: uuid.UUID
    rule_id: str
    rule_version: int
    drug_code: str | None
    severity: str
    status: str
    title: str
    detail: str
    evidence: dict[str, Any]
    created_at: datetime
    follow_up_due_at: datetime
    last_triggered_at: datetime
    occurrences: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    outcome: str | None
    escalated_at: datetime | None
    overdue_at: datetime | None


class AcknowledgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
