"""The rules engine: (report, patient context, rules, policy) -> findings and advice.

Pure: no database, no HTTP. The caller gathers the context in a fixed number of queries.

One evaluator walks a rule's condition tree and returns ``(matched, hits)``: a typed hit for
every leaf that matched (in an ``any`` node, every matching child). A finding holds those hits in
its ``grounds``; its ``evidence`` is their JSON form and its ``detail`` says them in words.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, NamedTuple

from api.rules.definitions import (
    AllCond,
    AnyCond,
    Branch,
    Comparator,
    Condition,
    MetricCond,
    OnDrugCond,
    Policy,
    RuleDef,
    Severity,
    SymptomCond,
    VitalCond,
    WorseningCond,
)


@dataclass(frozen=True, slots=True)
class Therapy:
    drug_code: str
    drug_class: str
    started_on: date
    ended_on: date | None = None


class PriorGrade(NamedTuple):  # a tuple: a context read makes thousands of them
    grade: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class ReportInput:
    recorded_at: datetime  # timezone-aware
    symptoms: Mapping[str, int] = field(default_factory=dict)  # code -> grade 0..4
    vitals: Mapping[str, float] = field(default_factory=dict)  # only the vitals present


@dataclass(frozen=True, slots=True)
class Weight:
    kg: float
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class PatientContext:
    therapies: Sequence[Therapy] = ()
    # The weight recorded on the patient's record (``baseline_weight_kg``), if any.
    baseline_weight_kg: float | None = None
    # Grades of the report's symptoms, oldest first: at least those reported within the trend
    # rules' look-back before it (the trend rules compare nothing else). Grades from the report's
    # time on may follow; the engine only looks before it.
    earlier: Mapping[str, Sequence[PriorGrade]] = field(default_factory=dict)
    # Weights reported, oldest first: at least those from 7 days before the start of each course
    # a weight rule may look at (see ``course_baseline``). As for ``earlier``, weights from the
    # report's time on may follow.
    weights: Sequence[Weight] = ()
    # drug code -> symptom codes that are `serious` for that drug.
    serious_by_drug: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # symptom code -> display name, for the words in `detail` (falls back to the code).
    symptom_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    """What one rule (or the escalation) found in a report: the alert it raises."""

    rule_id: str
    rule_version: int
    drug_code: str | None
    severity: Severity
    title: str
    detail: str
    follow_up_minutes: int
    grounds: Grounds = field(repr=False)
    # The JSON form of ``grounds``, computed once: what an alert stores and the API shows.
    evidence: dict[str, Any] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", self.grounds.as_evidence())  # frozen


@dataclass(frozen=True, slots=True)
class Advice:
    severity: Severity
    message: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    findings: list[Finding]
    advice: Advice | None


@dataclass(frozen=True, slots=True)
class VersionedRule:
    rule: RuleDef
    version: int
    # What a report must carry for the rule to possibly fire (see _needs); None: nothing.
    needs: frozenset[str] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", _rule_needs(self.rule))


# --- words -----------------------------------------------------------------------------------

GRADE_WORDS = ("none", "mild", "moderate", "severe", "very severe")
OPS: dict[str, Callable[[float, float], bool]] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
    "eq": operator.eq,
}
OP_WORDS = {
    "gte": "is at or above",
    "gt": "is above",
    "lte": "is at or below",
    "lt": "is below",
    "eq": "is exactly",
}
THRESHOLD_WORDS = {"gte": "", "gt": "above ", "lte": "at most ", "lt": "below ", "eq": "exactly "}
# name, unit, decimals (None: as given)
VITAL_WORDS: dict[str, tuple[str, str, int | None]] = {
    "temperature_c": ("Temperature", " °C", 1),
    "systolic_bp": ("Systolic blood pressure", " mm Hg", None),
    "diastolic_bp": ("Diastolic blood pressure", " mm Hg", None),
    "heart_rate": ("Heart rate", "/min", None),
    "weight_kg": ("Weight", " kg", 1),
    "spo2": ("Oxygen saturation (SpO2)", "%", None),
}


def _num(value: float) -> float | int:
    """A number for evidence: 90.0 -> 90, 38.5 stays."""
    return int(value) if float(value).is_integer() else value


def _fmt(value: float, decimals: int | None = None) -> str:
    return f"{value:.{decimals}f}" if decimals is not None else f"{_num(value):g}"


def _vital_text(name: str, value: float) -> str:
    _, unit, decimals = VITAL_WORDS[name]
    return f"{_fmt(value, decimals)}{unit}"


# --- which drugs count for a rule --------------------------------------------------------------


def is_on(
    started_on: date, ended_on: date | None, day: date, watch_days: int, until: date | None = None
) -> bool:
    """Whether the patient counts as on a therapy at ``day`` (or on some day up to ``until``):
    started by then, and not ended more than ``watch_days`` before ``day``."""
    return started_on <= (until or day) and (
        # Subtracting from the report's day cannot overflow, as adding to a far ended_on could.
        ended_on is None or day - timedelta(days=watch_days) <= ended_on
    )


def _on_drugs(therapies: Sequence[Therapy], day: date, watch_days: int) -> list[Therapy]:
    """Therapies the patient is "on" at ``day``."""
    return [t for t in therapies if is_on(t.started_on, t.ended_on, day, watch_days)]


def rule_applies_to(rule: RuleDef, drug_code: str, drug_class: str) -> bool:
    """Whether a drug brings ``rule`` into play: the rule's own drug, one in its scope, or any
    drug for a global rule without a scope."""
    if rule.drug is not None:
        return rule.drug == drug_code
    scope = rule.scope
    if not scope.drugs and not scope.drug_classes:
        return True
    return drug_code in scope.drugs or drug_class in scope.drug_classes


def _scope_drugs(rule: RuleDef, on: _On) -> list[str] | None:
    """The patient's drugs that bring this rule into play, or None when the rule does not apply
    (a global rule without a scope applies to every patient, on a drug or not)."""
    if rule.drug is not None:
        return [rule.drug] if rule.drug in on.drugs else None
    scope = rule.scope
    if not scope.drugs and not scope.drug_classes:
        return on.codes
    hits = sorted(
        {t.drug_code for t in on.therapies if rule_applies_to(rule, t.drug_code, t.drug_class)}
    )
    return hits or None


@dataclass(frozen=True, slots=True)
class _On:
    """What the patient is on at a report's day, with one watch window."""

    therapies: list[Therapy]
    drugs: frozenset[str]
    codes: list[str]  # ``drugs`` sorted


