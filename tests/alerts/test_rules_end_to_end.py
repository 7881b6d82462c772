"""Every rule of CLINICAL.md's table, end to end through HTTP.

Each case builds a patient on the right drug, posts one report as the patient and checks the
response: the rule's alert with its severity, the advice for the highest severity raised, the
words and data of what fired, the follow-up window of the tier, and (to catch over-firing) the
whole set of rules the report raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest

from tests.alerts.helpers import WINDOWS, by_rule, highest, holds, ts
from tests.conftest import World, post_batch, report_body

IFN = "interferon_alfa_2b"
NORMAL = {
    "temperature_c": 36.8,
    "systolic_bp": 122,
    "diastolic_bp": 78,
    "heart_rate": 76,
    "spo2": 98,
}


@dataclass(frozen=True)
class Case:
    id: str
    rule: str
    severity: str
    detail: str  # a piece of `detail` that says the value that fired
    evidence: tuple[Any, ...]  # values one evidence object must carry
    raised: frozenset[str]  # every rule the report raises
    drugs: tuple[str, ...] = ()
    symptoms: dict[str, int] = field(default_factory=dict)
    vitals: dict[str, float] = field(default_factory=dict)
    patient: dict[str, Any] = field(default_factory=dict)
    drug_code: str | None = None  # the alert's drug_code, when the rule is about a drug


def case(
    case_id: str,
    rule: str,
    severity: str,
    detail: str,
    evidence: tuple[Any, ...],
    also: tuple[str, ...] = (),
    **fields: Any,
) -> Any:
    return pytest.param(
        Case(case_id, rule, severity, detail, evidence, frozenset({rule, *also}), **fields),
        id=case_id,
    )


# One line per case: (id, rule, severity, piece of detail, evidence values, other rules raised,
# then the patient's drugs, symptoms, vitals, ...).
# fmt: off
CASES = [
    # --- every patient ---
    case("fever-temperature", "fever", "urgent", "38.2 °C", ("temperature_c", 38.2),
         vitals={"temperature_c": 38.2}),
    case("fever-temperature-threshold", "fever", "urgent", "38.0 °C", ("temperature_c", 38.0),
         vitals={"temperature_c": 38.0}, drugs=(IFN,)),
    case("fever-grade-3", "fever", "urgent", "grade 3", ("fever", 3), also=("severe-symptom",),
         symptoms={"fever": 3}),
    case("fever-sepsis-heart-rate", "fever-sepsis", "emergency", "135/min", ("heart_rate", 135),
         also=("fever", "circulation", "multiple-urgent"),
         vitals={"temperature_c": 38.5, "heart_rate": 135}),
    case("fever-sepsis-low-temperature-chills", "fever-sepsis", "emergency", "35.5 °C",
         ("temperature_c", 35.5), also=("severe-symptom",),
         vitals={"temperature_c": 35.5}, symptoms={"chills": 3}),
    case("fever-sepsis-spo2", "fever-sepsis", "emergency", "91%", ("spo2", 91),
         also=("fever", "hypoxia", "multiple-urgent"),
         vitals={"temperature_c": 38.4, "spo2": 91}),
    case("fever-sepsis-confusion-il2", "fever-sepsis", "emergency", "grade 2", ("confusion", 2),
         also=("fever", "il2-neuro"),
         vitals={"temperature_c": 38.1},
         symptoms={"confusion": 2}, drugs=("aldesleukin",)),
    case("fever-very-high", "fever-very-high", "emergency", "40.3 °C", ("temperature_c", 40.3),
         also=("fever",), vitals={"temperature_c": 40.3}),
    case("severe-symptom", "severe-symptom", "urgent", "grade 3", ("nausea", 3),
         symptoms={"nausea": 3}, drugs=("aldesleukin",)),
    case("very-severe", "very-severe", "emergency", "grade 4", ("swelling", 4),
         also=("severe-symptom",), symptoms={"swelling": 4}, drugs=("aldesleukin",)),
    case("very-severe-no-drug", "very-severe", "emergency", "grade 4", ("nausea", 4),
         also=("severe-symptom",), symptoms={"nausea": 4}),
    case("hair-thinning-is-routine", "severe-symptom", "routine", "grade 4",
         ("hair_thinning", 4), symptoms={"hair_thinning": 4}, drugs=(IFN,)),
    case("circulation-systolic", "circulation", "emergency", "82 mm Hg", ("systolic_bp", 82),
         vitals={"systolic_bp": 82}, drugs=(IFN,)),
    case("circulation-pulse", "circulation", "urgent", "136/min", ("heart_rate", 136),
         vitals={"heart_rate": 136}, drugs=("bevacizumab",)),
    case("circulation-pulse-low-oxygen", "circulation", "emergency", "91%", ("spo2", 91),
         also=("hypoxia",), vitals={"heart_rate": 136, "spo2": 91}),
    case("confusion", "confusion", "urgent", "grade 2", ("confusion", 2),
         symptoms={"confusion": 2}, drugs=("filgrastim",)),
    case("self-harm-no-interferon", "self-harm", "urgent", "grade 1", ("self_harm_thoughts", 1),
         symptoms={"self_harm_thoughts": 1}, drugs=("bevacizumab",)),
    case("breathless-peginterferon", "breathless", "urgent", "grade 2",
         ("shortness_of_breath", 2), symptoms={"shortness_of_breath": 2},
         drugs=("peginterferon_alfa_2a",)),
    case("breathless-filgrastim", "breathless", "urgent", "grade 2",
         ("shortness_of_breath", 2), symptoms={"shortness_of_breath": 2},
         drugs=("filgrastim",)),
    case("chest-pain-anywhere", "chest-pain", "urgent", "grade 1", ("chest_pain", 1),
         symptoms={"chest_pain": 1}, drugs=("filgrastim",)),
    case("chest-pain-bevacizumab", "chest-pain", "emergency", "grade 1", ("chest_pain", 1),
         symptoms={"chest_pain": 1}, drugs=("bevacizumab",), drug_code="bevacizumab"),
    case("bleeding-moderate-anywhere", "bleeding", "urgent", "grade 2",
         ("bleeding_bruising", 2), symptoms={"bleeding_bruising": 2}),
    case("hypoxia-urgent", "hypoxia", "urgent", "91%", ("spo2", 91), vitals={"spo2": 91}),
    case("hypoxia-emergency", "hypoxia", "emergency", "88%", ("spo2", 88), vitals={"spo2": 88}),
    case("breathless", "breathless", "emergency", "grade 3", ("shortness_of_breath", 3),
         also=("severe-symptom",), symptoms={"shortness_of_breath": 3}),
    case("chest-pain-aldesleukin", "chest-pain", "emergency", "grade 1", ("chest_pain", 1),
         symptoms={"chest_pain": 1}, drugs=("aldesleukin",), drug_code="aldesleukin"),
    case("chest-pain-interferon", "chest-pain", "emergency", "grade 1", ("chest_pain", 1),
         symptoms={"chest_pain": 1}, drugs=(IFN,), drug_code=IFN),
    case("chest-pain-peginterferon", "chest-pain", "emergency", "grade 1", ("chest_pain", 1),
         symptoms={"chest_pain": 1}, drugs=("peginterferon_alfa_2a",),
         drug_code="peginterferon_alfa_2a"),
    case("chest-pain-severe-anywhere", "chest-pain", "emergency", "grade 3", ("chest_pain", 3),
         also=("severe-symptom",), symptoms={"chest_pain": 3}, drugs=("filgrastim",)),
    case("allergy-urgent", "allergy", "urgent", "grade 1", ("allergic_reaction", 1),
         symptoms={"allergic_reaction": 1}),
    case("allergy-emergency", "allergy", "emergency", "grade 2", ("allergic_reaction", 2),
         symptoms={"allergic_reaction": 2}, drugs=("filgrastim",)),
    case("bleeding-emergency", "bleeding", "emergency", "grade 3", ("bleeding_bruising", 3),
         also=("severe-symptom",), symptoms={"bleeding_bruising": 3}),
    case("bleeding-bevacizumab", "bleeding", "urgent", "grade 1", ("bleeding_bruising", 1),
         symptoms={"bleeding_bruising": 1}, drugs=("bevacizumab",), drug_code="bevacizumab"),
    case("bleeding-ropeginterferon", "bleeding", "urgent", "grade 1", ("bleeding_bruising", 1),
         symptoms={"bleeding_bruising": 1}, drugs=("ropeginterferon_alfa_2b",),
         drug_code="ropeginterferon_alfa_2b"),
    # --- thresholds exactly reached ---
    case("at-fever-very-high-40-is-only-fever", "fever", "urgent", "40.0 °C",
         ("temperature_c", 40.0), vitals={"temperature_c": 40.0}),
    case("at-hypoxia-90-is-urgent", "hypoxia", "urgent", "90%", ("spo2", 90), vitals={"spo2": 90}),
    case("at-bev-systolic-180", "bev-hypertension", "urgent", "180 mm Hg", ("systolic_bp", 180),
         vitals={"systolic_bp": 180, "diastolic_bp": 100}, drugs=("bevacizumab",)),
    case("at-bev-diastolic-110", "bev-hypertension", "urgent", "110 mm Hg", ("diastolic_bp", 110),
         vitals={"systolic_bp": 170, "diastolic_bp": 110}, drugs=("bevacizumab",)),
    case("at-cls-systolic-89", "cls-hypotension", "emergency", "89 mm Hg", ("systolic_bp", 89),
         vitals={"systolic_bp": 89}, drugs=("aldesleukin",)),
    # --- aldesleukin ---
    case("cls-hypotension", "cls-hypotension", "emergency", "84 mm Hg", ("systolic_bp", 84),
         vitals={"systolic_bp": 84}, drugs=("aldesleukin",),
         drug_code="aldesleukin"),
    case("cls-weight-urgent", "cls-weight", "urgent", "73.5 kg", ("weight_kg", 73.5),
         vitals={"weight_kg": 73.5}, drugs=("aldesleukin",), patient={"baseline_weight_kg": 70},
         drug_code="aldesleukin"),
    case("cls-weight-emergency", "cls-weight", "emergency", "77.0 kg", ("weight_kg", 77),
         vitals={"weight_kg": 77}, drugs=("aldesleukin",), patient={"baseline_weight_kg": 70},
         drug_code="aldesleukin"),
    case("cls-composite-swelling-dizziness", "cls-composite", "emergency", "grade 2",
         ("swelling", 2), symptoms={"swelling": 2, "dizziness": 2}, drugs=("aldesleukin",),
         drug_code="aldesleukin"),
    case("cls-composite-weight-systolic", "cls-composite", "emergency", "95 mm Hg",
         ("systolic_bp", 95), also=("cls-weight",), vitals={"weight_kg": 74, "systolic_bp": 95},
         drugs=("aldesleukin",), patient={"baseline_weight_kg": 70}),
    case("cls-composite-swelling-breathless", "cls-composite", "emergency", "grade 2",
         ("shortness_of_breath", 2), also=("breathless",),
         symptoms={"swelling": 2, "shortness_of_breath": 2}, drugs=("aldesleukin",)),
    case("il2-urine-urgent", "il2-urine", "urgent", "grade 2", ("decreased_urination", 2),
         symptoms={"decreased_urination": 2}, drugs=("aldesleukin",), drug_code="aldesleukin"),
    case("il2-urine-emergency", "il2-urine", "emergency", "grade 3", ("decreased_urination", 3),
         also=("severe-symptom",), symptoms={"decreased_urination": 3}, drugs=("aldesleukin",)),
    case("il2-neuro", "il2-neuro", "emergency", "grade 2", ("confusion", 2),
         symptoms={"confusion": 2}, drugs=("aldesleukin",),
         drug_code="aldesleukin"),
    case("il2-heart-palpitations", "il2-heart", "urgent", "grade 2", ("palpitations", 2),
         symptoms={"palpitations": 2}, drugs=("aldesleukin",), drug_code="aldesleukin"),
    case("il2-heart-rate", "il2-heart", "urgent", "134/min", ("heart_rate", 134),
         vitals={"heart_rate": 134}, drugs=("aldesleukin",)),
    case("il2-heart-with-hypotension", "il2-heart", "emergency", "134/min", ("heart_rate", 134),
         also=("cls-hypotension",), vitals={"heart_rate": 134, "systolic_bp": 86},
         drugs=("aldesleukin",)),
    case("il2-heart-with-chest-pain", "il2-heart", "emergency", "grade 2", ("palpitations", 2),
         also=("chest-pain",), symptoms={"palpitations": 2, "chest_pain": 1},
         drugs=("aldesleukin",)),
    # --- interferons ---
    case("ifn-mood-urgent", "ifn-mood", "urgent", "grade 2", ("depressed_mood", 2),
         symptoms={"depressed_mood": 2}, drugs=(IFN,), drug_code=IFN),
    case("ifn-mood-self-harm", "ifn-mood", "emergency", "grade 1", ("self_harm_thoughts", 1),
         symptoms={"self_harm_thoughts": 1},
         drugs=("peginterferon_alfa_2a",), drug_code="peginterferon_alfa_2a"),
    case("ifn-mood-very-severe", "ifn-mood", "emergency", "grade 4", ("depressed_mood", 4),
         also=("very-severe", "severe-symptom"), symptoms={"depressed_mood": 4},
         drugs=("peginterferon_alfa_2a",)),
    case("ifn-vision-urgent", "ifn-vision", "urgent", "grade 1", ("vision_change", 1),
         symptoms={"vision_change": 1}, drugs=("ropeginterferon_alfa_2b",),
         drug_code="ropeginterferon_alfa_2b"),
    case("ifn-vision-emergency", "ifn-vision", "emergency", "grade 3", ("vision_change", 3),
         also=("severe-symptom",), symptoms={"vision_change": 3}, drugs=(IFN,)),
    # --- filgrastim ---
    case("gcsf-spleen", "gcsf-spleen", "emergency", "grade 2", ("abdominal_pain", 2),
         symptoms={"abdominal_pain": 2}, drugs=("filgrastim",), drug_code="filgrastim"),
    case("fever-neutropenic", "fever-neutropenic", "emergency", "38.0 °C",
         ("temperature_c", 38.0), vitals={"temperature_c": 38.0},
         drugs=("filgrastim",), drug_code="filgrastim"),
    case("fever-neutropenic-low", "fever-neutropenic", "urgent", "35.8 °C",
         ("temperature_c", 35.8), vitals={"temperature_c": 35.8}, drugs=("filgrastim",)),
    case("gcsf-cls-swelling", "gcsf-cls", "urgent", "grade 2", ("swelling", 2),
         symptoms={"swelling": 2}, drugs=("filgrastim",), drug_code="filgrastim"),
    case("gcsf-cls-composite", "gcsf-cls", "emergency", "96 mm Hg", ("systolic_bp", 96),
         symptoms={"swelling": 2}, vitals={"systolic_bp": 96}, drugs=("filgrastim",)),
    # --- bevacizumab ---
    case("bev-hypertension-systolic", "bev-hypertension", "urgent", "185 mm Hg",
         ("systolic_bp", 185), vitals={"systolic_bp": 185, "diastolic_bp": 95},
         drugs=("bevacizumab",), drug_code="bevacizumab"),
    case("bev-hypertension-diastolic", "bev-hypertension", "urgent", "112 mm Hg",
         ("diastolic_bp", 112), vitals={"systolic_bp": 165, "diastolic_bp": 112},
         drugs=("bevacizumab",)),
    case("bev-hypertension-headache", "bev-hypertension", "emergency", "185 mm Hg",
         ("headache", 3), also=("severe-symptom",), vitals={"systolic_bp": 185},
         symptoms={"headache": 3}, drugs=("bevacizumab",)),
    case("bev-hypertension-confusion", "bev-hypertension", "emergency", "grade 1",
         ("confusion", 1), vitals={"diastolic_bp": 115}, symptoms={"confusion": 1},
         drugs=("bevacizumab",)),
    case("bev-hypertension-routine", "bev-hypertension", "routine", "160 mm Hg",
         ("systolic_bp", 160), vitals={"systolic_bp": 160, "diastolic_bp": 95},
         drugs=("bevacizumab",)),
    case("bev-hypertension-pres", "bev-hypertension", "emergency", "grade 1",
         ("vision_change", 1), vitals={"systolic_bp": 165}, symptoms={"vision_change": 1},
         drugs=("bevacizumab",)),
    case("bev-perforation-urgent", "bev-perforation", "urgent", "grade 2", ("abdominal_pain", 2),
         symptoms={"abdominal_pain": 2}, drugs=("bevacizumab",)),
    case("bev-perforation", "bev-perforation", "emergency", "grade 3", ("abdominal_pain", 3),
         also=("severe-symptom",), symptoms={"abdominal_pain": 3}, drugs=("bevacizumab",),
         drug_code="bevacizumab"),
]
# fmt: on


def check_response(body: dict[str, Any], rule: str, severity: str) -> dict[str, Any]:
    """The report response's contract for one rule; returns that rule's alert."""
    alerts = by_rule(body["alerts"])
    assert rule in alerts, f"{rule} not raised; got {sorted(alerts)}"
    alert = alerts[rule]
    assert alert["severity"] == severity
    assert alert["status"] == "open"
    assert alert["occurrences"] == 1
    assert alert["patient_id"] == body["patient_id"]
    assert alert["report_id"] == body["id"]
    created = ts(alert["created_at"])
    assert ts(alert["follow_up_due_at"]) - created == WINDOWS[severity]
    assert ts(alert["last_triggered_at"]) == created
    assert body["advice"] is not None
    assert body["advice"]["severity"] == highest(body["alerts"])
    assert body["advice"]["message"] == ADVICE[body["advice"]["severity"]]
    return alert


# CLINICAL.md, "Severity tiers": what the patient is told at once.
ADVICE = {
    "emergency": "Call your care team's 24-hour line now. If you cannot reach them, call "
    "emergency services.",
    "urgent": "Your care team will contact you today. Call them if you get worse.",
    "routine": "Your care team will review this.",
}


@pytest.mark.parametrize("c", CASES)
def test_rule_fires_end_to_end(world: World, c: Case) -> None:
    patient = world.patient(drugs=c.drugs, **c.patient)
    body = world.report(patient["id"], symptoms=c.symptoms, vitals=c.vitals)

    alert = check_response(body, c.rule, c.severity)
    assert {a["rule_id"] for a in body["alerts"]} == c.raised
    assert c.detail in alert["detail"], alert["detail"]
    assert holds(alert["evidence"], *c.evidence), alert["evidence"]
    assert alert["title"]
    assert alert["rule_version"] >= 1
    if c.drug_code is not None:
        assert alert["drug_code"] == c.drug_code


def test_the_rule_table_is_covered() -> None:
    table = {
        "fever", "fever-neutropenic", "fever-sepsis", "fever-very-high", "circulation",
        "severe-symptom", "very-severe", "worsening", "hypoxia", "breathless", "chest-pain",
        "allergy", "bleeding", "confusion", "self-harm", "cls-hypotension", "cls-weight",
        "cls-composite", "il2-urine", "il2-neuro", "il2-heart", "ifn-mood", "ifn-vision",
        "gcsf-spleen", "gcsf-cls", "bev-hypertension", "bev-perforation",
    }  # fmt: skip
    covered = {p.values[0].rule for p in CASES} | {"worsening"}  # worsening: its own tests below
    assert table <= covered


def test_cls_hypotension_detail_in_words(world: World) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    body = world.report(patient["id"], vitals={"systolic_bp": 84})
    alert = check_response(body, "cls-hypotension", "emergency")
    assert "Systolic blood pressure 84 mm Hg is below 90 mm Hg" in alert["detail"]


# --- drug scope: who a rule applies to --------------------------------------------------------

DAY = timedelta(days=1)


def days_ago(n: int) -> str:
    return (datetime.now(UTC).date() - n * DAY).isoformat()


SCOPE_MISSES = [
    # (drugs, symptoms, vitals, rule that must stay silent)
    pytest.param(("bevacizumab",), {}, {"systolic_bp": 85}, "cls-hypotension", id="bev-low-bp"),
    pytest.param((), {}, {"systolic_bp": 85}, "cls-hypotension", id="no-drug-low-bp"),
    pytest.param((IFN,), {"confusion": 2}, {}, "il2-neuro", id="ifn-confusion"),
    pytest.param((IFN,), {"shortness_of_breath": 2}, {}, "breathless", id="ifn2b-breath-2"),
    pytest.param((), {"shortness_of_breath": 2}, {}, "breathless", id="no-drug-breath-2"),
    pytest.param(("aldesleukin",), {"bleeding_bruising": 1}, {}, "bleeding", id="il2-bleeding-1"),
    pytest.param((IFN,), {"bleeding_bruising": 1}, {}, "bleeding", id="ifn2b-bleeding-1"),
    pytest.param(("bevacizumab",), {"abdominal_pain": 2}, {}, "gcsf-spleen", id="bev-belly-2"),
    pytest.param(("filgrastim",), {"abdominal_pain": 2}, {}, "bev-perforation", id="gcsf-belly"),
    pytest.param(("aldesleukin",), {"depressed_mood": 2}, {}, "ifn-mood", id="il2-mood"),
    pytest.param(("bevacizumab",), {"vision_change": 2}, {}, "ifn-vision", id="bev-vision"),
    pytest.param(("aldesleukin",), {}, {"systolic_bp": 185}, "bev-hypertension", id="il2-high-bp"),
    pytest.param(("bevacizumab",), {"palpitations": 2}, {}, "il2-heart", id="bev-palpitations"),
    pytest.param(("aldesleukin",), {"hair_thinning": 4}, {}, "very-severe", id="hair-thinning-4"),
    pytest.param(("aldesleukin",), {"swelling": 2}, {}, "gcsf-cls", id="il2-swelling"),
    pytest.param(("filgrastim",), {}, {"temperature_c": 37.9}, "fever-neutropenic", id="gcsf-37.9"),
    pytest.param(
        ("aldesleukin",), {}, {"temperature_c": 38.5}, "fever-neutropenic", id="il2-fever"
    ),
    pytest.param(("bevacizumab",), {}, {"systolic_bp": 159}, "bev-hypertension", id="bev-159"),
    pytest.param(
        ("aldesleukin",),
        {"swelling": 2},
        {"systolic_bp": 105},
        "cls-composite",
        id="il2-swelling-no-second-sign",
    ),
]


@pytest.mark.parametrize(("drugs", "symptoms", "vitals", "rule"), SCOPE_MISSES)
def test_rule_does_not_fire_outside_its_scope(
    world: World,
    drugs: tuple[str, ...],
    symptoms: dict[str, int],
    vitals: dict[str, float],
    rule: str,
) -> None:
    patient = world.patient(drugs=drugs)
    body = world.report(patient["id"], symptoms=symptoms, vitals=vitals)
    assert rule not in {a["rule_id"] for a in body["alerts"]}, body["alerts"]


WATCH = [
    # ifn-mood is watched 180 days after the last interferon dose; other drug rules 30 days.
    pytest.param(IFN, 150, {"depressed_mood": 2}, {}, "ifn-mood", True, id="ifn-mood-150d"),
    pytest.param(IFN, 200, {"depressed_mood": 2}, {}, "ifn-mood", False, id="ifn-mood-200d"),
    pytest.param(
        "peginterferon_alfa_2a",
        170,
        {"self_harm_thoughts": 1},
        {},
        "ifn-mood",
        True,
        id="ifn-self-harm-170d",
    ),
    pytest.param(IFN, 20, {"vision_change": 1}, {}, "ifn-vision", True, id="ifn-vision-20d"),
    pytest.param(IFN, 60, {"vision_change": 1}, {}, "ifn-vision", False, id="ifn-vision-60d"),
    pytest.param(
        "aldesleukin", 20, {}, {"systolic_bp": 85}, "cls-hypotension", True, id="il2-bp-20d"
    ),
    pytest.param(
        "aldesleukin", 45, {}, {"systolic_bp": 85}, "cls-hypotension", False, id="il2-bp-45d"
    ),
    pytest.param(IFN, 20, {"chest_pain": 1}, {}, "chest-pain", True, id="ifn-chest-20d"),
    pytest.param(IFN, 45, {"chest_pain": 1}, {}, "chest-pain", "urgent", id="ifn-chest-45d"),
    pytest.param(
        "peginterferon_alfa_2a",
        90,
        {"depressed_mood": 4},
        {},
        "ifn-mood",
        True,
        id="peg-mood-4-90d",
    ),
]


@pytest.mark.parametrize(("drug", "ended_days_ago", "symptoms", "vitals", "rule", "fires"), WATCH)
def test_watch_window_after_therapy_ended(
    world: World,
    drug: str,
    ended_days_ago: int,
    symptoms: dict[str, int],
    vitals: dict[str, float],
    rule: str,
    fires: bool | str,
) -> None:
    """fires: True (with the drug named), False, or the severity left once the drug is out."""
    patient = world.patient()
    world.therapy(patient["id"], drug, days_ago(ended_days_ago + 120), days_ago(ended_days_ago))
    body = world.report(patient["id"], symptoms=symptoms, vitals=vitals)
    raised = {a["rule_id"] for a in body["alerts"]}
    if isinstance(fires, str):
        alert = check_response(body, rule, fires)
        assert alert["drug_code"] is None
    elif fires:
        alert = check_response(body, rule, by_rule(body["alerts"])[rule]["severity"])
        assert alert["drug_code"] == drug
    else:
        assert rule not in raised, body["alerts"]


def test_therapy_not_started_yet_does_not_count(world: World) -> None:
    patient = world.patient()
    future = (datetime.now(UTC).date() + 10 * DAY).isoformat()
    world.therapy(patient["id"], "aldesleukin", future)
    body = world.report(patient["id"], vitals={"systolic_bp": 85})
    assert "cls-hypotension" not in {a["rule_id"] for a in body["alerts"]}


def test_therapy_start_is_judged_on_the_reports_local_date(world: World) -> None:
    """Therapy dates are calendar dates; a report carries its own UTC offset.

    A patient in UTC+10 who starts aldesleukin today and reports at 08:00 local time is on
    aldesleukin (CLS can start right after treatment begins), although it is still yesterday in
    UTC. Judging the day in UTC loses the first hours of every therapy east of Greenwich.
    """
    today = datetime.now(UTC).date()
    patient = world.patient()
    world.therapy(patient["id"], "aldesleukin", today.isoformat())
    local = timezone(timedelta(hours=10))
    recorded = datetime.combine(today, time(8, 0), local)  # 22:00 UTC yesterday: in the past
    body = world.report(patient["id"], vitals={"systolic_bp": 84}, recorded_at=recorded)
    check_response(body, "cls-hypotension", "emergency")


def test_combined_therapy_applies_every_drugs_rules(world: World) -> None:
    """Interferon alfa-2b with bevacizumab (kidney cancer): both drugs' rules apply."""
    patient = world.patient(drugs=(IFN, "bevacizumab"))
    body = world.report(patient["id"], symptoms={"depressed_mood": 2}, vitals={"systolic_bp": 186})
    alerts = by_rule(body["alerts"])
    assert alerts["ifn-mood"]["severity"] == "urgent"
    assert alerts["bev-hypertension"]["severity"] == "urgent"
    # two urgent findings on different evidence: UKONS makes it an emergency
    assert alerts["multiple-urgent"]["severity"] == "emergency"
    assert body["advice"]["severity"] == "emergency"


