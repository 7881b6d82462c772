from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Delete, Row, ScalarSelect, Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.catalog.models import (
    CatalogSetting,
    Drug,
    DrugSideEffect,
    Rule,
    RuleVersion,
    Symptom,
    Vital,
)
from api.catalog.schemas import (
    DrugBody,
    DrugDetail,
    DrugRead,
    RuleView,
    SideEffect,
    SymptomRead,
)
from api.catalog.shipped import rule_problems
from api.errors import Invalid, NotFound
from api.rules.context import baseline_drugs, history_window
from api.rules.definitions import Policy, RuleDef
from api.rules.engine import VersionedRule, rule_applies_to

POLICY_KEY = "policy"
# Changed on every catalog write; workers compare it to reuse their parsed copy of the rules.
REVISION_KEY = "revision"


def content_hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def rule_json(rule: RuleDef) -> dict[str, Any]:
    return rule.model_dump(mode="json", exclude_none=True)


async def list_symptoms(session: AsyncSession) -> list[SymptomRead]:
    rows = await session.scalars(select(Symptom).order_by(Symptom.position))
    return [SymptomRead.model_validate(r, from_attributes=True) for r in rows]


async def list_vitals(session: AsyncSession) -> list[Vital]:
    return list(await session.scalars(select(Vital).order_by(Vital.position)))


async def list_drugs(session: AsyncSession) -> list[DrugRead]:
    rows = await session.scalars(select(Drug).order_by(Drug.code))
    return [DrugRead.model_validate(r, from_attributes=True) for r in rows]


async def get_drug(session: AsyncSession, code: str) -> DrugDetail:
    drug = await session.get(Drug, code)
    if drug is None:
        raise NotFound(f"No drug with code '{code}'")
    effects = await session.scalars(
        select(DrugSideEffect)
        .where(DrugSideEffect.drug_code == code)
        .order_by(DrugSideEffect.position)
    )
    rules = [
        RuleView(
            id=v.rule.id,
            version=v.version,
            title=v.rule.title,
            drug_code=v.rule.drug,
            severities=sorted({b.severity for b in v.rule.branches}),
            definition=rule_json(v.rule),
        )
        for v in await current_rules(session)
        if applies_to_drug(v.rule, drug)
    ]
    return DrugDetail(
        **DrugRead.model_validate(drug, from_attributes=True).model_dump(),
        side_effects=[
            SideEffect(symptom_code=e.symptom_code, frequency=e.frequency, note=e.note)  # type: ignore[arg-type]
            for e in effects
        ],
        rules=rules,
    )


def applies_to_drug(rule: RuleDef, drug: Drug) -> bool:
    return rule_applies_to(rule, drug.code, drug.drug_class)


async def current_rules(session: AsyncSession) -> list[VersionedRule]:
    rows = await session.execute(
        select(RuleVersion.definition, RuleVersion.version)
        .join(
            Rule, (Rule.id == RuleVersion.rule_id) & (Rule.current_version == RuleVersion.version)
        )
        .where(Rule.active)
        .order_by(Rule.id)
    )
    return [VersionedRule(RuleDef.model_validate(d), v) for d, v in rows]


async def get_policy(session: AsyncSession) -> Policy:
    setting = await session.get(CatalogSetting, POLICY_KEY)
    if setting is None:
        raise RuntimeError("the catalog policy is missing: run `alembic upgrade head`")
    return Policy.model_validate(setting.value)


def rule_lookup(rule_id: str) -> Select[Rule, str | None, int | None]:
    """A rule's row, with its current version's content hash and its latest version number."""
    current_hash = (
        select(RuleVersion.content_hash)
        .where(RuleVersion.rule_id == Rule.id, RuleVersion.version == Rule.current_version)
        .scalar_subquery()
    )
    latest = (
        select(func.max(RuleVersion.version))
        .where(RuleVersion.rule_id == Rule.id)
        .scalar_subquery()
    )
    return select(Rule, current_hash, latest).where(Rule.id == rule_id)


