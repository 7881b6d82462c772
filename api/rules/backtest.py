"""Rule impact: replay stored reports through the current rules and through a proposed drug
entry, and say which findings the change adds or removes. Nothing is stored.

Reports are read a page at a time in (patient, recorded_at) order, so memory holds one page and
the history of the patient being replayed, however many reports the window has. Each patient's
history before the window (the trend rules' look-back, the weights a course baseline may need)
is read once per page of patients, in a few statements.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Uuid, bindparam, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from api.catalog.schemas import DrugBody
from api.catalog.service import EvaluationCatalog, check_drug, evaluation_catalog
from api.patients.models import Patient, Therapy
from api.reports.models import Report, ReportSymptom
from api.rules import engine
from api.rules.context import History, baseline_drugs, history_window
from api.rules.definitions import VITALS

PAGE = 1000
# The lists of changed findings stop here; the counts always cover every report.
MAX_LISTED = 5000

reports = Report.__table__
report_symptoms = ReportSymptom.__table__
therapies = Therapy.__table__
patients = Patient.__table__

_page = (
    select(
        reports.c.id, reports.c.patient_id, reports.c.recorded_at, *(reports.c[v] for v in VITALS)
    )
    .where(
        reports.c.recorded_at >= bindparam("since"),
        reports.c.recorded_at < bindparam("until"),
        tuple_(reports.c.patient_id, reports.c.recorded_at, reports.c.id)
        > tuple_(
            bindparam("after_patient", type_=Uuid),
            bindparam("after_at", type_=reports.c.recorded_at.type),
            bindparam("after_id", type_=Uuid),
        ),
    )
    .order_by(reports.c.patient_id, reports.c.recorded_at, reports.c.id)
    .limit(PAGE)
)
_symptoms = select(
    report_symptoms.c.report_id, report_symptoms.c.symptom_code, report_symptoms.c.grade
).where(report_symptoms.c.report_id.in_(bindparam("ids", expanding=True)))
_patients = select(patients.c.id, patients.c.baseline_weight_kg).where(
    patients.c.id.in_(bindparam("ids", expanding=True))
)
_therapies = select(
    therapies.c.patient_id, therapies.c.drug_code, therapies.c.started_on, therapies.c.ended_on
).where(therapies.c.patient_id.in_(bindparam("ids", expanding=True)))
_graded = report_symptoms.join(reports, reports.c.id == report_symptoms.c.report_id)
# Before the window only the latest time each (symptom, grade) was reported matters: the lowest
# grade of any look-back that starts after ``from`` is the lowest whose latest report is in it.
_earlier_grades = (
    select(
        reports.c.patient_id,
        func.max(reports.c.recorded_at),
        report_symptoms.c.symptom_code,
        report_symptoms.c.grade,
    )
    .select_from(_graded)
    .where(
        reports.c.patient_id.in_(bindparam("ids", expanding=True)),
        reports.c.recorded_at >= bindparam("from"),
        reports.c.recorded_at < bindparam("since"),
    )
    .group_by(reports.c.patient_id, report_symptoms.c.symptom_code, report_symptoms.c.grade)
)
_earlier_weights = select(reports.c.patient_id, reports.c.recorded_at, reports.c.weight_kg).where(
    reports.c.patient_id.in_(bindparam("ids", expanding=True)),
    reports.c.weight_kg.is_not(None),
    reports.c.recorded_at >= bindparam("from"),
    reports.c.recorded_at < bindparam("since"),
)


@dataclass(frozen=True)
class _Rules:
    """One side of the comparison: what the engine needs to evaluate a report."""

    rules: list[engine.VersionedRule]
    policy: Any
    drug_classes: Mapping[str, str]
    serious_by_drug: Mapping[str, frozenset[str]]
    symptom_names: Mapping[str, str]
    window: timedelta
    baseline_drugs: Mapping[str, int]


def _current(catalog: EvaluationCatalog) -> _Rules:
    return _Rules(
        rules=catalog.rules,
        policy=catalog.policy,
        drug_classes=catalog.drug_classes,
        serious_by_drug=catalog.serious_by_drug,
        symptom_names=catalog.symptom_names,
        window=catalog.history_window,
        baseline_drugs=catalog.baseline_drugs,
    )


def _proposed(catalog: EvaluationCatalog, code: str, entry: DrugBody, owned: list[Any]) -> _Rules:
    """The catalog as it would be with ``entry`` as drug ``code``: its own rules replaced, its
    class and serious side effects changed; every other rule as it is."""
    kept = [v for v in catalog.rules if v.rule.drug != code]
    proposed = [engine.VersionedRule(rule, 0) for rule in owned]  # version 0: not stored
    rules = sorted([*kept, *proposed], key=lambda v: v.rule.id)
    classes = {**catalog.drug_classes, code: entry.drug_class}
    serious = {
        **catalog.serious_by_drug,
        code: frozenset(e.symptom_code for e in entry.side_effects if e.frequency == "serious"),
    }
    window = history_window(v.rule for v in rules)
    return _Rules(
        rules=rules,
        policy=catalog.policy,
        drug_classes=classes,
        serious_by_drug=serious,
        symptom_names=catalog.symptom_names,
        window=window,
        baseline_drugs=baseline_drugs((v.rule for v in rules), classes),
    )


@dataclass
class _Tally:
    by_rule: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)

    def add(self, findings: Iterable[engine.Finding]) -> None:
        for f in findings:
            self.by_rule[f.rule_id] += 1
            self.by_severity[f.severity] += 1

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "by_rule": dict(sorted(self.by_rule.items())),
            "by_severity": {s: self.by_severity[s] for s in ("emergency", "urgent", "routine")},
        }


@dataclass
class _Patient:
    baseline_weight_kg: float | None
    therapies: list[tuple[str, date, date | None]]
    history: History
    affected: bool  # ever on the drug: only then can the proposal change anything


def _therapies_for(
    side: _Rules, rows: Sequence[tuple[str, date, date | None]]
) -> list[engine.Therapy]:
    return [engine.Therapy(c, side.drug_classes.get(c, ""), s, e) for c, s, e in rows]


async def _load_patients(
    conn: AsyncConnection,
    ids: list[uuid.UUID],
    since: datetime,
    until: datetime,
    code: str,
    sides: Sequence[_Rules],
) -> dict[uuid.UUID, _Patient]:
    found = {
        pid: _Patient(weight, [], History(), False)
        for pid, weight in await conn.execute(_patients, {"ids": ids})
    }
    for pid, drug, started, ended in await conn.execute(_therapies, {"ids": ids}):
        found[pid].therapies.append((drug, started, ended))
        found[pid].affected |= drug == code
    look_back = max(side.window for side in sides)
    if look_back:
        params = {"ids": ids, "from": since - look_back, "since": since}
        for pid, at, symptom, grade in await conn.execute(_earlier_grades, params):
            found[pid].history.add_grade(symptom, grade, at)
    # Weights before the window: from 7 days before the earliest course of a weight rule's drug
    # that may count in the window.
    starts: dict[uuid.UUID, datetime] = {}
    for pid, patient in found.items():
        for side in sides:
            for drug, started, ended in patient.therapies:
                watch = side.baseline_drugs.get(drug)
                if watch is None or not engine.is_on(
                    started, ended, since.date(), watch, until=until.date()
                ):
                    continue
                begin = datetime.combine(started, datetime.min.time(), since.tzinfo)
                begin -= engine.PRE_DOSE
                starts[pid] = min(starts.get(pid, begin), begin)
    if starts:
        params = {"ids": list(starts), "from": min(starts.values()), "since": since}
        for pid, at, weight in await conn.execute(_earlier_weights, params):
            if at >= starts[pid]:
                found[pid].history.add_weight(weight, at)
    return found


def _evaluate(side: _Rules, patient: _Patient, report: engine.ReportInput) -> list[engine.Finding]:
    context = patient.history.context(
        report.recorded_at,
        report.symptoms,
        therapies=_therapies_for(side, patient.therapies),
        baseline_weight_kg=patient.baseline_weight_kg,
        window=side.window,
        serious_by_drug=side.serious_by_drug,
        symptom_names=side.symptom_names,
    )
    return engine.evaluate(report, context, side.rules, side.policy).findings


async def backtest(
    session: AsyncSession, code: str, entry: DrugBody, since: datetime, until: datetime
) -> dict[str, Any]:
    owned = await check_drug(session, code, entry, loc=("body", "drug"))
    catalog = await evaluation_catalog(session)
    current, proposed = _current(catalog), _proposed(catalog, code, entry, owned)
    tallies = {"current": _Tally(), "proposed": _Tally()}
    changes: dict[str, list[dict[str, Any]]] = {
        "newly_flagged": [],
        "no_longer_flagged": [],
        "severity_changed": [],
    }
    counts = Counter[str]()
    seen_patients: set[uuid.UUID] = set()
    loaded: dict[uuid.UUID, _Patient] = {}
    conn = await session.connection()
    after: tuple[uuid.UUID, datetime, uuid.UUID] = (uuid.UUID(int=0), since, uuid.UUID(int=0))
    replayed = 0
    while True:
        page = (
            await conn.execute(
                _page,
                {
                    "since": since,
                    "until": until,
                    "after_patient": after[0],
                    "after_at": after[1],
                    "after_id": after[2],
                },
            )
        ).all()
        if not page:
            break
        after = (page[-1].patient_id, page[-1].recorded_at, page[-1].id)
        new = sorted({row.patient_id for row in page} - set(loaded))
        # Patients before this page's last one are done: their history can go.
        loaded = {pid: p for pid, p in loaded.items() if pid == page[0].patient_id}
        if new:
            loaded |= await _load_patients(conn, new, since, until, code, (current, proposed))
        symptoms: dict[uuid.UUID, dict[str, int]] = {row.id: {} for row in page}
        for report_id, symptom, grade in await conn.execute(_symptoms, {"ids": list(symptoms)}):
            symptoms[report_id][symptom] = grade
        for row in page:
            patient = loaded[row.patient_id]
            seen_patients.add(row.patient_id)
            vitals = {v: value for v in VITALS if (value := getattr(row, v)) is not None}
            report = engine.ReportInput(row.recorded_at, symptoms[row.id], vitals)
            before = _evaluate(current, patient, report)
            after_change = _evaluate(proposed, patient, report) if patient.affected else before
            patient.history.add_report(row.recorded_at, report.symptoms, vitals.get("weight_kg"))
            tallies["current"].add(before)
            tallies["proposed"].add(after_change)
            _compare(row.id, before, after_change, changes, counts)
            replayed += 1
    result: dict[str, Any] = {
        "reports": replayed,
        "patients": len(seen_patients),
        "current": tallies["current"].as_dict(),
        "proposed": tallies["proposed"].as_dict(),
        **changes,
        "changed_counts": {name: counts[name] for name in changes},
    }
    return result


def _compare(
    report_id: uuid.UUID,
    before: list[engine.Finding],
    after: list[engine.Finding],
    changes: dict[str, list[dict[str, Any]]],
    counts: Counter[str],
) -> None:
    was = {f.rule_id: f.severity for f in before}
    now = {f.rule_id: f.severity for f in after}
    if was == now:
        return

    def note(kind: str, item: dict[str, Any]) -> None:
        counts[kind] += 1
        if len(changes[kind]) < MAX_LISTED:
            changes[kind].append({"report_id": report_id, **item})

    for rule_id in sorted(now.keys() - was.keys()):
        note("newly_flagged", {"rule_id": rule_id, "severity": now[rule_id]})
    for rule_id in sorted(was.keys() - now.keys()):
        note("no_longer_flagged", {"rule_id": rule_id, "severity": was[rule_id]})
    for rule_id in sorted(was.keys() & now.keys()):
        if was[rule_id] != now[rule_id]:
            note(
                "severity_changed",
                {"rule_id": rule_id, "from_severity": was[rule_id], "severity": now[rule_id]},
            )
