"""Webhooks: the admin API, signed deliveries, retries, a receiver that comes back, leases.

Delivery runs in real processes (uvicorn with 2 workers, `python -m api worker`) on the test
database; patients and reports are made through the API.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from standardwebhooks import Webhook as Verifier

from api.notifications.models import Webhook, WebhookDelivery
from tests.conftest import Tokens, World, create_app, engine_of, make_settings
from tests.notifications.live import Receiver, uvicorn, wait_for, worker

# A report that raises an emergency for any patient (SpO2 88 %).
DANGER = {"spo2": 88}
PAYLOAD_KEYS = {
    "id",
    "patient_id",
    "team",
    "rule_id",
    "rule_version",
    "drug_code",
    "severity",
    "status",
    "occurrences",
    "created_at",
    "follow_up_due_at",
    "last_triggered_at",
    "acknowledged_at",
    "resolved_at",
    "escalated_at",
    "overdue_at",
}


def subscribe(
    client: TestClient | httpx.Client, tokens: Tokens, url: str, **fields: Any
) -> dict[str, Any]:
    body = {"url": url, "events": ["alert.raised"], **fields}
    response = client.post("/v1/webhooks", json=body, headers=tokens.admin())
    assert response.status_code == 201, response.text
    return response.json()


def events_of(client: TestClient, tokens: Tokens, patient_id: str, kind: str) -> list[int]:
    """The ids of the patient's alert events of type ``kind``, through the API."""
    response = client.get("/v1/alerts", params={"patient_id": patient_id}, headers=tokens.admin())
    ids = []
    for alert in response.json()["items"]:
        events = client.get(f"/v1/alerts/{alert['id']}/events", headers=tokens.admin())
        ids += [e["id"] for e in events.json()["items"] if e["type"] == kind]
    return sorted(ids)


def deliveries(client: TestClient, tokens: Tokens, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 200}, headers=tokens.admin()
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


# --- the admin API --------------------------------------------------------------------------


def test_create_read_list_delete(client: TestClient, tokens: Tokens) -> None:
    created = subscribe(
        client, tokens, "https://example.org/hook", events=["alert.raised", "alert.escalated"],
        teams=["onc-a"],
    )  # fmt: skip
    assert created["secret"].startswith("whsec_")
    assert len(Verifier(created["secret"])._whsecret) == 32
    assert created["teams"] == ["onc-a"]
    assert created["events"] == ["alert.raised", "alert.escalated"]

    shown = client.get(f"/v1/webhooks/{created['id']}", headers=tokens.admin()).json()
    assert "secret" not in shown  # shown only on creation
    assert shown["url"] == "https://example.org/hook"
    listed = client.get("/v1/webhooks", headers=tokens.admin()).json()
    assert [w["id"] for w in listed["items"]] == [created["id"]]
    assert all("secret" not in w for w in listed["items"])

    given = subscribe(client, tokens, "https://example.org/b", secret="whsec_" + "A" * 44)
    assert given["secret"] == "whsec_" + "A" * 44
    assert given["teams"] is None

    assert client.delete(f"/v1/webhooks/{created['id']}", headers=tokens.admin()).status_code == 204
    assert client.get(f"/v1/webhooks/{created['id']}", headers=tokens.admin()).status_code == 404
    assert client.delete(f"/v1/webhooks/{created['id']}", headers=tokens.admin()).status_code == 404


def test_only_admins_manage_webhooks(client: TestClient, tokens: Tokens, world: World) -> None:
    patient = world.patient("onc-a")
    body = {"url": "https://example.org/hook", "events": ["alert.raised"]}
    for headers in (tokens.clinician("onc-a"), tokens.patient(patient["id"])):
        assert client.post("/v1/webhooks", json=body, headers=headers).status_code == 403
        assert client.get("/v1/webhooks", headers=headers).status_code == 403
    assert client.post("/v1/webhooks", json=body).status_code == 401


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"url": "ftp://example.org/hook"}, ["body", "url"]),
        ({"url": "example.org/hook"}, ["body", "url"]),
        ({"events": ["alert.exploded"]}, ["body", "events", 0]),
        ({"events": []}, ["body", "events"]),
        ({"teams": ["bad team"]}, ["body", "teams", 0]),
        ({"secret": "not-a-secret"}, ["body", "secret"]),
        ({"secret": "whsec_c2hvcnQ="}, ["body", "secret"]),
    ],
)
def test_bad_input_is_422_naming_the_field(
    client: TestClient, tokens: Tokens, change: dict[str, Any], loc: list[Any]
) -> None:
    body = {"url": "https://example.org/hook", "events": ["alert.raised"], **change}
    response = client.post("/v1/webhooks", json=body, headers=tokens.admin())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert loc in [e["loc"] for e in response.json()["errors"]], response.json()


