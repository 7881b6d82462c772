from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import insert, select, tuple_
from sqlalchemy.orm import Session

from api.alerts.models import Alert
from api.alerts.service import alerts_of_report, raise_alerts
from api.catalog.service import EvaluationCatalog, evaluation_catalog
from api.db import utcnow
from api.errors import Conflict, Invalid, validation_errors
from api.patients.models import Patient, Therapy
from api.patients.service import DEFAULT_WATCH_DAYS
from api.reports.models import Report, ReportSymptom
from api.reports.schemas import (
    Advice,
    BatchResult,
    ReportCreate,
    ReportRead,
    SymptomRead,
)
from api.rules import engine
from api.rules.definitions import VITALS

_report_adapter = TypeAdapter(ReportCreate)


@dataclass
class Stored:
    report: ReportRead
    alerts: list[Alert]
    advice: Advice | None
    created: bool


def body_hash(body: ReportCreate) -> str:
    data = body.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def submit(session: Session, patient: Patient, body: ReportCreate) -> Stored:
    """Store one report; the caller holds the patient's lock (``LockedPatient``)."""
    catalog = evaluation_catalog(session)
    return _store_one(session, patient, body, catalog)


def submit_batch(
    session: Session, patient: Patient, raw_items: list[dict[str, object]]
) -> tuple[list[BatchResult], list[Stored]]:
    catalog = evaluation_catalog(session)
    results: list[BatchResult | None] = [None] * len(raw_items)
    valid: list[tuple[int, ReportCreate]] = []
    for i, raw in enumerate(raw_items):
        key = raw.get("client_report_id") if isinstance(raw, dict) else None
        try:
            body = _report_adapter.validate_python(raw)
            _check_codes(body, catalog, loc=())  # a batch item's errors are relative to it
        except ValidationError as exc:
            results[i] = _rejected(key, validation_errors(exc.errors()))
            continue
        except Invalid as exc:
            results[i] = _rejected(key, exc.errors or [])
            continue
        valid.append((i, body))
    stored: list[Stored] = []
    # Trend rules must see history as it happened, whatever order the phone sent it in.
    for i, body in sorted(valid, key=lambda item: (item[1].recorded_at, item[0])):
        try:
            # _store_one raises before it writes anything, so a rejected item leaves no trace.
            outcome = _store_one(session, patient, body, catalog)
        except Conflict as exc:
            results[i] = _rejected(
                str(body.client_report_id), [{"loc": ["client_report_id"], "msg": exc.detail}]
            )
            continue
        stored.append(outcome)
        results[i] = BatchResult(
            client_report_id=str(body.client_report_id),
            status="created" if outcome.created else "duplicate",
            report_id=outcome.report.id,
        )
    return [r for r in results if r is not None], stored


def _rejected(key: object, errors: list[dict[str, object]]) -> BatchResult:
    return BatchResult.model_validate(
        {
            "client_report_id": key if isinstance(key, str) else None,
            "status": "rejected",
            "errors": errors,
        }
    )


def _check_codes(
    body: ReportCreate, catalog: EvaluationCatalog, loc: tuple[str, ...] = ("body",)
) -> None:
    errors = [
        {"loc": [*loc, "symptoms", i, "code"], "msg": f"unknown symptom code '{s.code}'"}
        for i, s in enumerate(body.symptoms)
        if s.code not in catalog.symptom_names
    ]
    if errors:
        raise Invalid(errors)


def _store_one(
    session: Session, patient: Patient, body: ReportCreate, catalog: EvaluationCatalog
) -> Stored:
    digest = body_hash(body)
    existing = session.scalar(
        select(Report).where(
            Report.patient_id == patient.id, Report.client_report_id == body.client_report_id
        )
    )
    if existing is not None:
        if existing.body_hash != digest:
            raise Conflict("This client_report_id was already used for a different report")
        return Stored(
            report=read_reports(session, [existing])[0],
            alerts=alerts_of_report(session, existing.id),
            advice=_advice(catalog, existing.advice_severity),
            created=False,
        )
    _check_codes(body, catalog)

    evaluation = engine.evaluate(
        _report_input(body),
        _context(session, patient, body, catalog),
        catalog.rules,
        catalog.policy,
    )
    now = utcnow()
    report_id = uuid.uuid4()
    vitals = body.vitals.present() if body.vitals else {}
    advice_severity = evaluation.advice.severity if evaluation.advice else None
    session.execute(
        insert(Report).values(
            id=report_id,
            patient_id=patient.id,
            client_report_id=body.client_report_id,
            recorded_at=body.recorded_at,
            received_at=now,
            note=body.note,
            body_hash=digest,
            advice_severity=advice_severity,
            **vitals,
        )
    )
    if body.symptoms:
        session.execute(
            insert(ReportSymptom),
            [
                {"report_id": report_id, "symptom_code": s.code, "grade": s.grade, "note": s.note}
                for s in body.symptoms
            ],
        )
    alerts = raise_alerts(session, patient, report_id, evaluation.findings, now)
    report = ReportRead(
        id=report_id,
        patient_id=patient.id,
        client_report_id=body.client_report_id,
        recorded_at=body.recorded_at.astimezone(UTC),
        received_at=now,
        symptoms=[SymptomRead(code=s.code, grade=s.grade, note=s.note) for s in body.symptoms],
        vitals=vitals or None,
        note=body.note,
    )
    return Stored(report, alerts, _advice(catalog, advice_severity), created=True)


