"""GET /v1/patients/{id}/fhir: the record as a FHIR Bundle, validated by the fhir.resources models.

fhir.resources ships FHIR R4B (4.3.0) models, the maintained successor of R4 (4.0.1) with the
same structure for the resources exported here (Patient, MedicationStatement,
QuestionnaireResponse, Observation, DetectedIssue); R5 renamed some of their fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from tests.conftest import Tokens, World

NOW = datetime.now(UTC)
LOINC = {
    "temperature_c": "8310-5",
    "systolic_bp": "8480-6",
    "diastolic_bp": "8462-4",
    "heart_rate": "8867-4",
    "weight_kg": "29463-7",
    "spo2": "59408-5",
}
UCUM = {"temperature_c": "Cel", "systolic_bp": "mm[Hg]", "heart_rate": "/min", "spo2": "%"}


def export(client: TestClient, headers: dict[str, str], patient_id: str, **params: str) -> Any:
    response = client.get(f"/v1/patients/{patient_id}/fhir", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return response.json()


def validated(bundle: dict[str, Any]) -> dict[str, list[Any]]:
    """Every resource through its fhir.resources model; by type."""
    Bundle.model_validate(bundle)
    by_type: dict[str, list[Any]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        by_type.setdefault(resource["resourceType"], []).append(model)
    return by_type


@pytest.fixture
def record(world: World, client: TestClient, tokens: Tokens) -> dict[str, Any]:
    patient = world.patient(
        drugs=("aldesleukin",), external_id="MRN-0042", display_name="A. Patient"
    )
    world.therapy(patient["id"], "filgrastim", (NOW - 20 * timedelta(days=1)).date().isoformat(),
                  (NOW - 10 * timedelta(days=1)).date().isoformat())  # fmt: skip
    first = world.report(
        patient["id"],
        {"nausea": 1, "fever": 2},
        {"temperature_c": 37.2, "heart_rate": 88},
        recorded_at=NOW - timedelta(days=2),
        note="felt sick after dinner",
    )
    second = world.report(
        patient["id"],
        {"chest_pain": 1},
        {"systolic_bp": 84, "spo2": 91},
        recorded_at=NOW - timedelta(hours=1),
    )
    alerts = {a["rule_id"]: a for a in second["alerts"]}
    staff = tokens.clinician("onc-a")
    client.post(f"/v1/alerts/{alerts['cls-hypotension']['id']}/acknowledge", json={},
                headers=staff)  # fmt: skip
    client.post(
        f"/v1/alerts/{alerts['hypoxia']['id']}/resolve",
        json={"note": "oximeter on cold fingers", "outcome": "false_alarm"},
        headers=staff,
    )
    return {"patient": patient, "reports": [first, second], "alerts": alerts}


def test_the_bundle_validates_and_holds_the_whole_record(
    client: TestClient, tokens: Tokens, record: dict[str, Any]
) -> None:
    patient = record["patient"]
    bundle = export(client, tokens.clinician("onc-a"), patient["id"])
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "collection")
    by_type = validated(bundle)

    [p] = by_type["Patient"]
    assert str(p.id) == patient["id"]
    assert p.identifier[0].value == "MRN-0042"
    assert {m.medicationCodeableConcept.coding[0].code for m in by_type["MedicationStatement"]} == {
        "aldesleukin",
        "filgrastim",
    }
    statuses = {m.medicationCodeableConcept.coding[0].code: m.status
                for m in by_type["MedicationStatement"]}  # fmt: skip
    assert statuses == {"aldesleukin": "active", "filgrastim": "completed"}
    assert sorted(str(q.id) for q in by_type["QuestionnaireResponse"]) == sorted(
        r["id"] for r in record["reports"]
    )

    observations = by_type["Observation"]
    vitals = [o for o in observations if o.valueQuantity is not None]
    assert len(vitals) == 4
    for o in vitals:
        coding = o.code.coding[0]
        assert coding.system == "http://loinc.org"
        assert coding.code in LOINC.values()
        assert o.valueQuantity.system == "http://unitsofmeasure.org"
        name = next(k for k, v in LOINC.items() if v == coding.code)
        assert o.valueQuantity.code == UCUM[name]
        assert o.category[0].coding[0].code == "vital-signs"
    graded = {o.code.coding[0].code: o for o in observations if o.valueInteger is not None}
    assert {code: o.valueInteger for code, o in graded.items()} == {
        "nausea": 1,
        "fever": 2,
        "chest_pain": 1,
    }
    # SNOMED CT where the catalog carries it
    assert [c.code for c in graded["fever"].code.coding] == ["fever", "386661006"]


def test_alerts_are_detected_issues_with_evidence_and_mitigation(
    client: TestClient, tokens: Tokens, record: dict[str, Any]
) -> None:
    bundle = export(client, tokens.admin(), record["patient"]["id"])
    by_type = validated(bundle)
    ids = {e["fullUrl"] for e in bundle["entry"]}
    issues = {i.code.coding[0].code: i for i in by_type["DetectedIssue"]}
    assert set(issues) == set(record["alerts"])
    severities = {"emergency": "high", "urgent": "moderate", "routine": "low"}
    for rule_id, alert in record["alerts"].items():
        issue = issues[rule_id]
        assert issue.severity == severities[alert["severity"]]
        assert issue.detail == alert["detail"]
        # the evidence points at Observations of this bundle
        for evidence in issue.evidence:
            for ref in evidence.detail:
                assert ref.reference in ids
    observations = {f"urn:uuid:{o.id}": o for o in by_type["Observation"]}
    hypotension = issues["cls-hypotension"]
    [ref] = hypotension.evidence[0].detail
    assert observations[ref.reference].code.coding[0].code == "8480-6"
    assert observations[ref.reference].valueQuantity.value == 84
    assert [m.action.coding[0].code for m in hypotension.mitigation] == ["acknowledged"]
    hypoxia = issues["hypoxia"]
    assert hypoxia.status == "final"
    assert [m.action.coding[0].code for m in hypoxia.mitigation] == ["resolved"]
    assert "false alarm" in hypoxia.mitigation[0].action.text
    assert issues["chest-pain"].mitigation is None


def test_since_limits_the_bundle_to_what_changed(
    client: TestClient, tokens: Tokens, record: dict[str, Any], world: World
) -> None:
    patient_id = record["patient"]["id"]
    admin = tokens.admin()
    mark = datetime.now(UTC)
    world.report(patient_id, {"nausea": 0})
    bundle = export(client, admin, patient_id, since=mark.isoformat())
    by_type = validated(bundle)
    assert set(by_type) == {"Patient", "QuestionnaireResponse", "Observation"}
    assert len(by_type["QuestionnaireResponse"]) == 1
    # an alert acted on after the mark comes again
    hypotension = record["alerts"]["cls-hypotension"]["id"]
    client.post(f"/v1/alerts/{hypotension}/resolve", json={"note": "fluids given"}, headers=admin)
    issues = validated(export(client, admin, patient_id, since=mark.isoformat()))["DetectedIssue"]
    assert [str(i.id) for i in issues] == [hypotension]
    assert [m.action.coding[0].code for m in issues[0].mitigation] == ["acknowledged", "resolved"]


def test_scope_is_the_patient_records(
    client: TestClient, tokens: Tokens, record: dict[str, Any]
) -> None:
    patient_id = record["patient"]["id"]
    url = f"/v1/patients/{patient_id}/fhir"
    assert client.get(url, headers=tokens.clinician("onc-b")).status_code == 404
    other = "/v1/patients/00000000-0000-4000-8000-000000000000/fhir"
    assert client.get(other, headers=tokens.admin()).status_code == 404
    assert client.get(url, headers=tokens.patient(patient_id)).status_code == 403
    assert client.get(url).status_code == 401
    bad = client.get(url, params={"since": "last week"}, headers=tokens.admin())
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"] == ["query", "since"]
