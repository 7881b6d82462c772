"""Every non-success answer as RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.types import NO_NUL, PLAIN_NAME

log = logging.getLogger("api.errors")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[ErrorItem] | None = None


class AppError(Exception):
    status = 400
    title = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers


class Unauthorized(AppError):
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str = "A valid bearer token is required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status = 403
    title = "Forbidden"


class NotFound(AppError):
    status = 404
    title = "Not found"


class Conflict(AppError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(AppError):
    status = 413
    title = "Payload too large"


class Invalid(AppError):
    status = 422
    title = "Validation failed"

    def __init__(self, errors: Sequence[dict[str, Any]], detail: str | None = None) -> None:
        summary = detail or "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors
        )
        super().__init__(summary, errors=errors)


class RateLimited(AppError):
    status = 429
    title = "Too many requests"


class Unavailable(AppError):
    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str = "The database is not answering; retry shortly") -> None:
        super().__init__(detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def problem_response(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    errors: Sequence[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def validation_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors reduced to loc + msg: never echo the input (it may be patient data)."""
    return [{"loc": [p for p in e["loc"] if p != "__root__"], "msg": _message(e)} for e in raw]


def _message(error: Any) -> str:
    if error.get("type") == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern")
        if pattern == NO_NUL:
            return "contains a control character or a bidirectional override"
        if pattern == PLAIN_NAME:
            return "contains a control character, line break or bidirectional override"
    return str(error["msg"]).removeprefix("Value error, ")


async def _app_error(_: Request, exc: AppError) -> JSONResponse:
    return problem_response(
        exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers
    )


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 400 and detail and "JSON" in detail:
        detail = "The body is not valid JSON"
    return problem_response(exc.status_code, detail=detail, headers=exc.headers)


async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = validation_errors(exc.errors())
    if any(e["msg"].startswith("JSON decode error") for e in errors):
        return problem_response(400, "Malformed JSON", "The body is not valid JSON")
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return problem_response(422, "Validation failed", summary, errors=errors)


# PostgreSQL's undefined_table and undefined_column, SQLite's messages for the same.
_NO_SCHEMA_STATES = ("42P01", "42703")
_NO_SCHEMA_MESSAGES = ("no such table", "no such column")


def _schema_missing(exc: Exception) -> bool:
    """The database lacks the service's tables or columns: its migrations have not run."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in _NO_SCHEMA_STATES:
        return True
    return isinstance(exc, OperationalError) and str(orig).startswith(_NO_SCHEMA_MESSAGES)


async def _schema_not_ready(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "database schema missing or out of date (%s): run `alembic upgrade head`",
        type(getattr(exc, "orig", None) or exc).__name__,
    )
    return await _app_error(
        request, Unavailable("The database is not ready for this service; retry shortly")
    )


async def _db_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if _schema_missing(exc):
        return await _schema_not_ready(request, exc)
    cause = type(getattr(exc, "orig", None) or exc).__name__
    log.warning("database unavailable: %s", cause)
    # A statement or lock timeout (the server is overloaded, or another request holds the
    # patient) is as retryable as an outage, but should not read as one.
    busy = isinstance(exc, PoolTimeoutError) or cause in ("QueryCanceled", "LockNotAvailable")
    detail = "The database is busy" if busy else "The database is not answering"
    return problem_response(
        503,
        "Service unavailable",
        f"{detail}; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
    # Constraints back up the locks (idempotency key, one open episode): losing a race is a 409.
    log.warning("integrity conflict: %s", type(exc.orig).__name__)
    return problem_response(409, "Conflict", "A concurrent write conflicted; retry the request")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Where it failed, not the message: driver messages quote the values (patient data).
    where = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)[-6:]))
    log.error("unhandled %s\n%s", type(exc).__name__, where)
    return problem_response(500, "Internal server error", "An unexpected error occurred")


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _request_validation)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _db_unavailable)
    app.add_exception_handler(PoolTimeoutError, _db_unavailable)
    app.add_exception_handler(IntegrityError, _integrity)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _db_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


async def _db_error(request: Request, exc: DBAPIError) -> JSONResponse:
    if exc.connection_invalidated or _schema_missing(exc):
        return await _db_unavailable(request, exc)
    return await _unexpected(request, exc)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": Problem,
        "content": {PROBLEM_JSON: {}},
        "description": HTTPStatus(status).phrase,
    }
    for status in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}
