"""The worklist's first pages, kept by each process and checked against the latest alert event.

Every change to an alert writes an alert event in the same transaction (raised, re-triggered,
severity raised, acknowledged, resolved, escalated, overdue: api/alerts/events.py), and event
ids follow commit order. So the largest event id names the state of every alert: a page read
while it was N is still the page while it is N, whichever process committed the next change.
A request for a first page then needs that id alone (the last entry of the primary key)
instead of the page's documents, which at 51 alerts cost PostgreSQL about 0.6 ms of CPU; and
one read of the id serves every request that asked while the read before it ran, so under
load a first page costs no statement of its own.

A page is stored under the id read before the page was, so it is never older than its label:
a change committed between the two reads makes the next request a miss. A write to alerts
without an event would leave pages stale; tests/alerts/test_worklist_pages.py changes the
alerts every way the service does and reads the first page after each.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from sqlalchemy import func, select

from api.alerts.models import AlertEvent
from api.db import Database, first_column

_latest_event = select(func.max(AlertEvent.id))


async def latest_event_id(db: Database) -> int | None:
    """The largest alert event id; None before the first event."""
    async with db.read_connection() as conn:
        (version,) = await first_column(conn, _latest_event, {})
    return version  # type: ignore[no-any-return]


class PageCache:
    """Response bodies by request, each with the latest event id it was read under; the
    least recently used go first."""

    def __init__(self, read_version: Callable[[], Awaitable[int | None]], size: int = 256) -> None:
        self._pages: OrderedDict[Hashable, tuple[int | None, bytes]] = OrderedDict()
        self._size = size
        self._read_version = read_version
        self._next: asyncio.Future[int | None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def version(self) -> int | None:
        """The latest event id, from a read that starts after the call: it sees every change
        committed before. Under load one read (one statement, one turn at the gate) serves
        every request that asked while the one before it ran."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiting = self._next
        if self._task is None:
            self._task = asyncio.create_task(self._read_versions())
        # Shielded: a request that goes away does not cancel the others' read.
        return await asyncio.shield(waiting)

    async def _read_versions(self) -> None:
        try:
            while (waiting := self._next) is not None:
                self._next = None
                try:
                    version = await self._read_version()
                except Exception as exc:
                    waiting.set_exception(exc)
                    waiting.add_done_callback(_consume)
                except BaseException:
                    waiting.cancel()
                    raise
                else:
                    waiting.set_result(version)
        finally:
            self._task = None

    def get(self, key: Hashable, version: int | None) -> bytes | None:
        entry = self._pages.get(key)
        if entry is None or entry[0] != version:
            return None
        self._pages.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, version: int | None, body: bytes) -> None:
        self._pages[key] = (version, body)
        self._pages.move_to_end(key)
        if len(self._pages) > self._size:
            self._pages.popitem(last=False)


def _consume(done: asyncio.Future[Any]) -> None:
    # Every request that waited may have gone away: the error is then nobody's to raise.
    done.exception()
