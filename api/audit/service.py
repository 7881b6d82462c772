from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit.models import AuditEvent
from api.db import insert_rows, new_id, utcnow
from api.security import Principal


async def record(
    session: AsyncSession,
    principal: Principal,
    action: str,
    resource_type: str,
    resource_id: object,
    detail: dict[str, Any] | None = None,
) -> None:
    """One row per write, in the write's own transaction: no write without its audit entry."""
    await record_many(session, principal, action, resource_type, [(resource_id, detail)])


async def record_many(
    session: AsyncSession,
    principal: Principal,
    action: str,
    resource_type: str,
    entries: list[tuple[object, dict[str, Any] | None]],
) -> None:
    """As ``record``, for many resources of one action: one statement however many there are."""
    await write_rows(session, audit_rows(principal, action, resource_type, entries))


def audit_rows(
    principal: Principal,
    action: str,
    resource_type: str,
    entries: Sequence[tuple[object, dict[str, Any] | None]],
) -> list[dict[str, Any]]:
    """The audit rows of ``entries``, listed by (at, id) in the order given."""
    at = utcnow()
    ids = sorted(new_id() for _ in entries)
    return [
        {
            "id": event_id,
            "at": at,
            "actor_sub": principal.sub,
            "actor_role": principal.role,
            "action": action,
            "resource_type": resource_type,
            "resource_id": str(resource_id),
            "detail": detail,
        }
        for event_id, (resource_id, detail) in zip(ids, entries, strict=True)
    ]


async def write_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    # Core, not the ORM's bulk insert: nothing to track, one statement.
    await insert_rows(await session.connection(), AuditEvent, rows)