# --- baseline weight per course (CLINICAL.md "Baseline weight") -------------------------------

PRE_DOSE_DAYS = 7
PRE_DOSE = timedelta(days=PRE_DOSE_DAYS)
BaselineSource = Literal["pre_dose", "recorded", "first_in_course"]


@dataclass(frozen=True, slots=True)
class Baseline:
    weight_kg: float
    source: BaselineSource
    recorded_at: datetime | None = None  # when that weight was reported (None: the record's)

    def words(self) -> str:
        kg = _vital_text("weight_kg", self.weight_kg)
        if self.source == "recorded":
            return f"{kg}, the baseline on the patient's record"
        day = self.recorded_at.date().isoformat() if self.recorded_at else "?"
        if self.source == "pre_dose":
            return f"{kg} reported {day}, before the course"
        return f"{kg} reported {day}, the first weight of this course"

    def as_evidence(self) -> dict[str, Any]:
        return {
            "weight_kg": self.weight_kg,
            "source": self.source,
            "recorded_at": self.recorded_at.isoformat() if self.recorded_at else None,
            "words": self.words(),
        }


def course_start(
    therapies: Sequence[Therapy], drug_code: str, day: date, watch_days: int
) -> date | None:
    """First day of the patient's course of ``drug_code`` that counts at ``day``: the therapy
    of that drug started last among those the patient is on (with the rule's watch window)."""
    starts = [
        t.started_on for t in _on_drugs(therapies, day, watch_days) if t.drug_code == drug_code
    ]
    return max(starts, default=None)


