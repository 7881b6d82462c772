"""Who may do what: every endpoint of the app by every kind of caller, with the exact status.

Semantics (API.md, "Who may do what" and Conventions):
- no token → 401 with ``WWW-Authenticate: Bearer`` and problem+json;
- a role that may never do the action → 403;
- a patient or alert outside the caller's scope → 404 (no existence leaks);
- otherwise success.

The world of every cell: patient A in team "onc-a" on aldesleukin with an open emergency alert
(a report with systolic_bp 80), patient B in team "onc-b". Callers: no token, A herself (patient
self), B (another patient), a clinician of onc-a (in team), a clinician of onc-b (another team),
an admin. The matrix runs on its own database (``fresh_app``) because one row replaces a drug.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.conftest import Tokens, World, report_body

TEAM_A = "onc-a"
TEAM_B = "onc-b"
CALLERS = ("none", "patient_self", "patient_other", "clinician_team", "clinician_other", "admin")
PROBLEM_JSON = "application/problem+json"


@dataclass
class Scene:
    """The data one cell needs, and the headers of each caller."""

    patient_a: dict[str, Any]
    patient_b: dict[str, Any]
    alert_id: str
    drug_body: dict[str, Any]
    headers: dict[str, dict[str, str]]


def build_scene(client: TestClient, tokens: Tokens) -> Scene:
    world = World(client, tokens)
    patient_a = world.patient(TEAM_A, drugs=("aldesleukin",))
    patient_b = world.patient(TEAM_B, drugs=("interferon_alfa_2b",))
    created = world.report(patient_a["id"], vitals={"systolic_bp": 80})
    assert created["alerts"], "a systolic_bp of 80 on aldesleukin must raise an alert"
    drug = client.get("/v1/drugs/bevacizumab", headers=tokens.admin())
    assert drug.status_code == 200, drug.text
    return Scene(
        patient_a=patient_a,
        patient_b=patient_b,
        alert_id=created["alerts"][0]["id"],
        drug_body=drug_put_body(drug.json()),
        headers={
            "none": {},
            "patient_self": tokens.patient(patient_a["id"]),
            "patient_other": tokens.patient(patient_b["id"]),
            "clinician_team": tokens.clinician(TEAM_A, sub="nurse-a"),
            "clinician_other": tokens.clinician(TEAM_B, sub="nurse-b"),
            "admin": tokens.admin(),
        },
    )


def drug_put_body(detail: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/drugs/{code} reshaped into a valid PUT body for the same drug."""
    body = {k: v for k, v in detail.items() if k not in ("code", "rules")}
    body["rules"] = [r["definition"] for r in detail["rules"] if r["drug_code"] == detail["code"]]
    return body


def new_report(**extra: Any) -> dict[str, Any]:
    return report_body({"fatigue": 1}, **extra)


# --- the matrix -------------------------------------------------------------------------------

Request = Callable[[Scene], dict[str, Any]]


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # the route template, as in app.routes
    expected: tuple[int, int, int, int, int, int]  # in the order of CALLERS
    request: Request = lambda s: {}  # extra keyword arguments for client.request
    fresh: bool = False  # the success changes the state the next caller would see


def _a(s: Scene) -> str:
    return s.patient_a["id"]


# No such subscription: the webhook rows check who may ask; tests/notifications the rest.
NO_WEBHOOK = str(uuid.uuid4())


def path_of(row: Row, scene: Scene) -> str:
    return row.path.format(
        code="bevacizumab", patient_id=_a(scene), alert_id=scene.alert_id, webhook_id=NO_WEBHOOK
    )


ANY_ROLE = (401, 200, 200, 200, 200, 200)
PUBLIC = (200, 200, 200, 200, 200, 200)
ADMIN_ONLY = (401, 403, 403, 403, 403, 200)
# patient self, clinician in team and admin see patient A; patient B and onc-b do not (404).
PATIENT_SCOPE = (401, 200, 404, 200, 404, 200)
PATIENT_SCOPE_CREATE = (401, 201, 404, 201, 404, 201)
# Staff only; a patient is refused whatever the resource, the other team sees nothing.
STAFF_ON_ALERT = (401, 403, 403, 200, 404, 200)
STAFF_LIST = (401, 403, 403, 200, 200, 200)

