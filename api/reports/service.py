from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

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

from api.alerts.events import write_events
from api.alerts.schemas import AlertRead
from api.alerts.service import alerts_of_report, raise_alerts
from api.audit.service import audit_rows, write_rows
from api.catalog.service import EvaluationCatalog, catalog_revision, evaluation_catalog
from api.db import utcnow
from api.errors import AppError, Conflict, Invalid, NotFound, validation_errors
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
from api.rules.context import History, course_starts
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
# as executing it. Each serves every patient of a group of reports at once.
_patient_ids = bindparam("patient_ids", type_=Uuid, expanding=True)
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
    .where(patients.c.id.in_(_patient_ids))
    # One lock order for every transaction: two groups that share patients cannot deadlock.
    .order_by(patients.c.id)
    .with_for_update(of=patients)
)
# The same, passing over patients another group holds: their reports wait for a later group
# instead of holding up this one (two workers' groups often share a patient).
_lock_free = _lock.with_for_update(of=patients, skip_locked=True)
# Read after the lock, never in the same statement: a statement that waited for the lock still
# sees the snapshot it started with, without the report the lock holder just stored.
_stored = select(
    reports.c.patient_id,
    reports.c.client_report_id,
    reports.c.id.label("report_id"),
    reports.c.body_hash,
    reports.c.advice_severity,
).where(
    reports.c.patient_id.in_(_patient_ids),
    reports.c.client_report_id.in_(bindparam("keys", expanding=True)),
)
_therapies = select(
    therapies.c.patient_id, therapies.c.drug_code, therapies.c.started_on, therapies.c.ended_on
).where(therapies.c.patient_id.in_(_patient_ids))


def _grades_query() -> CompoundSelect:
    """Grades the trend rules may look back to, for reports recorded in [first, last].

    Only the group's own symptoms (``codes``): the trend rules compare nothing else. Before
    ``first``, the latest time each (symptom, grade) was reported is enough: the lowest grade
    in any window that starts after ``since`` is the lowest grade whose latest report falls in
    it. From ``first`` on, every grade (the new reports fall in between them). ``since``,
    ``first`` and ``last`` span the whole group; each patient keeps what its own window needs.
    """
    graded = report_symptoms.join(reports, reports.c.id == report_symptoms.c.report_id)
    mine = (
        reports.c.patient_id.in_(_patient_ids),
        report_symptoms.c.symptom_code.in_(bindparam("codes", expanding=True)),
    )
    columns = (reports.c.patient_id, report_symptoms.c.symptom_code, report_symptoms.c.grade)
    return union_all(
        select(func.max(reports.c.recorded_at), *columns)
        .select_from(graded)
        .where(
            *mine,
            reports.c.recorded_at >= bindparam("since"),
            reports.c.recorded_at < bindparam("first"),
        )
        .group_by(*columns),
        select(reports.c.recorded_at, *columns)
        .select_from(graded)
        .where(
            *mine,
            reports.c.recorded_at >= bindparam("first"),
            reports.c.recorded_at < bindparam("last"),
        ),
    )


_grades = _grades_query()
_weighed = select(reports.c.patient_id, reports.c.recorded_at, reports.c.weight_kg).where(
    reports.c.weight_kg.is_not(None)
)


def _course_weights(courses: Sequence[tuple[uuid.UUID, datetime, datetime]]) -> CompoundSelect:
    """The weights a course baseline can rest on, for each (patient, course start, end of the
    patient's reports): the latest of the 7 days before the course and the first in it.

    Two rows a course, however long the course and however often the patient weighs in.
    """
    at = reports.c.recorded_at
    found = []
    for patient_id, start, end in courses:
        mine = _weighed.where(reports.c.patient_id == patient_id)
        pre_dose = mine.where(at >= start - engine.PRE_DOSE, at < start).order_by(at.desc())
        first = mine.where(at >= start, at < end).order_by(at)
        found += [select(pre_dose.limit(1).subquery()), select(first.limit(1).subquery())]
    return union_all(*found)


_insert_reports = insert(Report)
_insert_symptoms = insert(ReportSymptom)


