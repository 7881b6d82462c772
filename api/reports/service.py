from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import (
    ColumnElement,
    Integer,
    Uuid,
    bindparam,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import Executable

from api.alerts.events import write_events
from api.alerts.schemas import AlertRead
from api.alerts.service import alerts_of_report, raise_alerts
from api.audit.models import AuditEvent
from api.audit.service import audit_rows
from api.catalog.service import EvaluationCatalog, catalog_revision, evaluation_catalog
from api.db import UTCDateTime, Writes, array_of, new_id, one_of, utcnow
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
# as executing it. Each serves every patient of a group of reports at once, and a group reads
# in two round trips: the lock (with the therapies), then its context (``_context_query``).
_lock = (
    select(
        patients.c.id,
        patients.c.care_team,
        patients.c.baseline_weight_kg,
        patients.c.created_at,
        therapies.c.drug_code,
        therapies.c.started_on,
        therapies.c.ended_on,
        catalog_revision().label("revision"),
    )
    .select_from(patients.outerjoin(therapies, therapies.c.patient_id == patients.c.id))
    .where(one_of(patients.c.id, "patient_ids"))
    # One lock order for every transaction: two groups that share patients cannot deadlock.
    .order_by(patients.c.id)
    .with_for_update(of=patients)
)
# The same, passing over patients another group holds: their reports wait for a later group
# instead of holding up this one (two workers' groups often share a patient).
_lock_free = _lock.with_for_update(of=patients, skip_locked=True)

# The context statement's rows: one layout for its three kinds, each filling its own columns.
STORED, GRADE, WEIGHT = 0, 1, 2
_LAYOUT = {
    "patient_id": reports.c.patient_id.type,
    "at": reports.c.recorded_at.type,
    "code": report_symptoms.c.symptom_code.type,  # a grade's symptom, a stored body's hash
    "severity": reports.c.advice_severity.type,
    "grade": report_symptoms.c.grade.type,
    "kg": reports.c.weight_kg.type,
    "client_report_id": reports.c.client_report_id.type,
    "report_id": reports.c.id.type,
}
# A group's lists: the stored keys it asks for, each patient's span of grades (every grade in
# [since, last); those before first only count by their latest time, which is all the trend
# rules need of them) and each course whose baseline weight may be needed.
_KEYS = (reports.c.patient_id, reports.c.client_report_id)
_GRADED = ("graded", "since", "first", "last")
_WEIGHED = ("weighed", "course", "pre_dose", "course_end")
_SPAN = (reports.c.patient_id, *(reports.c.recorded_at,) * 3)

# The grades' rows of both statements, from their "graded" rows: before a patient's first new
# report only the latest time of each (symptom, grade), from it on every grade.
_GRADE_ROWS = """SELECT 1, patient_id, max(recorded_at), symptom_code, NULL, grade, NULL, NULL, NULL
FROM graded WHERE before
GROUP BY patient_id, symptom_code, grade
UNION ALL
SELECT 1, patient_id, recorded_at, symptom_code, NULL, grade, NULL, NULL, NULL
FROM graded WHERE NOT before
"""

# The context is read by one statement of fixed text on each database, its lists bound as one
# value each, so that it is prepared and planned once whatever the group. Read after the lock,
# never in the same statement: a statement that waited for the lock still sees the snapshot it
# started with, without the report the lock holder just stored.
#
# SQLite: each list is a JSON document of rows (``_json_rows``), read with json_each; its
# values as the columns store them. A course's two weights are the latest of the 7 days before
# it and the first in it: two rows a course, however often the patient weighs in. A report's
# symptoms are found by its id alone and then filtered by code (the unary +): searched for each
# code of the group, a report of 2-3 symptoms cost 20-odd index searches.
_sqlite_context = text(
    f"""
WITH g AS (
    SELECT json_extract(value, '$[0]') AS patient_id, json_extract(value, '$[1]') AS since,
           json_extract(value, '$[2]') AS first, json_extract(value, '$[3]') AS last
    FROM json_each(:graded)
), graded AS (
    SELECT r.patient_id, r.recorded_at, r.recorded_at < g.first AS before, s.symptom_code,
           s.grade
    FROM g CROSS JOIN reports r CROSS JOIN report_symptoms s
    WHERE r.patient_id = g.patient_id AND r.recorded_at >= g.since AND r.recorded_at < g.last
      AND s.report_id = r.id AND +s.symptom_code IN (SELECT value FROM json_each(:codes))
), c AS (
    SELECT json_extract(value, '$[0]') AS patient_id, json_extract(value, '$[1]') AS course,
           json_extract(value, '$[2]') AS pre_dose, json_extract(value, '$[3]') AS course_end
    FROM json_each(:courses)
)
SELECT 0 AS kind, r.patient_id, NULL AS at, r.body_hash AS code,
       r.advice_severity AS severity, NULL AS grade, NULL AS kg, r.client_report_id,
       r.id AS report_id
FROM json_each(:keys) AS k CROSS JOIN reports r
WHERE r.patient_id = json_extract(k.value, '$[0]')
  AND r.client_report_id = json_extract(k.value, '$[1]')
UNION ALL
{_GRADE_ROWS}UNION ALL
SELECT 2, w.patient_id, w.recorded_at, NULL, NULL, NULL, w.weight_kg, NULL, NULL
FROM c CROSS JOIN reports w
WHERE w.rowid IN (
    (SELECT r.rowid FROM reports r
     WHERE r.patient_id = c.patient_id AND r.weight_kg IS NOT NULL
       AND r.recorded_at >= c.pre_dose AND r.recorded_at < c.course
     ORDER BY r.recorded_at DESC LIMIT 1),
    (SELECT r.rowid FROM reports r
     WHERE r.patient_id = c.patient_id AND r.weight_kg IS NOT NULL
       AND r.recorded_at >= c.course AND r.recorded_at < c.course_end
     ORDER BY r.recorded_at LIMIT 1))
"""  # noqa: S608 - a constant of this module, not data
).columns(kind=Integer(), **_LAYOUT)


@functools.cache
def _processors(
    dialect: Dialect, columns: tuple[ColumnElement[Any], ...]
) -> list[Callable[[Any], Any] | None]:
    return [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]


def _json_rows(
    dialect: Dialect, columns: tuple[ColumnElement[Any], ...], rows: Sequence[tuple[Any, ...]]
) -> str:
    """``rows`` as one JSON document, each value as its column in ``columns`` stores it."""
    processors = _processors(dialect, columns)
    return json.dumps(
        [
            [v if p is None or v is None else p(v) for p, v in zip(processors, row, strict=True)]
            for row in rows
        ]
    )


def _arrays(names: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """``rows`` as one array a column, the bind parameters ``<name>s``."""
    return {f"{name}s": [row[i] for row in rows] for i, name in enumerate(names)}


# PostgreSQL: each list bound as an array. The grades are read report by report through the
# primary keys (LATERAL, OFFSET 0): a hash join over a sequential scan of report_symptoms is
# what the planner picks for a plain join on a small database. The codes go as text[]
# (``array_of``), and the statement casts them to that.
_ARRAYS = {
    "key_patients": ARRAY(Uuid),
    "keys": ARRAY(Uuid),
    "codes": array_of(report_symptoms.c.symptom_code.type),
    **{
        f"{name}s": ARRAY(Uuid if name in ("graded", "weighed") else UTCDateTime())
        for name in _GRADED + _WEIGHED
    },
}
_pg_context = (
    text(
        f"""
WITH graded AS (
    -- Every grade in [since, last); those before first only count by their latest time.
    SELECT r.patient_id, r.recorded_at, r.recorded_at < g.first AS before, s.symptom_code,
           s.grade
    FROM unnest(CAST(:gradeds AS uuid[]), CAST(:sinces AS timestamptz[]),
                CAST(:firsts AS timestamptz[]), CAST(:lasts AS timestamptz[]))
         AS g(patient_id, since, first, last)
    CROSS JOIN LATERAL (
        SELECT r.id, r.patient_id, r.recorded_at FROM reports r
        WHERE r.patient_id = g.patient_id AND r.recorded_at >= g.since
          AND r.recorded_at < g.last
        OFFSET 0) r
    CROSS JOIN LATERAL (
        SELECT s.symptom_code, s.grade FROM report_symptoms s
        WHERE s.report_id = r.id AND s.symptom_code = ANY(CAST(:codes AS text[]))
        OFFSET 0) s
)
SELECT 0 AS kind, r.patient_id, NULL::timestamptz AS at, r.body_hash AS code,
       r.advice_severity AS severity, NULL::smallint AS grade, NULL::float8 AS kg,
       r.client_report_id, r.id AS report_id
FROM unnest(CAST(:key_patients AS uuid[]), CAST(:keys AS uuid[])) AS k(patient_id, key)
JOIN reports r ON r.patient_id = k.patient_id AND r.client_report_id = k.key
UNION ALL
{_GRADE_ROWS}UNION ALL
SELECT 2, c.patient_id, w.recorded_at, NULL, NULL, NULL, w.weight_kg, NULL, NULL
FROM unnest(CAST(:weigheds AS uuid[]), CAST(:courses AS timestamptz[]),
            CAST(:pre_doses AS timestamptz[]), CAST(:course_ends AS timestamptz[]))
     AS c(patient_id, course, pre_dose, course_end)
CROSS JOIN LATERAL (
    (SELECT r.recorded_at, r.weight_kg FROM reports r
     WHERE r.patient_id = c.patient_id AND r.weight_kg IS NOT NULL
       AND r.recorded_at >= c.pre_dose AND r.recorded_at < c.course
     ORDER BY r.recorded_at DESC LIMIT 1)
    UNION ALL
    (SELECT r.recorded_at, r.weight_kg FROM reports r
     WHERE r.patient_id = c.patient_id AND r.weight_kg IS NOT NULL
       AND r.recorded_at >= c.course AND r.recorded_at < c.course_end
     ORDER BY r.recorded_at LIMIT 1)) w
"""  # noqa: S608 - a constant of this module, not data
    )
    .bindparams(*(bindparam(name, type_=type_) for name, type_ in _ARRAYS.items()))
    .columns(kind=Integer(), **_LAYOUT)
)


# --- what a request asks the group writer to store ----------------------------------------------


# A job is made by its request before it queues: its items are validated and hashed there, beside
# the group being written, not by the writer, which writes one group at a time.
@dataclass(frozen=True, slots=True)
class Single:
    """One report (POST /reports)."""

    patient_id: uuid.UUID
    principal: Principal
    body: ReportCreate
    parsed: list[tuple[int, ReportCreate, str]] = field(init=False)  # (index, body, digest)

    size: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", [(0, self.body, body_hash(self.body))])


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to a batch of reports of one patient (POST /reports/batch): the valid items with their
    digest, and the results of the invalid ones by position."""

    patient_id: uuid.UUID
    principal: Principal
    items: list[dict[str, object]]
    parsed: list[tuple[int, ReportCreate, str]] = field(init=False)
    rejected: list[BatchResult | None] = field(init=False)

    def __post_init__(self) -> None:
        parsed = []
        rejected: list[BatchResult | None] = [None] * len(self.items)
        for i, raw in enumerate(self.items):
            try:
                body = _report_adapter.validate_python(raw)
            except ValidationError as exc:
                # a batch item's errors are relative to the item
                rejected[i] = _rejected(_key_of(raw), validation_errors(exc.errors()))
            else:
                parsed.append((i, body, body_hash(body)))
        object.__setattr__(self, "parsed", parsed)
        object.__setattr__(self, "rejected", rejected)

    @property
    def size(self) -> int:
        return len(self.items)


Job = Single | Batch


class Deferred:
    """A job whose patient another transaction held: nothing of it was written."""


DEFERRED = Deferred()


@dataclass(slots=True)
class Outcome:
    """A report stored by this transaction."""

    report_id: uuid.UUID
    body: ReportCreate
    received_at: datetime
    advice_severity: str | None
    alerts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Created:
    """A report this transaction stored, answered once it committed: its response is built
    then, outside SQLite's write lock (``response()``)."""

    patient_id: uuid.UUID
    catalog: EvaluationCatalog
    outcome: Outcome
    new: bool

    def response(self) -> tuple[ReportCreated, bool]:
        return _created(self.patient_id, self.catalog, self.outcome), self.new


# Per job: the report stored (Created) or replayed and whether it is new, the batch's results,
# the problem it met, or DEFERRED.
Answer = Created | tuple[ReportCreated, bool] | list[BatchResult] | AppError | Deferred


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
    stored: Mapping[str, Any] | None = None  # its row, if stored before this transaction


@dataclass(slots=True)
class _Fresh:
    report_id: uuid.UUID
    body: ReportCreate
    digest: str
    order: int  # arrival: breaks ties of recorded_at


@dataclass(slots=True)
class _PatientPart:
    """One patient's share of a group."""

    row: Mapping[str, Any]
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
    parsed = [job.parsed for job in jobs]
    # A copy: a group that fails is written again, report by report.
    batch_results = {j: list(job.rejected) for j, job in enumerate(jobs) if isinstance(job, Batch)}

    ids = sorted({job.patient_id for job in jobs})
    lock = _lock_free if skip_locked else _lock
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    held: dict[uuid.UUID, list[tuple[str, date, date | None]]] = {}
    revision = None
    for found in await conn.execute(lock, {"patient_ids": ids}):
        pid, team, baseline, created, drug, started, ended, revision = found
        patient = rows.setdefault(
            pid,
            {
                "id": pid,
                "care_team": team,
                "baseline_weight_kg": baseline,
                "created_at": created,
                "first_therapy": None,
            },
        )
        if drug is not None:
            held.setdefault(pid, []).append((drug, started, ended))
            if patient["first_therapy"] is None or started < patient["first_therapy"]:
                patient["first_therapy"] = started

    def missing() -> Answer:
        return DEFERRED if skip_locked else NotFound("No such patient")

    if not rows:
        return [missing() for _ in jobs], []
    catalog = await evaluation_catalog(session, revision)
    therapy_lists = {
        pid: [
            engine.Therapy(
                drug_code=drug,
                drug_class=catalog.drug_classes.get(drug, ""),
                started_on=started,
                ended_on=ended,
            )
            for drug, started, ended in held.get(pid, ())
        ]
        for pid in rows
    }

    # Each job's own problems, found with its patient's row; what is left may be stored.
    problems: dict[int, Invalid] = {}
    valid_items: dict[int, list[tuple[int, ReportCreate, str]]] = {}
    candidates: dict[uuid.UUID, list[ReportCreate]] = {}
    for j, job in enumerate(jobs):
        row = rows.get(job.patient_id)
        if row is None:
            answers[j] = missing()
            continue
        if not can_see_patient(job.principal, row["id"], row["care_team"]):
            answers[j] = NotFound("No such patient")
            continue
        storable = candidates.setdefault(job.patient_id, [])
        if isinstance(job, Single):
            try:
                _check_codes(job.body, catalog)
                _check_date(job.body, row)
                storable.append(job.body)
            except Invalid as exc:
                problems[j] = exc
            continue
        valid = valid_items[j] = []
        for i, body, digest in parsed[j]:
            try:
                _check_codes(body, catalog, loc=())
                _check_date(body, row, loc=())
            except Invalid as exc:
                batch_results[j][i] = _rejected(_key_of(job.items[i]), exc.errors or [])
                continue
            valid.append((i, body, digest))
            storable.append(body)

    # The keys of every job whose patient it may write: a retry among them is answered, not stored.
    keys = sorted(
        {
            (job.patient_id, body.client_report_id)
            for job, items in zip(jobs, parsed, strict=True)
            if job.patient_id in candidates
            for _, body, _ in items
        }
    )
    known, histories = await _read_context(conn, catalog, keys, candidates, therapy_lists)

    parts: dict[uuid.UUID, _PatientPart] = {}
    order = 0
    for j, job in enumerate(jobs):
        if answers[j] is not None:
            continue
        part = parts.setdefault(
            job.patient_id, _PatientPart(rows[job.patient_id], known[job.patient_id])
        )
        if isinstance(job, Single):
            [(_, body, digest)] = parsed[j]
            if (seen := part.known.get(body.client_report_id)) is not None:
                answers[j] = seen if seen.digest == digest else Conflict(CONFLICT)
                continue
            if j in problems:
                answers[j] = problems[j]
                continue
            fresh = _Fresh(new_id(), body, digest, order := order + 1)
            part.known[body.client_report_id] = _Known(digest, fresh.report_id)
            part.fresh.append(fresh)
            answers[j] = fresh
            continue
        results = batch_results[j]
        # Trend rules must see history as it happened, whatever order the phone sent it in.
        for i, body, digest in sorted(
            valid_items[j], key=lambda item: (item[1].recorded_at, item[0])
        ):
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
            fresh = _Fresh(new_id(), body, digest, order := order + 1)
            part.known[key] = _Known(digest, fresh.report_id)
            part.fresh.append(fresh)
            results[i] = BatchResult(
                client_report_id=str(key), status="created", report_id=fresh.report_id
            )
        answers[j] = [r for r in results if r is not None]

    now = utcnow()
    writes = Writes()
    outcomes, events = await _store_new(
        conn, catalog, list(parts.values()), therapy_lists, histories, now, writes
    )
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
            answers[j] = Created(job.patient_id, catalog, outcome, new=True)
        elif isinstance(answer, _Known):
            if answer.stored is not None:
                answers[j] = (await _replay(session, catalog, answer.stored), False)
            else:  # the same report twice in this group: the second is the first's replay
                answers[j] = Created(job.patient_id, catalog, by_id[answer.report_id], new=False)
    writes.insert(AuditEvent, audit)
    await writes.flush(conn)
    # Last, on their own: the events' ordering lock is held only from here to the commit.
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


def _check_date(
    body: ReportCreate, patient: Mapping[str, Any], loc: tuple[str, ...] = ("body",)
) -> None:
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
    session: AsyncSession, catalog: EvaluationCatalog, found: Mapping[str, Any]
) -> ReportCreated:
    report = await read_report(session, found["report_id"])
    alerts = await alerts_of_report(session, found["report_id"])
    return ReportCreated(
        **report.__dict__,
        alerts=[AlertRead.model_validate(a) for a in alerts],
        advice=_advice(catalog, found["advice_severity"]),
    )


async def _read_context(
    conn: AsyncConnection,
    catalog: EvaluationCatalog,
    keys: list[tuple[uuid.UUID, uuid.UUID]],
    candidates: dict[uuid.UUID, list[ReportCreate]],
    therapy_lists: dict[uuid.UUID, list[engine.Therapy]],
) -> tuple[dict[uuid.UUID, dict[uuid.UUID, _Known]], dict[uuid.UUID, History]]:
    """What the group's patients already have, in one round trip: the reports stored under the
    group's keys, and for the reports that may be stored, the grades their trend rules look
    back to and the weights their course baselines rest on.

    Read for every report that passed its checks, before the stored keys tell which are
    retries: a retry only widens what is read.
    """
    known: dict[uuid.UUID, dict[uuid.UUID, _Known]] = {pid: {} for pid in candidates}
    histories = {pid: History() for pid in candidates}
    if not keys:
        return known, histories
    # Each patient's reports fall in [first, last]; what its trend rules need starts at since.
    bodies = {pid: found for pid, found in candidates.items() if found}
    first = {pid: min(b.recorded_at for b in found) for pid, found in bodies.items()}
    last = {pid: max(b.recorded_at for b in found) for pid, found in bodies.items()}
    window = catalog.history_window
    since = {pid: at - window for pid, at in first.items()}
    codes = sorted({s.code for found in bodies.values() for b in found for s in b.symptoms})
    graded = []
    if window and codes:
        graded = [(pid, since[pid], first[pid], last[pid]) for pid in bodies]
    courses = [
        (pid, start, start - engine.PRE_DOSE, last[pid])
        for pid, found in bodies.items()
        for start in sorted(
            course_starts(
                therapy_lists[pid],
                (b.recorded_at for b in found if b.vitals and b.vitals.weight_kg),
                catalog.baseline_drugs,
            )
        )
    ]
    statement: Executable
    values: dict[str, Any]
    if conn.dialect.name == "postgresql":
        arrays = _arrays(("key_patient", "key"), keys)
        arrays |= _arrays(_GRADED, graded) | _arrays(_WEIGHED, courses)
        statement, values = _pg_context, {"codes": codes, **arrays}
    else:
        dialect = conn.dialect
        statement = _sqlite_context
        values = {
            "keys": _json_rows(dialect, _KEYS, keys),
            "graded": _json_rows(dialect, _SPAN, graded),
            "courses": _json_rows(dialect, _SPAN, courses),
            "codes": json.dumps(codes),
        }
    # A set: a weight can be both one course's pre-dose weight and another's first.
    weights: set[tuple[uuid.UUID, datetime, float]] = set()
    for kind, pid, at, code, severity, grade, kg, key, report_id in await conn.execute(
        statement, values
    ):
        if kind == STORED:
            stored = {"report_id": report_id, "advice_severity": severity}
            known[pid][key] = _Known(code, report_id, stored)
        elif kind == GRADE:
            histories[pid].add_grade(code, grade, at)
        else:
            weights.add((pid, at, kg))
    for pid, at, kg in weights:
        histories[pid].add_weight(kg, at)
    return known, histories


async def _store_new(
    conn: AsyncConnection,
    catalog: EvaluationCatalog,
    parts: list[_PatientPart],
    therapy_lists: dict[uuid.UUID, list[engine.Therapy]],
    histories: dict[uuid.UUID, History],
    now: datetime,
    writes: Writes,
) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """Evaluate the new reports of every patient and raise their alerts, their rows added to
    ``writes``; the reports to be stored and the alert events to write.

    Each report is evaluated against its patient's context plus the patient's reports before
    it: one read of open alerts, and one statement of writes, for 1 report or 100, of one
    patient or many.
    """
    parts = [part for part in parts if part.fresh]
    if not parts:
        return [], []
    for part in parts:
        part.fresh.sort(key=lambda f: (f.body.recorded_at, f.order))
    window = catalog.history_window

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
    writes.insert(Report, report_rows)
    writes.insert(ReportSymptom, symptom_rows)
    touched, events = await raise_alerts(conn, raised, now, writes)
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