def test_production_requires_https_unless_allowed(database_url: str, tokens: Tokens) -> None:
    body = {"url": "http://example.org/hook", "events": ["alert.raised"]}
    for allow, expected in ((False, 422), (True, 201)):
        app = create_app(
            make_settings(database_url, app_env="production", webhook_allow_http=allow)
        )
        with TestClient(app) as client:
            response = client.post("/v1/webhooks", json=body, headers=tokens.admin())
            assert response.status_code == expected, response.text
            if expected == 422:
                assert ["body", "url"] in [e["loc"] for e in response.json()["errors"]]
            https = {**body, "url": "https://example.org/hook"}
            response = client.post("/v1/webhooks", json=https, headers=tokens.admin())
            assert response.status_code == 201


# --- delivery -------------------------------------------------------------------------------


def test_signed_webhook_within_2_s_with_no_phi(
    world: World, client: TestClient, tokens: Tokens, database_url: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        with uvicorn(database_url, tmp_path, WORKER_MODE="inline"):
            hook = subscribe(client, tokens, receiver.url, teams=["onc-a"])
            other_team = world.patient("onc-b")
            world.report(other_team["id"], vitals=DANGER)
            patient = world.patient("onc-a")
            sent = time.monotonic()
            world.report(patient["id"], vitals=DANGER, note="felt faint on the stairs")
            wait_for(lambda: receiver.received, 2, "a webhook")
            assert time.monotonic() - sent < 2
            raised = events_of(client, tokens, patient["id"], "alert.raised")
            wait_for(lambda: len(receiver.received) >= len(raised), 2, "every raised event")
    finally:
        receiver.stop()

    assert sorted(int(i) for i in receiver.ids()) == raised  # onc-b's alert was not sent
    for delivery in receiver.received:
        Verifier(hook["secret"]).verify(delivery.body, delivery.headers)  # raises if not
        assert delivery.headers["content-type"] == "application/json"
        payload = delivery.json
        assert payload["type"] == "alert.raised"
        alert = payload["data"]["alert"]
        assert set(alert) == PAYLOAD_KEYS
        assert alert["patient_id"] == patient["id"]
        assert alert["team"] == "onc-a"
        assert b"faint" not in delivery.body and b"spo2" not in delivery.body.lower()
    log = deliveries(client, tokens, hook["id"])
    assert {(d["attempt"], d["status_code"], d["outcome"]) for d in log} == {(1, 204, "delivered")}


def test_500_twice_then_success_keeps_the_webhook_id(
    world: World, client: TestClient, tokens: Tokens, database_url: str, tmp_path: Path
) -> None:
    receiver = Receiver(answers=[500, 500])
    receiver.start()
    try:
        with uvicorn(database_url, tmp_path, WORKER_MODE="inline"):
            hook = subscribe(client, tokens, receiver.url, events=["alert.acknowledged"])
            patient = world.patient("onc-a")
            alert = world.report(patient["id"], vitals=DANGER)["alerts"][0]
            response = client.post(
                f"/v1/alerts/{alert['id']}/acknowledge", headers=tokens.clinician("onc-a")
            )
            assert response.status_code == 200
            wait_for(lambda: len(receiver.received) >= 3, 10, "three attempts")
            time.sleep(1)  # nothing more comes after the success
    finally:
        receiver.stop()
    assert len(receiver.received) == 3
    assert len(set(receiver.ids())) == 1
    for delivery in receiver.received:
        Verifier(hook["secret"]).verify(delivery.body, delivery.headers)
        assert delivery.json["type"] == "alert.acknowledged"
    log = deliveries(client, tokens, hook["id"])  # newest first
    assert [(d["attempt"], d["status_code"], d["outcome"]) for d in log] == [
        (3, 204, "delivered"),
        (2, 500, "retrying"),
        (1, 500, "retrying"),
    ]
    assert {str(d["event_id"]) for d in log} == set(receiver.ids())


def test_a_receiver_that_was_down_gets_everything_once_back(
    world: World, client: TestClient, tokens: Tokens, database_url: str, tmp_path: Path
) -> None:
    receiver = Receiver()  # not started: connections are refused
    with uvicorn(database_url, tmp_path, WORKER_MODE="inline"):
        hook = subscribe(client, tokens, receiver.url)
        patients = [world.patient("onc-a") for _ in range(3)]
        for patient in patients:
            world.report(patient["id"], vitals=DANGER)
        raised = sorted(
            i for p in patients for i in events_of(client, tokens, p["id"], "alert.raised")
        )
        wait_for(
            lambda: (
                sum(d["error"] is not None for d in deliveries(client, tokens, hook["id"]))
                >= 2 * len(raised)
            ),
            10,
            "failed attempts while the receiver is down",
        )
        receiver.start()
        try:
            wait_for(lambda: len(receiver.received) >= len(raised), 5, "everything, once back")
            time.sleep(1)
        finally:
            receiver.stop()
    assert sorted(int(i) for i in receiver.ids()) == raised  # each exactly once
    log = deliveries(client, tokens, hook["id"])
    assert {d["error"] for d in log if d["status_code"] is None} == {"ConnectError"}
    assert sorted(d["event_id"] for d in log if d["outcome"] == "delivered") == raised


def test_two_servers_and_two_workers_deliver_each_event_once(
    world: World, client: TestClient, tokens: Tokens, database_url: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        with (
            uvicorn(database_url, tmp_path, WORKER_MODE="inline", WORKER_INTERVAL_S="0.05"),
            worker(database_url, tmp_path, WORKER_INTERVAL_S="0.05"),
            worker(database_url, tmp_path, WORKER_INTERVAL_S="0.05"),
        ):
            subscribe(client, tokens, receiver.url)
            patients = [world.patient("onc-a") for _ in range(15)]
            for patient in patients:
                world.report(patient["id"], vitals=DANGER)
            raised = sorted(
                i for p in patients for i in events_of(client, tokens, p["id"], "alert.raised")
            )
            wait_for(lambda: len(receiver.received) >= len(raised), 10, "every event")
            time.sleep(1.5)  # many ticks of four job loops: no second delivery
    finally:
        receiver.stop()
    assert sorted(int(i) for i in receiver.ids()) == raised


def test_a_stopping_worker_finishes_its_sends_and_holds_no_lease(
    app: FastAPI,
    world: World,
    client: TestClient,
    tokens: Tokens,
    database_url: str,
    tmp_path: Path,
) -> None:
    receiver = Receiver(delay=1.5)  # slow: the stop request comes while the send is in flight
    receiver.start()
    try:
        with worker(database_url, tmp_path) as process:
            hook = subscribe(client, tokens, receiver.url)
            world.report(world.patient("onc-a")["id"], vitals=DANGER)
            wait_for(lambda: receiver.received, 5, "a send in flight")
            process.terminate()  # SIGTERM; the block's end checks it exits with 0
            process.wait(timeout=30)
    finally:
        receiver.stop()
    log = deliveries(client, tokens, hook["id"])
    assert [(d["attempt"], d["status_code"], d["outcome"]) for d in log] == [
        (1, 204, "delivered")
    ] * len(log)
    assert {str(d["event_id"]) for d in log} == set(receiver.ids())
    with engine_of(app).connect() as conn:
        leased = conn.scalar(select(func.count()).where(WebhookDelivery.leased_by.is_not(None)))
    assert leased == 0


def test_secrets_are_sealed_at_rest_with_webhook_secrets_key(
    app: FastAPI,
    world: World,
    client: TestClient,
    tokens: Tokens,
    database_url: str,
    tmp_path: Path,
) -> None:
    key = Fernet.generate_key().decode()
    secret = "whsec_" + base64.b64encode(bytes(range(64))).decode()  # the longest allowed
    receiver = Receiver()
    receiver.start()
    try:
        with uvicorn(database_url, tmp_path, WORKER_MODE="inline", WEBHOOK_SECRETS_KEY=key) as base:
            response = httpx.post(
                f"{base}/v1/webhooks",
                json={"url": receiver.url, "events": ["alert.raised"], "secret": secret},
                headers=tokens.admin(),
            )
            assert response.status_code == 201, response.text
            assert response.json()["secret"] == secret  # shown once, as given
            world.report(world.patient("onc-a")["id"], vitals=DANGER)
            wait_for(lambda: receiver.received, 5, "a webhook")
    finally:
        receiver.stop()
    for delivery in receiver.received:
        Verifier(secret).verify(delivery.body, delivery.headers)
    with engine_of(app).connect() as conn:
        stored = conn.scalar(select(Webhook.secret))
    assert stored is not None and stored.startswith("fernet:")
    assert secret.removeprefix("whsec_") not in stored
