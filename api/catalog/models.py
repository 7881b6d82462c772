from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, JSONType, UTCDateTime, utcnow


class Symptom(Base):
    __tablename__ = "symptoms"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    question: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(64))
    grades: Mapped[dict[str, str]] = mapped_column(JSONType)
    ctcae_term: Mapped[str] = mapped_column(String(200))
    snomed: Mapped[str | None] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)


class Vital(Base):
    __tablename__ = "vitals"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(100))
    unit: Mapped[str] = mapped_column(String(16))
    loinc: Mapped[str] = mapped_column(String(16))
    min_value: Mapped[float] = mapped_column(Float)
    max_value: Mapped[float] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer)


class Drug(Base):
    __tablename__ = "drugs"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    brand_names: Mapped[list[str]] = mapped_column(JSONType)
    drug_class: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(64))
    vitals: Mapped[list[str]] = mapped_column(JSONType)
    # Hash of the shipped entry last applied: a catalog upgrade only overwrites a drug whose
    # shipped entry changed, so an administrator's PUT survives upgrades that did not touch it.
    shipped_hash: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DrugSideEffect(Base):
    __tablename__ = "drug_side_effects"

    drug_code: Mapped[str] = mapped_column(
        ForeignKey("drugs.code", ondelete="CASCADE"), primary_key=True
    )
    symptom_code: Mapped[str] = mapped_column(ForeignKey("symptoms.code"), primary_key=True)
    frequency: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)


class Rule(Base):
    """A rule's identity and its current version; every version stays in rule_versions."""

    __tablename__ = "rules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    drug_code: Mapped[str | None] = mapped_column(ForeignKey("drugs.code"), index=True)
    current_version: Mapped[int] = mapped_column(Integer)
    # Retired rules keep their versions for the alerts that cite them but are not evaluated.
    active: Mapped[bool] = mapped_column(default=True)
    shipped_hash: Mapped[str | None] = mapped_column(String(64))


class RuleVersion(Base):
    __tablename__ = "rule_versions"

    rule_id: Mapped[str] = mapped_column(ForeignKey("rules.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CatalogSetting(Base):
    """Catalog-wide data such as the severity policy (follow-up windows, patient advice)."""

    __tablename__ = "catalog_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONType)
    shipped_hash: Mapped[str | None] = mapped_column(String(64))
