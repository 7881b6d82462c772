"""The shipped rules (api/rules/data/rules.yaml) against CLINICAL.md's table.

Every rule is checked at its threshold, just below and just above, and on/off its drugs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.rules.definitions import VITALS
from api.rules.engine import (
    Evaluation,
    Finding,
    PatientContext,
    PriorGrade,
    ReportInput,
    Therapy,
    VersionedRule,
    evaluate,
)
from api.rules.loader import DEFAULT_PATH, RulesFileError, load_rules_file, parse_rules

SHIPPED = load_rules_file()
RULES = [VersionedRule(rule, 1) for rule in SHIPPED.rules]
BY_ID = {rule.id: rule for rule in SHIPPED.rules}

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
INTERFERONS = ("interferon_alfa_2b", "ropeginterferon_alfa_2b", "peginterferon_alfa_2a")
SERIOUS = {
    "aldesleukin": frozenset({"swelling", "decreased_urination", "chest_pain", "confusion"}),
    "bevacizumab": frozenset({"abdominal_pain", "bleeding_bruising"}),
}
NORMAL = {
    "temperature_c": 36.8,
    "systolic_bp": 122,
    "diastolic_bp": 76,
    "heart_rate": 78,
    "weight_kg": 70.0,
    "spo2": 97,
}
BASELINE_KG = 70.0


def scenario(
    drugs: tuple[str | tuple[str, int], ...] = (),
    symptoms: dict[str, int] | None = None,
    vitals: dict[str, float] | None = None,
    baseline: float | None = BASELINE_KG,
    previous: dict[str, tuple[int, int]] | None = None,
) -> Evaluation:
    """drugs: codes on active therapy, or (code, days since the therapy ended).
    previous: symptom -> (grade, days ago)."""
    therapies = []
    for drug in drugs:
        code, ended_days_ago = (drug, None) if isinstance(drug, str) else drug
        ended = None if ended_days_ago is None else TODAY - timedelta(days=ended_days_ago)
        therapies.append(Therapy(code, CLASSES[code], date(2025, 6, 1), ended))
    context = PatientContext(
        therapies=therapies,
        baseline_weight_kg=baseline,
        previous={
            code: PriorGrade(grade, NOW - timedelta(days=days))
            for code, (grade, days) in (previous or {}).items()
        },
        serious_by_drug=SERIOUS,
    )
    report = ReportInput(recorded_at=NOW, symptoms=symptoms or {}, vitals=vitals or {})
    return evaluate(report, context, RULES, SHIPPED.policy)


def finding(result: Evaluation, rule_id: str) -> Finding | None:
    return next((f for f in result.findings if f.rule_id == rule_id), None)


def fired(result: Evaluation) -> dict[str, str]:
    return {f.rule_id: f.severity for f in result.findings}


# --- the file itself ---------------------------------------------------------------------------

CLINICAL_TABLE = {
    "fever",
    "fever-sepsis",
    "fever-very-high",
    "severe-symptom",
    "very-severe-serious",
    "worsening",
    "hypoxia",
    "breathless",
    "chest-pain",
    "allergy",
    "bleeding",
    "cls-hypotension",
    "cls-weight",
    "cls-composite",
    "il2-urine",
    "il2-neuro",
    "il2-heart",
    "ifn-mood",
    "ifn-vision",
    "gcsf-spleen",
    "bev-hypertension",
    "bev-perforation",
}


def test_every_rule_of_the_clinical_table_is_shipped() -> None:
    assert set(BY_ID) == CLINICAL_TABLE
    for rule in SHIPPED.rules:
        assert rule.source.strip(), rule.id
        assert all(branch.note for branch in rule.branches), rule.id


@pytest.mark.parametrize(
    ("rule_id", "drug", "scope_classes", "watch_days"),
    [
        *[(r, "aldesleukin", [], 30) for r in ("cls-hypotension", "cls-weight", "cls-composite")],
        *[(r, "aldesleukin", [], 30) for r in ("il2-urine", "il2-neuro", "il2-heart")],
        ("gcsf-spleen", "filgrastim", [], 30),
        ("bev-hypertension", "bevacizumab", [], 30),
        ("bev-perforation", "bevacizumab", [], 30),
        ("ifn-mood", None, ["interferon"], 180),
        ("ifn-vision", None, ["interferon"], 30),
        ("fever", None, [], 30),
        ("chest-pain", None, [], 30),
        ("bleeding", None, [], 30),
    ],
)
def test_ownership_and_scope(
    rule_id: str, drug: str | None, scope_classes: list[str], watch_days: int
) -> None:
    rule = BY_ID[rule_id]
    assert rule.drug == drug
    assert rule.scope.drug_classes == scope_classes
    assert rule.scope.drugs == []
    assert rule.watch_days == watch_days


def test_policy_tiers_and_escalation() -> None:
    tiers = SHIPPED.policy.severities
    assert {s: t.follow_up_minutes for s, t in tiers.items()} == {
        "emergency": 60,
        "urgent": 1440,
        "routine": 4320,
    }
    assert tiers["emergency"].advice == (
        "Call your care team's 24-hour line now. If you cannot reach them, call emergency services."
    )
    assert "today" in tiers["urgent"].advice
    assert "review" in tiers["routine"].advice
    escalation = SHIPPED.policy.escalation
    assert (escalation.rule_id, escalation.min_urgent, escalation.severity) == (
        "multiple-urgent",
        2,
        "emergency",
    )
    assert "UKONS" in escalation.source


# --- every rule: at, just below and just above its thresholds ----------------------------------

ALD, BEV, FIL = "aldesleukin", "bevacizumab", "filgrastim"
IFN, ROPEG, PEG = INTERFERONS


def case(
    rule_id: str,
    expected: str | None,
    *,
    on: str | tuple[str, ...] = (),
    ended: int | None = None,
    baseline: float | None = BASELINE_KG,
    previous: dict[str, tuple[int, int]] | None = None,
    **values: float,
) -> Any:
    """One row: the patient's drug(s) (`on`, `ended` days ago or still active) and the report's
    symptom grades and vitals by code, e.g. ``temperature_c=38.0, chills=3``."""
    drugs = (on,) if isinstance(on, str) else on
    args = {
        "drugs": tuple(d if ended is None else (d, ended) for d in drugs),
        "symptoms": {k: int(v) for k, v in values.items() if k not in VITALS},
        "vitals": {k: v for k, v in values.items() if k in VITALS},
        "baseline": baseline,
        "previous": previous,
    }
    words = [f"on {'+'.join(drugs)}"] if drugs else []
    words += [f"ended {ended} d ago"] if ended is not None else []
    words += [f"{k}={v}" for k, v in values.items()]
    words += [f"previous {k}={g} {d} d ago" for k, (g, d) in (previous or {}).items()]
    words += ["no baseline"] if baseline is None else []
    return pytest.param(rule_id, expected, args, id=f"{rule_id}: {' '.join(words)} -> {expected}")


CASES = [
    # fever: temperature >= 38.0 or fever grade >= 3 -> urgent
    case("fever", None, temperature_c=37.9),
    case("fever", "urgent", temperature_c=38.0),
    case("fever", "urgent", temperature_c=38.1),
    case("fever", None, fever=2),
    case("fever", "urgent", fever=3),
    case("fever", "urgent", fever=4),
    # fever-sepsis: (temperature >= 38.0 or < 36.0) with chills >= 3, systolic < 90,
    # heart rate > 130, confusion >= 2 or spo2 < 92 -> emergency
    case("fever-sepsis", None, temperature_c=38.0),
    case("fever-sepsis", "emergency", temperature_c=38.0, chills=3),
    case("fever-sepsis", None, temperature_c=37.9, chills=3),
    case("fever-sepsis", None, temperature_c=38.5, chills=2),
    case("fever-sepsis", "emergency", temperature_c=38.5, chills=4),
    case("fever-sepsis", None, temperature_c=36.0, systolic_bp=85),
    case("fever-sepsis", "emergency", temperature_c=35.9, systolic_bp=85),
    case("fever-sepsis", None, temperature_c=38.5, systolic_bp=90),
    case("fever-sepsis", "emergency", temperature_c=38.5, systolic_bp=89),
    case("fever-sepsis", None, temperature_c=38.5, heart_rate=130),
    case("fever-sepsis", "emergency", temperature_c=38.5, heart_rate=131),
    case("fever-sepsis", None, temperature_c=38.5, confusion=1),
    case("fever-sepsis", "emergency", temperature_c=38.5, confusion=2),
    case("fever-sepsis", None, temperature_c=38.5, spo2=92),
    case("fever-sepsis", "emergency", temperature_c=38.5, spo2=91),
    case("fever-sepsis", None, temperature_c=37.0, spo2=85, chills=4),
    case("fever-sepsis", None, fever=4, chills=4),  # no temperature measured
    # fever-very-high: temperature > 40.0 -> emergency
    case("fever-very-high", None, temperature_c=39.9),
    case("fever-very-high", None, temperature_c=40.0),
    case("fever-very-high", "emergency", temperature_c=40.1),
    # severe-symptom: any symptom >= 3 -> urgent
    case("severe-symptom", None, nausea=2),
    case("severe-symptom", "urgent", nausea=3),
    case("severe-symptom", "urgent", rash=4),
    case("severe-symptom", None, nausea=0, rash=2),
    # very-severe-serious: a symptom serious for one of the patient's drugs at grade 4
    case("very-severe-serious", None, on=ALD, swelling=3),
    case("very-severe-serious", "emergency", on=ALD, swelling=4),
    case("very-severe-serious", None, on=ALD, nausea=4),  # common, not serious
    case("very-severe-serious", None, on=BEV, swelling=4),  # serious for another drug
    case("very-severe-serious", None, swelling=4),
    case("very-severe-serious", "emergency", on=ALD, ended=30, swelling=4),
    case("very-severe-serious", None, on=ALD, ended=31, swelling=4),
    # worsening: >= 2 grades above the previous report of the symptom within 14 days -> routine
    case("worsening", "routine", nausea=3, previous={"nausea": (1, 3)}),
    case("worsening", None, nausea=2, previous={"nausea": (1, 3)}),
    case("worsening", "routine", nausea=2, previous={"nausea": (0, 3)}),
    case("worsening", "routine", nausea=4, previous={"nausea": (1, 3)}),
    case("worsening", "routine", nausea=2, previous={"nausea": (0, 14)}),
    case("worsening", None, nausea=2, previous={"nausea": (0, 15)}),
    case("worsening", None, nausea=4, previous={"rash": (0, 3)}),
    case("worsening", None, nausea=4),
    # hypoxia: spo2 < 92 urgent, < 90 emergency
    case("hypoxia", None, spo2=92),
    case("hypoxia", "urgent", spo2=91),
    case("hypoxia", "urgent", spo2=90),
    case("hypoxia", "emergency", spo2=89),
    # breathless: shortness_of_breath >= 3 -> emergency
    case("breathless", None, shortness_of_breath=2),
    case("breathless", "emergency", shortness_of_breath=3),
    case("breathless", "emergency", shortness_of_breath=4),
    # chest-pain: >= 1 on aldesleukin or an interferon, >= 3 anywhere -> emergency
    case("chest-pain", None, chest_pain=2),
    case("chest-pain", "emergency", chest_pain=3),
    case("chest-pain", "emergency", chest_pain=4),
    case("chest-pain", None, on=ALD, chest_pain=0),
    case("chest-pain", "emergency", on=ALD, chest_pain=1),
    case("chest-pain", "emergency", on=IFN, chest_pain=1),
    case("chest-pain", "emergency", on=ROPEG, chest_pain=1),
    case("chest-pain", "emergency", on=PEG, chest_pain=1),
    case("chest-pain", None, on=FIL, chest_pain=2),
    case("chest-pain", None, on=BEV, chest_pain=2),
    case("chest-pain", "emergency", on=ALD, ended=30, chest_pain=1),
    case("chest-pain", None, on=ALD, ended=31, chest_pain=1),
    # allergy: allergic_reaction = 1 urgent, >= 2 emergency
    case("allergy", None, allergic_reaction=0),
    case("allergy", "urgent", allergic_reaction=1),
    case("allergy", "emergency", allergic_reaction=2),
    case("allergy", "emergency", allergic_reaction=3),
    # bleeding: >= 3 emergency anywhere; >= 1 urgent on bevacizumab or ropeginterferon
    # (and on peginterferon: its label's "stop and call" for easy bruising, see the rationale)
    case("bleeding", None, bleeding_bruising=2),
    case("bleeding", "emergency", bleeding_bruising=3),
    case("bleeding", "emergency", bleeding_bruising=4),
    case("bleeding", None, on=BEV, bleeding_bruising=0),
    case("bleeding", "urgent", on=BEV, bleeding_bruising=1),
    case("bleeding", "urgent", on=BEV, bleeding_bruising=2),
    case("bleeding", "emergency", on=BEV, bleeding_bruising=3),
    case("bleeding", "urgent", on=ROPEG, bleeding_bruising=1),
    case("bleeding", "urgent", on=PEG, bleeding_bruising=1),
    case("bleeding", None, on=IFN, bleeding_bruising=1),
    case("bleeding", None, on=ALD, bleeding_bruising=2),
    case("bleeding", "urgent", on=BEV, ended=30, bleeding_bruising=1),
    case("bleeding", None, on=BEV, ended=31, bleeding_bruising=1),
    # cls-hypotension (aldesleukin): systolic < 90 -> emergency
    case("cls-hypotension", None, on=ALD, systolic_bp=90),
    case("cls-hypotension", "emergency", on=ALD, systolic_bp=89),
    case("cls-hypotension", None, on=BEV, systolic_bp=80),
    case("cls-hypotension", None, systolic_bp=80),
    case("cls-hypotension", "emergency", on=ALD, ended=30, systolic_bp=80),
    case("cls-hypotension", None, on=ALD, ended=31, systolic_bp=80),
    # cls-weight (aldesleukin; baseline 70 kg): >= 5 % urgent, >= 10 % emergency
    case("cls-weight", None, on=ALD, weight_kg=73.4),
    case("cls-weight", "urgent", on=ALD, weight_kg=73.5),
    case("cls-weight", "urgent", on=ALD, weight_kg=73.6),
    case("cls-weight", "urgent", on=ALD, weight_kg=76.9),
    case("cls-weight", "emergency", on=ALD, weight_kg=77.0),
    case("cls-weight", "emergency", on=ALD, weight_kg=77.1),
    case("cls-weight", None, on=ALD, weight_kg=80.0, baseline=None),
    case("cls-weight", None, on=BEV, weight_kg=80.0),
    case("cls-weight", "emergency", on=ALD, ended=30, weight_kg=80.0),
    case("cls-weight", None, on=ALD, ended=31, weight_kg=80.0),
    # cls-composite (aldesleukin): (weight >= 5 % or swelling >= 2) and (dizziness >= 2 or
    # decreased_urination >= 2 or shortness_of_breath >= 2 or systolic < 100) -> emergency
    case("cls-composite", "emergency", on=ALD, weight_kg=73.5, dizziness=2),
    case("cls-composite", None, on=ALD, weight_kg=73.4, dizziness=2),
    case("cls-composite", None, on=ALD, weight_kg=73.5, dizziness=1),
    case("cls-composite", "emergency", on=ALD, swelling=2, decreased_urination=2),
    case("cls-composite", None, on=ALD, swelling=1, decreased_urination=2),
    case("cls-composite", "emergency", on=ALD, swelling=3, shortness_of_breath=2),
    case("cls-composite", None, on=ALD, swelling=2, shortness_of_breath=1),
    case("cls-composite", None, on=ALD, swelling=2, systolic_bp=100),
    case("cls-composite", "emergency", on=ALD, swelling=2, systolic_bp=99),
    case("cls-composite", None, on=ALD, swelling=4),
    case("cls-composite", None, on=FIL, swelling=2, dizziness=2),
    # il2-urine (aldesleukin): decreased_urination >= 2 urgent, >= 3 emergency
    case("il2-urine", None, on=ALD, decreased_urination=1),
    case("il2-urine", "urgent", on=ALD, decreased_urination=2),
    case("il2-urine", "emergency", on=ALD, decreased_urination=3),
    case("il2-urine", "emergency", on=ALD, decreased_urination=4),
    case("il2-urine", None, on=BEV, decreased_urination=3),
    # il2-neuro (aldesleukin): confusion >= 2 -> emergency
    case("il2-neuro", None, on=ALD, confusion=1),
    case("il2-neuro", "emergency", on=ALD, confusion=2),
    case("il2-neuro", "emergency", on=ALD, confusion=3),
    case("il2-neuro", None, on=ROPEG, confusion=2),
    # il2-heart (aldesleukin): palpitations >= 2 or heart rate > 130 urgent; emergency with
    # systolic < 90 or chest pain (any grade)
    case("il2-heart", None, on=ALD, palpitations=1),
    case("il2-heart", "urgent", on=ALD, palpitations=2),
    case("il2-heart", "urgent", on=ALD, palpitations=3),
    case("il2-heart", None, on=ALD, heart_rate=130),
    case("il2-heart", "urgent", on=ALD, heart_rate=131),
    case("il2-heart", "urgent", on=ALD, palpitations=2, systolic_bp=90),
    case("il2-heart", "emergency", on=ALD, palpitations=2, systolic_bp=89),
    case("il2-heart", "urgent", on=ALD, heart_rate=131, chest_pain=0),
    case("il2-heart", "emergency", on=ALD, heart_rate=131, chest_pain=1),
    case("il2-heart", None, on=ALD, chest_pain=1, systolic_bp=85),
    case("il2-heart", None, on=BEV, heart_rate=140),
    # ifn-mood (interferons, watched 180 days): depressed_mood >= 2 urgent,
    # self_harm_thoughts >= 1 emergency
    case("ifn-mood", "urgent", on=IFN, depressed_mood=2),
    case("ifn-mood", "urgent", on=ROPEG, depressed_mood=2),
    case("ifn-mood", "urgent", on=PEG, depressed_mood=2),
    case("ifn-mood", None, on=PEG, depressed_mood=1),
    case("ifn-mood", "urgent", on=PEG, depressed_mood=3),
    case("ifn-mood", None, on=PEG, self_harm_thoughts=0),
    case("ifn-mood", "emergency", on=PEG, self_harm_thoughts=1),
    case("ifn-mood", "emergency", on=PEG, self_harm_thoughts=1, depressed_mood=2),
    case("ifn-mood", "urgent", on=IFN, ended=100, depressed_mood=2),
    case("ifn-mood", "emergency", on=IFN, ended=180, self_harm_thoughts=1),
    case("ifn-mood", None, on=IFN, ended=181, self_harm_thoughts=1),
    case("ifn-mood", None, on=(ALD, BEV), self_harm_thoughts=2, depressed_mood=2),
    # ifn-vision (interferons): vision_change >= 1 urgent, >= 3 emergency
    case("ifn-vision", None, on=ROPEG, vision_change=0),
    case("ifn-vision", "urgent", on=ROPEG, vision_change=1),
    case("ifn-vision", "urgent", on=ROPEG, vision_change=2),
    case("ifn-vision", "emergency", on=ROPEG, vision_change=3),
    case("ifn-vision", "emergency", on=ROPEG, vision_change=4),
    case("ifn-vision", "urgent", on=IFN, vision_change=1),
    case("ifn-vision", "urgent", on=PEG, vision_change=1),
    case("ifn-vision", "urgent", on=IFN, ended=30, vision_change=1),
    case("ifn-vision", None, on=IFN, ended=31, vision_change=1),
    case("ifn-vision", None, on=BEV, vision_change=2),
    # gcsf-spleen (filgrastim): abdominal_pain >= 2 -> emergency
    case("gcsf-spleen", None, on=FIL, abdominal_pain=1),
    case("gcsf-spleen", "emergency", on=FIL, abdominal_pain=2),
    case("gcsf-spleen", "emergency", on=FIL, abdominal_pain=3),
    case("gcsf-spleen", None, on=ALD, abdominal_pain=2),
    case("gcsf-spleen", "emergency", on=FIL, ended=30, abdominal_pain=2),
    case("gcsf-spleen", None, on=FIL, ended=31, abdominal_pain=2),
    # bev-hypertension (bevacizumab): systolic >= 180 or diastolic >= 110 urgent; emergency with
    # headache >= 3 or confusion >= 1
    case("bev-hypertension", None, on=BEV, systolic_bp=179, diastolic_bp=109),
    case("bev-hypertension", "urgent", on=BEV, systolic_bp=180),
    case("bev-hypertension", "urgent", on=BEV, systolic_bp=181),
    case("bev-hypertension", "urgent", on=BEV, diastolic_bp=110),
    case("bev-hypertension", "urgent", on=BEV, diastolic_bp=111),
    case("bev-hypertension", "urgent", on=BEV, systolic_bp=180, headache=2),
    case("bev-hypertension", "emergency", on=BEV, systolic_bp=180, headache=3),
    case("bev-hypertension", "urgent", on=BEV, diastolic_bp=110, confusion=0),
    case("bev-hypertension", "emergency", on=BEV, diastolic_bp=110, confusion=1),
    case("bev-hypertension", None, on=BEV, systolic_bp=179, headache=4, confusion=2),
    case("bev-hypertension", None, on=ROPEG, systolic_bp=200),
    # bev-perforation (bevacizumab): abdominal_pain >= 3 -> emergency
    case("bev-perforation", None, on=BEV, abdominal_pain=2),
    case("bev-perforation", "emergency", on=BEV, abdominal_pain=3),
    case("bev-perforation", "emergency", on=BEV, abdominal_pain=4),
    case("bev-perforation", None, on=FIL, abdominal_pain=3),
]


@pytest.mark.parametrize(("rule_id", "expected", "args"), CASES)
def test_rule_thresholds(rule_id: str, expected: str | None, args: dict[str, Any]) -> None:
    result = scenario(**args)
    found = finding(result, rule_id)
    assert (found.severity if found else None) == expected, fired(result)
    if found is not None:
        rule = BY_ID[rule_id]
        assert found.title == rule.title
        if rule.drug is not None:
            assert found.drug_code == rule.drug
        assert found.follow_up_minutes == SHIPPED.policy.severities[expected].follow_up_minutes
        assert found.detail and found.evidence["matched"]


def test_every_rule_has_threshold_cases() -> None:
    covered = {param.values[0] for param in CASES}
    assert covered == CLINICAL_TABLE


# --- expected, mild, common effects raise nothing ----------------------------------------------


@pytest.mark.parametrize(
    ("drugs", "symptoms"),
    [
        pytest.param(
            ("interferon_alfa_2b",),
            {"fever": 1, "chills": 2, "fatigue": 2, "headache": 2},
            id="interferon flu-like",
        ),
        pytest.param(
            ("peginterferon_alfa_2a",),
            {
                "muscle_aches": 2,
                "nausea": 1,
                "hair_thinning": 2,
                "dizziness": 1,
                "depressed_mood": 1,
            },
            id="peginterferon",
        ),
        pytest.param(("aldesleukin",), {"nausea": 2}, id="aldesleukin nausea"),
        pytest.param(
            ("aldesleukin",),
            {"fever": 2, "chills": 2, "vomiting": 2, "diarrhea": 2, "rash": 2, "confusion": 1},
            id="aldesleukin common effects",
        ),
        pytest.param(("filgrastim",), {"muscle_aches": 2, "abdominal_pain": 1}, id="filgrastim"),
        pytest.param(
            ("interferon_alfa_2b", "bevacizumab"),
            {"headache": 2, "fatigue": 2, "bleeding_bruising": 0},
            id="interferon with bevacizumab",
        ),
        pytest.param((), {"nausea": 0, "fatigue": 0}, id="I'm fine"),
    ],
)
def test_expected_mild_common_effects_raise_nothing(
    drugs: tuple[str, ...], symptoms: dict[str, int]
) -> None:
    result = scenario(drugs=drugs, symptoms=symptoms, vitals=NORMAL)
    assert result.findings == []
    assert result.advice is None


# --- whole reports -----------------------------------------------------------------------------


def test_capillary_leak_detail_is_said_in_words() -> None:
    result = scenario(drugs=(ALD,), vitals=NORMAL | {"systolic_bp": 84})
    assert fired(result) == {"cls-hypotension": "emergency"}
    found = result.findings[0]
    assert found.detail == (
        "Systolic blood pressure 84 mm Hg is below 90 mm Hg (capillary leak sign on aldesleukin)"
    )
    assert found.evidence["matched"] == [
        {"vital": "systolic_bp", "value": 84, "op": "lt", "threshold": 90}
    ]
    assert result.advice is not None
    assert result.advice.message == SHIPPED.policy.severities["emergency"].advice


def test_weight_gain_detail_names_baseline() -> None:
    found = finding(scenario(drugs=(ALD,), vitals={"weight_kg": 75.6}), "cls-weight")
    assert found is not None
    assert found.detail.startswith("Weight 75.6 kg is 8.0% above baseline 70.0 kg")
    assert found.evidence["baseline_weight_kg"] == 70.0


def test_temperature_and_another_severe_symptom_escalate() -> None:
    result = scenario(symptoms={"nausea": 3}, vitals=NORMAL | {"temperature_c": 38.5})
    assert fired(result) == {
        "multiple-urgent": "emergency",
        "fever": "urgent",
        "severe-symptom": "urgent",
    }
    assert [f.rule_id for f in result.findings] == ["multiple-urgent", "fever", "severe-symptom"]
    assert result.advice is not None and result.advice.severity == "emergency"


def test_severe_fever_alone_does_not_escalate() -> None:
    result = scenario(drugs=("interferon_alfa_2b",), symptoms={"fever": 3}, vitals=NORMAL)
    assert fired(result) == {"fever": "urgent", "severe-symptom": "urgent"}
    assert result.advice is not None and result.advice.severity == "urgent"


def test_urgent_findings_from_two_drug_rules_escalate() -> None:
    result = scenario(
        drugs=("aldesleukin",),
        symptoms={"decreased_urination": 2},
        vitals=NORMAL | {"weight_kg": 74.0},
    )
    # weight +5.7 % with little urine is capillary leak: emergency on its own
    assert fired(result)["cls-composite"] == "emergency"
    assert fired(result)["cls-weight"] == "urgent"
    assert fired(result)["il2-urine"] == "urgent"
    assert fired(result)["multiple-urgent"] == "emergency"


def test_worsening_to_severe_is_routine_and_urgent() -> None:
    result = scenario(symptoms={"diarrhea": 3}, previous={"diarrhea": (1, 2)}, vitals=NORMAL)
    assert fired(result) == {"severe-symptom": "urgent", "worsening": "routine"}


def test_interferon_mood_with_bevacizumab_bleeding() -> None:
    result = scenario(
        drugs=("interferon_alfa_2b", "bevacizumab"),
        symptoms={"depressed_mood": 2, "bleeding_bruising": 1},
        vitals=NORMAL,
    )
    assert fired(result) == {
        "multiple-urgent": "emergency",
        "bleeding": "urgent",
        "ifn-mood": "urgent",
    }
    bleeding = finding(result, "bleeding")
    assert bleeding is not None and bleeding.drug_code == "bevacizumab"


def test_chest_pain_alert_names_the_drug() -> None:
    result = scenario(drugs=("peginterferon_alfa_2a",), symptoms={"chest_pain": 1})
    found = finding(result, "chest-pain")
    assert found is not None and found.drug_code == "peginterferon_alfa_2a"
    assert found.detail == (
        "Chest pain reported as mild (grade 1 of 4; threshold 1); on peginterferon_alfa_2a "
        "(any chest pain on aldesleukin or an interferon may be a heart event)"
    )


# --- the loader --------------------------------------------------------------------------------


def raw_rules() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))


def test_default_path_is_inside_the_package() -> None:
    expected = Path(__file__).parents[2] / "api" / "rules" / "data" / "rules.yaml"
    assert expected == DEFAULT_PATH
    assert load_rules_file(DEFAULT_PATH) == SHIPPED


def test_duplicate_rule_ids_are_refused_by_name() -> None:
    data = raw_rules()
    data["rules"].append(dict(data["rules"][0]))
    with pytest.raises(RulesFileError, match="duplicate rule id 'fever'"):
        parse_rules(data)


def test_invalid_rule_errors_name_the_rule() -> None:
    data = raw_rules()
    cls_weight = next(r for r in data["rules"] if r["id"] == "cls-weight")
    cls_weight["branches"][0]["severity"] = "critical"
    with pytest.raises(RulesFileError, match=r"rule 'cls-weight': branches\.0\.severity"):
        parse_rules(data)


def test_unknown_keys_are_refused() -> None:
    data = raw_rules() | {"rulez": []}
    with pytest.raises(RulesFileError, match="rulez"):
        parse_rules(data)


def test_escalation_id_may_not_shadow_a_rule() -> None:
    data = raw_rules()
    data["policy"]["escalation"]["rule_id"] = "fever"
    with pytest.raises(RulesFileError, match="escalation rule id 'fever'"):
        parse_rules(data)


def test_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("policy: {}\nrules: [\n", encoding="utf-8")
    with pytest.raises(RulesFileError, match="not valid YAML"):
        load_rules_file(path)
    path.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(RulesFileError, match="expected a mapping"):
        load_rules_file(path)
