"""The worklist's page is written by the database (``service.queue``, ``api.sqljson``,
``json_page``): the same JSON, and the same cursors, as the endpoint answered when it built an
AlertRead per converted row and FastAPI validated and serialised the Page."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, tuple_, update

from api.alerts import service
from api.alerts.schemas import AlertRead
from api.models import Alert
from api.pagination import Page, decode_cursor, page_of, parse_time
from tests.alerts.helpers import by_rule
from tests.conftest import Tokens, World, db_execute

IFN = "interferon_alfa_2b"
# Every kind of JSON value, nested, in an order that is not sorted (PostgreSQL's JSONB keeps its
# own order, which both paths then read alike).
EVIDENCE = {
    "z_last": {"nested": {"deep": [1, 2.5, None, True, False, 'é ✓ "quoted"\n']}},
    "a_first": [{"symptom": "fatigue", "grade": 4}, {"vital": "weight_kg", "value": 73.5}],
    "big": 12345678901234567890,
    "small": 1e-7,
    "negative_zero": -0.0,
    "empty": {},
}


def reference_key(alert: AlertRead) -> list[Any]:
    return [
        service.TRIAGE_RANK[alert.severity],
        0 if alert.escalated_at else 1,
        alert.follow_up_due_at.isoformat(),
        str(alert.id),
    ]


class Reference:
    """The page as the endpoint made it before: ``select(alerts)`` with SQLAlchemy's
    conversions, ``AlertRead.model_validate`` per row, ``page_of``, and a FastAPI route that
    returns it as ``Page[AlertRead]`` (validated and serialised by FastAPI)."""

    def __init__(self, client: TestClient, http: TestClient, box: dict[str, Any]) -> None:
        self.client, self.http, self.box = client, http, box

    def page(
        self,
        teams: list[str] | None,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
    ) -> Any:
        after = decode_cursor(cursor, int, int, parse_time, uuid.UUID)
        query = select(Alert.__table__).order_by(*service.QUEUE_ORDER)
        if teams is not None:
            query = query.where(Alert.care_team.in_(teams))
        if status is not None:
            query = query.where(Alert.status == status)
        if after:
            query = query.where(tuple_(*service.QUEUE_ORDER) > tuple_(*after))
        rows = db_execute(self.client, query.limit(limit + 1))
        items = [AlertRead.model_validate(dict(row._mapping)) for row in rows]
        self.box["page"] = page_of(items, limit, reference_key)
        response = self.http.get("/page")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def reference(client: TestClient) -> Iterator[Reference]:
    box: dict[str, Any] = {}
    app = FastAPI()

    @app.get("/page")
    def page() -> Page[AlertRead]:
        return box["page"]  # type: ignore[no-any-return]

    with TestClient(app) as http:
        yield Reference(client, http, box)


def set_columns(client: TestClient, alert_id: str, **values: Any) -> None:
    # What the job loop (escalation, overdue) or an older version would have left in the row.
    db_execute(client, update(Alert).where(Alert.id == uuid.UUID(alert_id)).values(**values))


def build(world: World, client: TestClient, tokens: Tokens) -> dict[str, str]:
    """onc-a: an escalated emergency, an acknowledged weight alert (nested baseline evidence),
    a resolved one, an open routine one, and one with every column set and crafted evidence;
    onc-b: one more, outside the clinician's team."""
    now = datetime.now(UTC)
    ids: dict[str, str] = {}

    p = world.patient("onc-a", drugs=("aldesleukin",))
    ids["escalated"] = world.report(p["id"], vitals={"systolic_bp": 84})["alerts"][0]["id"]
    set_columns(
        client, ids["escalated"], escalated_at=now - timedelta(minutes=5), escalation_rank=0
    )

    p = world.patient("onc-a", drugs=("aldesleukin",), baseline_weight_kg=70)
    alerts = by_rule(world.report(p["id"], vitals={"weight_kg": 73.5})["alerts"])
    ids["acknowledged"] = alerts["cls-weight"]["id"]
    assert "baseline" in alerts["cls-weight"]["evidence"]
    response = client.post(
        f"/v1/alerts/{ids['acknowledged']}/acknowledge",
        json={"note": "on it"},
        headers=tokens.clinician("onc-a"),
    )
    assert response.status_code == 200, response.text

    p = world.patient("onc-a")
    ids["resolved"] = world.report(p["id"], vitals={"spo2": 91})["alerts"][0]["id"]
    response = client.post(
        f"/v1/alerts/{ids['resolved']}/resolve",
        json={"note": "called the patient", "outcome": "confirmed"},
        headers=tokens.admin(),
    )
    assert response.status_code == 200, response.text

    p = world.patient("onc-a", drugs=(IFN,))
    world.report(p["id"], symptoms={"fatigue": 0}, recorded_at=now - timedelta(days=2))
    ids["open"] = world.report(p["id"], symptoms={"fatigue": 2})["alerts"][0]["id"]

    p = world.patient("onc-a", drugs=(IFN,))
    ids["full"] = world.report(p["id"], symptoms={"depressed_mood": 2})["alerts"][0]["id"]
    set_columns(
        client,
        ids["full"],
        evidence=EVIDENCE,
        drug_code=IFN,
        status="resolved",
        # Whole seconds, microseconds and trailing zeros: the JSON writes each differently.
        acknowledged_at=now.replace(microsecond=0),
        acknowledged_by="nurse-2",
        resolved_at=now.replace(microsecond=1),
        resolved_by="nurse-3",
        resolution_note='a "note"\nwith lines',
        outcome="false_alarm",
        escalated_at=now - timedelta(hours=1),
        escalation_rank=0,
        overdue_at=(now - timedelta(minutes=30)).replace(microsecond=120000),
    )

    p = world.patient("onc-b", drugs=("bevacizumab",))
    ids["other_team"] = world.report(p["id"], symptoms={"abdominal_pain": 3})["alerts"][0]["id"]
    return ids


def test_pages_are_what_the_endpoint_answered_before(
    world: World, client: TestClient, tokens: Tokens, reference: Reference
) -> None:
    ids = build(world, client, tokens)
    clinician = tokens.clinician("onc-a")

    response = client.get("/v1/alerts", headers=clinician)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == reference.page(["onc-a"])
    items = response.json()["items"]
    assert {a["id"] for a in items} == {ids[k] for k in ids if k != "other_team"}
    # What the page holds: escalated and not, acknowledged, resolved, nested evidence.
    assert {a["status"] for a in items} == {"open", "acknowledged", "resolved"}
    assert {a["escalated_at"] is None for a in items} == {True, False}
    assert any(isinstance(a["evidence"].get("baseline"), dict) for a in items)
    full = next(a for a in items if a["id"] == ids["full"])
    assert full["evidence"] == json.loads(json.dumps(EVIDENCE))
    assert all(full[name] is not None for name in AlertRead.model_fields)

    # Every page of a walk, its cursors included; a filter; all teams for an admin.
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/alerts", params=params, headers=clinician)
        assert response.status_code == 200, response.text
        assert response.json() == reference.page(["onc-a"], 2, cursor)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    else:
        raise AssertionError("pagination does not end")
    response = client.get("/v1/alerts", params={"status": "resolved"}, headers=clinician)
    assert response.json() == reference.page(["onc-a"], status="resolved")
    response = client.get("/v1/alerts", params={"limit": 4}, headers=tokens.admin())
    assert response.json() == reference.page(None, 4)
    assert response.json()["next_cursor"] is not None
