"""Rate limit, security headers, and access logs that never carry patient data or tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import Tokens, World, make_settings, report_body


@pytest.fixture
def limited_app(database_url: str) -> Iterator[FastAPI]:
    app = create_app(make_settings(database_url, rate_limit_per_minute=3))
    yield app


def test_rate_limit_is_per_token_with_retry_after(limited_app: FastAPI, tokens: Tokens) -> None:
    with TestClient(limited_app) as client:
        first, second = tokens.clinician("onc-a", sub="a"), tokens.clinician("onc-a", sub="b")
        assert [client.get("/v1/drugs", headers=first).status_code for _ in range(3)] == [200] * 3
        limited = client.get("/v1/drugs", headers=first)
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["status"] == 429
        assert client.get("/v1/drugs", headers=second).status_code == 200
        # Health probes are never limited.
        assert all(client.get("/healthz").status_code == 200 for _ in range(5))


def test_security_headers(client: TestClient, world: World, tokens: Tokens) -> None:
    patient = world.patient()
    response = client.get(f"/v1/patients/{patient['id']}", headers=tokens.patient(patient["id"]))
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "server" not in response.headers
    assert len(response.headers["x-request-id"]) >= 16
    echoed = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    # A request id that could forge log lines is replaced, not echoed.
    forged = client.get("/healthz", headers={"X-Request-ID": 'x"}\n{"evil":1'})
    assert forged.headers["x-request-id"] != 'x"}\n{"evil":1'


def test_logs_hold_no_patient_data_or_tokens(
    client: TestClient, world: World, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    patient = world.patient(
        drugs=("aldesleukin",), external_id="MRN-SECRET-77", display_name="Jane Secretname"
    )
    headers = tokens.patient(patient["id"])
    body = report_body(
        {"self_harm_thoughts": 1, "fever": 3},
        {"systolic_bp": 83, "temperature_c": 39.7},
        note="private note about my neighbour",
    )
    url = f"/v1/patients/{patient['id']}/reports"
    created = client.post(url, json=body, headers=headers).json()
    client.post(url, json=body, headers=headers)  # replay
    client.post(url, json={**body, "symptoms": []}, headers=headers)  # 409
    client.post(url, json={**body, "note": 5}, headers=headers)  # 422
    client.get(f"{url}?since=2026-01-01T00:00:00Z", headers=headers)
    nurse = tokens.clinician("onc-a")
    for alert in created["alerts"]:
        client.post(
            f"/v1/alerts/{alert['id']}/resolve", json={"note": "called Jane"}, headers=nurse
        )
    client.get("/v1/patients", headers={"Authorization": "Bearer not.a.token"})

    # Everything the service and its libraries logged (httpx/httpcore are this test's client).
    logged = scannable(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "/v1/patients/{patient_id}/reports" in logged  # the access log is there
    forbidden = [
        patient["id"],
        "MRN-SECRET-77",
        "Secretname",
        "private note",
        "called Jane",
        "self_harm",
        "39.7",
        body["client_report_id"],
        headers["Authorization"].removeprefix("Bearer "),
        "not.a.token",
    ]
    leaked = [value for value in forbidden if value in logged]
    assert not leaked, leaked


ACCESS_FIELDS = {"event", "request_id", "method", "route", "status", "duration_ms"}


def scannable(messages: Iterable[str]) -> str:
    """The log as text to search for leaked values, exactly: an access line's fields are checked
    for their shape and its duration is left out, so a duration of 39.75 ms never reads as the
    temperature 39.7 (the search is for values the service must not write, not for digits)."""
    lines = []
    for message in messages:
        try:
            record = json.loads(message)
        except ValueError:
            lines.append(message)
            continue
        if isinstance(record, dict) and record.get("event") == "request":
            assert set(record) == ACCESS_FIELDS, record
            assert isinstance(record["duration_ms"], int | float), record
            assert isinstance(record["status"], int), record
            del record["duration_ms"]
        lines.append(json.dumps(record))
    return "\n".join(lines)


def test_a_duration_that_looks_like_a_value_is_not_a_leak() -> None:
    line = {
        "event": "request",
        "request_id": "r1",
        "method": "GET",
        "route": "/v1/patients/{patient_id}",
        "status": 200,
        "duration_ms": 39.75,
    }
    assert "39.7" not in scannable([json.dumps(line)])
    # A value anywhere else still counts.
    assert "39.7" in scannable([json.dumps({**line, "route": "/v1/x/39.7"})])
    assert "39.7" in scannable(["temperature 39.7"])
