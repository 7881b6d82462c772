from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select, tuple_

from api.audit.models import AuditEvent
from api.db import ReadSession
from api.errors import PROBLEM_RESPONSES
from api.pagination import Cursor, Limit, Page, decode_cursor, page_of, parse_time
from api.security import Admin
from api.types import NO_NUL

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=PROBLEM_RESPONSES)


class AuditRead(BaseModel):
    id: uuid.UUID
    at: datetime
    actor_sub: str
    actor_role: str
    action: str
    resource_type: str
    resource_id: str
    detail: dict[str, Any] | None


@router.get("")
async def list_audit(
    _: Admin,
    session: ReadSession,
    resource_type: Annotated[str | None, Query(max_length=32, pattern=NO_NUL)] = None,
    resource_id: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    actor: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AuditRead]:
    """Read the audit trail.

    Admin only: every write, who (sub, role), what, which resource and when, newest first, cursor-
    paginated.
    """
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if resource_type:
        query = query.where(AuditEvent.resource_type == resource_type)
    if resource_id:
        query = query.where(AuditEvent.resource_id == resource_id)
    if actor:
        query = query.where(AuditEvent.actor_sub == actor)
    if after := decode_cursor(cursor, parse_time, uuid.UUID):
        at, last_id = after
        query = query.where(tuple_(AuditEvent.at, AuditEvent.id) < tuple_(at, last_id))
    rows = await session.scalars(query.limit(limit + 1))
    items = [AuditRead.model_validate(r, from_attributes=True) for r in rows]
    return page_of(items, limit, lambda r: [r.at.isoformat(), str(r.id)])