# --- worsening (trend rule) ---------------------------------------------------------------------


def test_worsening_by_two_grades_within_14_days_is_routine(world: World) -> None:
    patient = world.patient(drugs=(IFN,))
    now = datetime.now(UTC)
    first = world.report(patient["id"], symptoms={"fatigue": 0}, recorded_at=now - 5 * DAY)
    assert first["alerts"] == []
    body = world.report(
        patient["id"], symptoms={"fatigue": 2}, recorded_at=now - timedelta(minutes=1)
    )
    alerts = by_rule(body["alerts"])
    assert set(alerts) == {"worsening"}
    alert = check_response(body, "worsening", "routine")
    assert body["advice"]["severity"] == "routine"
    assert holds(alert["evidence"], "fatigue", 2)
    assert "grade 2" in alert["detail"]
    assert "grade 0" in alert["detail"]


def test_worsening_compares_with_the_lowest_grade_of_the_last_14_days(world: World) -> None:
    """A steady climb 0 -> 1 -> 2 counts: each step is one grade, the climb is two."""
    patient = world.patient()
    now = datetime.now(UTC)
    world.report(patient["id"], symptoms={"nausea": 0}, recorded_at=now - 8 * DAY)
    assert (
        world.report(patient["id"], symptoms={"nausea": 1}, recorded_at=now - 4 * DAY)["alerts"]
        == []
    )
    body = world.report(
        patient["id"], symptoms={"nausea": 2}, recorded_at=now - timedelta(minutes=1)
    )
    alert = check_response(body, "worsening", "routine")
    [matched] = alert["evidence"]["matched"]
    assert (matched["grade"], matched["lowest_grade"]) == (2, 0)
    assert ts(matched["lowest_recorded_at"]) == now - 8 * DAY
    assert "from grade 0, its lowest in the previous 14 days" in alert["detail"]


