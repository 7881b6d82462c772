"""The rules engine: (report, patient context, rules, policy) -> findings and advice.

Pure: no database, no HTTP. The caller gathers the context in a fixed number of queries.

One evaluator walks a rule's condition tree and returns ``(matched, leaves)``: the evidence of
every leaf that matched (in an ``any`` node, every matching child). The finding's ``evidence``
holds those leaves as data and its ``detail`` says them in words.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from api.rules.definitions import (
    SEVERITY_RANK,
    AllCond,
    AnyCond,
    Branch,
    Condition,
    MetricCond,
    OnDrugCond,
    Policy,
    RuleDef,
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


@dataclass(frozen=True, slots=True)
class PriorGrade:
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
    # Grades of the report's symptoms reported before it, within the trend rules' look-back
    # (any order); the trend rules compare nothing else.
    earlier: Mapping[str, Sequence[PriorGrade]] = field(default_factory=dict)
    # Weights reported before this report, oldest first: at least those from 7 days before the
    # start of each course a weight rule may look at (see ``course_baseline``).
    weights: Sequence[Weight] = ()
    # drug code -> symptom codes that are `serious` for that drug.
    serious_by_drug: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # symptom code -> display name, for the words in `detail` (falls back to the code).
    symptom_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: str
    rule_version: int
    drug_code: str | None
    severity: str
    title: str
    detail: str
    evidence: dict[str, Any]
    follow_up_minutes: int


@dataclass(frozen=True, slots=True)
class Advice:
    severity: str
    message: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    findings: list[Finding]
    advice: Advice | None


@dataclass(frozen=True, slots=True)
class VersionedRule:
    rule: RuleDef
    version: int


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


def _on_drugs(therapies: Sequence[Therapy], day: date, watch_days: int) -> list[Therapy]:
    """Therapies the patient is "on" at ``day``: started, and not ended more than watch_days ago."""
    return [
        t
        for t in therapies
        if t.started_on <= day
        # Subtracting from the report's day cannot overflow, as adding to a far ended_on could.
        and (t.ended_on is None or day - timedelta(days=watch_days) <= t.ended_on)
    ]


def _scope_drugs(rule: RuleDef, on: list[Therapy]) -> list[str] | None:
    """The patient's drugs that bring this rule into play, or None when the rule does not apply."""
    if rule.drug is not None:
        return [rule.drug] if any(t.drug_code == rule.drug for t in on) else None
    scope = rule.scope
    if not scope.drugs and not scope.drug_classes:
        return sorted({t.drug_code for t in on})
    hits = {t.drug_code for t in on if t.drug_code in scope.drugs}
    hits |= {t.drug_code for t in on if t.drug_class in scope.drug_classes}
    return sorted(hits) or None


# --- baseline weight per course (CLINICAL.md "Baseline weight") -------------------------------

PRE_DOSE_DAYS = 7
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
    weights = context.weights
    if start is not None:
        pre_dose_from = start - timedelta(days=PRE_DOSE_DAYS)
        pre = [w for w in weights if pre_dose_from <= w.recorded_at < start]
        if pre:
            latest = max(pre, key=lambda w: w.recorded_at)
            return Baseline(latest.kg, "pre_dose", latest.recorded_at)
    if context.baseline_weight_kg is not None:
        return Baseline(context.baseline_weight_kg, "recorded")
    if start is not None:
        course = [w for w in weights if start <= w.recorded_at < at]
        if course:
            first = min(course, key=lambda w: w.recorded_at)
            return Baseline(first.kg, "first_in_course", first.recorded_at)
    return None


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


# --- the evaluator -----------------------------------------------------------------------------

Leaf = dict[str, Any]


def _match(cond: Condition, env: _Env) -> tuple[bool, list[Leaf]]:
    if isinstance(cond, AllCond):
        leaves: list[Leaf] = []
        for child in cond.all:
            ok, found = _match(child, env)
            if not ok:
                return False, []
            leaves += found
        return True, leaves
    if isinstance(cond, AnyCond):
        leaves = []
        for child in cond.any:  # no short cut: record every matching child
            ok, found = _match(child, env)
            if ok:
                leaves += found
        return bool(leaves), leaves
    leaves = _leaf(cond, env)
    return bool(leaves), leaves


