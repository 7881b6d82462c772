"""One fresh database per test run (SQLite file or a new PostgreSQL database), schema built by
`alembic upgrade head`; every test starts from the shipped catalog and no patient data.

TEST_DATABASE_URL chooses the server: unset → SQLite in a temporary folder;
postgresql+psycopg://… → a new database on that server, dropped at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url

from api.db import make_engine
from api.main import create_app
from api.models import (
    Alert,
    AlertEvent,
    AuditEvent,
    Patient,
    Report,
    ReportSymptom,
    Therapy,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from api.security import mint_token
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TEST_SECRET = "test-secret-" + "x" * 40
MUTABLE_TABLES = (
    WebhookAttempt,
    WebhookDelivery,
    Webhook,
    AlertEvent,
    Alert,
    ReportSymptom,
    Report,
    Therapy,
    Patient,
    AuditEvent,
)


def make_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "development",
        "database_url": url,
        "jwt_secret": TEST_SECRET,
        # The job loop runs where a test asks for it (tests/notifications), not under every test.
        "worker_mode": "off",
        # A live feed opened through the TestClient (the fuzzer's) ends instead of running on.
        "stream_max_s": 1.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def alembic_config() -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["configure_logging"] = False
    return config


def run_alembic(url: str, action: Callable[[Config], None]) -> None:
    engine = make_engine(make_settings(url))
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    run_alembic(url, lambda c: command.upgrade(c, revision))


@contextlib.contextmanager
def fresh_database(tmp_dir: Path) -> Iterator[str]:
    """A new, empty database; removed afterwards."""
    server = os.environ.get("TEST_DATABASE_URL")
    if not server or server.startswith("sqlite"):
        yield f"sqlite:///{tmp_dir / f'test-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"symptoms_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise pytest.UsageError(f"PostgreSQL at TEST_DATABASE_URL does not answer: {exc}") from exc
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(tmp_path_factory.mktemp("db")) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


@pytest.fixture(scope="session")
def app(database_url: str) -> Iterator[FastAPI]:
    application = create_app(make_settings(database_url))
    yield application
    application.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    # Each test starts with no patient data; the catalog is left as migrations made it.
    with app.state.engine.begin() as conn:
        for table in MUTABLE_TABLES:
            conn.execute(delete(table))


@pytest.fixture
def fresh_app(tmp_path: Path) -> Iterator[FastAPI]:
    """An app on its own new database, for tests that change the catalog."""
    with fresh_database(tmp_path) as url:
        upgrade(url)
        application = create_app(make_settings(url))
        yield application
        application.state.engine.dispose()


@dataclass
class Tokens:
    settings: Settings

    def admin(self, sub: str = "admin-1") -> dict[str, str]:
        return self._headers(sub=sub, role="admin")

    def clinician(self, *teams: str, sub: str = "nurse-1") -> dict[str, str]:
        return self._headers(sub=sub, role="clinician", teams=list(teams))

    def patient(self, patient_id: str | uuid.UUID, sub: str | None = None) -> dict[str, str]:
        return self._headers(sub=sub or f"user-{patient_id}", role="patient", patient_id=patient_id)

    def _headers(self, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.settings, **claims)}"}


@pytest.fixture
def tokens(database_url: str) -> Tokens:
    return Tokens(make_settings(database_url))


@dataclass
class World:
    """Factories that build state the way clients do: through the API."""

    client: TestClient
    tokens: Tokens

    def patient(
        self,
        team: str = "onc-a",
        drugs: tuple[str, ...] = (),
        started_on: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        response = self.client.post(
            "/v1/patients", json={"care_team": team, **fields}, headers=self.tokens.admin()
        )
        assert response.status_code == 201, response.text
        patient = response.json()
        start = started_on or (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
        for drug in drugs:
            self.therapy(patient["id"], drug, start)
        return patient

    def therapy(
        self, patient_id: str, drug: str, started_on: str, ended_on: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"drug_code": drug, "started_on": started_on}
        if ended_on:
            body["ended_on"] = ended_on
        response = self.client.post(
            f"/v1/patients/{patient_id}/therapies", json=body, headers=self.tokens.admin()
        )
        assert response.status_code == 201, response.text
        return response.json()

    def report(
        self,
        patient_id: str,
        symptoms: dict[str, int] | None = None,
        vitals: dict[str, float] | None = None,
        recorded_at: datetime | None = None,
        expect: int = 201,
        **extra: Any,
    ) -> dict[str, Any]:
        body = report_body(symptoms, vitals, recorded_at, **extra)
        response = self.client.post(
            f"/v1/patients/{patient_id}/reports", json=body, headers=self.tokens.patient(patient_id)
        )
        assert response.status_code == expect, response.text
        return response.json()


def report_body(
    symptoms: dict[str, int] | None = None,
    vitals: dict[str, float] | None = None,
    recorded_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_report_id": str(uuid.uuid4()),
        "recorded_at": (recorded_at or datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "symptoms": [{"code": c, "grade": g} for c, g in (symptoms or {}).items()],
    }
    if vitals:
        body["vitals"] = vitals
    body.update(extra)
    return body


@pytest.fixture
def world(client: TestClient, tokens: Tokens) -> World:
    return World(client, tokens)
