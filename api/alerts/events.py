"""Alert events: written in the transaction of the change they record, read in id order.

Ordering (API.md: "a reader that has seen event N never misses an event that commits later with
a smaller id"). PostgreSQL hands out identity values when a row is inserted, not when its
transaction commits, so two writers could commit out of id order and a reader paging by id
would step over the smaller id. Every transaction that writes events therefore takes one
transaction-level advisory lock in the statement that inserts its events, before it draws
their ids, and keeps it until it ends: from the moment a writer draws ids until its commit, no
other writer can draw any, so commit order is id order and every id below a visible one is
already visible (or rolled back for good). The lock is taken as late as possible: that
statement is the transaction's last, after the alert rows are written and locked, so writers
(of every process) queue only for it and the commit, and a holder never waits for another lock
afterwards, so it cannot deadlock. SQLite has one writer at a time anyway (BEGIN IMMEDIATE),
which gives the same order.

The reader side is then plain keyset paging on ``id`` (streams, webhook fan-out).
Proven by tests/notifications/test_event_order.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from api.alerts.models import AlertEvent
from api.db import Writes

EVENT_TYPES = (
    "alert.raised",
    "alert.retriggered",
    "alert.severity_raised",
    "alert.acknowledged",
    "alert.resolved",
    "alert.escalated",
    "alert.overdue",
)
# Streams in other processes LISTEN on this channel; the notification is sent on commit.
CHANNEL = "alert_events"
# An arbitrary constant that names "the event writers" among advisory locks.
_EVENT_LOCK_KEY = 0x616C657274  # "alert"

# Taken in the statement that inserts the events, before their ids are drawn, with the
# notification (queued now, sent at commit, folded into one per transaction).
_LOCK_AND_NOTIFY = f"pg_advisory_xact_lock({_EVENT_LOCK_KEY}), pg_notify('{CHANNEL}', '')"


async def write_events(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` into alert_events in order; call as the transaction's last statement."""
    writes = Writes()
    writes.insert(AlertEvent, rows, before=_LOCK_AND_NOTIFY)
    await writes.flush(conn)


def event_row(
    alert_id: Any,
    action: str,
    at: Any,
    *,
    to_status: str,
    from_status: str | None = None,
    severity: str | None = None,
    report_id: Any = None,
    actor_sub: str | None = None,
    actor_role: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "at": at,
        "action": action,
        "actor_sub": actor_sub,
        "actor_role": actor_role,
        "report_id": report_id,
        "severity": severity,
        "from_status": from_status,
        "to_status": to_status,
        "note": note,
    }
