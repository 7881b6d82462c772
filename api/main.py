from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import text

from api import errors
from api.alerts.router import router as alerts_router
from api.alerts.stream import EventHub
from api.audit.router import router as audit_router
from api.catalog.router import router as catalog_router
from api.db import AsyncSessions, Sessions, make_async_engine, make_engine
from api.middleware import BodyLimitMiddleware, RateLimitMiddleware, RequestContextMiddleware
from api.notifications.router import router as webhooks_router
from api.notifications.worker import JobLoop
from api.patients.router import router as patients_router
from api.reports.router import router as reports_router
from api.rules.router import router as rules_router
from api.security import HS256Verifier
from api.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    if settings is None:
        try:
            settings = get_settings()
        except ValidationError as exc:
            reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise SystemExit(f"refusing to start: {reason}") from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Made on the event loop that serves: an asyncio pool belongs to one loop.
        async_engine = make_async_engine(settings)
        app.state.async_sessions = (
            None
            if async_engine is None
            else AsyncSessions(async_engine, settings.db_capacity, settings.db_pool_timeout)
        )
        app.state.event_hub = EventHub(app)
        # WORKER_MODE=inline: escalation and webhook delivery run in this process too.
        jobs = (
            JobLoop(settings, app.state.sessions.write)
            if settings.worker_mode == "inline"
            else None
        )
        stopping = anyio.Event()
        job_task = None if jobs is None else asyncio.create_task(jobs.run(stopping))
        try:
            yield
        finally:
            stopping.set()
            if job_task is not None:
                await job_task
            await app.state.event_hub.stop()
            app.state.async_sessions = None
            if async_engine is not None:
                await async_engine.dispose()
            app.state.engine.dispose()

    app = FastAPI(
        title="Symptom tracking API",
        version="1.0.0",
        summary="Patient-reported symptoms and alerts for cytokine immunotherapy",
        lifespan=lifespan,
    )
    engine = make_engine(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = Sessions(engine)
    app.state.token_verifier = HS256Verifier(settings)

    errors.install(app)
    if settings.rate_limit_per_minute:
        app.add_middleware(RateLimitMiddleware, per_minute=settings.rate_limit_per_minute)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: errors.PROBLEM_RESPONSES[503]})
    def readyz(request: Request) -> JSONResponse:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return JSONResponse({"status": "ready"})

    for router in (
        catalog_router,
        patients_router,
        reports_router,
        alerts_router,
        webhooks_router,
        rules_router,
        audit_router,
    ):
        app.include_router(router)
    return app


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("api.access")
    if not access.handlers:
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False


_configure_logging()
app = create_app()