def test_worsening_ignores_a_low_grade_older_than_14_days(world: World) -> None:
    patient = world.patient()
    now = datetime.now(UTC)
    world.report(patient["id"], symptoms={"nausea": 0}, recorded_at=now - 15 * DAY)
    world.report(patient["id"], symptoms={"nausea": 1}, recorded_at=now - 4 * DAY)
    body = world.report(
        patient["id"], symptoms={"nausea": 2}, recorded_at=now - timedelta(minutes=1)
    )
    assert body["alerts"] == []


def test_worsening_more_than_14_days_apart_raises_nothing(world: World) -> None:
    patient = world.patient(drugs=(IFN,))
    now = datetime.now(UTC)
    world.report(patient["id"], symptoms={"fatigue": 0}, recorded_at=now - 15 * DAY)
    body = world.report(
        patient["id"], symptoms={"fatigue": 2}, recorded_at=now - timedelta(minutes=1)
    )
    assert body["alerts"] == []
    assert body["advice"] is None


def test_worsening_to_grade_3_is_urgent_through_severe_symptom(world: World) -> None:
    patient = world.patient()
    now = datetime.now(UTC)
    world.report(patient["id"], symptoms={"diarrhea": 1}, recorded_at=now - 2 * DAY)
    body = world.report(
        patient["id"], symptoms={"diarrhea": 3}, recorded_at=now - timedelta(minutes=1)
    )
    alerts = by_rule(body["alerts"])
    assert set(alerts) == {"worsening", "severe-symptom"}
    assert alerts["worsening"]["severity"] == "routine"
    assert alerts["severe-symptom"]["severity"] == "urgent"
    assert body["advice"]["severity"] == "urgent"


