"""The rules reference for clinical reviewers, generated from the shipped rules file.

    python -m api.rules.reference            # print it
    python -m api.rules.reference --write    # write docs/rules.md

tests/rules/test_reference.py fails when the committed docs/rules.md is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from api.catalog.shipped import ShippedCatalog, load_shipped_catalog
from api.rules.definitions import (
    AllCond,
    AnyCond,
    Condition,
    MetricCond,
    OnDrugCond,
    RuleDef,
    Severity,
    SymptomCond,
    VitalCond,
    WorseningCond,
)

OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
SIGNS = {"gte": "≥", "gt": ">", "lte": "≤", "lt": "<", "eq": "="}
GRADES = ("none", "mild", "moderate", "severe", "very severe")
SEVERITY_ORDER = (Severity.EMERGENCY, Severity.URGENT, Severity.ROUTINE)


class _Words:
    def __init__(self, catalog: ShippedCatalog) -> None:
        self.symptoms = {s.code: s.name for s in catalog.symptoms}
        self.vitals = {v.name: (v.label, v.unit) for v in catalog.vitals}
        self.drugs = {d.code: d.name for d in catalog.drugs}

    def drug(self, code: str) -> str:
        return self.drugs.get(code, code)

    def condition(self, cond: Condition, nested: bool = False) -> str:
        if isinstance(cond, AllCond | AnyCond):
            children = cond.all if isinstance(cond, AllCond) else cond.any
            joiner = " and " if isinstance(cond, AllCond) else " or "
            text = joiner.join(self.condition(c, nested=True) for c in children)
            return f"({text})" if nested and len(children) > 1 else text
        if isinstance(cond, SymptomCond):
            grade = int(cond.value)
            threshold = f"{SIGNS[cond.op]} {grade} ({GRADES[grade]})"
            if cond.symptom == "*":
                subject = "any symptom"
            elif cond.symptom == "@serious":
                subject = "a symptom that is serious for one of the patient's drugs"
            else:
                subject = self.symptoms.get(cond.symptom, cond.symptom)
            text = f"{subject} {threshold}"
            if cond.except_:
                text += " except " + ", ".join(self.symptoms.get(c, c) for c in cond.except_)
            if cond.serious and cond.symptom != "@serious":
                text += ", where it is a serious side effect of one of the patient's drugs"
            return text
        if isinstance(cond, VitalCond):
            label, unit = self.vitals.get(cond.vital, (cond.vital, ""))
            value = f"{cond.value:.1f}" if cond.vital == "temperature_c" else f"{cond.value:g}"
            return f"{label} {SIGNS[cond.op]} {value} {unit}".rstrip()
        if isinstance(cond, MetricCond):
            return (
                f"weight {SIGNS[cond.op]} {cond.value:g} % above the baseline of the drug's course"
            )
        if isinstance(cond, WorseningCond):
            w = cond.worsening
            return (
                f"a symptom ≥ {w.by} grades above the lowest grade reported for it in the "
                f"previous {w.within_days} days"
            )
        if isinstance(cond, OnDrugCond):
            return "on " + " or ".join(self.drug(c) for c in cond.on_drug)
        raise TypeError(type(cond).__name__)  # pragma: no cover

    def scope(self, rule: RuleDef) -> str:
        window = f"active, or ended at most {rule.watch_days} days before the report"
        if rule.drug is not None:
            return f"patients on {self.drug(rule.drug)} ({window})"
        names = [self.drug(c) for c in rule.scope.drugs]
        names += [f"any drug of class `{c}`" for c in rule.scope.drug_classes]
        if names:
            return f"patients on {' or '.join(names)} ({window})"
        return "every patient, whatever the drug"


def render(catalog: ShippedCatalog | None = None) -> str:
    catalog = catalog or load_shipped_catalog()
    words = _Words(catalog)
    policy = catalog.policy
    lines = [
        "# Alert rules reference",
        "",
        "Generated from `api/rules/data/rules.yaml` by `python -m api.rules.reference --write`;",
        "do not edit by hand (a test fails when this file is stale). Clinical sources and the",
        "conservative choices made where the clinical specification is silent are listed with",
        "each rule.",
        "",
        "## Severity tiers",
        "",
        "| severity | follow-up window | advice shown to the patient at once |",
        "|---|---|---|",
    ]
    for name in SEVERITY_ORDER:
        tier = policy.severities[name]
        hours = tier.follow_up_minutes / 60
        lines.append(f"| {name} | {hours:g} h | {tier.advice} |")
    esc = policy.escalation
    groups = "; ".join(" / ".join(g) for g in esc.same_problem)
    lines += [
        "",
        f"## Escalation: `{esc.rule_id}`",
        "",
        f"{esc.title}: {esc.min_urgent} or more distinct urgent problems in one report raise "
        f"an alert of severity **{esc.severity}**. Findings about one problem count once: "
        f"{groups}.",
        "",
        f"Source: {esc.source}",
        "",
    ]
    if esc.rationale:
        lines += [f"Choice made: {esc.rationale}", ""]
    lines += ["## Rules", "", "| rule | applies to | severities |", "|---|---|---|"]
    for rule in catalog.rules:
        severities = sorted({b.severity for b in rule.branches}, key=SEVERITY_ORDER.index)
        anchor = rule.id
        lines.append(
            f"| [`{rule.id}`](#{anchor}) {rule.title} | {words.scope(rule)} | "
            f"{', '.join(severities)} |"
        )
    lines.append("")
    for rule in catalog.rules:
        lines += [f"### {rule.id}", "", f"**{rule.title}** — applies to {words.scope(rule)}.", ""]
        lines.append("Raises (when several branches match, the most severe wins):")
        lines.append("")
        for branch in rule.branches:
            note = f" — {branch.note}" if branch.note else ""
            lines.append(f"- **{branch.severity}** when {words.condition(branch.when)}{note}")
        lines.append("")
        if rule.yields_to:
            lines += [
                "Raises nothing where "
                + " or ".join(f"`{r}`" for r in rule.yields_to)
                + " raises an alert at least as severe on the same report.",
                "",
            ]
        lines += [f"Source: {' '.join(rule.source.split())}", ""]
        if rule.rationale:
            lines += [f"Choice made: {' '.join(rule.rationale.split())}", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
