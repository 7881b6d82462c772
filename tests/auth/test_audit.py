"""The audit trail: every write records who (sub, role), what (action), which resource and when,
readable by admins only through GET /v1/audit, paginated; it never holds report contents."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens, World, report_body

NURSE = "nurse-a"


def audit_rows(client: TestClient, tokens: Tokens, limit: int = 200, **params: str) -> list[dict]:
    """Every row matching ``params``, walking next_cursor; fails on a repeated row."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        query: dict[str, Any] = {"limit": limit, **params}
        if cursor:
            query["cursor"] = cursor
        response = client.get("/v1/audit", params=query, headers=tokens.admin())
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "the audit list repeated a row"
    return rows


def the_row(client: TestClient, tokens: Tokens, **params: str) -> dict[str, Any]:
    rows = audit_rows(client, tokens, **params)
    assert len(rows) == 1, rows
    return rows[0]


def parse(ts: str) -> datetime:
    assert ts.endswith("Z") or ts.endswith("+00:00"), ts
    return datetime.fromisoformat(ts)


class Clock:
    """The window a request ran in, to check an audit row's ``at``."""

    def __enter__(self) -> Clock:
        self.start = datetime.now(UTC) - timedelta(seconds=1)
        return self

    def __exit__(self, *_: object) -> None:
        self.end = datetime.now(UTC) + timedelta(seconds=1)

    def covers(self, ts: str) -> bool:
        return self.start <= parse(ts) <= self.end


def assert_row(
    row: dict[str, Any], *, actor: str, role: str, action: str, rtype: str, rid: str, clock: Clock
) -> None:
    assert uuid.UUID(row["id"])
    assert (row["actor_sub"], row["actor_role"]) == (actor, role)
    assert row["action"] == action
    assert (row["resource_type"], row["resource_id"]) == (rtype, rid)
    assert clock.covers(row["at"]), (row["at"], clock.start, clock.end)


# --- every write is recorded ------------------------------------------------------------------


def test_creating_a_patient_is_audited(client: TestClient, tokens: Tokens) -> None:
    with Clock() as clock:
        response = client.post(
            "/v1/patients",
            json={"care_team": "onc-a", "display_name": "Ada L.", "external_id": "MRN-991"},
            headers=tokens.clinician("onc-a", sub=NURSE),
        )
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    row = the_row(client, tokens, resource_type="patient", resource_id=pid)
    assert_row(
        row,
        actor=NURSE,
        role="clinician",
        action="patient.created",
        rtype="patient",
        rid=pid,
        clock=clock,
    )
    assert "Ada L." not in json.dumps(row)


def test_creating_a_therapy_is_audited(client: TestClient, tokens: Tokens, world: World) -> None:
    patient = world.patient("onc-a")
    with Clock() as clock:
        response = client.post(
            f"/v1/patients/{patient['id']}/therapies",
            json={"drug_code": "aldesleukin", "started_on": "2026-01-05"},
            headers=tokens.clinician("onc-a", sub=NURSE),
        )
    assert response.status_code == 201, response.text
    therapy_id = response.json()["id"]
    row = the_row(client, tokens, resource_type="therapy", resource_id=therapy_id)
    assert_row(
        row,
        actor=NURSE,
        role="clinician",
        action="therapy.created",
        rtype="therapy",
        rid=therapy_id,
        clock=clock,
    )


