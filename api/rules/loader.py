"""Load the rules file (policy and rules) shipped in ``api/rules/data/rules.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from api.rules.definitions import Policy, RuleDef

DEFAULT_PATH = Path(__file__).parent / "data" / "rules.yaml"


class RulesFileError(ValueError):
    """The rules file cannot be read or is invalid; the message says where."""


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Policy
    rules: list[RuleDef]

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesFile:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id '{rule.id}'")
            seen.add(rule.id)
        if self.policy.escalation.rule_id in seen:
            raise ValueError(
                f"escalation rule id '{self.policy.escalation.rule_id}' is also a rule's id"
            )
        return self


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """'rule 'cls-weight': branches.0.when' for errors inside a rule, else the dotted path."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        raw = data["rules"][loc[1]] if isinstance(data.get("rules"), list) else None
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        name = f"rule '{rule_id}'" if rule_id else f"rule #{loc[1]}"
        rest = ".".join(str(p) for p in loc[2:])
        return f"{name}: {rest}" if rest else name
    return ".".join(str(p) for p in loc) or "file"


def parse_rules(data: Any, origin: str = "rules") -> RulesFile:
    """Validate already-parsed YAML/JSON data; errors name the rule id."""
    if not isinstance(data, dict):
        raise RulesFileError(f"{origin}: expected a mapping with 'policy' and 'rules'")
    try:
        return RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_where(err['loc'], data)}: {err['msg']}" for err in exc.errors()]
        raise RulesFileError(f"{origin}: " + "; ".join(problems)) from exc


def load_rules_file(path: str | Path | None = None) -> RulesFile:
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RulesFileError(f"{path}: not valid YAML: {exc}") from exc
    return parse_rules(data, origin=str(path))
