from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.audit.service import record
from api.catalog import service
from api.catalog.schemas import DrugBody, DrugDetail, DrugRead, SymptomRead
from api.db import ReadSession, WriteSession
from api.errors import PROBLEM_RESPONSES
from api.rules.definitions import CODE_PATTERN
from api.security import Admin, CurrentPrincipal

router = APIRouter(prefix="/v1", tags=["catalog"], responses=PROBLEM_RESPONSES)
DrugCode = Annotated[str, Path(pattern=CODE_PATTERN, max_length=64)]


@router.get("/symptoms")
async def list_symptoms(_: CurrentPrincipal, session: ReadSession) -> list[SymptomRead]:
    """List the symptom vocabulary.

    Every symptom a patient can report, with its question and the PRO-CTCAE words for grades 0-4
    (none, mild, moderate, severe, very severe).
    """
    return await service.list_symptoms(session)


@router.get("/drugs")
async def list_drugs(_: CurrentPrincipal, session: ReadSession) -> list[DrugRead]:
    """List the drugs of the catalog.

    Code, name, brand names, class and route of every drug the catalog knows.
    """
    return await service.list_drugs(session)


@router.get("/drugs/{code}")
async def get_drug(code: DrugCode, _: CurrentPrincipal, session: ReadSession) -> DrugDetail:
    """Get a drug with its side effects and rules.

    The drug, its side effects (`common` or `serious`) and a read-only view of every alert rule that
    applies to patients on it, with the rule's current version.
    """
    return await service.get_drug(session, code)


@router.put("/drugs/{code}", responses={201: {"model": DrugDetail, "description": "Created"}})
async def put_drug(
    code: DrugCode, body: DrugBody, principal: Admin, session: WriteSession, response: Response
) -> DrugDetail:
    """Create or replace a drug's catalog entry.

    Admin only. The entry (side effects and the drug's own rules) is validated as a whole; a changed
    rule gets a new version and alerts raised earlier keep citing theirs. 201 when the drug is
    new.
    """
    drug, created = await service.put_drug(session, code, body)
    await record(
        session,
        principal,
        "drug.created" if created else "drug.replaced",
        "drug",
        code,
        {"rules": [r.id for r in drug.rules if r.drug_code == code]},
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return drug
