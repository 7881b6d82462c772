"""Rule definitions as data: the shape clinical teams review and the engine evaluates.

A rule is one alert episode type (``id``) with one or more branches; each branch is a condition
tree and the severity it raises. When several branches match, the highest severity wins.

Condition grammar (one key family per node):

* ``{"all": [cond, ...]}`` / ``{"any": [cond, ...]}``
* ``{"symptom": CODE, "gte": n}`` — grade of CODE in this report (absent → false). Comparators:
  ``gte``, ``gt``, ``lte``, ``lt``, ``eq`` (exactly one per leaf). CODE may be ``"*"`` (any
  symptom in the report) or ``"@serious"`` (any symptom that is ``serious`` for one of the
  patient's in-scope drugs). ``"except": [CODE, ...]`` leaves symptoms out of ``"*"``;
  ``"serious": true`` counts the symptom only where it is ``serious`` for one of the patient's
  in-scope drugs (``{"symptom": "*", "serious": true}`` is ``"@serious"``).
* ``{"vital": NAME, "lt": x}`` — a vital of this report (absent → false).
* ``{"metric": "weight_gain_pct", "gte": 5}`` — weight change from the baseline weight of the
  course of the rule's drug, in percent (see ``engine.course_baseline``).
* ``{"worsening": {"by": 2, "within_days": 14}}`` — a symptom at least ``by`` grades above the
  lowest grade the patient reported for it in the previous ``within_days`` days.
* ``{"on_drug": [CODE, ...]}`` — the patient is on one of these drugs (active, or ended within the
  rule's watch window).
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.types import NO_NUL


class Severity(StrEnum):
    """How soon an alert needs a clinician, least severe first."""

    # Members are strings: they equal, store and serialise as these words, as before the enum.
    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        """1 (routine) to 3 (emergency): higher is more severe."""
        return SEVERITY_RANK[self]


# Keyed by the members, which also finds a plain string read back from the database ("urgent").
SEVERITY_RANK: dict[str, int] = {s: rank for rank, s in enumerate(Severity, start=1)}

Comparator = Literal["gte", "gt", "lte", "lt", "eq"]
VITALS = ("temperature_c", "systolic_bp", "diastolic_bp", "heart_rate", "weight_kg", "spo2")
METRICS = ("weight_gain_pct",)
CODE_PATTERN = r"^[a-z][a-z0-9_]*$"
RULE_ID_PATTERN = r"^[a-z][a-z0-9-]*$"


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Compare(_Node):
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None
    eq: float | None = None

    @model_validator(mode="after")
    def _one_comparator(self) -> _Compare:
        given = [op for op in ("gte", "gt", "lte", "lt", "eq") if getattr(self, op) is not None]
        if len(given) != 1:
            raise ValueError("a comparison needs exactly one of gte, gt, lte, lt, eq")
        return self

    # Cached: the engine asks for both on every leaf of every report (the model is frozen).
    @cached_property
    def op(self) -> Comparator:
        for op in ("gte", "gt", "lte", "lt", "eq"):
            if getattr(self, op) is not None:
                return op  # type: ignore[return-value]
        raise AssertionError("validated")

    @cached_property
    def value(self) -> float:
        return float(getattr(self, self.op))


class SymptomCond(_Compare):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    symptom: str = Field(pattern=r"^([a-z][a-z0-9_]*|\*|@serious)$")
    # None when not given, so that rules without them keep their stored form (and version).
    except_: list[Annotated[str, Field(pattern=CODE_PATTERN)]] | None = Field(
        default=None, alias="except", max_length=50
    )
    serious: bool | None = None

    @model_validator(mode="after")
    def _grade_range(self) -> SymptomCond:
        if not 0 <= self.value <= 4:
            raise ValueError("symptom grades are 0-4")
        if self.except_ and self.symptom not in ("*", "@serious"):
            raise ValueError('\'except\' only goes with "*" or "@serious"')
        return self


class VitalCond(_Compare):
    vital: Literal[
        "temperature_c", "systolic_bp", "diastolic_bp", "heart_rate", "weight_kg", "spo2"
    ]


class MetricCond(_Compare):
    metric: Literal["weight_gain_pct"]


class Worsening(_Node):
    by: int = Field(ge=1, le=4)
    within_days: int = Field(ge=1, le=365)


class WorseningCond(_Node):
    worsening: Worsening


class OnDrugCond(_Node):
    on_drug: list[Annotated[str, Field(pattern=CODE_PATTERN)]] = Field(min_length=1)


class AllCond(_Node):
    all: list[Condition] = Field(min_length=1)


class AnyCond(_Node):
    any: list[Condition] = Field(min_length=1)


Condition = Union[  # noqa: UP007 - recursive alias needs the Union spelling
    AllCond, AnyCond, SymptomCond, VitalCond, MetricCond, WorseningCond, OnDrugCond
]
AllCond.model_rebuild()
AnyCond.model_rebuild()


class Branch(_Node):
    severity: Severity
    when: Condition
    # Appended to the generated detail in brackets, e.g. "capillary leak sign on aldesleukin".
    note: str | None = Field(default=None, max_length=300, pattern=NO_NUL)


class RuleScope(_Node):
    """Global rules only: which patients they apply to. Empty scope means every patient."""

    drugs: list[Annotated[str, Field(pattern=CODE_PATTERN)]] = Field(default_factory=list)
    drug_classes: list[str] = Field(default_factory=list)


class RuleDef(_Node):
    id: str = Field(pattern=RULE_ID_PATTERN, max_length=64)
    title: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    # Drug-owned rules (set by the loader / PUT /v1/drugs/{code}) apply to that drug only;
    # global rules (drug None) apply according to ``scope``.
    drug: str | None = Field(default=None, pattern=CODE_PATTERN)
    scope: RuleScope = Field(default_factory=RuleScope)
    # Days after a therapy ended during which the drug still counts as "on" for this rule.
    watch_days: int = Field(default=30, ge=0, le=3650)
    follow_up_minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 14)
    branches: list[Branch] = Field(min_length=1)
    source: str = Field(min_length=1, max_length=500, pattern=NO_NUL)
    # Where CLINICAL.md was silent: the conservative choice made, in words.
    rationale: str | None = Field(default=None, max_length=1000, pattern=NO_NUL)
    # Rules that say the same thing more precisely: when one of them raises a finding at least
    # as severe on the same report, this rule raises none (one alert per problem, not two).
    yields_to: list[Annotated[str, Field(pattern=RULE_ID_PATTERN)]] | None = Field(
        default=None, max_length=20
    )

    @model_validator(mode="after")
    def _scope_only_for_global(self) -> RuleDef:
        if self.drug is not None and (self.scope.drugs or self.scope.drug_classes):
            raise ValueError("a drug-owned rule applies to its drug; it takes no scope")
        return self


class SeverityPolicy(_Node):
    follow_up_minutes: int = Field(ge=1)
    advice: str = Field(min_length=1, max_length=500, pattern=NO_NUL)
    # Time to acknowledge an open alert before it is escalated (API.md "Escalation"); None: the
    # default of api/notifications/escalation.py. ACK_WINDOW_*_S settings override both.
    ack_window_minutes: int | None = Field(default=None, ge=1)


class Escalation(_Node):
    """UKONS: two or more distinct urgent findings in one report escalate to emergency."""

    rule_id: str = Field(pattern=RULE_ID_PATTERN)
    title: str
    min_urgent: int = Field(ge=2)
    severity: Severity
    source: str
    # Findings are distinct when they rest on different problems. Evidence that describes one
    # problem (a measured temperature and reported fever) is grouped here, written as causes
    # such as "vital:temperature_c", "symptom:fever", "metric:weight_gain_pct".
    same_problem: list[
        list[Annotated[str, Field(pattern=r"^(symptom|vital|metric):[a-z0-9_]+$")]]
    ] = Field(default_factory=list)
    rationale: str | None = Field(default=None, max_length=1000)


class Policy(_Node):
    severities: dict[Severity, SeverityPolicy]
    escalation: Escalation

    @field_validator("severities")
    @classmethod
    def _all_tiers(cls, value: dict[Severity, SeverityPolicy]) -> dict[Severity, SeverityPolicy]:
        missing = sorted(s.value for s in Severity if s not in value)
        if missing:
            raise ValueError(f"missing severity tiers: {missing}")
        return value