def _leaf(cond: Condition, env: _Env) -> list[Leaf]:
    """Evidence of a matching leaf (one entry per matching symptom), [] when it does not match."""
    report, context = env.report, env.context
    if isinstance(cond, SymptomCond):
        op, threshold = cond.op, cond.value
        if cond.symptom in ("*", "@serious"):
            left_out = set(cond.except_ or ())
            codes = sorted(c for c in report.symptoms if c not in left_out)
        else:
            codes = [cond.symptom] if cond.symptom in report.symptoms else []
        serious_only = cond.symptom == "@serious" or bool(cond.serious)
        if serious_only:
            serious = {d: context.serious_by_drug.get(d, frozenset()) for d in env.scope_drugs}
            codes = [c for c in codes if any(c in s for s in serious.values())]
        leaves = []
        for code in codes:
            grade = report.symptoms[code]
            if OPS[op](grade, threshold):
                leaf: Leaf = {"symptom": code, "grade": grade, "op": op}
                leaf["threshold"] = _num(threshold)
                if serious_only:
                    leaf["serious_for"] = [d for d in env.scope_drugs if code in serious[d]]
                leaves.append(leaf)
        return leaves
    if isinstance(cond, VitalCond):
        value = report.vitals.get(cond.vital)
        if value is None or not OPS[cond.op](value, cond.value):
            return []
        return [{"vital": cond.vital, "value": value, "op": cond.op, "threshold": _num(cond.value)}]
    if isinstance(cond, MetricCond):  # weight_gain_pct, the only metric
        weight = report.vitals.get("weight_kg")
        if weight is None:
            return []
        baseline = env.baseline()
        if baseline is None or baseline.weight_kg <= 0:
            return []
        # Rounded so that a weight exactly at a threshold is not lost to float noise.
        pct = round((weight - baseline.weight_kg) / baseline.weight_kg * 100, 4)
        if not OPS[cond.op](pct, cond.value):
            return []
        return [
            {
                "metric": cond.metric,
                "value": round(pct, 2),
                "op": cond.op,
                "threshold": _num(cond.value),
                "weight_kg": weight,
                "baseline_weight_kg": baseline.weight_kg,
                "baseline": baseline.as_evidence(),
            }
        ]
    if isinstance(cond, WorseningCond):
        by, days = cond.worsening.by, cond.worsening.within_days
        since = report.recorded_at - timedelta(days=days)
        leaves = []
        for code, grade in sorted(report.symptoms.items()):
            window = [
                p
                for p in context.earlier.get(code, ())
                if since <= p.recorded_at < report.recorded_at
            ]
            if not window:
                continue
            # The lowest grade; of its reports, the latest (the one a nurse would look up).
            lowest = min(window, key=lambda p: (p.grade, -p.recorded_at.timestamp()))
            if grade >= lowest.grade + by:
                leaves.append(
                    {
                        "worsening": code,
                        "grade": grade,
                        "lowest_grade": lowest.grade,
                        "lowest_recorded_at": lowest.recorded_at.isoformat(),
                        "by": by,
                        "within_days": days,
                    }
                )
        return leaves
    if isinstance(cond, OnDrugCond):
        hits = [code for code in cond.on_drug if code in env.on]
        return [{"on_drug": hits}] if hits else []
    raise TypeError(f"unknown condition {type(cond).__name__}")  # pragma: no cover