def course_baseline(
    context: PatientContext, drug_code: str | None, at: datetime, watch_days: int
) -> Baseline | None:
    """The baseline weight for a rule of ``drug_code`` on a report at ``at``.

    CLINICAL.md: the latest weight reported in the 7 days before the course's first day (the
    pre-dose weight), else the patient's recorded baseline, else the first weight reported in
    the course. Another drug added mid-course changes nothing: the course is that drug's own.
    A rule without a drug has no course: only the recorded baseline counts.
    """
    start = None
    if drug_code is not None:
        first_day = course_start(context.therapies, drug_code, at.date(), watch_days)
        if first_day is not None:
            start = datetime.combine(first_day, time.min, at.tzinfo)
    weights = context.weights  # oldest first: found by bisection, not by a scan
    # Where the course's weights begin: the pre-dose weight is just before, the first just at.
    course = 0 if start is None else bisect.bisect_left(weights, start, key=time_of)
    if start is not None and course and weights[course - 1].recorded_at >= start - PRE_DOSE:
        # Of the weights reported at that latest time, the first (as max() would take).
        latest = weights[bisect.bisect_left(weights, weights[course - 1].recorded_at, key=time_of)]
        return Baseline(latest.kg, "pre_dose", latest.recorded_at)
    if context.baseline_weight_kg is not None:
        return Baseline(context.baseline_weight_kg, "recorded")
    if start is not None and course < len(weights) and weights[course].recorded_at < at:
        first = weights[course]
        return Baseline(first.kg, "first_in_course", first.recorded_at)
    return None


# The sort key of a patient's grades and weights; an attrgetter, which bisect and sort call in C.
time_of: Callable[[PriorGrade | Weight], datetime] = operator.attrgetter("recorded_at")
_grade_of = operator.attrgetter("grade")


_UNSET: Any = object()


@dataclass(slots=True)
class _Env:
    report: ReportInput
    context: PatientContext
    on: frozenset[str]  # drugs the patient is on, with this rule's watch window
    scope_drugs: tuple[str, ...]  # of those, the ones in the rule's scope (for "@serious")
    baseline_drug: str | None  # whose course the weight metric measures from
    watch_days: int
    _baseline: Any = _UNSET

    def baseline(self) -> Baseline | None:
        if self._baseline is _UNSET:
            self._baseline = course_baseline(
                self.context, self.baseline_drug, self.report.recorded_at, self.watch_days
            )
        return self._baseline


# --- what a rule matched: typed hits, and the grounds of a finding -----------------------------
# Each hit says itself in words (the finding's detail) and as evidence (the JSON stored with the
# alert, which the API, the docs and the dashboard read: its keys and values are a contract).


def _symptom_name(code: str, context: PatientContext) -> str:
    return context.symptom_names.get(code) or code.replace("_", " ").capitalize()


@dataclass(frozen=True, slots=True)
class SymptomHit:
    symptom: str
    grade: int
    op: Comparator
    threshold: float
    # Drugs in scope the symptom is serious for; None when the leaf does not ask.
    serious_for: tuple[str, ...] | None = None

    @property
    def cause(self) -> str:
        return f"symptom:{self.symptom}"

    def words(self, context: PatientContext) -> str:
        text = (
            f"{_symptom_name(self.symptom, context)} reported as {GRADE_WORDS[self.grade]} "
            f"(grade {self.grade} of 4; threshold {THRESHOLD_WORDS[self.op]}{_num(self.threshold)}"
        )
        if self.serious_for:
            text += f"; a serious side effect of {', '.join(self.serious_for)}"
        return text + ")"

    def as_evidence(self) -> dict[str, Any]:
        evidence: dict[str, Any] = {
            "symptom": self.symptom,
            "grade": self.grade,
            "op": self.op,
            "threshold": _num(self.threshold),
        }
        if self.serious_for is not None:
            evidence["serious_for"] = list(self.serious_for)
        return evidence


@dataclass(frozen=True, slots=True)
class VitalHit:
    vital: str
    value: float  # as reported
    op: Comparator
    threshold: float

    @property
    def cause(self) -> str:
        return f"vital:{self.vital}"

    def words(self, context: PatientContext) -> str:
        return (
            f"{VITAL_WORDS[self.vital][0]} {_vital_text(self.vital, self.value)} "
            f"{OP_WORDS[self.op]} {_vital_text(self.vital, self.threshold)}"
        )

    def as_evidence(self) -> dict[str, Any]:
        return {
            "vital": self.vital,
            "value": self.value,
            "op": self.op,
            "threshold": _num(self.threshold),
        }


