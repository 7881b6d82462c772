"""Sending reports so that they make one group of the app's group writer (api/reports/group.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import event

from api.reports import service

Send = tuple[str, dict[str, Any], dict[str, str]]  # path, JSON body, headers


def send_as_group(
    client: TestClient, first: Send, rest: list[Send]
) -> tuple[list[httpx.Response], int]:
    """Send ``first``; once the writer has taken it, send ``rest``, which queue behind it and
    make the next group. ``first``'s group is kept inside its transaction until ``rest`` has
    queued.

    The responses, ``first``'s first, and the number of transactions that stored reports.
    """
    app = client.app
    writer = app.state.report_writer  # type: ignore[attr-defined]

    async def scenario() -> list[httpx.Response]:
        queued = asyncio.Event()
        write_group = service.write_group

        async def first_waits(session: Any, jobs: Any, skip_locked: bool = False) -> Any:
            await queued.wait()
            return await write_group(session, jobs, skip_locked)

        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            service.write_group = first_waits  # type: ignore[assignment]
            try:
                tasks = [_post(http, first)]
                await _until(lambda: writer.queued == 0 and writer.writing)
                tasks += [_post(http, item) for item in rest]
                await _until(lambda: writer.queued == len(rest))
            finally:
                service.write_group = write_group  # type: ignore[assignment]
                queued.set()
            return list(await asyncio.gather(*tasks))

    with _transactions(client) as stored:
        responses = client.portal.call(scenario)  # type: ignore[union-attr]
    return responses, len(stored)


def send_while_busy(client: TestClient, sends: list[Send]) -> tuple[list[httpx.Response], int]:
    """Send ``sends`` while the database's one place is held (as by another writer), and free
    it once every one has queued: the writer waits for its turn with none of them taken.

    The responses, in order, and the number of transactions that stored reports.
    """
    app = client.app
    db, writer = app.state.db, app.state.report_writer  # type: ignore[attr-defined]

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            async with db.turn():
                tasks = [_post(http, item) for item in sends]
                await _until(lambda: writer.queued == len(sends) and writer.writing)
            return list(await asyncio.gather(*tasks))

    with _transactions(client) as stored:
        responses = client.portal.call(scenario)  # type: ignore[union-attr]
    return responses, len(stored)


@contextlib.contextmanager
def _transactions(client: TestClient) -> Iterator[list[str]]:
    """The audit inserts made meanwhile: one per transaction that stored reports."""
    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "INSERT INTO audit_events" in statement:  # on PostgreSQL, inside the one write
            inserts.append(statement)

    engine = client.app.state.db.engine.sync_engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield inserts
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _post(http: httpx.AsyncClient, send: Send) -> asyncio.Task[httpx.Response]:
    path, body, headers = send
    return asyncio.create_task(http.post(path, json=body, headers=headers))


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(1000):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the reports never queued")