def _leaf_words(leaf: Leaf, context: PatientContext) -> str:
    def name(code: str) -> str:
        return context.symptom_names.get(code) or code.replace("_", " ").capitalize()

    if "symptom" in leaf:
        grade = leaf["grade"]
        text = (
            f"{name(leaf['symptom'])} reported as {GRADE_WORDS[grade]} (grade {grade} of 4; "
            f"threshold {THRESHOLD_WORDS[leaf['op']]}{leaf['threshold']}"
        )
        if leaf.get("serious_for"):
            text += f"; a serious side effect of {', '.join(leaf['serious_for'])}"
        return text + ")"
    if "vital" in leaf:
        vital = leaf["vital"]
        return (
            f"{VITAL_WORDS[vital][0]} {_vital_text(vital, leaf['value'])} {OP_WORDS[leaf['op']]} "
            f"{_vital_text(vital, leaf['threshold'])}"
        )
    if "metric" in leaf:
        pct = leaf["value"]
        direction = "above" if pct >= 0 else "below"
        return (
            f"Weight {_vital_text('weight_kg', leaf['weight_kg'])} is {abs(pct):.1f}% {direction} "
            f"baseline {leaf['baseline']['words']}, "
            f"{OP_WORDS[leaf['op']].removeprefix('is ')} the {leaf['threshold']}% threshold"
        )
    if "worsening" in leaf:
        return (
            f"{name(leaf['worsening'])} rose to grade {leaf['grade']} from grade "
            f"{leaf['lowest_grade']}, its lowest in the previous {leaf['within_days']} days "
            f"(reported {leaf['lowest_recorded_at'][:10]}; threshold: {leaf['by']} grades)"
        )
    return f"on {' or '.join(leaf['on_drug'])}"


def _causes(leaves: list[Leaf]) -> set[str]:
    """What a finding rests on, to tell distinct findings apart (on_drug is context, not cause)."""
    causes = set()
    for leaf in leaves:
        if "symptom" in leaf:
            causes.add(f"symptom:{leaf['symptom']}")
        elif "worsening" in leaf:
            causes.add(f"symptom:{leaf['worsening']}")
        elif "vital" in leaf:
            causes.add(f"vital:{leaf['vital']}")
        elif "metric" in leaf:
            causes.add(f"metric:{leaf['metric']}")
    return causes


# --- rules -------------------------------------------------------------------------------------


def _evaluate_rule(
    versioned: VersionedRule, report: ReportInput, context: PatientContext, policy: Policy
) -> tuple[Finding, set[str]] | None:
    rule = versioned.rule
    on = _on_drugs(context.therapies, report.recorded_at.date(), rule.watch_days)
    scope_drugs = _scope_drugs(rule, on)
    if scope_drugs is None:
        return None
    scoped = bool(rule.scope.drugs or rule.scope.drug_classes)
    env = _Env(
        report,
        context,
        frozenset(t.drug_code for t in on),
        tuple(scope_drugs),
        # A scoped global rule measures from the course of the patient's first drug in scope.
        baseline_drug=rule.drug or (scope_drugs[0] if scoped and scope_drugs else None),
        watch_days=rule.watch_days,
    )

    best: tuple[int, Branch, list[Leaf]] | None = None
    for index, branch in enumerate(rule.branches):
        ok, leaves = _match(branch.when, env)
        rank = SEVERITY_RANK[branch.severity]
        if ok and (best is None or rank > SEVERITY_RANK[best[1].severity]):  # ties: first listed
            best = (index, branch, leaves)
    if best is None:
        return None
    index, branch, leaves = best

    drug_code = rule.drug
    if drug_code is None:
        drug_code = next((leaf["on_drug"][0] for leaf in leaves if "on_drug" in leaf), None)
    if drug_code is None and (rule.scope.drugs or rule.scope.drug_classes):
        # A class rule (e.g. interferon mood) names the patient's drug that brought it in.
        drug_code = scope_drugs[0]
    detail = "; ".join(_leaf_words(leaf, context) for leaf in leaves)
    if branch.note:
        detail += f" ({branch.note})"
    evidence: dict[str, Any] = {"branch": index, "matched": leaves}
    baseline = next((leaf["baseline"] for leaf in leaves if "metric" in leaf), None)
    if baseline is not None:
        evidence["baseline_weight_kg"] = baseline["weight_kg"]
        evidence["baseline"] = baseline
    finding = Finding(
        rule_id=rule.id,
        rule_version=versioned.version,
        drug_code=drug_code,
        severity=branch.severity,
        title=rule.title,
        detail=detail,
        evidence=evidence,
        follow_up_minutes=rule.follow_up_minutes
        or policy.severities[branch.severity].follow_up_minutes,
    )
    return finding, _causes(leaves) or {f"rule:{rule.id}"}


