"""GET /v1/alerts/stream across processes: two uvicorn servers on one database; a report
stored through one reaches a stream held by the other."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens, World, report_body
from tests.notifications.live import Stream, uvicorn, wait_for
from tests.notifications.test_webhooks import DANGER


@pytest.fixture
def servers(client: TestClient, database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two servers (2 workers each): streams on the first, writes through the second."""
    with (
        uvicorn(database_url, tmp_path, WORKER_MODE="off") as first,
        uvicorn(database_url, tmp_path, WORKER_MODE="off") as second,
    ):
        yield first, second


def report_via(base: str, tokens: Tokens, patient_id: str) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/v1/patients/{patient_id}/reports",
        json=report_body(vitals=DANGER),
        headers=tokens.patient(patient_id),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def act_via(base: str, tokens: Tokens, alert_id: str, action: str, body: Any = None) -> None:
    response = httpx.post(
        f"{base}/v1/alerts/{alert_id}/{action}",
        json=body,
        headers=tokens.clinician("onc-a"),
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_a_stream_gets_alerts_raised_through_another_process_within_2_s(
    world: World, tokens: Tokens, servers: tuple[str, str]
) -> None:
    first, second = servers
    patient = world.patient("onc-a")
    with (
        Stream(first, tokens.clinician("onc-a")) as mine,
        Stream(first, tokens.clinician("onc-b", sub="nurse-b")) as other_team,
        Stream(first, tokens.admin()) as admin,
    ):
        assert mine.status == other_team.status == admin.status == 200
        wait_for(lambda: mine.comments and other_team.comments, 5, "heartbeats")
        sent = time.monotonic()
        created = report_via(second, tokens, patient["id"])
        wait_for(lambda: mine.events, 2, "the event on the stream")
        assert time.monotonic() - sent < 2
        wait_for(lambda: len(mine.events) >= len(created["alerts"]), 2, "every alert")
        wait_for(lambda: len(admin.events) >= len(created["alerts"]), 2, "the admin's copy")
        time.sleep(1)  # a few heartbeats more: the other team still has seen nothing
        assert other_team.events == []
        assert other_team.comments >= 2

    assert {e["event"] for e in mine.events} == {"alert.raised"}
    by_alert = {json.loads(e["data"])["id"]: e for e in mine.events}
    assert set(by_alert) == {a["id"] for a in created["alerts"]}
    for event in mine.events:
        data = json.loads(event["data"])
        assert data["patient_id"] == patient["id"] and data["status"] == "open"
    ids = [int(e["id"]) for e in mine.events]
    assert ids == sorted(ids)
    assert [e["id"] for e in admin.events] == [e["id"] for e in mine.events]


def test_last_event_id_replays_exactly_the_missed_events(
    world: World, tokens: Tokens, servers: tuple[str, str]
) -> None:
    first, second = servers
    patient = world.patient("onc-a")
    with Stream(first, tokens.clinician("onc-a")) as stream:
        created = report_via(second, tokens, patient["id"])
        wait_for(lambda: len(stream.events) >= len(created["alerts"]), 2, "raised events")
        last_seen = stream.events[-1]["id"]
        before = list(stream.events)
    alert_id = created["alerts"][0]["id"]
    # Missed while disconnected: written through both processes.
    act_via(second, tokens, alert_id, "acknowledge", {"note": "calling"})
    act_via(first, tokens, alert_id, "resolve", {"note": "admitted", "outcome": "confirmed"})
    other = world.patient("onc-b")
    report_via(second, tokens, other["id"])  # another team's: not replayed to onc-a

    headers = {**tokens.clinician("onc-a"), "Last-Event-ID": last_seen}
    with Stream(first, headers) as resumed:
        wait_for(lambda: len(resumed.events) >= 2, 2, "the replay")
        wait_for(lambda: resumed.comments >= 2, 6, "heartbeats after the replay")
    assert [e["event"] for e in resumed.events] == ["alert.acknowledged", "alert.resolved"]
    assert all(int(e["id"]) > int(last_seen) for e in resumed.events)
    # The alert as the process read it, at or after the event.
    statuses = [json.loads(e["data"])["status"] for e in resumed.events]
    assert statuses[0] in ("acknowledged", "resolved") and statuses[1] == "resolved"
    assert not {e["id"] for e in before} & {e["id"] for e in resumed.events}


def test_who_may_stream(world: World, tokens: Tokens, client: TestClient) -> None:
    patient = world.patient("onc-a")
    response = client.get("/v1/alerts/stream", headers=tokens.patient(patient["id"]))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/alerts/stream").status_code == 401
    response = client.get(
        "/v1/alerts/stream", headers={**tokens.admin(), "Last-Event-ID": "not-a-number"}
    )
    assert response.status_code == 422
    assert ["header", "last-event-id"] in [e["loc"] for e in response.json()["errors"]]


def test_a_stream_ends_after_stream_max_s(world: World, tokens: Tokens, client: TestClient) -> None:
    # The test app's STREAM_MAX_S is 1 s (tests/conftest.py): the answer ends, the client would
    # reconnect with Last-Event-ID.
    patient = world.patient("onc-a")
    world.report(patient["id"], vitals=DANGER)
    started = time.monotonic()
    response = client.get("/v1/alerts/stream", headers={**tokens.admin(), "Last-Event-ID": "0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert 0.9 < time.monotonic() - started < 10
    events = [line for line in response.text.splitlines() if line.startswith("event: ")]
    assert "event: alert.raised" in events  # replayed from event 0