MATRIX: tuple[Row, ...] = (
    Row("GET", "/healthz", PUBLIC),
    Row("GET", "/readyz", PUBLIC),
    Row("GET", "/metrics", PUBLIC),  # METRICS_TOKEN unset; tests/foundation/test_metrics.py
    # catalog
    Row("GET", "/v1/symptoms", ANY_ROLE),
    Row("GET", "/v1/drugs", ANY_ROLE),
    Row("GET", "/v1/drugs/{code}", ANY_ROLE),
    Row("PUT", "/v1/drugs/{code}", ADMIN_ONLY, lambda s: {"json": s.drug_body}),
    # patients and therapies
    Row(
        "POST",
        "/v1/patients",
        (401, 403, 403, 201, 403, 201),
        lambda s: {"json": {"care_team": TEAM_A}},
    ),
    Row("GET", "/v1/patients", STAFF_LIST),
    Row("GET", "/v1/patients/{patient_id}", PATIENT_SCOPE),
    Row(
        "POST",
        "/v1/patients/{patient_id}/therapies",
        (401, 403, 403, 201, 404, 201),
        lambda s: {"json": {"drug_code": "filgrastim", "started_on": "2026-01-05"}},
    ),
    Row("GET", "/v1/patients/{patient_id}/therapies", PATIENT_SCOPE),
    Row("GET", "/v1/patients/{patient_id}/questionnaire", PATIENT_SCOPE),
    # reports
    Row(
        "POST",
        "/v1/patients/{patient_id}/reports",
        PATIENT_SCOPE_CREATE,
        lambda s: {"json": new_report()},
    ),
    Row(
        "POST",
        "/v1/patients/{patient_id}/reports/batch",
        PATIENT_SCOPE,
        lambda s: {"json": {"reports": [new_report()]}},
    ),
    Row("GET", "/v1/patients/{patient_id}/reports", PATIENT_SCOPE),
    # interoperability: the EHR export is for staff, within the patient record's scope
    Row("GET", "/v1/patients/{patient_id}/fhir", (401, 403, 403, 200, 404, 200)),
    # alerts
    Row("GET", "/v1/alerts", STAFF_LIST),
    Row("GET", "/v1/alerts/summary", STAFF_LIST),
    Row("GET", "/v1/alerts/{alert_id}", STAFF_ON_ALERT),
    Row(
        "POST",
        "/v1/alerts/{alert_id}/acknowledge",
        STAFF_ON_ALERT,
        lambda s: {"json": {"note": "called the patient"}},
        fresh=True,
    ),
    Row(
        "POST",
        "/v1/alerts/{alert_id}/resolve",
        STAFF_ON_ALERT,
        lambda s: {"json": {"note": "seen in clinic", "outcome": "confirmed"}},
        fresh=True,
    ),
    Row("GET", "/v1/alerts/{alert_id}/events", STAFF_ON_ALERT),
    # The live feed never ends when it answers 200: a bad Last-Event-ID (422) shows who gets
    # past the role check; tests/notifications/test_stream.py streams.
    Row(
        "GET",
        "/v1/alerts/stream",
        (401, 403, 403, 422, 422, 422),
        lambda s: {"headers": {"Last-Event-ID": "not-an-id"}},
    ),
    # webhooks
    Row(
        "POST",
        "/v1/webhooks",
        (401, 403, 403, 403, 403, 201),
        lambda s: {"json": {"url": "https://example.org/hook", "events": ["alert.raised"]}},
    ),
    Row("GET", "/v1/webhooks", ADMIN_ONLY),
    Row("GET", "/v1/webhooks/{webhook_id}", (401, 403, 403, 403, 403, 404)),
    Row("DELETE", "/v1/webhooks/{webhook_id}", (401, 403, 403, 403, 403, 404)),
    Row("GET", "/v1/webhooks/{webhook_id}/deliveries", (401, 403, 403, 403, 403, 404)),
    # rules
    Row(
        "POST",
        "/v1/rules/evaluate",
        STAFF_LIST,
        lambda s: {
            "json": {"drug_codes": ["aldesleukin"], "report": {"vitals": {"systolic_bp": 80}}}
        },
    ),
    Row("GET", "/v1/rules/performance", STAFF_LIST),
    Row(
        "POST",
        "/v1/rules/backtest",
        ADMIN_ONLY,
        lambda s: {
            "json": {
                "drug": {"code": "bevacizumab", **s.drug_body},
                "since": (datetime.now(UTC) - timedelta(days=30)).isoformat(),
                "until": datetime.now(UTC).isoformat(),
            }
        },
    ),
    # audit
    Row("GET", "/v1/audit", ADMIN_ONLY),
)