def test_batch_is_evaluated_in_recorded_at_order(world: World, client: Any, tokens: Any) -> None:
    """A phone syncing a backlog sends reports in any order; worsening sees them in order."""
    patient = world.patient()
    now = datetime.now(UTC)
    later = report_body({"fatigue": 2}, recorded_at=now - timedelta(minutes=1))
    earlier = report_body({"fatigue": 0}, recorded_at=now - 3 * DAY)
    results = post_batch(client, tokens, patient["id"], [later, earlier])
    assert [r["status"] for r in results] == ["created", "created"]
    alerts = client.get("/v1/alerts", headers=tokens.admin()).json()["items"]
    assert [(a["rule_id"], a["severity"]) for a in alerts] == [("worsening", "routine")]
    assert alerts[0]["report_id"] == results[0]["report_id"]


def test_worsening_in_a_batch_never_looks_at_a_grade_recorded_after_the_report(
    world: World, client: Any, tokens: Any
) -> None:
    """The grades read for a batch reach to its last report: a report earlier in the batch is
    still compared only with what came before it."""
    patient = world.patient()
    now = datetime.now(UTC)
    world.report(patient["id"], symptoms={"nausea": 0}, recorded_at=now - timedelta(hours=2))
    first = report_body({"nausea": 2}, recorded_at=now - timedelta(hours=3))
    last = report_body({"nausea": 2}, recorded_at=now - timedelta(hours=1))
    results = post_batch(client, tokens, patient["id"], [first, last])
    alerts = client.get("/v1/alerts", headers=tokens.admin()).json()["items"]
    # Only the last report rose two grades over one before it (the grade 0 of 2 hours ago).
    [alert] = alerts
    assert (alert["rule_id"], alert["occurrences"]) == ("worsening", 1), alert
    assert alert["report_id"] == results[1]["report_id"]
    [matched] = alert["evidence"]["matched"]
    assert (matched["grade"], matched["lowest_grade"]) == (2, 0)


