from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, func, select

from api.alerts.models import Alert
from api.catalog.service import evaluation_catalog
from api.db import SessionDep
from api.errors import PROBLEM_RESPONSES, Invalid
from api.reports.schemas import MAX_BATCH, Advice, ReportBody, SymptomEntry, Vitals
from api.rules import engine
from api.rules.context import History
from api.rules.definitions import CODE_PATTERN
from api.security import Staff
from api.types import NO_NUL, Timestamp

router = APIRouter(prefix="/v1/rules", tags=["rules"], responses=PROBLEM_RESPONSES)


class DryRunReport(ReportBody):
    client_report_id: str | None = Field(default=None, max_length=64, pattern=NO_NUL)
    recorded_at: Timestamp | None = None


class HistoryItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recorded_at: Timestamp
    symptoms: list[SymptomEntry] = Field(default_factory=list, max_length=100)
    vitals: Vitals | None = None


class EvaluateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    """Dry run: what this report would raise for a patient on these drugs. Nothing is stored."""
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


@router.get("/performance")
def performance(principal: Staff, session: SessionDep) -> PerformanceList:
    """Per rule version: how often it fired and how nurses judged it (alert-fatigue evidence)."""
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
