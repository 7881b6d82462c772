"""Pure ASGI middleware: body size cap, request id, security headers, access log."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.db import WRITE_INTENT
from api.errors import PROBLEM_JSON

access_log = logging.getLogger("api.access")


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


class RateLimitMiddleware:
    """Per-token request budget (moving one-minute window); 429 with Retry-After when spent.

    Counted in each worker process: with N workers a token gets up to N times the limit. That
    bounds abuse without a shared store; a hospital needing an exact global limit puts it in its
    gateway.
    """

    def __init__(self, app: ASGIApp, per_minute: int) -> None:
        self.app = app
        self.item = RateLimitItemPerMinute(per_minute)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        credential = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if credential is None:
            client = scope.get("client")
            credential = (client[0] if client else "unknown").encode()
        # Keyed by a digest: the limiter's memory never holds a usable token.
        key = hashlib.sha256(credential).hexdigest()
        if not self.limiter.hit(self.item, key):
            reset = self.limiter.get_window_stats(self.item, key).reset_time
            retry_after = max(1, math.ceil(reset - time.time()))
            await send_problem(
                send,
                429,
                "Too many requests",
                f"More than {self.item.amount} requests a minute for this token",
                [(b"retry-after", str(retry_after).encode())],
            )
            return
        await self.app(scope, receive, send)


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
        WRITE_INTENT.set(scope["method"] not in ("GET", "HEAD", "OPTIONS"))
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


def _incoming_request_id(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            # Accept only a plain token: a request id must not become a log-injection vector.
            if 0 < len(candidate) <= 64 and all(c.isalnum() or c in "-_." for c in candidate):
                return candidate
    return None