def test_worsening_uses_recorded_at_order_not_arrival_order(world: World) -> None:
    """A report synced late (recorded earlier) is compared with what came before it."""
    patient = world.patient()
    now = datetime.now(UTC)
    world.report(patient["id"], symptoms={"headache": 2}, recorded_at=now - timedelta(hours=1))
    # recorded before the grade-2 report, with only a grade 0 before it: no worsening
    body = world.report(patient["id"], symptoms={"headache": 0}, recorded_at=now - 2 * DAY)
    assert body["alerts"] == []


# --- baseline weight ----------------------------------------------------------------------------


def test_baseline_weight_is_the_first_weight_in_the_current_therapy(world: World) -> None:
    patient = world.patient()  # no baseline_weight_kg
    world.therapy(patient["id"], "aldesleukin", days_ago(3))
    now = datetime.now(UTC)
    # More than 7 days before the therapy started: not a pre-dose weight.
    before = world.report(patient["id"], vitals={"weight_kg": 60}, recorded_at=now - 12 * DAY)
    assert before["alerts"] == []
    first = world.report(patient["id"], vitals={"weight_kg": 70}, recorded_at=now - 2 * DAY)
    assert first["alerts"] == []  # the first weight in the therapy is the baseline itself

    body = world.report(patient["id"], vitals={"weight_kg": 74}, recorded_at=now - DAY)
    alert = check_response(body, "cls-weight", "urgent")  # 74 / 70 = +5.7 %, not +23 % over 60
    assert holds(alert["evidence"], 70)
    assert "70.0 kg" in alert["detail"]
    assert "74.0 kg" in alert["detail"]

    body = world.report(
        patient["id"], vitals={"weight_kg": 77.5}, recorded_at=now - timedelta(minutes=1)
    )
    alerts = by_rule(body["alerts"])
    assert alerts["cls-weight"]["severity"] == "emergency"  # +10.7 %: the episode rises
    assert alerts["cls-weight"]["occurrences"] == 2
    assert body["advice"]["severity"] == "emergency"


