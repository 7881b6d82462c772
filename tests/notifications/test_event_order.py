"""Event ids and commit order (api/alerts/events.py): a reader that has seen event N never
misses an event that commits later with a smaller id."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from fastapi import FastAPI
from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from api.alerts.events import _LOCK_AND_NOTIFY, event_row, write_events
from api.alerts.models import AlertEvent
from api.db import make_async_engine, make_engine, utcnow
from tests.conftest import World, make_settings
from tests.notifications.test_webhooks import DANGER

events = AlertEvent.__table__


def _visible(conn: Connection, ids: list[int]) -> set[int]:
    return set(conn.scalars(select(events.c.id).where(events.c.id.in_(ids))))


def _an_alert(world: World) -> uuid.UUID:
    patient = world.patient("onc-a")
    return uuid.UUID(world.report(patient["id"], vitals=DANGER)["alerts"][0]["id"])


@pytest.mark.postgres_only
def test_without_the_lock_postgresql_commits_out_of_id_order(
    world: World, app: FastAPI, database_url: str, is_postgres: bool
) -> None:
    """Why the lock is needed: plain inserts can commit a larger id before a smaller one."""
    if not is_postgres:
        pytest.skip("SQLite has one writer at a time: the hazard cannot occur there")
    alert_id = _an_alert(world)
    engine = make_engine(make_settings(database_url))
    try:
        with engine.connect() as first, engine.connect() as second, engine.connect() as reader:
            row = event_row(alert_id, "overdue", utcnow(), to_status="open")
            with first.begin():
                small = first.execute(insert(events).returning(events.c.id), row).scalar_one()
                with second.begin():
                    large = second.execute(insert(events).returning(events.c.id), row).scalar_one()
                assert small < large
                # A reader now sees the larger id without the smaller: paging past it would
                # lose the smaller one when it commits.
                assert _visible(reader, [small, large]) == {large}
            assert _visible(reader, [small, large]) == {small, large}
    finally:
        engine.dispose()


def test_event_writers_commit_in_id_order(world: World, database_url: str) -> None:
    """Two transactions writing events at once: the second cannot take an id until the first
    has committed, so no reader ever sees the later id without the earlier one."""
    alert_id = _an_alert(world)
    settings = make_settings(database_url)
    engine = make_engine(settings)
    snapshots: list[set[int]] = []
    watched: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        with engine.connect() as reader:
            while not stop.is_set():
                with reader.begin():
                    snapshots.append(_visible(reader, list(watched)))
                time.sleep(0.01)

    watcher = threading.Thread(target=watch)

    async def newest(conn: AsyncConnection) -> int:
        return await conn.scalar(select(events.c.id).order_by(events.c.id.desc()).limit(1)) or 0

    async def writers() -> tuple[int, int]:
        # The writers go the service's way: write_events on the asyncio engine.
        writer_engine = make_async_engine(settings)
        row = event_row(alert_id, "overdue", utcnow(), to_status="open")

        async def second_writer() -> int:
            async with writer_engine.connect() as conn, conn.begin():
                await write_events(conn, [row])
                return await newest(conn)

        try:
            async with writer_engine.connect() as first:
                async with first.begin():
                    await write_events(first, [row])
                    first_id = await newest(first)
                    second = asyncio.create_task(second_writer())
                    await asyncio.sleep(0.5)
                    assert not second.done(), (
                        "the second writer took an id while the first was open"
                    )
                    watched.append(first_id)
                    watcher.start()
                second_id = await asyncio.wait_for(second, 30)
            return first_id, second_id
        finally:
            await writer_engine.dispose()

    try:
        first_id, second_id = asyncio.run(writers())
        watched.append(second_id)
        time.sleep(0.2)
        stop.set()
        watcher.join(timeout=10)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(timeout=10)
        engine.dispose()
    assert first_id < second_id
    # Every snapshot the reader took is a prefix in id order: never the second without the first.
    assert all(first_id in seen or not seen for seen in snapshots), snapshots


@pytest.mark.postgres_only
def test_a_report_draws_its_event_ids_only_under_the_lock(
    world: World, database_url: str, is_postgres: bool
) -> None:
    """The statement that inserts a report's events takes the lock before it draws their ids,
    and waits while another writer holds it."""
    if not is_postgres:
        pytest.skip("SQLite has one writer at a time: no lock to take")
    earlier = _an_alert(world)
    patient = world.patient("onc-a")
    engine = make_engine(make_settings(database_url))
    answers: list[dict[str, object]] = []
    reporter = threading.Thread(
        target=lambda: answers.append(world.report(patient["id"], vitals=DANGER))
    )
    try:
        with engine.connect() as holder, engine.connect() as reader:
            with holder.begin():
                holder.execute(text(f"SELECT {_LOCK_AND_NOTIFY}"))
                before = reader.scalar(select(func.max(events.c.id))) or 0
                reporter.start()
                reporter.join(timeout=1.0)
                assert reporter.is_alive(), "the report wrote its events without the lock"
                # Its statement waits inside the lock: the holder can still draw an id first.
                held = holder.execute(
                    insert(events).returning(events.c.id),
                    event_row(earlier, "overdue", utcnow(), to_status="open"),
                ).scalar_one()
            reporter.join(timeout=30)
            assert not reporter.is_alive()
            [answer] = answers
            alert_ids = [uuid.UUID(a["id"]) for a in answer["alerts"]]  # type: ignore[union-attr]
            drawn = reader.scalars(
                select(events.c.id).where(events.c.alert_id.in_(alert_ids))
            ).all()
    finally:
        engine.dispose()
    assert alert_ids and drawn
    assert before < held < min(drawn), (before, held, drawn)
