from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api import errors, metrics, openapi, pgconn
from api.alerts.pages import PageCache, latest_event_id
from api.alerts.router import router as alerts_router
from api.alerts.stream import EventHub
from api.audit.router import router as audit_router
from api.catalog.router import router as catalog_router
from api.dashboard.router import dashboard
from api.db import Database, database
from api.fhir.router import router as fhir_router
from api.identity import token_verifier
from api.middleware import (
    BodyLimitMiddleware,
    HeaderGuardMiddleware,
    RateLimitMiddleware,
    RequestContextMiddleware,
)
from api.notifications.router import router as webhooks_router
from api.notifications.worker import JobLoop
from api.patients.router import router as patients_router
from api.reports.group import GroupWriter
from api.reports.router import router as reports_router
from api.rules.router import router as rules_router
from api.settings import Settings, get_settings


def create_app(
    settings: Settings | None = None,
    open_database: Callable[[Settings], AbstractAsyncContextManager[Database]] = Database.opened,
) -> FastAPI:
    """The service. ``open_database`` gives the app its database on the serving event loop
    (the tests pass ``Database.rolled_back``)."""
    if settings is None:
        try:
            settings = get_settings()
        except ValidationError as exc:
            reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise SystemExit(f"refusing to start: {reason}") from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Made on the event loop that serves: an asyncio pool belongs to one loop.
        async with open_database(settings) as db:
            app.state.db = db
            # With the database: pages are labelled by its event ids.
            app.state.alert_pages = PageCache(partial(latest_event_id, db))
            app.state.report_writer = writer = GroupWriter(db)
            try:
                async with _jobs_and_feed(app, settings), _collector_tuned():
                    yield
            finally:
                await writer.close()

    @asynccontextmanager
    async def _jobs_and_feed(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
        db = app.state.db
        app.state.event_hub = EventHub(app)
        # WORKER_MODE=inline: escalation and webhook delivery run in this process too.
        jobs = JobLoop(settings, db) if settings.worker_mode == "inline" else None
        stopping = anyio.Event()
        job_task = None if jobs is None else asyncio.create_task(jobs.run(stopping))
        try:
            yield
        finally:
            stopping.set()
            if job_task is not None:
                await job_task
            await app.state.event_hub.stop()

    app = FastAPI(
        title="Symptom tracking API",
        version="1.0.0",
        summary="Patient-reported symptoms and alerts for cytokine immunotherapy",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.settings = settings
    app.state.token_verifier = token_verifier(settings)

    errors.install(app)
    # Outermost last: request id and log, CORS, header caps, rate limit, body cap.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.rate_limit_per_minute:
        app.add_middleware(
            RateLimitMiddleware,
            per_minute=settings.rate_limit_per_minute,
            redis_url=settings.redis_url,
            prefix=settings.rate_limit_key_prefix,
        )
    app.add_middleware(HeaderGuardMiddleware, max_bytes=settings.max_header_bytes)
    if settings.cors_origin_list:
        # Bearer tokens, not cookies: no credentials mode needed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Last-Event-ID"],
            expose_headers=["Retry-After", "X-Request-ID", "WWW-Authenticate"],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is running.

        Answers 200 while the process runs, without touching the database: for a liveness probe.
        """
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: errors.PROBLEM_RESPONSES[503]})
    async def readyz(request: Request) -> JSONResponse:
        """The service can reach its database, and the database has the service's tables.

        200 when the database answers a query within a few seconds, 503 with Retry-After when not,
        or when its schema was never created (`alembic upgrade head`): for a readiness probe or a
        load balancer.
        """
        # Bounded twice: each round trip by the deadline (a silent connection is dropped), the
        # whole check (waiting for a pooled connection too) by the outer limit.
        try:
            with anyio.fail_after(READY_TIMEOUT_S + 1), pgconn.deadline(READY_TIMEOUT_S):
                async with database(request).connect() as conn:
                    migrated = await conn.scalar(MIGRATED[conn.dialect.name])
        except (TimeoutError, PoolTimeoutError):
            raise errors.Unavailable("The database did not answer in time; retry shortly") from None
        if not migrated:
            # Every request would fail on the missing tables: keep the load balancer away.
            raise errors.Unavailable(
                "The database has no schema: run `alembic upgrade head` against it"
            )
        return JSONResponse({"status": "ready"})

    for router in (
        catalog_router,
        patients_router,
        reports_router,
        alerts_router,
        webhooks_router,
        rules_router,
        audit_router,
        fhir_router,
    ):
        app.include_router(router)
    app.mount("/dashboard", dashboard, name="dashboard")
    openapi.install(app)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    metrics.install(app, token)
    return app


READY_TIMEOUT_S = 2.0
# Whether migrations have run on the database: one catalog lookup, no error when they have not.
MIGRATED = {
    "postgresql": text("SELECT to_regclass('alembic_version') IS NOT NULL"),
    "sqlite": text(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master"
        " WHERE type = 'table' AND name = 'alembic_version')"
    ),
}
# Python's default is 700: under load a worker ran dozens of young collections a second, and
# full ones often enough to spend about a seventh of its CPU in the collector (bench/README).
GC_YOUNG_THRESHOLD = 10_000


@asynccontextmanager
async def _collector_tuned() -> AsyncIterator[None]:
    """Rarer young collections, and the objects of the loaded app (~160k, nearly all kept for
    the life of the process) left out of the full ones, which paused a worker for up to a
    quarter of a second scanning them. Unfrozen at shutdown, so that an app made and stopped
    again (the tests) leaves nothing uncollectable."""
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), *older)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _configure_logging() -> None:
    # uvicorn's own access line holds the concrete path and query string (patient ids, even
    # tokens): off here, whatever the command line says. Importing the app comes after uvicorn
    # has set up its logging, in every worker, so this is the last word.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.setLevel(logging.WARNING)
    uvicorn_access.disabled = True
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("api.access")
    if not access.handlers:
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False


_configure_logging()
app = create_app()
