from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from api.catalog.schemas import DrugBody
from api.db import ReadSession
from api.errors import PROBLEM_RESPONSES, Invalid
from api.rules import service
from api.rules.backtest import backtest as run_backtest
from api.rules.schemas import (
    BacktestBody,
    BacktestResult,
    EvaluateBody,
    EvaluateResult,
    PerformanceList,
)
from api.security import Admin, Staff

router = APIRouter(prefix="/v1/rules", tags=["rules"], responses=PROBLEM_RESPONSES)
MAX_WINDOW = timedelta(days=366)


@router.post("/evaluate")
async def evaluate(body: EvaluateBody, _: Staff, session: ReadSession) -> EvaluateResult:
    """Dry-run the rules on a report.

    Staff only: what this report would raise for a patient on these drugs, with an optional history
    for the trend rules and a baseline weight. Nothing is stored.
    """
    return await service.dry_run(session, body)


@router.post("/backtest")
async def backtest(body: BacktestBody, _: Admin, session: ReadSession) -> BacktestResult:
    """Backtest a proposed drug entry.

    Admin only: replays the stored reports of a window (at most 366 days) through today's rules and
    through the proposed entry, without storing anything, and answers which findings the change
    would add, remove or change in severity.
    """
    if body.until <= body.since:
        raise Invalid([{"loc": ["body", "until"], "msg": "must be after since"}])
    if body.until - body.since > MAX_WINDOW:
        raise Invalid(
            [{"loc": ["body", "until"], "msg": f"the window is at most {MAX_WINDOW.days} days"}]
        )
    entry = DrugBody.model_validate(body.drug.model_dump(exclude={"code"}, by_alias=True))
    # A read, although it is a POST: on SQLite it must not hold the write lock while it replays.
    result = await run_backtest(session, body.drug.code, entry, body.since, body.until)
    return BacktestResult.model_validate(result)


@router.get("/performance")
async def performance(principal: Staff, session: ReadSession) -> PerformanceList:
    """Rule performance.

    Staff only: per rule version over the caller's teams, how often it fired, how many were
    resolved, and how nurses judged them (`ppv` = confirmed / (confirmed + false alarm)): the
    evidence for tuning against alert fatigue.
    """
    return PerformanceList(items=await service.performance(session, principal))
