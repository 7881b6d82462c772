from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from sse_starlette import EventSourceResponse

from api.alerts import service
from api.alerts.schemas import (
    AcknowledgeBody,
    AlertEventRead,
    AlertRead,
    ResolveBody,
    SummaryCounts,
)
from api.alerts.service import TRIAGE_RANK
from api.alerts.stream import EventHub, feed
from api.db import ReadSession, WriteSession, database
from api.errors import PROBLEM_RESPONSES, Invalid
from api.pagination import (
    Cursor,
    Limit,
    Page,
    decode_cursor,
    page_of,
    parse_int_id,
    parse_time,
)
from api.reports.schemas import ReportRead
from api.reports.service import read_report
from api.rules.definitions import CODE_PATTERN
from api.security import Staff
from api.types import TEAM_PATTERN

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], responses=PROBLEM_RESPONSES)

SeverityFilter = Literal["emergency", "urgent", "routine"]
StatusFilter = Literal["open", "acknowledged", "resolved"]


class AlertDetail(AlertRead):
    report: ReportRead


def _triage_rank(value: object) -> int:
    if type(value) is not int or value not in TRIAGE_RANK.values():
        raise ValueError("not a triage rank")
    return value


def _escalation_rank(value: object) -> int:
    if type(value) is not int or value not in (0, 1):
        raise ValueError("not an escalation rank")
    return value


# The page is written by the database; the response model keeps the OpenAPI schema.
@router.get("", response_model=Page[AlertRead])
async def list_alerts(
    principal: Staff,
    request: Request,
    status: StatusFilter | None = None,
    severity: SeverityFilter | None = None,
    patient_id: uuid.UUID | None = None,
    drug_code: Annotated[str | None, Query(max_length=64, pattern=CODE_PATTERN)] = None,
    team: Annotated[str | None, Query(max_length=64, pattern=TEAM_PATTERN)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """List alerts (the worklist).

    Staff only: the alerts of the caller's teams in triage order (emergency first, escalated first
    within a severity, then by follow-up due time), filtered by status, severity, patient, drug
    or team; cursor-paginated.
    """
    after = decode_cursor(cursor, _triage_rank, _escalation_rank, parse_time, uuid.UUID)
    where = service.QueueFilter(status, severity, patient_id, drug_code, team)
    pages = request.app.state.alert_pages
    body = await service.queue(database(request), principal, where, limit, after, pages)
    return Response(body, media_type="application/json")


@router.get("/summary")
async def summary(
    principal: Staff,
    session: ReadSession,
    team: Annotated[str | None, Query(max_length=64, pattern=TEAM_PATTERN)] = None,
) -> SummaryCounts:
    """Count alerts by severity and status.

    Staff only: the caller's teams' alerts (or one of them, `team`) counted by severity and
    status, and how many are past their follow-up time.
    """
    return await service.summary(session, principal, team)


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "alert events"}},
)
async def stream(
    principal: Staff,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> EventSourceResponse:
    """Live feed of alert events.

    Server-Sent Events for the caller's teams: `id` the event id, `event` its type (alert.raised,
    alert.escalated, ...), `data` the alert. A client reconnecting with `Last-Event-ID` gets
    every later event first; a comment line every 15 s keeps proxies from closing the stream.
    """
    after = None
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise Invalid([{"loc": ["header", "last-event-id"], "msg": "not an event id"}])
        after = int(last_event_id)
    hub: EventHub = request.app.state.event_hub
    settings = request.app.state.settings
    return EventSourceResponse(
        feed(hub, principal.team_filter(), after, settings.stream_max_s),
        ping=settings.stream_heartbeat_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/{alert_id}")
async def get_alert(alert_id: uuid.UUID, principal: Staff, session: ReadSession) -> AlertDetail:
    """Get an alert with its report.

    Staff only, within the caller's teams (404 outside them).
    """
    alert = await service.load(session, principal, alert_id)
    report = await read_report(session, alert.report_id)
    return AlertDetail(**AlertRead.model_validate(alert).model_dump(), report=report)


@router.post("/{alert_id}/acknowledge")
async def acknowledge(
    alert_id: uuid.UUID,
    principal: Staff,
    session: WriteSession,
    body: AcknowledgeBody | None = None,
) -> AlertRead:
    """Acknowledge an alert.

    Someone is on it: `open` becomes `acknowledged`, stopping escalation. 409 if the alert is no
    longer open.
    """
    return await service.acknowledge(session, principal, alert_id, body.note if body else None)


@router.post("/{alert_id}/resolve")
async def resolve(
    alert_id: uuid.UUID, body: ResolveBody, principal: Staff, session: WriteSession
) -> AlertRead:
    """Resolve an alert.

    Closes the episode with a required note and, optionally, the outcome (`confirmed` or
    `false_alarm`, the evidence for tuning rules). 409 if it is resolved already.
    """
    return await service.resolve(session, principal, alert_id, body.note, body.outcome)


@router.get("/{alert_id}/events")
async def list_events(
    alert_id: uuid.UUID,
    principal: Staff,
    session: ReadSession,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AlertEventRead]:
    """List an alert's events.

    Every change of the alert (raised, retriggered, severity raised, acknowledged, resolved,
    escalated, overdue) in the order it happened.
    """
    after = decode_cursor(cursor, parse_int_id)
    items = await service.events_of(
        session, principal, alert_id, limit, after[0] if after else None
    )
    return page_of(items, limit, lambda e: [e.id])
