from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.orm import Session

from api.audit.service import record_many
from api.db import in_transaction, read_only
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
from api.security import CurrentPrincipal, Principal, scoped_patient
from api.types import Timestamp

router = APIRouter(prefix="/v1/patients", tags=["reports"], responses=PROBLEM_RESPONSES)


@router.post(
    "/{patient_id}/reports",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ReportCreated, "description": "Replay of a stored report"}},
)
async def create_report(
    patient_id: uuid.UUID,
    body: ReportCreate,
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
) -> ReportCreated:
    """Send a symptom report.

    The mobile app's call. Stores the report, evaluates the rules and answers with the alerts it
    raised and the advice to show the patient at once. `client_report_id` is the idempotency
    key: the same body again answers 200 with the stored report and stores nothing; another body
    with the same key is a 409.
    """
    created, replay = await in_transaction(request, _store_report, patient_id, principal, body)
    if replay:
        response.status_code = status.HTTP_200_OK
    return created


def _store_report(
    session: Session, patient_id: uuid.UUID, principal: Principal, body: ReportCreate
) -> tuple[ReportCreated, bool]:
    created, outcome = service.submit(session, patient_id, principal, body)
    if outcome is not None:
        _audit(session, principal, patient_id, [outcome])
    return created, outcome is None


@router.post("/{patient_id}/reports/batch")
async def create_reports_batch(
    patient_id: uuid.UUID, body: BatchCreate, principal: CurrentPrincipal, request: Request
) -> BatchResponse:
    """Send up to 100 reports at once.

    For an app syncing a backlog: each item is stored, a duplicate or rejected on its own, results
    in input order; items are evaluated in `recorded_at` order so the trend rules see them as
    they happened.
    """
    return await in_transaction(request, _store_batch, patient_id, principal, body)


def _store_batch(
    session: Session, patient_id: uuid.UUID, principal: Principal, body: BatchCreate
) -> BatchResponse:
    results, outcomes = service.submit_batch(session, patient_id, principal, body.reports)
    _audit(session, principal, patient_id, outcomes)
    return BatchResponse(results=results)


@router.get("/{patient_id}/reports")
async def list_reports(
    patient_id: uuid.UUID,
    principal: CurrentPrincipal,
    request: Request,
    since: Annotated[Timestamp | None, Query()] = None,
    until: Annotated[Timestamp | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ReportRead]:
    """List a patient's reports.

    Newest first, cursor-paginated, optionally limited to `[since, until)`.
    """
    after = decode_cursor(cursor, parse_time, uuid.UUID)

    def page(session: Session) -> list[ReportRead]:
        patient = scoped_patient(session, patient_id, principal)
        return service.list_reports(
            session, patient, since=since, until=until, limit=limit, after=after
        )

    items = await read_only(request, page)
    return page_of(items, limit, lambda r: [r.recorded_at.isoformat(), str(r.id)])


def _audit(
    session: Session, principal: Principal, patient_id: uuid.UUID, stored: list[Outcome]
) -> None:
    record_many(
        session,
        principal,
        "report.created",
        "report",
        [(o.report_id, {"patient_id": str(patient_id), "alerts": len(o.alerts)}) for o in stored],
    )
