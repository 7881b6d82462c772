"""The OpenAPI document is ready for client generators: readable, stable names, examples.

CI also generates a Python client from it with openapi-python-client and fails on a warning
(.ci/run); this test keeps the parts a generator relies on from drifting in between.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
SCHEMA_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
# The request bodies a client developer writes first get an example each.
EXAMPLES = {
    ("post", "/v1/patients/{patient_id}/reports"),
    ("post", "/v1/patients/{patient_id}/reports/batch"),
    ("post", "/v1/patients/{patient_id}/therapies"),
    ("post", "/v1/webhooks"),
    ("post", "/v1/patients"),
    ("post", "/v1/alerts/{alert_id}/resolve"),
    ("post", "/v1/rules/evaluate"),
}


@pytest.fixture(scope="module")
def spec(rolled_back_app: FastAPI) -> dict:
    return rolled_back_app.openapi()


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [
        (method, path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if isinstance(op, dict)
    ]


def test_every_operation_has_a_readable_stable_id_summary_and_description(spec: dict) -> None:
    ids = []
    for method, path, op in operations(spec):
        where = f"{method.upper()} {path}"
        assert CAMEL.match(op.get("operationId", "")), f"{where}: {op.get('operationId')}"
        assert op.get("summary"), where
        assert len(op.get("description", "")) >= 20, f"{where} has no description"
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids))
    by_id = {op["operationId"]: (m, p) for m, p, op in operations(spec)}
    assert by_id["createReport"] == ("post", "/v1/patients/{patient_id}/reports")
    assert by_id["listAlerts"] == ("get", "/v1/alerts")


def test_schema_names_carry_no_module_paths(spec: dict) -> None:
    names = list(spec["components"]["schemas"])
    assert [n for n in names if not SCHEMA_NAME.match(n)] == []


def test_the_main_request_bodies_have_examples(spec: dict) -> None:
    schemas = spec["components"]["schemas"]
    for method, path in EXAMPLES:
        body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        schema = body["schema"]
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        assert body.get("examples") or body.get("example") or schema.get("examples"), (
            f"{method.upper()} {path} has no example"
        )


def test_schemas_and_fields_that_carry_meaning_are_described(spec: dict) -> None:
    schemas = spec["components"]["schemas"]
    for name in ("ReportCreate", "AlertRead", "Advice", "BacktestResult"):
        assert schemas[name].get("description"), name
    alert = schemas["AlertRead"]["properties"]
    for field in ("severity", "status", "evidence", "follow_up_due_at", "escalated_at"):
        assert alert[field].get("description"), f"AlertRead.{field}"
