"""Schema-driven fuzzing of the whole API with schemathesis (the app's own OpenAPI document).

Two tests, parametrized over every operation; nothing is excluded:
- test_coverage: schemathesis' coverage phase (boundary values, missing and wrongly typed
  fields, unexpected methods, missing credentials), a fixed set of cases per operation, sent as
  admin, the one role whose requests reach every operation's body;
- test_fuzz: MAX_EXAMPLES generated cases per operation (Hypothesis, derandomized: a run is
  reproducible), for each role: admin, a clinician of team "onc-a", and the patient of a real
  record of that team.

Data generated from the schema alone nearly always stops at a 404 or a 422, so part of it is
steered to where the code is:
- path and query ids: in half the fuzz cases (and in every coverage case that is not about that
  parameter) the ids of the seeded records: a patient of onc-a on aldesleukin, an alert raised
  for it, a drug code; `PUT /v1/drugs/{code}` gets a drug of its own, so aldesleukin keeps its
  rules;
- report bodies (single, batch, rules dry run): half the time shaped as the apps send them, with
  catalog codes and vitals at the alert thresholds and at the edges of the physiological ranges;
- fuzz dictionaries (a schemathesis feature) mix into the generated values catalog codes, dates
  and timestamps (recent ones, and the first and last day a datetime can hold), hostile strings
  (NUL, quotes, wildcards...) and cursors holding values no list would make.

Every response must:
- not be a server error (5xx);
- have a status code the operation declares, a declared content type, and a body that conforms
  to the declared schema for that status;
- if it is not a success, be RFC 9457 problem details: `application/problem+json` with an
  integer `status` equal to the HTTP status and a `title` (see /work/shared/API.md).

The run gets its own database, seeded through the API: it writes catalog entries through
`PUT /v1/drugs/{code}`, which must not leak into the rest of the suite. The schema is read at
import from an app whose database is never opened (collection must not touch a database); the
requests go to the fixture's app.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.catalog.shipped import load_shipped_catalog
from api.main import create_app
from api.pagination import encode_cursor
from tests.conftest import Tokens, fresh_database, make_settings, upgrade

PROBLEM_JSON = "application/problem+json"
TEAM = "onc-a"
ROLES = ("admin", "clinician", "patient")
# Generated cases per operation and role in test_fuzz (test_coverage sends a fixed set).
MAX_EXAMPLES = 40

# --- what the fuzzer draws from ------------------------------------------------------------------

_SHIPPED = load_shipped_catalog()
SYMPTOMS = [s.code for s in _SHIPPED.symptoms]
FUZZ_DRUG = "fuzz_drug"  # created by the seed; the code `PUT /v1/drugs/{code}` replaces
DRUGS = [d.code for d in _SHIPPED.drugs] + [FUZZ_DRUG]
_NOW = datetime.now(UTC).replace(microsecond=0)
_TODAY = _NOW.date()
# Past times a phone sends (so that reports are stored and the rules run), in several offsets,
# and the extremes an ISO 8601 timestamp with an offset can express.
TIMES = [
    (_NOW - timedelta(minutes=2)).isoformat(),
    (_NOW - timedelta(hours=5)).astimezone(timezone(timedelta(hours=-5))).isoformat(),
    (_NOW - timedelta(days=2)).isoformat().replace("+00:00", "Z"),
    (_NOW - timedelta(days=6)).astimezone(timezone(timedelta(hours=9, minutes=30))).isoformat(),
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-02T00:00:00-12:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-14:00",
]
DATES = [
    str(_TODAY - timedelta(days=3)),
    str(_TODAY),
    str(_TODAY + timedelta(days=30)),
    "0001-01-01",
    "9999-12-31",
]
# Vital signs: usual values, values at the alert thresholds of CLINICAL.md, and the edges of the
# physiological input range (vitals.yaml) with a value just outside each.
VITAL_VALUES: dict[str, list[float]] = {
    "temperature_c": [36.8, 37.9, 38.0, 38.5, 39.6],
    "systolic_bp": [120, 95, 90, 89, 85],
    "diastolic_bp": [80, 60, 55],
    "heart_rate": [72, 100, 112, 130],
    "weight_kg": [70, 73.5, 77, 84],
    "spo2": [98, 94, 92, 88],
}
for _v in _SHIPPED.vitals:
    VITAL_VALUES[_v.name] += [_v.min, _v.max, round(_v.min - 0.1, 1), round(_v.max + 0.1, 1)]
STRINGS = ["\x00", "a\x00b", "' OR '1'='1", "%", "_", "\\", "\u202e", "\U0001fa7a", "null"]
# Cursors are opaque, but a client can send back anything: well-formed ones (base64 JSON, as the
# lists make them) holding values no list would, and ones that are not ours at all.
_ID = "00000000-0000-4000-8000-000000000000"
CURSORS = [
    encode_cursor([10**30, TIMES[0], _ID]),
    encode_cursor([-1, "9999-12-31T23:59:59-14:00", _ID]),
    encode_cursor(["9999-12-31T23:59:59-14:00", _ID]),
    encode_cursor(["0001-01-01T00:00:00+14:00", _ID]),
    encode_cursor([10**30, _ID]),
    encode_cursor([[], {}]),
    encode_cursor([]),
    "AAAA",
    "%",
]

# Schemathesis fuzz dictionaries: mixed into the values it generates for these fields.
PARAMETERS: dict[str, tuple[str, float]] = {
    "body.side_effects[*].symptom_code": ("symptoms", 0.8),
    "body.drug_code": ("drugs", 0.7),
    "body.started_on": ("dates", 0.6),
    "body.ended_on": ("dates", 0.6),
    "body.care_team": ("teams", 0.5),
    "body.display_name": ("strings", 0.3),
    "body.external_id": ("strings", 0.3),
    "body.note": ("strings", 0.3),
    "body.baseline_weight_kg": ("weights", 0.5),
    "query.on": ("dates", 0.5),
    "query.since": ("times", 0.5),
    "query.until": ("times", 0.5),
    "query.drug_code": ("drugs", 0.5),
    "query.cursor": ("cursors", 0.3),
    "query.team": ("teams", 0.5),
    "query.actor": ("strings", 0.3),
    "query.resource_id": ("strings", 0.3),
}


def _config(phases: dict[str, Any]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "phases": phases,
            "dictionaries": {
                "symptoms": {"values": SYMPTOMS},
                "drugs": {"values": DRUGS},
                "teams": {"values": [TEAM, "onc-b", *STRINGS]},
                "times": {"values": TIMES},
                "dates": {"values": DATES},
                "weights": {"values": VITAL_VALUES["weight_kg"]},
                "cursors": {"values": CURSORS},
                "strings": {"values": STRINGS},
            },
            "parameters": {
                key: {"dictionary": name, "probability": p} for key, (name, p) in PARAMETERS.items()
            },
        }
    )


# Report bodies as the apps send them. The schema cannot say that codes come from the catalog or
# that vitals have ranges, so data generated from it alone is nearly always a 422 and the rules
# engine never runs. A shared pool of client_report_ids makes replays (200) and conflicts (409).
_CLIENT_IDS = [str(uuid.UUID(int=i)) for i in range(1, 4)]
_symptoms = st.lists(
    st.fixed_dictionaries(
        {"code": st.sampled_from(SYMPTOMS), "grade": st.integers(0, 4)},
        optional={"note": st.sampled_from(STRINGS) | st.text(max_size=20)},
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda s: s["code"],
)
_vitals = st.fixed_dictionaries(
    {}, optional={name: st.sampled_from(values) for name, values in VITAL_VALUES.items()}
)
_history_item = st.fixed_dictionaries(
    {"recorded_at": st.sampled_from(TIMES), "symptoms": _symptoms}, optional={"vitals": _vitals}
)


def _report(client_id: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "client_report_id": client_id,
            "recorded_at": st.sampled_from(TIMES),
            "symptoms": _symptoms,
        },
        optional={"vitals": _vitals, "note": st.sampled_from(STRINGS)},
    )


_client_id = st.sampled_from(_CLIENT_IDS) | st.uuids().map(str)
REPORT_BODIES: dict[tuple[str, str], st.SearchStrategy[dict[str, Any]]] = {
    ("POST", "/v1/patients/{patient_id}/reports"): _report(_client_id),
    ("POST", "/v1/patients/{patient_id}/reports/batch"): st.fixed_dictionaries(
        {"reports": st.lists(_report(_client_id), min_size=1, max_size=6)}
    ),
    ("POST", "/v1/rules/evaluate"): st.fixed_dictionaries(
        {
            "drug_codes": st.lists(st.sampled_from(DRUGS), max_size=3),
            "report": _report(st.text(max_size=8)),
        },
        optional={
            "history": st.lists(_history_item, max_size=4),
            "baseline_weight_kg": st.sampled_from(VITAL_VALUES["weight_kg"]),
        },
    ),
}

# --- ids that exist ------------------------------------------------------------------------------

# Filled by the `seed` fixture before any case is generated; read at draw / call time.
REAL: dict[str, str] = {}


def real_path_parameters(method: str) -> dict[str, str]:
    # PUT replaces a drug: the seed's own one, so that aldesleukin keeps its rules.
    if not REAL:
        return {}
    return {
        "patient_id": REAL["patient_id"],
        "alert_id": REAL["alert_id"],
        "code": FUZZ_DRUG if method.upper() == "PUT" else "aldesleukin",
    }


def _either(generated: Any, steered: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Half the time what schemathesis generated, half the time the steered value."""
    return st.one_of(st.just(generated), steered)


