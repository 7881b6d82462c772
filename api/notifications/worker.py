"""The job loop: escalation, overdue marks and webhook delivery, without a queue server.

It runs inside every API process by default (``WORKER_MODE=inline``, started by the app's
lifespan) or on its own as ``python -m api worker``; any number of copies may run, because all
work is leased from the database (api/notifications/jobs.py). Two loops, each every
WORKER_INTERVAL_S:

- escalation: one transaction escalates, marks overdue and fans new events out to the
  subscriptions (queues deliveries);
- delivery, beside it: one transaction leases the due deliveries, they are sent with no
  transaction or connection held (httpx, concurrently), one transaction writes back the
  outcomes and releases the leases.

Stopping lets the tick in progress finish (a send gives up after WEBHOOK_TIMEOUT_S), then gives
back any lease still held, so another process can send at once instead of when the lease ends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import anyio
import httpx

from api.db import Database, utcnow
from api.notifications import jobs
from api.notifications.secrets import SecretUnreadable, unseal
from api.settings import Settings

log = logging.getLogger("api.worker")

LEASE_BATCH = 100
SENDS_AT_ONCE = 20


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """Standard Webhooks ``webhook-signature``: v1, base64 HMAC-SHA256 of id.timestamp.body."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class JobLoop:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.worker_id = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A lease outlives the longest send by a wide margin: it only matters after a crash.
        self.hold = timedelta(seconds=settings.webhook_timeout_s * 3 + 30)
        self._windows: dict[str, timedelta] | None = None

    async def run(self, stopping: anyio.Event) -> None:
        log.info('{"event": "worker_started", "worker": "%s"}', self.worker_id)
        try:
            async with (
                httpx.AsyncClient(follow_redirects=False) as client,
                anyio.create_task_group() as group,
            ):
                # Two loops: a receiver that is slow to answer never holds up escalation.
                group.start_soon(self._every, stopping, "escalation", self.escalate)
                group.start_soon(self._every, stopping, "delivery", lambda: self.deliver(client))
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    async with self.db.write() as session:
                        conn = await session.connection()
                        released = await jobs.release_leases(conn, self.worker_id)
                    log.info('{"event": "worker_stopped", "released": %d}', released)
                except Exception as exc:
                    log.warning(
                        '{"event": "worker_release_failed", "error": "%s"}', type(exc).__name__
                    )

    async def _every(
        self, stopping: anyio.Event, name: str, step: Callable[[], Awaitable[None]]
    ) -> None:
        while not stopping.is_set():
            try:
                await step()
            except Exception as exc:  # the loop must outlive a database restart
                log.warning(
                    '{"event": "worker_step_failed", "step": "%s", "error": "%s"}',
                    name,
                    type(exc).__name__,
                )
            with anyio.move_on_after(self.settings.worker_interval_s):
                await stopping.wait()

    async def escalate(self) -> None:
        """Escalation, overdue marks and webhook fan-out: one transaction."""
        async with self.db.write() as session:
            if self._windows is None:
                self._windows = await jobs.ack_windows(session, self.settings)
            conn = await session.connection()
            now = utcnow()
            await jobs.escalate_and_mark_overdue(conn, now, self._windows)
            await jobs.fan_out(conn, now)

    async def deliver(self, client: httpx.AsyncClient) -> None:
        now = utcnow()
        async with self.db.write() as session:
            conn = await session.connection()
            leased = await jobs.lease_deliveries(conn, self.worker_id, now, self.hold, LEASE_BATCH)
        if not leased:
            return
        outcomes: list[jobs.Outcome] = []
        limiter = anyio.CapacityLimiter(SENDS_AT_ONCE)

        async def send(delivery: jobs.Leased) -> None:
            async with limiter:
                outcomes.append(await self.send(client, delivery))

        # Shielded: a stop request lets the sends in flight finish and be written back.
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as group:
                for delivery in leased:
                    group.start_soon(send, delivery)
            async with self.db.write() as session:
                conn = await session.connection()
                await jobs.record_outcomes(conn, self.worker_id, outcomes, self.settings)

    async def send(self, client: httpx.AsyncClient, delivery: jobs.Leased) -> jobs.Outcome:
        msg_id = str(delivery.event_id)
        timestamp = int(time.time())
        try:
            secret = unseal(delivery.secret, self.settings)
        except SecretUnreadable:
            return jobs.Outcome(delivery, utcnow(), None, "secret_unreadable")
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, delivery.body),
        }
        code: int | None = None
        error: str | None = None
        try:
            response = await client.post(
                delivery.url,
                content=delivery.body.encode(),
                headers=headers,
                timeout=self.settings.webhook_timeout_s,
            )
            code = response.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        return jobs.Outcome(delivery, utcnow(), code, error)


async def run_standalone(settings: Settings) -> None:
    """``python -m api worker``: the job loop alone, until SIGINT or SIGTERM."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    # Made here, on the loop that uses it: an asyncio pool belongs to one event loop.
    db = Database(settings)
    stopping = anyio.Event()

    async def on_signal() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stopping.set()
                return

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(on_signal)
            await JobLoop(settings, db).run(stopping)
            group.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await db.close()