@dataclass(frozen=True, slots=True)
class MetricHit:
    metric: str  # weight_gain_pct, the only metric
    value: float  # percent, rounded to 2 decimals (the words say this rounded value)
    op: Comparator
    threshold: float
    weight_kg: float
    baseline: Baseline

    @property
    def cause(self) -> str:
        return f"metric:{self.metric}"

    def words(self, context: PatientContext) -> str:
        direction = "above" if self.value >= 0 else "below"
        return (
            f"Weight {_vital_text('weight_kg', self.weight_kg)} is {abs(self.value):.1f}% "
            f"{direction} baseline {self.baseline.words()}, "
            f"{OP_WORDS[self.op].removeprefix('is ')} the {_num(self.threshold)}% threshold"
        )

    def as_evidence(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "op": self.op,
            "threshold": _num(self.threshold),
            "weight_kg": self.weight_kg,
            "baseline_weight_kg": self.baseline.weight_kg,
            "baseline": self.baseline.as_evidence(),
        }


@dataclass(frozen=True, slots=True)
class WorseningHit:
    symptom: str
    grade: int
    lowest_grade: int
    lowest_recorded_at: datetime
    by: int
    within_days: int

    @property
    def cause(self) -> str:
        return f"symptom:{self.symptom}"

    def words(self, context: PatientContext) -> str:
        return (
            f"{_symptom_name(self.symptom, context)} rose to grade {self.grade} from grade "
            f"{self.lowest_grade}, its lowest in the previous {self.within_days} days "
            f"(reported {self.lowest_recorded_at.date().isoformat()}; "
            f"threshold: {self.by} grades)"
        )

    def as_evidence(self) -> dict[str, Any]:
        return {
            "worsening": self.symptom,
            "grade": self.grade,
            "lowest_grade": self.lowest_grade,
            "lowest_recorded_at": self.lowest_recorded_at.isoformat(),
            "by": self.by,
            "within_days": self.within_days,
        }


@dataclass(frozen=True, slots=True)
class OnDrugHit:
    drugs: tuple[str, ...]  # of the leaf's drugs, those the patient is on

    @property
    def cause(self) -> None:
        """None: being on a drug is context, not a problem of its own."""
        return None

    def words(self, context: PatientContext) -> str:
        return f"on {' or '.join(self.drugs)}"

    def as_evidence(self) -> dict[str, Any]:
        return {"on_drug": list(self.drugs)}


Hit = SymptomHit | VitalHit | MetricHit | WorseningHit | OnDrugHit


@dataclass(frozen=True, slots=True)
class RuleGrounds:
    """What a rule's finding rests on: the branch that won and its hits."""

    branch: int  # index in the rule's branches
    hits: tuple[Hit, ...]
    also_meets: tuple[str, ...] = ()  # rules that yielded to this one on the same report

    @property
    def baseline(self) -> Baseline | None:
        """The course baseline of the weight metric, when a hit measured from one."""
        return next((hit.baseline for hit in self.hits if isinstance(hit, MetricHit)), None)

    @property
    def causes(self) -> frozenset[str]:
        """What the hits are about, to tell distinct problems apart (see ``_escalation``)."""
        return frozenset(hit.cause for hit in self.hits if hit.cause is not None)

    def as_evidence(self) -> dict[str, Any]:
        evidence: dict[str, Any] = {
            "branch": self.branch,
            "matched": [hit.as_evidence() for hit in self.hits],
        }
        if (baseline := self.baseline) is not None:
            evidence["baseline_weight_kg"] = baseline.weight_kg
            evidence["baseline"] = baseline.as_evidence()
        if self.also_meets:
            evidence["also_meets"] = list(self.also_meets)
        return evidence


@dataclass(frozen=True, slots=True)
class EscalationGrounds:
    """What the escalation rests on: the urgent findings and the distinct problems among them."""

    findings: tuple[Finding, ...]
    distinct: tuple[str, ...]

    def as_evidence(self) -> dict[str, Any]:
        return {
            "causes": [
                {"rule_id": f.rule_id, "detail": f.detail, "evidence": f.evidence}
                for f in self.findings
            ],
            "distinct": list(self.distinct),
        }


Grounds = RuleGrounds | EscalationGrounds


# --- the evaluator -----------------------------------------------------------------------------


def _match(cond: Condition, env: _Env) -> list[Hit]:
    """The hits of a matching condition (in an ``any`` node, of every matching child); []
    when it does not match."""
    if type(cond) is AllCond:
        hits: list[Hit] = []
        for child in cond.all:
            found = _match(child, env)
            if not found:
                return []
            hits += found
        return hits
    if type(cond) is AnyCond:
        hits = []
        for child in cond.any:  # no short cut: every matching child
            hits += _match(child, env)
        return hits
    return _LEAVES[type(cond)](cond, env)


