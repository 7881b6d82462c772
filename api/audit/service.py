from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.audit.models import AuditEvent
from api.security import Principal


def record(
    session: Session,
    principal: Principal,
    action: str,
    resource_type: str,
    resource_id: object,
    detail: dict[str, Any] | None = None,
) -> None:
    """One row per write, in the write's own transaction: no write without its audit entry."""
    session.add(
        AuditEvent(
            actor_sub=principal.sub,
            actor_role=principal.role,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id),
            detail=detail,
        )
    )