# --- what a request asks the group writer to store ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Single:
    """One report (POST /reports)."""

    patient_id: uuid.UUID
    principal: Principal
    body: ReportCreate

    size: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to a batch of reports of one patient (POST /reports/batch), items not yet validated."""

    patient_id: uuid.UUID
    principal: Principal
    items: list[dict[str, object]]

    @property
    def size(self) -> int:
        return len(self.items)


Job = Single | Batch


class Deferred:
    """A job whose patient another transaction held: nothing of it was written."""


DEFERRED = Deferred()
# Per job: the report and whether it is new, the batch's results, the problem it met, or
# DEFERRED.
Answer = tuple[ReportCreated, bool] | list[BatchResult] | AppError | Deferred


@dataclass(slots=True)
class Outcome:
    """A report stored by this transaction."""

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
class _Known:
    """A report stored under a client_report_id, before or by this transaction."""

    digest: str
    report_id: uuid.UUID
    stored: RowMapping | None = None  # its row, if stored before this transaction


@dataclass(slots=True)
class _Fresh:
    report_id: uuid.UUID
    body: ReportCreate
    digest: str
    order: int  # arrival: breaks ties of recorded_at


@dataclass(slots=True)
class _PatientPart:
    """One patient's share of a group."""

    row: RowMapping
    known: dict[uuid.UUID, _Known]
    fresh: list[_Fresh] = field(default_factory=list)


