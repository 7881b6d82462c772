"""The OpenAPI document declares what the service really sends: problem+json errors, only the
statuses an operation can produce, and the headers clients act on."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens, World, report_body

PROBLEM = "application/problem+json"


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, ops in spec["paths"].items()
        for method, operation in ops.items()
    ]


def statuses(spec: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(code) for code in spec["paths"][path][method.lower()]["responses"]}


def test_errors_are_declared_as_problem_json_only(spec: dict[str, Any]) -> None:
    assert "Problem" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method, path, operation in operations(spec):
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                assert set(response["content"]) == {PROBLEM}, f"{method} {path} {code}"
                schema = response["content"][PROBLEM]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}


def test_headers_clients_act_on_are_declared(spec: dict[str, Any]) -> None:
    assert {"X-Request-ID", "Retry-After", "WWW-Authenticate"} <= set(spec["components"]["headers"])
    for method, path, operation in operations(spec):
        for code, response in operation["responses"].items():
            headers = set(response.get("headers", {}))
            assert "X-Request-ID" in headers, f"{method} {path} {code}"
            if code == "401":
                assert "WWW-Authenticate" in headers
            if code in ("429", "503"):
                assert "Retry-After" in headers


def test_each_operation_lists_only_what_it_can_answer(spec: dict[str, Any]) -> None:
    assert statuses(spec, "GET", "/healthz") == {200, 431}
    assert statuses(spec, "GET", "/readyz") == {200, 431, 503}
    # No parameters, no body, any role: no 403, 404, 409, 413 or 422.
    assert statuses(spec, "GET", "/v1/symptoms") == {200, 400, 401, 429, 431, 503}
    assert statuses(spec, "POST", "/v1/patients/{patient_id}/reports") == {
        200, 201, 400, 401, 404, 409, 413, 422, 429, 431, 503,
    }  # fmt: skip
    assert statuses(spec, "GET", "/v1/patients") == {200, 400, 401, 403, 422, 429, 431, 503}
    assert 404 not in statuses(spec, "PUT", "/v1/drugs/{code}")  # creates or replaces
    assert 409 not in statuses(spec, "POST", "/v1/patients/{patient_id}/therapies")
    # The roles that may call are on the bearer requirement.
    audit = spec["paths"]["/v1/audit"]["get"]
    assert audit["security"] == [{"HTTPBearer": ["admin"]}]


def test_what_the_service_answers_is_declared(
    spec: dict[str, Any], client: TestClient, world: World, tokens: Tokens
) -> None:
    """Requests that produce each kind of error, checked against their operation's list."""
    patient = world.patient()
    pid = patient["id"]
    admin, nurse = tokens.admin(), tokens.clinician("onc-a")
    own = tokens.patient(pid)
    body = report_body({"fever": 1})
    other = "00000000-0000-4000-8000-000000000000"
    cases = [
        ("GET", "/v1/symptoms", "/v1/symptoms", {}, None, 401),
        ("GET", "/v1/symptoms", "/v1/symptoms", {"X-Big": "a" * 20_000}, None, 431),
        ("GET", "/v1/audit", "/v1/audit", own, None, 403),
        ("GET", "/v1/patients/{patient_id}", f"/v1/patients/{other}", nurse, None, 404),
        ("GET", "/v1/patients/{patient_id}", "/v1/patients/not-a-uuid", nurse, None, 422),
        ("POST", "/v1/patients/{patient_id}/reports", f"/v1/patients/{pid}/reports", own, body,
         201),
        ("POST", "/v1/patients/{patient_id}/reports", f"/v1/patients/{pid}/reports", own,
         {**body, "note": "changed"}, 409),
        ("POST", "/v1/patients/{patient_id}/reports", f"/v1/patients/{pid}/reports", own,
         {**body, "note": "x" * 70_000}, 413),
        ("POST", "/v1/patients", "/v1/patients", admin, "{not json", 400),
        ("POST", "/v1/patients/{patient_id}/therapies", f"/v1/patients/{pid}/therapies", own,
         {"drug_code": "aldesleukin", "started_on": "2026-11-01"}, 403),
    ]  # fmt: skip
    for method, template, url, headers, payload, expected in cases:
        if isinstance(payload, str):
            response = client.request(
                method, url, content=payload,
                headers={**headers, "content-type": "application/json"},
            )  # fmt: skip
        else:
            response = client.request(method, url, json=payload, headers=headers)
        assert response.status_code == expected, (url, response.text)
        assert expected in statuses(spec, method, template), (method, template, expected)