# A matching leaf's hits (one per matching symptom), [] when it does not match.


def _symptom_hits(cond: SymptomCond, env: _Env) -> list[Hit]:
    report = env.report
    if cond.symptom in ("*", "@serious"):
        left_out = set(cond.except_ or ())
        codes = sorted(c for c in report.symptoms if c not in left_out)
    elif cond.symptom in report.symptoms:
        codes = [cond.symptom]
    else:
        return []
    serious_only = cond.symptom == "@serious" or bool(cond.serious)
    if serious_only:
        by_drug = env.context.serious_by_drug
        serious = {d: by_drug.get(d, frozenset()) for d in env.scope_drugs}
        codes = [c for c in codes if any(c in s for s in serious.values())]
    compare, threshold = OPS[cond.op], cond.value
    hits: list[Hit] = []
    for code in codes:
        grade = report.symptoms[code]
        if compare(grade, threshold):
            serious_for: tuple[str, ...] | None = None
            if serious_only:
                serious_for = tuple(d for d in env.scope_drugs if code in serious[d])
            hits.append(SymptomHit(code, grade, cond.op, threshold, serious_for))
    return hits


def _vital_hits(cond: VitalCond, env: _Env) -> list[Hit]:
    value = env.report.vitals.get(cond.vital)
    if value is None or not OPS[cond.op](value, cond.value):
        return []
    return [VitalHit(cond.vital, value, cond.op, cond.value)]


def _metric_hits(cond: MetricCond, env: _Env) -> list[Hit]:  # weight_gain_pct, the only metric
    weight = env.report.vitals.get("weight_kg")
    if weight is None:
        return []
    baseline = env.baseline()
    if baseline is None or baseline.weight_kg <= 0:
        return []
    # Rounded so that a weight exactly at a threshold is not lost to float noise.
    pct = round((weight - baseline.weight_kg) / baseline.weight_kg * 100, 4)
    if not OPS[cond.op](pct, cond.value):
        return []
    return [MetricHit(cond.metric, round(pct, 2), cond.op, cond.value, weight, baseline)]


def _worsening_hits(cond: WorseningCond, env: _Env) -> list[Hit]:
    report, context = env.report, env.context
    by, days = cond.worsening.by, cond.worsening.within_days
    since = report.recorded_at - timedelta(days=days)
    hits: list[Hit] = []
    for code, grade in sorted(report.symptoms.items()):
        earlier = context.earlier.get(code)
        if not earlier:
            continue
        start = bisect.bisect_left(earlier, since, key=time_of)
        end = bisect.bisect_left(earlier, report.recorded_at, key=time_of)
        if start == end:
            continue
        # The lowest grade; of its reports, the latest (the one a nurse would look up):
        # min() keeps the first it meets, so it walks from the latest back.
        lowest = min(reversed(earlier[start:end]), key=_grade_of)
        if grade >= lowest.grade + by:
            hits.append(WorseningHit(code, grade, lowest.grade, lowest.recorded_at, by, days))
    return hits


def _on_drug_hits(cond: OnDrugCond, env: _Env) -> list[Hit]:
    drugs = tuple(code for code in cond.on_drug if code in env.on)
    return [OnDrugHit(drugs)] if drugs else []


# By the leaf's own class: a rule's leaves are met on every report, an isinstance chain each.
_LEAVES: dict[type, Callable[[Any, _Env], list[Hit]]] = {
    SymptomCond: _symptom_hits,
    VitalCond: _vital_hits,
    MetricCond: _metric_hits,
    WorseningCond: _worsening_hits,
    OnDrugCond: _on_drug_hits,
}


def _causes(finding: Finding) -> frozenset[str]:
    """What a finding rests on, to tell distinct findings apart; a finding on no symptom, vital
    or metric (only drugs, say) is a problem of its own."""
    grounds = finding.grounds
    causes = grounds.causes if isinstance(grounds, RuleGrounds) else frozenset()
    return causes or frozenset({f"rule:{finding.rule_id}"})


# --- rules -------------------------------------------------------------------------------------


