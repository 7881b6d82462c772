"""The care team's worklist: triage order, filters, pagination, the alert workflow and its
events, the summary, and the rules API (dry run and performance)."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.models import Alert
from tests.alerts.helpers import by_rule, holds, list_all, ts
from tests.conftest import Tokens, World, db_execute
from tests.live_server import live_server

IFN = "interferon_alfa_2b"
DAY = timedelta(days=1)


@dataclass
class Scene:
    """Six alerts over two teams, made in this order:

    R1 routine worsening (onc-a), U1 urgent hypoxia (onc-a), E1 emergency cls-hypotension
    (onc-a), U2 urgent ifn-mood (onc-a), then one onc-b report raising E2 emergency
    bev-perforation and U3 urgent severe-symptom.
    """

    ids: dict[str, str]
    patients: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.ids[key]

    def names(self, alerts: list[dict[str, Any]]) -> list[str]:
        back = {v: k for k, v in self.ids.items()}
        return [back.get(a["id"], a["id"]) for a in alerts]


def build_scene(world: World) -> Scene:
    now = datetime.now(UTC)
    ids: dict[str, str] = {}
    patients: dict[str, str] = {}

    p = world.patient("onc-a", drugs=(IFN,))
    world.report(p["id"], symptoms={"fatigue": 0}, recorded_at=now - 2 * DAY)
    ids["R1"] = one(world.report(p["id"], symptoms={"fatigue": 2}), "worsening")
    patients["R1"] = p["id"]

    p = world.patient("onc-a")
    ids["U1"] = one(world.report(p["id"], vitals={"spo2": 91}), "hypoxia")
    patients["U1"] = p["id"]

    p = world.patient("onc-a", drugs=("aldesleukin",))
    ids["E1"] = one(world.report(p["id"], vitals={"systolic_bp": 84}), "cls-hypotension")
    patients["E1"] = p["id"]

    p = world.patient("onc-a", drugs=(IFN,))
    ids["U2"] = one(world.report(p["id"], symptoms={"depressed_mood": 2}), "ifn-mood")
    patients["U2"] = p["id"]

    p = world.patient("onc-b", drugs=("bevacizumab",))
    body = world.report(p["id"], symptoms={"abdominal_pain": 3})
    alerts = by_rule(body["alerts"])
    assert set(alerts) == {"bev-perforation", "severe-symptom"}
    ids["E2"] = alerts["bev-perforation"]["id"]
    ids["U3"] = alerts["severe-symptom"]["id"]
    patients["E2"] = patients["U3"] = p["id"]
    return Scene(ids, patients)


def one(body: dict[str, Any], rule: str) -> str:
    assert [a["rule_id"] for a in body["alerts"]] == [rule], body["alerts"]
    return body["alerts"][0]["id"]


def act(
    client: TestClient,
    headers: dict[str, str],
    alert_id: str,
    action: str,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    return client.post(f"/v1/alerts/{alert_id}/{action}", json=body, headers=headers)


def resolve(client: TestClient, tokens: Tokens, alert_id: str, outcome: str | None = None) -> None:
    body: dict[str, Any] = {"note": "called the patient"}
    if outcome:
        body["outcome"] = outcome
    response = act(client, tokens.admin(), alert_id, "resolve", body)
    assert response.status_code == 200, response.text


def walk(
    client: TestClient, headers: dict[str, str], limit: int, **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/alerts", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination does not end")


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


def locs(body: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in body.get("errors") or []]


# --- order and filters --------------------------------------------------------------------------


def test_triage_order_emergency_first_then_follow_up_due(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    scene = build_scene(world)
    alerts = list_all(client, tokens.admin())
    assert scene.names(alerts) == ["E1", "E2", "U1", "U2", "U3", "R1"]
    dues = [ts(a["follow_up_due_at"]) for a in alerts]
    assert dues[0] <= dues[1] and dues[2] <= dues[3] <= dues[4]


def test_default_list_is_the_callers_teams_only(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    scene = build_scene(world)
    assert scene.names(list_all(client, tokens.clinician("onc-a"))) == ["E1", "U1", "U2", "R1"]
    assert scene.names(list_all(client, tokens.clinician("onc-b"))) == ["E2", "U3"]
    assert list_all(client, tokens.clinician("onc-c")) == []
    assert scene.names(list_all(client, tokens.clinician("onc-a", "onc-b"))) == [
        "E1", "E2", "U1", "U2", "U3", "R1"
    ]  # fmt: skip


FILTERS = [
    ({"severity": "emergency"}, ["E1", "E2"]),
    ({"severity": "urgent"}, ["U1", "U2", "U3"]),
    ({"severity": "routine"}, ["R1"]),
    ({"status": "open"}, ["E1", "E2", "U3", "R1"]),
    ({"status": "acknowledged"}, ["U1"]),
    ({"status": "resolved"}, ["U2"]),
    ({"drug_code": "aldesleukin"}, ["E1"]),
    ({"drug_code": "bevacizumab"}, ["E2"]),
    ({"drug_code": IFN}, ["U2"]),
    ({"drug_code": "filgrastim"}, []),
    ({"team": "onc-b"}, ["E2", "U3"]),
    ({"team": "onc-a", "severity": "urgent"}, ["U1", "U2"]),
    ({"team": "onc-a", "status": "open", "severity": "emergency"}, ["E1"]),
]


@pytest.mark.parametrize(("params", "expected"), FILTERS, ids=lambda v: str(v))
def test_filters(
    world: World, client: TestClient, tokens: Tokens, params: dict[str, str], expected: list[str]
) -> None:
    scene = build_scene(world)
    assert act(client, tokens.admin(), scene["U1"], "acknowledge").status_code == 200
    resolve(client, tokens, scene["U2"])
    assert scene.names(list_all(client, tokens.admin(), **params)) == expected


def test_patient_filter(world: World, client: TestClient, tokens: Tokens) -> None:
    scene = build_scene(world)
    got = list_all(client, tokens.admin(), patient_id=scene.patients["E2"])
    assert scene.names(got) == ["E2", "U3"]
    got = list_all(client, tokens.clinician("onc-a"), patient_id=scene.patients["E1"])
    assert scene.names(got) == ["E1"]
    # another team's patient: nothing, not an error that tells it exists
    assert list_all(client, tokens.clinician("onc-a"), patient_id=scene.patients["E2"]) == []


def test_team_filter_cannot_widen_a_clinicians_scope(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    build_scene(world)
    assert list_all(client, tokens.clinician("onc-a"), team="onc-b") == []


@pytest.mark.parametrize(
    "params",
    [
        {"status": "closed"},
        {"severity": "high"},
        {"patient_id": "not-a-uuid"},
        {"limit": 0},
        {"limit": 201},
    ],
    ids=lambda v: str(v),
)
def test_bad_list_parameters_are_422(
    client: TestClient, tokens: Tokens, params: dict[str, Any]
) -> None:
    problem(client.get("/v1/alerts", params=params, headers=tokens.admin()), 422)


def test_limit_200_is_allowed(client: TestClient, tokens: Tokens) -> None:
    response = client.get("/v1/alerts", params={"limit": 200}, headers=tokens.admin())
    assert response.status_code == 200


def test_patients_may_not_read_alerts(world: World, client: TestClient, tokens: Tokens) -> None:
    scene = build_scene(world)
    headers = tokens.patient(scene.patients["E1"])
    assert client.get("/v1/alerts", headers=headers).status_code == 403
    assert client.get(f"/v1/alerts/{scene['E1']}", headers=headers).status_code == 403
    assert act(client, headers, scene["E1"], "acknowledge").status_code == 403
    assert client.get("/v1/alerts/summary", headers=headers).status_code == 403


def test_other_teams_alerts_are_404(world: World, client: TestClient, tokens: Tokens) -> None:
    scene = build_scene(world)
    nurse = tokens.clinician("onc-a")
    problem(client.get(f"/v1/alerts/{scene['E2']}", headers=nurse), 404)
    problem(client.get(f"/v1/alerts/{scene['E2']}/events", headers=nurse), 404)
    problem(act(client, nurse, scene["E2"], "acknowledge"), 404)
    problem(act(client, nurse, scene["E2"], "resolve", {"note": "x"}), 404)
    problem(client.get("/v1/alerts/00000000-0000-4000-8000-000000000000", headers=nurse), 404)
    # and the failed attempts changed nothing
    assert (
        client.get(f"/v1/alerts/{scene['E2']}", headers=tokens.admin()).json()["status"] == "open"
    )


# --- pagination ---------------------------------------------------------------------------------


def test_cursor_walk_with_limit_2_has_no_repeats_or_gaps(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    build_scene(world)
    extra = world.patient("onc-a", drugs=("aldesleukin",))
    world.report(extra["id"], symptoms={"confusion": 2, "decreased_urination": 2})
    full = list_all(client, tokens.admin())
    assert len(full) >= 8
    walked = walk(client, tokens.admin(), limit=2)
    assert [a["id"] for a in walked] == [a["id"] for a in full]


def test_cursor_walk_through_ties(world: World, client: TestClient, tokens: Tokens) -> None:
    """One report raises several alerts with the same severity and the same due time."""
    patient = world.patient("onc-a")
    body = world.report(
        patient["id"], symptoms={"nausea": 3}, vitals={"temperature_c": 38.5, "spo2": 91}
    )
    assert {a["rule_id"] for a in body["alerts"]} == {
        "fever", "severe-symptom", "hypoxia", "fever-sepsis", "multiple-urgent"
    }  # fmt: skip
    full = list_all(client, tokens.admin())
    assert [a["severity"] for a in full] == ["emergency"] * 2 + ["urgent"] * 3
    walked = walk(client, tokens.admin(), limit=1)
    assert [a["id"] for a in walked] == [a["id"] for a in full]


def test_cursor_walk_keeps_filters(world: World, client: TestClient, tokens: Tokens) -> None:
    scene = build_scene(world)
    walked = walk(client, tokens.admin(), limit=1, severity="urgent")
    assert scene.names(walked) == ["U1", "U2", "U3"]
    walked = walk(client, tokens.clinician("onc-a"), limit=1)
    assert scene.names(walked) == ["E1", "U1", "U2", "R1"]


def test_alerts_added_while_paging_do_not_repeat_or_skip_items(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    scene = build_scene(world)
    before = [a["id"] for a in list_all(client, tokens.admin())]
    headers = tokens.admin()

    first = client.get("/v1/alerts", params={"limit": 3}, headers=headers).json()
    seen = [a["id"] for a in first["items"]]
    assert seen == before[:3]

    # New alerts of every tier land while the nurse is on page one: an emergency (sorts before
    # the cursor), urgent and routine ones (sort after it).
    p = world.patient("onc-a", drugs=("aldesleukin",))
    world.report(p["id"], vitals={"systolic_bp": 80})
    q = world.patient("onc-b")
    late_urgent = one(world.report(q["id"], vitals={"spo2": 91}), "hypoxia")
    r = world.patient("onc-a")
    world.report(r["id"], symptoms={"nausea": 0}, recorded_at=datetime.now(UTC) - DAY)
    late_routine = one(world.report(r["id"], symptoms={"nausea": 2}), "worsening")

    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/v1/alerts", params={"limit": 3, "cursor": cursor}, headers=headers)
        assert page.status_code == 200, page.text
        seen += [a["id"] for a in page.json()["items"]]
        cursor = page.json()["next_cursor"]

    assert len(seen) == len(set(seen)), "an item was served twice"
    assert [i for i in seen if i in before] == before, "an item was skipped or reordered"
    # new items that sort after the cursor are served in their place
    assert seen.index(scene["U3"]) < seen.index(late_urgent) < seen.index(scene["R1"])
    assert seen.index(scene["R1"]) < seen.index(late_routine)


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "eyJ4IjoxfQ", "WzEsMl0", "WyJ4IiwieSIsInoiXQ", "W10", "x" * 600],
    ids=["not-base64-json", "object", "short-list", "wrong-types", "empty-list", "too-long"],
)
def test_invalid_cursor_is_422(client: TestClient, tokens: Tokens, cursor: str) -> None:
    response = client.get("/v1/alerts", params={"cursor": cursor}, headers=tokens.admin())
    body = problem(response, 422)
    assert any("cursor" in loc for loc in locs(body)), body


def test_cursor_with_naive_time_is_422(client: TestClient, tokens: Tokens) -> None:
    raw = json.dumps([0, "2026-01-01T00:00:00", "00000000-0000-4000-8000-000000000000"])
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    problem(client.get("/v1/alerts", params={"cursor": cursor}, headers=tokens.admin()), 422)


# --- one alert, its report, its workflow ----------------------------------------------------------


def test_get_alert_includes_its_report(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient("onc-a", drugs=("aldesleukin",))
    report = world.report(patient["id"], vitals={"systolic_bp": 84}, symptoms={"nausea": 1})
    alert_id = report["alerts"][0]["id"]
    response = client.get(f"/v1/alerts/{alert_id}", headers=tokens.clinician("onc-a"))
    assert response.status_code == 200, response.text
    alert = response.json()
    assert alert["id"] == alert_id
    assert alert["rule_id"] == "cls-hypotension"
    assert alert["report"]["id"] == report["id"] == alert["report_id"]
    assert alert["report"]["vitals"]["systolic_bp"] == 84
    assert alert["report"]["symptoms"] == [{"code": "nausea", "grade": 1, "note": None}]
    assert holds(alert["evidence"], "systolic_bp", 84)


def test_acknowledge_then_resolve(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient("onc-a")
    alert_id = world.report(patient["id"], vitals={"spo2": 91})["alerts"][0]["id"]
    nurse = tokens.clinician("onc-a", sub="nurse-7")

    ack = act(client, nurse, alert_id, "acknowledge", {"note": "calling now"})
    assert ack.status_code == 200, ack.text
    body = ack.json()
    assert body["status"] == "acknowledged"
    assert body["acknowledged_by"] == "nurse-7"
    assert body["acknowledged_at"] is not None
    assert body["resolved_at"] is None

    done = act(
        client,
        tokens.clinician("onc-a", sub="nurse-8"),
        alert_id,
        "resolve",
        {"note": "oximeter on cold fingers", "outcome": "false_alarm"},
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "resolved"
    assert body["resolved_by"] == "nurse-8"
    assert body["resolution_note"] == "oximeter on cold fingers"
    assert body["outcome"] == "false_alarm"
    assert body["acknowledged_by"] == "nurse-7"
    assert ts(body["resolved_at"]) >= ts(body["acknowledged_at"])


def test_acknowledge_without_body(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient("onc-a")
    alert_id = world.report(patient["id"], vitals={"spo2": 91})["alerts"][0]["id"]
    response = client.post(f"/v1/alerts/{alert_id}/acknowledge", headers=tokens.clinician("onc-a"))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "acknowledged"


def test_resolve_straight_from_open_with_confirmed(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient("onc-a")
    alert_id = world.report(patient["id"], vitals={"spo2": 88})["alerts"][0]["id"]
    done = act(
        client,
        tokens.admin("dr-1"),
        alert_id,
        "resolve",
        {"note": "admitted", "outcome": "confirmed"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["outcome"] == "confirmed"
    assert done.json()["resolved_by"] == "dr-1"
    assert done.json()["acknowledged_at"] is None


@pytest.mark.parametrize(
    "body",
    [None, {}, {"outcome": "confirmed"}, {"note": ""}, {"note": None}],
    ids=["no-body", "empty", "outcome-only", "empty-note", "null-note"],
)
def test_resolve_needs_a_note(
    world: World, client: TestClient, tokens: Tokens, body: dict[str, Any] | None
) -> None:
    patient = world.patient("onc-a")
    alert_id = world.report(patient["id"], vitals={"spo2": 91})["alerts"][0]["id"]
    problem_body = problem(act(client, tokens.admin(), alert_id, "resolve", body), 422)
    if body is not None:
        assert any("note" in loc for loc in locs(problem_body)), problem_body
    assert client.get(f"/v1/alerts/{alert_id}", headers=tokens.admin()).json()["status"] == "open"


def test_resolve_outcome_must_be_known(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient("onc-a")
    alert_id = world.report(patient["id"], vitals={"spo2": 91})["alerts"][0]["id"]
    body = problem(
        act(client, tokens.admin(), alert_id, "resolve", {"note": "x", "outcome": "maybe"}), 422
    )
    assert any("outcome" in loc for loc in locs(body)), body


ILLEGAL = [
    pytest.param(["resolve"], "resolve", id="resolve-twice"),
    pytest.param(["resolve"], "acknowledge", id="acknowledge-resolved"),
    pytest.param(["acknowledge"], "acknowledge", id="acknowledge-twice"),
    pytest.param(["acknowledge", "resolve"], "acknowledge", id="acknowledge-after-ack-resolve"),
    pytest.param(["acknowledge", "resolve"], "resolve", id="resolve-after-ack-resolve"),
]


@pytest.mark.parametrize(("done", "then"), ILLEGAL)
def test_illegal_transitions_are_409(
    world: World, client: TestClient, tokens: Tokens, done: list[str], then: str
) -> None:
    patient = world.patient("onc-a")
    alert_id = world.report(patient["id"], vitals={"spo2": 91})["alerts"][0]["id"]
    for action in done:
        assert act(client, tokens.admin(), alert_id, action, {"note": "n"}).status_code == 200
    state = client.get(f"/v1/alerts/{alert_id}", headers=tokens.admin()).json()
    problem(act(client, tokens.admin("someone-else"), alert_id, then, {"note": "again"}), 409)
    after = client.get(f"/v1/alerts/{alert_id}", headers=tokens.admin()).json()
    assert after == state  # nothing changed
    events = client.get(f"/v1/alerts/{alert_id}/events", headers=tokens.admin()).json()["items"]
    assert len(events) == 1 + len(done)


@pytest.mark.committed
def test_concurrent_resolves_have_exactly_one_winner(
    world: World, client: TestClient, tokens: Tokens, database_url: str
) -> None:
    patient = world.patient("onc-a", drugs=("aldesleukin",))
    alert_id = world.report(patient["id"], vitals={"systolic_bp": 82})["alerts"][0]["id"]
    start = threading.Barrier(2)

    with live_server(database_url) as base_url:

        def resolve_as(sub: str) -> int:
            headers = tokens.clinician("onc-a", sub=sub)
            with httpx.Client(base_url=base_url, timeout=60) as http:
                start.wait(timeout=60)
                response = http.post(
                    f"/v1/alerts/{alert_id}/resolve", json={"note": f"by {sub}"}, headers=headers
                )
                return response.status_code

        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = sorted(pool.map(resolve_as, ["nurse-a", "nurse-b"]))

    assert statuses == [200, 409]
    alert = client.get(f"/v1/alerts/{alert_id}", headers=tokens.admin()).json()
    assert alert["status"] == "resolved"
    events = client.get(f"/v1/alerts/{alert_id}/events", headers=tokens.admin()).json()["items"]
    resolved = [e for e in events if e["action"] == "resolved"]
    assert len(resolved) == 1
    assert resolved[0]["actor_sub"] == alert["resolved_by"]
    assert resolved[0]["note"] == alert["resolution_note"] == f"by {alert['resolved_by']}"


def test_events_record_every_transition_in_order(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    patient = world.patient("onc-a")
    first = world.report(patient["id"], vitals={"spo2": 91})
    alert_id = first["alerts"][0]["id"]
    second = world.report(patient["id"], vitals={"spo2": 88})
    assert (
        act(
            client,
            tokens.clinician("onc-a", sub="nurse-1"),
            alert_id,
            "acknowledge",
            {"note": "on it"},
        ).status_code
        == 200
    )
    assert (
        act(
            client,
            tokens.admin("dr-2"),
            alert_id,
            "resolve",
            {"note": "admitted", "outcome": "confirmed"},
        ).status_code
        == 200
    )

    response = client.get(f"/v1/alerts/{alert_id}/events", headers=tokens.clinician("onc-a"))
    assert response.status_code == 200, response.text
    events = response.json()["items"]
    # A re-trigger at a higher severity is a new occurrence and a severity rise: two events.
    assert [e["action"] for e in events] == [
        "raised",
        "retriggered",
        "severity_raised",
        "acknowledged",
        "resolved",
    ]
    assert [e["type"] for e in events] == [f"alert.{e['action']}" for e in events]
    raised, retriggered, severity_raised, acknowledged, resolved = events
    assert raised["report_id"] == first["id"]
    assert raised["severity"] == "urgent"
    assert raised["to_status"] == "open"
    assert retriggered["report_id"] == second["id"]
    assert retriggered["severity"] == "emergency"
    assert severity_raised["report_id"] == second["id"]
    assert severity_raised["severity"] == "emergency"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert (acknowledged["actor_sub"], acknowledged["actor_role"]) == ("nurse-1", "clinician")
    assert (acknowledged["from_status"], acknowledged["to_status"]) == ("open", "acknowledged")
    assert acknowledged["note"] == "on it"
    assert (resolved["actor_sub"], resolved["actor_role"]) == ("dr-2", "admin")
    assert (resolved["from_status"], resolved["to_status"]) == ("acknowledged", "resolved")
    assert resolved["note"] == "admitted"
    times = [ts(e["at"]) for e in events]
    assert times == sorted(times)
    assert all(e["alert_id"] == alert_id for e in events)

    paged = walk_events(client, tokens, alert_id)
    assert [e["id"] for e in paged] == [e["id"] for e in events]


def walk_events(client: TestClient, tokens: Tokens, alert_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/alerts/{alert_id}/events", params=params, headers=tokens.admin())
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items


# --- summary ------------------------------------------------------------------------------------


def make_overdue(client: TestClient, alert_id: str) -> None:
    # Test setup only: follow_up_due_at is computed from the time the report arrives, so no API
    # call can create an alert that is already past due; the test moves the due time back in the
    # database through the app's own connection instead of sleeping for an hour.
    db_execute(
        client,
        update(Alert)
        .where(Alert.id == uuid.UUID(alert_id))
        .values(follow_up_due_at=datetime.now(UTC) - timedelta(hours=2)),
    )


def test_summary_counts(world: World, client: TestClient, tokens: Tokens) -> None:
    scene = build_scene(world)
    assert act(client, tokens.admin(), scene["U1"], "acknowledge").status_code == 200
    resolve(client, tokens, scene["U2"])
    make_overdue(client, scene["U1"])  # acknowledged and past due: counts
    make_overdue(client, scene["U2"])  # resolved: never overdue
    make_overdue(client, scene["U3"])  # open, onc-b

    response = client.get("/v1/alerts/summary", headers=tokens.admin())
    assert response.status_code == 200, response.text
    s = response.json()
    assert s["total"] == 6
    assert s["overdue"] == 2
    assert s["by_severity"] == {"emergency": 2, "urgent": 3, "routine": 1}
    assert s["by_status"] == {"open": 4, "acknowledged": 1, "resolved": 1}
    assert s["by_severity_and_status"]["urgent"] == {"open": 1, "acknowledged": 1, "resolved": 1}

    a = client.get("/v1/alerts/summary", headers=tokens.clinician("onc-a")).json()
    assert a["total"] == 4
    assert a["overdue"] == 1
    assert a["by_severity"] == {"emergency": 1, "urgent": 2, "routine": 1}
    assert a["by_status"] == {"open": 2, "acknowledged": 1, "resolved": 1}

    # One team of the caller's: the counters of a dashboard filtered to it.
    one = client.get("/v1/alerts/summary", params={"team": "onc-a"}, headers=tokens.admin())
    assert one.json() == a
    both = tokens.clinician("onc-a", "onc-b")
    assert client.get("/v1/alerts/summary", params={"team": "onc-a"}, headers=both).json() == a
    # Naming another team's code does not widen a clinician's scope.
    other = client.get(
        "/v1/alerts/summary", params={"team": "onc-b"}, headers=tokens.clinician("onc-a")
    )
    assert other.json()["total"] == 0

    c = client.get("/v1/alerts/summary", headers=tokens.clinician("onc-c")).json()
    assert c["total"] == 0
    assert c["overdue"] == 0
    assert c["by_severity"] == {"emergency": 0, "urgent": 0, "routine": 0}


def test_summary_of_nothing(client: TestClient, tokens: Tokens) -> None:
    s = client.get("/v1/alerts/summary", headers=tokens.admin()).json()
    assert s["total"] == 0
    assert s["overdue"] == 0
    assert s["by_status"] == {"open": 0, "acknowledged": 0, "resolved": 0}


def test_fresh_alerts_are_not_overdue(world: World, client: TestClient, tokens: Tokens) -> None:
    build_scene(world)
    assert client.get("/v1/alerts/summary", headers=tokens.admin()).json()["overdue"] == 0


# --- rules API: dry run ---------------------------------------------------------------------------


def evaluate(client: TestClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return client.post("/v1/rules/evaluate", json=body, headers=headers)


def test_dry_run_says_what_would_be_raised_and_stores_nothing(
    client: TestClient, tokens: Tokens
) -> None:
    response = evaluate(
        client,
        tokens.clinician("onc-a"),
        drug_codes=["aldesleukin"],
        report={"vitals": {"systolic_bp": 84}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    findings = by_rule(body["alerts"])
    assert set(findings) == {"cls-hypotension"}
    finding = findings["cls-hypotension"]
    assert finding["severity"] == "emergency"
    assert finding["drug_code"] == "aldesleukin"
    assert "84 mm Hg" in finding["detail"]
    assert holds(finding["evidence"], "systolic_bp", 84)
    assert finding["follow_up_minutes"] == 60
    assert body["advice"]["severity"] == "emergency"
    assert body["advice"]["message"]

    assert list_all(client, tokens.admin()) == []
    assert client.get("/v1/alerts/summary", headers=tokens.admin()).json()["total"] == 0
    assert client.get("/v1/patients", headers=tokens.admin()).json()["items"] == []


DRY_RUNS = [
    pytest.param(
        {"drug_codes": [IFN], "report": {"symptoms": [{"code": "fever", "grade": 1}]}},
        set(),
        None,
        id="quiet",
    ),
    pytest.param(
        {
            "drug_codes": [],
            "report": {
                "symptoms": [{"code": "nausea", "grade": 3}],
                "vitals": {"temperature_c": 38.5},
            },
        },
        {"fever", "severe-symptom", "multiple-urgent"},
        "emergency",
        id="ukons",
    ),
    pytest.param(
        {
            "drug_codes": ["aldesleukin"],
            "baseline_weight_kg": 70,
            "report": {"vitals": {"weight_kg": 74}},
        },
        {"cls-weight"},
        "urgent",
        id="baseline-weight",
    ),
    pytest.param(
        {
            "drug_codes": ["aldesleukin"],
            "history": [{"recorded_at": "2026-01-01T08:00:00Z", "vitals": {"weight_kg": 70}}],
            "report": {"recorded_at": "2026-01-03T08:00:00Z", "vitals": {"weight_kg": 77}},
        },
        {"cls-weight"},
        "emergency",
        id="history-weight",
    ),
    pytest.param(
        {
            "drug_codes": [IFN],
            "history": [
                {
                    "recorded_at": "2026-01-01T08:00:00+01:00",
                    "symptoms": [{"code": "fatigue", "grade": 0}],
                }
            ],
            "report": {
                "recorded_at": "2026-01-05T08:00:00+01:00",
                "symptoms": [{"code": "fatigue", "grade": 2}],
            },
        },
        {"worsening"},
        "routine",
        id="history-worsening",
    ),
    pytest.param(
        {
            "drug_codes": [IFN],
            "history": [
                {
                    "recorded_at": "2026-01-01T08:00:00Z",
                    "symptoms": [{"code": "fatigue", "grade": 0}],
                }
            ],
            "report": {
                "recorded_at": "2026-01-20T08:00:00Z",
                "symptoms": [{"code": "fatigue", "grade": 2}],
            },
        },
        set(),
        None,
        id="history-too-old",
    ),
    pytest.param(
        {"drug_codes": ["bevacizumab"], "report": {"vitals": {"systolic_bp": 85}}},
        {"circulation"},  # not cls-hypotension: that one is aldesleukin's
        "emergency",
        id="bev-low-bp",
    ),
]


@pytest.mark.parametrize(("body", "rules", "advice"), DRY_RUNS)
def test_dry_run_cases(
    client: TestClient, tokens: Tokens, body: dict[str, Any], rules: set[str], advice: str | None
) -> None:
    response = evaluate(client, tokens.admin(), **body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert {a["rule_id"] for a in result["alerts"]} == rules
    assert (result["advice"] or {}).get("severity") == advice
    assert list_all(client, tokens.admin()) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"drug_codes": ["aspirin"], "report": {"vitals": {"spo2": 95}}}, "drug_codes"),
        ({"report": {"symptoms": [{"code": "hiccups", "grade": 2}]}}, "symptoms"),
        (
            {
                "history": [
                    {
                        "recorded_at": "2026-01-01T00:00:00Z",
                        "symptoms": [{"code": "hiccups", "grade": 1}],
                    }
                ],
                "report": {"vitals": {"spo2": 95}},
            },
            "history",
        ),
        ({"report": {"symptoms": [{"code": "fever", "grade": 5}]}}, "grade"),
        ({"report": {"vitals": {"spo2": 20}}}, "spo2"),
        ({"report": {}}, "report"),
        ({"drug_codes": ["aldesleukin"]}, "report"),
        ({"report": {"vitals": {"spo2": 95}, "recorded_at": "2026-01-01T00:00:00"}}, "recorded_at"),
    ],
    ids=[
        "unknown-drug",
        "unknown-symptom",
        "unknown-history-symptom",
        "grade-5",
        "spo2-range",
        "empty-report",
        "no-report",
        "naive-time",
    ],
)
def test_dry_run_validation(
    client: TestClient, tokens: Tokens, body: dict[str, Any], field: str
) -> None:
    result = problem(evaluate(client, tokens.admin(), **body), 422)
    assert any(field in loc for loc in locs(result)), result


def test_dry_run_is_for_staff_only(world: World, client: TestClient, tokens: Tokens) -> None:
    patient = world.patient("onc-a")
    body = {"drug_codes": [], "report": {"vitals": {"spo2": 95}}}
    assert evaluate(client, tokens.patient(patient["id"]), **body).status_code == 403
    assert client.post("/v1/rules/evaluate", json=body).status_code == 401


# --- rules API: performance -----------------------------------------------------------------------


def perf(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/rules/performance", headers=headers)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    out = {}
    for item in items:
        key = item["rule_id"]
        assert key not in out  # one rule version each in this scene
        out[key] = item
    return out


def test_rule_performance_per_rule_version_and_team(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    hyp: list[dict[str, Any]] = []
    for team in ("onc-a", "onc-a", "onc-a", "onc-b"):
        p = world.patient(team)
        hyp.append(world.report(p["id"], vitals={"spo2": 91})["alerts"][0])
    p = world.patient("onc-a")
    fever = world.report(p["id"], vitals={"temperature_c": 38.3})["alerts"][0]
    assert fever["rule_id"] == "fever"

    resolve(client, tokens, hyp[0]["id"], "confirmed")
    resolve(client, tokens, hyp[1]["id"], "false_alarm")
    # hyp[2] stays open
    resolve(client, tokens, hyp[3]["id"], "confirmed")  # onc-b
    resolve(client, tokens, fever["id"])  # resolved, not judged

    a = perf(client, tokens.clinician("onc-a"))
    assert set(a) == {"hypoxia", "fever"}
    version = hyp[0]["rule_version"]
    assert a["hypoxia"] == {
        "rule_id": "hypoxia", "rule_version": version, "raised": 3, "resolved": 2,
        "confirmed": 1, "false_alarm": 1, "ppv": 0.5,
    }  # fmt: skip
    assert a["fever"]["raised"] == 1
    assert a["fever"]["resolved"] == 1
    assert a["fever"]["confirmed"] == a["fever"]["false_alarm"] == 0
    assert a["fever"]["ppv"] is None
    assert a["fever"]["rule_version"] == fever["rule_version"]

    b = perf(client, tokens.clinician("onc-b"))
    assert set(b) == {"hypoxia"}
    assert (b["hypoxia"]["raised"], b["hypoxia"]["confirmed"], b["hypoxia"]["ppv"]) == (1, 1, 1.0)

    everyone = perf(client, tokens.admin())
    assert everyone["hypoxia"]["raised"] == 4
    assert everyone["hypoxia"]["confirmed"] == 2
    assert everyone["hypoxia"]["ppv"] == pytest.approx(2 / 3, abs=1e-3)

    assert perf(client, tokens.clinician("onc-c")) == {}


def test_rule_performance_with_nothing_judged(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    p = world.patient("onc-a", drugs=("aldesleukin",))
    world.report(p["id"], vitals={"systolic_bp": 84})
    got = perf(client, tokens.clinician("onc-a"))
    assert got["cls-hypotension"]["raised"] == 1
    assert got["cls-hypotension"]["resolved"] == 0
    assert got["cls-hypotension"]["ppv"] is None


def test_rule_performance_is_for_staff_only(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    p = world.patient("onc-a")
    assert client.get("/v1/rules/performance", headers=tokens.patient(p["id"])).status_code == 403
