from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any, TypeVar

from pydantic_core import from_json
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    bindparam,
    false,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from api.alerts.events import event_row, write_events
from api.alerts.models import OPEN_STATUSES, Alert, AlertEvent
from api.alerts.pages import PageCache
from api.alerts.schemas import AlertEventRead, AlertRead, SummaryCounts
from api.audit.service import record
from api.db import Database, Writes, first_column, new_id, one_of, utcnow
from api.errors import Conflict, NotFound
from api.pagination import json_page
from api.rules.definitions import SEVERITY_RANK
from api.rules.engine import Finding
from api.security import Principal
from api.sqljson import json_document

SelectT = TypeVar("SelectT", bound="Select[*tuple[Any, ...]]")

TRIAGE_RANK = {"emergency": 0, "urgent": 1, "routine": 2}

alerts = Alert.__table__
STATUSES = ("open", "acknowledged", "resolved")

# What a re-trigger may change on an open episode.
_MUTABLE = (
    "occurrences",
    "last_triggered_at",
    "severity",
    "triage_rank",
    "rule_version",
    "title",
    "detail",
    "evidence",
    "follow_up_due_at",
)
_open_episodes = (
    select(alerts)
    .where(
        one_of(alerts.c.patient_id, "patient_ids"),
        # Written out, not bound: PostgreSQL then matches it to the partial index of open
        # episodes in any plan, the prepared statement's generic one included.
        alerts.c.status.in_([literal_column(f"'{status}'") for status in OPEN_STATUSES]),
        one_of(alerts.c.rule_id, "rule_ids"),
    )
    # A nurse resolving the alert right now must not have it absorb this report: the lock
    # makes the resolve either land first (we then open a new episode) or wait.
    .with_for_update()
)