def test_each_stored_report_is_audited_once_and_a_replay_adds_nothing(
    client: TestClient, tokens: Tokens, world: World
) -> None:
    patient = world.patient("onc-a", drugs=("aldesleukin",))
    pid = patient["id"]
    me = tokens.patient(pid)
    actor = f"user-{pid}"
    body = report_body({"fatigue": 1})
    with Clock() as clock:
        first = client.post(f"/v1/patients/{pid}/reports", json=body, headers=me)
    assert first.status_code == 201, first.text
    report_id = first.json()["id"]
    row = the_row(client, tokens, resource_type="report", resource_id=report_id)
    assert_row(
        row,
        actor=actor,
        role="patient",
        action="report.created",
        rtype="report",
        rid=report_id,
        clock=clock,
    )

    replay = client.post(f"/v1/patients/{pid}/reports", json=body, headers=me)
    assert replay.status_code == 200, replay.text
    assert len(audit_rows(client, tokens, resource_type="report", actor=actor)) == 1

    # A batch: one row per report it stores, none for its duplicate or its rejected item.
    batch = {
        "reports": [
            report_body({"fatigue": 2}),
            body,
            report_body({"no_such_symptom": 1}),
            report_body({"nausea": 1}),
        ]
    }
    response = client.post(f"/v1/patients/{pid}/reports/batch", json=batch, headers=me)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["created", "duplicate", "rejected", "created"]
    rows = audit_rows(client, tokens, resource_type="report", actor=actor)
    stored = {report_id, results[0]["report_id"], results[3]["report_id"]}
    assert {r["resource_id"] for r in rows} == stored
    assert len(rows) == 3


def test_alert_acknowledgement_and_resolution_are_audited(
    client: TestClient, tokens: Tokens, world: World
) -> None:
    patient = world.patient("onc-a", drugs=("aldesleukin",))
    alert_id = world.report(patient["id"], vitals={"systolic_bp": 80})["alerts"][0]["id"]
    nurse = tokens.clinician("onc-a", sub=NURSE)
    with Clock() as clock:
        ack = client.post(
            f"/v1/alerts/{alert_id}/acknowledge", json={"note": "calling"}, headers=nurse
        )
        assert ack.status_code == 200, ack.text
        resolve = client.post(
            f"/v1/alerts/{alert_id}/resolve",
            json={"note": "admitted", "outcome": "confirmed"},
            headers=tokens.admin(),
        )
        assert resolve.status_code == 200, resolve.text
    # Refused transitions write nothing: a second resolve (409), another team (404).
    again = client.post(f"/v1/alerts/{alert_id}/resolve", json={"note": "x"}, headers=nurse)
    assert again.status_code == 409
    other = tokens.clinician("onc-b", sub="nurse-b")
    assert client.post(f"/v1/alerts/{alert_id}/acknowledge", headers=other).status_code == 404

    rows = audit_rows(client, tokens, resource_type="alert", resource_id=alert_id)
    by_action = {r["action"]: r for r in rows}
    assert len(rows) == 2, rows
    assert_row(
        by_action["alert.acknowledged"],
        actor=NURSE,
        role="clinician",
        action="alert.acknowledged",
        rtype="alert",
        rid=alert_id,
        clock=clock,
    )
    assert_row(
        by_action["alert.resolved"],
        actor="admin-1",
        role="admin",
        action="alert.resolved",
        rtype="alert",
        rid=alert_id,
        clock=clock,
    )
    # Newest first.
    assert [r["action"] for r in rows] == ["alert.resolved", "alert.acknowledged"]


def test_refused_writes_are_not_audited(client: TestClient, tokens: Tokens, world: World) -> None:
    patient = world.patient("onc-a", external_id="MRN-1")
    before = audit_rows(client, tokens)
    nurse_b = tokens.clinician("onc-b", sub="nurse-b")
    attempts = [
        client.post("/v1/patients", json={"care_team": "onc-a"}, headers=nurse_b),  # 403
        client.post(
            "/v1/patients",
            json={"care_team": "onc-a", "external_id": "MRN-1"},
            headers=tokens.admin(),
        ),  # 409
        client.post(
            f"/v1/patients/{patient['id']}/therapies",
            json={"drug_code": "aldesleukin", "started_on": "2026-01-05"},
            headers=nurse_b,
        ),  # 404
        client.post(
            f"/v1/patients/{patient['id']}/reports",
            json=report_body({"no_such_symptom": 1}),
            headers=tokens.patient(patient["id"]),
        ),  # 422
    ]
    assert [a.status_code for a in attempts] == [403, 409, 404, 422]
    assert audit_rows(client, tokens) == before


