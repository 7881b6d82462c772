from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.rules.definitions import CODE_PATTERN, VITALS, RuleDef
from api.types import NO_NUL, PLAIN_NAME

Code = Annotated[str, Field(pattern=CODE_PATTERN, max_length=64)]
GRADE_KEYS = ("0", "1", "2", "3", "4")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SymptomData(_Strict):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    question: str = Field(min_length=1, max_length=1000)
    category: str = Field(min_length=1, max_length=64)
    grades: dict[str, str]
    ctcae_term: str = Field(min_length=1, max_length=200)
    snomed: str | None = Field(default=None, pattern=r"^\d{6,18}$")

    @field_validator("grades", mode="before")
    @classmethod
    def _grade_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {str(k): v for k, v in value.items()}
            if sorted(value) != list(GRADE_KEYS):
                raise ValueError("grades must label exactly 0, 1, 2, 3 and 4")
        return value


class VitalData(_Strict):
    name: Literal[VITALS]  # type: ignore[valid-type]
    label: str
    unit: str
    loinc: str = Field(pattern=r"^\d{1,7}-\d$")
    min: float
    max: float


class SideEffect(_Strict):
    symptom_code: Code
    frequency: Literal["common", "serious"]
    note: str | None = Field(default=None, max_length=500, pattern=NO_NUL)


class DrugBody(_Strict):
    """A drug's entry as PUT by an administrator (the code comes from the path)."""

    name: str = Field(min_length=1, max_length=200, pattern=PLAIN_NAME)
    brand_names: list[Annotated[str, Field(min_length=1, max_length=100, pattern=PLAIN_NAME)]] = (
        Field(default_factory=list, max_length=20)
    )
    drug_class: Code
    route: str = Field(min_length=1, max_length=64, pattern=PLAIN_NAME)
    vitals: list[Literal[VITALS]] = Field(default_factory=list)  # type: ignore[valid-type]
    side_effects: list[SideEffect] = Field(default_factory=list, max_length=100)
    rules: list[RuleDef] = Field(default_factory=list, max_length=100)


class DrugData(DrugBody):
    """A drug's entry in the shipped catalog (its rules live in the rules file)."""

    code: Code
    rules: list[RuleDef] = Field(default_factory=list, max_length=0)


class SymptomRead(BaseModel):
    code: str
    name: str
    question: str
    category: str
    grades: dict[str, str]
    ctcae_term: str
    snomed: str | None


class DrugRead(BaseModel):
    code: str
    name: str
    brand_names: list[str]
    drug_class: str
    route: str
    vitals: list[str]


class RuleView(BaseModel):
    id: str
    version: int
    title: str
    drug_code: str | None
    severities: list[str]
    definition: dict[str, Any]


class DrugDetail(DrugRead):
    side_effects: list[SideEffect]
    rules: list[RuleView]
