"""A report dated long before the patient's care began is a mistyped date, not a baseline."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Tokens, World, report_body


def at(day: date) -> datetime:
    return datetime.combine(day, time(9, 0), UTC)


def test_a_report_more_than_a_year_before_the_first_therapy_is_refused(world: World) -> None:
    patient = world.patient(drugs=("filgrastim",), started_on="2026-03-01")
    body = world.report(patient["id"], {"nausea": 1}, recorded_at=at(date(1900, 1, 1)), expect=422)
    assert body["errors"][0]["loc"] == ["body", "recorded_at"]
    assert "2025-02-28" in body["errors"][0]["msg"]
    # a year before the first therapy is still a pre-treatment baseline
    world.report(patient["id"], {"nausea": 1}, recorded_at=at(date(2025, 2, 28)))
    world.report(patient["id"], {"nausea": 1}, recorded_at=at(date(2025, 2, 27)), expect=422)


def test_without_therapy_the_bound_is_a_year_before_the_record(world: World) -> None:
    patient = world.patient()
    world.report(patient["id"], {"nausea": 0}, recorded_at=at(date.today() - timedelta(days=300)))
    old = at(date.today() - timedelta(days=400))
    body = world.report(patient["id"], {"nausea": 0}, recorded_at=old, expect=422)
    assert body["errors"][0]["loc"] == ["body", "recorded_at"]


def test_a_batch_rejects_only_the_misdated_item(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("filgrastim",), started_on="2026-03-01")
    items: list[dict[str, Any]] = [
        report_body({"fatigue": 1}, recorded_at=at(date(1900, 1, 1))),
        report_body({"fatigue": 1}),
    ]
    response = client.post(
        f"/v1/patients/{patient['id']}/reports/batch",
        json={"reports": items},
        headers=tokens.patient(patient["id"]),
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["status"] == "rejected"
    assert first["errors"][0]["loc"] == ["recorded_at"]
    assert second["status"] == "created"
