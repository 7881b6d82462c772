"""The live feed (GET /v1/alerts/stream): Server-Sent Events of alert events, team-scoped.

One ``EventHub`` per process reads new events once, for every stream of that process, and
keeps the latest ones in memory; each stream filters them by its teams. So 500 open streams
cost one query per wake-up, not 500, and a waiting stream holds no database connection: it
waits on an in-memory event.

The hub wakes on PostgreSQL ``LISTEN alert_events`` (the writers ``NOTIFY`` in their own
transaction, api/alerts/events.py, so the notice comes after the commit) through one dedicated
connection per process, and reads every STREAM_POLL_S anyway as the safety net for a lost
listening connection. SQLite has no notifications: the hub reads every STREAM_POLL_S.

Events are read in id order, which is commit order (api/alerts/events.py), so a stream that
has sent event N resumes after N with nothing skipped; a client that reconnects with
``Last-Event-ID`` gets what it missed read from the database, then the live events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI
from sqlalchemy import func, make_url, select
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import ServerSentEvent

from api.alerts.events import CHANNEL
from api.alerts.models import Alert, AlertEvent
from api.alerts.schemas import AlertRead
from api.db import Database

log = logging.getLogger("api.stream")

alerts = Alert.__table__
events = AlertEvent.__table__
PAGE = 200
KEEP = 2000

_with_alert = select(events.c.id.label("event_id"), events.c.action, alerts).join_from(
    events, alerts, events.c.alert_id == alerts.c.id
)


@dataclass(frozen=True)
class FeedEvent:
    id: int
    team: str
    # The whole SSE message, encoded once for every stream that sends it.
    message: bytes


async def read_events(
    session: AsyncSession, after: int, teams: frozenset[str] | None
) -> list[FeedEvent]:
    """Up to a page of events after ``after`` (of ``teams``; None: all), in id order."""
    query = _with_alert.where(events.c.id > after).order_by(events.c.id).limit(PAGE)
    if teams is not None:
        query = query.where(alerts.c.care_team.in_(sorted(teams)))
    out = []
    conn = await session.connection()
    for row in (await conn.execute(query)).mappings():
        alert = AlertRead.model_validate(dict(row))
        message = ServerSentEvent(
            id=str(row["event_id"]), event=f"alert.{row['action']}", data=_json(alert)
        ).encode()
        out.append(FeedEvent(row["event_id"], row["care_team"], message))
    return out


def _json(alert: AlertRead) -> str:
    return json.dumps(alert.model_dump(mode="json"), separators=(",", ":"))


async def _newest(session: AsyncSession) -> int:
    conn = await session.connection()
    return await conn.scalar(select(func.max(events.c.id))) or 0


@asynccontextmanager
async def _hub_read(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A short read of the hub's own, outside any request."""
    db: Database = app.state.db
    async with db.read() as session:
        # The feed's own reads are marked, so what counts a request's statements can leave them
        # out.
        await session.connection(execution_options={"event_hub": True})
        yield session


class EventHub:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.settings = app.state.settings
        self.recent: deque[FeedEvent] = deque(maxlen=KEEP)
        # Every event with an id above ``floor`` and up to ``latest`` is in ``recent``.
        self.floor = 0
        self.latest = 0
        self._changed = anyio.Event()
        self._started = False
        self._start_lock = anyio.Lock()
        self._task: Any = None

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            async with _hub_read(self.app) as session:
                self.floor = self.latest = await _newest(session)
            # Lives as long as the app: ended by stop() from the lifespan.
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._started = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        if self.settings.is_sqlite:
            while True:
                await self._refresh_logged()
                await anyio.sleep(self.settings.stream_poll_s)
        while True:
            try:
                await self._listen()
            except Exception as exc:
                log.warning('{"event": "stream_listen_failed", "error": "%s"}', type(exc).__name__)
            # Without a listening connection: the periodic read alone, then try again.
            await self._refresh_logged()
            await anyio.sleep(self.settings.stream_poll_s)

    async def _listen(self) -> None:
        import psycopg

        url = make_url(self.settings.database_url).set(drivername="postgresql")
        async with await psycopg.AsyncConnection.connect(
            url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        ) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            # Anything committed before LISTEN took effect is read here.
            await self._refresh_logged()
            while True:
                async for _ in conn.notifies(timeout=self.settings.stream_poll_s, stop_after=1):
                    pass
                # A notice, or the poll interval without one (the safety net): read either way.
                await self._refresh_logged()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            log.warning('{"event": "stream_read_failed", "error": "%s"}', type(exc).__name__)

    async def refresh(self) -> None:
        while True:
            after = self.latest
            async with _hub_read(self.app) as session:
                new = await read_events(session, after, None)
            if not new:
                return
            for event in new:
                if len(self.recent) == self.recent.maxlen:
                    self.floor = self.recent[0].id
                self.recent.append(event)
            self.latest = new[-1].id
            changed, self._changed = self._changed, anyio.Event()
            changed.set()
            if len(new) < PAGE:
                return

    def since(self, after: int) -> list[FeedEvent] | None:
        """The kept events after ``after``; None when some of them are no longer kept."""
        if after < self.floor:
            return None
        return [e for e in self.recent if e.id > after]

    async def wait(self, after: int, seconds: float) -> None:
        if self.latest > after:
            return
        with anyio.move_on_after(seconds):
            await self._changed.wait()


async def feed(
    hub: EventHub, teams: frozenset[str] | None, last_event_id: int | None, max_s: float
) -> AsyncIterator[bytes]:
    """The stream's events: what was missed (from the database), then live ones, for at most
    ``max_s`` seconds: a client reconnects with Last-Event-ID and loses nothing, and a stream
    never outlives the token it was opened with by more than that."""
    await hub.start()
    after = hub.latest if last_event_id is None else last_event_id
    ends = time.monotonic() + max_s
    while (left := ends - time.monotonic()) > 0:
        kept = hub.since(after)
        if kept is None:
            # Behind what the hub keeps (a reconnect after a while): read from the database.
            db: Database = hub.app.state.db
            async with db.read() as session:
                kept = await read_events(session, after, teams)
            if not kept:
                after = max(after, hub.floor)
                continue
        for event in kept:
            after = event.id
            if teams is None or event.team in teams:
                yield event.message
        # Wakes on new events; sse-starlette sends the heartbeat comments meanwhile.
        await hub.wait(after, min(left, 60.0))