def _with(values: Any, real: dict[str, str]) -> st.SearchStrategy[Any]:
    if not isinstance(values, dict):  # none, or a negative case replaced them all
        return st.just(values)
    present = {name: value for name, value in real.items() if name in values}
    return _either(values, st.just({**values, **present})) if present else st.just(values)


def install_hooks(schema: Any) -> None:
    @schema.hook
    def flatmap_path_parameters(context: schemathesis.HookContext, path_parameters: Any) -> Any:
        assert context.operation is not None
        return _with(path_parameters, real_path_parameters(context.operation.method))

    @schema.hook
    def flatmap_query(context: schemathesis.HookContext, query: Any) -> Any:
        return _with(query, {"patient_id": REAL["patient_id"], "team": TEAM} if REAL else {})

    @schema.hook
    def flatmap_body(context: schemathesis.HookContext, body: Any) -> Any:
        assert context.operation is not None
        key = (context.operation.method.upper(), context.operation.path)
        return _either(body, REPORT_BODIES[key]) if key in REPORT_BODIES else st.just(body)


def _app_for_the_schema() -> FastAPI:
    # Collection needs the operations and must not touch a database: this app's is never opened.
    return create_app(make_settings("sqlite:///never-opened.db"))


# The coverage phase: a fixed set of cases per operation (see the module docstring).
coverage_schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    _app_for_the_schema(),
    config=_config({"fuzzing": {"enabled": False}}),
)
# The fuzzing phase: MAX_EXAMPLES generated cases per operation and role.
fuzzing_schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    _app_for_the_schema(),
    config=_config({"examples": {"enabled": False}, "coverage": {"enabled": False}}),
)
install_hooks(fuzzing_schema)


