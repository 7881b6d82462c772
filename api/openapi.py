"""The OpenAPI document says what the service really answers.

Errors are ``application/problem+json`` (never ``application/json``); each operation lists the
error statuses it can produce, worked out from what the route takes (a token, a role, path
parameters, a body) and the few conflicts its service can raise; and the headers clients act on
are declared: ``X-Request-ID`` on every answer, ``WWW-Authenticate`` on 401, ``Retry-After`` on
429 and 503.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api.errors import PROBLEM_JSON, Problem

# Operations whose service can answer 409 (a unique key or a state transition).
CONFLICTS = {
    ("POST", "/v1/patients"),
    ("POST", "/v1/patients/{patient_id}/reports"),
    ("POST", "/v1/patients/{patient_id}/reports/batch"),
    ("POST", "/v1/alerts/{alert_id}/acknowledge"),
    ("POST", "/v1/alerts/{alert_id}/resolve"),
    ("PUT", "/v1/drugs/{code}"),
}
# Path parameters that name something to create, not something to find.
CREATES = {("PUT", "/v1/drugs/{code}")}

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id (the client's own when it sent a plain one); "
        "it is in the service's log line for this request.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "The scheme the service expects: `Bearer`.",
        "schema": {"type": "string"},
    },
}
HEADERS_BY_STATUS = {401: ["WWW-Authenticate"], 429: ["Retry-After"], 503: ["Retry-After"]}
DETAILS = {
    400: "Malformed JSON, or more than one Authorization header",
    401: "No token, or a token that is invalid, expired or of the wrong shape",
    403: "The caller's role may never do this",
    404: "Not found, or outside the caller's scope",
    409: "Conflicts with stored data (same key, other body; a transition not allowed)",
    413: "The body is larger than MAX_BODY_BYTES",
    422: "Invalid input; `errors` names each field",
    429: "Over the rate limit",
    431: "The request headers are larger than MAX_HEADER_BYTES",
    503: "The database is unavailable or busy",
}


# Operation ids are the endpoint's name in camelCase; these names say too little on their own.
OPERATION_IDS = {
    "healthz": "getHealth",
    "readyz": "getReadiness",
    "metrics": "getMetrics",
    "summary": "getAlertSummary",
    "stream": "streamAlertEvents",
    "acknowledge": "acknowledgeAlert",
    "resolve": "resolveAlert",
    "list_events": "listAlertEvents",
    "list_deliveries": "listWebhookDeliveries",
    "evaluate": "evaluateRules",
    "backtest": "backtestRules",
    "performance": "getRulePerformance",
    "list_audit": "listAuditEvents",
    "export_fhir": "exportPatientFhir",
}


def operation_id(route: APIRoute) -> str:
    """``createReport`` for ``create_report``: stable, readable ids for client generators."""
    name = OPERATION_IDS.get(route.name)
    if name is None:
        first, *rest = route.name.split("_")
        name = first + "".join(part.capitalize() for part in rest)
    return name


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    components["headers"] = HEADERS
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _summarise(operation)
            _declare(operation, error_statuses(path, method.upper(), operation))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in json.dumps(schema):
            schemas.pop(unused, None)
    return _readable_names(schema)


def _readable_names(schema: dict[str, Any]) -> dict[str, Any]:
    """``AlertReadPage``, not FastAPI's ``Page_AlertRead_``, for generated clients."""
    names = {
        name: f"{name[len('Page_') : -1]}Page"
        for name in schema["components"]["schemas"]
        if name.startswith("Page_") and name.endswith("_")
    }
    if not names:
        return schema
    text = json.dumps(schema)
    for old, new in names.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    renamed = json.loads(text)
    components = renamed["components"]["schemas"]
    for old, new in names.items():
        components[new] = components.pop(old)
        components[new]["title"] = new
    return renamed


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer with (500 aside), from what it takes."""
    where = {p["in"] for p in operation.get("parameters", [])}
    body = "requestBody" in operation
    # The bearer requirement lists the roles when only some may call (api/security.py).
    requirements = operation.get("security") or []
    statuses = {431}  # any request can carry oversized headers
    if requirements:
        statuses |= {400, 401}  # 400: two Authorization headers
    if any(roles for requirement in requirements for roles in requirement.values()):
        statuses.add(403)
    if "path" in where and (method, path) not in CREATES:
        statuses.add(404)
    if where or body:
        statuses.add(422)
    if body:
        statuses |= {400, 413}
    if (method, path) in CONFLICTS:
        statuses.add(409)
    if path.startswith("/v1/"):
        statuses |= {429, 503}  # the rate limit counts /v1; every /v1 route reads data
    if path == "/readyz":
        statuses.add(503)
    return statuses


def _summarise(operation: dict[str, Any]) -> None:
    """The docstring's first paragraph is the summary, the rest the description."""
    first, _, rest = operation.get("description", "").partition("\n\n")
    if first:
        operation["summary"] = " ".join(first.split())
        operation["description"] = rest.strip() or operation["summary"]


def _declare(operation: dict[str, Any], statuses: set[int]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for code in [c for c in responses if c[:1] in "45"]:
        if int(code) not in statuses:
            del responses[code]
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": DETAILS.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "headers": {
                name: {"$ref": f"#/components/headers/{name}"}
                for name in HEADERS_BY_STATUS.get(status, [])
            },
        }
    for response in responses.values():
        response.setdefault("headers", {})["X-Request-ID"] = {
            "$ref": "#/components/headers/X-Request-ID"
        }
    operation["responses"] = dict(sorted(responses.items()))