def rule_rows(
    rule: RuleDef, found: Row[Rule, str | None, int | None] | None, *, shipped: bool = False
) -> tuple[Rule, list[Rule | RuleVersion]]:
    """``rule`` made the current version of its id, given what ``rule_lookup`` found: the
    rule's row (changed in place when it exists) and the rows to add."""
    data = rule_json(rule)
    digest = content_hash(data)
    new: list[Rule | RuleVersion] = []
    if found is None:
        row = Rule(id=rule.id, drug_code=rule.drug, current_version=1, active=True)
        new += [row, RuleVersion(rule_id=rule.id, version=1, definition=data, content_hash=digest)]
    else:
        row, current_hash, latest = found
        if current_hash != digest:
            row.current_version = (latest or 0) + 1
            new.append(
                RuleVersion(
                    rule_id=rule.id,
                    version=row.current_version,
                    definition=data,
                    content_hash=digest,
                )
            )
        row.active = True
        row.drug_code = rule.drug
    if shipped:
        row.shipped_hash = digest
    return row, new


async def store_rule(session: AsyncSession, rule: RuleDef, *, shipped: bool = False) -> int:
    """Make ``rule`` the current version of its id; a changed definition gets a new version."""
    found = (await session.execute(rule_lookup(rule.id))).one_or_none()
    row, new = rule_rows(rule, found, shipped=shipped)
    session.add_all(new)
    await session.flush()
    return row.current_version


def clear_side_effects(code: str) -> Delete:
    return delete(DrugSideEffect).where(DrugSideEffect.drug_code == code)


def side_effect_rows(code: str, effects: Iterable[SideEffect]) -> list[DrugSideEffect]:
    return [
        DrugSideEffect(
            drug_code=code,
            symptom_code=e.symptom_code,
            frequency=e.frequency,
            note=e.note,
            position=i,
        )
        for i, e in enumerate(effects)
    ]


async def replace_side_effects(
    session: AsyncSession, code: str, effects: Iterable[SideEffect]
) -> None:
    await session.execute(clear_side_effects(code))
    session.add_all(side_effect_rows(code, effects))


async def check_drug(
    session: AsyncSession, code: str, body: DrugBody, loc: tuple[str, ...] = ("body",)
) -> list[RuleDef]:
    """Validate a drug's entry against the catalog as a whole; its rules, owned by ``code``.

    Raises ``Invalid`` with every problem, each located under ``loc``.
    """
    rules = [r if r.drug == code else r.model_copy(update={"drug": code}) for r in body.rules]
    errors: list[dict[str, Any]] = []
    for i, r in enumerate(body.rules):
        if r.drug not in (None, code):
            errors.append({"loc": [*loc, "rules", i, "drug"], "msg": f"must be '{code}'"})
        if r.scope.drugs or r.scope.drug_classes:
            errors.append(
                {"loc": [*loc, "rules", i, "scope"], "msg": "a drug's rule takes no scope"}
            )
    symptom_codes = set(await session.scalars(select(Symptom.code)))
    drug_codes = set(await session.scalars(select(Drug.code))) | {code}
    seen: set[str] = set()
    for i, effect in enumerate(body.side_effects):
        where = [*loc, "side_effects", i, "symptom_code"]
        if effect.symptom_code not in symptom_codes:
            errors.append({"loc": where, "msg": f"unknown symptom '{effect.symptom_code}'"})
        if effect.symptom_code in seen:
            errors.append({"loc": where, "msg": f"'{effect.symptom_code}' is listed twice"})
        seen.add(effect.symptom_code)
    for problem in rule_problems(rules, symptom_codes, drug_codes):
        errors.append({"loc": [*loc, "rules"], "msg": problem})
    owners = dict(
        (
            await session.execute(
                select(Rule.id, Rule.drug_code).where(Rule.id.in_([r.id for r in rules]))
            )
        ).all()
    )
    for i, r in enumerate(rules):
        if r.id in owners and owners[r.id] != code:
            errors.append(
                {"loc": [*loc, "rules", i, "id"], "msg": f"rule '{r.id}' belongs elsewhere"}
            )
    if errors:
        raise Invalid(errors)
    return rules


