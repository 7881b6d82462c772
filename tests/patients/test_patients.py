from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.conftest import Tokens, World

TODAY = datetime.now(UTC).date()


def test_create_and_read_a_patient(client: TestClient, tokens: Tokens) -> None:
    nurse = tokens.clinician("onc-a")
    response = client.post(
        "/v1/patients",
        json={"care_team": "onc-a", "external_id": "MRN-1", "display_name": "A. B.",
              "baseline_weight_kg": 71.5},
        headers=nurse,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    patient = response.json()
    assert patient["care_team"] == "onc-a" and patient["baseline_weight_kg"] == 71.5
    assert client.get(f"/v1/patients/{patient['id']}", headers=nurse).json() == patient

    duplicate = client.post(
        "/v1/patients", json={"care_team": "onc-a", "external_id": "MRN-1"}, headers=nurse
    )
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"


def test_patient_list_is_paginated_and_scoped(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    ours = [world.patient("onc-a")["id"] for _ in range(5)]
    world.patient("onc-b")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/patients", params=params, headers=tokens.clinician("onc-a")).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ours


def test_therapies(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient()
    url = f"/v1/patients/{patient['id']}/therapies"
    admin = tokens.admin()
    ok = client.post(url, json={"drug_code": "interferon_alfa_2b", "started_on": "2026-11-01"},
                     headers=admin)  # fmt: skip
    assert ok.status_code == 201 and ok.json()["active"] is True
    ended = client.post(
        url,
        json={"drug_code": "bevacizumab", "started_on": "2026-01-01", "ended_on": "2026-02-01"},
        headers=admin,
    )
    assert ended.json()["active"] is False
    unknown = client.post(url, json={"drug_code": "aspirin", "started_on": "2026-11-01"},
                          headers=admin)  # fmt: skip
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["body", "drug_code"]
    backwards = client.post(
        url,
        json={"drug_code": "filgrastim", "started_on": "2026-11-02", "ended_on": "2026-11-01"},
        headers=admin,
    )
    assert backwards.status_code == 422
    assert backwards.json()["errors"][0]["loc"] == ["body", "ended_on"]
    listed = client.get(url, headers=tokens.patient(patient["id"])).json()
    assert [t["drug_code"] for t in listed] == ["bevacizumab", "interferon_alfa_2b"]


def test_questionnaire_is_the_union_of_active_drugs_serious_first(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("interferon_alfa_2b", "bevacizumab"))
    response = client.get(
        f"/v1/patients/{patient['id']}/questionnaire", headers=tokens.patient(patient["id"])
    )
    assert response.status_code == 200
    body = response.json()
    codes = [s["code"] for s in body["symptoms"]]
    assert len(codes) == len(set(codes))
    frequencies = [s["frequency"] for s in body["symptoms"]]
    assert frequencies == sorted(frequencies, key=lambda f: f != "serious")
    by_code = {s["code"]: s for s in body["symptoms"]}
    assert {"depressed_mood", "vision_change", "abdominal_pain", "fever"} <= set(by_code)
    assert by_code["depressed_mood"]["frequency"] == "serious"
    assert by_code["fever"]["question"] and by_code["fever"]["grades"]["3"] == "Severe"
    assert sorted(body["drugs"]) == ["bevacizumab", "interferon_alfa_2b"]
    assert {"systolic_bp", "diastolic_bp", "temperature_c"} <= {v["name"] for v in body["vitals"]}


def test_questionnaire_follows_watch_windows(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient()
    ended = (TODAY - timedelta(days=90)).isoformat()
    world.therapy(patient["id"], "interferon_alfa_2b", "2026-01-01", ended)
    world.therapy(patient["id"], "filgrastim", "2026-01-01", ended)
    body = client.get(
        f"/v1/patients/{patient['id']}/questionnaire", headers=tokens.patient(patient["id"])
    ).json()
    # 90 days after the last interferon dose only the mood screen remains (180-day window);
    # filgrastim's 30-day window is over.
    assert {s["code"] for s in body["symptoms"]} == {"depressed_mood", "self_harm_thoughts"}
    later = client.get(
        f"/v1/patients/{patient['id']}/questionnaire",
        params={"on": (TODAY + timedelta(days=100)).isoformat()},
        headers=tokens.patient(patient["id"]),
    ).json()
    assert later["symptoms"] == [] and later["vitals"] == []


def test_external_id_is_unique_per_care_team_so_no_other_team_is_revealed(
    client: TestClient, tokens: Tokens
) -> None:
    team_a, team_b = tokens.clinician("onc-a", sub="nurse-a"), tokens.clinician("onc-b")
    first = client.post(
        "/v1/patients", json={"care_team": "onc-a", "external_id": "MRN-7"}, headers=team_a
    )
    assert first.status_code == 201, first.text
    # Another team registering the same record number learns nothing of team A: a new record.
    other = client.post(
        "/v1/patients", json={"care_team": "onc-b", "external_id": "MRN-7"}, headers=team_b
    )
    assert other.status_code == 201, other.text
    assert other.json()["id"] != first.json()["id"]
    assert client.get(f"/v1/patients/{first.json()['id']}", headers=team_b).status_code == 404
    # Within a team the id stays unique, and the 409 names only the caller's own team.
    again = client.post(
        "/v1/patients", json={"care_team": "onc-b", "external_id": "MRN-7"}, headers=team_b
    )
    assert again.status_code == 409
    assert "this care team" in again.json()["detail"]
    listed = client.get("/v1/patients", headers=tokens.admin()).json()["items"]
    assert sorted(p["care_team"] for p in listed if p["external_id"] == "MRN-7") == [
        "onc-a",
        "onc-b",
    ]