def test_baseline_weight_is_taken_in_the_aldesleukin_therapy_not_an_older_one(
    world: World,
) -> None:
    """A patient long on interferon (which costs weight) starts aldesleukin: the capillary-leak
    weight rule measures gain from the first weight of the aldesleukin therapy, not from a
    weight reported months earlier under interferon."""
    patient = world.patient()  # no baseline_weight_kg
    world.therapy(patient["id"], IFN, days_ago(200))
    world.therapy(patient["id"], "aldesleukin", days_ago(3))
    now = datetime.now(UTC)
    world.report(patient["id"], vitals={"weight_kg": 80}, recorded_at=now - 100 * DAY)
    world.report(patient["id"], vitals={"weight_kg": 70}, recorded_at=now - 2 * DAY)
    body = world.report(
        patient["id"], vitals={"weight_kg": 74}, recorded_at=now - timedelta(minutes=1)
    )
    alert = check_response(body, "cls-weight", "urgent")  # +5.7 % over 70 kg
    assert holds(alert["evidence"], 70)


def test_baseline_weight_still_counts_just_after_the_course_ended(world: World) -> None:
    """Aldesleukin rules apply 30 days after the last dose; capillary-leak weight gain peaks at
    the end of a course. The baseline is the first weight of that (just ended) therapy."""
    patient = world.patient()  # no baseline_weight_kg
    world.therapy(patient["id"], "aldesleukin", days_ago(7), days_ago(2))
    now = datetime.now(UTC)
    world.report(patient["id"], vitals={"weight_kg": 70}, recorded_at=now - 6 * DAY)
    body = world.report(
        patient["id"], vitals={"weight_kg": 75.6}, recorded_at=now - timedelta(minutes=1)
    )
    alert = check_response(body, "cls-weight", "urgent")  # +8 % over 70 kg
    assert holds(alert["evidence"], 70)


