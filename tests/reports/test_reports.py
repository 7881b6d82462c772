from __future__ import annotations

import itertools
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from api.reports.models import Report
from tests.conftest import Tokens, World, db_execute, post_batch, report_body
from tests.live_server import live_server

NOW = datetime.now(UTC)


def post(
    client: TestClient, tokens: Tokens, patient_id: str, body: dict[str, Any]
) -> httpx.Response:
    return client.post(
        f"/v1/patients/{patient_id}/reports", json=body, headers=tokens.patient(patient_id)
    )


def stored_count(client: TestClient, patient_id: str) -> int:
    [(count,)] = db_execute(
        client,
        select(func.count()).select_from(Report).where(Report.patient_id == uuid.UUID(patient_id)),
    )
    return count


def test_a_report_is_stored_and_returned(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient(drugs=("interferon_alfa_2b",))
    body = report_body(
        {"fever": 1, "fatigue": 2},
        {"temperature_c": 37.4, "heart_rate": 80},
        recorded_at=datetime(2026, 11, 26, 8, 5, tzinfo=timezone(timedelta(hours=1))),
        note="felt tired",
    )
    response = post(client, tokens, patient["id"], body)
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["patient_id"] == patient["id"]
    assert stored["client_report_id"] == body["client_report_id"]
    assert stored["recorded_at"] == "2026-11-26T07:05:00Z"  # the server writes UTC
    assert stored["received_at"].endswith("Z")
    assert {s["code"]: s["grade"] for s in stored["symptoms"]} == {"fever": 1, "fatigue": 2}
    assert stored["vitals"] == {"temperature_c": 37.4, "heart_rate": 80}
    assert stored["note"] == "felt tired"
    assert stored["alerts"] == [] and stored["advice"] is None

    listed = client.get(
        f"/v1/patients/{patient['id']}/reports", headers=tokens.patient(patient["id"])
    ).json()
    assert [r["id"] for r in listed["items"]] == [stored["id"]]


def test_grade_zero_alone_is_a_valid_report(world: World) -> None:
    patient = world.patient()
    assert world.report(patient["id"], {"fever": 0})["symptoms"] == [
        {"code": "fever", "grade": 0, "note": None}
    ]


INVALID = [
    ("unknown code", {"symptoms": [{"code": "hiccups", "grade": 1}]},
     ["body", "symptoms", 0, "code"]),
    ("code twice", {"symptoms": [{"code": "fever", "grade": 1}, {"code": "fever", "grade": 2}]},
     ["body", "symptoms"]),
    ("grade 5", {"symptoms": [{"code": "fever", "grade": 5}]}, ["body", "symptoms", 0, "grade"]),
    ("grade -1", {"symptoms": [{"code": "fever", "grade": -1}]}, ["body", "symptoms", 0, "grade"]),
    ("grade as text", {"symptoms": [{"code": "fever", "grade": "2"}]},
     ["body", "symptoms", 0, "grade"]),
    ("temperature 46", {"vitals": {"temperature_c": 46}}, ["body", "vitals", "temperature_c"]),
    ("temperature 29.9", {"vitals": {"temperature_c": 29.9}}, ["body", "vitals", "temperature_c"]),
    ("systolic 39", {"vitals": {"systolic_bp": 39}}, ["body", "vitals", "systolic_bp"]),
    ("systolic 301", {"vitals": {"systolic_bp": 301}}, ["body", "vitals", "systolic_bp"]),
    ("diastolic 19", {"vitals": {"diastolic_bp": 19}}, ["body", "vitals", "diastolic_bp"]),
    ("heart rate 251", {"vitals": {"heart_rate": 251}}, ["body", "vitals", "heart_rate"]),
    ("weight 1.9", {"vitals": {"weight_kg": 1.9}}, ["body", "vitals", "weight_kg"]),
    ("spo2 101", {"vitals": {"spo2": 101}}, ["body", "vitals", "spo2"]),
    ("spo2 49", {"vitals": {"spo2": 49}}, ["body", "vitals", "spo2"]),
    ("unknown vital", {"vitals": {"glucose": 5}}, ["body", "vitals", "glucose"]),
    ("empty report", {"symptoms": [], "vitals": {}}, ["body"]),
    ("naive time", {"recorded_at": "2026-11-27T08:05:00"}, ["body", "recorded_at"]),
    ("future time", {"recorded_at": (NOW + timedelta(days=1)).isoformat()},
     ["body", "recorded_at"]),
    ("bad key", {"client_report_id": "not-a-uuid"}, ["body", "client_report_id"]),
    ("note too long", {"note": "x" * 2001}, ["body", "note"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "loc"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_reports_are_422_naming_the_field(
    world: World, client: TestClient, tokens: Tokens, case: str, change: dict, loc: list
) -> None:
    patient = world.patient()
    body = {**report_body({"fever": 1}), **change}
    response = post(client, tokens, patient["id"], body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert loc in [e["loc"] for e in response.json()["errors"]], response.json()
    assert stored_count(client, patient["id"]) == 0


def test_up_to_five_minutes_ahead_is_accepted(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    # Phone clocks drift; CLINICAL/API allow up to 5 minutes into the future.
    patient = world.patient()
    body = report_body({"fever": 1}, recorded_at=datetime.now(UTC) + timedelta(minutes=4))
    assert post(client, tokens, patient["id"], body).status_code == 201


def test_replay_is_idempotent(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    body = report_body({"fever": 2}, {"systolic_bp": 85})
    first = post(client, tokens, patient["id"], body)
    assert first.status_code == 201
    again = post(client, tokens, patient["id"], body)
    assert again.status_code == 200
    assert again.json() == first.json()  # same report, same alerts and advice
    assert again.json()["advice"]["severity"] == "emergency"
    assert stored_count(client, patient["id"]) == 1

    changed = {**body, "symptoms": [{"code": "fever", "grade": 3}]}
    conflict = post(client, tokens, patient["id"], changed)
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert stored_count(client, patient["id"]) == 1


@pytest.mark.committed
def test_twenty_concurrent_identical_posts_store_one_report(
    world: World, client: TestClient, database_url: str
) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    body = report_body({"fever": 3}, {"systolic_bp": 85})
    headers = world.tokens.patient(patient["id"])
    url = f"/v1/patients/{patient['id']}/reports"
    with (
        live_server(database_url) as base,
        httpx.Client(base_url=base, timeout=30) as http,
        ThreadPoolExecutor(max_workers=20) as pool,
    ):
        responses = list(pool.map(lambda _: http.post(url, json=body, headers=headers), range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], statuses
    assert len({r.json()["id"] for r in responses}) == 1
    assert stored_count(client, patient["id"]) == 1
    alerts = client.get(
        f"/v1/alerts?patient_id={patient['id']}", headers=world.tokens.admin()
    ).json()["items"]
    assert {a["occurrences"] for a in alerts} == {1}


def test_batch_with_mixed_items(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient()
    good = report_body({"fever": 1})
    existing = report_body({"nausea": 1})
    world.client.post(
        f"/v1/patients/{patient['id']}/reports",
        json=existing,
        headers=tokens.patient(patient["id"]),
    )
    bad_grade = report_body({"fever": 9})
    unknown = report_body({"hiccups": 1})
    conflicting = {**existing, "symptoms": [{"code": "nausea", "grade": 2}]}
    items = [good, bad_grade, existing, conflicting, {"garbage": True}, unknown]
    results = post_batch(client, tokens, patient["id"], items)
    assert [r["status"] for r in results] == [
        "created", "rejected", "duplicate", "rejected", "rejected", "rejected"
    ]  # fmt: skip
    assert [r["client_report_id"] for r in results[:4]] == [
        good["client_report_id"],
        bad_grade["client_report_id"],
        existing["client_report_id"],
        existing["client_report_id"],
    ]
    assert results[0]["report_id"] and results[2]["report_id"]
    assert ["symptoms", 0, "grade"] in [e["loc"] for e in results[1]["errors"]]
    assert results[4]["client_report_id"] is None and results[4]["errors"]
    assert results[5]["errors"][0]["loc"] == ["symptoms", 0, "code"]
    assert stored_count(client, patient["id"]) == 2


def test_batch_is_evaluated_in_recorded_order(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    # Sent newest first (as a phone flushing a queue might): worsening must still compare
    # Monday's grade 3 with Sunday's grade 0, not the other way round.
    patient = world.patient()
    sunday = datetime.now(UTC) - timedelta(days=2)
    monday = sunday + timedelta(days=1)
    reports = [
        report_body({"rash": 3}, recorded_at=monday),
        report_body({"rash": 0}, recorded_at=sunday),
    ]
    response = client.post(
        f"/v1/patients/{patient['id']}/reports/batch",
        json={"reports": reports},
        headers=tokens.patient(patient["id"]),
    )
    assert [r["status"] for r in response.json()["results"]] == ["created", "created"]
    alerts = client.get(f"/v1/alerts?patient_id={patient['id']}", headers=tokens.admin()).json()
    rules = {a["rule_id"]: a for a in alerts["items"]}
    assert set(rules) == {"worsening", "severe-symptom"}
    assert rules["worsening"]["report_id"] == response.json()["results"][0]["report_id"]


def test_batch_limits(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient()
    url = f"/v1/patients/{patient['id']}/reports/batch"
    headers = tokens.patient(patient["id"])
    too_many = {"reports": [report_body({"fever": 0}) for _ in range(101)]}
    response = client.post(url, json=too_many, headers=headers)
    assert response.status_code in (413, 422)
    assert client.post(url, json={"reports": []}, headers=headers).status_code == 422


def test_history_pages_newest_first_without_repeats_while_reports_arrive(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient()
    start = datetime.now(UTC) - timedelta(days=1)
    for i in range(7):
        world.report(patient["id"], {"fatigue": 1}, recorded_at=start + timedelta(hours=i))
    headers = tokens.patient(patient["id"])
    url = f"/v1/patients/{patient['id']}/reports"
    seen: list[str] = []
    page = client.get(url, params={"limit": 3}, headers=headers).json()
    while True:
        seen += [r["recorded_at"] for r in page["items"]]
        # A new report arrives between pages (newer than everything): it must not shift pages.
        world.report(patient["id"], {"fatigue": 1})
        if page["next_cursor"] is None:
            break
        page = client.get(
            url, params={"limit": 3, "cursor": page["next_cursor"]}, headers=headers
        ).json()
    assert len(seen) == 7 and len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)

    window = client.get(
        url,
        params={
            "since": (start + timedelta(hours=2)).isoformat(),
            "until": (start + timedelta(hours=4)).isoformat(),
        },
        headers=headers,
    ).json()
    assert len(window["items"]) == 2
    assert client.get(url, params={"cursor": "garbage"}, headers=headers).status_code == 422
    assert client.get(url, params={"limit": 201}, headers=headers).status_code == 422


def _statements(client: TestClient, send) -> list[str]:  # type: ignore[no-untyped-def]
    """Statements sent to the database while ``send`` runs, on the app's engine."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        # Left out: the live feed's own reads, and the savepoints of a rolled-back test.
        if not conn.get_execution_options().get("event_hub") and not statement.startswith(
            ("SAVEPOINT", "RELEASE SAVEPOINT")
        ):
            statements.append(statement)

    engine = client.app.state.db.engine.sync_engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", count)
    try:
        send()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return statements


def _count_queries(client: TestClient, send) -> int:  # type: ignore[no-untyped-def]
    return len(_statements(client, send))


def test_a_report_costs_a_fixed_number_of_queries(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("interferon_alfa_2b", "bevacizumab"))
    world.report(patient["id"], {"fatigue": 1})  # some history for the trend rules

    def send(symptoms: dict[str, int]) -> int:
        body = report_body(symptoms, {"temperature_c": 37.0, "systolic_bp": 120, "weight_kg": 70})
        return _count_queries(client, lambda: post(client, tokens, patient["id"], body))

    one = send({"fatigue": 1})
    three = send({"fatigue": 1, "nausea": 1, "headache": 1})
    eight = send(
        {
            c: 1
            for c in (
                "fatigue",
                "nausea",
                "headache",
                "rash",
                "chills",
                "diarrhea",
                "dizziness",
                "sore_throat",
            )
        }
    )
    assert one == three == eight, (one, three, eight)
    assert 3 <= three <= 9, three


def test_a_group_reads_what_it_needs_in_two_round_trips(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """The patients and their therapies (locked), then in one statement the stored keys, the
    trend rules' grades and the course baselines' weights, then the open alerts of the rules
    that fired; then the writes, on PostgreSQL one statement for the reports, their symptoms,
    their alerts and the audit rows, and one for the alert events."""
    patient = world.patient(drugs=("aldesleukin",))  # a course, begun 3 days ago
    now = datetime.now(UTC)
    world.report(patient["id"], {"fatigue": 1}, {"weight_kg": 70}, now - timedelta(days=4))
    start = now - timedelta(hours=3)
    retried = report_body({"fatigue": 2}, {"weight_kg": 71}, recorded_at=start)
    assert post(client, tokens, patient["id"], retried).status_code == 201
    items = [retried] + [
        report_body(
            {"fatigue": 2, "swelling": 1},
            {"weight_kg": 72 + i},
            recorded_at=start + timedelta(hours=i),
        )
        for i in (1, 2)
    ]

    results: list[dict[str, Any]] = []
    statements = _statements(
        client, lambda: results.extend(post_batch(client, tokens, patient["id"], items))
    )

    assert [r["status"] for r in results] == ["duplicate", "created", "created"], results
    reads = list(
        itertools.takewhile(lambda s: not s.startswith(("INSERT", "WITH", "UPDATE")), statements)
    )
    assert len(reads) == 3, reads
    assert "FROM patients LEFT OUTER JOIN therapies" in reads[0]
    assert reads[1].count("UNION ALL") >= 3, reads[1]  # keys, grades (2), weights
    assert "FROM alerts" in reads[2], reads[2]
    if client.app.state.db.dialect == "postgresql":  # type: ignore[attr-defined]
        [write, events] = statements[len(reads) :]
        tables = ("reports", "report_symptoms", "alerts", "audit_events")
        assert all(f"INSERT INTO {table} " in write for table in tables), write
        # Last, on their own: the events, with the ordering lock held from there to the commit.
        assert "alert_events" not in write, write
        assert "pg_advisory_xact_lock" in events and "INSERT INTO alert_events" in events, events
    # 74 kg is 5.7 % over the pre-dose weight, read with the rest: an urgent weight alert.
    alerts = client.get(f"/v1/alerts?patient_id={patient['id']}", headers=tokens.admin()).json()
    [weight] = [a for a in alerts["items"] if a["rule_id"] == "cls-weight"]
    assert weight["severity"] == "urgent", weight
    assert weight["evidence"]["baseline"]["source"] == "pre_dose", weight["evidence"]
    assert weight["evidence"]["baseline_weight_kg"] == 70, weight["evidence"]


def test_the_context_read_is_one_statement_text_for_every_group(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """The database prepares the context read once: its lists are bound as one value each
    (arrays on PostgreSQL, JSON documents on SQLite), so a report without a course baseline and
    a batch with weights over a course read with the same text."""
    patient = world.patient(drugs=("aldesleukin",))
    now = datetime.now(UTC)

    def context_read(send) -> str:  # type: ignore[no-untyped-def]
        reads = [s for s in _statements(client, send) if "AS kind" in s]
        assert len(reads) == 1, reads
        return reads[0]

    plain = context_read(lambda: post(client, tokens, patient["id"], report_body({"fatigue": 1})))
    items = [
        report_body({"fatigue": 2}, {"weight_kg": 70 + i}, recorded_at=now - timedelta(hours=i))
        for i in range(1, 4)
    ]
    weighed = context_read(lambda: post_batch(client, tokens, patient["id"], items))
    assert plain == weighed


def test_sqlite_finds_a_reports_symptoms_by_its_id_then_keeps_the_groups_codes(
    world: World, client: TestClient, tokens: Tokens, is_postgres: bool
) -> None:
    """Searched by (report, code) for each code of the group, a report of two or three symptoms
    cost twenty-odd index searches: the context read took 8.5 ms a group of 20 at 1M reports,
    against 5 ms searched by the report alone. (On PostgreSQL, filtering after the search
    measured no faster: its statement is left as it was.)"""
    if is_postgres:
        pytest.skip("SQLite's query plan; PostgreSQL reads the context with another statement")
    patient = world.patient(drugs=("aldesleukin",))
    world.report(patient["id"], {"fatigue": 1, "nausea": 1})
    reads = [
        s
        for s in _statements(
            client,
            lambda: post(client, tokens, patient["id"], report_body({"fatigue": 2, "nausea": 2})),
        )
        if "AS kind" in s
    ]
    assert len(reads) == 1, reads

    async def plan() -> list[str]:
        async with client.app.state.db.write() as session:  # type: ignore[attr-defined]
            conn = await session.connection()
            found = await conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {reads[0]}", ("[]",) * reads[0].count("?")
            )
            return [row[3] for row in found]

    symptoms = [
        step
        for step in client.portal.call(plan)
        if "report_symptoms" in step  # type: ignore[union-attr]
    ]
    assert symptoms, "the context read no longer reads report_symptoms"
    assert all("(report_id=?)" in step for step in symptoms), symptoms


def _generic_plan(client: TestClient, statement: str) -> list[str]:
    """PostgreSQL's generic plan of ``statement`` as captured (``%(name)s`` parameters): the
    plan a prepared statement runs on once it has run five times, whatever the values."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", statement)

    async def plan() -> list[str]:
        async with client.app.state.db.write() as session:  # type: ignore[attr-defined]
            conn = await session.connection()
            await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.exec_driver_sql(f"PREPARE planned AS {numbered}")
            try:
                found = await conn.exec_driver_sql(
                    "EXPLAIN (VERBOSE, COSTS OFF) EXECUTE planned"
                    f"({', '.join(['NULL'] * len(names))})"
                )
                return [row[0] for row in found]
            finally:
                await conn.exec_driver_sql("DEALLOCATE planned")

    steps: list[str] = client.portal.call(plan)
    return steps


def test_postgres_compares_the_groups_codes_without_casting_them_row_by_row(
    world: World, client: TestClient, tokens: Tokens, is_postgres: bool
) -> None:
    """The context read is a prepared statement, which PostgreSQL plans once for all values (a
    generic plan). Bound as varchar[], the group's codes were cast to varchar(64)[], varchar[]
    and text[] for every symptom row compared: 5.7 % of the backends' CPU at 1M reports. The
    open episodes' read matched its rule ids the same way."""
    if not is_postgres:
        pytest.skip("PostgreSQL's generic plan; SQLite expands its lists in the statement")
    patient = world.patient(drugs=("aldesleukin",))
    world.report(patient["id"], {"fatigue": 1, "nausea": 1})
    body = report_body({"fatigue": 2, "nausea": 2}, {"systolic_bp": 85})  # cls-hypotension
    sent = _statements(client, lambda: post(client, tokens, patient["id"], body))
    [context] = [s for s in sent if "AS kind" in s]
    [episodes] = [s for s in sent if s.startswith("SELECT") and "FROM alerts" in s]
    for statement, column in ((context, "symptom_code"), (episodes, "rule_id")):
        compared = [
            line for line in _generic_plan(client, statement) if column in line and "ANY" in line
        ]
        assert compared, f"the statement no longer compares {column}"
        # A parameter compared as it was bound reads "= ANY ($2)"; cast, "(($2)::...".
        assert not any(re.search(r"\(\$\d+\)::", line) for line in compared), compared


def test_new_reports_and_alerts_get_time_ordered_ids(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """UUIDv7: a new row goes to the end of its primary key's index, not to a random page."""
    patient = world.patient(drugs=("aldesleukin",))
    answers = []
    for systolic in (84, 120):  # the first raises cls-hypotension
        created = post(client, tokens, patient["id"], report_body({}, {"systolic_bp": systolic}))
        assert created.status_code == 201, created.text
        answers.append(created.json())
        time.sleep(0.002)  # the next millisecond
    ids = [uuid.UUID(answer["id"]) for answer in answers]
    [alert] = answers[0]["alerts"]
    assert [i.version for i in ids] == [7, 7]
    assert uuid.UUID(alert["id"]).version == 7
    assert ids[0] < ids[1]


def test_a_batch_costs_the_same_queries_for_one_report_or_many(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    world.report(patient["id"], {"fatigue": 1}, {"weight_kg": 70})
    start = datetime.now(UTC) - timedelta(hours=30)

    def send(n: int) -> int:
        items = [
            report_body(
                {"fever": 3, "fatigue": 1 + i % 2},
                {"temperature_c": 39.0, "weight_kg": 70 + i % 2},
                recorded_at=start + timedelta(minutes=len(sent) + i),
            )
            for i in range(n)
        ]
        sent.extend(items)

        def send_all() -> None:
            results = post_batch(client, tokens, patient["id"], items)
            assert [r["status"] for r in results] == ["created"] * n

        return _count_queries(client, send_all)

    sent: list[dict] = []
    send(1)  # opens the episodes the next batches re-trigger
    one, many = send(1), send(40)
    assert one == many, (one, many)
    assert 4 <= many <= 12, many


def test_a_groups_rows_go_into_each_table_in_one_statement(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """Forty reports with their symptoms, alerts, events and audit rows: one INSERT a table. On
    PostgreSQL they are two statements, the events last and on their own, each table's rows one
    JSON document (not the driver's executemany, one statement a row); SQLite's executemany runs
    inside the process."""
    patient = world.patient(drugs=("aldesleukin",))
    start = datetime.now(UTC) - timedelta(hours=2)
    items = [
        report_body({"fever": 3, "chills": 1}, {"temperature_c": 39.5}, recorded_at=start)
        for start in (start + timedelta(minutes=i) for i in range(40))
    ]
    inserts: list[tuple[list[str], bool]] = []  # the tables of each statement that inserts

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if tables := re.findall(r"INSERT INTO (\w+)", statement):
            inserts.append((tables, executemany))

    engine = client.app.state.db.engine.sync_engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", record)
    try:
        results = post_batch(client, tokens, patient["id"], items)
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert [r["status"] for r in results] == ["created"] * 40
    tables = [table for found, _ in inserts for table in found]
    assert sorted(tables) == sorted(
        ["reports", "report_symptoms", "alerts", "alert_events", "audit_events"]
    ), inserts
    if engine.dialect.name == "postgresql":
        assert [found[-1] for found, _ in inserts] == ["audit_events", "alert_events"], inserts
        assert not any(many for _, many in inserts), inserts
    reports = client.get(f"/v1/patients/{patient['id']}/reports?limit=50", headers=tokens.admin())
    assert len(reports.json()["items"]) == 40
    assert all(len(r["symptoms"]) == 2 for r in reports.json()["items"])


def test_what_a_group_writes_reads_back_exactly(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """On PostgreSQL a group's rows travel as one JSON document: text that JSON or the
    database must escape, fractional vitals, microseconds and an alert's evidence all read back
    from the database as they were sent."""
    patient = world.patient(drugs=("aldesleukin",))
    awkward = 'said "NULL", {a,b} \\x\\ back\\slash\ttab\nnew line, ünïcode ✓ '
    recorded = (datetime.now(UTC) - timedelta(minutes=3)).replace(microsecond=123456)
    body = report_body(
        {"fever": 3, "chills": 1},
        {"temperature_c": 39.55, "weight_kg": 71.25, "systolic_bp": 101.5},
        recorded_at=recorded,
        note=awkward,
    )
    body["symptoms"][0]["note"] = "NULL"
    body["symptoms"][1]["note"] = ""
    response = post(client, tokens, patient["id"], body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["alerts"], "a grade 3 fever with 39.55 °C raises an alert"

    [stored] = client.get(
        f"/v1/patients/{patient['id']}/reports", headers=tokens.patient(patient["id"])
    ).json()["items"]
    assert stored["note"] == awkward
    assert stored["recorded_at"] == recorded.isoformat().replace("+00:00", "Z")
    assert stored["vitals"] == {"temperature_c": 39.55, "weight_kg": 71.25, "systolic_bp": 101.5}
    assert sorted(stored["symptoms"], key=lambda s: s["code"]) == [
        {"code": "chills", "grade": 1, "note": ""},
        {"code": "fever", "grade": 3, "note": "NULL"},
    ]
    assert {k: v for k, v in stored.items() if k != "symptoms"} == {
        k: created[k] for k in stored if k != "symptoms"
    }
    for alert in created["alerts"]:
        read = client.get(f"/v1/alerts/{alert['id']}", headers=tokens.admin()).json()
        assert read["evidence"] == alert["evidence"] and read["detail"] == alert["detail"]
        events = client.get(f"/v1/alerts/{alert['id']}/events", headers=tokens.admin()).json()
        assert [e["action"] for e in events["items"]] == ["raised"], events


def test_each_report_of_a_batch_over_two_courses_is_weighed_against_its_own_course(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    """A group's context reads two baseline weights a course, for every course its reports
    fall in."""
    patient = world.patient()
    now = datetime.now(UTC)
    day = now.date()
    world.therapy(
        patient["id"], "aldesleukin", str(day - timedelta(days=30)), str(day - timedelta(days=25))
    )
    world.therapy(patient["id"], "aldesleukin", str(day - timedelta(days=3)))
    world.report(patient["id"], {"fatigue": 0}, {"weight_kg": 60}, now - timedelta(days=32))
    world.report(patient["id"], {"fatigue": 0}, {"weight_kg": 61}, now - timedelta(days=29))
    world.report(patient["id"], {"fatigue": 0}, {"weight_kg": 70}, now - timedelta(days=5))
    items = [
        report_body({"fatigue": 0}, {"weight_kg": 63.5}, recorded_at=now - timedelta(days=28)),
        report_body({"fatigue": 0}, {"weight_kg": 74}, recorded_at=now - timedelta(hours=2)),
    ]

    results = post_batch(client, tokens, patient["id"], items)

    assert [r["status"] for r in results] == ["created", "created"], results
    headers = tokens.admin()
    alerts = client.get(f"/v1/alerts?patient_id={patient['id']}", headers=headers).json()
    [weight] = [a for a in alerts["items"] if a["rule_id"] == "cls-weight"]
    events = client.get(f"/v1/alerts/{weight['id']}/events", headers=headers).json()["items"]
    # Each report against its own course's pre-dose weight: 63.5 over 60, 74 over 70 (5.7 %
    # each, urgent); 74 over 60 would have been an emergency.
    mine = [r["report_id"] for r in results]
    assert [e["severity"] for e in events if e["report_id"] in mine] == ["urgent", "urgent"], events


def _alert_picture(client: TestClient, tokens: Tokens, patient_id: str) -> list[tuple]:
    """The patient's alerts, with report ids replaced by the reports' client ids."""
    headers = tokens.admin()
    keys = {
        r["id"]: r["client_report_id"]
        for r in client.get(f"/v1/patients/{patient_id}/reports?limit=200", headers=headers).json()[
            "items"
        ]
    }
    picture = []
    for alert in client.get(
        f"/v1/alerts?patient_id={patient_id}&limit=200", headers=headers
    ).json()["items"]:
        events = client.get(f"/v1/alerts/{alert['id']}/events", headers=headers).json()["items"]
        picture.append(
            (
                alert["rule_id"],
                alert["severity"],
                alert["status"],
                alert["occurrences"],
                alert["title"],
                alert["evidence"],
                keys[alert["report_id"]],
                [(e["action"], keys[e["report_id"]], e["severity"]) for e in events],
            )
        )
    return sorted(picture, key=repr)


def test_a_batch_stores_what_the_same_reports_posted_one_by_one_store(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    # Everything a batch evaluates in memory (trend look-back, first-weight baseline, folding
    # re-triggers into open episodes, repeated keys) must come out as sequential posts would.
    one_by_one = world.patient(drugs=("aldesleukin", "bevacizumab"))
    batched = world.patient(drugs=("aldesleukin", "bevacizumab"))
    start = datetime.now(UTC) - timedelta(days=2)
    for patient in (one_by_one, batched):  # stored history the batch must see
        world.report(patient["id"], {"rash": 0}, {"weight_kg": 70}, recorded_at=start)
    bodies = [
        report_body(symptoms, vitals, recorded_at=start + timedelta(hours=h))
        for h, symptoms, vitals in [
            (1, {"rash": 1, "nausea": 1}, {"weight_kg": 71}),
            (2, {"rash": 3}, {"temperature_c": 38.2}),
            (3, {"fever": 2}, {"temperature_c": 38.6, "weight_kg": 74}),
            (4, {"nausea": 3, "diarrhea": 3}, {"systolic_bp": 85}),
            (5, {"rash": 2}, {"weight_kg": 78}),
            (6, {}, {"temperature_c": 39.5, "systolic_bp": 80}),
            (7, {"fatigue": 1}, None),
        ]
    ]
    repeat = {**bodies[1]}  # the same key twice in one batch: stored once
    conflicting = {**bodies[2], "note": "changed"}  # same key, another body: rejected
    for body in bodies:
        response = client.post(
            f"/v1/patients/{one_by_one['id']}/reports",
            json=body,
            headers=tokens.patient(one_by_one["id"]),
        )
        assert response.status_code == 201, response.text
    shuffled = [bodies[i] for i in (6, 3, 0, 5, 1, 4, 2)] + [repeat, conflicting]
    results = post_batch(client, tokens, batched["id"], shuffled)
    assert [r["status"] for r in results] == ["created"] * 7 + ["duplicate", "rejected"]
    assert results[7]["report_id"] == results[4]["report_id"]

    expected = _alert_picture(client, tokens, one_by_one["id"])
    assert {a[0] for a in expected} >= {"fever", "severe-symptom", "worsening", "cls-weight"}
    assert _alert_picture(client, tokens, batched["id"]) == expected
    # Replays answer with the advice each report got when it was stored.
    for body in bodies:
        answers = [
            client.post(
                f"/v1/patients/{p['id']}/reports", json=body, headers=tokens.patient(p["id"])
            ).json()
            for p in (one_by_one, batched)
        ]
        assert answers[0]["advice"] == answers[1]["advice"]
