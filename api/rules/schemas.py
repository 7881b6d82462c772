"""Request and response bodies of the rules endpoints (dry run, backtest, performance)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from api.catalog.schemas import Code, DrugBody
from api.reports.schemas import MAX_BATCH, Advice, ReportBody, SymptomEntry, Vitals
from api.rules.backtest import MAX_LISTED
from api.rules.definitions import CODE_PATTERN, Severity
from api.types import NO_NUL, Timestamp


class DryRunReport(ReportBody):
    client_report_id: str | None = Field(default=None, max_length=64, pattern=NO_NUL)
    recorded_at: Timestamp | None = None


class HistoryItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recorded_at: Timestamp
    symptoms: list[SymptomEntry] = Field(default_factory=list, max_length=100)
    vitals: Vitals | None = None


class EvaluateBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "drug_codes": ["aldesleukin"],
                    "baseline_weight_kg": 70.0,
                    "report": {"vitals": {"systolic_bp": 84, "weight_kg": 74.2}},
                }
            ]
        },
    )

    drug_codes: list[Annotated[str, Field(max_length=64, pattern=CODE_PATTERN)]] = Field(
        default_factory=list, max_length=20
    )
    baseline_weight_kg: float | None = Field(default=None, ge=2, le=500)
    history: list[HistoryItem] = Field(default_factory=list, max_length=MAX_BATCH)
    report: DryRunReport


class FindingRead(BaseModel):
    """What a rule found in a report: the alert it would raise."""

    model_config = ConfigDict(from_attributes=True)

    rule_id: str
    rule_version: int
    drug_code: str | None
    severity: Severity
    title: str
    detail: str
    evidence: dict[str, Any]
    follow_up_minutes: int


class EvaluateResult(BaseModel):
    alerts: list[FindingRead]
    advice: Advice | None


class RulePerformance(BaseModel):
    rule_id: str
    rule_version: int
    raised: int
    resolved: int
    confirmed: int
    false_alarm: int
    ppv: float | None


class PerformanceList(BaseModel):
    items: list[RulePerformance]


class BacktestDrug(DrugBody):
    """A drug's entry as ``PUT /v1/drugs/{code}`` takes it, with its code."""

    code: Code


class BacktestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drug: BacktestDrug
    since: Timestamp
    until: Timestamp


class Tally(BaseModel):
    by_rule: dict[str, int] = Field(description="Findings per rule id (one per report and rule).")
    by_severity: dict[str, int]


class ChangedFinding(BaseModel):
    report_id: uuid.UUID
    rule_id: str
    severity: str
    from_severity: str | None = None


class BacktestResult(BaseModel):
    """How a proposed drug entry would change the findings over the stored reports."""

    reports: int = Field(description="Stored reports replayed (recorded in [since, until)).")
    patients: int
    current: Tally
    proposed: Tally
    newly_flagged: list[ChangedFinding]
    no_longer_flagged: list[ChangedFinding]
    severity_changed: list[ChangedFinding]
    changed_counts: dict[str, int] = Field(
        description=f"Totals of the three lists; each list stops at {MAX_LISTED} entries."
    )
