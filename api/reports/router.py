from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.alerts.schemas import AlertRead
from api.audit.service import record
from api.db import SessionDep
from api.errors import PROBLEM_RESPONSES
from api.pagination import Cursor, Limit, Page, decode_cursor, page_of, parse_time
from api.reports import service
from api.reports.schemas import (
    BatchCreate,
    BatchResponse,
    ReportCreate,
    ReportCreated,
    ReportRead,
)
from api.security import CurrentPrincipal, LockedPatient, Principal, ScopedPatient
from api.types import Timestamp

router = APIRouter(prefix="/v1/patients", tags=["reports"], responses=PROBLEM_RESPONSES)


@router.post(
    "/{patient_id}/reports",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ReportCreated, "description": "Replay of a stored report"}},
)
def create_report(
    patient: LockedPatient,
    body: ReportCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    response: Response,
) -> ReportCreated:
    stored = service.submit(session, patient, body)
    if stored.created:
        _audit(session, principal, stored)
    else:
        response.status_code = status.HTTP_200_OK
    return _created(stored)


@router.post("/{patient_id}/reports/batch")
def create_reports_batch(
    patient: LockedPatient, body: BatchCreate, principal: CurrentPrincipal, session: SessionDep
) -> BatchResponse:
    results, stored = service.submit_batch(session, patient, body.reports)
    for outcome in stored:
        if outcome.created:
            _audit(session, principal, outcome)
    return BatchResponse(results=results)


@router.get("/{patient_id}/reports")
def list_reports(
    patient: ScopedPatient,
    _: CurrentPrincipal,
    session: SessionDep,
    since: Annotated[Timestamp | None, Query()] = None,
    until: Annotated[Timestamp | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ReportRead]:
    after = decode_cursor(cursor, parse_time, uuid.UUID)
    items = service.list_reports(
        session, patient, since=since, until=until, limit=limit, after=after
    )
    return page_of(items, limit, lambda r: [r.recorded_at.isoformat(), str(r.id)])


def _audit(session: SessionDep, principal: Principal, stored: service.Stored) -> None:
    record(
        session,
        principal,
        "report.created",
        "report",
        stored.report.id,
        {"patient_id": str(stored.report.patient_id), "alerts": len(stored.alerts)},
    )


def _created(stored: service.Stored) -> ReportCreated:
    return ReportCreated(
        **stored.report.model_dump(),
        alerts=[AlertRead.model_validate(a) for a in stored.alerts],
        advice=stored.advice,
    )
