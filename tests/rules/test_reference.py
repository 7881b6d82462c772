"""The rules reference in docs/ is generated from the rules file and kept in step with it."""

from __future__ import annotations

from api.catalog.shipped import load_shipped_catalog
from api.rules.reference import OUTPUT, render


def test_the_committed_reference_is_up_to_date() -> None:
    assert OUTPUT.read_text(encoding="utf-8") == render(), (
        "docs/rules.md is stale: run `python -m api.rules.reference --write`"
    )


def test_every_rule_is_described_with_its_source_and_every_branch() -> None:
    text = render()
    for rule in load_shipped_catalog().rules:
        section = text.split(f"### {rule.id}\n", 1)[1].split("\n### ", 1)[0]
        assert rule.title in section
        assert section.count("- **") == len(rule.branches)
        assert "Source: " + " ".join(rule.source.split()) in section
        if rule.rationale:
            assert "Choice made: " in section


def test_conditions_are_said_in_words() -> None:
    text = render()
    assert "- **emergency** when Systolic blood pressure < 90 mm Hg" in text
    assert "any symptom ≥ 4 (very severe) except Hair thinning" in text
    assert "Temperature ≥ 38.0 °C" in text
    assert "a symptom ≥ 2 grades above the lowest grade reported for it in the previous 14" in text
    assert "where it is a serious side effect of one of the patient's drugs" in text
