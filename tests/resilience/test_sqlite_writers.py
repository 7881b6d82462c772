"""SQLite's writers (api/db.py): the writer file lock among worker processes, the WAL
checkpointed beside them rather than by a commit, and a writer's turn run without a hop to
another thread per statement (api/sqlite_inline.py).

Each app here stands for a worker process: its own Database, its own descriptor of the lock
file. Runs on SQLite in both suites (a database file of its own).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from api.db import Database
from api.main import create_app
from tests.conftest import Tokens, World, make_settings, report_body, upgrade


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'writers.db'}"
    upgrade(url)
    return url


@pytest.fixture
def served(sqlite_url: str) -> Iterator[tuple[TestClient, Tokens, dict[str, Any]]]:
    """The service on that database, with a patient on aldesleukin."""
    settings = make_settings(sqlite_url)
    tokens = Tokens(settings)
    with TestClient(create_app(settings)) as client:
        yield client, tokens, World(client, tokens).patient(drugs=("aldesleukin",))


@pytest.fixture
def held_elsewhere(tmp_path: Path) -> Iterator[int]:
    """The lock file, taken the way another worker's writer takes it."""
    fd = os.open(tmp_path / "writers.db-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def _free(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def test_a_report_waits_for_another_workers_writer_then_is_stored(
    served: tuple[TestClient, Tokens, dict[str, Any]], held_elsewhere: int
) -> None:
    client, tokens, patient = served
    path = f"/v1/patients/{patient['id']}/reports"
    headers = tokens.patient(patient["id"])

    async def scenario() -> tuple[bool, httpx.Response]:
        transport = httpx.ASGITransport(client.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            fcntl.flock(held_elsewhere, fcntl.LOCK_EX)  # the other worker is writing
            sent = asyncio.create_task(
                http.post(path, json=report_body({"fever": 3}), headers=headers)
            )
            await asyncio.sleep(0.5)
            waited = not sent.done()
            fcntl.flock(held_elsewhere, fcntl.LOCK_UN)
            return waited, await asyncio.wait_for(sent, 5)

    waited, response = client.portal.call(scenario)  # type: ignore[union-attr]
    assert waited
    assert response.status_code == 201, response.text
    history = client.get(path, headers=tokens.admin()).json()["items"]
    assert [r["client_report_id"] for r in history] == [response.json()["client_report_id"]]
    # Released after the commit: the other worker can write again.
    assert _free(held_elsewhere)


def test_a_writer_cancelled_while_waiting_leaves_the_lock_free(
    sqlite_url: str, held_elsewhere: int
) -> None:
    async def scenario() -> tuple[bool, bool]:
        async with Database.opened(make_settings(sqlite_url)) as db:

            async def write() -> None:
                async with db.write():
                    pass

            fcntl.flock(held_elsewhere, fcntl.LOCK_EX)
            waiting = asyncio.create_task(write())
            await asyncio.sleep(0.3)
            waiting.cancel()
            fcntl.flock(held_elsewhere, fcntl.LOCK_UN)  # the wait ends; the lock is let go
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(waiting, 5)
            # The abandoned wait ends in its thread, which lets go of the lock at once.
            for _ in range(200):
                if free := _free(held_elsewhere):
                    break
                await asyncio.sleep(0.01)
            await asyncio.wait_for(write(), 5)  # and the next writer gets it
            return waiting.cancelled(), free

    cancelled, free = asyncio.run(scenario())
    assert cancelled
    assert free


def _in_database_file(path: Path, client_report_id: str) -> bool:
    """Whether the report is in the database file itself, not only in its WAL."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        query = "SELECT count(*) FROM reports WHERE client_report_id = ?"
        return bool(conn.execute(query, (client_report_id.replace("-", ""),)).fetchone()[0])
    finally:
        conn.close()


def test_stored_reports_reach_the_database_file_without_a_commit_copying_them(
    served: tuple[TestClient, Tokens, dict[str, Any]], tmp_path: Path
) -> None:
    client, tokens, patient = served
    response = client.post(
        f"/v1/patients/{patient['id']}/reports",
        json=report_body({"fatigue": 1}),
        headers=tokens.patient(patient["id"]),
    )
    assert response.status_code == 201, response.text
    key = response.json()["client_report_id"]
    # The service's connections, readers' and writers', never checkpoint; its background task
    # does, every second.
    for autocheckpoint in client.portal.call(_autocheckpoint, client.app):  # type: ignore[union-attr]
        assert autocheckpoint == 0
    deadline = time.monotonic() + 5
    while not _in_database_file(tmp_path / "writers.db", key):
        assert time.monotonic() < deadline, "the WAL was not checkpointed"
        time.sleep(0.1)


async def _autocheckpoint(app: object) -> list[int]:
    db: Database = app.state.db  # type: ignore[attr-defined]
    found = []
    for session in (db.read(), db.write()):
        async with session as s:
            found.append(int((await s.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()))
    return found


def test_a_writers_turn_runs_its_statements_without_giving_way_to_other_tasks(
    served: tuple[TestClient, Tokens, dict[str, Any]],
) -> None:
    """Between BEGIN IMMEDIATE and COMMIT, SQLite's one writer runs its statements one after the
    other: no other task of the process runs in its turn (as one would while each statement
    went to aiosqlite's thread and came back through the event loop), so the other processes'
    writers wait for SQLite's work only."""
    client, tokens, patient = served
    path = f"/v1/patients/{patient['id']}/reports/batch"
    items = [
        report_body({"fever": 2, "nausea": 1}, recorded_at=datetime.now(UTC) - timedelta(hours=h))
        for h in (3, 2, 1)
    ]
    seen: list[tuple[str, int]] = []
    ticks = 0

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        seen.append((sql.split(None, 1)[0].upper(), ticks))

    def commit(_conn: Any) -> None:
        seen.append(("COMMIT", ticks))

    async def scenario() -> httpx.Response:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        transport = httpx.ASGITransport(client.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            ticker = asyncio.create_task(tick())
            try:
                headers = tokens.patient(patient["id"])
                return await http.post(path, json={"reports": items}, headers=headers)
            finally:
                ticker.cancel()

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "commit", commit)
    try:
        response = client.portal.call(scenario)  # type: ignore[union-attr]
    finally:
        event.remove(Engine, "before_cursor_execute", statement)
        event.remove(Engine, "commit", commit)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["created"] * 3
    kinds = [kind for kind, _ in seen]
    begin = kinds.index("BEGIN")
    turn = seen[begin : kinds.index("COMMIT", begin) + 1]
    # the lock and context reads, the reports, their symptoms, alerts, audit and events
    assert len(turn) >= 8, turn
    assert {at for _, at in turn} == {turn[0][1]}, turn
    # The ticker did run meanwhile: the request waited for the loop elsewhere.
    assert ticks > turn[0][1] > 0
