from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse

from api.alerts.events import event_row, write_events
from api.alerts.models import OPEN_STATUSES, Alert, AlertEvent
from api.alerts.schemas import (
    AcknowledgeBody,
    AlertEventRead,
    AlertRead,
    ResolveBody,
    SummaryCounts,
)
from api.alerts.service import TRIAGE_RANK
from api.alerts.stream import EventHub, feed
from api.audit.service import record
from api.db import SessionDep, read_only, utcnow
from api.errors import PROBLEM_RESPONSES, Conflict, Invalid, NotFound
from api.pagination import Cursor, Limit, Page, decode_cursor, page_of, parse_int_id, parse_time
from api.reports.models import Report
from api.reports.schemas import ReportRead
from api.reports.service import read_reports
from api.rules.definitions import CODE_PATTERN
from api.security import Principal, Staff
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


def _scoped(query, principal: Principal):  # type: ignore[no-untyped-def]
    teams = principal.team_filter()
    return query if teams is None else query.where(Alert.care_team.in_(teams))


def _load(session: Session, principal: Principal, alert_id: uuid.UUID) -> Alert:
    alert = session.scalar(_scoped(select(Alert).where(Alert.id == alert_id), principal))
    if alert is None:
        raise NotFound("No such alert")
    return alert


@router.get("")
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
) -> Page[AlertRead]:
    """List alerts (the worklist).

    Staff only: the alerts of the caller's teams in triage order (emergency first, escalated first
    within a severity, then by follow-up due time), filtered by status, severity, patient, drug
    or team; cursor-paginated.
    """
    # Rows, not ORM objects: a page is read-only and the identity map would double its cost.
    # Severity, escalated before not, due time: the columns of ix_alerts_team_triage.
    order = (Alert.triage_rank, Alert.escalation_rank, Alert.follow_up_due_at, Alert.id)
    query = _scoped(select(Alert.__table__), principal).order_by(*order)
    if status:
        query = query.where(Alert.status == status)
    if severity:
        query = query.where(Alert.severity == severity)
    if patient_id:
        query = query.where(Alert.patient_id == patient_id)
    if drug_code:
        query = query.where(Alert.drug_code == drug_code)
    if team:
        query = query.where(Alert.care_team == team)
    if after := decode_cursor(cursor, _triage_rank, _escalation_rank, parse_time, uuid.UUID):
        query = query.where(tuple_(*order) > tuple_(*after))
    query = query.limit(limit + 1)

    def page(session: Session) -> list[AlertRead]:
        rows = session.connection().execute(query).mappings()
        return [AlertRead.model_validate(dict(row)) for row in rows]

    return page_of(
        await read_only(request, page),
        limit,
        lambda a: [
            TRIAGE_RANK[a.severity],
            0 if a.escalated_at else 1,
            a.follow_up_due_at.isoformat(),
            str(a.id),
        ],
    )


@router.get("/summary")
def summary(
    principal: Staff,
    session: SessionDep,
    team: Annotated[str | None, Query(max_length=64, pattern=TEAM_PATTERN)] = None,
) -> SummaryCounts:
    """Count alerts by severity and status.

    Staff only: the caller's teams' alerts (or one of them, `team`) counted by severity and
    status, and how many are past their follow-up time.
    """

    def mine(query):  # type: ignore[no-untyped-def]
        query = _scoped(query, principal)
        return query if team is None else query.where(Alert.care_team == team)

    rows = session.execute(
        mine(
            select(Alert.severity, Alert.status, func.count()).group_by(
                Alert.severity, Alert.status
            )
        )
    ).all()
    overdue = session.scalar(
        mine(
            select(func.count())
            .select_from(Alert)
            .where(Alert.status.in_(OPEN_STATUSES), Alert.follow_up_due_at < utcnow())
        )
    )
    grid = {s: {st: 0 for st in ("open", "acknowledged", "resolved")} for s in TRIAGE_RANK}
    for severity, status, count in rows:
        grid[severity][status] = count
    return SummaryCounts(
        total=sum(sum(v.values()) for v in grid.values()),
        overdue=overdue or 0,
        by_severity={s: sum(v.values()) for s, v in grid.items()},
        by_status={
            st: sum(grid[s][st] for s in grid) for st in ("open", "acknowledged", "resolved")
        },
        by_severity_and_status=grid,
    )


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
def get_alert(alert_id: uuid.UUID, principal: Staff, session: SessionDep) -> AlertDetail:
    """Get an alert with its report.

    Staff only, within the caller's teams (404 outside them).
    """
    alert = _load(session, principal, alert_id)
    report = session.get_one(Report, alert.report_id)
    return AlertDetail(
        **AlertRead.model_validate(alert).model_dump(), report=read_reports(session, [report])[0]
    )


