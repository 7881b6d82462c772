"""When PostgreSQL goes away: 503 problem+json with Retry-After, no hang, recovery by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.db import PING_AFTER_IDLE_S
from api.main import create_app
from tests.conftest import Tokens, World, make_settings, report_body
from tests.groups import Send, send_as_group
from tests.live_server import live_server
from tests.resilience.tcp_proxy import TcpProxy


@pytest.fixture
def proxied_url(database_url: str) -> Iterator[tuple[TcpProxy, str]]:
    if not database_url.startswith("postgresql"):
        pytest.skip("a database server that can go away: runs in the PostgreSQL suite")
    url = make_url(database_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.stop()


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert "psycopg" not in response.text and "Traceback" not in response.text


@pytest.mark.postgres_only
def test_database_outage_and_recovery(
    proxied_url: tuple[TcpProxy, str], world: World, tokens: Tokens
) -> None:
    proxy, url = proxied_url
    patient = world.patient(drugs=("aldesleukin",))
    headers = tokens.patient(patient["id"])
    reports = f"/v1/patients/{patient['id']}/reports"
    # httpx's own timeout is the "no hang" bound: a request that hangs fails the test.
    with (
        live_server(url, db_pool_timeout=3) as base,
        httpx.Client(base_url=base, timeout=20) as client,
    ):
        assert client.get("/readyz").status_code == 200
        assert (
            client.post(reports, json=report_body({"fever": 1}), headers=headers).status_code == 201
        )

        proxy.stop()  # the database restarts: open connections die, new ones are refused
        assert_unavailable(client.get("/readyz"))
        assert_unavailable(client.get("/v1/drugs", headers=headers))
        lost = report_body({"fever": 2}, {"systolic_bp": 85})
        assert_unavailable(client.post(reports, json=lost, headers=headers))

        proxy.start()  # back on the same address
        assert client.get("/readyz").status_code == 200
        # The client retries the report it could not deliver: stored once, alert raised.
        retried = client.post(reports, json=lost, headers=headers)
        assert retried.status_code == 201, retried.text
        assert {a["rule_id"] for a in retried.json()["alerts"]} >= {"cls-hypotension"}
        assert client.post(reports, json=lost, headers=headers).status_code == 200


@pytest.mark.postgres_only
def test_connections_the_database_dropped_are_replaced_before_use(
    proxied_url: tuple[TcpProxy, str], world: World, tokens: Tokens
) -> None:
    """Pooled connections are pinged only after a second idle: a restart while the service is
    idle costs no request; one in the middle of busy use costs one 503, never a 500."""
    proxy, url = proxied_url
    patient = world.patient(drugs=("aldesleukin",))
    headers = tokens.patient(patient["id"])
    nurse = tokens.clinician("onc-a")
    reports = f"/v1/patients/{patient['id']}/reports"
    # One connection: every request below takes the connection the one before returned.
    with (
        live_server(url, db_pool_size=1, db_max_overflow=0) as base,
        httpx.Client(base_url=base, timeout=20) as client,
    ):
        raised = client.post(
            reports, json=report_body({"fever": 1}, {"systolic_bp": 85}), headers=headers
        )
        assert raised.status_code == 201, raised.text

        # The database restarts while the service is idle: the pooled connection is dead.
        proxy.stop()
        proxy.start()
        time.sleep(PING_AFTER_IDLE_S + 0.2)
        listed = client.get("/v1/alerts", headers=nurse)
        assert listed.status_code == 200, listed.text
        assert [a["rule_id"] for a in listed.json()["items"]] == ["cls-hypotension"]
        stored = client.post(reports, json=report_body({"fever": 2}), headers=headers)
        assert stored.status_code == 201, stored.text

        # It restarts again with the connection just back from a request: not pinged, so the
        # next request finds it dead, and gets a 503 to retry; the retry gets a new one.
        proxy.stop()
        proxy.start()
        assert_unavailable(client.get("/v1/alerts", headers=nurse))
        assert client.get("/v1/alerts", headers=nurse).status_code == 200
        again = client.post(reports, json=report_body({"fever": 3}), headers=headers)
        assert again.status_code == 201, again.text


@pytest.mark.postgres_only
def test_a_report_waiting_too_long_for_its_patient_gets_503_busy(
    database_url: str, world: World, tokens: Tokens
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks and statement timeouts: runs in the PostgreSQL suite")
    patient = world.patient()
    engine = create_engine(database_url)
    with (
        engine.connect() as holder,
        live_server(database_url, db_statement_timeout_ms=500) as base,
        httpx.Client(base_url=base, timeout=20) as client,
    ):
        # Another request holds the patient (as a long batch would).
        holder.execute(
            text("SELECT 1 FROM patients WHERE id = :id FOR UPDATE"), {"id": patient["id"]}
        )
        response = client.post(
            f"/v1/patients/{patient['id']}/reports",
            json=report_body({"fever": 1}),
            headers=tokens.patient(patient["id"]),
        )
        assert_unavailable(response)
        assert "busy" in response.json()["detail"]
        holder.rollback()
    engine.dispose()


@pytest.mark.postgres_only
def test_a_request_waiting_too_long_for_a_connection_gets_503_busy(
    database_url: str, world: World, tokens: Tokens
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks hold the only connection: runs in the PostgreSQL suite")
    held, other = world.patient(), world.patient()
    engine = create_engine(database_url)
    settings = {"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 1}
    with (
        engine.connect() as holder,
        live_server(database_url, **settings) as base,
        httpx.Client(base_url=base, timeout=20) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        # Another transaction holds the patient; the first report waits for it, on the only
        # connection the app has.
        holder.execute(text("SELECT 1 FROM patients WHERE id = :id FOR UPDATE"), {"id": held["id"]})
        first = pool.submit(
            client.post,
            f"/v1/patients/{held['id']}/reports",
            json=report_body({"fever": 1}),
            headers=tokens.patient(held["id"]),
        )
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        deadline = time.monotonic() + 10
        with engine.connect() as watcher:
            while not watcher.scalar(waiting):
                watcher.rollback()  # pg_stat_activity is read once per transaction
                assert time.monotonic() < deadline, "the first report never waited on the lock"
                time.sleep(0.02)
        # The only connection is taken: the next request waits its turn, then gets 503 busy.
        url = f"/v1/patients/{other['id']}/reports"
        body = report_body({"fever": 1})
        response = client.post(url, json=body, headers=tokens.patient(other["id"]))
        assert_unavailable(response)
        assert "busy" in response.json()["detail"]
        holder.rollback()
        assert first.result().status_code == 201
        # Nothing was stored for the refused report: the retry creates it.
        assert client.post(url, json=body, headers=tokens.patient(other["id"])).status_code == 201
    engine.dispose()


@pytest.mark.postgres_only
def test_a_lock_timeout_in_a_group_fails_only_the_report_that_waited(
    database_url: str, world: World, tokens: Tokens
) -> None:
    """The database refuses a group's transaction (a statement timeout on one patient's lock):
    each report of the group is written again on its own, and only the locked one fails."""
    first_locked, locked, b, c = (world.patient() for _ in range(4))
    path = "/v1/patients/{}/reports"

    def send(patient: dict[str, Any]) -> Send:
        return (
            path.format(patient["id"]),
            report_body({"fever": 1}),
            tokens.patient(patient["id"]),
        )

    engine = create_engine(database_url)
    settings = make_settings(database_url, db_statement_timeout_ms=500)
    app = create_app(settings)
    with (
        engine.connect() as holder,
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        for patient in (first_locked, locked):
            holder.execute(
                text("SELECT 1 FROM patients WHERE id = :id FOR UPDATE"), {"id": patient["id"]}
            )
        # The first report's group passes over its locked patient; the next three queue
        # behind it, and the first joins them at the head of a group that waits for every
        # patient: its lock wait times out, and so the whole group's transaction fails.
        responses, _ = send_as_group(client, send(first_locked), [send(b), send(locked), send(c)])
        holder.rollback()
    engine.dispose()
    assert [r.status_code for r in responses] == [503, 201, 503, 201], [r.text for r in responses]
    for response in (responses[0], responses[2]):
        assert_unavailable(response)
        assert "busy" in response.json()["detail"]
    stored = {p["id"]: 0 for p in (first_locked, locked, b, c)}
    stored.update({r.json()["patient_id"]: 1 for r in responses if r.status_code == 201})
    assert stored == {first_locked["id"]: 0, locked["id"]: 0, b["id"]: 1, c["id"]: 1}
    for patient in (first_locked, locked, b, c):
        listed = world.client.get(
            path.format(patient["id"]), headers=tokens.patient(patient["id"])
        ).json()["items"]
        assert len(listed) == stored[patient["id"]]
