"""Pure ASGI middleware: header and body caps, rate limit, request id, headers, access log."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from typing import Any

from fastapi.security.utils import get_authorization_scheme_param
from limits import RateLimitItemPerMinute
from limits.aio import storage as aio_storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM_JSON, Unauthorized
from api.security import verify_token

access_log = logging.getLogger("api.access")
log = logging.getLogger("api.middleware")


class BodyLimitMiddleware:
    """Refuse bodies over the cap with a problem+json 413, declared length or streamed.

    The body is read before the app runs (it is at most the cap, 64 KiB by default), so the
    answer never depends on where in the app the oversized body would have been noticed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_413(send, self.max_bytes)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_413(send, self.max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_413(send: Send, max_bytes: int) -> None:
    detail = f"The body is larger than {max_bytes} bytes"
    await send_problem(send, 413, "Payload too large", detail, [(b"connection", b"close")])


async def send_problem(
    send: Send, status: int, title: str, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """A problem+json answer from middleware, before the app (and its handlers) run."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


class HeaderGuardMiddleware:
    """Refuse oversized headers (431) and a second Authorization header (400).

    ``python -m api serve`` refuses an oversized head before reading it whole (api/server.py);
    this covers any other server the app runs under. Two Authorization headers are ambiguous
    (which one did a proxy check?), so neither is chosen.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_bytes:
            detail = f"The request headers are larger than {self.max_bytes} bytes"
            headers_out = [(b"connection", b"close")]
            await send_problem(send, 431, "Request header fields too large", detail, headers_out)
            return
        if sum(1 for k, _ in headers if k == b"authorization") > 1:
            detail = "Send exactly one Authorization header"
            await send_problem(send, 400, "Bad request", detail, [])
            return
        await self.app(scope, receive, send)


class RateLimitMiddleware:
    """Request budget per verified user, or per client address without a valid token.

    Moving one-minute window; 429 with Retry-After when spent. Keyed on the token's verified
    subject, so spelling the header differently or sending junk tokens gets no fresh budget.
    With ``redis_url`` the count is kept in Redis and holds across workers and replicas;
    without it each worker process counts on its own. If Redis cannot be reached the request
    passes (logged): a patient's report matters more than the limit.
    """

    def __init__(
        self, app: ASGIApp, per_minute: int, redis_url: str | None = None, prefix: str = "symptoms"
    ) -> None:
        self.app = app
        self.item = RateLimitItemPerMinute(per_minute)
        storage: Any
        if redis_url:
            storage = aio_storage.RedisStorage(
                f"async+{redis_url}",
                implementation="redispy",
                key_prefix=f"{prefix}:ratelimit",
                wrap_exceptions=True,
                socket_timeout=1,
                socket_connect_timeout=1,
            )
        else:
            storage = aio_storage.MemoryStorage()
        self.limiter = MovingWindowRateLimiter(storage)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        key = await _limit_key(scope)
        try:
            allowed = await self.limiter.hit(self.item, key)
            stats = None if allowed else await self.limiter.get_window_stats(self.item, key)
        except StorageError as exc:
            log.warning("rate limit storage unavailable: %s", type(exc.storage_error).__name__)
            allowed, stats = True, None
        if not allowed and stats is not None:
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            await send_problem(
                send,
                429,
                "Too many requests",
                f"More than {self.item.amount} requests a minute",
                [(b"retry-after", str(retry_after).encode())],
            )
            return
        await self.app(scope, receive, send)


async def _limit_key(scope: Scope) -> str:
    """``sub:<digest>`` for a valid token, else ``addr:<client address>``."""
    header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
    if header is not None:
        scheme, token = get_authorization_scheme_param(header.decode("latin-1"))
        if scheme.lower() == "bearer" and token:
            try:
                principal = await verify_token(scope["app"].state.token_verifier, token)
            except Unauthorized:
                pass
            else:
                # The endpoint's dependency reuses this instead of verifying the token again.
                scope.setdefault("state", {})["verified_token"] = (token, principal)
                # A digest: the limiter's store holds no user ids.
                return "sub:" + hashlib.sha256(principal.sub.encode()).hexdigest()
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class RequestContextMiddleware:
    """Request id, security headers, and one JSON access-log line per request.

    The log line holds the route template, never the concrete path (it carries patient ids),
    and nothing of the query, headers or body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        start = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"server"]
                headers += SECURITY_HEADERS
                headers.append((b"x-request-id", request_id.encode()))
                if scope["path"].startswith("/v1/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            access_log.info(
                json.dumps(
                    {
                        "event": "request",
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": getattr(route, "path", None) or "unmatched",
                        "status": status,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                    }
                )
            )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            # Accept only a plain token: a request id must not become a log-injection vector.
            if 0 < len(candidate) <= 64 and all(c.isalnum() or c in "-_." for c in candidate):
                return candidate
    return None
