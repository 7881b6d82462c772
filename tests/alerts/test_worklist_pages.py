"""First pages of the worklist are kept per process (api/alerts/pages.py) while no alert event
has been written: every way the service changes an alert shows on the next first page, whichever
process made the change."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.alerts.models import Alert
from api.alerts.pages import PageCache
from api.db import utcnow
from api.notifications.jobs import escalate_and_mark_overdue
from tests.alerts.helpers import WINDOWS
from tests.conftest import Tokens, World, db_execute, report_body
from tests.live_server import live_server

URGENT = {"spo2": 91}
EMERGENCY = {"spo2": 88}


def first_page(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/alerts", params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def listed(client: TestClient, headers: dict[str, str], alert_id: str) -> dict[str, Any]:
    (alert,) = [a for a in first_page(client, headers) if a["id"] == alert_id]
    return alert


def detail(client: TestClient, tokens: Tokens, alert_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/alerts/{alert_id}", headers=tokens.admin())
    assert response.status_code == 200, response.text
    alert: dict[str, Any] = response.json()
    del alert["report"]
    return alert


def test_the_first_page_follows_every_change_to_an_alert(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    nurse = tokens.clinician("onc-a")
    patient = world.patient("onc-a")
    assert first_page(client, nurse) == []

    alert_id = world.report(patient["id"], vitals=URGENT)["alerts"][0]["id"]
    assert listed(client, nurse, alert_id) == detail(client, tokens, alert_id)
    assert listed(client, nurse, alert_id)["occurrences"] == 1

    world.report(patient["id"], vitals=URGENT)  # re-triggered
    assert listed(client, nurse, alert_id)["occurrences"] == 2

    world.report(patient["id"], vitals=EMERGENCY)  # severity raised
    assert listed(client, nurse, alert_id)["severity"] == "emergency"

    async def escalate() -> int:
        async with client.app.state.db.write() as session:  # type: ignore[attr-defined]
            conn = await session.connection()
            return await escalate_and_mark_overdue(conn, utcnow() + timedelta(days=4), WINDOWS)

    assert client.portal.call(escalate) == 2  # type: ignore[union-attr]
    escalated = listed(client, nurse, alert_id)
    assert escalated["escalated_at"] is not None
    assert escalated["overdue_at"] is not None

    for action, status in (("acknowledge", "acknowledged"), ("resolve", "resolved")):
        body = {"note": "seen", "outcome": "confirmed"} if action == "resolve" else {}
        response = client.post(f"/v1/alerts/{alert_id}/{action}", json=body, headers=nurse)
        assert response.status_code == 200, response.text
        assert listed(client, nurse, alert_id)["status"] == status
        assert listed(client, nurse, alert_id) == detail(client, tokens, alert_id)


def test_a_page_is_served_from_memory_until_an_alert_event_is_written(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    nurse = tokens.clinician("onc-a")
    alert_id = world.report(world.patient("onc-a")["id"], vitals=URGENT)["alerts"][0]["id"]
    title = listed(client, nurse, alert_id)["title"]

    # A write that bypasses the service (no event) is not seen: the page was kept...
    edit = update(Alert).where(Alert.id == uuid.UUID(alert_id)).values(title="edited by hand")
    db_execute(client, edit)
    assert listed(client, nurse, alert_id)["title"] == title
    # ...by request: another page size reads the database.
    assert [a["title"] for a in first_page(client, nurse, limit=10)] == ["edited by hand"]

    response = client.post(f"/v1/alerts/{alert_id}/acknowledge", json={}, headers=nurse)
    assert response.status_code == 200, response.text
    assert listed(client, nurse, alert_id)["title"] == "edited by hand"


def test_pages_are_kept_per_team_and_filter(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    a = world.report(world.patient("onc-a")["id"], vitals=URGENT)["alerts"][0]["id"]
    b = world.report(world.patient("onc-b")["id"], vitals=EMERGENCY)["alerts"][0]["id"]

    def ids(headers: dict[str, str], **params: Any) -> list[str]:
        return [alert["id"] for alert in first_page(client, headers, **params)]

    for _ in range(2):
        assert ids(tokens.clinician("onc-a")) == [a]
        assert ids(tokens.clinician("onc-b")) == [b]
        assert ids(tokens.clinician("onc-a", "onc-b")) == [b, a]
        assert ids(tokens.admin()) == [b, a]
        assert ids(tokens.admin(), team="onc-a") == [a]
        assert ids(tokens.admin(), severity="urgent") == [a]
        assert ids(tokens.admin(), status="acknowledged") == []
        assert ids(tokens.admin(), limit=1) == [b]


@pytest.mark.committed
def test_a_change_made_by_another_process_shows_on_the_next_first_page(
    world: World, client: TestClient, tokens: Tokens, database_url: str
) -> None:
    nurse = tokens.clinician("onc-a")
    patient = world.patient("onc-a")
    alert_id = world.report(patient["id"], vitals=URGENT)["alerts"][0]["id"]
    assert listed(client, nurse, alert_id)["status"] == "open"

    # Another app, with its own kept pages and its own connections: another worker.
    with live_server(database_url) as base_url, httpx.Client(base_url=base_url) as other:
        response = other.post(f"/v1/alerts/{alert_id}/acknowledge", json={}, headers=nurse)
        assert response.status_code == 200, response.text
        assert listed(client, nurse, alert_id)["status"] == "acknowledged"

        response = other.post(
            f"/v1/patients/{patient['id']}/reports",
            json=report_body(vitals=EMERGENCY),
            headers=tokens.patient(patient["id"]),
        )
        assert response.status_code == 201, response.text
        assert listed(client, nurse, alert_id)["severity"] == "emergency"


@pytest.mark.committed
def test_first_pages_asked_for_at_once_each_see_what_was_committed_before(
    world: World, tokens: Tokens, database_url: str
) -> None:
    """Many first pages at once share reads of the latest event id; each must still show every
    change that was committed before it was asked for (its client's own report, here)."""
    patients = [world.patient("onc-a")["id"] for _ in range(8)]
    nurse = tokens.clinician("onc-a")

    with live_server(database_url) as base_url:

        def report_then_read(patient_id: str) -> list[int]:
            seen = []
            with httpx.Client(base_url=base_url, timeout=30) as http:
                for _ in range(6):
                    response = http.post(
                        f"/v1/patients/{patient_id}/reports",
                        json=report_body(vitals=URGENT),
                        headers=tokens.patient(patient_id),
                    )
                    assert response.status_code == 201, response.text
                    page = http.get("/v1/alerts", headers=nurse, params={"limit": 100})
                    assert page.status_code == 200, page.text
                    (alert,) = [a for a in page.json()["items"] if a["patient_id"] == patient_id]
                    seen.append(alert["occurrences"])
            return seen

        with ThreadPoolExecutor(max_workers=len(patients)) as pool:
            assert list(pool.map(report_then_read, patients)) == [[1, 2, 3, 4, 5, 6]] * 8


class Reads:
    """A stand-in for the database's latest event id: read n answers n when released."""

    def __init__(self) -> None:
        self.started = 0
        self.release: list[asyncio.Event] = []
        self.fail = False
        self.another = asyncio.Event()

    async def __call__(self) -> int:
        self.started += 1
        self.another.set()
        n = self.started
        released = asyncio.Event()
        self.release.append(released)
        await released.wait()
        if self.fail:
            raise OSError("the database went away")
        return n

    async def until_started(self, n: int) -> None:
        while self.started < n:
            self.another.clear()
            await self.another.wait()


def test_a_version_asked_for_during_a_read_waits_for_the_next_read() -> None:
    async def scenario() -> None:
        reads = Reads()
        pages = PageCache(reads)
        first = [asyncio.create_task(pages.version()) for _ in range(3)]
        await reads.until_started(1)
        # Asked while read 1 runs: it may have started before a change these callers made.
        later = [asyncio.create_task(pages.version()) for _ in range(3)]
        await asyncio.sleep(0)
        assert reads.started == 1
        reads.release[0].set()
        assert [await t for t in first] == [1, 1, 1]
        await reads.until_started(2)
        reads.release[1].set()
        assert [await t for t in later] == [2, 2, 2]
        assert reads.started == 2

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_failed_read_fails_its_waiters_and_the_next_caller_reads_again() -> None:
    async def scenario() -> None:
        reads = Reads()
        pages = PageCache(reads)
        reads.fail = True
        waiting = [asyncio.create_task(pages.version()) for _ in range(2)]
        gone = asyncio.create_task(pages.version())
        await reads.until_started(1)
        gone.cancel()  # a client that went away cancels nobody else's read
        reads.release[0].set()
        for task in waiting:
            with pytest.raises(OSError):
                await task
        reads.fail = False
        again = asyncio.create_task(pages.version())
        await reads.until_started(2)
        reads.release[1].set()
        assert await again == 2

    asyncio.run(asyncio.wait_for(scenario(), 5))
