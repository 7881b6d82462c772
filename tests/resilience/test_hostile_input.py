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


# --- numbers are not times -----------------------------------------------------------------------

NOT_ISO = [1764400000, 1764400000.5, 0, "1764400000", "0.5", True, "tomorrow", "2026-11-27"]


@pytest.mark.parametrize("value", NOT_ISO, ids=[repr(v) for v in NOT_ISO])
def test_a_report_time_is_iso_8601_text_only(
    world: World, client: TestClient, tokens: Tokens, value: object
) -> None:
    patient = world.patient()
    headers = tokens.patient(patient["id"])
    url = f"/v1/patients/{patient['id']}/reports"
    body = report_body({"fever": 1}) | {"recorded_at": value}
    assert _loc_named(client.post(url, json=body, headers=headers), "body", "recorded_at")
    batch = client.post(f"{url}/batch", json={"reports": [body]}, headers=headers)
    assert batch.status_code == 200
    [result] = batch.json()["results"]
    assert result["status"] == "rejected"
    assert ["recorded_at"] in [e["loc"][-1:] for e in result["errors"]], result


@pytest.mark.parametrize("value", [0, 1764400000, "0", "20261127", "2026-11-27T00:00:00Z", 1.5])
def test_a_therapy_day_is_iso_8601_text_only(
    world: World, client: TestClient, tokens: Tokens, value: object
) -> None:
    patient = world.patient()
    for field, body in (
        ("started_on", {"drug_code": "aldesleukin", "started_on": value}),
        ("ended_on", {"drug_code": "aldesleukin", "started_on": "2026-11-01", "ended_on": value}),
    ):
        response = client.post(
            f"/v1/patients/{patient['id']}/therapies", json=body, headers=tokens.admin()
        )
        assert _loc_named(response, "body", field)


@pytest.mark.parametrize("query", ["until=0.5", "since=0", "since=1764400000", "until=1e9"])
def test_history_bounds_are_iso_8601_text_only(
    world: World, client: TestClient, tokens: Tokens, query: str
) -> None:
    patient = world.patient()
    response = client.get(
        f"/v1/patients/{patient['id']}/reports?{query}", headers=tokens.patient(patient["id"])
    )
    assert _loc_named(response, "query", query.split("=")[0])


def test_a_questionnaire_day_is_iso_8601_text_only(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient()
    url = f"/v1/patients/{patient['id']}/questionnaire"
    assert _loc_named(client.get(f"{url}?on=0", headers=tokens.admin()), "query", "on")
    assert client.get(f"{url}?on=2026-11-27", headers=tokens.admin()).status_code == 200


def test_rule_dry_run_times_are_iso_8601_text_only(client: TestClient, tokens: Tokens) -> None:
    body = {
        "drug_codes": ["aldesleukin"],
        "report": {"symptoms": [{"code": "fever", "grade": 1}], "recorded_at": 1764400000},
    }
    response = client.post("/v1/rules/evaluate", json=body, headers=tokens.admin())
    assert _loc_named(response, "body", "report", "recorded_at")


# --- control characters and bidirectional overrides ------------------------------------------

CONTROLS = ["\x1b[31m", "\x07", "\x7f", "\x85", "\u202e", "\u202a", "\u2066", "\u2069"]


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c[0]):04X}" for c in CONTROLS])
def test_control_characters_and_bidi_overrides_are_refused(
    world: World, client: TestClient, tokens: Tokens, char: str
) -> None:
    admin = tokens.admin()
    for field in ("display_name", "external_id"):
        response = client.post(
            "/v1/patients", json={"care_team": "onc-a", field: f"Jane{char}Doe"}, headers=admin
        )
        assert _loc_named(response, "body", field)
        assert "control character" in response.json()["errors"][0]["msg"]
    patient = world.patient(drugs=("aldesleukin",))
    url = f"/v1/patients/{patient['id']}/reports"
    headers = tokens.patient(patient["id"])
    note = f"fine{char}gpj.exe"
    body = report_body({"fever": 1}, note=note)
    assert _loc_named(client.post(url, json=body, headers=headers), "body", "note")
    body = report_body() | {"symptoms": [{"code": "fever", "grade": 1, "note": note}]}
    assert _loc_named(client.post(url, json=body, headers=headers), "body", "symptoms", 0, "note")
    alert = world.report(patient["id"], vitals={"systolic_bp": 85})["alerts"][0]
    resolve = client.post(f"/v1/alerts/{alert['id']}/resolve", json={"note": note}, headers=admin)
    assert _loc_named(resolve, "body", "note")


def test_line_breaks_and_tabs_stay_allowed_in_notes_not_in_names(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient()
    hebrew_arabic = "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627"
    note = f"since last night\n\tworse in the morning\r\n{hebrew_arabic} Zo\u00eb"
    created = world.report(patient["id"], {"fever": 1}, note=note)
    assert created["note"] == note
    response = client.post(
        "/v1/patients", json={"care_team": "onc-a", "display_name": "Jane\nDoe"},
        headers=tokens.admin(),
    )  # fmt: skip
    assert _loc_named(response, "body", "display_name")
