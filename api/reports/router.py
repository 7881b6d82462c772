from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from api.db import ReadSession
from api.errors import PROBLEM_RESPONSES
from api.pagination import Cursor, Limit, Page, decode_cursor, page_of, parse_time
from api.reports import service
from api.reports.group import GroupWriter
from api.reports.schemas import (
    BatchCreate,
    BatchResponse,
    ReportCreate,
    ReportCreated,
    ReportRead,
)
from api.responses import serialised
from api.security import CurrentPrincipal, ReadPatient
from api.types import Timestamp

router = APIRouter(prefix="/v1/patients", tags=["reports"], responses=PROBLEM_RESPONSES)


async def _writer(request: Request) -> GroupWriter:  # async: a sync one runs in a thread
    writer: GroupWriter = request.app.state.report_writer
    return writer


# Reports are written by the process's group writer, in a transaction shared with the reports
# that arrive beside them, committed before the answer is sent.
ReportWriter = Annotated[GroupWriter, Depends(_writer)]


@router.post(
    "/{patient_id}/reports",
    status_code=status.HTTP_201_CREATED,
    response_model=ReportCreated,
    responses={200: {"model": ReportCreated, "description": "Replay of a stored report"}},
)
async def create_report(
    patient_id: uuid.UUID,
    body: ReportCreate,
    principal: CurrentPrincipal,
    writer: ReportWriter,
) -> Response:
    """Send a symptom report.

    The mobile app's call. Stores the report, evaluates the rules and answers with the alerts it
    raised and the advice to show the patient at once. `client_report_id` is the idempotency
    key: the same body again answers 200 with the stored report and stores nothing; another body
    with the same key is a 409.
    """
    created, new = await writer.submit(patient_id, principal, body)
    return serialised(created, status.HTTP_201_CREATED if new else status.HTTP_200_OK)


@router.post("/{patient_id}/reports/batch", response_model=BatchResponse)
async def create_reports_batch(
    patient_id: uuid.UUID, body: BatchCreate, principal: CurrentPrincipal, writer: ReportWriter
) -> Response:
    """Send up to 100 reports at once.

    For an app syncing a backlog: each item is stored, a duplicate or rejected on its own, results
    in input order; items are evaluated in `recorded_at` order so the trend rules see them as
    they happened.
    """
    results = await writer.submit_batch(patient_id, principal, body.reports)
    return serialised(BatchResponse(results=results))


@router.get("/{patient_id}/reports")
async def list_reports(
    patient: ReadPatient,
    session: ReadSession,
    since: Annotated[Timestamp | None, Query()] = None,
    until: Annotated[Timestamp | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ReportRead]:
    """List a patient's reports.

    Newest first, cursor-paginated, optionally limited to `[since, until)`.
    """
    after = decode_cursor(cursor, parse_time, uuid.UUID)
    items = await service.list_reports(
        session, patient, since=since, until=until, limit=limit, after=after
    )
    return page_of(items, limit, lambda r: [r.recorded_at.isoformat(), str(r.id)])