@pytest.fixture
def catalog_client(fresh_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(fresh_app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_drug_changes_are_audited(catalog_client: TestClient, tokens: Tokens) -> None:
    client = catalog_client
    detail = client.get("/v1/drugs/bevacizumab", headers=tokens.admin()).json()
    body = {k: v for k, v in detail.items() if k not in ("code", "rules")}
    body["rules"] = [r["definition"] for r in detail["rules"] if r["drug_code"] == "bevacizumab"]

    with Clock() as clock:
        replaced = client.put(
            "/v1/drugs/bevacizumab", json=body, headers=tokens.admin(sub="pharmacist")
        )
        assert replaced.status_code == 200, replaced.text
        new = {**body, "name": "Testumab", "brand_names": [], "rules": []}
        created = client.put("/v1/drugs/testumab", json=new, headers=tokens.admin(sub="pharmacist"))
        assert created.status_code == 201, created.text

    assert_row(
        the_row(client, tokens, resource_type="drug", resource_id="bevacizumab"),
        actor="pharmacist",
        role="admin",
        action="drug.replaced",
        rtype="drug",
        rid="bevacizumab",
        clock=clock,
    )
    assert_row(
        the_row(client, tokens, resource_type="drug", resource_id="testumab"),
        actor="pharmacist",
        role="admin",
        action="drug.created",
        rtype="drug",
        rid="testumab",
        clock=clock,
    )
    # A refused PUT (invalid, or not an admin) writes nothing.
    bad = client.put("/v1/drugs/testumab", json={**new, "route": ""}, headers=tokens.admin())
    assert bad.status_code == 422
    nurse = client.put("/v1/drugs/testumab", json=new, headers=tokens.clinician("onc-a"))
    assert nurse.status_code == 403
    assert len(audit_rows(client, tokens, resource_type="drug")) == 2


# --- what the rows never hold ----------------------------------------------------------------

SECRET_NOTE = "woke up drenched, partner says I was confused"
SYMPTOM_NOTE = "worst headache of my life since Tuesday"
ACK_NOTE = "spoke to wife, BP at home 79/41"
RESOLVE_NOTE = "admitted to ICU with capillary leak"
VITALS = {"temperature_c": 38.7, "systolic_bp": 79, "heart_rate": 131, "weight_kg": 71.3}


def leaves(value: Any) -> Iterator[Any]:
    """Every key and every scalar of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def test_audit_rows_never_hold_report_contents(
    client: TestClient, tokens: Tokens, world: World
) -> None:
    patient = world.patient("onc-a", drugs=("aldesleukin",))
    pid = patient["id"]
    symptoms = {"headache": 3, "confusion": 2, "fever": 2}
    body = report_body(symptoms, VITALS, note=SECRET_NOTE)
    body["symptoms"][0]["note"] = SYMPTOM_NOTE
    created = client.post(f"/v1/patients/{pid}/reports", json=body, headers=tokens.patient(pid))
    assert created.status_code == 201, created.text
    batch = {"reports": [report_body({"chills": 3}, {"spo2": 88.5}, note=SECRET_NOTE)]}
    response = client.post(
        f"/v1/patients/{pid}/reports/batch", json=batch, headers=tokens.patient(pid)
    )
    assert response.status_code == 200, response.text
    alert_id = created.json()["alerts"][0]["id"]
    nurse = tokens.clinician("onc-a", sub=NURSE)
    ack = client.post(f"/v1/alerts/{alert_id}/acknowledge", json={"note": ACK_NOTE}, headers=nurse)
    assert ack.status_code == 200, ack.text
    resolve = client.post(
        f"/v1/alerts/{alert_id}/resolve", json={"note": RESOLVE_NOTE}, headers=nurse
    )
    assert resolve.status_code == 200, resolve.text

    rows = audit_rows(client, tokens)
    assert {r["action"] for r in rows} >= {"report.created", "alert.acknowledged", "alert.resolved"}
    forbidden_text = [SECRET_NOTE, SYMPTOM_NOTE, ACK_NOTE, RESOLVE_NOTE, *symptoms, "chills"]
    forbidden_numbers = {*VITALS.values(), 88.5}
    for row in rows:
        for leaf in leaves(row["detail"]):
            if isinstance(leaf, str):
                found = [t for t in forbidden_text if t in leaf]
                assert not found, f"audit row {row['action']} holds report contents: {found}"
            elif isinstance(leaf, int | float) and not isinstance(leaf, bool):
                assert leaf not in forbidden_numbers, f"audit row {row['action']} holds {leaf}"
        dumped = json.dumps(row)
        assert SECRET_NOTE not in dumped and SYMPTOM_NOTE not in dumped


# --- reading the trail -----------------------------------------------------------------------


def test_the_audit_list_pages_through_every_row_once(
    client: TestClient, tokens: Tokens, world: World
) -> None:
    for i in range(4):
        world.patient("onc-a" if i % 2 else "onc-b", drugs=("filgrastim",))
    everything = audit_rows(client, tokens, limit=200)
    assert len(everything) == 8  # 4 patients and 4 therapies
    for limit in (1, 3, 7):
        paged = audit_rows(client, tokens, limit=limit)
        assert [r["id"] for r in paged] == [r["id"] for r in everything]
    # Newest first.
    times = [parse(r["at"]) for r in everything]
    assert times == sorted(times, reverse=True)


def test_rows_added_while_paging_are_neither_skipped_nor_repeated(
    client: TestClient, tokens: Tokens, world: World
) -> None:
    for _ in range(5):
        world.patient("onc-a")
    original = {r["id"] for r in audit_rows(client, tokens)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/audit", params=params, headers=tokens.admin()).json()
        seen.extend(r["id"] for r in page["items"])
        world.patient("onc-b")  # a write between two pages
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a row was served twice"
    assert original <= set(seen), "a row was skipped"


def test_the_audit_list_filters_by_resource_and_actor(
    client: TestClient, tokens: Tokens, world: World
) -> None:
    by_nurse = client.post(
        "/v1/patients", json={"care_team": "onc-a"}, headers=tokens.clinician("onc-a", sub=NURSE)
    ).json()
    other = world.patient("onc-b", drugs=("filgrastim",))

    mine = audit_rows(client, tokens, actor=NURSE)
    assert [(r["action"], r["resource_id"]) for r in mine] == [("patient.created", by_nurse["id"])]
    patients = audit_rows(client, tokens, resource_type="patient")
    assert {r["resource_id"] for r in patients} == {by_nurse["id"], other["id"]}
    assert all(r["resource_type"] == "patient" for r in patients)
    therapies = audit_rows(client, tokens, resource_type="therapy", actor="admin-1")
    assert len(therapies) == 1
    assert audit_rows(client, tokens, actor="nobody") == []
    assert audit_rows(client, tokens, resource_id=str(uuid.uuid4())) == []


def test_a_cursor_that_is_not_ours_is_422(client: TestClient, tokens: Tokens) -> None:
    response = client.get("/v1/audit", params={"cursor": "bm9wZQ"}, headers=tokens.admin())
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_only_admins_read_the_audit_trail(client: TestClient, tokens: Tokens, world: World) -> None:
    patient = world.patient("onc-a")
    for headers in (
        tokens.clinician("onc-a"),
        tokens.clinician("onc-a", "onc-b", "onc-c"),
        tokens.patient(patient["id"]),
    ):
        for params in ({}, {"resource_type": "patient", "resource_id": patient["id"]}):
            response = client.get("/v1/audit", params=params, headers=headers)
            assert response.status_code == 403, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert patient["id"] not in response.text
    anonymous = client.get("/v1/audit")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
