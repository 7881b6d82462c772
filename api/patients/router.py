from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.audit.service import record
from api.db import SessionDep
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
from api.security import CurrentPrincipal, ScopedPatient, Staff
from api.types import TEAM_PATTERN, Day

router = APIRouter(prefix="/v1/patients", tags=["patients"], responses=PROBLEM_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_patient(body: PatientCreate, principal: Staff, session: SessionDep) -> PatientRead:
    patient = service.create_patient(session, principal, body)
    record(
        session, principal, "patient.created", "patient", patient.id, {"team": patient.care_team}
    )
    return PatientRead.model_validate(patient)


@router.get("")
def list_patients(
    principal: Staff,
    session: SessionDep,
    team: Annotated[str | None, Query(max_length=64, pattern=TEAM_PATTERN)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PatientRead]:
    after = decode_cursor(cursor, parse_time, uuid.UUID)
    rows = service.list_patients(session, principal, limit=limit, after=after, team=team)
    items = [PatientRead.model_validate(p) for p in rows]
    return page_of(items, limit, lambda p: [p.created_at.isoformat(), str(p.id)])


@router.get("/{patient_id}")
def get_patient(patient: ScopedPatient) -> PatientRead:
    return PatientRead.model_validate(patient)


@router.post("/{patient_id}/therapies", status_code=status.HTTP_201_CREATED)
def add_therapy(
    principal: Staff, patient: ScopedPatient, body: TherapyCreate, session: SessionDep
) -> TherapyRead:
    therapy = service.add_therapy(session, patient, body)
    record(
        session,
        principal,
        "therapy.created",
        "therapy",
        therapy.id,
        {"patient_id": str(patient.id), "drug_code": therapy.drug_code},
    )
    return service.therapy_read(therapy)


@router.get("/{patient_id}/therapies")
def list_therapies(
    patient: ScopedPatient, _: CurrentPrincipal, session: SessionDep
) -> list[TherapyRead]:
    return [service.therapy_read(t) for t in service.list_therapies(session, patient.id)]


@router.get("/{patient_id}/questionnaire")
def get_questionnaire(
    patient: ScopedPatient,
    _: CurrentPrincipal,
    session: SessionDep,
    on: Annotated[Day | None, Query(description="Day to ask for (default: today, UTC)")] = None,
) -> Questionnaire:
    return service.questionnaire(session, patient, on or datetime.now(UTC).date())