@dataclass(frozen=True)
class Seed:
    patient_id: str
    alert_id: str
    tokens: Tokens

    def headers(self, role: str) -> dict[str, str]:
        if role == "admin":
            return self.tokens.admin(sub="fuzz-admin")
        if role == "clinician":
            return self.tokens.clinician(TEAM, sub="fuzz-nurse")
        return self.tokens.patient(self.patient_id)


class AnswerOnly:
    """The app as a client sees it: after an unhandled error it has sent its 500, and the
    exception Starlette re-raises for the server to log is not the client's (nor the fuzzer's)
    business. The TestClient of tests/conftest.py does the same (raise_server_exceptions=False).
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        answered = False

        async def watch(message: Any) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if not answered:
                raise


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    with fresh_database(tmp_path_factory.mktemp("fuzz-db")) as url:
        upgrade(url)
        application = create_app(make_settings(url))
        yield application


@pytest.fixture(scope="module")
def served(fuzz_app: FastAPI) -> AnswerOnly:
    return AnswerOnly(fuzz_app)


@pytest.fixture(scope="module")
def seed(fuzz_app: FastAPI) -> Iterator[Seed]:
    """A patient of team onc-a on aldesleukin with a report that raised an alert; a spare drug."""
    tokens = Tokens(fuzz_app.state.settings)
    admin = tokens.admin()
    with TestClient(fuzz_app, raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/patients",
            json={"care_team": TEAM, "display_name": "Fuzz Patient", "baseline_weight_kg": 70},
            headers=admin,
        )
        assert response.status_code == 201, response.text
        patient_id = response.json()["id"]
        response = client.post(
            f"/v1/patients/{patient_id}/therapies",
            json={"drug_code": "aldesleukin", "started_on": DATES[0]},
            headers=admin,
        )
        assert response.status_code == 201, response.text
        response = client.post(
            f"/v1/patients/{patient_id}/reports",
            json={
                "client_report_id": str(uuid.uuid4()),
                "recorded_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                "symptoms": [{"code": "fever", "grade": 2}],
                "vitals": {"systolic_bp": 85, "temperature_c": 38.4},
            },
            headers=tokens.patient(patient_id),
        )
        assert response.status_code == 201, response.text
        alert_id = response.json()["alerts"][0]["id"]
        response = client.put(
            f"/v1/drugs/{FUZZ_DRUG}",
            json={"name": "Fuzz drug", "drug_class": "cytokine", "route": "subcutaneous"},
            headers=admin,
        )
        assert response.status_code == 201, response.text
    REAL.update(patient_id=patient_id, alert_id=alert_id)
    yield Seed(patient_id=patient_id, alert_id=alert_id, tokens=tokens)
    REAL.clear()


# --- checks --------------------------------------------------------------------------------------


def problem_details(ctx: schemathesis.CheckContext, response: Any, case: Any) -> bool | None:
    """Every non-2xx answer is application/problem+json with `status` == HTTP status, a `title`."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    content_types = response.headers.get("content-type") or []
    content_type = (content_types[0] if content_types else "").split(";")[0].strip().lower()
    assert content_type == PROBLEM_JSON, (
        f"{status} answered with content-type {content_type!r}, not {PROBLEM_JSON}: "
        f"{response.text[:300]!r}"
    )
    try:
        body = json.loads(response.text)
    except ValueError:
        raise AssertionError(
            f"{status} problem body is not JSON: {response.text[:300]!r}"
        ) from None
    assert isinstance(body, dict), f"{status} problem body is not an object: {body!r}"
    assert type(body.get("status")) is int, f"problem `status` is not an integer: {body!r}"
    assert body["status"] == status, f"problem `status` {body['status']} != HTTP {status}"
    assert isinstance(body.get("title"), str) and body["title"], f"problem has no title: {body!r}"
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    problem_details,
]
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@coverage_schema.parametrize()
@SETTINGS
def test_coverage(case: schemathesis.Case, seed: Seed, served: AnswerOnly) -> None:
    # Coverage cases are built at collection, before the seed exists: point their ids at the
    # seeded records, except in the cases that are about that very path parameter.
    target = getattr(case.meta.phase.data, "parameter", None) if case.meta else None
    for name, value in real_path_parameters(case.method).items():
        if case.path_parameters and name in case.path_parameters and name != target:
            case.path_parameters[name] = value
    case.call_and_validate(app=served, headers=seed.headers("admin"), checks=CHECKS)


@fuzzing_schema.parametrize()
@pytest.mark.parametrize("role", ROLES)
@SETTINGS
def test_fuzz(case: schemathesis.Case, role: str, seed: Seed, served: AnswerOnly) -> None:
    case.call_and_validate(app=served, headers=seed.headers(role), checks=CHECKS)