def _evaluate_rule(
    versioned: VersionedRule,
    report: ReportInput,
    context: PatientContext,
    policy: Policy,
    on: _On,
) -> Finding | None:
    """``on``: what the patient is on with the rule's watch window."""
    rule = versioned.rule
    scope_drugs = _scope_drugs(rule, on)
    if scope_drugs is None:
        return None
    scoped = bool(rule.scope.drugs or rule.scope.drug_classes)
    env = _Env(
        report,
        context,
        on.drugs,
        tuple(scope_drugs),
        # A scoped global rule measures from the course of the patient's first drug in scope.
        baseline_drug=rule.drug or (scope_drugs[0] if scoped and scope_drugs else None),
        watch_days=rule.watch_days,
    )

    best: tuple[int, Branch, list[Hit]] | None = None
    for index, branch in enumerate(rule.branches):
        hits = _match(branch.when, env)
        # Ties go to the first listed branch.
        if hits and (best is None or branch.severity.rank > best[1].severity.rank):
            best = (index, branch, hits)
    if best is None:
        return None
    index, branch, hits = best

    drug_code = rule.drug
    if drug_code is None:
        drug_code = next((hit.drugs[0] for hit in hits if isinstance(hit, OnDrugHit)), None)
    if drug_code is None and (rule.scope.drugs or rule.scope.drug_classes):
        # A class rule (e.g. interferon mood) names the patient's drug that brought it in.
        drug_code = scope_drugs[0]
    detail = "; ".join(hit.words(context) for hit in hits)
    if branch.note:
        detail += f" ({branch.note})"
    return Finding(
        rule_id=rule.id,
        rule_version=versioned.version,
        drug_code=drug_code,
        severity=branch.severity,
        title=rule.title,
        detail=detail,
        follow_up_minutes=rule.follow_up_minutes
        or policy.severities[branch.severity].follow_up_minutes,
        grounds=RuleGrounds(index, tuple(hits)),
    )


def _escalation(found: list[Finding], policy: Policy) -> Finding | None:
    """UKONS: two or more distinct urgent findings in one report escalate to emergency.

    Counted by problem, not by rule: fever grade 3 firing both ``fever`` and ``severe-symptom``
    (or with a measured 38.5 °C) is one problem; nausea 3 and diarrhoea 3, even inside the one
    ``severe-symptom`` finding, are two. The policy's ``same_problem`` groups say which causes
    describe one problem.
    """
    rule = policy.escalation
    group_of = {cause: group[0] for group in rule.same_problem for cause in group}
    urgent = sorted((f for f in found if f.severity == Severity.URGENT), key=lambda f: f.rule_id)
    problems = {group_of.get(cause, cause) for f in urgent for cause in _causes(f)}
    if len(problems) < rule.min_urgent:
        return None
    reasons = "; ".join(f"{f.title}: {f.detail}" for f in urgent)
    return Finding(
        rule_id=rule.rule_id,
        rule_version=1,
        drug_code=None,
        severity=rule.severity,
        title=rule.title,
        detail=f"{len(problems)} distinct urgent problems in one report: {reasons}",
        follow_up_minutes=policy.severities[rule.severity].follow_up_minutes,
        grounds=EscalationGrounds(tuple(urgent), tuple(sorted(problems))),
    )


def _without_yielded(found: list[Finding], yields_to: Mapping[str, Sequence[str]]) -> list[Finding]:
    """Drop a finding whose rule yields to another finding at least as severe; the one that
    stays says in its grounds which rules it also meets."""
    rank = {f.rule_id: f.severity.rank for f in found}
    dropped: dict[str, list[str]] = {}
    for finding in found:
        for other in yields_to.get(finding.rule_id, ()):
            if rank.get(other, 0) >= rank[finding.rule_id]:
                dropped.setdefault(other, []).append(finding.rule_id)
                break
    if not dropped:
        return found
    gone = {rule_id for covered in dropped.values() for rule_id in covered}
    kept = []
    for finding in found:
        if finding.rule_id in gone:
            continue
        covered = dropped.get(finding.rule_id)
        if covered and isinstance(finding.grounds, RuleGrounds):
            grounds = replace(finding.grounds, also_meets=tuple(sorted(covered)))
            finding = replace(finding, grounds=grounds)  # evidence follows
        kept.append(finding)
    return kept


def _order(finding: Finding) -> tuple[int, str]:
    return -finding.severity.rank, finding.rule_id


