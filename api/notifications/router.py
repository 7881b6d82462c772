"""Webhook subscriptions (admin): POST/GET/DELETE /v1/webhooks, the delivery log."""

from __future__ import annotations

import base64
import secrets
import uuid

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.alerts.models import AlertEvent
from api.audit.service import record
from api.db import ReadSession, WriteSession, utcnow
from api.errors import PROBLEM_RESPONSES, Invalid, NotFound
from api.notifications.models import Webhook, WebhookAttempt
from api.notifications.schemas import DeliveryRead, WebhookCreate, WebhookCreated, WebhookRead
from api.notifications.secrets import seal
from api.pagination import Cursor, Limit, Page, decode_cursor, page_of, parse_int_id
from api.security import Admin

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=PROBLEM_RESPONSES)


async def _load(session: AsyncSession, webhook_id: uuid.UUID) -> Webhook:
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None or webhook.deleted_at is not None:
        raise NotFound("No such webhook")
    return webhook


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_webhook(
    body: WebhookCreate, principal: Admin, session: WriteSession, request: Request
) -> WebhookCreated:
    """Subscribe a webhook.

    Admin only. Events of the chosen types (and teams) are POSTed to the URL, signed as Standard
    Webhooks; the secret is shown only in this answer.
    """
    url = str(body.url)
    if (
        request.app.state.settings.app_env == "production"
        and body.url.scheme != "https"
        and not request.app.state.settings.webhook_allow_http
    ):
        raise Invalid([{"loc": ["body", "url"], "msg": "must be https:// in production"}])
    # Events from now on: the subscription starts after the newest event already written.
    newest = await session.scalar(select(func.max(AlertEvent.id))) or 0
    secret = body.secret or "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    webhook = Webhook(
        url=url,
        events=list(dict.fromkeys(body.events)),
        teams=None if body.teams is None else sorted(set(body.teams)),
        secret=seal(secret, request.app.state.settings),
        created_at=utcnow(),
        created_by=principal.sub,
        last_event_id=newest,
    )
    session.add(webhook)
    await session.flush()
    await record(
        session,
        principal,
        "webhook.created",
        "webhook",
        webhook.id,
        {"events": webhook.events, "teams": webhook.teams},
    )
    return WebhookCreated(**WebhookRead.model_validate(webhook).model_dump(), secret=secret)


@router.get("")
async def list_webhooks(
    principal: Admin, session: ReadSession, limit: Limit = 50, cursor: Cursor = None
) -> Page[WebhookRead]:
    """List webhook subscriptions.

    Admin only; secrets are never shown again.
    """
    query = (
        select(Webhook).where(Webhook.deleted_at.is_(None)).order_by(Webhook.id).limit(limit + 1)
    )
    if after := decode_cursor(cursor, uuid.UUID):
        query = query.where(Webhook.id > after[0])
    items = [WebhookRead.model_validate(w) for w in await session.scalars(query)]
    return page_of(items, limit, lambda w: [str(w.id)])


@router.get("/{webhook_id}")
async def get_webhook(webhook_id: uuid.UUID, principal: Admin, session: ReadSession) -> WebhookRead:
    """Get a webhook subscription.

    Admin only; the secret is not shown.
    """
    return WebhookRead.model_validate(await _load(session, webhook_id))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(
    webhook_id: uuid.UUID, principal: Admin, session: WriteSession
) -> Response:
    """Delete a webhook subscription.

    Admin only. Nothing more is delivered to it; its delivery log stays readable.
    """
    await _load(session, webhook_id)
    # Kept, marked deleted: its delivery log stays readable for the audit trail.
    await session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.deleted_at.is_(None))
        .values(deleted_at=utcnow())
    )
    await record(session, principal, "webhook.deleted", "webhook", webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries")
async def list_deliveries(
    webhook_id: uuid.UUID,
    principal: Admin,
    session: ReadSession,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DeliveryRead]:
    """List a webhook's delivery attempts.

    Admin only: every attempt, newest first, with the event id, attempt number, status code or
    error, and when.
    """
    await _load(session, webhook_id)
    query = (
        select(WebhookAttempt)
        .where(WebhookAttempt.webhook_id == webhook_id)
        .order_by(WebhookAttempt.id.desc())
        .limit(limit + 1)
    )
    if after := decode_cursor(cursor, parse_int_id):
        query = query.where(WebhookAttempt.id < after[0])
    items = [DeliveryRead.model_validate(a) for a in await session.scalars(query)]
    return page_of(items, limit, lambda a: [a.id])
