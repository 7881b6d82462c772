"""The rules engine alone: CPU per report for its context and its evaluation, in process.

    .venv/bin/python bench/engine.py [--reports 20k] [--passes 5]

A temporary SQLite database, `alembic upgrade head` and the benchmark's seed (bench/seed.py:
~100 reports a patient over 100 days, as of a fixed date), the evaluation catalog read as the
service reads it; then every patient's reports replayed in time order as ingest and the backtest
do (`History.context`, `engine.evaluate`, `History.add_report`), `--passes` times. Prints the
best pass in µs a report, and a digest of every finding (rule, version, drug, severity, detail,
evidence) and advice, so that two commits can be checked for the same output. No server, no
HTTP: changes to the engine are measured apart from the noise of a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import run as bench  # bench/run.py: databases, migration, clean-up
import seed as seeding
from run import Cleanup, log
from sqlalchemy import create_engine, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from api.catalog.service import EvaluationCatalog, evaluation_catalog
from api.db import async_url
from api.models import Patient, Report, ReportSymptom, Therapy
from api.rules import engine
from api.rules.context import History
from api.rules.definitions import VITALS

SEEDED_AT = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass
class _Patient:
    baseline_weight_kg: float | None
    therapies: list[engine.Therapy] = field(default_factory=list)
    reports: list[engine.ReportInput] = field(default_factory=list)


async def _catalog(url: str) -> EvaluationCatalog:
    db = create_async_engine(async_url(url))
    try:
        async with AsyncSession(db) as session:
            return await evaluation_catalog(session)
    finally:
        await db.dispose()


def _patients(url: str, catalog: EvaluationCatalog) -> list[_Patient]:
    db = create_engine(url)
    try:
        with db.connect() as conn:
            found = {
                pid: _Patient(w)
                for pid, w in conn.execute(select(Patient.id, Patient.baseline_weight_kg))
            }
            for pid, drug, started, ended in conn.execute(
                select(Therapy.patient_id, Therapy.drug_code, Therapy.started_on, Therapy.ended_on)
            ):
                drug_class = catalog.drug_classes.get(drug, "")
                found[pid].therapies.append(engine.Therapy(drug, drug_class, started, ended))
            symptoms: dict[Any, dict[str, int]] = {}
            for report_id, code, grade in conn.execute(
                select(ReportSymptom.report_id, ReportSymptom.symptom_code, ReportSymptom.grade)
            ):
                symptoms.setdefault(report_id, {})[code] = grade
            columns = [getattr(Report, v) for v in VITALS]
            for row in conn.execute(
                select(Report.id, Report.patient_id, Report.recorded_at, *columns).order_by(
                    Report.patient_id, Report.recorded_at, Report.id
                )
            ):
                vitals = {v: x for v, x in zip(VITALS, row[3:], strict=True) if x is not None}
                found[row.patient_id].reports.append(
                    engine.ReportInput(row.recorded_at, symptoms.get(row.id, {}), vitals)
                )
    finally:
        db.dispose()
    return list(found.values())


def _replay(patients: list[_Patient], catalog: EvaluationCatalog) -> list[engine.Evaluation]:
    out = []
    for patient in patients:
        history = History()
        for report in patient.reports:
            context = history.context(
                report.recorded_at,
                report.symptoms,
                therapies=patient.therapies,
                baseline_weight_kg=patient.baseline_weight_kg,
                window=catalog.history_window,
                serious_by_drug=catalog.serious_by_drug,
                symptom_names=catalog.symptom_names,
            )
            out.append(engine.evaluate(report, context, catalog.rules, catalog.policy))
            history.add_report(report.recorded_at, report.symptoms, report.vitals.get("weight_kg"))
    return out


def _digest(evaluations: list[engine.Evaluation]) -> str:
    found = [
        [
            [f.rule_id, f.rule_version, f.drug_code, f.severity, f.detail, f.evidence]
            for f in e.findings
        ]
        + [e.advice.severity if e.advice else None]
        for e in evaluations
    ]
    return hashlib.sha256(json.dumps(found, default=str).encode()).hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", default="20k", type=bench.parse_size)
    parser.add_argument("--passes", default=5, type=int)
    args = parser.parse_args()
    cleanup = Cleanup()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            database = bench.create_sqlite(Path(tmp), cleanup)
            bench.migrate(database.url, secrets.token_urlsafe(48), Path(tmp))
            # A fixed "now": the same reports, times included, whenever it runs.
            seeded = create_engine(database.url)
            try:
                known = seeding.read_catalog(seeded)
            finally:
                seeded.dispose()
            _, chunks = seeding.generate(args.reports, known, SEEDED_AT)
            seeding.load_sqlite(database.url, chunks)
            catalog = asyncio.run(_catalog(database.url))
            patients = _patients(database.url, catalog)
        finally:
            cleanup.run_all()
    n = sum(len(p.reports) for p in patients)
    best = float("inf")
    for _ in range(args.passes):
        started = time.process_time()
        evaluations = _replay(patients, catalog)
        best = min(best, time.process_time() - started)
    findings = sum(len(e.findings) for e in evaluations)
    log(
        f"{n:,} reports of {len(patients):,} patients: {best / n * 1e6:.1f} µs a report "
        f"(best of {args.passes}); {findings:,} findings, digest {_digest(evaluations)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