async def raise_alerts(
    conn: AsyncConnection,
    raised: Sequence[tuple[uuid.UUID, str, uuid.UUID, Sequence[Finding]]],
    now: datetime,
    writes: Writes,
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Open an alert per finding, or fold it into the open episode of the same rule.

    ``raised`` holds (patient id, care team, report id, findings), each patient's reports in the
    order they happened; the answer holds, per report, the alerts it raised or re-triggered, as
    rows, and the alert events to write (the caller writes them with ``write_events``, as its
    transaction's last writes). The alerts' rows join ``writes``, for the caller to flush with
    the reports'. The caller holds the patients' locks, so the open episodes read here cannot
    change under us; the partial unique index on open episodes backs that up. One statement,
    however many patients.
    """
    rule_ids = {f.rule_id for *_, findings in raised for f in findings}
    if not rule_ids:
        return [[] for _ in raised], []
    params = {
        "patient_ids": sorted({patient_id for patient_id, *_ in raised}),
        "rule_ids": sorted(rule_ids),
    }
    rows = (await conn.execute(_open_episodes, params)).mappings()
    episodes = {(row["patient_id"], row["rule_id"]): dict(row) for row in rows}
    new: dict[uuid.UUID, dict[str, Any]] = {}
    changed: dict[uuid.UUID, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    touched: list[list[dict[str, Any]]] = []
    for patient_id, care_team, report_id, findings in raised:
        mine: list[dict[str, Any]] = []
        for finding in findings:
            due = now + timedelta(minutes=finding.follow_up_minutes)
            alert = episodes.get((patient_id, finding.rule_id))
            if alert is None:
                alert = _new_alert(patient_id, care_team, report_id, finding, now, due)
                episodes[patient_id, finding.rule_id] = new[alert["id"]] = alert
                action = "raised"
            else:
                alert["occurrences"] += 1
                alert["last_triggered_at"] = now
                action = "retriggered"
                if SEVERITY_RANK[finding.severity] > SEVERITY_RANK[alert["severity"]]:
                    events.append(_event(alert, action, report_id, finding.severity, now))
                    action = "severity_raised"
                    # Severity only rises within an episode; the alert then shows what raised it.
                    alert["severity"] = finding.severity
                    alert["triage_rank"] = TRIAGE_RANK[finding.severity]
                    alert["rule_version"] = finding.rule_version
                    alert["title"] = finding.title
                    alert["detail"] = finding.detail
                    alert["evidence"] = finding.evidence
                    alert["follow_up_due_at"] = min(alert["follow_up_due_at"], due)
                if alert["id"] not in new:
                    changed[alert["id"]] = alert
            events.append(_event(alert, action, report_id, finding.severity, now))
            # As this report left it: a later report of the group may change it again.
            mine.append(dict(alert))
        touched.append(mine)
    writes.insert(Alert, list(new.values()))
    writes.update(Alert, [{"id": a["id"], **{n: a[n] for n in _MUTABLE}} for a in changed.values()])
    return touched, events


def _event(
    alert: dict[str, Any], action: str, report_id: uuid.UUID, severity: str, now: datetime
) -> dict[str, Any]:
    return event_row(
        alert["id"],
        action,
        now,
        report_id=report_id,
        severity=severity,
        from_status=None if action == "raised" else alert["status"],
        to_status=alert["status"],
    )


def _new_alert(
    patient_id: uuid.UUID,
    care_team: str,
    report_id: uuid.UUID,
    finding: Finding,
    now: datetime,
    due: datetime,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "patient_id": patient_id,
        "care_team": care_team,
        "report_id": report_id,
        "rule_id": finding.rule_id,
        "rule_version": finding.rule_version,
        "drug_code": finding.drug_code,
        "severity": finding.severity,
        "triage_rank": TRIAGE_RANK[finding.severity],
        "status": "open",
        "title": finding.title,
        "detail": finding.detail,
        "evidence": finding.evidence,
        "created_at": now,
        "follow_up_due_at": due,
        "last_triggered_at": now,
        "occurrences": 1,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "resolution_note": None,
        "outcome": None,
        "escalated_at": None,
        "escalation_rank": 1,
        "overdue_at": None,
    }


async def alerts_of_report(session: AsyncSession, report_id: uuid.UUID) -> list[Alert]:
    """The alerts a stored report raised or re-triggered (for an idempotent replay)."""
    return list(
        await session.scalars(
            select(Alert)
            # A subquery, not a join: one report can write two events of one alert (a
            # re-trigger that also raised the severity), and the alert must come once.
            .where(
                Alert.id.in_(select(AlertEvent.alert_id).where(AlertEvent.report_id == report_id))
            )
            .order_by(Alert.triage_rank, Alert.rule_id)
        )
    )


# --- the worklist and the alert workflow --------------------------------------------------------

# Severity, escalated before not, due time: the columns of ix_alerts_team_triage.
QUEUE_ORDER = (Alert.triage_rank, Alert.escalation_rank, Alert.follow_up_due_at, Alert.id)


@cache
def _queue_document() -> ColumnElement[str]:
    # The worklist's page is written by the database: a value converted and a model built per
    # cell, then serialised again, cost several times the query. Built at first use, when every
    # foreign key column has taken its referenced column's type.
    return json_document(alerts.c[name] for name in AlertRead.model_fields)


@dataclass(frozen=True, slots=True)
class QueueFilter:
    status: str | None = None
    severity: str | None = None
    patient_id: uuid.UUID | None = None
    drug_code: str | None = None
    team: str | None = None


def queue_key(document: str) -> list[Any]:
    """An alert's place in the queue, as the cursor carries it, from its JSON document."""
    alert = from_json(document)
    return [
        TRIAGE_RANK[alert["severity"]],
        0 if alert["escalated_at"] else 1,
        datetime.fromisoformat(alert["follow_up_due_at"]).isoformat(),
        alert["id"],
    ]


def _scoped(query: SelectT, principal: Principal, team: str | None = None) -> SelectT:
    teams = principal.team_filter()
    if teams is not None:
        query = query.where(Alert.care_team.in_(teams))
    return query if team is None else query.where(Alert.care_team == team)


_FILTERS = ("status", "severity", "patient_id", "drug_code")


@lru_cache(maxsize=1024)
def _queue_query(
    teams: int | None, team: bool, filters: tuple[str, ...], after: bool
) -> Select[Any]:
    """The worklist's statement for one shape of request, its values bound: built once, so
    that its cache key and SQL are too. A caller's teams are bound one parameter each
    (``team_0``...): the statement goes to the driver as it is, and a list bound as one array
    (``= ANY``) had PostgreSQL choose a parallel sequential scan."""
    query = (
        select(_queue_document()).order_by(*QUEUE_ORDER).limit(bindparam("limit", type_=Integer))
    )
    if teams is not None:
        names = [bindparam(f"team_{i}", type_=alerts.c.care_team.type) for i in range(teams)]
        query = query.where(alerts.c.care_team.in_(names) if names else false())
    if team:
        query = query.where(alerts.c.care_team == bindparam("team"))
    for name in filters:
        query = query.where(alerts.c[name] == bindparam(name))
    if after:
        bound = [bindparam(f"after_{column.key}", type_=column.type) for column in QUEUE_ORDER]
        query = query.where(tuple_(*QUEUE_ORDER) > tuple_(*bound))
    return query


async def queue(
    db: Database,
    principal: Principal,
    where: QueueFilter,
    limit: int,
    after: Sequence[Any] | None,
    pages: PageCache,
) -> bytes:
    """The page of up to ``limit`` alerts of the caller's teams in triage order after ``after``,
    as the response body; a first page from ``pages`` while no alert has changed."""
    teams = principal.team_filter()
    values: dict[str, Any] = {"limit": limit + 1}
    if teams is not None:
        values.update((f"team_{i}", name) for i, name in enumerate(sorted(teams)))
    if where.team is not None:
        values["team"] = where.team
    filters = tuple(name for name in _FILTERS if getattr(where, name) is not None)
    values.update((name, getattr(where, name)) for name in filters)
    if after:
        values.update((f"after_{c.key}", v) for c, v in zip(QUEUE_ORDER, after, strict=True))
    shape = (None if teams is None else len(teams), where.team is not None, filters, bool(after))

    async def read() -> bytes:
        async with db.read_connection() as conn:
            documents = await first_column(conn, _queue_query(*shape), values)
        return json_page(documents, limit, queue_key)

    if after:
        return await read()
    key = (shape, *values.items())
    version = await pages.version()
    body = pages.get(key, version)
    if body is None:
        body = await read()
        pages.put(key, version, body)
    return body


async def summary(session: AsyncSession, principal: Principal, team: str | None) -> SummaryCounts:
    rows = (
        await session.execute(
            _scoped(
                select(Alert.severity, Alert.status, func.count()).group_by(
                    Alert.severity, Alert.status
                ),
                principal,
                team,
            )
        )
    ).all()
    overdue = await session.scalar(
        _scoped(
            select(func.count())
            .select_from(Alert)
            .where(Alert.status.in_(OPEN_STATUSES), Alert.follow_up_due_at < utcnow()),
            principal,
            team,
        )
    )
    grid = {s: dict.fromkeys(STATUSES, 0) for s in TRIAGE_RANK}
    for severity, status, count in rows:
        grid[severity][status] = count
    return SummaryCounts(
        total=sum(sum(v.values()) for v in grid.values()),
        overdue=overdue or 0,
        by_severity={s: sum(v.values()) for s, v in grid.items()},
        by_status={st: sum(grid[s][st] for s in grid) for st in STATUSES},
        by_severity_and_status=grid,
    )


async def load(session: AsyncSession, principal: Principal, alert_id: uuid.UUID) -> Alert:
    """The alert, within the caller's teams; 404 outside them."""
    alert = await session.scalar(_scoped(select(Alert).where(Alert.id == alert_id), principal))
    if alert is None:
        raise NotFound("No such alert")
    return alert


async def acknowledge(
    session: AsyncSession, principal: Principal, alert_id: uuid.UUID, note: str | None
) -> AlertRead:
    values = {"acknowledged_at": utcnow(), "acknowledged_by": principal.sub}
    return await _transition(session, principal, alert_id, ("open",), "acknowledged", note, values)


async def resolve(
    session: AsyncSession,
    principal: Principal,
    alert_id: uuid.UUID,
    note: str,
    outcome: str | None,
) -> AlertRead:
    values = {
        "resolved_at": utcnow(),
        "resolved_by": principal.sub,
        "resolution_note": note,
        "outcome": outcome,
    }
    return await _transition(session, principal, alert_id, OPEN_STATUSES, "resolved", note, values)


async def _transition(
    session: AsyncSession,
    principal: Principal,
    alert_id: uuid.UUID,
    allowed_from: tuple[str, ...],
    to_status: str,
    note: str | None,
    values: dict[str, object],
) -> AlertRead:
    alert = await load(session, principal, alert_id)
    from_status = alert.status
    # Compare-and-set on the status: of two nurses acting at once, exactly one wins; the other
    # gets 409 and sees the alert as it now is.
    result = await session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status.in_(allowed_from))
        .values(status=to_status, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"An alert that is {from_status} cannot become {to_status}")
    await record(session, principal, f"alert.{to_status}", "alert", alert_id, {"from": from_status})
    await session.flush()
    # Last write of the transaction: the event ordering lock is held only until the commit.
    event = event_row(
        alert_id,
        to_status,
        utcnow(),
        actor_sub=principal.sub,
        actor_role=principal.role,
        from_status=from_status,
        to_status=to_status,
        note=note,
    )
    await write_events(await session.connection(), [event])
    await session.refresh(alert)
    return AlertRead.model_validate(alert)


async def events_of(
    session: AsyncSession,
    principal: Principal,
    alert_id: uuid.UUID,
    limit: int,
    after: int | None,
) -> list[AlertEventRead]:
    """Up to ``limit + 1`` events of an alert in the caller's teams, in the order they happened."""
    await load(session, principal, alert_id)
    query = (
        select(AlertEvent)
        .where(AlertEvent.alert_id == alert_id)
        .order_by(AlertEvent.id)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(AlertEvent.id > after)
    return [AlertEventRead.model_validate(e) for e in await session.scalars(query)]
