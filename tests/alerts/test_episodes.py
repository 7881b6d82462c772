"""One alert per (patient, rule) episode: re-triggers fold in, severity only rises, resolved
episodes never absorb a new trigger, replays change nothing, and concurrency keeps all of it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.alerts.helpers import WINDOWS, by_rule, list_all, ts
from tests.conftest import Tokens, World, report_body
from tests.live_server import live_server

MINUTE = timedelta(minutes=1)


def post(client: TestClient, tokens: Tokens, pid: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v1/patients/{pid}/reports", json=body, headers=tokens.patient(pid))


def get_alert(client: TestClient, tokens: Tokens, alert_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/alerts/{alert_id}", headers=tokens.admin())
    assert response.status_code == 200, response.text
    return response.json()


def test_retrigger_adds_occurrence_to_the_open_alert(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    now = datetime.now(UTC)
    first = world.report(patient["id"], vitals={"systolic_bp": 84}, recorded_at=now - 10 * MINUTE)
    second = world.report(patient["id"], vitals={"systolic_bp": 82}, recorded_at=now - MINUTE)

    a1 = by_rule(first["alerts"])["cls-hypotension"]
    a2 = by_rule(second["alerts"])["cls-hypotension"]
    assert a2["id"] == a1["id"]
    assert a2["occurrences"] == 2
    assert a2["status"] == "open"
    assert ts(a2["last_triggered_at"]) > ts(a1["last_triggered_at"])
    assert a2["created_at"] == a1["created_at"]
    assert a2["report_id"] == first["id"]  # the report that opened the episode
    assert second["advice"]["severity"] == "emergency"  # the patient is told again

    alerts = list_all(client, tokens.admin(), patient_id=patient["id"])
    assert [a["id"] for a in alerts] == [a1["id"]]
    assert alerts[0]["occurrences"] == 2


def test_acknowledged_alert_absorbs_a_retrigger(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient()
    first = world.report(patient["id"], vitals={"spo2": 91})
    alert_id = first["alerts"][0]["id"]
    ack = client.post(f"/v1/alerts/{alert_id}/acknowledge", json={}, headers=tokens.admin())
    assert ack.status_code == 200, ack.text

    second = world.report(patient["id"], vitals={"spo2": 90.5})
    again = by_rule(second["alerts"])["hypoxia"]
    assert again["id"] == alert_id
    assert again["status"] == "acknowledged"
    assert again["occurrences"] == 2
    assert len(list_all(client, tokens.admin(), patient_id=patient["id"])) == 1


def test_higher_severity_retrigger_raises_the_episode(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient()
    urgent = world.report(patient["id"], vitals={"spo2": 91})
    alert = by_rule(urgent["alerts"])["hypoxia"]
    assert alert["severity"] == "urgent"

    emergency = world.report(patient["id"], vitals={"spo2": 88})
    raised = by_rule(emergency["alerts"])["hypoxia"]
    assert raised["id"] == alert["id"]
    assert raised["severity"] == "emergency"
    assert raised["occurrences"] == 2
    assert emergency["advice"]["severity"] == "emergency"
    # An emergency is followed up within the hour of the report that made it one.
    assert ts(raised["follow_up_due_at"]) - ts(raised["last_triggered_at"]) == WINDOWS["emergency"]
    assert "88%" in raised["detail"]

    stored = get_alert(client, tokens, alert["id"])
    assert stored["severity"] == "emergency"
    assert stored["follow_up_due_at"] == raised["follow_up_due_at"]


def test_lower_severity_retrigger_never_lowers_the_episode(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient()
    emergency = world.report(patient["id"], vitals={"spo2": 88})
    alert = by_rule(emergency["alerts"])["hypoxia"]
    assert alert["severity"] == "emergency"

    urgent = world.report(patient["id"], vitals={"spo2": 91})
    again = by_rule(urgent["alerts"])["hypoxia"]
    assert again["id"] == alert["id"]
    assert again["severity"] == "emergency"
    assert again["occurrences"] == 2
    assert again["follow_up_due_at"] == alert["follow_up_due_at"]  # not pushed back to 24 h
    assert "88%" in again["detail"]  # still says what made it an emergency

    stored = get_alert(client, tokens, alert["id"])
    assert stored["severity"] == "emergency"
    assert stored["occurrences"] == 2


def test_after_resolve_a_new_trigger_opens_a_new_alert(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("filgrastim",))
    first = world.report(patient["id"], symptoms={"abdominal_pain": 2})
    old = by_rule(first["alerts"])["gcsf-spleen"]
    done = client.post(
        f"/v1/alerts/{old['id']}/resolve", json={"note": "scan clear"}, headers=tokens.admin()
    )
    assert done.status_code == 200, done.text

    second = world.report(patient["id"], symptoms={"abdominal_pain": 2})
    new = by_rule(second["alerts"])["gcsf-spleen"]
    assert new["id"] != old["id"]
    assert new["status"] == "open"
    assert new["occurrences"] == 1
    assert new["report_id"] == second["id"]

    resolved = get_alert(client, tokens, old["id"])
    assert resolved["status"] == "resolved"
    assert resolved["occurrences"] == 1
    ids = {a["id"] for a in list_all(client, tokens.admin(), patient_id=patient["id"])}
    assert ids == {old["id"], new["id"]}


def test_episodes_are_per_patient_and_per_rule(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    a = world.patient(drugs=("aldesleukin",))
    b = world.patient(drugs=("aldesleukin",))
    ra = world.report(a["id"], vitals={"systolic_bp": 84})
    rb = world.report(b["id"], vitals={"systolic_bp": 84})
    assert ra["alerts"][0]["id"] != rb["alerts"][0]["id"]
    rc = world.report(a["id"], vitals={"spo2": 91})
    assert {x["rule_id"] for x in rc["alerts"]} == {"hypoxia"}
    assert rc["alerts"][0]["occurrences"] == 1
    assert len(list_all(client, tokens.admin())) == 3


def test_idempotent_replay_returns_the_same_alerts_and_adds_nothing(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    body = report_body(vitals={"systolic_bp": 80, "heart_rate": 140})
    first = post(client, tokens, patient["id"], body)
    assert first.status_code == 201, first.text
    replay = post(client, tokens, patient["id"], body)
    assert replay.status_code == 200, replay.text

    one, two = first.json(), replay.json()
    assert two["id"] == one["id"]
    assert two["advice"] == one["advice"]
    assert one["advice"]["severity"] == "emergency"
    assert sorted((a["id"], a["rule_id"]) for a in two["alerts"]) == sorted(
        (a["id"], a["rule_id"]) for a in one["alerts"]
    )
    assert {a["rule_id"] for a in one["alerts"]} == {"cls-hypotension", "il2-heart"}
    for alert in two["alerts"]:
        assert alert["occurrences"] == 1
        assert get_alert(client, tokens, alert["id"])["occurrences"] == 1
        events = client.get(f"/v1/alerts/{alert['id']}/events", headers=tokens.admin()).json()
        assert [e["action"] for e in events["items"]] == ["raised"]
    assert len(list_all(client, tokens.admin(), patient_id=patient["id"])) == 2


def test_replay_of_a_quiet_report_stays_quiet(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    body = report_body(symptoms={"nausea": 1})
    assert post(client, tokens, patient["id"], body).status_code == 201
    replay = post(client, tokens, patient["id"], body)
    assert replay.status_code == 200
    assert replay.json()["alerts"] == []
    assert replay.json()["advice"] is None


def test_same_id_different_body_is_a_conflict_and_raises_nothing(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    body = report_body(symptoms={"nausea": 1})
    assert post(client, tokens, patient["id"], body).status_code == 201
    changed = body | {"vitals": {"systolic_bp": 80}}
    response = post(client, tokens, patient["id"], changed)
    assert response.status_code == 409, response.text
    assert list_all(client, tokens.admin(), patient_id=patient["id"]) == []


@pytest.mark.committed
def test_concurrent_triggering_reports_share_one_episode(
    world: World, client: TestClient, tokens: Tokens, database_url: str
) -> None:
    """16 simultaneous reports, all systolic 80 on aldesleukin: one open alert, 16 occurrences.

    Real parallel HTTP requests against a live server (separate connections and transactions):
    SQLite serialises the writers, PostgreSQL relies on the patient row lock.
    """
    patient = world.patient(drugs=("aldesleukin",))
    pid = patient["id"]
    headers = tokens.patient(pid)
    n = 16
    bodies = [report_body(vitals={"systolic_bp": 80}) for _ in range(n)]
    start = threading.Barrier(n)

    with live_server(database_url) as base_url:

        def send(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            with httpx.Client(base_url=base_url, timeout=60) as http:
                start.wait(timeout=60)
                response = http.post(f"/v1/patients/{pid}/reports", json=body, headers=headers)
                return response.status_code, response.json()

        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(send, bodies))

    assert [status for status, _ in results] == [201] * n, results
    ids = {a["id"] for _, body in results for a in body["alerts"]}
    assert len(ids) == 1
    assert all(body["advice"]["severity"] == "emergency" for _, body in results)
    assert sorted(
        by_rule(body["alerts"])["cls-hypotension"]["occurrences"] for _, body in results
    ) == list(range(1, n + 1))

    alerts = list_all(client, tokens.admin(), patient_id=pid)
    assert [(a["rule_id"], a["status"]) for a in alerts] == [("cls-hypotension", "open")]
    assert alerts[0]["occurrences"] == n
    events = client.get(
        f"/v1/alerts/{alerts[0]['id']}/events", params={"limit": 200}, headers=tokens.admin()
    ).json()["items"]
    assert sorted(e["action"] for e in events) == ["raised"] + ["retriggered"] * (n - 1)


def test_batch_reports_fold_into_one_episode_and_duplicates_add_nothing(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    now = datetime.now(UTC)
    bodies = [
        report_body(vitals={"systolic_bp": 85 - i}, recorded_at=now - (10 - i) * MINUTE)
        for i in range(3)
    ]
    url = f"/v1/patients/{patient['id']}/reports/batch"
    headers = tokens.patient(patient["id"])
    first = client.post(url, json={"reports": bodies}, headers=headers)
    assert first.status_code == 200, first.text
    assert [r["status"] for r in first.json()["results"]] == ["created"] * 3

    alerts = list_all(client, tokens.admin(), patient_id=patient["id"])
    assert [(a["rule_id"], a["occurrences"]) for a in alerts] == [("cls-hypotension", 3)]
    assert alerts[0]["report_id"] == first.json()["results"][0]["report_id"]

    again = client.post(url, json={"reports": bodies}, headers=headers)
    assert [r["status"] for r in again.json()["results"]] == ["duplicate"] * 3
    alerts = list_all(client, tokens.admin(), patient_id=patient["id"])
    assert [(a["rule_id"], a["occurrences"]) for a in alerts] == [("cls-hypotension", 3)]


def test_replaying_a_report_that_raised_the_severity_lists_its_alert_once(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    # That report wrote two events of the alert (retriggered, severity_raised).
    patient = world.patient("onc-a")
    world.report(patient["id"], vitals={"spo2": 91})
    body = report_body(vitals={"spo2": 88})
    url = f"/v1/patients/{patient['id']}/reports"
    first = client.post(url, json=body, headers=tokens.patient(patient["id"]))
    assert first.status_code == 201, first.text
    again = client.post(url, json=body, headers=tokens.patient(patient["id"]))
    assert again.status_code == 200, again.text
    ids = [a["id"] for a in again.json()["alerts"]]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(a["id"] for a in first.json()["alerts"])
