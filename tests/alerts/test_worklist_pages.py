"""First pages of the worklist are kept per process (api/alerts/pages.py) while no alert event
has been written: every way the service changes an alert shows on the next first page, whichever
process made the change."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.alerts.models import Alert
from api.db import utcnow
from api.notifications.jobs import escalate_and_mark_overdue
from tests.alerts.helpers import WINDOWS
from tests.conftest import Tokens, World, db_execute, report_body
from tests.live_server import live_server

URGENT = {"spo2": 91}
EMERGENCY = {"spo2": 88}


def first_page(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/alerts", params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def listed(client: TestClient, headers: dict[str, str], alert_id: str) -> dict[str, Any]:
    (alert,) = [a for a in first_page(client, headers) if a["id"] == alert_id]
    return alert


def detail(client: TestClient, tokens: Tokens, alert_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/alerts/{alert_id}", headers=tokens.admin())
    assert response.status_code == 200, response.text
    alert: dict[str, Any] = response.json()
    del alert["report"]
    return alert


def test_the_first_page_follows_every_change_to_an_alert(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    nurse = tokens.clinician("onc-a")
    patient = world.patient("onc-a")
    assert first_page(client, nurse) == []

    alert_id = world.report(patient["id"], vitals=URGENT)["alerts"][0]["id"]
    assert listed(client, nurse, alert_id) == detail(client, tokens, alert_id)
    assert listed(client, nurse, alert_id)["occurrences"] == 1

    world.report(patient["id"], vitals=URGENT)  # re-triggered
    assert listed(client, nurse, alert_id)["occurrences"] == 2

    world.report(patient["id"], vitals=EMERGENCY)  # severity raised
    assert listed(client, nurse, alert_id)["severity"] == "emergency"

    async def escalate() -> int:
        async with client.app.state.db.write() as session:  # type: ignore[attr-defined]
            conn = await session.connection()
            return await escalate_and_mark_overdue(conn, utcnow() + timedelta(days=4), WINDOWS)

    assert client.portal.call(escalate) == 2  # type: ignore[union-attr]
    escalated = listed(client, nurse, alert_id)
    assert escalated["escalated_at"] is not None
    assert escalated["overdue_at"] is not None

    for action, status in (("acknowledge", "acknowledged"), ("resolve", "resolved")):
        body = {"note": "seen", "outcome": "confirmed"} if action == "resolve" else {}
        response = client.post(f"/v1/alerts/{alert_id}/{action}", json=body, headers=nurse)
        assert response.status_code == 200, response.text
        assert listed(client, nurse, alert_id)["status"] == status
        assert listed(client, nurse, alert_id) == detail(client, tokens, alert_id)


def test_a_page_is_served_from_memory_until_an_alert_event_is_written(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    nurse = tokens.clinician("onc-a")
    alert_id = world.report(world.patient("onc-a")["id"], vitals=URGENT)["alerts"][0]["id"]
    title = listed(client, nurse, alert_id)["title"]

    # A write that bypasses the service (no event) is not seen: the page was kept...
    edit = update(Alert).where(Alert.id == uuid.UUID(alert_id)).values(title="edited by hand")
    db_execute(client, edit)
    assert listed(client, nurse, alert_id)["title"] == title
    # ...by request: another page size reads the database.
    assert [a["title"] for a in first_page(client, nurse, limit=10)] == ["edited by hand"]

    response = client.post(f"/v1/alerts/{alert_id}/acknowledge", json={}, headers=nurse)
    assert response.status_code == 200, response.text
    assert listed(client, nurse, alert_id)["title"] == "edited by hand"


def test_pages_are_kept_per_team_and_filter(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    a = world.report(world.patient("onc-a")["id"], vitals=URGENT)["alerts"][0]["id"]
    b = world.report(world.patient("onc-b")["id"], vitals=EMERGENCY)["alerts"][0]["id"]

    def ids(headers: dict[str, str], **params: Any) -> list[str]:
        return [alert["id"] for alert in first_page(client, headers, **params)]

    for _ in range(2):
        assert ids(tokens.clinician("onc-a")) == [a]
        assert ids(tokens.clinician("onc-b")) == [b]
        assert ids(tokens.clinician("onc-a", "onc-b")) == [b, a]
        assert ids(tokens.admin()) == [b, a]
        assert ids(tokens.admin(), team="onc-a") == [a]
        assert ids(tokens.admin(), severity="urgent") == [a]
        assert ids(tokens.admin(), status="acknowledged") == []
        assert ids(tokens.admin(), limit=1) == [b]


@pytest.mark.committed
def test_a_change_made_by_another_process_shows_on_the_next_first_page(
    world: World, client: TestClient, tokens: Tokens, database_url: str
) -> None:
    nurse = tokens.clinician("onc-a")
    patient = world.patient("onc-a")
    alert_id = world.report(patient["id"], vitals=URGENT)["alerts"][0]["id"]
    assert listed(client, nurse, alert_id)["status"] == "open"

    # Another app, with its own kept pages and its own connections: another worker.
    with live_server(database_url) as base_url, httpx.Client(base_url=base_url) as other:
        response = other.post(f"/v1/alerts/{alert_id}/acknowledge", json={}, headers=nurse)
        assert response.status_code == 200, response.text
        assert listed(client, nurse, alert_id)["status"] == "acknowledged"

        response = other.post(
            f"/v1/patients/{patient['id']}/reports",
            json=report_body(vitals=EMERGENCY),
            headers=tokens.patient(patient["id"]),
        )
        assert response.status_code == 201, response.text
        assert listed(client, nurse, alert_id)["severity"] == "emergency"
