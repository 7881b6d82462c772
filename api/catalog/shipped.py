"""The catalog shipped inside the package, loaded and validated as a whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError

from api.catalog.schemas import DrugData, SymptomData, VitalData
from api.rules.definitions import Policy, RuleDef
from api.rules.engine import referenced_drugs, referenced_symptoms
from api.rules.loader import load_rules_file

DATA = Path(__file__).parent / "data"


T = TypeVar("T")


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class ShippedCatalog:
    symptoms: list[SymptomData]
    vitals: list[VitalData]
    drugs: list[DrugData]
    policy: Policy
    rules: list[RuleDef]


def _load_list(name: str, model: type[T]) -> list[T]:
    raw = yaml.safe_load((DATA / name).read_text(encoding="utf-8"))
    try:
        return TypeAdapter(list[model]).validate_python(raw)  # type: ignore[valid-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CatalogError(f"{name}: {where}: {first['msg']}") from exc


def rule_problems(rules: list[RuleDef], symptom_codes: set[str], drug_codes: set[str]) -> list[str]:
    """Cross-references a rule set must satisfy: known symptoms and drugs, unique ids."""
    problems: list[str] = []
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            problems.append(f"rule '{rule.id}': the id is used twice")
        seen.add(rule.id)
        if unknown := sorted(referenced_symptoms(rule) - symptom_codes):
            problems.append(f"rule '{rule.id}': unknown symptom codes {unknown}")
        if unknown := sorted(referenced_drugs(rule) - drug_codes):
            problems.append(f"rule '{rule.id}': unknown drug codes {unknown}")
    return problems


def load_shipped_catalog() -> ShippedCatalog:
    symptoms = _load_list("symptoms.yaml", SymptomData)
    vitals = _load_list("vitals.yaml", VitalData)
    drugs = _load_list("drugs.yaml", DrugData)
    rules_file = load_rules_file()
    symptom_codes = {s.code for s in symptoms}
    drug_codes = {d.code for d in drugs}
    problems = []
    for drug in drugs:
        for effect in drug.side_effects:
            if effect.symptom_code not in symptom_codes:
                problems.append(f"drug '{drug.code}': unknown symptom '{effect.symptom_code}'")
    problems += rule_problems(rules_file.rules, symptom_codes, drug_codes)
    if problems:
        raise CatalogError("; ".join(problems))
    return ShippedCatalog(symptoms, vitals, drugs, rules_file.policy, rules_file.rules)