def _escalation(found: list[tuple[Finding, set[str]]], policy: Policy) -> Finding | None:
    """UKONS: two or more distinct urgent findings in one report escalate to emergency.

    Counted by problem, not by rule: fever grade 3 firing both ``fever`` and ``severe-symptom``
    (or with a measured 38.5 °C) is one problem; nausea 3 and diarrhoea 3, even inside the one
    ``severe-symptom`` finding, are two. The policy's ``same_problem`` groups say which evidence
    describes one problem.
    """
    rule = policy.escalation
    group_of = {cause: group[0] for group in rule.same_problem for cause in group}
    urgent = sorted(
        ((f, causes) for f, causes in found if f.severity == "urgent"),
        key=lambda item: item[0].rule_id,
    )
    problems = {group_of.get(cause, cause) for _, causes in urgent for cause in causes}
    if len(problems) < rule.min_urgent:
        return None
    reasons = "; ".join(f"{f.title}: {f.detail}" for f, _ in urgent)
    return Finding(
        rule_id=rule.rule_id,
        rule_version=1,
        drug_code=None,
        severity=rule.severity,
        title=rule.title,
        detail=f"{len(problems)} distinct urgent problems in one report: {reasons}",
        evidence={
            "causes": [
                {"rule_id": f.rule_id, "detail": f.detail, "evidence": f.evidence}
                for f, _ in urgent
            ],
            "distinct": sorted(problems),
        },
        follow_up_minutes=policy.severities[rule.severity].follow_up_minutes,
    )


def _without_yielded(
    found: list[tuple[Finding, set[str]]], yields_to: Mapping[str, Sequence[str]]
) -> list[tuple[Finding, set[str]]]:
    """Drop a finding whose rule yields to another finding at least as severe; the one that
    stays says in its evidence which rules it also meets."""
    rank = {f.rule_id: SEVERITY_RANK[f.severity] for f, _ in found}
    dropped: dict[str, list[str]] = {}
    for finding, _ in found:
        for other in yields_to.get(finding.rule_id, ()):
            if rank.get(other, 0) >= rank[finding.rule_id]:
                dropped.setdefault(other, []).append(finding.rule_id)
                break
    if not dropped:
        return found
    gone = {rule_id for covered in dropped.values() for rule_id in covered}
    kept = []
    for finding, causes in found:
        if finding.rule_id in gone:
            continue
        if finding.rule_id in dropped:
            evidence = finding.evidence | {"also_meets": sorted(dropped[finding.rule_id])}
            finding = replace(finding, evidence=evidence)
        kept.append((finding, causes))
    return kept


def _order(finding: Finding) -> tuple[int, str]:
    return -SEVERITY_RANK[finding.severity], finding.rule_id


def evaluate(
    report: ReportInput,
    context: PatientContext,
    rules: Sequence[VersionedRule],
    policy: Policy,
) -> Evaluation:
    found = [
        result
        for versioned in rules
        if (result := _evaluate_rule(versioned, report, context, policy)) is not None
    ]
    found = _without_yielded(found, {v.rule.id: v.rule.yields_to or () for v in rules})
    findings = [finding for finding, _ in found]
    if (escalated := _escalation(found, policy)) is not None:
        findings.append(escalated)
    findings.sort(key=_order)
    if not findings:
        return Evaluation(findings=[], advice=None)
    top = findings[0].severity
    return Evaluation(findings=findings, advice=Advice(top, policy.severities[top].advice))


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
