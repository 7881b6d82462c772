from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.catalog.models import Drug, DrugSideEffect, Symptom, Vital
from api.catalog.service import applies_to_drug, current_rules
from api.errors import Conflict, Forbidden, Invalid
from api.patients.models import Patient, Therapy
from api.patients.schemas import (
    PatientCreate,
    Questionnaire,
    QuestionnaireItem,
    TherapyCreate,
    TherapyRead,
    VitalItem,
)
from api.rules.engine import is_on, referenced_symptoms
from api.security import Principal

# Days after a therapy ends during which its side effects are still asked about; rules with a
# longer watch window (interferon mood: 180 days) keep their own symptoms in the questionnaire.
DEFAULT_WATCH_DAYS = 30


async def create_patient(
    session: AsyncSession, principal: Principal, body: PatientCreate
) -> Patient:
    if principal.role == "clinician" and body.care_team not in principal.teams:
        raise Forbidden("Clinicians may only register patients in their own care teams")
    patient = Patient(**body.model_dump())
    try:
        async with session.begin_nested():
            session.add(patient)
    except IntegrityError as exc:
        raise Conflict("A patient with this external_id already exists in this care team") from exc
    return patient


async def list_patients(
    session: AsyncSession,
    principal: Principal,
    *,
    limit: int,
    after: list | None,
    team: str | None,
) -> list[Patient]:
    query = select(Patient).order_by(Patient.created_at, Patient.id).limit(limit + 1)
    teams = principal.team_filter()
    if teams is not None:
        query = query.where(Patient.care_team.in_(teams))
    if team:
        query = query.where(Patient.care_team == team)
    if after:
        query = query.where(tuple_(Patient.created_at, Patient.id) > tuple_(*after))
    return list(await session.scalars(query))


def therapy_read(therapy: Therapy, today: date | None = None) -> TherapyRead:
    today = today or datetime.now(UTC).date()
    active = therapy.started_on <= today and (therapy.ended_on is None or therapy.ended_on >= today)
    return TherapyRead.model_validate(
        {
            **{c: getattr(therapy, c) for c in TherapyRead.model_fields if c != "active"},
            "active": active,
        }
    )


async def add_therapy(session: AsyncSession, patient: Patient, body: TherapyCreate) -> Therapy:
    if await session.get(Drug, body.drug_code) is None:
        raise Invalid([{"loc": ["body", "drug_code"], "msg": f"unknown drug '{body.drug_code}'"}])
    therapy = Therapy(patient_id=patient.id, **body.model_dump())
    session.add(therapy)
    await session.flush()
    return therapy


async def list_therapies(session: AsyncSession, patient_id: uuid.UUID) -> list[Therapy]:
    return list(
        await session.scalars(
            select(Therapy)
            .where(Therapy.patient_id == patient_id)
            .order_by(Therapy.started_on, Therapy.id)
        )
    )


async def questionnaire(session: AsyncSession, patient: Patient, on: date) -> Questionnaire:
    therapies = await list_therapies(session, patient.id)
    drugs = {d.code: d for d in await session.scalars(select(Drug))}
    rules = await current_rules(session)
    # drug code -> symptom codes to ask (None: all of the drug's side effects)
    asked: dict[str, set[str] | None] = {}
    for therapy in therapies:
        drug = drugs.get(therapy.drug_code)
        if drug is None:
            continue
        started, ended = therapy.started_on, therapy.ended_on
        if is_on(started, ended, on, DEFAULT_WATCH_DAYS):
            asked[drug.code] = None
            continue
        for versioned in rules:
            rule = versioned.rule
            if is_on(started, ended, on, rule.watch_days) and applies_to_drug(rule, drug):
                current = asked.setdefault(drug.code, set())
                if current is not None:
                    current.update(referenced_symptoms(rule))
    items: dict[str, QuestionnaireItem] = {}
    if asked:
        rows = await session.execute(
            select(DrugSideEffect, Symptom)
            .join(Symptom, Symptom.code == DrugSideEffect.symptom_code)
            .where(DrugSideEffect.drug_code.in_(asked))
            .order_by(Symptom.position)
        )
        for effect, symptom in rows:
            wanted = asked[effect.drug_code]
            if wanted is not None and symptom.code not in wanted:
                continue
            item = items.get(symptom.code)
            if item is None:
                items[symptom.code] = QuestionnaireItem(
                    code=symptom.code,
                    name=symptom.name,
                    question=symptom.question,
                    category=symptom.category,
                    grades=symptom.grades,
                    frequency=effect.frequency,
                    drugs=[effect.drug_code],
                )
            else:
                item.drugs.append(effect.drug_code)
                if effect.frequency == "serious":
                    item.frequency = "serious"
    symptoms = sorted(items.values(), key=lambda i: i.frequency != "serious")
    vital_names = {v for code in asked for v in drugs[code].vitals}
    vitals = [
        VitalItem(
            name=v.name, label=v.label, unit=v.unit, loinc=v.loinc, min=v.min_value, max=v.max_value
        )
        for v in await session.scalars(select(Vital).order_by(Vital.position))
        if v.name in vital_names
    ]
    return Questionnaire(
        patient_id=patient.id,
        on_date=on,
        drugs=sorted(asked),
        symptoms=symptoms,
        vitals=vitals,
    )
