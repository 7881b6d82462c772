from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Uuid, bindparam, insert, select, update
from sqlalchemy.orm import Session

from api.alerts.events import event_row, write_events
from api.alerts.models import OPEN_STATUSES, Alert, AlertEvent
from api.rules.definitions import SEVERITY_RANK
from api.rules.engine import Finding

TRIAGE_RANK = {"emergency": 0, "urgent": 1, "routine": 2}

alerts = Alert.__table__

# What a re-trigger may change on an open episode (written back with one executemany).
_MUTABLE = (
    "occurrences",
    "last_triggered_at",
    "severity",
    "triage_rank",
    "rule_version",
    "title",
    "detail",
    "evidence",
    "follow_up_due_at",
)
_open_episodes = (
    select(alerts)
    .where(
        alerts.c.patient_id == bindparam("patient_id", type_=Uuid),
        alerts.c.status.in_(OPEN_STATUSES),
        alerts.c.rule_id.in_(bindparam("rule_ids", expanding=True)),
    )
    # A nurse resolving the alert right now must not have it absorb this report: the lock
    # makes the resolve either land first (we then open a new episode) or wait.
    .with_for_update()
)
_insert_alerts = insert(alerts)
_update_alert = (
    update(alerts)
    .where(alerts.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _MUTABLE})
)


def raise_alerts(
    conn: Connection,
    patient_id: uuid.UUID,
    care_team: str,
    raised: Sequence[tuple[uuid.UUID, Sequence[Finding]]],
    now: datetime,
) -> list[list[dict[str, Any]]]:
    """Open an alert per finding, or fold it into the open episode of the same rule.

    ``raised`` holds (report id, findings) in the order the reports happened; the answer holds,
    per report, the alerts it raised or re-triggered, as rows. The caller holds the patient's
    lock, so the open episodes read here cannot change under us; the partial unique index on
    open episodes backs that up. All rows are written at the end: one statement per table.
    """
    rule_ids = {f.rule_id for _, findings in raised for f in findings}
    if not rule_ids:
        return [[] for _ in raised]
    params = {"patient_id": patient_id, "rule_ids": sorted(rule_ids)}
    rows = conn.execute(_open_episodes, params).mappings()
    episodes = {row["rule_id"]: dict(row) for row in rows}
    new: dict[uuid.UUID, dict[str, Any]] = {}
    changed: dict[uuid.UUID, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    touched: list[list[dict[str, Any]]] = []
    for report_id, findings in raised:
        mine: list[dict[str, Any]] = []
        for finding in findings:
            due = now + timedelta(minutes=finding.follow_up_minutes)
            alert = episodes.get(finding.rule_id)
            if alert is None:
                alert = _new_alert(patient_id, care_team, report_id, finding, now, due)
                episodes[finding.rule_id] = new[alert["id"]] = alert
                action = "raised"
            else:
                alert["occurrences"] += 1
                alert["last_triggered_at"] = now
                action = "retriggered"
                if SEVERITY_RANK[finding.severity] > SEVERITY_RANK[alert["severity"]]:
                    events.append(_event(alert, action, report_id, finding.severity, now))
                    action = "severity_raised"
                    # Severity only rises within an episode; the alert then shows what raised it.
                    alert["severity"] = finding.severity
                    alert["triage_rank"] = TRIAGE_RANK[finding.severity]
                    alert["rule_version"] = finding.rule_version
                    alert["title"] = finding.title
                    alert["detail"] = finding.detail
                    alert["evidence"] = finding.evidence
                    alert["follow_up_due_at"] = min(alert["follow_up_due_at"], due)
                if alert["id"] not in new:
                    changed[alert["id"]] = alert
            events.append(_event(alert, action, report_id, finding.severity, now))
            mine.append(alert)
        touched.append(mine)
    if new:
        conn.execute(_insert_alerts, list(new.values()))
    if changed:
        conn.execute(
            _update_alert,
            [
                {"b_id": a["id"], **{f"b_{name}": a[name] for name in _MUTABLE}}
                for a in changed.values()
            ],
        )
    # Last: the events' ordering lock is held only from here to the commit.
    write_events(conn, events)
    return touched


def _event(
    alert: dict[str, Any], action: str, report_id: uuid.UUID, severity: str, now: datetime
) -> dict[str, Any]:
    return event_row(
        alert["id"],
        action,
        now,
        report_id=report_id,
        severity=severity,
        from_status=None if action == "raised" else alert["status"],
        to_status=alert["status"],
    )


def _new_alert(
    patient_id: uuid.UUID,
    care_team: str,
    report_id: uuid.UUID,
    finding: Finding,
    now: datetime,
    due: datetime,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "patient_id": patient_id,
        "care_team": care_team,
        "report_id": report_id,
        "rule_id": finding.rule_id,
        "rule_version": finding.rule_version,
        "drug_code": finding.drug_code,
        "severity": finding.severity,
        "triage_rank": TRIAGE_RANK[finding.severity],
        "status": "open",
        "title": finding.title,
        "detail": finding.detail,
        "evidence": finding.evidence,
        "created_at": now,
        "follow_up_due_at": due,
        "last_triggered_at": now,
        "occurrences": 1,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "resolution_note": None,
        "outcome": None,
        "escalated_at": None,
        "escalation_rank": 1,
        "overdue_at": None,
    }


def alerts_of_report(session: Session, report_id: uuid.UUID) -> list[Alert]:
    """The alerts a stored report raised or re-triggered (for an idempotent replay)."""
    return list(
        session.scalars(
            select(Alert)
            # A subquery, not a join: one report can write two events of one alert (a
            # re-trigger that also raised the severity), and the alert must come once.
            .where(
                Alert.id.in_(select(AlertEvent.alert_id).where(AlertEvent.report_id == report_id))
            )
            .order_by(Alert.triage_rank, Alert.rule_id)
        )
    )
