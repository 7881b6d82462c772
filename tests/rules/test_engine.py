"""Engine mechanics on small hand-written rules (the shipped rules: test_shipped_rules.py)."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from api.rules.definitions import SEVERITY_RANK, Policy, RuleDef, Severity
from api.rules.engine import (
    Advice,
    Baseline,
    EscalationGrounds,
    Evaluation,
    Finding,
    Hit,
    MetricHit,
    OnDrugHit,
    PatientContext,
    PriorGrade,
    ReportInput,
    RuleGrounds,
    SymptomHit,
    Therapy,
    VersionedRule,
    VitalHit,
    WorseningHit,
    evaluate,
    referenced_drugs,
    referenced_symptoms,
)

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
TODAY = NOW.date()
CLASSES = {
    "aldesleukin": "interleukin_2",
    "interferon_alfa_2b": "interferon",
    "ropeginterferon_alfa_2b": "interferon",
    "peginterferon_alfa_2a": "interferon",
    "filgrastim": "g_csf",
    "bevacizumab": "vegf_inhibitor",
}
POLICY = Policy.model_validate(
    {
        "severities": {
            "emergency": {"follow_up_minutes": 60, "advice": "Call now."},
            "urgent": {"follow_up_minutes": 1440, "advice": "We will call you today."},
            "routine": {"follow_up_minutes": 4320, "advice": "We will review this."},
        },
        "escalation": {
            "rule_id": "multiple-urgent",
            "title": "Two or more urgent findings",
            "min_urgent": 2,
            "severity": "emergency",
            "source": "UKONS",
        },
    }
)


def rule(rule_id: str, *branches: dict[str, Any], version: int = 1, **fields: Any) -> VersionedRule:
    data = {"id": rule_id, "title": rule_id.title(), "source": "test", "branches": list(branches)}
    return VersionedRule(RuleDef.model_validate(data | fields), version)


def branch(severity: str, when: dict[str, Any], note: str | None = None) -> dict[str, Any]:
    return {"severity": severity, "when": when, "note": note}


def therapy(code: str, started: date = date(2026, 1, 1), ended: date | None = None) -> Therapy:
    return Therapy(code, CLASSES[code], started, ended)


def run(
    rules: list[VersionedRule],
    symptoms: dict[str, int] | None = None,
    vitals: dict[str, float] | None = None,
    at: datetime = NOW,
    policy: Policy = POLICY,
    **context: Any,
) -> Evaluation:
    report = ReportInput(recorded_at=at, symptoms=symptoms or {}, vitals=vitals or {})
    return evaluate(report, PatientContext(**context), rules, policy)


def only(result: Evaluation) -> Finding:
    assert len(result.findings) == 1, result.findings
    return result.findings[0]


def fired(result: Evaluation) -> dict[str, str]:
    return {f.rule_id: f.severity for f in result.findings}


# --- leaves ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "threshold", "grade", "expected"),
    [
        ("gte", 3, 2, False),
        ("gte", 3, 3, True),
        ("gte", 3, 4, True),
        ("gt", 3, 3, False),
        ("gt", 3, 4, True),
        ("lte", 1, 1, True),
        ("lte", 1, 2, False),
        ("lt", 1, 0, True),
        ("lt", 1, 1, False),
        ("eq", 1, 1, True),
        ("eq", 1, 2, False),
    ],
)
def test_symptom_comparators(op: str, threshold: int, grade: int, expected: bool) -> None:
    rules = [rule("r", branch("urgent", {"symptom": "nausea", op: threshold}))]
    assert bool(run(rules, {"nausea": grade}).findings) is expected


@pytest.mark.parametrize(
    ("op", "threshold", "value", "expected"),
    [
        ("lt", 90, 89.9, True),
        ("lt", 90, 90, False),
        ("lte", 90, 90, True),
        ("gt", 130, 130, False),
        ("gt", 130, 131, True),
        ("gte", 38.0, 38.0, True),
        ("gte", 38.0, 37.9, False),
        ("eq", 100, 100, True),
    ],
)
def test_vital_comparators(op: str, threshold: float, value: float, expected: bool) -> None:
    rules = [rule("r", branch("urgent", {"vital": "systolic_bp", op: threshold}))]
    assert bool(run(rules, vitals={"systolic_bp": value}).findings) is expected


def test_absent_values_make_leaves_false_not_errors() -> None:
    rules = [
        rule("low", branch("urgent", {"symptom": "nausea", "lte": 1})),
        rule("bp", branch("urgent", {"vital": "systolic_bp", "lt": 300})),
        rule("weight", branch("urgent", {"metric": "weight_gain_pct", "gte": -100})),
        rule("worse", branch("routine", {"worsening": {"by": 1, "within_days": 14}})),
        rule("drug", branch("urgent", {"on_drug": ["aldesleukin"]})),
        rule("serious", branch("urgent", {"symptom": "@serious", "gte": 0})),
    ]
    result = run(rules, {"fever": 4}, {"temperature_c": 39.0})
    assert result == Evaluation(findings=[], advice=None)


def test_weight_metric_needs_both_weight_and_baseline() -> None:
    rules = [rule("w", branch("urgent", {"metric": "weight_gain_pct", "gte": 5}))]
    assert not run(rules, vitals={"weight_kg": 80.0}).findings
    assert not run(rules, vitals={"temperature_c": 37.0}, baseline_weight_kg=70.0).findings
    assert run(rules, vitals={"weight_kg": 80.0}, baseline_weight_kg=70.0).findings


@pytest.mark.parametrize(
    ("weight", "expected"), [(73.4, False), (73.5, True), (73.6, True), (66.0, False)]
)
def test_weight_gain_threshold_is_exact(weight: float, expected: bool) -> None:
    rules = [rule("w", branch("urgent", {"metric": "weight_gain_pct", "gte": 5}))]
    result = run(rules, vitals={"weight_kg": weight}, baseline_weight_kg=70.0)
    assert bool(result.findings) is expected


def test_weight_gain_detail_and_evidence() -> None:
    rules = [rule("w", branch("urgent", {"metric": "weight_gain_pct", "gte": 5}, "fluid"))]
    finding = only(run(rules, vitals={"weight_kg": 75.6}, baseline_weight_kg=70.0))
    assert finding.detail == (
        "Weight 75.6 kg is 8.0% above baseline 70.0 kg, the baseline on the patient's record, "
        "at or above the 5% threshold (fluid)"
    )
    assert finding.evidence["baseline_weight_kg"] == 70.0
    baseline = {
        "weight_kg": 70.0,
        "source": "recorded",
        "recorded_at": None,
        "words": "70.0 kg, the baseline on the patient's record",
    }
    assert finding.evidence["baseline"] == baseline
    assert finding.evidence["matched"] == [
        {
            "metric": "weight_gain_pct",
            "value": 8.0,
            "op": "gte",
            "threshold": 5,
            "weight_kg": 75.6,
            "baseline_weight_kg": 70.0,
            "baseline": baseline,
        }
    ]


def test_star_matches_every_reported_symptom_at_threshold() -> None:
    rules = [rule("any", branch("routine", {"symptom": "*", "gte": 3}))]
    finding = only(run(rules, {"rash": 3, "nausea": 4, "fever": 2}))
    assert [leaf["symptom"] for leaf in finding.evidence["matched"]] == ["nausea", "rash"]
    assert not run(rules, {"rash": 2}).findings


def test_serious_matches_symptoms_serious_for_a_drug_the_patient_is_on() -> None:
    rules = [rule("vs", branch("emergency", {"symptom": "@serious", "gte": 4}))]
    serious = {"aldesleukin": frozenset({"swelling"}), "bevacizumab": frozenset({"headache"})}
    on_ald = [therapy("aldesleukin")]
    finding = only(run(rules, {"swelling": 4}, therapies=on_ald, serious_by_drug=serious))
    assert finding.evidence["matched"] == [
        {
            "symptom": "swelling",
            "grade": 4,
            "op": "gte",
            "threshold": 4,
            "serious_for": ["aldesleukin"],
        }
    ]
    assert "serious side effect of aldesleukin" in finding.detail
    # serious for a drug the patient is not on; common symptom; below the threshold
    assert not run(rules, {"headache": 4}, therapies=on_ald, serious_by_drug=serious).findings
    assert not run(rules, {"nausea": 4}, therapies=on_ald, serious_by_drug=serious).findings
    assert not run(rules, {"swelling": 3}, therapies=on_ald, serious_by_drug=serious).findings


def test_serious_in_a_drug_owned_rule_only_counts_that_drug() -> None:
    rules = [
        rule("bev", branch("emergency", {"symptom": "@serious", "gte": 4}), drug="bevacizumab")
    ]
    serious = {"aldesleukin": frozenset({"swelling"}), "bevacizumab": frozenset({"headache"})}
    both = [therapy("aldesleukin"), therapy("bevacizumab")]
    assert not run(rules, {"swelling": 4}, therapies=both, serious_by_drug=serious).findings
    assert run(rules, {"headache": 4}, therapies=both, serious_by_drug=serious).findings


def test_star_leaves_out_the_excepted_symptoms() -> None:
    rules = [rule("any", branch("urgent", {"symptom": "*", "gte": 3, "except": ["hair_thinning"]}))]
    assert not run(rules, {"hair_thinning": 4}).findings
    finding = only(run(rules, {"hair_thinning": 4, "rash": 3}))
    assert [leaf["symptom"] for leaf in finding.evidence["matched"]] == ["rash"]


def test_except_needs_a_wildcard() -> None:
    with pytest.raises(ValueError, match="'except' only goes with"):
        rule("x", branch("urgent", {"symptom": "rash", "gte": 3, "except": ["fever"]}))


def test_serious_flag_counts_a_named_symptom_only_where_it_is_serious() -> None:
    rules = [rule("b", branch("urgent", {"symptom": "swelling", "gte": 2, "serious": True}))]
    serious = {"aldesleukin": frozenset({"swelling"})}
    assert not run(rules, {"swelling": 3}, serious_by_drug=serious).findings
    on_bev = [therapy("bevacizumab")]
    assert not run(rules, {"swelling": 3}, therapies=on_bev, serious_by_drug=serious).findings
    on_ald = [therapy("aldesleukin")]
    finding = only(run(rules, {"swelling": 2}, therapies=on_ald, serious_by_drug=serious))
    assert finding.evidence["matched"][0]["serious_for"] == ["aldesleukin"]
    assert not run(rules, {"swelling": 1}, therapies=on_ald, serious_by_drug=serious).findings


class TestWorsening:
    rules = [rule("worse", branch("routine", {"worsening": {"by": 2, "within_days": 14}}))]

    def check(self, grade: int, *earlier: tuple[int, float]) -> Evaluation:
        """earlier: (grade, days ago) of the same symptom."""
        prior = [PriorGrade(g, NOW - timedelta(days=d)) for g, d in earlier]
        return run(self.rules, {"nausea": grade}, earlier={"nausea": prior})

    def test_two_grades_up_fires(self) -> None:
        finding = only(self.check(3, (1, 3)))
        assert finding.severity == "routine"
        assert finding.evidence["matched"] == [
            {
                "worsening": "nausea",
                "grade": 3,
                "lowest_grade": 1,
                "lowest_recorded_at": (NOW - timedelta(days=3)).isoformat(),
                "by": 2,
                "within_days": 14,
            }
        ]
        assert finding.detail.startswith(
            "Nausea rose to grade 3 from grade 1, its lowest in the previous 14 days "
            "(reported 2026-03-07; threshold: 2 grades)"
        )

    def test_one_grade_up_does_not(self) -> None:
        assert not self.check(2, (1, 3)).findings

    def test_compared_with_the_lowest_not_the_latest(self) -> None:
        assert self.check(2, (0, 6), (1, 3)).findings  # 0 -> 1 -> 2
        assert self.check(2, (1, 6), (0, 3), (1, 1)).findings  # a dip in between counts
        finding = only(self.check(3, (1, 9), (1, 5), (2, 1)))
        # of two reports at the lowest grade, the latest is named
        assert finding.evidence["matched"][0]["lowest_recorded_at"] == (
            (NOW - timedelta(days=5)).isoformat()
        )

    def test_window_boundary(self) -> None:
        assert self.check(2, (0, 14)).findings
        assert not self.check(2, (0, 14.01)).findings
        assert not self.check(2, (0, 15), (1, 3)).findings

    def test_previous_must_be_strictly_earlier(self) -> None:
        assert not self.check(2, (0, 0)).findings
        assert not self.check(2, (0, -1)).findings

    def test_no_previous_report(self) -> None:
        assert not run(self.rules, {"nausea": 4}).findings

    def test_each_rule_uses_its_own_window(self) -> None:
        rules = [rule("week", branch("routine", {"worsening": {"by": 2, "within_days": 7}}))]
        prior = [PriorGrade(0, NOW - timedelta(days=10)), PriorGrade(1, NOW - timedelta(days=3))]
        assert not run(rules, {"nausea": 2}, earlier={"nausea": prior}).findings


# --- combinators -------------------------------------------------------------------------------


def test_all_needs_every_child_and_collects_their_evidence() -> None:
    when = {
        "all": [
            {"vital": "temperature_c", "gte": 38.0},
            {"symptom": "chills", "gte": 3},
        ]
    }
    rules = [rule("r", branch("emergency", when))]
    assert not run(rules, {"chills": 3}, {"temperature_c": 37.9}).findings
    assert not run(rules, {"chills": 2}, {"temperature_c": 38.5}).findings
    assert not run(rules, {"chills": 3}).findings
    finding = only(run(rules, {"chills": 3}, {"temperature_c": 38.5}))
    assert finding.evidence["matched"] == [
        {"vital": "temperature_c", "value": 38.5, "op": "gte", "threshold": 38},
        {"symptom": "chills", "grade": 3, "op": "gte", "threshold": 3},
    ]


def test_any_records_every_matching_child() -> None:
    when = {
        "any": [
            {"vital": "temperature_c", "gte": 38.0},
            {"symptom": "fever", "gte": 3},
            {"vital": "heart_rate", "gt": 130},
        ]
    }
    rules = [rule("r", branch("routine", when))]
    assert not run(rules, {"fever": 2}, {"temperature_c": 37.0}).findings
    finding = only(run(rules, {"fever": 3}, {"temperature_c": 38.4, "heart_rate": 100}))
    assert [("vital" in leaf, leaf.get("symptom")) for leaf in finding.evidence["matched"]] == [
        (True, None),
        (False, "fever"),
    ]
    assert finding.detail == (
        "Temperature 38.4 °C is at or above 38.0 °C; Fever reported as severe (grade 3 of 4; "
        "threshold 3)"
    )


def test_nested_combinators() -> None:
    when = {
        "all": [
            {"any": [{"symptom": "swelling", "gte": 2}, {"metric": "weight_gain_pct", "gte": 5}]},
            {"any": [{"symptom": "dizziness", "gte": 2}, {"vital": "systolic_bp", "lt": 100}]},
        ]
    }
    rules = [rule("r", branch("emergency", when))]
    assert not run(rules, {"swelling": 2}).findings
    assert not run(rules, {"dizziness": 2}, {"weight_kg": 72}, baseline_weight_kg=70).findings
    assert run(rules, {"dizziness": 2}, {"weight_kg": 74}, baseline_weight_kg=70).findings
    finding = only(run(rules, {"swelling": 3, "dizziness": 2}, {"systolic_bp": 95}))
    assert len(finding.evidence["matched"]) == 3


# --- branches, findings, advice ----------------------------------------------------------------


def test_highest_severity_branch_wins_whatever_the_order() -> None:
    rules = [
        rule(
            "allergy",
            branch("urgent", {"symptom": "allergic_reaction", "gte": 1}, "mild"),
            branch("emergency", {"symptom": "allergic_reaction", "gte": 2}, "severe"),
        )
    ]
    assert only(run(rules, {"allergic_reaction": 1})).severity == "urgent"
    finding = only(run(rules, {"allergic_reaction": 2}))
    assert (finding.severity, finding.evidence["branch"]) == ("emergency", 1)
    assert finding.detail.endswith("(severe)")


def test_ties_go_to_the_first_listed_branch() -> None:
    rules = [
        rule(
            "r",
            branch("emergency", {"symptom": "chest_pain", "gte": 1}, "first"),
            branch("emergency", {"symptom": "chest_pain", "gte": 3}, "second"),
        )
    ]
    finding = only(run(rules, {"chest_pain": 4}))
    assert finding.evidence["branch"] == 0
    assert finding.detail.endswith("(first)")


def test_finding_fields_and_detail_words() -> None:
    rules = [
        rule(
            "cls-hypotension",
            branch("emergency", {"vital": "systolic_bp", "lt": 90}, "capillary leak sign"),
            version=3,
            drug="aldesleukin",
            title="Low blood pressure",
        )
    ]
    result = run(rules, vitals={"systolic_bp": 84}, therapies=[therapy("aldesleukin")])
    finding = only(result)
    assert finding == Finding(
        rule_id="cls-hypotension",
        rule_version=3,
        drug_code="aldesleukin",
        severity=Severity.EMERGENCY,
        title="Low blood pressure",
        detail="Systolic blood pressure 84 mm Hg is below 90 mm Hg (capillary leak sign)",
        follow_up_minutes=60,
        grounds=RuleGrounds(branch=0, hits=(VitalHit("systolic_bp", 84, "lt", 90),)),
    )
    assert finding.evidence == {
        "branch": 0,
        "matched": [{"vital": "systolic_bp", "value": 84, "op": "lt", "threshold": 90}],
    }
    assert result.advice == Advice(Severity.EMERGENCY, "Call now.")


def test_symptom_detail_uses_display_names() -> None:
    rules = [rule("fever", branch("urgent", {"symptom": "fever", "gte": 3}))]
    assert (
        only(run(rules, {"fever": 3})).detail
        == "Fever reported as severe (grade 3 of 4; threshold 3)"
    )
    names = {"decreased_urination": "Passing less urine"}
    rules = [rule("u", branch("urgent", {"symptom": "decreased_urination", "gt": 2}))]
    detail = only(run(rules, {"decreased_urination": 4}, symptom_names=names)).detail
    assert detail == "Passing less urine reported as very severe (grade 4 of 4; threshold above 2)"


@pytest.mark.parametrize(
    ("vital", "value", "op", "threshold", "words"),
    [
        ("temperature_c", 35.5, "lt", 36, "Temperature 35.5 °C is below 36.0 °C"),
        ("heart_rate", 131, "gt", 130, "Heart rate 131/min is above 130/min"),
        ("spo2", 89, "lt", 90, "Oxygen saturation (SpO2) 89% is below 90%"),
        (
            "diastolic_bp",
            110,
            "gte",
            110,
            "Diastolic blood pressure 110 mm Hg is at or above 110 mm Hg",
        ),
    ],
)
def test_vital_words(vital: str, value: float, op: str, threshold: float, words: str) -> None:
    rules = [rule("r", branch("urgent", {"vital": vital, op: threshold}))]
    assert only(run(rules, vitals={vital: value})).detail == words


def test_follow_up_comes_from_the_rule_or_the_policy() -> None:
    when = {"symptom": "rash", "gte": 1}
    rules = [
        rule("own", branch("routine", when), follow_up_minutes=120),
        rule("tier", branch("routine", when)),
    ]
    assert {f.rule_id: f.follow_up_minutes for f in run(rules, {"rash": 1}).findings} == {
        "own": 120,
        "tier": 4320,
    }


def test_drug_code_of_global_rules_comes_from_a_matched_on_drug_leaf() -> None:
    when = {
        "all": [{"symptom": "chest_pain", "gte": 1}, {"on_drug": ["bevacizumab", "aldesleukin"]}]
    }
    rules = [
        rule(
            "cp",
            branch("emergency", when),
            branch("emergency", {"symptom": "chest_pain", "gte": 3}),
        )
    ]
    on = [therapy("aldesleukin")]
    finding = only(run(rules, {"chest_pain": 1}, therapies=on))
    assert finding.drug_code == "aldesleukin"
    assert finding.detail.endswith("; on aldesleukin")
    assert finding.evidence["matched"][1] == {"on_drug": ["aldesleukin"]}
    assert only(run(rules, {"chest_pain": 3})).drug_code is None


def test_advice_is_for_the_highest_severity_or_none() -> None:
    rules = [
        rule("a", branch("routine", {"symptom": "rash", "gte": 1})),
        rule("b", branch("urgent", {"symptom": "rash", "gte": 2})),
    ]
    assert run(rules, {"rash": 0}).advice is None
    assert run(rules, {"rash": 1}).advice == Advice("routine", "We will review this.")
    assert run(rules, {"rash": 2}).advice == Advice("urgent", "We will call you today.")


def test_findings_sorted_by_severity_then_rule_id_whatever_the_rule_order() -> None:
    rules = [
        rule("zeta", branch("urgent", {"symptom": "rash", "gte": 1})),
        rule("alpha", branch("routine", {"symptom": "rash", "gte": 1})),
        rule("beta", branch("emergency", {"symptom": "rash", "gte": 1})),
        rule("gamma", branch("routine", {"symptom": "rash", "gte": 1})),
    ]
    expected = ["beta", "zeta", "alpha", "gamma"]
    assert [f.rule_id for f in run(rules, {"rash": 1}).findings] == expected
    assert run(rules[::-1], {"rash": 1}) == run(rules, {"rash": 1})


def test_evidence_is_json_serialisable() -> None:
    rules = [
        rule("a", branch("urgent", {"vital": "temperature_c", "gte": 38})),
        rule("b", branch("urgent", {"symptom": "*", "gte": 3})),
        rule("c", branch("routine", {"worsening": {"by": 2, "within_days": 14}})),
    ]
    prior = {"nausea": [PriorGrade(0, NOW - timedelta(days=1))]}
    result = run(rules, {"nausea": 3}, {"temperature_c": 38.5}, earlier=prior)
    assert len(result.findings) == 4  # with the escalation
    json.dumps([f.evidence for f in result.findings])


# --- who a rule applies to ---------------------------------------------------------------------


def test_drug_owned_rule_applies_only_on_its_drug() -> None:
    rules = [rule("r", branch("urgent", {"symptom": "rash", "gte": 1}), drug="aldesleukin")]
    assert not run(rules, {"rash": 2}).findings
    assert not run(rules, {"rash": 2}, therapies=[therapy("bevacizumab")]).findings
    assert (
        only(run(rules, {"rash": 2}, therapies=[therapy("aldesleukin")])).drug_code == "aldesleukin"
    )


def test_global_rule_scope_by_drug_or_class() -> None:
    by_class = rule(
        "c", branch("urgent", {"symptom": "rash", "gte": 1}), scope={"drug_classes": ["interferon"]}
    )
    by_drug = rule(
        "d", branch("urgent", {"symptom": "rash", "gte": 1}), scope={"drugs": ["filgrastim"]}
    )
    everyone = rule("e", branch("urgent", {"symptom": "rash", "gte": 1}))
    rules = [by_class, by_drug, everyone]

    def ids(*codes: str) -> set[str]:
        return set(fired(run(rules, {"rash": 1}, therapies=[therapy(c) for c in codes])))

    assert ids() == {"e"}
    assert ids("peginterferon_alfa_2a") == {"c", "e"}
    assert ids("filgrastim") == {"d", "e"}
    assert ids("filgrastim", "interferon_alfa_2b") == {"c", "d", "e"}
    assert ids("aldesleukin") == {"e"}


@pytest.mark.parametrize(
    ("started", "ended", "expected"),
    [
        (TODAY, None, True),  # starts today
        (TODAY + timedelta(days=1), None, False),  # not started yet
        (date(2025, 1, 1), None, True),  # open-ended
        (date(2025, 1, 1), TODAY, True),  # ends today
        (date(2025, 1, 1), TODAY - timedelta(days=30), True),  # last day of the watch window
        (date(2025, 1, 1), TODAY - timedelta(days=31), False),  # one day past it
    ],
)
def test_watch_window(started: date, ended: date | None, expected: bool) -> None:
    when = {"symptom": "rash", "gte": 1}
    rules = [
        rule("owned", branch("urgent", when), drug="aldesleukin"),
        rule("scoped", branch("urgent", when), scope={"drugs": ["aldesleukin"]}),
        rule("leaf", branch("urgent", {"all": [when, {"on_drug": ["aldesleukin"]}]})),
    ]
    on = [therapy("aldesleukin", started, ended)]
    expected_ids = {"owned", "scoped", "leaf"} if expected else set()
    assert set(fired(run(rules, {"rash": 1}, therapies=on))) == expected_ids


def test_watch_days_is_per_rule() -> None:
    when = {"symptom": "rash", "gte": 1}
    rules = [
        rule("short", branch("urgent", when), drug="interferon_alfa_2b", watch_days=0),
        rule("long", branch("urgent", when), drug="interferon_alfa_2b", watch_days=180),
    ]

    def ids(days_since_end: int) -> set[str]:
        on = [
            therapy("interferon_alfa_2b", date(2025, 1, 1), TODAY - timedelta(days=days_since_end))
        ]
        return set(fired(run(rules, {"rash": 1}, therapies=on)))

    assert ids(0) == {"short", "long"}
    assert ids(1) == {"long"}
    assert ids(180) == {"long"}
    assert ids(181) == set()


def test_report_date_is_the_local_date_of_recorded_at() -> None:
    rules = [rule("r", branch("urgent", {"symptom": "rash", "gte": 1}), drug="aldesleukin")]
    on = [therapy("aldesleukin", started=date(2026, 3, 10))]
    # 23:30 on 9 March in UTC-05:00 is already 10 March in UTC: the patient's date counts.
    evening = datetime(2026, 3, 9, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert not run(rules, {"rash": 1}, at=evening, therapies=on).findings
    assert run(rules, {"rash": 1}, at=evening + timedelta(hours=1), therapies=on).findings


# --- escalation (UKONS: two or more distinct urgent findings) ----------------------------------

FEVER = rule(
    "fever",
    branch(
        "urgent", {"any": [{"vital": "temperature_c", "gte": 38}, {"symptom": "fever", "gte": 3}]}
    ),
)
SEVERE = rule("severe-symptom", branch("urgent", {"symptom": "*", "gte": 3}))
BP = rule("low-bp", branch("emergency", {"vital": "systolic_bp", "lt": 90}))
RULES = [FEVER, SEVERE, BP]


def test_two_urgent_findings_on_different_evidence_escalate() -> None:
    result = run(RULES, {"nausea": 3}, {"temperature_c": 38.5})
    assert fired(result) == {
        "multiple-urgent": "emergency",
        "fever": "urgent",
        "severe-symptom": "urgent",
    }
    escalation = result.findings[0]
    assert escalation.rule_id == "multiple-urgent"
    assert (escalation.rule_version, escalation.drug_code) == (1, None)
    assert escalation.title == "Two or more urgent findings"
    assert escalation.follow_up_minutes == 60
    assert [c["rule_id"] for c in escalation.evidence["causes"]] == ["fever", "severe-symptom"]
    assert escalation.evidence["distinct"] == ["symptom:nausea", "vital:temperature_c"]
    assert escalation.evidence["causes"][0]["evidence"] == result.findings[1].evidence
    assert escalation.grounds == EscalationGrounds(
        findings=tuple(result.findings[1:]), distinct=("symptom:nausea", "vital:temperature_c")
    )
    assert "Temperature 38.5 °C" in escalation.detail
    assert "Nausea reported as severe" in escalation.detail
    assert result.advice == Advice("emergency", "Call now.")


def test_one_symptom_firing_two_rules_does_not_escalate() -> None:
    result = run(RULES, {"fever": 3})
    assert fired(result) == {"fever": "urgent", "severe-symptom": "urgent"}
    assert result.advice == Advice("urgent", "We will call you today.")


def test_two_problems_inside_one_finding_escalate() -> None:
    # UKONS counts problems: severe nausea and severe vomiting are two amber findings.
    result = run(RULES, {"nausea": 3, "vomiting": 3})
    assert fired(result) == {"severe-symptom": "urgent", "multiple-urgent": "emergency"}
    assert result.findings[0].evidence["distinct"] == ["symptom:nausea", "symptom:vomiting"]


def test_evidence_of_one_problem_does_not_escalate() -> None:
    grouped = Policy.model_validate(
        POLICY.model_dump()
        | {
            "escalation": POLICY.escalation.model_dump()
            | {"same_problem": [["symptom:fever", "vital:temperature_c"]]}
        }
    )
    result = run(RULES, {"fever": 3}, {"temperature_c": 38.5}, policy=grouped)
    assert fired(result) == {"fever": "urgent", "severe-symptom": "urgent"}
    escalated = run(RULES, {"fever": 3, "nausea": 3}, {"temperature_c": 38.5}, policy=grouped)
    assert fired(escalated)["multiple-urgent"] == "emergency"
    assert escalated.findings[0].evidence["distinct"] == ["symptom:fever", "symptom:nausea"]


def test_emergency_findings_do_not_count_towards_escalation() -> None:
    result = run(RULES, {"fever": 3}, {"systolic_bp": 80})
    assert fired(result) == {"low-bp": "emergency", "fever": "urgent", "severe-symptom": "urgent"}


def test_routine_findings_do_not_count_towards_escalation() -> None:
    rules = [FEVER, rule("worse", branch("routine", {"worsening": {"by": 2, "within_days": 14}}))]
    prior = {"nausea": [PriorGrade(0, NOW - timedelta(days=1))]}
    result = run(rules, {"nausea": 2}, {"temperature_c": 38.5}, earlier=prior)
    assert fired(result) == {"fever": "urgent", "worse": "routine"}


def test_min_urgent_comes_from_the_policy() -> None:
    strict = Policy.model_validate(
        POLICY.model_dump() | {"escalation": POLICY.escalation.model_dump() | {"min_urgent": 3}}
    )
    spo2 = rule("hypoxia", branch("urgent", {"vital": "spo2", "lt": 92}))
    assert "multiple-urgent" not in fired(
        run(RULES, {"nausea": 3}, {"temperature_c": 38.5}, policy=strict)
    )
    result = run([*RULES, spo2], {"nausea": 3}, {"temperature_c": 38.5, "spo2": 91}, policy=strict)
    assert fired(result)["multiple-urgent"] == "emergency"


# --- typed hits, grounds and severity ----------------------------------------------------------

NAMED = PatientContext(symptom_names={"decreased_urination": "Passing less urine"})
WEIGHED_AT = datetime(2026, 2, 25, 8, 0, tzinfo=UTC)
PRE_DOSE = Baseline(70.0, "pre_dose", WEIGHED_AT)


@pytest.mark.parametrize(
    ("hit", "cause", "words", "evidence"),
    [
        (
            SymptomHit("decreased_urination", 4, "gt", 2.0),
            "symptom:decreased_urination",
            "Passing less urine reported as very severe (grade 4 of 4; threshold above 2)",
            {"symptom": "decreased_urination", "grade": 4, "op": "gt", "threshold": 2},
        ),
        (
            SymptomHit("swelling", 3, "gte", 2.5, serious_for=("aldesleukin", "bevacizumab")),
            "symptom:swelling",
            "Swelling reported as severe (grade 3 of 4; threshold 2.5; a serious side effect of "
            "aldesleukin, bevacizumab)",
            {
                "symptom": "swelling",
                "grade": 3,
                "op": "gte",
                "threshold": 2.5,
                "serious_for": ["aldesleukin", "bevacizumab"],
            },
        ),
        (
            VitalHit("temperature_c", 38.46, "gte", 38.0),
            "vital:temperature_c",
            "Temperature 38.5 °C is at or above 38.0 °C",
            {"vital": "temperature_c", "value": 38.46, "op": "gte", "threshold": 38},
        ),
        (
            MetricHit("weight_gain_pct", -4.29, "lt", -3.0, 67.0, PRE_DOSE),
            "metric:weight_gain_pct",
            "Weight 67.0 kg is 4.3% below baseline 70.0 kg reported 2026-02-25, before the "
            "course, below the -3% threshold",
            {
                "metric": "weight_gain_pct",
                "value": -4.29,
                "op": "lt",
                "threshold": -3,
                "weight_kg": 67.0,
                "baseline_weight_kg": 70.0,
                "baseline": {
                    "weight_kg": 70.0,
                    "source": "pre_dose",
                    "recorded_at": "2026-02-25T08:00:00+00:00",
                    "words": "70.0 kg reported 2026-02-25, before the course",
                },
            },
        ),
        (
            WorseningHit("nausea", 3, 1, NOW - timedelta(days=3), by=2, within_days=14),
            "symptom:nausea",
            "Nausea rose to grade 3 from grade 1, its lowest in the previous 14 days "
            "(reported 2026-03-07; threshold: 2 grades)",
            {
                "worsening": "nausea",
                "grade": 3,
                "lowest_grade": 1,
                "lowest_recorded_at": "2026-03-07T09:00:00+00:00",
                "by": 2,
                "within_days": 14,
            },
        ),
        (
            OnDrugHit(("aldesleukin", "bevacizumab")),
            None,  # context, not a problem of its own
            "on aldesleukin or bevacizumab",
            {"on_drug": ["aldesleukin", "bevacizumab"]},
        ),
    ],
)
def test_hit_cause_words_and_evidence(
    hit: Hit, cause: str | None, words: str, evidence: dict[str, Any]
) -> None:
    assert hit.cause == cause
    assert hit.words(NAMED) == words
    assert hit.as_evidence() == evidence
    assert list(hit.as_evidence()) == list(evidence)  # stored alerts keep this key order
    json.dumps(hit.as_evidence())


def test_hits_are_frozen_and_slotted() -> None:
    hit = SymptomHit("rash", 3, "gte", 3.0)
    with pytest.raises(FrozenInstanceError):
        hit.grade = 4  # type: ignore[misc]
    assert not hasattr(hit, "__dict__")
    assert hit == SymptomHit("rash", 3, "gte", 3)


def test_rule_grounds_evidence_adds_the_baseline_and_the_rules_it_also_meets() -> None:
    weight = MetricHit("weight_gain_pct", 8.0, "gte", 5.0, 75.6, PRE_DOSE)
    grounds = RuleGrounds(1, (OnDrugHit(("aldesleukin",)), weight), also_meets=("circulation",))
    assert grounds.baseline is PRE_DOSE
    assert grounds.causes == {"metric:weight_gain_pct"}
    evidence = grounds.as_evidence()
    assert list(evidence) == ["branch", "matched", "baseline_weight_kg", "baseline", "also_meets"]
    assert evidence["branch"] == 1
    assert evidence["matched"] == [{"on_drug": ["aldesleukin"]}, weight.as_evidence()]
    assert evidence["baseline_weight_kg"] == 70.0
    assert evidence["baseline"] == PRE_DOSE.as_evidence()
    assert evidence["also_meets"] == ["circulation"]
    bare = RuleGrounds(0, (OnDrugHit(("aldesleukin",)),))
    assert (bare.baseline, bare.causes, list(bare.as_evidence())) == (
        None,
        set(),
        ["branch", "matched"],
    )


def test_the_rule_that_stays_names_the_rules_that_yielded_to_it() -> None:
    low_bp = {"vital": "systolic_bp", "lt": 90}
    rules = [
        rule("general", branch("urgent", low_bp), yields_to=["specific"]),
        rule("specific", branch("emergency", low_bp)),
    ]
    finding = only(run(rules, vitals={"systolic_bp": 84}))
    assert finding.rule_id == "specific"
    hit = VitalHit("systolic_bp", 84, "lt", 90)
    assert finding.grounds == RuleGrounds(0, (hit,), also_meets=("general",))
    assert finding.evidence == {
        "branch": 0,
        "matched": [hit.as_evidence()],
        "also_meets": ["general"],
    }


def test_finding_evidence_is_its_grounds_as_json_computed_once() -> None:
    when = {"all": [{"metric": "weight_gain_pct", "gte": 5}, {"on_drug": ["aldesleukin"]}]}
    rules = [rule("w", branch("urgent", when))]
    on = [therapy("aldesleukin")]
    finding = only(run(rules, vitals={"weight_kg": 75.6}, baseline_weight_kg=70.0, therapies=on))
    assert isinstance(finding.grounds, RuleGrounds)
    weight, drug = finding.grounds.hits
    assert isinstance(weight, MetricHit) and weight.baseline == Baseline(70.0, "recorded")
    assert drug == OnDrugHit(("aldesleukin",))
    assert finding.drug_code == "aldesleukin"
    assert finding.evidence == finding.grounds.as_evidence()
    assert finding.evidence is finding.evidence


def test_severity_is_the_enum_and_still_the_word() -> None:
    rules = [rule("r", branch("urgent", {"symptom": "rash", "gte": 1}))]
    result = run(rules, {"rash": 1})
    finding = only(result)
    assert finding.severity is Severity.URGENT
    assert result.advice is not None and result.advice.severity is Severity.URGENT
    # Stored, compared and serialised as the plain word, as before.
    assert finding.severity == "urgent"
    assert f"{finding.severity}" == "urgent"
    assert json.dumps({"severity": finding.severity}) == '{"severity": "urgent"}'
    assert SEVERITY_RANK["urgent"] == SEVERITY_RANK[finding.severity] == finding.severity.rank
    assert [s.rank for s in Severity] == [1, 2, 3]


def test_policy_and_rules_parse_severity_words_into_the_enum() -> None:
    assert set(POLICY.severities) == set(Severity)
    assert POLICY.escalation.severity is Severity.EMERGENCY
    defined = rule("r", branch("routine", {"symptom": "rash", "gte": 1})).rule
    assert defined.branches[0].severity is Severity.ROUTINE
    assert defined.model_dump(mode="json")["branches"][0]["severity"] == "routine"
    tiers = POLICY.model_dump(mode="json")
    del tiers["severities"]["urgent"]
    with pytest.raises(ValueError, match=r"missing severity tiers: \['urgent'\]"):
        Policy.model_validate(tiers)


# --- referenced codes ---------------------------------------------------------------------------


def test_referenced_symptoms_and_drugs() -> None:
    when = {
        "all": [
            {"any": [{"symptom": "chest_pain", "gte": 1}, {"symptom": "*", "gte": 3}]},
            {"symptom": "@serious", "gte": 4},
            {"on_drug": ["aldesleukin", "interferon_alfa_2b"]},
            {"vital": "spo2", "lt": 90},
        ]
    }
    scoped = rule("r", branch("urgent", when), scope={"drugs": ["filgrastim"]}).rule
    assert referenced_symptoms(scoped) == {"chest_pain"}
    assert referenced_drugs(scoped) == {"aldesleukin", "interferon_alfa_2b", "filgrastim"}
    owned = rule("o", branch("urgent", {"symptom": "swelling", "gte": 2}), drug="bevacizumab").rule
    assert referenced_symptoms(owned) == {"swelling"}
    assert referenced_drugs(owned) == {"bevacizumab"}
