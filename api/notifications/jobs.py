"""The job loop's database work: escalation, overdue marks, webhook fan-out, delivery leases.

Each function is one short transaction of plain SQLAlchemy Core, safe to run in any number of
processes at once:

- Escalation and overdue are conditional UPDATEs (``... AND escalated_at IS NULL``) that return
  the rows they changed; the events are written in the same transaction. On PostgreSQL a
  second process either skips the rows the first has locked (``SKIP LOCKED``) or, re-checking
  the condition after the first commits, finds nothing left: at most once, by construction.
- Fan-out reads each subscription's events after its ``last_event_id`` (sound because event ids
  commit in order, api/alerts/events.py), queues one delivery per matching event and moves the
  cursor, with the subscription row locked.
- Deliveries are leased (``leased_by``/``leased_until``) in one UPDATE, sent with no transaction
  open, and their outcome written back only while the lease is still ours.

SQLite: every write transaction takes the database's one write lock up front (BEGIN IMMEDIATE),
which serialises all of this the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from api.alerts.events import event_row, write_events
from api.alerts.models import OPEN_STATUSES, Alert, AlertEvent
from api.catalog.service import get_policy
from api.notifications.models import Webhook, WebhookAttempt, WebhookDelivery
from api.settings import Settings

# Declarative tables are Tables (typed as the wider FromClause, which insert/update refuse).
alerts = cast(Table, Alert.__table__)
events = cast(Table, AlertEvent.__table__)
webhooks = cast(Table, Webhook.__table__)
deliveries = cast(Table, WebhookDelivery.__table__)
attempts = cast(Table, WebhookAttempt.__table__)

# API.md defaults, used where the policy data names no window.
DEFAULT_ACK_WINDOW_MINUTES = {"emergency": 15, "urgent": 240, "routine": 2880}
BATCH = 500


async def ack_windows(session: AsyncSession, settings: Settings) -> dict[str, timedelta]:
    """Per severity: the ACK_WINDOW_*_S setting, else the policy data, else the default."""
    policy = await get_policy(session)
    windows = {}
    for severity, default in DEFAULT_ACK_WINDOW_MINUTES.items():
        override = getattr(settings, f"ack_window_{severity}_s")
        if override is not None:
            windows[severity] = timedelta(seconds=override)
            continue
        tier = policy.severities.get(severity)  # type: ignore[call-overload]
        minutes = tier.ack_window_minutes if tier and tier.ack_window_minutes else default
        windows[severity] = timedelta(minutes=minutes)
    return windows


def _for_update(query: Any, conn: AsyncConnection) -> Any:
    # Rows another process is working on are skipped, not waited for (PostgreSQL only; SQLite
    # has a single writer and no row locks).
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


async def escalate_and_mark_overdue(
    conn: AsyncConnection, now: datetime, windows: dict[str, timedelta]
) -> int:
    """Escalate open alerts past their acknowledge window, mark unresolved ones past their
    follow-up time overdue; one event each, in this transaction. Returns events written."""
    unacknowledged = and_(alerts.c.status == "open", alerts.c.escalated_at.is_(None))
    past_window = or_(
        *(
            and_(alerts.c.severity == severity, alerts.c.created_at <= now - window)
            for severity, window in windows.items()
        )
    )
    pick = _for_update(select(alerts.c.id).where(unacknowledged, past_window).limit(BATCH), conn)
    escalated = (
        await conn.execute(
            update(alerts)
            .where(alerts.c.id.in_(pick), unacknowledged)
            .values(escalated_at=now, escalation_rank=0)
            .returning(alerts.c.id, alerts.c.severity, alerts.c.status)
        )
    ).all()

    unresolved = and_(alerts.c.status.in_(OPEN_STATUSES), alerts.c.overdue_at.is_(None))
    pick = _for_update(
        select(alerts.c.id).where(unresolved, alerts.c.follow_up_due_at <= now).limit(BATCH),
        conn,
    )
    overdue = (
        await conn.execute(
            update(alerts)
            .where(alerts.c.id.in_(pick), unresolved)
            .values(overdue_at=now)
            .returning(alerts.c.id, alerts.c.severity, alerts.c.status)
        )
    ).all()

    rows = [
        event_row(a.id, action, now, severity=a.severity, from_status=a.status, to_status=a.status)
        for action, changed in (("escalated", escalated), ("overdue", overdue))
        for a in sorted(changed, key=lambda r: str(r.id))
    ]
    await write_events(conn, rows)
    return len(rows)


# What a webhook may say about an alert: ids, severity, rule, team and times. No title, detail,
# evidence or notes (they carry symptom values and free text).
_PAYLOAD_FIELDS = (
    "id",
    "patient_id",
    "care_team",
    "rule_id",
    "rule_version",
    "drug_code",
    "severity",
    "status",
    "occurrences",
    "created_at",
    "follow_up_due_at",
    "last_triggered_at",
    "acknowledged_at",
    "resolved_at",
    "escalated_at",
    "overdue_at",
)
_event_with_alert = select(
    events.c.id.label("event_id"),
    events.c.action,
    events.c.at,
    *(alerts.c[name] for name in _PAYLOAD_FIELDS),
).join_from(events, alerts, events.c.alert_id == alerts.c.id)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if value is None or isinstance(value, int | str):
        return value
    return str(value)


def webhook_body(row: Any) -> str:
    alert = {name: _json_value(row[name]) for name in _PAYLOAD_FIELDS}
    alert["team"] = alert.pop("care_team")
    return json.dumps(
        {
            "type": f"alert.{row['action']}",
            "timestamp": _json_value(row["at"]),
            "data": {"alert": alert},
        },
        separators=(",", ":"),
    )


async def fan_out(conn: AsyncConnection, now: datetime) -> int:
    """Queue a delivery per subscription and matching new event. Returns deliveries queued."""
    newest = select(func.max(events.c.id)).scalar_subquery()
    hooks = _for_update(
        select(webhooks.c.id, webhooks.c.events, webhooks.c.teams, webhooks.c.last_event_id)
        .where(webhooks.c.deleted_at.is_(None), webhooks.c.last_event_id < newest)
        .order_by(webhooks.c.id),
        conn,
    )
    queued = 0
    for hook in (await conn.execute(hooks)).mappings().all():
        rows = (
            (
                await conn.execute(
                    _event_with_alert.where(events.c.id > hook["last_event_id"])
                    .order_by(events.c.id)
                    .limit(BATCH)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            continue
        wanted = set(hook["events"])
        teams = None if hook["teams"] is None else set(hook["teams"])
        batch = [
            {
                "webhook_id": hook["id"],
                "event_id": row["event_id"],
                "event_type": f"alert.{row['action']}",
                "body": webhook_body(row),
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for row in rows
            if f"alert.{row['action']}" in wanted and (teams is None or row["care_team"] in teams)
        ]
        if batch:
            await conn.execute(insert(deliveries), batch)
            queued += len(batch)
        await conn.execute(
            update(webhooks)
            .where(webhooks.c.id == hook["id"])
            .values(last_event_id=rows[-1]["event_id"])
        )
    return queued


@dataclass
class Leased:
    id: int
    webhook_id: Any
    event_id: int
    body: str
    attempts: int
    created_at: datetime
    url: str
    secret: str


async def lease_deliveries(
    conn: AsyncConnection, worker: str, now: datetime, hold: timedelta, limit: int
) -> list[Leased]:
    """Take up to ``limit`` due deliveries for ``worker`` until ``now + hold``."""
    free = and_(
        deliveries.c.status == "pending",
        deliveries.c.next_attempt_at <= now,
        or_(deliveries.c.leased_until.is_(None), deliveries.c.leased_until < now),
    )
    live_hooks = select(webhooks.c.id).where(webhooks.c.deleted_at.is_(None))
    pick = _for_update(
        select(deliveries.c.id)
        .where(free, deliveries.c.webhook_id.in_(live_hooks))
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit),
        conn,
    )
    taken = (
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(pick), free)
            .values(leased_by=worker, leased_until=now + hold)
            .returning(
                deliveries.c.id,
                deliveries.c.webhook_id,
                deliveries.c.event_id,
                deliveries.c.body,
                deliveries.c.attempts,
                deliveries.c.created_at,
            )
        )
    ).all()
    if not taken:
        return []
    hooks = {
        row.id: row
        for row in await conn.execute(
            select(webhooks.c.id, webhooks.c.url, webhooks.c.secret).where(
                webhooks.c.id.in_({row.webhook_id for row in taken})
            )
        )
    }
    return [
        Leased(
            id=row.id,
            webhook_id=row.webhook_id,
            event_id=row.event_id,
            body=row.body,
            attempts=row.attempts,
            created_at=row.created_at,
            url=hooks[row.webhook_id].url,
            secret=hooks[row.webhook_id].secret,
        )
        for row in sorted(taken, key=lambda r: r.id)
    ]


@dataclass
class Outcome:
    delivery: Leased
    at: datetime
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff(settings: Settings, attempt: int) -> timedelta:
    """Exponential: base, 2 * base, 4 * base, ... capped at WEBHOOK_RETRY_MAX_S."""
    seconds = settings.webhook_retry_base_s * 2 ** min(attempt - 1, 30)
    return timedelta(seconds=min(seconds, settings.webhook_retry_max_s))


async def record_outcomes(
    conn: AsyncConnection, worker: str, outcomes: list[Outcome], settings: Settings
) -> None:
    """Write back what each send gave and release its lease; log every attempt."""
    give_up_after = timedelta(seconds=settings.webhook_retry_for_s)
    log = []
    for outcome in outcomes:
        d = outcome.delivery
        attempt = d.attempts + 1
        values: dict[str, Any] = {"attempts": attempt, "leased_by": None, "leased_until": None}
        if outcome.ok:
            values |= {"status": "delivered", "finished_at": outcome.at}
            result = "delivered"
        elif outcome.at - d.created_at >= give_up_after:
            values |= {"status": "failed", "finished_at": outcome.at}
            result = "failed"
        else:
            values["next_attempt_at"] = outcome.at + backoff(settings, attempt)
            result = "retrying"
        changed = await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id == d.id,
                deliveries.c.leased_by == worker,
                deliveries.c.status == "pending",
            )
            .values(values)
        )
        if changed.rowcount != 1:  # the lease ran out and someone else has it now
            continue
        log.append(
            {
                "webhook_id": d.webhook_id,
                "delivery_id": d.id,
                "event_id": d.event_id,
                "attempt": attempt,
                "at": outcome.at,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "outcome": result,
            }
        )
    if log:
        await conn.execute(insert(attempts), log)


async def release_leases(conn: AsyncConnection, worker: str) -> int:
    """Give back every delivery this worker still holds (clean shutdown)."""
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.leased_by == worker, deliveries.c.status == "pending")
        .values(leased_by=None, leased_until=None)
    )
    return result.rowcount
