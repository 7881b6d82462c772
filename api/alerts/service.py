from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.alerts.models import OPEN_STATUSES, Alert, AlertEvent
from api.patients.models import Patient
from api.rules.definitions import SEVERITY_RANK
from api.rules.engine import Finding

TRIAGE_RANK = {"emergency": 0, "urgent": 1, "routine": 2}


def raise_alerts(
    session: Session,
    patient: Patient,
    report_id: uuid.UUID,
    findings: Sequence[Finding],
    now: datetime,
) -> list[Alert]:
    """Open an alert per finding, or fold it into the open episode of the same rule.

    The caller holds the patient's lock, so the open episodes read here cannot change under us;
    the partial unique index on open episodes backs that up.
    """
    if not findings:
        return []
    open_alerts = {
        a.rule_id: a
        for a in session.scalars(
            select(Alert)
            .where(
                Alert.patient_id == patient.id,
                Alert.status.in_(OPEN_STATUSES),
                Alert.rule_id.in_([f.rule_id for f in findings]),
            )
            # A nurse resolving the alert right now must not have it absorb this report:
            # the lock makes the resolve either land first (we then open a new episode) or wait.
            .with_for_update()
        )
    }
    touched: list[Alert] = []
    events: list[AlertEvent] = []
    for finding in findings:
        due = now + timedelta(minutes=finding.follow_up_minutes)
        alert = open_alerts.get(finding.rule_id)
        if alert is None:
            alert = Alert(
                id=uuid.uuid4(),
                patient_id=patient.id,
                care_team=patient.care_team,
                report_id=report_id,
                rule_id=finding.rule_id,
                rule_version=finding.rule_version,
                drug_code=finding.drug_code,
                severity=finding.severity,
                triage_rank=TRIAGE_RANK[finding.severity],
                status="open",
                title=finding.title,
                detail=finding.detail,
                evidence=finding.evidence,
                created_at=now,
                follow_up_due_at=due,
                last_triggered_at=now,
                occurrences=1,
            )
            session.add(alert)
            action = "raised"
        else:
            alert.occurrences += 1
            alert.last_triggered_at = now
            if SEVERITY_RANK[finding.severity] > SEVERITY_RANK[alert.severity]:
                # Severity only rises within an episode; the alert then shows what raised it.
                alert.severity = finding.severity
                alert.triage_rank = TRIAGE_RANK[finding.severity]
                alert.rule_version = finding.rule_version
                alert.title = finding.title
                alert.detail = finding.detail
                alert.evidence = finding.evidence
                alert.follow_up_due_at = min(alert.follow_up_due_at, due)
            action = "retriggered"
        events.append(
            AlertEvent(
                alert_id=alert.id,
                at=now,
                action=action,
                report_id=report_id,
                severity=finding.severity,
                from_status=None if action == "raised" else alert.status,
                to_status=alert.status,
            )
        )
        touched.append(alert)
    session.flush()
    session.add_all(events)
    session.flush()
    return touched


def alerts_of_report(session: Session, report_id: uuid.UUID) -> list[Alert]:
    """The alerts a stored report raised or re-triggered (for an idempotent replay)."""
    return list(
        session.scalars(
            select(Alert)
            .join(AlertEvent, AlertEvent.alert_id == Alert.id)
            .where(AlertEvent.report_id == report_id)
            .order_by(Alert.triage_rank, Alert.rule_id)
        )
    )
