"""Prometheus metrics at ``GET /metrics``.

Counters and histograms live in each process; with several uvicorn workers set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory (the same for every worker, emptied before
the service starts) and any worker answers for all of them (prometheus_client's multiprocess
mode). What the database knows — open, overdue and escalated alerts, webhook deliveries — is
read from it at scrape time, so every worker gives the same figures. Labels carry route
templates, rule ids and severities, never a patient id.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import QueuePool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.alerts.models import OPEN_STATUSES, Alert
from api.db import Database, database
from api.errors import Unauthorized
from api.notifications.models import WebhookAttempt

PREFIX = "symptoms"
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REQUESTS = Counter(
    f"{PREFIX}_http_requests", "HTTP requests answered", ("method", "route", "status")
)
LATENCY = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ("method", "route"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REPORTS = Counter(f"{PREFIX}_reports_stored", "Symptom reports stored")
ALERTS_RAISED = Counter(
    f"{PREFIX}_alerts_raised", "Alerts raised (new episodes)", ("severity", "rule")
)
POOL_CHECKED_OUT = Gauge(
    f"{PREFIX}_db_pool_checked_out",
    "Database connections in use",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    f"{PREFIX}_db_pool_size", "Database connections kept open", multiprocess_mode="livesum"
)


def count_stored(reports: int, alerts: Iterable[dict[str, Any]]) -> None:
    """Reports stored by one request and the alerts they raised (not re-triggered)."""
    REPORTS.inc(reports)
    for alert in alerts:
        if alert.get("occurrences") == 1:
            ALERTS_RAISED.labels(alert["severity"], alert["rule_id"]).inc()


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)
            db = getattr(scope["app"].state, "db", None)
            # A queue pool each (not the one connection of an in-memory database).
            pools = [p for p in db.pools() if isinstance(p, QueuePool)] if db is not None else []
            if pools:
                POOL_CHECKED_OUT.set(sum(p.checkedout() for p in pools))
                POOL_SIZE.set(sum(p.size() for p in pools))


class _DatabaseCollector(Collector):
    """What the database said at scrape time."""

    def __init__(self, rows: Sequence[Any], late: int, escalated: int, deliveries: Sequence[Any]):
        self.rows, self.late, self.escalated, self.deliveries = rows, late, escalated, deliveries

    @classmethod
    async def read(cls, conn: AsyncConnection) -> _DatabaseCollector:
        now = datetime.now(UTC)
        rows = (
            await conn.execute(
                select(Alert.severity, Alert.status, func.count())
                .where(Alert.status.in_(OPEN_STATUSES))
                .group_by(Alert.severity, Alert.status)
            )
        ).all()
        late = await conn.scalar(
            select(func.count()).where(
                Alert.status.in_(OPEN_STATUSES), Alert.follow_up_due_at < now
            )
        )
        escalated = await conn.scalar(select(func.count()).where(Alert.escalated_at.is_not(None)))
        deliveries = (
            await conn.execute(
                select(WebhookAttempt.outcome, func.count()).group_by(WebhookAttempt.outcome)
            )
        ).all()
        return cls(rows, late or 0, escalated or 0, deliveries)

    def collect(self) -> Iterable[Any]:
        open_alerts = GaugeMetricFamily(
            f"{PREFIX}_alerts_open",
            "Alerts open or acknowledged",
            labels=("severity", "status"),
        )
        for severity, status, n in self.rows:
            open_alerts.add_metric([severity, status], n)
        overdue = GaugeMetricFamily(
            f"{PREFIX}_alerts_overdue", "Open or acknowledged alerts past follow_up_due_at"
        )
        overdue.add_metric([], self.late)
        escalated = CounterMetricFamily(
            f"{PREFIX}_alerts_escalated", "Alerts escalated (nobody acknowledged in time)"
        )
        escalated.add_metric([], self.escalated)
        deliveries = CounterMetricFamily(
            f"{PREFIX}_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, failed)",
            labels=("outcome",),
        )
        for outcome, n in self.deliveries:
            deliveries.add_metric([outcome], n)
        yield open_alerts
        yield overdue
        yield escalated
        yield deliveries


async def exposition(db: Database) -> bytes:
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        own = generate_latest(registry)
    else:
        own = generate_latest(REGISTRY)
    database = CollectorRegistry()
    async with db.connect() as conn:
        database.register(await _DatabaseCollector.read(conn))
    return own + generate_latest(database)


def install(app: FastAPI, metrics_token: str | None) -> None:
    """``GET /metrics`` (bearer ``METRICS_TOKEN`` when set) and the request counters."""
    app.add_middleware(MetricsMiddleware)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics.

        Request counts and latency by route template, reports stored, alerts raised by severity and
        rule, open, overdue and escalated alerts, webhook deliveries by outcome, database
        pool use. A bearer token when METRICS_TOKEN is set.
        """
        if metrics_token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {metrics_token}".encode()):
                raise Unauthorized("/metrics needs the METRICS_TOKEN bearer token")
        return Response(await exposition(database(request)), media_type=CONTENT_TYPE_LATEST)
