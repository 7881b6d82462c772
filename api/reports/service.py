from __future__ import annotations

import bisect
import hashlib
import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import (
    CompoundSelect,
    Connection,
    RowMapping,
    Uuid,
    bindparam,
    func,
    insert,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session

from api.alerts.schemas import AlertRead
from api.alerts.service import alerts_of_report, raise_alerts
from api.catalog.service import EvaluationCatalog, catalog_revision, evaluation_catalog
from api.db import utcnow
from api.errors import Conflict, Invalid, NotFound, validation_errors
from api.patients.models import Patient, Therapy
from api.patients.service import DEFAULT_WATCH_DAYS
from api.reports.models import Report, ReportSymptom
from api.reports.schemas import (
    Advice,
    BatchResult,
    ReportCreate,
    ReportCreated,
    ReportRead,
    SymptomRead,
)
from api.rules import engine
from api.rules.definitions import VITALS
from api.security import Principal, can_see_patient

_report_adapter = TypeAdapter(ReportCreate)

patients = Patient.__table__
therapies = Therapy.__table__
reports = Report.__table__
report_symptoms = ReportSymptom.__table__

CONFLICT = "This client_report_id was already used for a different report"

# The ingest path's statements are built once: building a statement costs about as much Python
# as executing it.
_lock = (
    select(
        patients.c.id,
        patients.c.care_team,
        patients.c.baseline_weight_kg,
        catalog_revision().label("revision"),
    )
    .where(patients.c.id == bindparam("patient_id", type_=Uuid))
    .with_for_update(of=patients)
)
# Read after the lock, never in the same statement: a statement that waited for the lock still
# sees the snapshot it started with, without the report the lock holder just stored.
_stored = select(
    reports.c.client_report_id,
    reports.c.id.label("report_id"),
    reports.c.body_hash,
    reports.c.advice_severity,
).where(
    reports.c.patient_id == bindparam("patient_id", type_=Uuid),
    reports.c.client_report_id.in_(bindparam("keys", expanding=True)),
)
_therapies = select(therapies.c.drug_code, therapies.c.started_on, therapies.c.ended_on).where(
    therapies.c.patient_id == bindparam("patient_id", type_=Uuid)
)


def _grades_query() -> CompoundSelect:
    """Grades the trend rules may look back to, for reports recorded in [first, last].

    Before ``first`` only the latest grade of each symptom within the look-back matters (every
    report of the request is later); from ``first`` on, every grade (the request's reports fall
    in between them).
    """
    graded = report_symptoms.join(reports, reports.c.id == report_symptoms.c.report_id)
    columns = (reports.c.recorded_at, report_symptoms.c.symptom_code, report_symptoms.c.grade)
    latest = (
        select(
            *columns,
            func.row_number()
            .over(
                partition_by=report_symptoms.c.symptom_code,
                order_by=reports.c.recorded_at.desc(),
            )
            .label("n"),
        )
        .select_from(graded)
        .where(
            reports.c.patient_id == bindparam("patient_id", type_=Uuid),
            reports.c.recorded_at >= bindparam("since"),
            reports.c.recorded_at < bindparam("first"),
        )
        .subquery()
    )
    return union_all(
        select(latest.c.recorded_at, latest.c.symptom_code, latest.c.grade).where(latest.c.n == 1),
        select(*columns)
        .select_from(graded)
        .where(
            reports.c.patient_id == bindparam("patient_id", type_=Uuid),
            reports.c.recorded_at >= bindparam("first"),
            reports.c.recorded_at < bindparam("last"),
        ),
    )


_grades = _grades_query()
_weights = (
    select(reports.c.recorded_at, reports.c.weight_kg)
    .where(
        reports.c.patient_id == bindparam("patient_id", type_=Uuid),
        reports.c.weight_kg.is_not(None),
        reports.c.recorded_at >= bindparam("since"),
        reports.c.recorded_at < bindparam("last"),
    )
    .order_by(reports.c.recorded_at)
)
_insert_reports = insert(reports)
_insert_symptoms = insert(report_symptoms)


@dataclass(slots=True)
class Outcome:
    """A report stored by this request."""

    report_id: uuid.UUID
    body: ReportCreate
    received_at: datetime
    advice_severity: str | None
    alerts: list[dict[str, Any]] = field(default_factory=list)


def body_hash(body: ReportCreate) -> str:
    data = body.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


@dataclass(slots=True)
class _Locked:
    patient: RowMapping
    catalog: EvaluationCatalog
    stored: dict[uuid.UUID, RowMapping]  # client_report_id -> the report stored under it


def _lock_patient(
    session: Session, patient_id: uuid.UUID, principal: Principal, keys: Sequence[uuid.UUID]
) -> _Locked:
    """The patient, row-locked until the transaction ends; the catalog; ``keys`` stored before.

    Reports of one patient are evaluated one request at a time, so the history the rules read
    cannot move under them; other patients never wait (SQLite: the write lock serialises anyway).
    """
    conn = session.connection()
    patient = conn.execute(_lock, {"patient_id": patient_id}).mappings().first()
    if patient is None or not can_see_patient(principal, patient["id"], patient["care_team"]):
        raise NotFound("No such patient")
    stored = {}
    if keys:
        params = {"patient_id": patient_id, "keys": list(keys)}
        stored = {row["client_report_id"]: row for row in conn.execute(_stored, params).mappings()}
    return _Locked(patient, evaluation_catalog(session, patient["revision"]), stored)


def submit(
    session: Session, patient_id: uuid.UUID, principal: Principal, body: ReportCreate
) -> tuple[ReportCreated, Outcome | None]:
    """Store one report; the answer, and the outcome when it is new (None for a replay)."""
    digest = body_hash(body)
    locked = _lock_patient(session, patient_id, principal, [body.client_report_id])
    patient, catalog = locked.patient, locked.catalog
    if (found := locked.stored.get(body.client_report_id)) is not None:
        if found["body_hash"] != digest:
            raise Conflict(CONFLICT)
        return _replay(session, catalog, found), None
    _check_codes(body, catalog)
    [outcome] = _store_new(session.connection(), patient, catalog, [(uuid.uuid4(), body, digest)])
    return ReportCreated(
        **_report_fields(patient["id"], outcome),
        alerts=[AlertRead.model_validate(a) for a in outcome.alerts],
        advice=_advice(catalog, outcome.advice_severity),
    ), outcome


def submit_batch(
    session: Session,
    patient_id: uuid.UUID,
    principal: Principal,
    raw_items: list[dict[str, object]],
) -> tuple[list[BatchResult], list[Outcome]]:
    """Store up to a batch of reports in a fixed number of statements.

    Items are validated one by one (a bad one rejects only itself) and evaluated in
    ``recorded_at`` order, each seeing the ones before it; results come in input order.
    """
    results: list[BatchResult | None] = [None] * len(raw_items)
    parsed: list[tuple[int, ReportCreate, str]] = []
    for i, raw in enumerate(raw_items):
        try:
            body = _report_adapter.validate_python(raw)
            parsed.append((i, body, body_hash(body)))
        except ValidationError as exc:
            # a batch item's errors are relative to the item
            results[i] = _rejected(_key_of(raw), validation_errors(exc.errors()))
    # Parsed before the lock is taken: the patient's other requests wait no longer than needed.
    locked = _lock_patient(
        session, patient_id, principal, [body.client_report_id for _, body, _ in parsed]
    )
    patient, catalog = locked.patient, locked.catalog
    valid: list[tuple[int, ReportCreate, str]] = []
    for i, body, digest in parsed:
        try:
            _check_codes(body, catalog, loc=())
        except Invalid as exc:
            results[i] = _rejected(_key_of(raw_items[i]), exc.errors or [])
            continue
        valid.append((i, body, digest))
    # Trend rules must see history as it happened, whatever order the phone sent it in.
    valid.sort(key=lambda item: (item[1].recorded_at, item[0]))
    seen = {key: (row["body_hash"], row["report_id"]) for key, row in locked.stored.items()}
    fresh: list[tuple[uuid.UUID, ReportCreate, str]] = []
    for i, body, digest in valid:
        key = body.client_report_id
        if key in seen:
            known_hash, report_id = seen[key]
            results[i] = (
                BatchResult(client_report_id=str(key), status="duplicate", report_id=report_id)
                if known_hash == digest
                else _rejected(str(key), [{"loc": ["client_report_id"], "msg": CONFLICT}])
            )
            continue
        report_id = uuid.uuid4()
        seen[key] = (digest, report_id)
        fresh.append((report_id, body, digest))
        results[i] = BatchResult(client_report_id=str(key), status="created", report_id=report_id)
    outcomes = _store_new(session.connection(), patient, catalog, fresh)
    return [r for r in results if r is not None], outcomes


def _key_of(raw: object) -> object:
    return raw.get("client_report_id") if isinstance(raw, dict) else None


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


def _replay(session: Session, catalog: EvaluationCatalog, found: RowMapping) -> ReportCreated:
    report = read_reports(session, [session.get_one(Report, found["report_id"])])[0]
    return ReportCreated(
        **report.__dict__,
        alerts=[AlertRead.model_validate(a) for a in alerts_of_report(session, found["report_id"])],
        advice=_advice(catalog, found["advice_severity"]),
    )


class _History:
    """The patient's symptom grades and weights by time: stored ones, then this request's."""

    def __init__(self) -> None:
        self.grade_times: list[datetime] = []
        self.grades: list[tuple[str, int]] = []
        self.weight_times: list[datetime] = []
        self.weights: list[float] = []

    def add_grade(self, at: datetime, code: str, grade: int) -> None:
        i = bisect.bisect_right(self.grade_times, at)
        self.grade_times.insert(i, at)
        self.grades.insert(i, (code, grade))

    def add_weight(self, at: datetime, weight: float) -> None:
        i = bisect.bisect_right(self.weight_times, at)
        self.weight_times.insert(i, at)
        self.weights.insert(i, weight)

    def previous(
        self, before: datetime, window: timedelta, codes: Collection[str]
    ) -> dict[str, engine.PriorGrade]:
        """Latest grade of each of ``codes`` in [before - window, before).

        Only the report's own symptoms: the trend rules compare nothing else, and the walk back
        stops as soon as each has been found.
        """
        latest: dict[str, engine.PriorGrade] = {}
        start = before - window
        for i in range(bisect.bisect_left(self.grade_times, before) - 1, -1, -1):
            at = self.grade_times[i]
            if at < start or len(latest) == len(codes):
                break
            code, grade = self.grades[i]
            if code in codes and code not in latest:
                latest[code] = engine.PriorGrade(grade=grade, recorded_at=at)
        return latest

    def first_weight(self, since: datetime, before: datetime) -> float | None:
        i = bisect.bisect_left(self.weight_times, since)
        if i < len(self.weight_times) and self.weight_times[i] < before:
            return self.weights[i]
        return None


def _current_therapy_start(therapies: list[engine.Therapy], before: datetime) -> datetime | None:
    """Where the first-weight baseline is looked for when the patient has no recorded one.

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
    return datetime.combine(max(recent), datetime.min.time(), before.tzinfo)


def _store_new(
    conn: Connection,
    patient: RowMapping,
    catalog: EvaluationCatalog,
    items: list[tuple[uuid.UUID, ReportCreate, str]],
) -> list[Outcome]:
    """Evaluate and insert new reports, given in ``recorded_at`` order, with their alerts.

    The patient's context is read once (therapies, the grades in the trend rules' look-back,
    weights where the baseline must be found), each report is evaluated against it plus the
    reports before it, and every table gets one statement: a few round trips for 1 or 100.
    """
    if not items:
        return []
    patient_id = patient["id"]
    therapy_list = [
        engine.Therapy(
            drug_code=row.drug_code,
            drug_class=catalog.drug_classes.get(row.drug_code, ""),
            started_on=row.started_on,
            ended_on=row.ended_on,
        )
        for row in conn.execute(_therapies, {"patient_id": patient_id})
    ]
    window = catalog.history_window
    last = max(body.recorded_at for _, body, _ in items)
    history = _History()
    if window:
        first = items[0][1].recorded_at
        params = {"patient_id": patient_id, "since": first - window, "first": first, "last": last}
        rows = conn.execute(_grades, params).all()
        rows.sort(key=lambda row: row[0])
        history.grade_times = [at for at, _, _ in rows]
        history.grades = [(code, grade) for _, code, grade in rows]
    baseline = patient["baseline_weight_kg"]
    starts: list[datetime | None] = [None] * len(items)
    if baseline is None:
        starts = [
            _current_therapy_start(therapy_list, body.recorded_at)
            if body.vitals and body.vitals.weight_kg is not None
            else None
            for _, body, _ in items
        ]
        if any(starts):
            since = min(s for s in starts if s is not None)
            params = {"patient_id": patient_id, "since": since, "last": last}
            for at, weight in conn.execute(_weights, params):
                history.weight_times.append(at)
                history.weights.append(weight)

    now = utcnow()
    outcomes: list[Outcome] = []
    evaluations: list[engine.Evaluation] = []
    report_rows: list[dict[str, Any]] = []
    symptom_rows: list[dict[str, Any]] = []
    for (report_id, body, digest), start in zip(items, starts, strict=True):
        at = body.recorded_at
        vitals = body.vitals.present() if body.vitals else {}
        symptoms = {s.code: s.grade for s in body.symptoms}
        evaluation = engine.evaluate(
            engine.ReportInput(recorded_at=at, symptoms=symptoms, vitals=vitals),
            engine.PatientContext(
                therapies=therapy_list,
                baseline_weight_kg=(
                    baseline
                    if baseline is not None or start is None
                    else history.first_weight(start, at)
                ),
                previous=history.previous(at, window, symptoms) if window else {},
                serious_by_drug=catalog.serious_by_drug,
                symptom_names=catalog.symptom_names,
            ),
            catalog.rules,
            catalog.policy,
        )
        for s in body.symptoms:
            history.add_grade(at, s.code, s.grade)
        if "weight_kg" in vitals:
            history.add_weight(at, vitals["weight_kg"])
        advice_severity = evaluation.advice.severity if evaluation.advice else None
        outcomes.append(Outcome(report_id, body, now, advice_severity))
        evaluations.append(evaluation)
        report_rows.append(
            {
                "id": report_id,
                "patient_id": patient_id,
                "client_report_id": body.client_report_id,
                "recorded_at": at,
                "received_at": now,
                "note": body.note,
                "body_hash": digest,
                "advice_severity": advice_severity,
                **{name: vitals.get(name) for name in VITALS},
            }
        )
        symptom_rows.extend(
            {"report_id": report_id, "symptom_code": s.code, "grade": s.grade, "note": s.note}
            for s in body.symptoms
        )
    conn.execute(_insert_reports, report_rows)
    if symptom_rows:
        conn.execute(_insert_symptoms, symptom_rows)
    touched = raise_alerts(
        conn,
        patient_id,
        patient["care_team"],
        [(o.report_id, e.findings) for o, e in zip(outcomes, evaluations, strict=True)],
        now,
    )
    for outcome, alerts in zip(outcomes, touched, strict=True):
        outcome.alerts = alerts
    return outcomes


def _report_fields(patient_id: uuid.UUID, outcome: Outcome) -> dict[str, Any]:
    body = outcome.body
    return {
        "id": outcome.report_id,
        "patient_id": patient_id,
        "client_report_id": body.client_report_id,
        "recorded_at": body.recorded_at.astimezone(UTC),
        "received_at": outcome.received_at,
        "symptoms": [SymptomRead(code=s.code, grade=s.grade, note=s.note) for s in body.symptoms],
        "vitals": (body.vitals.present() if body.vitals else {}) or None,
        "note": body.note,
    }


def _advice(catalog: EvaluationCatalog, severity: str | None) -> Advice | None:
    if severity is None:
        return None
    return Advice(severity=severity, message=catalog.policy.severities[severity].advice)  # type: ignore[index]


def read_reports(session: Session, rows: Sequence[Any]) -> list[ReportRead]:
    """Reports (ORM objects or rows of ``reports``) with their symptoms: one more query."""
    symptoms: dict[uuid.UUID, list[SymptomRead]] = {r.id: [] for r in rows}
    if rows:
        for report_id, code, grade, note in session.connection().execute(
            select(
                report_symptoms.c.report_id,
                report_symptoms.c.symptom_code,
                report_symptoms.c.grade,
                report_symptoms.c.note,
            )
            .where(report_symptoms.c.report_id.in_(list(symptoms)))
            .order_by(report_symptoms.c.report_id, report_symptoms.c.symptom_code)
        ):
            symptoms[report_id].append(SymptomRead(code=code, grade=grade, note=note))
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
        for r in rows
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
        select(reports)
        .where(reports.c.patient_id == patient.id)
        .order_by(reports.c.recorded_at.desc(), reports.c.id.desc())
        .limit(limit + 1)
    )
    if since:
        query = query.where(reports.c.recorded_at >= since)
    if until:
        query = query.where(reports.c.recorded_at < until)
    if after:
        query = query.where(tuple_(reports.c.recorded_at, reports.c.id) < tuple_(*after))
    return read_reports(session, session.connection().execute(query).all())
