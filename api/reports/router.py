from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.audit.service import record_many
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
from api.reports.service import Outcome
from api.security import CurrentPrincipal, Principal, ScopedPatient
from api.types import Timestamp

router = APIRouter(prefix="/v1/patients", tags=["reports"], responses=PROBLEM_RESPONSES)


@router.post(
    "/{patient_id}/reports",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ReportCreated, "description": "Replay of a stored report"}},
)
def create_report(
    patient_id: uuid.UUID,
    body: ReportCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    response: Response,
) -> ReportCreated:
    created, outcome = service.submit(session, patient_id, principal, body)
    if outcome is None:
        response.status_code = status.HTTP_200_OK
    else:
        _audit(session, principal, patient_id, [outcome])
    # Committed on this thread: one hop to the thread pool per report instead of two.
    session.commit()
    return created


@router.post("/{patient_id}/reports/batch")
def create_reports_batch(
    patient_id: uuid.UUID, body: BatchCreate, principal: CurrentPrincipal, session: SessionDep
) -> BatchResponse:
    results, outcomes = service.submit_batch(session, patient_id, principal, body.reports)
    _audit(session, principal, patient_id, outcomes)
    session.commit()
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


def _audit(
    session: SessionDep, principal: Principal, patient_id: uuid.UUID, stored: list[Outcome]
) -> None:
    record_many(
        session,
        principal,
        "report.created",
        "report",
        [(o.report_id, {"patient_id": str(patient_id), "alerts": len(o.alerts)}) for o in stored],
    )
