"""Every kind of failure answers as application/problem+json, never HTML or a stack trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import Tokens, make_settings, report_body

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["type"]
    assert "Traceback" not in response.text
    return body


def test_unknown_route_is_404(client: TestClient) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404)


def test_wrong_method_is_405(client: TestClient) -> None:
    assert_problem(client.delete("/v1/symptoms"), 405)


def test_validation_error_names_each_field(client: TestClient, tokens: Tokens) -> None:
    body = assert_problem(
        client.post("/v1/patients", json={"baseline_weight_kg": 1}, headers=tokens.admin()), 422
    )
    locs = {tuple(e["loc"]) for e in body["errors"]}
    assert ("body", "care_team") in locs
    assert ("body", "baseline_weight_kg") in locs
    assert all(set(e) == {"loc", "msg"} for e in body["errors"])


def test_malformed_json_is_400(client: TestClient, tokens: Tokens) -> None:
    response = client.post(
        "/v1/patients",
        content=b'{"care_team": "onc-a",',
        headers={**tokens.admin(), "content-type": "application/json"},
    )
    assert_problem(response, 400)


def test_body_over_64_kib_is_413_with_or_without_content_length(
    client: TestClient, world, tokens: Tokens
) -> None:  # type: ignore[no-untyped-def]
    patient = world.patient()
    body = report_body({"fever": 1}, note="x" * 70_000)
    url = f"/v1/patients/{patient['id']}/reports"
    assert_problem(client.post(url, json=body, headers=tokens.patient(patient["id"])), 413)

    def chunks() -> Iterator[bytes]:  # streamed: no Content-Length header
        yield b'{"note": "'
        for _ in range(70):
            yield b"y" * 1024
        yield b'"}'

    response = client.post(url, content=chunks(), headers=tokens.patient(patient["id"]))
    assert_problem(response, 413)


@pytest.fixture
def failing_app(database_url: str) -> Iterator[FastAPI]:
    app = create_app(make_settings(database_url))

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: patient 123 fever 4")

    yield app


def test_unexpected_exception_is_500_without_internals(
    failing_app: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    with TestClient(failing_app, raise_server_exceptions=False) as client:
        body = assert_problem(client.get("/v1/boom"), 500)
    assert "secret" not in str(body)
    assert "RuntimeError" not in str(body)
    assert "patient 123" not in capsys.readouterr().err


def test_every_problem_response_is_declared_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert client.get("/docs").status_code == 200
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            declared = set(operation["responses"])
            missing = {"401", "429", "503"} - declared
            assert not missing, f"{method.upper()} {path} does not declare {missing}"
            assert set(operation["responses"]["401"]["content"]) == {PROBLEM}
