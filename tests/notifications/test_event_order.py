"""Event ids and commit order (api/alerts/events.py): a reader that has seen event N never
misses an event that commits later with a smaller id."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from fastapi import FastAPI
from sqlalchemy import Connection, insert, select

from api.alerts.events import event_row, write_events
from api.alerts.models import AlertEvent
from api.db import make_engine, utcnow
from tests.conftest import World, make_settings
from tests.notifications.test_webhooks import DANGER

events = AlertEvent.__table__


def _visible(conn: Connection, ids: list[int]) -> set[int]:
    return set(conn.scalars(select(events.c.id).where(events.c.id.in_(ids))))


def _an_alert(world: World) -> uuid.UUID:
    patient = world.patient("onc-a")
    return uuid.UUID(world.report(patient["id"], vitals=DANGER)["alerts"][0]["id"])


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
    engine = make_engine(make_settings(database_url))
    second_id: list[int] = []
    snapshots: list[set[int]] = []
    stop = threading.Event()

    def newest(conn: Connection) -> int:
        return conn.scalar(select(events.c.id).order_by(events.c.id.desc()).limit(1)) or 0

    def second_writer() -> None:
        with engine.connect() as conn, conn.begin():
            write_events(conn, [event_row(alert_id, "overdue", utcnow(), to_status="open")])
            second_id.append(newest(conn))

    try:
        with engine.connect() as first, engine.connect() as reader:
            watched: list[int] = []

            def watch() -> None:
                while not stop.is_set():
                    with reader.begin():
                        snapshots.append(_visible(reader, list(watched)))
                    time.sleep(0.01)

            with first.begin():
                write_events(first, [event_row(alert_id, "overdue", utcnow(), to_status="open")])
                first_id = newest(first)
                thread = threading.Thread(target=second_writer)
                thread.start()
                time.sleep(0.5)
                assert thread.is_alive(), "the second writer took an id while the first was open"
                assert second_id == []
                watched.append(first_id)
                watcher = threading.Thread(target=watch)
                watcher.start()
            thread.join(timeout=30)
            assert not thread.is_alive()
            watched.append(second_id[0])
            time.sleep(0.2)
            stop.set()
            watcher.join(timeout=10)
    finally:
        stop.set()
        engine.dispose()
    assert first_id < second_id[0]
    # Every snapshot the reader took is a prefix in id order: never the second without the first.
    assert all(first_id in seen or not seen for seen in snapshots), snapshots