def evaluate(
    report: ReportInput,
    context: PatientContext,
    rules: Sequence[VersionedRule],
    policy: Policy,
) -> Evaluation:
    day = report.recorded_at.date()
    carried = _carried(report)
    # The rules share a few watch windows: what the patient is on, once per window.
    on_drugs: dict[int, _On] = {}
    found = []
    for versioned in rules:
        if versioned.needs is not None and versioned.needs.isdisjoint(carried):
            continue  # every branch needs a symptom or vital this report does not carry
        watch_days = versioned.rule.watch_days
        if (on := on_drugs.get(watch_days)) is None:
            therapies = _on_drugs(context.therapies, day, watch_days)
            drugs = frozenset(t.drug_code for t in therapies)
            on = on_drugs[watch_days] = _On(therapies, drugs, sorted(drugs))
        if (finding := _evaluate_rule(versioned, report, context, policy, on)) is not None:
            found.append(finding)
    if not found:
        return Evaluation(findings=[], advice=None)
    findings = _without_yielded(found, {v.rule.id: v.rule.yields_to or () for v in rules})
    if (escalated := _escalation(findings, policy)) is not None:
        findings.append(escalated)
    findings.sort(key=_order)
    if not findings:
        return Evaluation(findings=[], advice=None)
    top = findings[0].severity
    return Evaluation(findings=findings, advice=Advice(top, policy.severities[top].advice))


# --- what a report must carry for a rule to fire ----------------------------------------------

# A leaf matches only when the report carries what it looks at (``_match``): a symptom code, a
# vital, or for "*", "@serious" and worsening, any symptom at all.
_ANY_SYMPTOM = "symptom:*"


def _carried(report: ReportInput) -> set[str]:
    carried = {f"symptom:{code}" for code in report.symptoms}
    carried.update(f"vital:{name}" for name, value in report.vitals.items() if value is not None)
    if report.symptoms:
        carried.add(_ANY_SYMPTOM)
    return carried


def _needs(cond: Condition) -> frozenset[str] | None:
    """What a report must carry at least one of for ``cond`` to match; None when it may match
    whatever the report carries (a drug leaf)."""
    if isinstance(cond, SymptomCond):
        wildcard = cond.symptom in ("*", "@serious")
        return frozenset({_ANY_SYMPTOM if wildcard else f"symptom:{cond.symptom}"})
    if isinstance(cond, VitalCond):
        return frozenset({f"vital:{cond.vital}"})
    if isinstance(cond, MetricCond):  # weight_gain_pct: the report's weight
        return frozenset({"vital:weight_kg"})
    if isinstance(cond, WorseningCond):
        return frozenset({_ANY_SYMPTOM})
    if isinstance(cond, AllCond):
        # Every child must match: any one child's needs will do; the narrowest skips most.
        needs = [n for n in map(_needs, cond.all) if n is not None]
        return min(needs, key=len) if needs else None
    if isinstance(cond, AnyCond):
        return _any_of(cond.any)
    return None  # OnDrugCond


def _any_of(alternatives: Iterable[Condition]) -> frozenset[str] | None:
    """What a report must carry for any of ``alternatives`` to match: all of their needs, or
    None when one of them needs nothing."""
    needs: set[str] = set()
    for cond in alternatives:
        if (found := _needs(cond)) is None:
            return None
        needs |= found
    return frozenset(needs)


def _rule_needs(rule: RuleDef) -> frozenset[str] | None:
    return _any_of(branch.when for branch in rule.branches)  # the best matching branch fires


# --- what a rule refers to (for the catalog validator) -----------------------------------------


def iter_leaves(cond: Condition) -> Iterator[Condition]:
    if isinstance(cond, AllCond | AnyCond):
        for child in cond.all if isinstance(cond, AllCond) else cond.any:
            yield from iter_leaves(child)
    else:
        yield cond


def _rule_leaves(rule: RuleDef) -> Iterator[Condition]:
    for branch in rule.branches:
        yield from iter_leaves(branch.when)


def referenced_symptoms(rule: RuleDef) -> set[str]:
    """Symptom codes named in the rule's leaves ("*" and "@serious" are not codes)."""
    return {
        leaf.symptom
        for leaf in _rule_leaves(rule)
        if isinstance(leaf, SymptomCond) and leaf.symptom not in ("*", "@serious")
    }


def referenced_drugs(rule: RuleDef) -> set[str]:
    """Drug codes the rule names: its owner, its scope's drugs and its on_drug leaves."""
    codes = set(rule.scope.drugs)
    if rule.drug is not None:
        codes.add(rule.drug)
    for leaf in _rule_leaves(rule):
        if isinstance(leaf, OnDrugCond):
            codes.update(leaf.on_drug)
    return codes
