"""Many phones, flaky networks: concurrent posts with retries lose and duplicate nothing."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.alerts.models import OPEN_STATUSES, Alert, AlertEvent
from api.reports.models import Report, ReportSymptom
from tests.conftest import World, engine_of, report_body
from tests.live_server import live_server

PATIENTS = 6
REPORTS_EACH = 15


def test_concurrent_posts_with_retries_store_each_report_once(
    world: World, client: TestClient, database_url: str
) -> None:
    rng = random.Random(7)
    patients = [world.patient(drugs=("aldesleukin",))["id"] for _ in range(PATIENTS)]
    start = datetime.now(UTC) - timedelta(hours=10)
    sends: list[tuple[str, dict[str, Any]]] = []
    for pid in patients:
        for i in range(REPORTS_EACH):
            symptoms = {"fever": rng.randint(0, 4), "nausea": rng.randint(0, 3)}
            vitals = {"systolic_bp": rng.choice([85, 120, 130]), "weight_kg": 70 + rng.random()}
            body = report_body(symptoms, vitals, recorded_at=start + timedelta(minutes=i))
            # A flaky network: each report is sent one to three times, interleaved with others.
            sends += [(pid, body)] * rng.randint(1, 3)
    rng.shuffle(sends)

    def send(item: tuple[str, dict[str, Any]]) -> tuple[str, int, str]:
        pid, body = item
        headers = world.tokens.patient(pid)
        for attempt in range(3):
            try:
                response = http.post(f"/v1/patients/{pid}/reports", json=body, headers=headers)
                break
            except httpx.TransportError:
                # The shared client's connection pool can lose a socket between threads
                # ("Bad file descriptor"); a phone resends, as the API asks.
                if attempt == 2:
                    raise
        return body["client_report_id"], response.status_code, response.json().get("id", "")

    with (
        live_server(database_url) as base,
        httpx.Client(base_url=base, timeout=60) as http,
        ThreadPoolExecutor(max_workers=24) as pool,
    ):
        results = list(pool.map(send, sends))

    assert {status for _, status, _ in results} <= {200, 201}, Counter(s for _, s, _ in results)
    created = Counter(key for key, status, _ in results if status == 201)
    keys = {body["client_report_id"] for _, body in sends}
    assert set(created) == keys and set(created.values()) == {1}
    ids_by_key: dict[str, set[str]] = {}
    for key, _, report_id in results:
        ids_by_key.setdefault(key, set()).add(report_id)
    assert all(len(ids) == 1 for ids in ids_by_key.values())  # every answer names the same row

    with engine_of(client.app).connect() as conn:
        stored = conn.execute(select(Report.client_report_id, Report.id)).all()
        assert sorted(str(k) for k, _ in stored) == sorted(keys)
        assert {str(i) for _, i in stored} == {i for ids in ids_by_key.values() for i in ids}
        # No half-written report: every one has its two symptoms.
        per_report = conn.execute(
            select(ReportSymptom.report_id, func.count()).group_by(ReportSymptom.report_id)
        ).all()
        assert len(per_report) == len(keys) and {n for _, n in per_report} == {2}
        # Alerts consistent: one open episode per (patient, rule), occurrences match the
        # triggers recorded for it.
        open_episodes = Counter(
            conn.execute(
                select(Alert.patient_id, Alert.rule_id).where(Alert.status.in_(OPEN_STATUSES))
            ).all()
        )
        assert open_episodes and set(open_episodes.values()) == {1}
        for alert_id, occurrences in conn.execute(select(Alert.id, Alert.occurrences)):
            triggers = conn.scalar(
                select(func.count())
                .select_from(AlertEvent)
                .where(
                    AlertEvent.alert_id == alert_id,
                    AlertEvent.action.in_(("raised", "retriggered")),
                )
            )
            assert triggers == occurrences