@pytest.fixture
def fresh_client(fresh_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(fresh_app, raise_server_exceptions=False) as test_client:
        yield test_client


def app_endpoints(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every API route, including those of included routers."""
    try:  # FastAPI ≥ 0.160 keeps included routers nested in app.routes
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI flattens them
        found = [(r, getattr(r, "path", None), getattr(r, "methods", None)) for r in app.routes]
    else:
        found = [(c.original_route, c.path, c.methods) for c in iter_route_contexts(app.routes)]
    return {
        (method, path)
        for route, path, methods in found
        if isinstance(route, APIRoute) and path and methods
        for method in methods - {"HEAD", "OPTIONS"}
    }


def test_the_matrix_lists_every_endpoint_of_the_app(app: FastAPI) -> None:
    listed = [(row.method, row.path) for row in MATRIX]
    assert len(listed) == len(set(listed)), "an endpoint is listed twice"
    routes = app_endpoints(app)
    assert set(listed) == routes, (
        f"not in the matrix: {sorted(routes - set(listed))}; "
        f"in the matrix but not in the app: {sorted(set(listed) - routes)}"
    )
    openapi = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert openapi == set(listed), f"documented vs matrix differ: {openapi ^ set(listed)}"


def check_cell(response: Any, expected: int) -> str | None:
    """None when the answer is right; otherwise what was wrong, in a few words."""
    if response.status_code != expected:
        return f"got {response.status_code}: {response.text[:120]}"
    if expected < 400:
        return None
    if response.headers.get("content-type") != PROBLEM_JSON:
        return f"content-type {response.headers.get('content-type')!r}, not problem+json"
    body = response.json()
    if body.get("status") != expected or not body.get("title"):
        return f"problem body {body}"
    if expected == 401 and response.headers.get("www-authenticate") != "Bearer":
        return f"WWW-Authenticate {response.headers.get('www-authenticate')!r}"
    return None


def test_access_matrix(fresh_client: TestClient, tokens: Tokens) -> None:
    shared = build_scene(fresh_client, tokens)
    mismatches: list[tuple[str, str, int, str]] = []
    for row in MATRIX:
        for caller, expected in zip(CALLERS, row.expected, strict=True):
            scene = build_scene(fresh_client, tokens) if row.fresh else shared
            extra = row.request(scene)
            response = fresh_client.request(
                row.method,
                path_of(row, scene),
                headers={**scene.headers[caller], **extra.pop("headers", {})},
                **extra,
            )
            problem = check_cell(response, expected)
            if problem:
                mismatches.append((f"{row.method} {row.path}", caller, expected, problem))
    table = "\n".join(
        f"{endpoint:<45} {caller:<16} want {want}  {problem}"
        for endpoint, caller, want, problem in mismatches
    )
    assert not mismatches, f"{len(mismatches)} cell(s) of the access matrix are wrong:\n{table}"


# --- lists are filtered in the query, not only guarded ---------------------------------------


@pytest.fixture
def scene(client: TestClient, tokens: Tokens) -> Scene:
    return build_scene(client, tokens)


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def test_a_clinician_lists_only_the_patients_of_its_teams(client: TestClient, scene: Scene) -> None:
    a, b = scene.patient_a["id"], scene.patient_b["id"]
    team = scene.headers["clinician_team"]
    other = scene.headers["clinician_other"]
    assert ids(client.get("/v1/patients", headers=team)) == {a}
    assert ids(client.get("/v1/patients", headers=other)) == {b}
    assert ids(client.get("/v1/patients", headers=scene.headers["admin"])) == {a, b}
    # Asking for another team's patients by name does not widen the scope.
    assert ids(client.get("/v1/patients", params={"team": TEAM_A}, headers=other)) == set()


def test_a_clinician_in_several_teams_sees_all_of_them(
    client: TestClient, tokens: Tokens, scene: Scene
) -> None:
    both = tokens.clinician(TEAM_A, TEAM_B, sub="float-nurse")
    expected = {scene.patient_a["id"], scene.patient_b["id"]}
    assert ids(client.get("/v1/patients", headers=both)) == expected
    assert ids(client.get("/v1/alerts", headers=both)) == {scene.alert_id}


def test_a_clinician_lists_only_the_alerts_of_its_teams(client: TestClient, scene: Scene) -> None:
    team = scene.headers["clinician_team"]
    other = scene.headers["clinician_other"]
    assert ids(client.get("/v1/alerts", headers=team)) == {scene.alert_id}
    assert ids(client.get("/v1/alerts", headers=scene.headers["admin"])) == {scene.alert_id}
    assert ids(client.get("/v1/alerts", headers=other)) == set()
    for params in (
        {"team": TEAM_A},
        {"patient_id": scene.patient_a["id"]},
        {"drug_code": "aldesleukin"},
        {"status": "open"},
        {"severity": "emergency"},
    ):
        found = ids(client.get("/v1/alerts", params=params, headers=other))
        assert found == set(), f"onc-b sees onc-a's alerts with {params}"


def test_the_alert_summary_counts_only_the_callers_teams(client: TestClient, scene: Scene) -> None:
    mine = client.get("/v1/alerts/summary", headers=scene.headers["clinician_team"])
    theirs = client.get("/v1/alerts/summary", headers=scene.headers["clinician_other"])
    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["total"] == 1
    assert mine.json()["by_status"]["open"] == 1
    assert theirs.json()["total"] == 0
    assert sum(theirs.json()["by_severity"].values()) == 0


def test_rule_performance_counts_only_the_callers_teams(client: TestClient, scene: Scene) -> None:
    mine = client.get("/v1/rules/performance", headers=scene.headers["clinician_team"])
    theirs = client.get("/v1/rules/performance", headers=scene.headers["clinician_other"])
    assert mine.status_code == theirs.status_code == 200
    assert sum(item["raised"] for item in mine.json()["items"]) == 1
    assert theirs.json()["items"] == []


def test_the_other_team_cannot_tell_an_alert_from_a_missing_one(
    client: TestClient, scene: Scene
) -> None:
    other = scene.headers["clinician_other"]
    for suffix in ("", "/events"):
        hidden = client.get(f"/v1/alerts/{scene.alert_id}{suffix}", headers=other)
        missing = client.get(f"/v1/alerts/{uuid.uuid4()}{suffix}", headers=other)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == missing.json()
    # ...and a refused transition leaves the alert as it was.
    client.post(f"/v1/alerts/{scene.alert_id}/resolve", json={"note": "x"}, headers=other)
    alert = client.get(f"/v1/alerts/{scene.alert_id}", headers=scene.headers["admin"])
    assert alert.json()["status"] == "open"


def test_a_patient_outside_scope_looks_like_a_missing_one(client: TestClient, scene: Scene) -> None:
    for caller in ("patient_other", "clinician_other"):
        headers = scene.headers[caller]
        for suffix in ("", "/therapies", "/questionnaire", "/reports"):
            hidden = client.get(f"/v1/patients/{scene.patient_a['id']}{suffix}", headers=headers)
            missing = client.get(f"/v1/patients/{uuid.uuid4()}{suffix}", headers=headers)
            assert hidden.status_code == missing.status_code == 404, (caller, suffix)
            assert hidden.json() == missing.json(), (caller, suffix)


def test_a_patient_cannot_write_into_another_patients_record(
    client: TestClient, scene: Scene, tokens: Tokens
) -> None:
    a = scene.patient_a["id"]
    intruder = scene.headers["patient_other"]
    assert (
        client.post(f"/v1/patients/{a}/reports", json=new_report(), headers=intruder).status_code
        == 404
    )
    batch = {"reports": [new_report()]}
    assert (
        client.post(f"/v1/patients/{a}/reports/batch", json=batch, headers=intruder).status_code
        == 404
    )
    reports = client.get(f"/v1/patients/{a}/reports", headers=tokens.admin())
    assert len(reports.json()["items"]) == 1  # only the report the scene made


def test_a_patient_token_for_a_patient_that_does_not_exist_sees_nothing(
    client: TestClient, tokens: Tokens, scene: Scene
) -> None:
    ghost = tokens.patient(uuid.uuid4())
    assert client.get(f"/v1/patients/{scene.patient_a['id']}", headers=ghost).status_code == 404
    assert client.get("/v1/symptoms", headers=ghost).status_code == 200


def test_staff_create_reports_for_patients_of_their_team(client: TestClient, scene: Scene) -> None:
    a = scene.patient_a["id"]
    body = new_report(recorded_at=datetime.now(UTC) - timedelta(hours=1))
    response = client.post(
        f"/v1/patients/{a}/reports", json=body, headers=scene.headers["clinician_team"]
    )
    assert response.status_code == 201, response.text
    assert response.json()["patient_id"] == a


def test_a_client_report_id_is_scoped_to_its_patient(client: TestClient, scene: Scene) -> None:
    """Reusing another patient's idempotency key stores a new report; it never replays theirs."""
    body = new_report(note="private to A")
    a, b = scene.patient_a["id"], scene.patient_b["id"]
    first = client.post(
        f"/v1/patients/{a}/reports", json=body, headers=scene.headers["patient_self"]
    )
    assert first.status_code == 201, first.text
    other = client.post(
        f"/v1/patients/{b}/reports", json=body, headers=scene.headers["patient_other"]
    )
    assert other.status_code == 201, other.text
    assert other.json()["patient_id"] == b
    assert other.json()["id"] != first.json()["id"]