@router.post("/{alert_id}/acknowledge")
def acknowledge(
    alert_id: uuid.UUID, principal: Staff, session: SessionDep, body: AcknowledgeBody | None = None
) -> AlertRead:
    """Acknowledge an alert.

    Someone is on it: `open` becomes `acknowledged`, stopping escalation. 409 if the alert is no
    longer open.
    """
    note = body.note if body else None
    return _transition(
        session,
        principal,
        alert_id,
        ("open",),
        "acknowledged",
        note,
        {
            "acknowledged_at": utcnow(),
            "acknowledged_by": principal.sub,
        },
    )


@router.post("/{alert_id}/resolve")
def resolve(
    alert_id: uuid.UUID, body: ResolveBody, principal: Staff, session: SessionDep
) -> AlertRead:
    """Resolve an alert.

    Closes the episode with a required note and, optionally, the outcome (`confirmed` or
    `false_alarm`, the evidence for tuning rules). 409 if it is resolved already.
    """
    return _transition(
        session,
        principal,
        alert_id,
        OPEN_STATUSES,
        "resolved",
        body.note,
        {
            "resolved_at": utcnow(),
            "resolved_by": principal.sub,
            "resolution_note": body.note,
            "outcome": body.outcome,
        },
    )


def _transition(
    session: Session,
    principal: Principal,
    alert_id: uuid.UUID,
    allowed_from: tuple[str, ...],
    to_status: str,
    note: str | None,
    values: dict[str, object],
) -> AlertRead:
    alert = _load(session, principal, alert_id)
    from_status = alert.status
    # Compare-and-set on the status: of two nurses acting at once, exactly one wins; the other
    # gets 409 and sees the alert as it now is.
    result = session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status.in_(allowed_from))
        .values(status=to_status, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"An alert that is {from_status} cannot become {to_status}")
    record(session, principal, f"alert.{to_status}", "alert", alert_id, {"from": from_status})
    session.flush()
    # Last write of the transaction: the event ordering lock is held only until the commit.
    write_events(
        session.connection(),
        [
            event_row(
                alert_id,
                to_status,
                utcnow(),
                actor_sub=principal.sub,
                actor_role=principal.role,
                from_status=from_status,
                to_status=to_status,
                note=note,
            )
        ],
    )
    session.refresh(alert)
    return AlertRead.model_validate(alert)


@router.get("/{alert_id}/events")
def list_events(
    alert_id: uuid.UUID,
    principal: Staff,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AlertEventRead]:
    """List an alert's events.

    Every change of the alert (raised, retriggered, severity raised, acknowledged, resolved,
    escalated, overdue) in the order it happened.
    """
    _load(session, principal, alert_id)
    query = (
        select(AlertEvent)
        .where(AlertEvent.alert_id == alert_id)
        .order_by(AlertEvent.id)
        .limit(limit + 1)
    )
    if after := decode_cursor(cursor, parse_int_id):
        query = query.where(AlertEvent.id > after[0])
    items = [AlertEventRead.model_validate(e) for e in session.scalars(query)]
    return page_of(items, limit, lambda e: [e.id])
