"""Group commit: reports that queue while a group is written share the next transaction, and a
report that fails in a group fails alone."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text

from api.alerts.models import Alert
from api.main import create_app
from api.reports.models import Report
from tests.conftest import Tokens, World, db_execute, engine_of, make_settings, report_body
from tests.groups import Send, send_as_group, send_while_busy


def _stored(client: TestClient, patient_id: str) -> int:
    [(n,)] = db_execute(
        client,
        select(func.count()).select_from(Report).where(Report.patient_id == uuid.UUID(patient_id)),
    )
    return n


def test_reports_that_queue_together_are_written_in_one_transaction(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patients = [world.patient(drugs=("aldesleukin",)) for _ in range(6)]
    path = "/v1/patients/{}/reports"
    send = [
        (
            path.format(p["id"]),
            report_body({"fever": 3}, {"temperature_c": 39.2}),
            tokens.patient(p["id"]),
        )
        for p in patients
    ]
    responses, transactions = send_as_group(client, send[0], send[1:])
    assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses]
    # The first report alone, the five that queued behind it together.
    assert transactions == 2
    for patient, response in zip(patients, responses, strict=True):
        assert _stored(client, patient["id"]) == 1
        # fever 39.2 °C on aldesleukin: each report raised its own patient's alert
        assert {a["patient_id"] for a in response.json()["alerts"]} == {patient["id"]}


def test_reports_that_queue_while_the_writer_waits_for_its_turn_join_its_group(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """The writer takes its group from the queue once its turn at the database has come, not
    before: on SQLite the reports that came while another process wrote share its transaction."""
    patients = [world.patient(drugs=("aldesleukin",)) for _ in range(3)]
    send = [
        (
            f"/v1/patients/{p['id']}/reports",
            report_body({"fever": 3}, {"temperature_c": 39.2}),
            tokens.patient(p["id"]),
        )
        for p in patients
    ]
    responses, transactions = send_while_busy(client, send)
    assert [r.status_code for r in responses] == [201] * 3, [r.text for r in responses]
    assert transactions == 1
    for patient, response in zip(patients, responses, strict=True):
        assert _stored(client, patient["id"]) == 1
        assert {a["patient_id"] for a in response.json()["alerts"]} == {patient["id"]}


def test_a_group_on_postgresql_sends_the_same_statements_for_one_patient_or_many(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """PostgreSQL prepares each statement of a group once: the patients, report keys and rule
    ids are bound as arrays, so one patient's group and three patients' send the same texts.
    SQLite spells a list out, one placeholder an item."""
    path = "/v1/patients/{}/reports"
    a, b, c, d, e = (world.patient(drugs=("aldesleukin",)) for _ in range(5))

    def send(patient: dict[str, Any]) -> Send:
        # fever 39.2 °C on aldesleukin: an alert, so the open episodes are read and written too
        body = report_body({"fever": 3}, {"temperature_c": 39.2})
        return (path.format(patient["id"]), body, tokens.patient(patient["id"]))

    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not conn.get_execution_options().get("event_hub") and "SAVEPOINT" not in statement:
            statements.append(statement)

    engine = client.app.state.db.engine.sync_engine  # type: ignore[attr-defined]
    send_as_group(client, send(a), [])  # the catalog read once, before what is compared
    event.listen(engine, "before_cursor_execute", record)
    try:
        send_as_group(client, send(b), [])
        responses, transactions = send_as_group(client, send(c), [send(d), send(e)])
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert [r.status_code for r in responses] == [201] * 3, [r.text for r in responses]
    assert transactions == 2  # c alone, then d and e together
    # Each transaction begins with the patients' lock.
    starts = [i for i, s in enumerate(statements) if "FROM patients LEFT OUTER JOIN" in s]
    assert len(starts) == 3, statements
    one, group = statements[: starts[1]], statements[starts[2] :]
    assert len(one) == len(group) >= 4, (one, group)
    postgres = client.app.state.db.dialect == "postgresql"  # type: ignore[attr-defined]
    assert (one == group) is postgres, [(x, y) for x, y in zip(one, group, strict=True) if x != y]


def test_a_failing_report_in_a_group_loses_no_other(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patients = [world.patient(drugs=("aldesleukin",)) for _ in range(5)]
    a, b, c, d, e = patients
    path = "/v1/patients/{}/reports"
    stored_before = world.report(a["id"], {"fatigue": 1})
    conflicting = report_body({"fatigue": 3}, client_report_id=stored_before["client_report_id"])
    ancient = report_body({"nausea": 1}, recorded_at=datetime.now(UTC) - timedelta(days=900))
    twice = report_body({"chills": 2}, {"systolic_bp": 84})
    good = {p["id"]: report_body({"fever": 2}, {"temperature_c": 38.6}) for p in (b, c, d)}
    rest = [
        (path.format(b["id"]), good[b["id"]], tokens.patient(b["id"])),
        # another body under a key already used: 409
        (path.format(a["id"]), conflicting, tokens.patient(a["id"])),
        (path.format(c["id"]), good[c["id"]], tokens.patient(c["id"])),
        # a patient the caller cannot see: 404
        (path.format(e["id"]), report_body({"fever": 1}), tokens.patient(d["id"])),
        # dated before the patient's record allows: 422, found only with the patient row
        (path.format(d["id"]), ancient, tokens.patient(d["id"])),
        (path.format(d["id"]), good[d["id"]], tokens.patient(d["id"])),
        # the same report twice in one group: stored once, the second is its replay
        (path.format(e["id"]), twice, tokens.patient(e["id"])),
        (path.format(e["id"]), twice, tokens.patient(e["id"])),
    ]
    first = (path.format(a["id"]), report_body({"fatigue": 1}), tokens.patient(a["id"]))
    responses, transactions = send_as_group(client, first, rest)
    codes = [r.status_code for r in responses]
    # The two sends of one report may reach the writer in either order: one stores, one replays.
    assert codes[:7] == [201, 201, 409, 201, 404, 422, 201], [r.text for r in responses]
    assert sorted(codes[7:]) == [200, 201], [r.text for r in responses]
    assert responses[2].headers["content-type"] == "application/problem+json"
    assert responses[5].json()["errors"][0]["loc"] == ["body", "recorded_at"]
    # Every report that was not at fault is stored, once; nothing of the ones that failed is.
    assert [_stored(client, p["id"]) for p in patients] == [2, 1, 1, 1, 1]
    stored_twice, replayed = sorted(responses[7:], key=lambda r: r.status_code, reverse=True)
    assert replayed.json()["id"] == stored_twice.json()["id"]
    assert replayed.json()["advice"] == stored_twice.json()["advice"]
    alert_ids = [{x["id"] for x in r.json()["alerts"]} for r in (replayed, stored_twice)]
    assert alert_ids[0] == alert_ids[1]
    assert {x["rule_id"] for x in stored_twice.json()["alerts"]} >= {"cls-hypotension"}
    [(episodes,)] = db_execute(
        client,
        select(func.count()).select_from(Alert).where(Alert.patient_id == uuid.UUID(e["id"])),
    )
    assert episodes == len(stored_twice.json()["alerts"])
    # The first alone, then the group: each failure rolled back what the group had written
    # and wrote the rest again, so only the last attempt stored anything.
    assert transactions == 2


@pytest.mark.postgres_only
@pytest.mark.committed  # the test's own app reads the patients
def test_a_group_writes_its_other_patients_while_one_is_held_elsewhere(
    database_url: str, world: World, tokens: Tokens
) -> None:
    """Another transaction (another worker's group) holds a patient: the group stores the
    other reports without waiting for it, and that patient's report follows once it is free."""
    held, free = (world.patient(drugs=("aldesleukin",)) for _ in range(2))
    # One place at the database: while the test holds it, the writer cannot start a group.
    app = create_app(make_settings(database_url, db_pool_size=1, db_max_overflow=0))

    def send(http: httpx.AsyncClient, patient: dict[str, Any]) -> asyncio.Task[httpx.Response]:
        path = f"/v1/patients/{patient['id']}/reports"
        body = report_body({"fever": 3}, {"temperature_c": 39.2})
        headers = tokens.patient(patient["id"])
        return asyncio.create_task(http.post(path, json=body, headers=headers))

    async def until(done: Any) -> None:
        for _ in range(1000):
            if done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the reports never queued")

    with TestClient(app) as client, engine_of(app).connect() as holder:
        db, writer = app.state.db, app.state.report_writer
        holder.execute(text("SELECT 1 FROM patients WHERE id = :id FOR UPDATE"), {"id": held["id"]})

        async def scenario() -> tuple[httpx.Response, httpx.Response, bool]:
            transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                async with db.turn():  # both queue, and make one group once it is free
                    waiting, stored = send(http, held), send(http, free)
                    await until(lambda: writer.queued == 2)
                # Far below the 5 s statement timeout a wait for the held patient would take.
                done = await asyncio.wait_for(stored, 4)
                still_waiting = not waiting.done()
                holder.rollback()  # the other transaction ends
                return done, await waiting, still_waiting

        done, followed, still_waiting = client.portal.call(scenario)  # type: ignore[union-attr]
        assert done.status_code == 201, done.text
        assert still_waiting
        assert followed.status_code == 201, followed.text
        for patient, response in ((free, done), (held, followed)):
            assert response.json()["patient_id"] == patient["id"]
            assert _stored(client, patient["id"]) == 1
            assert {a["patient_id"] for a in response.json()["alerts"]} == {patient["id"]}


@pytest.mark.postgres_only
def test_a_write_the_database_refuses_in_a_group_fails_only_its_report(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """One report's insert is refused by the database (a trigger stands for a constraint that
    only the database can check): the group is rolled back, each report written again on its
    own, and only the refused one fails, with the conflict's 409."""
    db_execute(
        client,
        text(
            "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.note = 'refuse me' THEN RAISE unique_violation; END IF; RETURN NEW; END $$"
        ),
    )
    db_execute(
        client,
        text(
            "CREATE TRIGGER refuse_marked BEFORE INSERT ON reports "
            "FOR EACH ROW EXECUTE FUNCTION refuse_marked()"
        ),
    )
    a, b, c = (world.patient(drugs=("aldesleukin",)) for _ in range(3))
    path = "/v1/patients/{}/reports"
    fever = {"fever": 3}, {"temperature_c": 39.2}
    refused = report_body(*fever) | {"note": "refuse me"}
    rest = [
        (path.format(b["id"]), report_body(*fever), tokens.patient(b["id"])),
        (path.format(c["id"]), refused, tokens.patient(c["id"])),
        (path.format(c["id"]), report_body(*fever), tokens.patient(c["id"])),
    ]
    first = (path.format(a["id"]), report_body(*fever), tokens.patient(a["id"]))
    responses, _ = send_as_group(client, first, rest)

    assert [r.status_code for r in responses] == [201, 201, 409, 201], [r.text for r in responses]
    assert responses[2].headers["content-type"] == "application/problem+json"
    assert [_stored(client, p["id"]) for p in (a, b, c)] == [1, 1, 1]
    # The reports written again raised their alerts once, with one event each.
    for response in (responses[1], responses[3]):
        assert response.json()["alerts"], response.text
        for alert in response.json()["alerts"]:
            events = client.get(f"/v1/alerts/{alert['id']}/events", headers=tokens.admin())
            assert [e["action"] for e in events.json()["items"]] == ["raised"], events.text
