"""Sending reports so that they make one group of the app's group writer (api/reports/group.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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

    The responses, ``first``'s first, and the number of audit inserts: one per transaction
    that stored reports.
    """
    app = client.app
    db, writer = app.state.db, app.state.report_writer  # type: ignore[attr-defined]
    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO audit_events"):
            inserts.append(statement)

    async def until(done: Callable[[], bool]) -> None:
        for _ in range(1000):
            if done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the reports never queued")

    async def scenario() -> list[httpx.Response]:
        queued = asyncio.Event()
        write_group = service.write_group

        async def first_waits(session: Any, jobs: Any, skip_locked: bool = False) -> Any:
            await queued.wait()
            return await write_group(session, jobs, skip_locked)

        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            def send(path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
                return asyncio.create_task(http.post(path, json=body, headers=headers))

            service.write_group = first_waits  # type: ignore[assignment]
            try:
                tasks = [send(*first)]
                await until(lambda: writer.queued == 0 and writer.writing)
                tasks += [send(*item) for item in rest]
                await until(lambda: writer.queued == len(rest))
            finally:
                service.write_group = write_group  # type: ignore[assignment]
                queued.set()
            return list(await asyncio.gather(*tasks))

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        responses = client.portal.call(scenario)  # type: ignore[union-attr]
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return responses, len(inserts)
