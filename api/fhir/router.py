from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.db import ReadSession
from api.errors import PROBLEM_RESPONSES
from api.fhir import service
from api.security import ReadPatient, Staff
from api.types import Timestamp

router = APIRouter(prefix="/v1/patients", tags=["interoperability"], responses=PROBLEM_RESPONSES)

FHIR_JSON = "application/fhir+json"


@router.get(
    "/{patient_id}/fhir",
    response_class=JSONResponse,
    responses={200: {"content": {FHIR_JSON: {}}, "description": "A FHIR R4 Bundle"}},
)
async def export_fhir(
    _: Staff,
    patient: ReadPatient,
    session: ReadSession,
    since: Annotated[
        Timestamp | None, Query(description="Only what was stored or changed at or after this")
    ] = None,
) -> JSONResponse:
    """Export a patient's record as FHIR R4.

    Staff only, within the patient record's scope: a Bundle (collection) with the Patient, a
    MedicationStatement per therapy, a QuestionnaireResponse and Observations per report (LOINC
    and UCUM for vitals) and a DetectedIssue per alert. `since` limits it to what was stored or
    changed after a time.
    """
    bundle = await service.export(session, patient, since)
    return JSONResponse(bundle, media_type=FHIR_JSON)
