"""Every table, imported in one place for Alembic's metadata."""

from api.alerts.models import Alert, AlertEvent
from api.audit.models import AuditEvent
from api.catalog.models import (
    CatalogSetting,
    Drug,
    DrugSideEffect,
    Rule,
    RuleVersion,
    Symptom,
    Vital,
)
from api.db import Base
from api.notifications.models import Webhook, WebhookAttempt, WebhookDelivery
from api.patients.models import Patient, Therapy
from api.reports.models import Report, ReportSymptom

__all__ = [
    "Alert",
    "AlertEvent",
    "AuditEvent",
    "Base",
    "CatalogSetting",
    "Drug",
    "DrugSideEffect",
    "Patient",
    "Report",
    "ReportSymptom",
    "Rule",
    "RuleVersion",
    "Symptom",
    "Therapy",
    "Vital",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
]