def test_pre_dose_weight_wins_over_the_recorded_baseline(world: World) -> None:
    """CLINICAL.md: the latest weight in the 7 days before the course's first day comes first;
    a weight reported on the eve of the first aldesleukin dose is the baseline."""
    patient = world.patient(baseline_weight_kg=70)
    world.therapy(patient["id"], "aldesleukin", days_ago(3))
    now = datetime.now(UTC)
    world.report(patient["id"], vitals={"weight_kg": 69}, recorded_at=now - 6 * DAY)
    eve = datetime.combine(now.date() - 4 * DAY, time(20, 0), UTC)
    assert world.report(patient["id"], vitals={"weight_kg": 72}, recorded_at=eve)["alerts"] == []
    body = world.report(patient["id"], vitals={"weight_kg": 76})
    alert = check_response(body, "cls-weight", "urgent")  # +5.6 % over 72, not +8.6 % over 70
    assert alert["evidence"]["baseline"]["source"] == "pre_dose"
    assert alert["evidence"]["baseline_weight_kg"] == 72
    day = eve.date().isoformat()
    assert f"baseline 72.0 kg reported {day}, before the course" in alert["detail"]


def test_a_second_drug_added_mid_course_does_not_move_the_baseline(world: World) -> None:
    patient = world.patient()
    world.therapy(patient["id"], "aldesleukin", days_ago(5))
    now = datetime.now(UTC)
    world.report(patient["id"], vitals={"weight_kg": 70}, recorded_at=now - 6 * DAY)
    world.report(patient["id"], vitals={"weight_kg": 73}, recorded_at=now - 2 * DAY)
    # bevacizumab added yesterday: the 73 kg before it is not the aldesleukin baseline
    world.therapy(patient["id"], "bevacizumab", days_ago(1))
    body = world.report(patient["id"], vitals={"weight_kg": 77.1})
    alert = check_response(body, "cls-weight", "emergency")  # +10.1 % over 70
    assert alert["evidence"]["baseline"]["weight_kg"] == 70
    assert alert["evidence"]["baseline"]["source"] == "pre_dose"


def test_the_baseline_is_found_among_many_weights(world: World) -> None:
    """Of several weights in the week before the course, the latest; of several in the course,
    the first; weights before that week count for nothing."""
    pre_dosed, weighed_in_course = world.patient(), world.patient()  # no baseline_weight_kg
    for patient in (pre_dosed, weighed_in_course):
        world.therapy(patient["id"], "aldesleukin", days_ago(3))
    now = datetime.now(UTC)
    for kg, days in ((60, 12), (66, 9), (68, 5), (70, 2), (71, 1)):
        world.report(pre_dosed["id"], vitals={"weight_kg": kg}, recorded_at=now - days * DAY)
    body = world.report(pre_dosed["id"], vitals={"weight_kg": 73})
    alert = check_response(body, "cls-weight", "urgent")  # +7.4 % over 68
    assert alert["evidence"]["baseline"]["source"] == "pre_dose"
    assert alert["evidence"]["baseline_weight_kg"] == 68

    for kg, hours in ((60, 12 * 24), (70, 60), (71, 40), (72, 20), (72.5, 10)):
        at = now - timedelta(hours=hours)
        world.report(weighed_in_course["id"], vitals={"weight_kg": kg}, recorded_at=at)
    body = world.report(weighed_in_course["id"], vitals={"weight_kg": 75.6})
    alert = check_response(body, "cls-weight", "urgent")  # +8 % over 70, +4.3 % over 72.5
    assert alert["evidence"]["baseline"]["source"] == "first_in_course"
    assert alert["evidence"]["baseline_weight_kg"] == 70


def test_recorded_baseline_weight_wins_over_first_report(world: World) -> None:
    patient = world.patient(drugs=("aldesleukin",), baseline_weight_kg=80)
    now = datetime.now(UTC)
    world.report(patient["id"], vitals={"weight_kg": 70}, recorded_at=now - 2 * DAY)
    body = world.report(
        patient["id"], vitals={"weight_kg": 74}, recorded_at=now - timedelta(minutes=1)
    )
    assert body["alerts"] == []  # below the recorded baseline of 80 kg


