"""Escalation and overdue marks, by the job loop of a live uvicorn with 2 workers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from standardwebhooks import Webhook as Verifier

from api.alerts.models import Alert
from tests.conftest import Tokens, World, engine_of
from tests.notifications.live import Receiver, uvicorn, wait_for
from tests.notifications.test_webhooks import DANGER, subscribe


def alert_of(client: TestClient, tokens: Tokens, alert_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/alerts/{alert_id}", headers=tokens.admin())
    assert response.status_code == 200, response.text
    return response.json()


def actions(client: TestClient, tokens: Tokens, alert_id: str) -> list[str]:
    response = client.get(f"/v1/alerts/{alert_id}/events", headers=tokens.admin())
    return [e["action"] for e in response.json()["items"]]


def test_unacknowledged_emergency_is_escalated_exactly_once(
    world: World, client: TestClient, tokens: Tokens, database_url: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        with uvicorn(database_url, tmp_path, WORKER_MODE="inline", ACK_WINDOW_EMERGENCY_S="2"):
            hook = subscribe(client, tokens, receiver.url, events=["alert.escalated"])
            # Acknowledged in time: never escalated, though it was raised first (due first).
            seen = world.report(world.patient("onc-a")["id"], vitals=DANGER)["alerts"]
            for alert in seen:
                response = client.post(
                    f"/v1/alerts/{alert['id']}/acknowledge", headers=tokens.clinician("onc-a")
                )
                assert response.status_code == 200
            time.sleep(0.1)
            ignored = world.report(world.patient("onc-a")["id"], vitals=DANGER)["alerts"]
            assert {a["severity"] for a in ignored} == {"emergency"}
            raised_at = time.monotonic()
            for alert in ignored:
                wait_for(
                    lambda a=alert: alert_of(client, tokens, a["id"])["escalated_at"],
                    5,
                    "escalation",
                )
            assert time.monotonic() - raised_at >= 1.5  # not before its window
            wait_for(lambda: len(receiver.received) >= len(ignored), 2, "the webhooks")
            time.sleep(1.5)  # several more ticks of both workers' job loops
    finally:
        receiver.stop()

    for alert in ignored:
        assert actions(client, tokens, alert["id"]).count("escalated") == 1
        assert alert_of(client, tokens, alert["id"])["status"] == "open"
    for alert in seen:
        assert "escalated" not in actions(client, tokens, alert["id"])
        assert alert_of(client, tokens, alert["id"])["escalated_at"] is None
    assert len(receiver.received) == len(ignored)
    sent = {}
    for delivery in receiver.received:
        Verifier(hook["secret"]).verify(delivery.body, delivery.headers)
        assert delivery.json["type"] == "alert.escalated"
        sent[delivery.json["data"]["alert"]["id"]] = delivery.json["data"]["alert"]
    assert set(sent) == {a["id"] for a in ignored}
    assert all(a["escalated_at"] for a in sent.values())

    # Escalated alerts come first within their severity, whatever their due time.
    listed = client.get(
        "/v1/alerts", params={"severity": "emergency"}, headers=tokens.admin()
    ).json()["items"]
    order = [a["id"] for a in listed]
    assert set(order[: len(ignored)]) == {a["id"] for a in ignored}
    assert set(order[len(ignored) :]) == {a["id"] for a in seen}
    # The cursor walks the same order one item at a time.
    walked, cursor = [], None
    while True:
        params: dict[str, Any] = {"severity": "emergency", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/alerts", params=params, headers=tokens.admin()).json()
        walked += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert walked == order


def test_overdue_is_marked_once(
    app: FastAPI,
    world: World,
    client: TestClient,
    tokens: Tokens,
    database_url: str,
    tmp_path: Path,
) -> None:
    patient = world.patient("onc-a")
    alerts = world.report(patient["id"], vitals=DANGER)["alerts"]
    resolved = world.report(world.patient("onc-a")["id"], vitals=DANGER)["alerts"]
    for alert in resolved:
        response = client.post(
            f"/v1/alerts/{alert['id']}/resolve", json={"note": "seen"}, headers=tokens.admin()
        )
        assert response.status_code == 200
    # Setup shortcut: the follow-up windows are an hour and more; move them into the past.
    past = datetime.now(UTC) - timedelta(seconds=1)
    with engine_of(app).begin() as conn:
        conn.execute(update(Alert).values(follow_up_due_at=past))
    with uvicorn(database_url, tmp_path, WORKER_MODE="inline"):
        for alert in alerts:
            wait_for(
                lambda a=alert: "overdue" in actions(client, tokens, a["id"]), 3, "overdue mark"
            )
        time.sleep(1)
    for alert in alerts:
        assert actions(client, tokens, alert["id"]).count("overdue") == 1
        assert alert_of(client, tokens, alert["id"])["overdue_at"]
    for alert in resolved:
        assert "overdue" not in actions(client, tokens, alert["id"])
