from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.audit.service import record
from api.db import ReadSession, WriteSession
from api.errors import PROBLEM_RESPONSES
from api.pagination import Cursor, Limit, Page, decode_cursor, page_of, parse_time
from api.patients import service
from api.patients.schemas import (
    PatientCreate,
    PatientRead,
    Questionnaire,
    TherapyCreate,
    TherapyRead,
)
from api.security import CurrentPrincipal, ReadPatient, Staff, WritePatient
from api.types import TEAM_PATTERN, Day

router = APIRouter(prefix="/v1/patients", tags=["patients"], responses=PROBLEM_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_patient(
    body: PatientCreate, principal: Staff, session: WriteSession
) -> PatientRead:
    """Register a patient.

    A clinician of the patient's care team, or an admin. `external_id` (the hospital's record
    number) is unique within a care team.
    """
    patient = await service.create_patient(session, principal, body)
    await record(
        session, principal, "patient.created", "patient", patient.id, {"team": patient.care_team}
    )
    return PatientRead.model_validate(patient)


@router.get("")
async def list_patients(
    principal: Staff,
    session: ReadSession,
    team: Annotated[str | None, Query(max_length=64, pattern=TEAM_PATTERN)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PatientRead]:
    """List patients.

    Staff only: the patients of the caller's teams (all of them for an admin), newest first, cursor-
    paginated.
    """
    after = decode_cursor(cursor, parse_time, uuid.UUID)
    rows = await service.list_patients(session, principal, limit=limit, after=after, team=team)
    items = [PatientRead.model_validate(p) for p in rows]
    return page_of(items, limit, lambda p: [p.created_at.isoformat(), str(p.id)])


@router.get("/{patient_id}")
async def get_patient(patient: ReadPatient) -> PatientRead:
    """Get a patient.

    The patient's record, within the caller's scope (404 outside it): a patient reads its own, a
    clinician those of its teams.
    """
    return PatientRead.model_validate(patient)


@router.post("/{patient_id}/therapies", status_code=status.HTTP_201_CREATED)
async def add_therapy(
    principal: Staff, patient: WritePatient, body: TherapyCreate, session: WriteSession
) -> TherapyRead:
    """Add a therapy.

    A drug the patient is on from `started_on` (and until `ended_on`, if known). Several may run at
    once; every active drug's rules apply, and a drug ended recently is watched for the rule's
    window.
    """
    therapy = await service.add_therapy(session, patient, body)
    await record(
        session,
        principal,
        "therapy.created",
        "therapy",
        therapy.id,
        {"patient_id": str(patient.id), "drug_code": therapy.drug_code},
    )
    return service.therapy_read(therapy)


@router.get("/{patient_id}/therapies")
async def list_therapies(
    patient: ReadPatient, _: CurrentPrincipal, session: ReadSession
) -> list[TherapyRead]:
    """List a patient's therapies.

    Every therapy of the patient, past and current, within the caller's scope.
    """
    return [service.therapy_read(t) for t in await service.list_therapies(session, patient.id)]


@router.get("/{patient_id}/questionnaire")
async def get_questionnaire(
    patient: ReadPatient,
    _: CurrentPrincipal,
    session: ReadSession,
    on: Annotated[Day | None, Query(description="Day to ask for (default: today, UTC)")] = None,
) -> Questionnaire:
    """Today's questionnaire.

    The symptoms to ask the patient about today: the union of the active therapies' side effects,
    serious ones first, each with its question and grade labels, and the vitals worth measuring.
    """
    return await service.questionnaire(session, patient, on or datetime.now(UTC).date())
