"""What the fuzzer found, pinned: hostile values get a 422 naming the field, never a 500."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens, World, report_body


def _loc_named(response, *loc) -> bool:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return list(loc) in [e["loc"][: len(loc)] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    "recorded_at", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "1899-12-31T23:00:00Z"]
)
def test_timestamps_outside_what_a_database_holds(
    world: World, client: TestClient, tokens: Tokens, recorded_at: str
) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    headers = tokens.patient(patient["id"])
    url = f"/v1/patients/{patient['id']}/reports"
    body = report_body({"fever": 1}, recorded_at=None) | {"recorded_at": recorded_at}
    assert _loc_named(client.post(url, json=body, headers=headers), "body", "recorded_at")

    good = report_body({"fever": 1})
    batch = client.post(f"{url}/batch", json={"reports": [good, body]}, headers=headers)
    assert [r["status"] for r in batch.json()["results"]] == ["created", "rejected"]

    listed = client.get(url, params={"since": recorded_at}, headers=headers)
    assert _loc_named(listed, "query", "since")
    dry_run = {"drug_codes": [], "report": {"recorded_at": recorded_at, "symptoms": []}}
    response = client.post("/v1/rules/evaluate", json=dry_run, headers=tokens.admin())
    assert _loc_named(response, "body", "report", "recorded_at")


def test_far_therapy_dates_are_refused(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient()
    response = client.post(
        f"/v1/patients/{patient['id']}/therapies",
        json={"drug_code": "aldesleukin", "started_on": "2026-11-20", "ended_on": "9999-12-31"},
        headers=tokens.admin(),
    )
    assert _loc_named(response, "body", "ended_on")
    # The latest day accepted still lets reports through (the watch window never overflows).
    world.therapy(patient["id"], "aldesleukin", "2026-11-20", "8999-12-31")
    assert world.report(patient["id"], vitals={"systolic_bp": 85})["alerts"]


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("POST", "/v1/patients", {"care_team": "onc-a", "external_id": "a\x00b"},
         ["body", "external_id"]),
        ("POST", "/v1/patients", {"care_team": "onc-a", "display_name": "\x00"},
         ["body", "display_name"]),
        ("GET", "/v1/audit?actor=a%00b", None, ["query", "actor"]),
        ("GET", "/v1/patients?team=%00", None, ["query", "team"]),
        ("GET", "/v1/alerts?drug_code=%00", None, ["query", "drug_code"]),
    ],
)  # fmt: skip
def test_nul_characters_are_refused(
    client: TestClient, tokens: Tokens, method: str, path: str, body: dict | None, loc: list
) -> None:
    response = client.request(method, path, json=body, headers=tokens.admin())
    assert _loc_named(response, *loc)


def test_nul_in_report_and_alert_notes(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    url = f"/v1/patients/{patient['id']}/reports"
    headers = tokens.patient(patient["id"])
    body = report_body({"fever": 1}, note="bad\x00note")
    assert _loc_named(client.post(url, json=body, headers=headers), "body", "note")
    alert = world.report(patient["id"], vitals={"systolic_bp": 85})["alerts"][0]
    resolve = client.post(
        f"/v1/alerts/{alert['id']}/resolve", json={"note": "\x00"}, headers=tokens.admin()
    )
    assert _loc_named(resolve, "body", "note")


def test_tampered_cursors_are_422(client: TestClient, tokens: Tokens) -> None:
    some_id = "00000000-0000-4000-8000-000000000000"
    for values in (
        [10**30, "2026-11-27T00:00:00+00:00", some_id],
        [True, "2026-11-27T00:00:00+00:00", some_id],
        [0, "0001-01-01T00:00:00+14:00", some_id],
    ):
        cursor = base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")
        response = client.get("/v1/alerts", params={"cursor": cursor}, headers=tokens.admin())
        assert _loc_named(response, "query", "cursor")


def test_infinity_in_a_rule_is_refused(fresh_app: FastAPI, tokens: Tokens) -> None:
    # Python's JSON parser takes the bare literal; the rule data must not.
    body = (
        '{"name": "x", "drug_class": "x", "route": "iv", "rules": [{"id": "r", "title": "t",'
        ' "source": "s", "branches": [{"severity": "urgent",'
        ' "when": {"vital": "systolic_bp", "lt": Infinity}}]}]}'
    )
    headers = {**tokens.admin(), "content-type": "application/json"}
    with TestClient(fresh_app) as client:
        response = client.put("/v1/drugs/x", content=body, headers=headers)
    assert response.status_code == 422, response.text
