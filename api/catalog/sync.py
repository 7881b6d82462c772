"""Bring the shipped catalog into the database (run by `alembic upgrade head`).

Synchronous: Alembic runs it on its own connection, never the service. It writes the rows the
service's (asynchronous) catalog writes would, through the same builders in the service.
"""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from api.catalog.models import CatalogSetting, Drug, Rule, Symptom, Vital
from api.catalog.service import (
    POLICY_KEY,
    clear_side_effects,
    content_hash,
    new_revision,
    rule_json,
    rule_lookup,
    rule_rows,
    side_effect_rows,
)
from api.catalog.shipped import load_shipped_catalog


def sync_shipped_catalog(connection: Connection) -> None:
    catalog = load_shipped_catalog()
    with Session(bind=connection, autoflush=False) as session:
        # The vocabulary is not editable through the API: the shipped one always wins.
        for position, symptom in enumerate(catalog.symptoms):
            session.merge(Symptom(**symptom.model_dump(), position=position))
        for position, vital in enumerate(catalog.vitals):
            session.merge(
                Vital(
                    name=vital.name,
                    label=vital.label,
                    unit=vital.unit,
                    loinc=vital.loinc,
                    min_value=vital.min,
                    max_value=vital.max,
                    position=position,
                )
            )
        session.flush()

        # Drugs, rules and policy: only entries whose shipped content changed are applied, so
        # an administrator's edits survive upgrades that do not touch the same entry.
        for entry in catalog.drugs:
            digest = content_hash(entry.model_dump(mode="json"))
            drug = session.get(Drug, entry.code)
            if drug is not None and drug.shipped_hash == digest:
                continue
            fields = entry.model_dump(
                include={"name", "brand_names", "drug_class", "route", "vitals"}
            )
            if drug is None:
                drug = Drug(code=entry.code, **fields)
                session.add(drug)
            else:
                for key, value in fields.items():
                    setattr(drug, key, value)
            drug.shipped_hash = digest
            session.flush()
            session.execute(clear_side_effects(entry.code))
            session.add_all(side_effect_rows(entry.code, entry.side_effects))

        shipped_ids = set()
        for rule in catalog.rules:
            shipped_ids.add(rule.id)
            found = session.execute(rule_lookup(rule.id)).one_or_none()
            if found is None or found[0].shipped_hash != content_hash(rule_json(rule)):
                session.add_all(rule_rows(rule, found, shipped=True)[1])
                session.flush()
        for row in session.scalars(select(Rule).where(Rule.shipped_hash.is_not(None))):
            if row.id not in shipped_ids and row.active:
                row.active = False

        policy = catalog.policy.model_dump(mode="json")
        digest = content_hash(policy)
        setting = session.get(CatalogSetting, POLICY_KEY)
        if setting is None:
            session.add(CatalogSetting(key=POLICY_KEY, value=policy, shipped_hash=digest))
        elif setting.shipped_hash != digest:
            setting.value, setting.shipped_hash = policy, digest
        session.merge(new_revision())
        session.flush()