async def write_group(
    session: AsyncSession, jobs: Sequence[Job], skip_locked: bool = False
) -> tuple[list[Answer], list[Outcome]]:
    """Store the reports of ``jobs`` with their alerts, audit rows and events, in a fixed number
    of statements however many jobs and patients there are; an answer per job, and the reports
    stored.

    A job's own problem (unknown patient, conflict, bad data found with the patient row) is its
    answer and touches no other job. The patients are locked in one statement, in id order; a
    patient's reports are evaluated in ``recorded_at`` order, each seeing the ones before it.
    With ``skip_locked``, a job whose patient another transaction holds (or who does not exist)
    is answered ``DEFERRED``, to be written again without it.
    """
    conn = await session.connection()
    # Until the reports are stored, a job's answer may stand for what it will be (_Fresh, _Known).
    answers: list[Any] = [None] * len(jobs)
    batch_results: dict[int, list[BatchResult | None]] = {}
    parsed: list[list[tuple[int, ReportCreate, str]]] = []
    # Batch items are parsed before the locks are taken: other requests wait no longer than needed.
    for j, job in enumerate(jobs):
        if isinstance(job, Single):
            parsed.append([(0, job.body, body_hash(job.body))])
            continue
        results: list[BatchResult | None] = [None] * len(job.items)
        items = []
        for i, raw in enumerate(job.items):
            try:
                body = _report_adapter.validate_python(raw)
                items.append((i, body, body_hash(body)))
            except ValidationError as exc:
                # a batch item's errors are relative to the item
                results[i] = _rejected(_key_of(raw), validation_errors(exc.errors()))
        parsed.append(items)
        batch_results[j] = results

    ids = sorted({job.patient_id for job in jobs})
    lock = _lock_free if skip_locked else _lock
    rows = {row["id"]: row for row in (await conn.execute(lock, {"patient_ids": ids})).mappings()}

    def missing() -> Answer:
        return DEFERRED if skip_locked else NotFound("No such patient")

    keys = sorted({body.client_report_id for items in parsed for _, body, _ in items})
    known: dict[uuid.UUID, dict[uuid.UUID, _Known]] = {pid: {} for pid in rows}
    if rows and keys:
        params = {"patient_ids": list(rows), "keys": keys}
        for found in (await conn.execute(_stored, params)).mappings():
            known[found["patient_id"]][found["client_report_id"]] = _Known(
                found["body_hash"], found["report_id"], found
            )
    if not rows:
        return [missing() for _ in jobs], []
    catalog = await evaluation_catalog(session, next(iter(rows.values()))["revision"])

    parts: dict[uuid.UUID, _PatientPart] = {}
    order = 0
    for j, job in enumerate(jobs):
        row = rows.get(job.patient_id)
        if row is None:
            answers[j] = missing()
            continue
        if not can_see_patient(job.principal, row["id"], row["care_team"]):
            answers[j] = NotFound("No such patient")
            continue
        part = parts.setdefault(job.patient_id, _PatientPart(row, known[job.patient_id]))
        if isinstance(job, Single):
            [(_, body, digest)] = parsed[j]
            if (seen := part.known.get(body.client_report_id)) is not None:
                answers[j] = seen if seen.digest == digest else Conflict(CONFLICT)
                continue
            try:
                _check_codes(body, catalog)
                _check_date(body, row)
            except Invalid as exc:
                answers[j] = exc
                continue
            fresh = _Fresh(uuid.uuid4(), body, digest, order := order + 1)
            part.known[body.client_report_id] = _Known(digest, fresh.report_id)
            part.fresh.append(fresh)
            answers[j] = fresh
            continue
        results = batch_results[j]
        valid = []
        for i, body, digest in parsed[j]:
            try:
                _check_codes(body, catalog, loc=())
                _check_date(body, row, loc=())
            except Invalid as exc:
                results[i] = _rejected(_key_of(job.items[i]), exc.errors or [])
                continue
            valid.append((i, body, digest))
        # Trend rules must see history as it happened, whatever order the phone sent it in.
        valid.sort(key=lambda item: (item[1].recorded_at, item[0]))
        for i, body, digest in valid:
            key = body.client_report_id
            if (seen := part.known.get(key)) is not None:
                results[i] = (
                    BatchResult(
                        client_report_id=str(key), status="duplicate", report_id=seen.report_id
                    )
                    if seen.digest == digest
                    else _rejected(str(key), [{"loc": ["client_report_id"], "msg": CONFLICT}])
                )
                continue
            fresh = _Fresh(uuid.uuid4(), body, digest, order := order + 1)
            part.known[key] = _Known(digest, fresh.report_id)
            part.fresh.append(fresh)
            results[i] = BatchResult(
                client_report_id=str(key), status="created", report_id=fresh.report_id
            )
        answers[j] = [r for r in results if r is not None]

    now = utcnow()
    outcomes, events = await _store_new(conn, catalog, list(parts.values()), now)
    by_id = {o.report_id: o for o in outcomes}
    audit: list[dict[str, Any]] = []
    for j, job in enumerate(jobs):
        answer = answers[j]
        if isinstance(job, Batch) and isinstance(answer, list):
            mine = [by_id[r.report_id] for r in answer if r.status == "created" and r.report_id]
            audit += _audit(job, mine)
        elif isinstance(answer, _Fresh):
            outcome = by_id[answer.report_id]
            audit += _audit(job, [outcome])
            answers[j] = (_created(job.patient_id, catalog, outcome), True)
        elif isinstance(answer, _Known):
            if answer.stored is not None:
                answers[j] = (await _replay(session, catalog, answer.stored), False)
            else:  # the same report twice in this group: the second is the first's replay
                answers[j] = (_created(job.patient_id, catalog, by_id[answer.report_id]), False)
    await write_rows(session, audit)
    # Last: the events' ordering lock is held only from here to the commit.
    await write_events(conn, events)
    return answers, outcomes


def _audit(job: Job, stored: list[Outcome]) -> list[dict[str, Any]]:
    detail = {"patient_id": str(job.patient_id)}
    entries = [(o.report_id, {**detail, "alerts": len(o.alerts)}) for o in stored]
    return audit_rows(job.principal, "report.created", "report", entries)


