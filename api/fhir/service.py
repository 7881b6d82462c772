"""A patient's record as a FHIR R4 Bundle (type ``collection``) for the hospital's EHR.

Patient; a MedicationStatement per therapy; a QuestionnaireResponse per report, with an
Observation per vital (LOINC code, UCUM unit) and per graded symptom (the catalog's code, and
SNOMED CT where the catalog carries it); a DetectedIssue per alert (severity high / moderate /
low, evidence pointing at the Observations that fired it, mitigation for acknowledge and
resolve). Resources are plain JSON: the tests validate them with the ``fhir.resources`` models.

Ids are the service's own UUIDs; an Observation's id is derived from its report and what it
measures, so exporting again (``?since=``) names the same resources the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.alerts.models import Alert
from api.catalog.models import Drug, Symptom, Vital
from api.patients.models import Patient, Therapy
from api.reports.models import Report, ReportSymptom
from api.rules.definitions import VITALS

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# The service's own code systems: URNs, since they name nothing outside this service.
SYSTEM = "urn:symptom-tracker"
UCUM_CODES = {
    "temperature_c": "Cel",
    "systolic_bp": "mm[Hg]",
    "diastolic_bp": "mm[Hg]",
    "heart_rate": "/min",
    "weight_kg": "kg",
    "spo2": "%",
}
SEVERITY = {"emergency": "high", "urgent": "moderate", "routine": "low"}
_NAMESPACE = uuid.UUID("6f1b1c9e-3f55-4a57-9b8e-2f3c8f0a7d11")


def _ref(resource_id: uuid.UUID) -> dict[str, str]:
    return {"reference": f"urn:uuid:{resource_id}"}


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def observation_id(report_id: uuid.UUID, what: str) -> uuid.UUID:
    """Stable id of the Observation of ``what`` ("vital:spo2", "symptom:nausea") in a report."""
    return uuid.uuid5(_NAMESPACE, f"{report_id}/{what}")


@dataclass(frozen=True)
class _Catalog:
    symptoms: dict[str, Symptom]
    vitals: dict[str, Vital]
    drugs: dict[str, Drug]

    @classmethod
    async def read(cls, session: AsyncSession) -> _Catalog:
        return cls(
            symptoms={s.code: s for s in await session.scalars(select(Symptom))},
            vitals={v.name: v for v in await session.scalars(select(Vital))},
            drugs={d.code: d for d in await session.scalars(select(Drug))},
        )


async def export(session: AsyncSession, patient: Patient, since: datetime | None) -> dict[str, Any]:
    catalog = await _Catalog.read(session)
    therapies = select(Therapy).where(Therapy.patient_id == patient.id)
    reports = select(Report).where(Report.patient_id == patient.id)
    alerts = select(Alert).where(Alert.patient_id == patient.id)
    if since is not None:
        therapies = therapies.where(Therapy.created_at >= since)
        reports = reports.where(Report.received_at >= since)
        alerts = alerts.where(
            or_(
                Alert.created_at >= since,
                Alert.last_triggered_at >= since,
                Alert.acknowledged_at >= since,
                Alert.resolved_at >= since,
            )
        )
    report_rows = list(await session.scalars(reports.order_by(Report.recorded_at, Report.id)))
    symptoms: dict[uuid.UUID, list[ReportSymptom]] = {r.id: [] for r in report_rows}
    if report_rows:
        for row in await session.scalars(
            select(ReportSymptom)
            .where(ReportSymptom.report_id.in_(list(symptoms)))
            .order_by(ReportSymptom.symptom_code)
        ):
            symptoms[row.report_id].append(row)

    resources: list[dict[str, Any]] = [_patient(patient)]
    resources += [
        _medication(t, catalog)
        for t in await session.scalars(therapies.order_by(Therapy.started_on, Therapy.id))
    ]
    for report in report_rows:
        resources += _report(patient, report, symptoms[report.id], catalog)
    resources += [
        _issue(patient, alert)
        for alert in await session.scalars(alerts.order_by(Alert.created_at, Alert.id))
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _time(datetime.now(UTC)),
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def _patient(patient: Patient) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": str(patient.id), "active": True}
    if patient.external_id:
        resource["identifier"] = [{"system": f"{SYSTEM}:external-id", "value": patient.external_id}]
    if patient.display_name:
        resource["name"] = [{"text": patient.display_name}]
    return resource


def _medication(therapy: Therapy, catalog: _Catalog) -> dict[str, Any]:
    drug = catalog.drugs.get(therapy.drug_code)
    name = drug.name if drug else therapy.drug_code
    ended = therapy.ended_on is not None and therapy.ended_on < date.today()
    period = {"start": therapy.started_on.isoformat()}
    if therapy.ended_on is not None:
        period["end"] = therapy.ended_on.isoformat()
    return {
        "resourceType": "MedicationStatement",
        "id": str(therapy.id),
        "status": "completed" if ended else "active",
        "medicationCodeableConcept": {
            "coding": [{"system": f"{SYSTEM}:drug", "code": therapy.drug_code, "display": name}],
            "text": name,
        },
        "subject": _ref(therapy.patient_id),
        "effectivePeriod": period,
        "dateAsserted": _time(therapy.created_at),
    }


def _report(
    patient: Patient, report: Report, symptoms: list[ReportSymptom], catalog: _Catalog
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    base = {
        "status": "final",
        "subject": _ref(patient.id),
        "effectiveDateTime": _time(report.recorded_at),
        "issued": _time(report.received_at),
        "derivedFrom": [_ref(report.id)],
    }
    for row in symptoms:
        symptom = catalog.symptoms.get(row.symptom_code)
        name = symptom.name if symptom else row.symptom_code
        grade_word = (symptom.grades if symptom else {}).get(str(row.grade), str(row.grade))
        items.append(
            {
                "linkId": row.symptom_code,
                "text": symptom.question if symptom else name,
                "answer": [{"valueInteger": row.grade}],
            }
        )
        coding = [{"system": f"{SYSTEM}:symptom", "code": row.symptom_code, "display": name}]
        if symptom and symptom.snomed:
            coding.append({"system": SNOMED, "code": symptom.snomed, "display": name})
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": str(observation_id(report.id, f"symptom:{row.symptom_code}")),
            **base,
            "category": [{"coding": [{"system": CATEGORY, "code": "survey", "display": "Survey"}]}],
            "code": {"coding": coding, "text": name},
            "valueInteger": row.grade,
            "interpretation": [{"text": f"{grade_word} (PRO-CTCAE grade {row.grade} of 4)"}],
        }
        if row.note:
            observation["note"] = [{"text": row.note}]
        observations.append(observation)
    for name in VITALS:
        value = getattr(report, name)
        if value is None:
            continue
        vital = catalog.vitals.get(name)
        label = vital.label if vital else name
        quantity = {
            "value": value,
            "unit": vital.unit if vital else UCUM_CODES[name],
            "system": UCUM,
            "code": UCUM_CODES[name],
        }
        items.append({"linkId": name, "text": label, "answer": [{"valueQuantity": quantity}]})
        code: dict[str, Any] = {"text": label}
        if vital:
            code["coding"] = [{"system": LOINC, "code": vital.loinc, "display": label}]
        observations.append(
            {
                "resourceType": "Observation",
                "id": str(observation_id(report.id, f"vital:{name}")),
                **base,
                "category": [
                    {
                        "coding": [
                            {"system": CATEGORY, "code": "vital-signs", "display": "Vital Signs"}
                        ]
                    }
                ],
                "code": code,
                "valueQuantity": quantity,
            }
        )
    if report.note:
        items.append({"linkId": "note", "text": "Note", "answer": [{"valueString": report.note}]})
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": str(report.id),
        "identifier": {
            "system": f"{SYSTEM}:client-report-id",
            "value": str(report.client_report_id),
        },
        "status": "completed",
        "subject": _ref(patient.id),
        "authored": _time(report.recorded_at),
        "item": items,
    }
    return [response, *observations]


def _evidence_keys(evidence: Any) -> Iterable[str]:
    """What an alert's evidence rests on, as "vital:NAME" / "symptom:CODE"."""
    if isinstance(evidence, dict):
        if "vital" in evidence:
            yield f"vital:{evidence['vital']}"
        for key in ("symptom", "worsening"):
            if key in evidence:
                yield f"symptom:{evidence[key]}"
        if "metric" in evidence:
            yield "vital:weight_kg"
        for value in evidence.values():
            if isinstance(value, dict | list):
                yield from _evidence_keys(value)
    elif isinstance(evidence, list):
        for value in evidence:
            yield from _evidence_keys(value)


