"""The shipped rules (api/rules/data/rules.yaml) against CLINICAL.md's table.

Every rule is checked at its threshold, just below and just above, and on/off its drugs.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.catalog.shipped import load_shipped_catalog
from api.rules.definitions import VITALS, RuleDef
from api.rules.engine import (
    Evaluation,
    Finding,
    PatientContext,
    PriorGrade,
    ReportInput,
    Therapy,
    VersionedRule,
    Weight,
    evaluate,
)
from api.rules.loader import DEFAULT_PATH, RulesFileError, load_rules_file, parse_rules

SHIPPED = load_rules_file()
RULES = [VersionedRule(rule, 1) for rule in SHIPPED.rules]
BY_ID = {rule.id: rule for rule in SHIPPED.rules}
CATALOG = load_shipped_catalog()

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
TODAY = NOW.date()
COURSE_START = date(2026, 3, 1)
CLASSES = {drug.code: drug.drug_class for drug in CATALOG.drugs}
INTERFERONS = ("interferon_alfa_2b", "ropeginterferon_alfa_2b", "peginterferon_alfa_2a")
# What the shipped drug catalog lists as serious, as the engine gets it from the database.
SERIOUS = {
    drug.code: frozenset(e.symptom_code for e in drug.side_effects if e.frequency == "serious")
    for drug in CATALOG.drugs
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

Earlier = tuple[int, float] | list[tuple[int, float]]


def scenario(
    drugs: tuple[str | tuple[str, int], ...] = (),
    symptoms: dict[str, int] | None = None,
    vitals: dict[str, float] | None = None,
    baseline: float | None = BASELINE_KG,
    previous: dict[str, Earlier] | None = None,
    weights: list[tuple[float, float]] | None = None,
) -> Evaluation:
    """drugs: codes on active therapy (started COURSE_START), or (code, days since the therapy
    ended). previous: symptom -> (grade, days ago), or a list of them. weights: (kg, days ago)."""
    therapies = []
    for drug in drugs:
        code, ended_days_ago = (drug, None) if isinstance(drug, str) else drug
        ended = None if ended_days_ago is None else TODAY - timedelta(days=ended_days_ago)
        start = COURSE_START if ended is None else min(COURSE_START, ended - timedelta(days=10))
        therapies.append(Therapy(code, CLASSES[code], start, ended))
    earlier = {
        code: [
            PriorGrade(grade, NOW - timedelta(days=days))
            for grade, days in (points if isinstance(points, list) else [points])
        ]
        for code, points in (previous or {}).items()
    }
    context = PatientContext(
        therapies=therapies,
        baseline_weight_kg=baseline,
        earlier=earlier,
        weights=sorted(
            (Weight(kg, NOW - timedelta(days=days)) for kg, days in weights or []),
            key=lambda w: w.recorded_at,
        ),
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
    "circulation",
    "severe-symptom",
    "very-severe",
    "worsening",
    "hypoxia",
    "breathless",
    "chest-pain",
    "allergy",
    "bleeding",
    "confusion",
    "self-harm",
    "cls-hypotension",
    "cls-weight",
    "cls-composite",
    "il2-urine",
    "il2-neuro",
    "il2-heart",
    "ifn-mood",
    "ifn-vision",
    "fever-neutropenic",
    "gcsf-spleen",
    "gcsf-cls",
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
        ("gcsf-cls", "filgrastim", [], 30),
        ("fever-neutropenic", "filgrastim", [], 30),
        ("circulation", None, [], 30),
        ("confusion", None, [], 30),
        ("self-harm", None, [], 30),
        ("very-severe", None, [], 30),
        ("breathless", None, [], 30),
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
    previous: dict[str, Earlier] | None = None,
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
    words += [f"earlier {k}={p}" for k, p in (previous or {}).items()]
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
    # fever-neutropenic (filgrastim): temperature >= 38.0 emergency; < 36.0 alone urgent
    case("fever-neutropenic", None, on=FIL, temperature_c=37.9),
    case("fever-neutropenic", "emergency", on=FIL, temperature_c=38.0),
    case("fever-neutropenic", None, on=FIL, temperature_c=36.0),
    case("fever-neutropenic", "urgent", on=FIL, temperature_c=35.9),
    case("fever-neutropenic", None, on=FIL, fever=3),  # reported fever without a reading
    case("fever-neutropenic", None, on=ALD, temperature_c=38.5),
    case("fever-neutropenic", None, temperature_c=38.5),
    case("fever-neutropenic", "emergency", on=FIL, ended=30, temperature_c=38.0),
    case("fever-neutropenic", None, on=FIL, ended=31, temperature_c=38.0),
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
    # circulation (every patient): systolic < 90 emergency; heart rate > 130 urgent, emergency
    # with systolic < 90 or spo2 < 92
    case("circulation", None, systolic_bp=90),
    case("circulation", "emergency", systolic_bp=89),
    case("circulation", "emergency", on=IFN, systolic_bp=82),
    case("circulation", "emergency", on=BEV, systolic_bp=82),
    case("circulation", None, heart_rate=130),
    case("circulation", "urgent", heart_rate=131),
    case("circulation", "urgent", on=PEG, heart_rate=136),
    case("circulation", "urgent", heart_rate=131, systolic_bp=90),
    case("circulation", "emergency", heart_rate=131, systolic_bp=89),
    case("circulation", "urgent", heart_rate=131, spo2=92),
    case("circulation", "emergency", heart_rate=131, spo2=91),
    case("circulation", None, heart_rate=120, spo2=91),  # low oxygen alone: hypoxia's
    # severe-symptom: any symptom >= 3 -> urgent, but hair thinning (cosmetic) -> routine
    case("severe-symptom", None, nausea=2),
    case("severe-symptom", "urgent", nausea=3),
    case("severe-symptom", "urgent", rash=4),
    case("severe-symptom", None, nausea=0, rash=2),
    case("severe-symptom", None, hair_thinning=2),
    case("severe-symptom", "routine", hair_thinning=3),
    case("severe-symptom", "routine", hair_thinning=4),
    case("severe-symptom", "urgent", hair_thinning=4, fatigue=3),
    # very-severe: any symptom at grade 4, except hair thinning -> emergency
    case("very-severe", None, nausea=3),
    case("very-severe", "emergency", nausea=4),
    case("very-severe", "emergency", swelling=4),
    case("very-severe", "emergency", on=IFN, rash=4),
    case("very-severe", None, hair_thinning=4),
    case("very-severe", "emergency", hair_thinning=4, fatigue=4),
    # worsening: >= 2 grades above the lowest grade of that symptom in the previous 14 days
    case("worsening", "routine", nausea=3, previous={"nausea": (1, 3)}),
    case("worsening", None, nausea=2, previous={"nausea": (1, 3)}),
    case("worsening", "routine", nausea=2, previous={"nausea": (0, 3)}),
    case("worsening", "routine", nausea=4, previous={"nausea": (1, 3)}),
    case("worsening", "routine", nausea=2, previous={"nausea": (0, 14)}),
    case("worsening", None, nausea=2, previous={"nausea": (0, 14.01)}),
    case("worsening", None, nausea=4, previous={"rash": (0, 3)}),
    case("worsening", None, nausea=4),
    # a steady climb 0 -> 1 -> 2 fires: the lowest counts, not the latest
    case("worsening", "routine", nausea=2, previous={"nausea": [(0, 6), (1, 3)]}),
    case("worsening", None, nausea=2, previous={"nausea": [(0, 15), (1, 3)]}),
    case("worsening", None, nausea=2, previous={"nausea": [(1, 6), (0, 0)]}),  # not earlier
    case("worsening", "routine", nausea=3, previous={"nausea": [(3, 9), (1, 6), (2, 1)]}),
    # hypoxia: spo2 < 92 urgent, < 90 emergency
    case("hypoxia", None, spo2=92),
    case("hypoxia", "urgent", spo2=91),
    case("hypoxia", "urgent", spo2=90),
    case("hypoxia", "emergency", spo2=89),
    # breathless: >= 3 emergency; >= 2 urgent where breathlessness is serious for a drug
    case("breathless", None, shortness_of_breath=2),
    case("breathless", "emergency", shortness_of_breath=3),
    case("breathless", "emergency", shortness_of_breath=4),
    case("breathless", None, on=PEG, shortness_of_breath=1),
    case("breathless", "urgent", on=PEG, shortness_of_breath=2),
    case("breathless", "urgent", on=FIL, shortness_of_breath=2),
    case("breathless", "urgent", on=BEV, shortness_of_breath=2),
    case("breathless", "urgent", on=ALD, shortness_of_breath=2),
    case("breathless", None, on=IFN, shortness_of_breath=2),  # not serious for alfa-2b
    case("breathless", "urgent", on=PEG, ended=30, shortness_of_breath=2),
    case("breathless", None, on=PEG, ended=31, shortness_of_breath=2),
    # chest-pain: >= 1 on aldesleukin, an interferon or bevacizumab emergency; >= 1 anywhere
    # urgent; >= 3 anywhere emergency
    case("chest-pain", None, chest_pain=0),
    case("chest-pain", "urgent", chest_pain=1),
    case("chest-pain", "urgent", chest_pain=2),
    case("chest-pain", "emergency", chest_pain=3),
    case("chest-pain", "emergency", chest_pain=4),
    case("chest-pain", None, on=ALD, chest_pain=0),
    case("chest-pain", "emergency", on=ALD, chest_pain=1),
    case("chest-pain", "emergency", on=IFN, chest_pain=1),
    case("chest-pain", "emergency", on=ROPEG, chest_pain=1),
    case("chest-pain", "emergency", on=PEG, chest_pain=1),
    case("chest-pain", "emergency", on=BEV, chest_pain=1),
    case("chest-pain", "urgent", on=FIL, chest_pain=2),
    case("chest-pain", "emergency", on=FIL, chest_pain=3),
    case("chest-pain", "emergency", on=ALD, ended=30, chest_pain=1),
    case("chest-pain", "urgent", on=ALD, ended=31, chest_pain=1),
    # allergy: allergic_reaction = 1 urgent, >= 2 emergency
    case("allergy", None, allergic_reaction=0),
    case("allergy", "urgent", allergic_reaction=1),
    case("allergy", "emergency", allergic_reaction=2),
    case("allergy", "emergency", allergic_reaction=3),
    # bleeding: >= 3 emergency; >= 2 urgent; >= 1 urgent on bevacizumab, ropeginterferon or
    # peginterferon
    case("bleeding", None, bleeding_bruising=1),
    case("bleeding", "urgent", bleeding_bruising=2),
    case("bleeding", "emergency", bleeding_bruising=3),
    case("bleeding", "emergency", bleeding_bruising=4),
    case("bleeding", None, on=BEV, bleeding_bruising=0),
    case("bleeding", "urgent", on=BEV, bleeding_bruising=1),
    case("bleeding", "urgent", on=BEV, bleeding_bruising=2),
    case("bleeding", "emergency", on=BEV, bleeding_bruising=3),
    case("bleeding", "urgent", on=ROPEG, bleeding_bruising=1),
    case("bleeding", "urgent", on=PEG, bleeding_bruising=1),
    case("bleeding", None, on=IFN, bleeding_bruising=1),
    case("bleeding", "urgent", on=ALD, bleeding_bruising=2),
    case("bleeding", "urgent", on=BEV, ended=30, bleeding_bruising=1),
    case("bleeding", None, on=BEV, ended=31, bleeding_bruising=1),
    # confusion (every patient): >= 2 urgent
    case("confusion", None, confusion=1),
    case("confusion", "urgent", confusion=2),
    case("confusion", "urgent", on=IFN, confusion=3),
    # self-harm (every patient, no window): self_harm_thoughts >= 1 urgent
    case("self-harm", None, self_harm_thoughts=0),
    case("self-harm", "urgent", self_harm_thoughts=1),
    case("self-harm", "urgent", on=BEV, self_harm_thoughts=2),
    case("self-harm", "urgent", on=IFN, ended=400, self_harm_thoughts=1),
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
    # ifn-mood (interferons, watched 180 days): depressed_mood >= 2 urgent, >= 4 emergency;
    # self_harm_thoughts >= 1 emergency
    case("ifn-mood", "urgent", on=IFN, depressed_mood=2),
    case("ifn-mood", "urgent", on=ROPEG, depressed_mood=2),
    case("ifn-mood", "urgent", on=PEG, depressed_mood=2),
    case("ifn-mood", None, on=PEG, depressed_mood=1),
    case("ifn-mood", "urgent", on=PEG, depressed_mood=3),
    case("ifn-mood", "emergency", on=PEG, depressed_mood=4),
    case("ifn-mood", "emergency", on=PEG, ended=90, depressed_mood=4),
    case("ifn-mood", None, on=PEG, ended=181, depressed_mood=4),
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
    # gcsf-cls (filgrastim): (swelling >= 2 or weight >= 5 %) and (dizziness >= 2 or
    # decreased_urination >= 2 or shortness_of_breath >= 2 or systolic < 100) emergency;
    # swelling >= 2 alone urgent
    case("gcsf-cls", None, on=FIL, swelling=1),
    case("gcsf-cls", "urgent", on=FIL, swelling=2),
    case("gcsf-cls", "emergency", on=FIL, swelling=2, dizziness=2),
    case("gcsf-cls", "urgent", on=FIL, swelling=2, dizziness=1),
    case("gcsf-cls", "emergency", on=FIL, swelling=2, decreased_urination=2),
    case("gcsf-cls", "emergency", on=FIL, swelling=3, shortness_of_breath=2),
    case("gcsf-cls", "urgent", on=FIL, swelling=2, systolic_bp=100),
    case("gcsf-cls", "emergency", on=FIL, swelling=2, systolic_bp=99),
    case("gcsf-cls", "emergency", on=FIL, weight_kg=73.5, shortness_of_breath=2),
    case("gcsf-cls", None, on=FIL, weight_kg=73.4, shortness_of_breath=2),
    case("gcsf-cls", None, on=FIL, weight_kg=80.0),  # weight gain alone
    case("gcsf-cls", None, on=FIL, swelling=1, dizziness=3),
    case("gcsf-cls", None, on=ALD, swelling=2, dizziness=2),
    case("gcsf-cls", "urgent", on=FIL, ended=30, swelling=2),
    case("gcsf-cls", None, on=FIL, ended=31, swelling=2),
    # bev-hypertension (bevacizumab): >= 160 or >= 100 routine; >= 180 or >= 110 urgent;
    # emergency with headache >= 3, confusion >= 1 or vision_change >= 1
    case("bev-hypertension", None, on=BEV, systolic_bp=159, diastolic_bp=99),
    case("bev-hypertension", "routine", on=BEV, systolic_bp=160),
    case("bev-hypertension", "routine", on=BEV, diastolic_bp=100),
    case("bev-hypertension", "routine", on=BEV, systolic_bp=179, diastolic_bp=109),
    case("bev-hypertension", "urgent", on=BEV, systolic_bp=180),
    case("bev-hypertension", "urgent", on=BEV, systolic_bp=181),
    case("bev-hypertension", "urgent", on=BEV, diastolic_bp=110),
    case("bev-hypertension", "urgent", on=BEV, systolic_bp=180, headache=2),
    case("bev-hypertension", "emergency", on=BEV, systolic_bp=180, headache=3),
    case("bev-hypertension", "emergency", on=BEV, systolic_bp=160, headache=3),
    case("bev-hypertension", "routine", on=BEV, systolic_bp=160, headache=2),
    case("bev-hypertension", "urgent", on=BEV, diastolic_bp=110, confusion=0),
    case("bev-hypertension", "emergency", on=BEV, diastolic_bp=110, confusion=1),
    case("bev-hypertension", "emergency", on=BEV, diastolic_bp=100, vision_change=1),
    case("bev-hypertension", "routine", on=BEV, diastolic_bp=100, vision_change=0),
    case("bev-hypertension", None, on=BEV, systolic_bp=159, headache=4, confusion=2),
    case("bev-hypertension", None, on=ROPEG, systolic_bp=200),
    # bev-perforation (bevacizumab): abdominal_pain >= 2 urgent, >= 3 emergency
    case("bev-perforation", None, on=BEV, abdominal_pain=1),
    case("bev-perforation", "urgent", on=BEV, abdominal_pain=2),
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
    # circulation fires for every patient; on aldesleukin it yields to the capillary-leak rule
    assert fired(result) == {"cls-hypotension": "emergency"}
    found = finding(result, "cls-hypotension")
    assert found is not None
    assert found.evidence["also_meets"] == ["circulation"]
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
    assert found.detail.startswith(
        "Weight 75.6 kg is 8.0% above baseline 70.0 kg, the baseline on the patient's record"
    )
    assert found.evidence["baseline_weight_kg"] == 70.0
    assert found.evidence["baseline"]["source"] == "recorded"


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
        "(any chest pain on this drug may be a heart event or a blood clot)"
    )


# --- baseline weight per course (CLINICAL.md) --------------------------------------------------
# The aldesleukin course starts on COURSE_START (2026-03-01), 9 days before NOW.


def cls_weight(**kwargs: Any) -> Finding | None:
    return finding(scenario(**kwargs), "cls-weight")


def test_pre_dose_weight_wins_over_the_recorded_baseline() -> None:
    # 72 kg reported 10 days ago (one day before the course): +5.6 % at 76 kg
    found = cls_weight(drugs=(ALD,), vitals={"weight_kg": 76.0}, weights=[(72.0, 10)])
    assert found is not None and found.severity == "urgent"
    assert found.evidence["baseline"] == {
        "weight_kg": 72.0,
        "source": "pre_dose",
        "recorded_at": (NOW - timedelta(days=10)).isoformat(),
        "words": "72.0 kg reported 2026-02-28, before the course",
    }
    assert "baseline 72.0 kg reported 2026-02-28, before the course" in found.detail
    # against the recorded 70 kg it would have been +8.6 %, against nothing +0 %
    assert found.evidence["matched"][0]["value"] == 5.56


def test_the_latest_pre_dose_weight_counts_and_only_within_7_days() -> None:
    weights = [(69.0, 16), (71.0, 12), (73.0, 10), (90.0, 9)]  # 90 kg: on the course's first day
    found = cls_weight(drugs=(ALD,), vitals={"weight_kg": 77.0}, weights=weights, baseline=None)
    assert found is not None and found.evidence["baseline"]["weight_kg"] == 73.0
    # 17 days ago is more than 7 days before the course: not a pre-dose weight
    found = cls_weight(drugs=(ALD,), vitals={"weight_kg": 77.0}, weights=[(60.0, 17)])
    assert found is not None and found.evidence["baseline"]["source"] == "recorded"
    assert found.evidence["baseline_weight_kg"] == BASELINE_KG


def test_without_pre_dose_or_recorded_weight_the_course_first_weight_counts() -> None:
    weights = [(60.0, 30), (72.0, 8), (75.0, 2)]  # 30 days ago: long before the course
    found = cls_weight(drugs=(ALD,), vitals={"weight_kg": 79.3}, weights=weights, baseline=None)
    assert found is not None and found.severity == "emergency"
    assert found.evidence["baseline"]["source"] == "first_in_course"
    assert found.evidence["baseline"]["weight_kg"] == 72.0
    assert "72.0 kg reported 2026-03-02, the first weight of this course" in found.detail
    assert cls_weight(drugs=(ALD,), vitals={"weight_kg": 90.0}, baseline=None) is None


def test_a_second_drug_added_mid_course_does_not_move_the_baseline() -> None:
    therapies = [
        Therapy(ALD, CLASSES[ALD], COURSE_START),
        Therapy(BEV, CLASSES[BEV], TODAY - timedelta(days=2)),
    ]
    context = PatientContext(
        therapies=therapies,
        # 76 kg just before bevacizumab started, 72 kg before the aldesleukin course
        weights=[Weight(72.0, NOW - timedelta(days=10)), Weight(76.0, NOW - timedelta(days=3))],
    )
    report = ReportInput(recorded_at=NOW, vitals={"weight_kg": 76.0})
    result = evaluate(report, context, RULES, SHIPPED.policy)
    found = finding(result, "cls-weight")
    assert found is not None and found.evidence["baseline"]["weight_kg"] == 72.0


def test_a_new_course_has_its_own_baseline() -> None:
    therapies = [
        Therapy(ALD, CLASSES[ALD], date(2026, 1, 5), date(2026, 1, 9)),
        Therapy(ALD, CLASSES[ALD], COURSE_START),
    ]
    weights = [Weight(64.0, datetime(2026, 1, 4, tzinfo=UTC)), Weight(70.0, NOW - timedelta(9))]
    context = PatientContext(therapies=therapies, weights=weights)
    report = ReportInput(recorded_at=NOW, vitals={"weight_kg": 70.5})
    # the January course's 64 kg would make +10 %: the current course's first weight counts
    assert finding(evaluate(report, context, RULES, SHIPPED.policy), "cls-weight") is None


def test_gcsf_cls_measures_weight_from_the_filgrastim_course() -> None:
    found = finding(
        scenario(
            drugs=(FIL,),
            vitals={"weight_kg": 76.0},
            symptoms={"dizziness": 2},
            weights=[(72.0, 10)],
        ),
        "gcsf-cls",
    )
    assert found is not None and found.severity == "emergency"
    assert found.evidence["baseline"]["source"] == "pre_dose"


# --- counting problems for the two-urgent escalation -------------------------------------------


@pytest.mark.parametrize(
    ("drugs", "symptoms", "vitals"),
    [
        pytest.param(
            (), {"fever": 3, "chills": 3}, {"temperature_c": 38.4}, id="fever+chills+temp"
        ),
        pytest.param((ALD,), {"palpitations": 2}, {"heart_rate": 131}, id="palpitations+pulse"),
        pytest.param((PEG,), {"shortness_of_breath": 2}, {"spo2": 91}, id="breathless+spo2"),
        pytest.param(
            (BEV,), {}, {"systolic_bp": 182, "diastolic_bp": 112}, id="systolic+diastolic"
        ),
        pytest.param((FIL,), {"swelling": 2}, {"weight_kg": 74.0}, id="swelling+weight"),
    ],
)
def test_findings_about_one_problem_count_once(
    drugs: tuple[str, ...], symptoms: dict[str, int], vitals: dict[str, float]
) -> None:
    result = scenario(drugs=drugs, symptoms=symptoms, vitals=NORMAL | vitals)
    assert "multiple-urgent" not in fired(result), fired(result)
    assert "urgent" in fired(result).values()


@pytest.mark.parametrize(
    ("drugs", "symptoms", "vitals"),
    [
        pytest.param((), {"self_harm_thoughts": 1, "confusion": 2}, {}, id="self-harm+confusion"),
        pytest.param((), {"nausea": 3, "diarrhea": 3}, {}, id="two severe symptoms, one rule"),
        pytest.param((), {"chest_pain": 1}, {"heart_rate": 131}, id="chest pain+pulse"),
        pytest.param((PEG,), {"shortness_of_breath": 2}, {"heart_rate": 135}, id="breath+pulse"),
    ],
)
def test_two_distinct_problems_escalate(
    drugs: tuple[str, ...], symptoms: dict[str, int], vitals: dict[str, float]
) -> None:
    result = scenario(drugs=drugs, symptoms=symptoms, vitals=NORMAL | vitals)
    assert fired(result).get("multiple-urgent") == "emergency", fired(result)


# --- the cases that raised nothing before (issue: clinical rules v2) ---------------------------


@pytest.mark.parametrize(
    ("drugs", "symptoms", "vitals", "expected"),
    [
        pytest.param((IFN,), {}, {"systolic_bp": 82}, {"circulation": "emergency"}, id="bp 82"),
        pytest.param((BEV,), {}, {"heart_rate": 136}, {"circulation": "urgent"}, id="pulse 136"),
        pytest.param(
            (FIL,),
            {},
            {"temperature_c": 38.2},
            {"fever-neutropenic": "emergency"},
            id="fever on filgrastim",
        ),
        pytest.param(
            ((PEG, 400),), {"self_harm_thoughts": 1}, {}, {"self-harm": "urgent"}, id="self-harm"
        ),
        pytest.param(
            ((PEG, 90),),
            {"depressed_mood": 4},
            {},
            {"ifn-mood": "emergency", "very-severe": "emergency", "severe-symptom": "urgent"},
            id="very low mood 90 days after peginterferon",
        ),
        pytest.param(
            (FIL,), {"shortness_of_breath": 2}, {}, {"breathless": "urgent"}, id="breath on G-CSF"
        ),
    ],
)
def test_dangerous_reports_no_longer_end_in_silence(
    drugs: tuple[str | tuple[str, int], ...],
    symptoms: dict[str, int],
    vitals: dict[str, float],
    expected: dict[str, str],
) -> None:
    result = scenario(drugs=drugs, symptoms=symptoms, vitals=NORMAL | vitals)
    assert fired(result) == expected


FLU_LIKE = {"fatigue": 2, "muscle_aches": 2, "headache": 1}


@pytest.mark.parametrize(
    "previous",
    [
        pytest.param(None, id="first report"),
        pytest.param({"fatigue": (1, 2), "muscle_aches": (1, 2), "headache": (1, 2)}, id="day 3"),
        pytest.param({"fatigue": [(1, 4), (2, 2)], "muscle_aches": (2, 2)}, id="steady"),
    ],
)
def test_the_flu_like_first_week_of_interferon_stays_silent(previous: Any) -> None:
    result = scenario(
        drugs=(IFN,), symptoms=FLU_LIKE, vitals=NORMAL | {"temperature_c": 37.6}, previous=previous
    )
    assert result.findings == [] and result.advice is None


def test_a_common_effect_that_jumps_two_grades_is_routine() -> None:
    result = scenario(
        drugs=(IFN,),
        symptoms=FLU_LIKE,
        vitals=NORMAL | {"temperature_c": 37.6},
        previous={"fatigue": (0, 2), "muscle_aches": (1, 2)},
    )
    assert fired(result) == {"worsening": "routine"}
    [found] = result.findings
    assert found.evidence["matched"] == [
        {
            "worsening": "fatigue",
            "grade": 2,
            "lowest_grade": 0,
            "lowest_recorded_at": (NOW - timedelta(days=2)).isoformat(),
            "by": 2,
            "within_days": 14,
        }
    ]
    assert result.advice is not None and result.advice.severity == "routine"


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


# --- one alert per problem: a general rule yields to the drug's own ------------------------------


@pytest.mark.parametrize(
    ("drugs", "symptoms", "vitals", "expected"),
    [
        pytest.param((ALD,), {}, {"systolic_bp": 84}, {"cls-hypotension": "emergency"}, id="bp"),
        pytest.param((ALD,), {}, {"heart_rate": 134}, {"il2-heart": "urgent"}, id="pulse"),
        pytest.param(
            (ALD,),
            {},
            {"heart_rate": 134, "spo2": 91},
            {
                "circulation": "emergency",
                "il2-heart": "urgent",
                "hypoxia": "urgent",
                "multiple-urgent": "emergency",
            },
            id="pulse with low oxygen: circulation is more severe, so it stays",
        ),
        pytest.param((ALD,), {"confusion": 2}, {}, {"il2-neuro": "emergency"}, id="confusion"),
        pytest.param(
            (IFN,), {"self_harm_thoughts": 1}, {}, {"ifn-mood": "emergency"}, id="self-harm"
        ),
        pytest.param(
            (FIL,), {}, {"temperature_c": 38.5}, {"fever-neutropenic": "emergency"}, id="fever"
        ),
        pytest.param(
            (FIL,),
            {"fever": 3},
            {},
            {"fever": "urgent", "severe-symptom": "urgent"},
            id="reported fever on filgrastim: no reading, fever stays",
        ),
    ],
)
def test_a_general_rule_yields_to_the_drug_rule_that_says_the_same(
    drugs: tuple[str, ...],
    symptoms: dict[str, int],
    vitals: dict[str, float],
    expected: dict[str, str],
) -> None:
    result = scenario(drugs=drugs, symptoms=symptoms, vitals=NORMAL | vitals)
    assert fired(result) == expected


# --- rules skipped by what a report carries -------------------------------------------------------


def _random_case(rng: random.Random) -> tuple[ReportInput, PatientContext]:
    """A report and a context drawn at random: some symptoms (grades 0-4), some vitals (normal
    to alarming), therapies on or recently off any drug, earlier grades and weights."""
    codes = [s.code for s in CATALOG.symptoms]
    symptoms = {code: rng.randint(0, 4) for code in rng.sample(codes, rng.choice((0, 1, 2, 5)))}
    ranges = {
        "temperature_c": (35.0, 41.0),
        "systolic_bp": (70, 190),
        "diastolic_bp": (40, 120),
        "heart_rate": (40, 150),
        "weight_kg": (60.0, 80.0),
        "spo2": (82, 100),
    }
    vitals = {name: round(rng.uniform(*ranges[name]), 1) for name in VITALS if rng.random() < 0.4}
    therapies = []
    for code in rng.sample(sorted(CLASSES), rng.randint(0, 3)):
        ended = None if rng.random() < 0.7 else TODAY - timedelta(days=rng.randint(0, 60))
        therapies.append(Therapy(code, CLASSES[code], COURSE_START, ended))
    earlier = {
        code: [
            PriorGrade(rng.randint(0, 4), NOW - timedelta(days=rng.uniform(0.1, 20)))
            for _ in range(rng.randint(0, 3))
        ]
        for code in rng.sample(codes, 4)
    }
    context = PatientContext(
        therapies=therapies,
        baseline_weight_kg=rng.choice((None, 70.0)),
        earlier={c: sorted(g, key=lambda p: p.recorded_at) for c, g in earlier.items()},
        weights=[Weight(rng.uniform(65, 75), NOW - timedelta(days=d)) for d in (12, 9, 2)],
        serious_by_drug=SERIOUS,
    )
    return ReportInput(recorded_at=NOW, symptoms=symptoms, vitals=vitals), context


def test_a_rule_skipped_for_what_the_report_lacks_would_not_have_fired() -> None:
    """The engine passes over a rule whose every branch looks at a symptom or vital the report
    does not carry. On thousands of random reports, the shipped rules and rules that nest
    any/all around drug leaves give the same findings and advice as when every rule is run."""
    nested = [
        RuleDef.model_validate(
            {
                "id": "nested-any",
                "title": "t",
                "source": "s",
                "branches": [
                    {
                        "severity": "urgent",
                        "when": {
                            "any": [
                                {"on_drug": ["aldesleukin"]},
                                {"vital": "spo2", "lt": 90},
                            ]
                        },
                    }
                ],
            }
        ),
        RuleDef.model_validate(
            {
                "id": "nested-all",
                "title": "t",
                "source": "s",
                "branches": [
                    {
                        "severity": "routine",
                        "when": {
                            "all": [
                                {"on_drug": ["filgrastim"]},
                                {
                                    "any": [
                                        {"symptom": "rash", "gte": 1},
                                        {"worsening": {"by": 1, "within_days": 7}},
                                    ]
                                },
                            ]
                        },
                    }
                ],
            }
        ),
    ]
    rules = RULES + [VersionedRule(r, 1) for r in nested]
    everything = []
    for versioned in rules:
        unfiltered = VersionedRule(versioned.rule, versioned.version)
        object.__setattr__(unfiltered, "needs", None)
        everything.append(unfiltered)
    assert rules[-2].needs is None and rules[-1].needs == {"symptom:rash", "symptom:*"}

    rng = random.Random(20261205)
    fired_rules: set[str] = set()
    skipped = 0
    for _ in range(3000):
        report, context = _random_case(rng)
        result = evaluate(report, context, rules, SHIPPED.policy)
        assert result == evaluate(report, context, everything, SHIPPED.policy), report
        fired_rules.update(f.rule_id for f in result.findings)
        carried = {f"vital:{name}" for name in report.vitals}
        carried |= {f"symptom:{code}" for code in report.symptoms}
        carried |= {"symptom:*"} if report.symptoms else set()
        skipped += sum(1 for v in rules if v.needs is not None and v.needs.isdisjoint(carried))
    # Not vacuous: rules were passed over, and nearly every rule fired somewhere.
    assert skipped > 10_000, skipped
    assert len(fired_rules) >= len(rules) - 3, sorted({v.rule.id for v in rules} - fired_rules)