def _created(patient_id: uuid.UUID, catalog: EvaluationCatalog, outcome: Outcome) -> ReportCreated:
    return ReportCreated(
        **_report_fields(patient_id, outcome),
        alerts=[AlertRead.model_validate(a) for a in outcome.alerts],
        advice=_advice(catalog, outcome.advice_severity),
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
    conn: AsyncConnection, catalog: EvaluationCatalog, parts: list[_PatientPart], now: datetime
) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """Evaluate and insert the new reports of every patient, with their alerts; the reports
    stored and the alert events to write.

    The patients' context is read once for all of them (therapies, the grades in the trend
    rules' look-back, weights where a baseline must be found), each report is evaluated against
    its patient's context plus the patient's reports before it, and every table gets one
    statement: a few round trips for 1 report or 100, of one patient or many.
    """
    parts = [part for part in parts if part.fresh]
    if not parts:
        return [], []
    for part in parts:
        part.fresh.sort(key=lambda f: (f.body.recorded_at, f.order))
    ids = [part.row["id"] for part in parts]
    therapy_lists: dict[uuid.UUID, list[engine.Therapy]] = {pid: [] for pid in ids}
    for row in await conn.execute(_therapies, {"patient_ids": ids}):
        therapy_lists[row.patient_id].append(
            engine.Therapy(
                drug_code=row.drug_code,
                drug_class=catalog.drug_classes.get(row.drug_code, ""),
                started_on=row.started_on,
                ended_on=row.ended_on,
            )
        )
    window = catalog.history_window
    # Each patient's reports fall in [first, last]; what its trend rules and baselines need
    # starts at ``since`` (grades) and ``weighed_since`` (weights).
    first = {part.row["id"]: part.fresh[0].body.recorded_at for part in parts}
    last = {part.row["id"]: max(f.body.recorded_at for f in part.fresh) for part in parts}
    histories = {pid: History() for pid in ids}
    codes = sorted({s.code for part in parts for f in part.fresh for s in f.body.symptoms})
    if window and codes:
        since = {pid: at - window for pid, at in first.items()}
        params = {
            "patient_ids": ids,
            "codes": codes,
            "since": min(since.values()),
            "first": min(first.values()),
            "last": max(last.values()),
        }
        for at, pid, code, grade in await conn.execute(_grades, params):
            if since[pid] <= at < last[pid]:
                histories[pid].add_grade(code, grade, at)
    courses = []
    for part in parts:
        pid = part.row["id"]
        weighed = [
            f.body.recorded_at for f in part.fresh if f.body.vitals and f.body.vitals.weight_kg
        ]
        for start in sorted(course_starts(therapy_lists[pid], weighed, catalog.baseline_drugs)):
            courses.append((pid, start, last[pid]))
    # A set: a weight can be both one course's pre-dose weight and another's first. SQLite
    # allows 500 terms in a compound SELECT: a statement per 100 courses (one, mostly).
    weights: set[Any] = set()
    for i in range(0, len(courses), 100):
        weights.update(await conn.execute(_course_weights(courses[i : i + 100])))
    for pid, at, weight in weights:
        histories[pid].add_weight(weight, at)

    outcomes: list[Outcome] = []
    raised: list[tuple[uuid.UUID, str, uuid.UUID, Sequence[engine.Finding]]] = []
    report_rows: list[dict[str, Any]] = []
    symptom_rows: list[dict[str, Any]] = []
    for part in parts:
        patient = part.row
        history = histories[patient["id"]]
        for fresh in part.fresh:
            body, at = fresh.body, fresh.body.recorded_at
            vitals = body.vitals.present() if body.vitals else {}
            symptoms = {s.code: s.grade for s in body.symptoms}
            evaluation = engine.evaluate(
                engine.ReportInput(recorded_at=at, symptoms=symptoms, vitals=vitals),
                history.context(
                    at,
                    symptoms,
                    therapies=therapy_lists[patient["id"]],
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
            outcomes.append(Outcome(fresh.report_id, body, now, advice_severity))
            raised.append(
                (patient["id"], patient["care_team"], fresh.report_id, evaluation.findings)
            )
            report_rows.append(
                {
                    "id": fresh.report_id,
                    "patient_id": patient["id"],
                    "client_report_id": body.client_report_id,
                    "recorded_at": at,
                    "received_at": now,
                    "note": body.note,
                    "body_hash": fresh.digest,
                    "advice_severity": advice_severity,
                    **{name: vitals.get(name) for name in VITALS},
                }
            )
            symptom_rows.extend(
                {
                    "report_id": fresh.report_id,
                    "symptom_code": s.code,
                    "grade": s.grade,
                    "note": s.note,
                }
                for s in body.symptoms
            )
    await conn.execute(_insert_reports, report_rows)
    if symptom_rows:
        await conn.execute(_insert_symptoms, symptom_rows)
    touched, events = await raise_alerts(conn, raised, now)
    for outcome, alerts in zip(outcomes, touched, strict=True):
        outcome.alerts = alerts
    return outcomes, events


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