def _issue(patient: Patient, alert: Alert) -> dict[str, Any]:
    keys = list(dict.fromkeys(_evidence_keys(alert.evidence)))
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": str(alert.id),
        "status": "final" if alert.status == "resolved" else "preliminary",
        "code": {
            "coding": [{"system": f"{SYSTEM}:rule", "code": alert.rule_id, "display": alert.title}],
            "text": alert.title,
        },
        "severity": SEVERITY[alert.severity],
        "patient": _ref(patient.id),
        "identifiedDateTime": _time(alert.created_at),
        "implicated": [_ref(alert.report_id)],
        "detail": alert.detail,
    }
    if keys:
        resource["evidence"] = [
            {
                "code": [{"text": key.split(":", 1)[1]}],
                "detail": [_ref(observation_id(alert.report_id, key))],
            }
            for key in keys
        ]
    mitigation = []
    if alert.acknowledged_at is not None:
        mitigation.append(
            {
                "action": {
                    "coding": [{"system": f"{SYSTEM}:action", "code": "acknowledged"}],
                    "text": "Acknowledged by the care team",
                },
                "date": _time(alert.acknowledged_at),
                "author": {"display": alert.acknowledged_by or "unknown"},
            }
        )
    if alert.resolved_at is not None:
        outcome = f" ({alert.outcome.replace('_', ' ')})" if alert.outcome else ""
        note = f": {alert.resolution_note}" if alert.resolution_note else ""
        mitigation.append(
            {
                "action": {
                    "coding": [{"system": f"{SYSTEM}:action", "code": "resolved"}],
                    "text": f"Resolved{outcome}{note}",
                },
                "date": _time(alert.resolved_at),
                "author": {"display": alert.resolved_by or "unknown"},
            }
        )
    if mitigation:
        resource["mitigation"] = mitigation
    return resource
