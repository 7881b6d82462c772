from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, func, select

from api.alerts.models import Alert
from api.catalog.schemas import Code, DrugBody
from api.catalog.service import evaluation_catalog
from api.db import WRITE_INTENT, SessionDep, read_only
from api.errors import PROBLEM_RESPONSES, Invalid
from api.reports.schemas import MAX_BATCH, Advice, ReportBody, SymptomEntry, Vitals
from api.rules import engine
from api.rules.backtest import MAX_LISTED
from api.rules.backtest import backtest as run_backtest
from api.rules.context import History
from api.rules.definitions import CODE_PATTERN
from api.security import Admin, Staff
from api.types import NO_NUL, Timestamp

router = APIRouter(prefix="/v1/rules", tags=["rules"], responses=PROBLEM_RESPONSES)
MAX_WINDOW = timedelta(days=366)


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


class EvaluateResult(BaseModel):
    alerts: list[engine.Finding]
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


@router.post("/evaluate")
def evaluate(body: EvaluateBody, _: Staff, session: SessionDep) -> EvaluateResult:
    """Dry-run the rules on a report.

    Staff only: what this report would raise for a patient on these drugs, with an optional history
    for the trend rules and a baseline weight. Nothing is stored.
    """
    catalog = evaluation_catalog(session)
    errors = [
        {"loc": ["body", "drug_codes", i], "msg": f"unknown drug '{code}'"}
        for i, code in enumerate(body.drug_codes)
        if code not in catalog.drug_classes
    ]
    for field, items in (
        ("report", [body.report]),
        *((f"history.{i}", [h]) for i, h in enumerate(body.history)),
    ):
        for item in items:
            for j, s in enumerate(item.symptoms):
                if s.code not in catalog.symptom_names:
                    loc = ["body", *field.split("."), "symptoms", j, "code"]
                    errors.append({"loc": loc, "msg": f"unknown symptom code '{s.code}'"})
    if errors:
        raise Invalid(errors)
    recorded_at = body.report.recorded_at or datetime.now(UTC)
    history = History()
    for item in body.history:
        vitals = item.vitals.present() if item.vitals else {}
        history.add_report(
            item.recorded_at, {s.code: s.grade for s in item.symptoms}, vitals.get("weight_kg")
        )
    # The drugs' courses start on the report's day: weights in the history's last 7 days before
    # it are pre-dose weights.
    context = history.context(
        recorded_at,
        {s.code for s in body.report.symptoms},
        therapies=[
            engine.Therapy(code, catalog.drug_classes[code], recorded_at.date())
            for code in body.drug_codes
        ],
        baseline_weight_kg=body.baseline_weight_kg,
        window=catalog.history_window,
        serious_by_drug=catalog.serious_by_drug,
        symptom_names=catalog.symptom_names,
    )
    report = engine.ReportInput(
        recorded_at=recorded_at,
        symptoms={s.code: s.grade for s in body.report.symptoms},
        vitals=body.report.vitals.present() if body.report.vitals else {},
    )
    result = engine.evaluate(report, context, catalog.rules, catalog.policy)
    advice = result.advice
    return EvaluateResult(
        alerts=result.findings,
        advice=Advice(severity=advice.severity, message=advice.message) if advice else None,
    )


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


@router.post("/backtest")
async def backtest(body: BacktestBody, _: Admin, request: Request) -> BacktestResult:
    """Backtest a proposed drug entry.

    Admin only: replays the stored reports of a window (at most 366 days) through today's rules and
    through the proposed entry, without storing anything, and answers which findings the change
    would add, remove or change in severity.
    """
    if body.until <= body.since:
        raise Invalid([{"loc": ["body", "until"], "msg": "must be after since"}])
    if body.until - body.since > MAX_WINDOW:
        raise Invalid(
            [{"loc": ["body", "until"], "msg": f"the window is at most {MAX_WINDOW.days} days"}]
        )
    entry = DrugBody.model_validate(body.drug.model_dump(exclude={"code"}, by_alias=True))
    # A read, although it is a POST: on SQLite it must not hold the write lock while it replays.
    WRITE_INTENT.set(False)
    result = await read_only(request, run_backtest, body.drug.code, entry, body.since, body.until)
    return BacktestResult.model_validate(result)


@router.get("/performance")
def performance(principal: Staff, session: SessionDep) -> PerformanceList:
    """Rule performance.

    Staff only: per rule version over the caller's teams, how often it fired, how many were
    resolved, and how nurses judged them (`ppv` = confirmed / (confirmed + false alarm)): the
    evidence for tuning against alert fatigue.
    """
    query = (
        select(
            Alert.rule_id,
            Alert.rule_version,
            func.count(),
            func.count(case((Alert.status == "resolved", 1))),
            func.count(case((Alert.outcome == "confirmed", 1))),
            func.count(case((Alert.outcome == "false_alarm", 1))),
        )
        .group_by(Alert.rule_id, Alert.rule_version)
        .order_by(Alert.rule_id, Alert.rule_version)
    )
    teams = principal.team_filter()
    if teams is not None:
        query = query.where(Alert.care_team.in_(teams))
    items = []
    for rule_id, version, raised, resolved, confirmed, false_alarm in session.execute(query):
        judged = confirmed + false_alarm
        items.append(
            RulePerformance(
                rule_id=rule_id,
                rule_version=version,
                raised=raised,
                resolved=resolved,
                confirmed=confirmed,
                false_alarm=false_alarm,
                ppv=round(confirmed / judged, 4) if judged else None,
            )
        )
    return PerformanceList(items=items)