async def put_drug(session: AsyncSession, code: str, body: DrugBody) -> tuple[DrugDetail, bool]:
    """Create or replace a drug with its side effects and its own rules, validated as a whole."""
    rules = await check_drug(session, code, body)
    drug = await session.get(Drug, code)
    created = drug is None
    fields = body.model_dump(include={"name", "brand_names", "drug_class", "route", "vitals"})
    if drug is None:
        drug = Drug(code=code, shipped_hash=None, **fields)
        session.add(drug)
    else:
        for key, value in fields.items():
            setattr(drug, key, value)
    await session.flush()
    await replace_side_effects(session, code, body.side_effects)
    for rule in rules:
        await store_rule(session, rule)
    # Rules this drug no longer has are retired; their versions stay for the alerts citing them.
    kept = {r.id for r in rules}
    for row in await session.scalars(select(Rule).where(Rule.drug_code == code, Rule.active)):
        if row.id not in kept:
            row.active = False
    await bump_revision(session)
    await session.flush()
    return await get_drug(session, code), created


@dataclass(frozen=True)
class EvaluationCatalog:
    policy: Policy
    rules: list[VersionedRule]
    drug_classes: dict[str, str]
    serious_by_drug: dict[str, frozenset[str]]
    symptom_names: dict[str, str]
    # How far back trend rules look: the longest worsening window among the rules.
    history_window: timedelta
    # Drugs whose course a weight rule measures from -> the longest watch window of those rules.
    baseline_drugs: dict[str, int]


def new_revision() -> CatalogSetting:
    """A new catalog revision, to merge into the session (it replaces the stored one)."""
    return CatalogSetting(key=REVISION_KEY, value={"id": uuid.uuid4().hex})


async def bump_revision(session: AsyncSession) -> None:
    await session.merge(new_revision())


_cache: dict[tuple[str, str], EvaluationCatalog] = {}
_cache_lock = threading.Lock()


def catalog_revision() -> ScalarSelect[Any]:
    """The catalog's revision, as a subquery to read along with something else."""
    return select(CatalogSetting.value).where(CatalogSetting.key == REVISION_KEY).scalar_subquery()


async def evaluation_catalog(session: AsyncSession, revision: Any = None) -> EvaluationCatalog:
    """What the engine needs from the catalog: no more than the revision (read here unless
    given) while the catalog is unchanged."""
    if revision is None:
        revision = await session.scalar(select(catalog_revision()))
    key = (str(session.get_bind().engine.url), (revision or {}).get("id", ""))
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    catalog = await _load_evaluation_catalog(session)
    with _cache_lock:
        _cache.clear()  # older revisions are of no further use
        _cache[key] = catalog
    return catalog


async def _load_evaluation_catalog(session: AsyncSession) -> EvaluationCatalog:
    serious: dict[str, set[str]] = {}
    for drug_code, symptom_code in await session.execute(
        select(DrugSideEffect.drug_code, DrugSideEffect.symptom_code).where(
            DrugSideEffect.frequency == "serious"
        )
    ):
        serious.setdefault(drug_code, set()).add(symptom_code)
    rules = await current_rules(session)
    drug_classes = dict((await session.execute(select(Drug.code, Drug.drug_class))).all())
    symptom_names = dict((await session.execute(select(Symptom.code, Symptom.name))).all())
    return EvaluationCatalog(
        policy=await get_policy(session),
        rules=rules,
        drug_classes=drug_classes,
        serious_by_drug={k: frozenset(v) for k, v in serious.items()},
        symptom_names=symptom_names,
        history_window=history_window(v.rule for v in rules),
        baseline_drugs=baseline_drugs((v.rule for v in rules), drug_classes),
    )