def test_weight_without_any_baseline_raises_nothing(world: World) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    body = world.report(patient["id"], vitals={"weight_kg": 90})
    assert body["alerts"] == []


# --- UKONS combining rule -----------------------------------------------------------------------


def test_two_distinct_urgent_findings_escalate_to_emergency(world: World) -> None:
    patient = world.patient()
    body = world.report(patient["id"], symptoms={"nausea": 3}, vitals={"temperature_c": 38.5})
    alerts = by_rule(body["alerts"])
    assert alerts["fever"]["severity"] == "urgent"
    assert alerts["severe-symptom"]["severity"] == "urgent"
    escalation = check_response(body, "multiple-urgent", "emergency")
    assert body["advice"]["severity"] == "emergency"
    assert "38.5 °C" in escalation["detail"]
    assert "grade 3" in escalation["detail"]
    assert holds(escalation["evidence"], "temperature_c", 38.5)


def test_urgent_findings_from_different_rules_escalate(world: World) -> None:
    patient = world.patient(drugs=("aldesleukin",))
    body = world.report(patient["id"], symptoms={"decreased_urination": 2, "palpitations": 2})
    alerts = by_rule(body["alerts"])
    assert alerts["il2-urine"]["severity"] == "urgent"
    assert alerts["il2-heart"]["severity"] == "urgent"
    check_response(body, "multiple-urgent", "emergency")


def test_fever_grade_3_alone_does_not_escalate(world: World) -> None:
    patient = world.patient()
    body = world.report(patient["id"], symptoms={"fever": 3})
    assert {a["rule_id"] for a in body["alerts"]} == {"fever", "severe-symptom"}
    assert body["advice"]["severity"] == "urgent"


def test_fever_grade_3_with_a_fever_reading_is_still_one_finding(world: World) -> None:
    """A measured 38.5 °C and "severe fever" describe one problem (fever), as fever grade 3
    alone does: it is urgent, not the UKONS two-amber emergency."""
    patient = world.patient()
    body = world.report(patient["id"], symptoms={"fever": 3}, vitals={"temperature_c": 38.5})
    assert {a["rule_id"] for a in body["alerts"]} == {"fever", "severe-symptom"}, body["alerts"]
    assert body["advice"]["severity"] == "urgent"


def test_one_urgent_finding_does_not_escalate(world: World) -> None:
    patient = world.patient()
    body = world.report(patient["id"], vitals={"spo2": 91})
    assert {a["rule_id"] for a in body["alerts"]} == {"hypoxia"}
    assert body["advice"]["severity"] == "urgent"


def test_two_different_severe_symptoms_escalate(world: World) -> None:
    """UKONS rates each symptom; two amber (severe) symptoms in one report make red.

    Nausea grade 3 and diarrhea grade 3 are two distinct urgent findings of CLINICAL.md's
    combining rule, even though one rule (severe-symptom) catches both.
    """
    patient = world.patient()
    body = world.report(patient["id"], symptoms={"nausea": 3, "diarrhea": 3})
    assert by_rule(body["alerts"])["severe-symptom"]["severity"] == "urgent"
    assert body["advice"]["severity"] == "emergency", body["alerts"]


# --- expected mild effects raise nothing --------------------------------------------------------


QUIET = [
    pytest.param(
        (IFN,),
        {"fever": 1, "chills": 2, "fatigue": 2, "headache": 2, "muscle_aches": 2},
        NORMAL | {"temperature_c": 37.6},
        id="interferon-flu-like",
    ),
    pytest.param(("aldesleukin",), {"nausea": 2, "diarrhea": 1}, NORMAL, id="aldesleukin-gi"),
    pytest.param(
        ("aldesleukin",),
        {c: 0 for c in ("fever", "chills", "swelling", "confusion", "chest_pain")},
        {},
        id="grade-0-im-fine",
    ),
    pytest.param((), {"nausea": 0}, {}, id="grade-0-no-drug"),
    pytest.param(("bevacizumab",), {}, NORMAL, id="vitals-only-normal"),
    pytest.param(("filgrastim",), {"muscle_aches": 2, "abdominal_pain": 1}, {}, id="gcsf-bone"),
]


@pytest.mark.parametrize(("drugs", "symptoms", "vitals"), QUIET)
def test_expected_mild_effects_raise_nothing(
    world: World,
    client: Any,
    tokens: Any,
    drugs: tuple[str, ...],
    symptoms: dict[str, int],
    vitals: dict[str, float],
) -> None:
    patient = world.patient(drugs=drugs, baseline_weight_kg=70)
    body = world.report(patient["id"], symptoms=symptoms, vitals=vitals or None)
    assert body["alerts"] == []
    assert body["advice"] is None
    listed = client.get("/v1/alerts", headers=tokens.admin()).json()["items"]
    assert listed == []


def test_thresholds_are_not_crossed_just_below(world: World) -> None:
    patient = world.patient(drugs=("aldesleukin", "bevacizumab"), baseline_weight_kg=70)
    body = world.report(
        patient["id"],
        vitals={
            "temperature_c": 37.9,
            "spo2": 92,
            "systolic_bp": 159,
            "diastolic_bp": 99,
            "heart_rate": 130,
            "weight_kg": 73.4,
        },
        symptoms={"decreased_urination": 1, "confusion": 1, "palpitations": 1, "swelling": 1},
    )
    # confusion 1 with blood pressure below the hypertension thresholds raises nothing either
    assert body["alerts"] == [], body["alerts"]
    assert body["advice"] is None


def test_self_harm_thoughts_raise_an_alert_long_after_an_interferon(world: World) -> None:
    """self-harm has no watch window: a year after the last interferon dose it is still urgent."""
    patient = world.patient()
    world.therapy(patient["id"], IFN, days_ago(500), days_ago(365))
    body = world.report(patient["id"], symptoms={"self_harm_thoughts": 1})
    assert {a["rule_id"] for a in body["alerts"]} == {"self-harm"}
    check_response(body, "self-harm", "urgent")
