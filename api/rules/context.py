"""The patient context the engine evaluates a report in, built the same way everywhere.

Ingest, the dry run (`/v1/rules/evaluate`) and the backtest fill a :class:`History` with what
they know of the patient (stored reports, or the history a caller sent) and ask it for each
report's context. Pure: no database, no HTTP.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, time, timedelta

from api.rules.definitions import MetricCond, RuleDef, WorseningCond
from api.rules.engine import (
    PatientContext,
    PriorGrade,
    Therapy,
    Weight,
    course_start,
    iter_leaves,
    time_of,
)


class History:
    """A patient's symptom grades and weights by time, as far back as the rules look."""

    def __init__(self) -> None:
        self._grades: dict[str, list[PriorGrade]] = {}
        # Each code's times, in step with its grades: bisected without a key function.
        self._times: dict[str, list[datetime]] = {}
        self._weights: list[Weight] = []

    def add_grade(self, code: str, grade: int, at: datetime) -> None:
        times = self._times.setdefault(code, [])
        at_index = bisect.bisect_right(times, at)
        times.insert(at_index, at)
        self._grades.setdefault(code, []).insert(at_index, PriorGrade(grade, at))

    def add_weight(self, kg: float, at: datetime) -> None:
        bisect.insort_right(self._weights, Weight(kg, at), key=time_of)

    def add_report(
        self, at: datetime, symptoms: Mapping[str, int], weight_kg: float | None
    ) -> None:
        for code, grade in symptoms.items():
            self.add_grade(code, grade, at)
        if weight_kg is not None:
            self.add_weight(weight_kg, at)

    def context(
        self,
        at: datetime,
        codes: Collection[str],
        *,
        therapies: Sequence[Therapy],
        baseline_weight_kg: float | None,
        window: timedelta,
        serious_by_drug: Mapping[str, frozenset[str]],
        symptom_names: Mapping[str, str],
    ) -> PatientContext:
        """The context of a report at ``at`` of the symptoms ``codes``.

        The history's own lists, not copies cut to what came before ``at``: the engine finds
        that part by bisection, and a batch's report would otherwise copy every grade in the
        look-back window, for each of its symptoms. Valid until the next ``add_*``.
        """
        grades = self._grades
        return PatientContext(
            therapies=therapies,
            baseline_weight_kg=baseline_weight_kg,
            earlier={code: grades[code] for code in codes if code in grades} if window else {},
            weights=self._weights,
            serious_by_drug=serious_by_drug,
            symptom_names=symptom_names,
        )


def history_window(rules: Iterable[RuleDef]) -> timedelta:
    """How far back the trend rules look: the longest worsening window among ``rules``."""
    return timedelta(
        days=max(
            (
                leaf.worsening.within_days
                for rule in rules
                for branch in rule.branches
                for leaf in iter_leaves(branch.when)
                if isinstance(leaf, WorseningCond)
            ),
            default=0,
        )
    )


def baseline_drugs(rules: Iterable[RuleDef], drug_classes: Mapping[str, str]) -> dict[str, int]:
    """Drugs whose course a weight rule measures from, with the longest watch window."""
    drugs: dict[str, int] = {}
    for rule in rules:
        if not any(
            isinstance(leaf, MetricCond) for b in rule.branches for leaf in iter_leaves(b.when)
        ):
            continue
        if rule.drug is not None:
            owners = {rule.drug}
        else:
            owners = set(rule.scope.drugs) | {
                code for code, cls in drug_classes.items() if cls in rule.scope.drug_classes
            }
        for code in owners:
            drugs[code] = max(drugs.get(code, 0), rule.watch_days)
    return drugs


def course_starts(
    therapies: Sequence[Therapy], times: Iterable[datetime], drugs: Mapping[str, int]
) -> set[datetime]:
    """The first days of the courses a weight rule measures reports at ``times`` from: of each
    course, the baseline needs the latest weight of the 7 days before it and the first in it."""
    starts = set()
    for at in times:
        for code, watch_days in drugs.items():
            start = course_start(therapies, code, at.date(), watch_days)
            if start is not None:
                starts.add(datetime.combine(start, time.min, at.tzinfo))
    return starts
