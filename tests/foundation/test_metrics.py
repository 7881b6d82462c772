"""GET /metrics: Prometheus text, parsed with prometheus_client's own parser."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from tests.conftest import Tokens, World, make_settings, report_body
from tests.notifications.live import uvicorn

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_reports_and_alerts(
    client: TestClient, world: World, tokens: Tokens
) -> None:
    before = client.get("/metrics").text
    patient = world.patient(drugs=("aldesleukin",))
    world.report(patient["id"], vitals={"systolic_bp": 84})  # raises cls-hypotension
    world.report(patient["id"], vitals={"systolic_bp": 83})  # re-triggers it: not raised again
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    assert (
        value(after, "symptoms_reports_stored_total")
        - value(before, "symptoms_reports_stored_total")
        == 2
    )
    raised = {"severity": "emergency", "rule": "cls-hypotension"}
    assert (
        value(after, "symptoms_alerts_raised_total", **raised)
        - value(before, "symptoms_alerts_raised_total", **raised)
        == 1
    )
    route = "/v1/patients/{patient_id}/reports"
    posted = {"method": "POST", "route": route, "status": "201"}
    assert value(after, "symptoms_http_requests_total", **posted) >= 2
    count = value(after, "symptoms_http_request_duration_seconds_count", method="POST", route=route)
    assert count >= 2
    # read from the database at scrape time
    assert value(after, "symptoms_alerts_open", severity="emergency", status="open") == 1
    assert "symptoms_alerts_overdue" in after
    assert "symptoms_alerts_escalated_total" in after
    assert "symptoms_db_pool_size" in after
    # route templates, never a patient id
    assert not UUID.search(after), UUID.search(after)


@pytest.mark.committed
def test_the_pool_gauges_count_every_pool_of_the_process(
    database_url: str, is_postgres: bool, world: World, tokens: Tokens
) -> None:
    """On a SQLite file the writers have a pool of their own beside the readers': both count."""
    patient = world.patient()
    app = create_app(make_settings(database_url, db_pool_size=3, db_max_overflow=0))
    with TestClient(app) as client:
        posted = client.post(
            f"/v1/patients/{patient['id']}/reports",
            json=report_body({"fatigue": 1}),
            headers=tokens.patient(patient["id"]),
        )
        assert posted.status_code == 201, posted.text
        text = client.get("/metrics").text
    assert value(text, "symptoms_db_pool_size") == (3 if is_postgres else 6)
    assert value(text, "symptoms_db_pool_checked_out") == 0


def test_the_metrics_token_guards_the_endpoint(database_url: str) -> None:
    app = create_app(make_settings(database_url, metrics_token="scrape-" + "s" * 30))
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        good = {"Authorization": "Bearer scrape-" + "s" * 30}
        assert client.get("/metrics", headers=good).status_code == 200


def workers_that_stored(directory: Path) -> list[Path]:
    """The per-process counter files in which some reports were counted."""
    found = []
    for path in directory.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            if any(s.name == "symptoms_reports_stored_total" and s.value for s in metric.samples):
                found.append(path)
    return found


@pytest.mark.committed
def test_two_workers_report_one_consistent_set(
    database_url: str, tmp_path: Path, tokens: Tokens, world: World
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, whichever worker answers counts every worker's reports."""
    patient = world.patient()
    shared = tmp_path / "prometheus"
    shared.mkdir()
    with uvicorn(database_url, tmp_path, workers=2, PROMETHEUS_MULTIPROC_DIR=str(shared)) as base:
        headers = tokens.patient(patient["id"])
        posted = 0
        # New connections until both workers have stored reports (each keeps its own file).
        while posted < 10 or len(workers_that_stored(shared)) < 2:
            assert posted < 300, "one worker took every connection"
            response = httpx.post(
                f"{base}/v1/patients/{patient['id']}/reports",
                json=report_body({"fatigue": 1}),
                headers=headers,
            )
            assert response.status_code == 201, response.text
            posted += 1
        totals = {
            value(httpx.get(f"{base}/metrics").text, "symptoms_reports_stored_total")
            for _ in range(8)
        }
    assert totals == {float(posted)}