def _advice(catalog: EvaluationCatalog, severity: str | None) -> Advice | None:
    if severity is None:
        return None
    return Advice(severity=severity, message=catalog.policy.severities[severity].advice)  # type: ignore[index]


def _report_input(body: ReportCreate) -> engine.ReportInput:
    return engine.ReportInput(
        recorded_at=body.recorded_at,
        symptoms={s.code: s.grade for s in body.symptoms},
        vitals=body.vitals.present() if body.vitals else {},
    )


def _context(
    session: Session, patient: Patient, body: ReportCreate, catalog: EvaluationCatalog
) -> engine.PatientContext:
    therapies = [
        engine.Therapy(
            drug_code=t.drug_code,
            drug_class=catalog.drug_classes.get(t.drug_code, ""),
            started_on=t.started_on,
            ended_on=t.ended_on,
        )
        for t in session.scalars(select(Therapy).where(Therapy.patient_id == patient.id))
    ]
    baseline = patient.baseline_weight_kg
    if baseline is None and body.vitals and body.vitals.weight_kg is not None:
        baseline = _first_weight(session, patient, therapies, body.recorded_at)
    return engine.PatientContext(
        therapies=therapies,
        baseline_weight_kg=baseline,
        previous=previous_grades(session, patient, body.recorded_at, catalog.history_window),
        serious_by_drug=catalog.serious_by_drug,
        symptom_names=catalog.symptom_names,
    )


def _first_weight(
    session: Session, patient: Patient, therapies: list[engine.Therapy], before: datetime
) -> float | None:
    """Without a recorded baseline: the first weight reported in the current therapy.

    The current therapy is the one started last among those the patient is on, counting a
    course that ended within the default watch window (capillary leak outlasts the last dose).
    """
    day = before.date()
    recent = [
        t.started_on
        for t in therapies
        if t.started_on <= day
        and (t.ended_on is None or day - timedelta(days=DEFAULT_WATCH_DAYS) <= t.ended_on)
    ]
    if not recent:
        return None
    start = datetime.combine(max(recent), datetime.min.time(), before.tzinfo)
    return session.scalar(
        select(Report.weight_kg)
        .where(
            Report.patient_id == patient.id,
            Report.weight_kg.is_not(None),
            Report.recorded_at >= start,
            Report.recorded_at < before,
        )
        .order_by(Report.recorded_at)
        .limit(1)
    )


def previous_grades(
    session: Session, patient: Patient, before: datetime, window: timedelta
) -> dict[str, engine.PriorGrade]:
    if not window:
        return {}
    rows = session.execute(
        select(ReportSymptom.symptom_code, ReportSymptom.grade, Report.recorded_at)
        .join(Report, Report.id == ReportSymptom.report_id)
        .where(
            Report.patient_id == patient.id,
            Report.recorded_at >= before - window,
            Report.recorded_at < before,
        )
        .order_by(Report.recorded_at.desc())
    )
    latest: dict[str, engine.PriorGrade] = {}
    for code, grade, recorded_at in rows:
        latest.setdefault(code, engine.PriorGrade(grade=grade, recorded_at=recorded_at))
    return latest


def read_reports(session: Session, reports: list[Report]) -> list[ReportRead]:
    symptoms: dict[uuid.UUID, list[SymptomRead]] = {r.id: [] for r in reports}
    if reports:
        for row in session.scalars(
            select(ReportSymptom)
            .where(ReportSymptom.report_id.in_(list(symptoms)))
            .order_by(ReportSymptom.report_id, ReportSymptom.symptom_code)
        ):
            symptoms[row.report_id].append(
                SymptomRead(code=row.symptom_code, grade=row.grade, note=row.note)
            )
    return [
        ReportRead(
            id=r.id,
            patient_id=r.patient_id,
            client_report_id=r.client_report_id,
            recorded_at=r.recorded_at,
            received_at=r.received_at,
            symptoms=symptoms[r.id],
            vitals={c: v for c in VITALS if (v := getattr(r, c)) is not None} or None,
            note=r.note,
        )
        for r in reports
    ]


def list_reports(
    session: Session,
    patient: Patient,
    *,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after: list | None,
) -> list[ReportRead]:
    query = (
        select(Report)
        .where(Report.patient_id == patient.id)
        .order_by(Report.recorded_at.desc(), Report.id.desc())
        .limit(limit + 1)
    )
    if since:
        query = query.where(Report.recorded_at >= since)
    if until:
        query = query.where(Report.recorded_at < until)
    if after:
        query = query.where(tuple_(Report.recorded_at, Report.id) < tuple_(*after))
    return read_reports(session, list(session.scalars(query)))
