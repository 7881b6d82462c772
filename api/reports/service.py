from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import (
    CompoundSelect,
    RowMapping,
    Uuid,
    bindparam,
    func,
    insert,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from api.alerts.schemas import AlertRead
from api.alerts.service import alerts_of_report, raise_alerts
from api.audit.service import record_many
from api.catalog.service import EvaluationCatalog, catalog_revision, evaluation_catalog
from api.db import utcnow
from api.errors import Conflict, Invalid, NotFound, validation_errors
from api.metrics import count_stored
from api.patients.models import Patient, Therapy
from api.reports.models import Report, ReportSymptom
from api.reports.schemas import (
    Advice,
    BatchResult,
    ReportCreate,
    ReportCreated,
    ReportedSymptom,
    ReportRead,
)
from api.rules import engine
from api.rules.context import History, weights_needed_from
from api.rules.definitions import VITALS
from api.security import Principal, can_see_patient

_report_adapter = TypeAdapter(ReportCreate)

patients = Patient.__table__
therapies = Therapy.__table__
reports = Report.__table__
report_symptoms = ReportSymptom.__table__

CONFLICT = "This client_report_id was already used for a different report"
# How long before the patient's first therapy (or the record's creation, if earlier) a report
# may be dated: a pre-treatment baseline, not a mistyped year.
EARLIEST_REPORT = timedelta(days=366)

# The ingest path's statements are built once: building a statement costs about as much Python
# as executing it.
_lock = (
    select(
        patients.c.id,
        patients.c.care_team,
        patients.c.baseline_weight_kg,
        patients.c.created_at,
        select(func.min(therapies.c.started_on))
        .where(therapies.c.patient_id == patients.c.id)
        .scalar_subquery()
        .label("first_therapy"),
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

    Only the request's own symptoms (``codes``): the trend rules compare nothing else. Before
    ``first``, the latest time each (symptom, grade) was reported is enough: the lowest grade
    in any window that starts after ``since`` is the lowest grade whose latest report falls in
    it. From ``first`` on, every grade (the request's reports fall in between them).
    """
    graded = report_symptoms.join(reports, reports.c.id == report_symptoms.c.report_id)
    mine = (
        reports.c.patient_id == bindparam("patient_id", type_=Uuid),
        report_symptoms.c.symptom_code.in_(bindparam("codes", expanding=True)),
    )
    return union_all(
        select(
            func.max(reports.c.recorded_at), report_symptoms.c.symptom_code, report_symptoms.c.grade
        )
        .select_from(graded)
        .where(
            *mine,
            reports.c.recorded_at >= bindparam("since"),
            reports.c.recorded_at < bindparam("first"),
        )
        .group_by(report_symptoms.c.symptom_code, report_symptoms.c.grade),
        select(reports.c.recorded_at, report_symptoms.c.symptom_code, report_symptoms.c.grade)
        .select_from(graded)
        .where(
            *mine,
            reports.c.recorded_at >= bindparam("first"),
            reports.c.recorded_at < bindparam("last"),
        ),
    )


_grades = _grades_query()
_weights = select(reports.c.recorded_at, reports.c.weight_kg).where(
    reports.c.patient_id == bindparam("patient_id", type_=Uuid),
    reports.c.weight_kg.is_not(None),
    reports.c.recorded_at >= bindparam("since"),
    reports.c.recorded_at < bindparam("last"),
)
_insert_reports = insert(Report)
_insert_symptoms = insert(ReportSymptom)


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


async def _lock_patient(
    session: AsyncSession, patient_id: uuid.UUID, principal: Principal, keys: Sequence[uuid.UUID]
) -> _Locked:
    """The patient, row-locked until the transaction ends; the catalog; ``keys`` stored before.

    Reports of one patient are evaluated one request at a time, so the history the rules read
    cannot move under them; other patients never wait (SQLite: the write lock serialises anyway).
    """
    conn = await session.connection()
    patient = (await conn.execute(_lock, {"patient_id": patient_id})).mappings().first()
    if patient is None or not can_see_patient(principal, patient["id"], patient["care_team"]):
        raise NotFound("No such patient")
    stored = {}
    if keys:
        params = {"patient_id": patient_id, "keys": list(keys)}
        rows = (await conn.execute(_stored, params)).mappings()
        stored = {row["client_report_id"]: row for row in rows}
    return _Locked(patient, await evaluation_catalog(session, patient["revision"]), stored)


async def submit(
    session: AsyncSession, patient_id: uuid.UUID, principal: Principal, body: ReportCreate
) -> tuple[ReportCreated, bool]:
    """Store one report with its alerts and audit row; the answer, and whether it is new (False
    for a replay of a stored one)."""
    digest = body_hash(body)
    locked = await _lock_patient(session, patient_id, principal, [body.client_report_id])
    patient, catalog = locked.patient, locked.catalog
    if (found := locked.stored.get(body.client_report_id)) is not None:
        if found["body_hash"] != digest:
            raise Conflict(CONFLICT)
        return await _replay(session, catalog, found), False
    _check_codes(body, catalog)
    _check_date(body, patient)
    conn = await session.connection()
    [outcome] = await _store_new(conn, patient, catalog, [(uuid.uuid4(), body, digest)])
    await _audit(session, principal, patient_id, [outcome])
    count_stored(1, outcome.alerts)
    return ReportCreated(
        **_report_fields(patient["id"], outcome),
        alerts=[AlertRead.model_validate(a) for a in outcome.alerts],
        advice=_advice(catalog, outcome.advice_severity),
    ), True


async def submit_batch(
    session: AsyncSession,
    patient_id: uuid.UUID,
    principal: Principal,
    raw_items: list[dict[str, object]],
) -> list[BatchResult]:
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
    locked = await _lock_patient(
        session, patient_id, principal, [body.client_report_id for _, body, _ in parsed]
    )
    patient, catalog = locked.patient, locked.catalog
    valid: list[tuple[int, ReportCreate, str]] = []
    for i, body, digest in parsed:
        try:
            _check_codes(body, catalog, loc=())
            _check_date(body, patient, loc=())
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
    outcomes = await _store_new(await session.connection(), patient, catalog, fresh)
    await _audit(session, principal, patient_id, outcomes)
    count_stored(len(outcomes), (alert for o in outcomes for alert in o.alerts))
    return [r for r in results if r is not None]


async def _audit(
    session: AsyncSession, principal: Principal, patient_id: uuid.UUID, stored: list[Outcome]
) -> None:
    await record_many(
        session,
        principal,
        "report.created",
        "report",
        [(o.report_id, {"patient_id": str(patient_id), "alerts": len(o.alerts)}) for o in stored],
    )


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


def _check_date(body: ReportCreate, patient: RowMapping, loc: tuple[str, ...] = ("body",)) -> None:
    start = patient["created_at"].date()
    if patient["first_therapy"] is not None:
        start = min(start, patient["first_therapy"])
    earliest = start - EARLIEST_REPORT
    if body.recorded_at.date() < earliest:
        raise Invalid(
            [
                {
                    "loc": [*loc, "recorded_at"],
                    "msg": f"is before {earliest.isoformat()}, a year before the patient's "
                    "first therapy or record",
                }
            ]
        )


async def _replay(
    session: AsyncSession, catalog: EvaluationCatalog, found: RowMapping
) -> ReportCreated:
    report = await read_report(session, found["report_id"])
    alerts = await alerts_of_report(session, found["report_id"])
    return ReportCreated(
        **report.__dict__,
        alerts=[AlertRead.model_validate(a) for a in alerts],
        advice=_advice(catalog, found["advice_severity"]),
    )


async def _store_new(
    conn: AsyncConnection,
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
        for row in await conn.execute(_therapies, {"patient_id": patient_id})
    ]
    window = catalog.history_window
    times = [body.recorded_at for _, body, _ in items]
    first, last = times[0], max(times)
    history = History()
    codes = sorted({s.code for _, body, _ in items for s in body.symptoms})
    if window and codes:
        params = {
            "patient_id": patient_id,
            "codes": codes,
            "since": first - window,
            "first": first,
            "last": last,
        }
        for at, code, grade in await conn.execute(_grades, params):
            history.add_grade(code, grade, at)
    weighed = [body.recorded_at for _, body, _ in items if body.vitals and body.vitals.weight_kg]
    since = weights_needed_from(therapy_list, weighed, catalog.baseline_drugs)
    if since is not None:
        for at, weight in await conn.execute(
            _weights, {"patient_id": patient_id, "since": since, "last": last}
        ):
            history.add_weight(weight, at)

    now = utcnow()
    outcomes: list[Outcome] = []
    evaluations: list[engine.Evaluation] = []
    report_rows: list[dict[str, Any]] = []
    symptom_rows: list[dict[str, Any]] = []
    for report_id, body, digest in items:
        at = body.recorded_at
        vitals = body.vitals.present() if body.vitals else {}
        symptoms = {s.code: s.grade for s in body.symptoms}
        evaluation = engine.evaluate(
            engine.ReportInput(recorded_at=at, symptoms=symptoms, vitals=vitals),
            history.context(
                at,
                symptoms,
                therapies=therapy_list,
                baseline_weight_kg=patient["baseline_weight_kg"],
                window=window,
                serious_by_drug=catalog.serious_by_drug,
                symptom_names=catalog.symptom_names,
            ),
            catalog.rules,
            catalog.policy,
        )
        history.add_report(at, symptoms, vitals.get("weight_kg"))
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
    await conn.execute(_insert_reports, report_rows)
    if symptom_rows:
        await conn.execute(_insert_symptoms, symptom_rows)
    touched = await raise_alerts(
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
        "symptoms": [
            ReportedSymptom(code=s.code, grade=s.grade, note=s.note) for s in body.symptoms
        ],
        "vitals": (body.vitals.present() if body.vitals else {}) or None,
        "note": body.note,
    }


def _advice(catalog: EvaluationCatalog, severity: str | None) -> Advice | None:
    if severity is None:
        return None
    return Advice(severity=severity, message=catalog.policy.severities[severity].advice)  # type: ignore[index]


async def read_report(session: AsyncSession, report_id: uuid.UUID) -> ReportRead:
    conn = await session.connection()
    row = (await conn.execute(select(reports).where(reports.c.id == report_id))).one()
    return (await read_reports(conn, [row]))[0]


async def read_reports(conn: AsyncConnection, rows: Sequence[Any]) -> list[ReportRead]:
    """Rows of ``reports`` with their symptoms: one more query."""
    symptoms: dict[uuid.UUID, list[ReportedSymptom]] = {r.id: [] for r in rows}
    if rows:
        for report_id, code, grade, note in await conn.execute(
            select(
                report_symptoms.c.report_id,
                report_symptoms.c.symptom_code,
                report_symptoms.c.grade,
                report_symptoms.c.note,
            )
            .where(report_symptoms.c.report_id.in_(list(symptoms)))
            .order_by(report_symptoms.c.report_id, report_symptoms.c.symptom_code)
        ):
            symptoms[report_id].append(ReportedSymptom(code=code, grade=grade, note=note))
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


async def list_reports(
    session: AsyncSession,
    patient: Patient,
    *,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after: Sequence[Any] | None,
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
    conn = await session.connection()
    return await read_reports(conn, (await conn.execute(query)).all())
