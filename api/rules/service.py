"""The rules' own services: the dry run of a report, and how each rule has performed."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.alerts.models import Alert
from api.catalog.service import evaluation_catalog
from api.errors import Invalid
from api.reports.schemas import Advice
from api.rules import engine
from api.rules.context import History
from api.rules.schemas import (
    DryRunReport,
    EvaluateBody,
    EvaluateResult,
    FindingRead,
    HistoryItem,
    RulePerformance,
)
from api.security import Principal


async def dry_run(session: AsyncSession, body: EvaluateBody) -> EvaluateResult:
    """What ``body.report`` would raise for a patient on ``body.drug_codes``; nothing is stored.

    The patient context is built by the same :class:`History` as ingest builds it from stored
    reports, here from the history the caller sent.
    """
    catalog = await evaluation_catalog(session)
    errors = [
        {"loc": ["body", "drug_codes", i], "msg": f"unknown drug '{code}'"}
        for i, code in enumerate(body.drug_codes)
        if code not in catalog.drug_classes
    ]
    sent: list[tuple[str, list[DryRunReport] | list[HistoryItem]]] = [
        ("report", [body.report]),
        *((f"history.{i}", [h]) for i, h in enumerate(body.history)),
    ]
    for field, items in sent:
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
        alerts=[FindingRead.model_validate(f) for f in result.findings],
        advice=Advice(severity=advice.severity, message=advice.message) if advice else None,
    )


async def performance(session: AsyncSession, principal: Principal) -> list[RulePerformance]:
    """Per rule version over the caller's teams: raised, resolved and judged alerts."""
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
    for rule_id, version, raised, resolved, confirmed, false_alarm in await session.execute(query):
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
    return items
