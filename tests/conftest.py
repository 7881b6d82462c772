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
from sqlalchemy import Engine, Executable, Row, create_engine, delete, text
from sqlalchemy.engine import make_url

from api.db import Database, make_engine
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres_only`` run only when TEST_DATABASE_URL is PostgreSQL (CI's
    second run); elsewhere they are skipped before any fixture is set up."""
    if os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="postgres_only: runs when TEST_DATABASE_URL is PostgreSQL")
    for item in items:
        if item.get_closest_marker("postgres_only"):
            item.add_marker(skip)


_ENGINES: dict[str, Engine] = {}


def engine_of(app: FastAPI) -> Engine:
    """A synchronous engine on the app's database, for a test's own set-up and checks."""
    url = app.state.settings.database_url
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(make_settings(url))
    return _ENGINES[url]


@pytest.fixture(scope="session", autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    for engine in _ENGINES.values():
        engine.dispose()


# These watch the service from outside the test client (a live server, another connection, the
# job loop, PostgreSQL notifications): what their tests write must be committed.
COMMITTED_FOLDERS = ("dashboard", "notifications", "resilience")


@pytest.fixture(scope="session")
def rolled_back_app(database_url: str) -> FastAPI:
    """The app on the run's database, every test in one transaction rolled back at its end."""
    return create_app(make_settings(database_url), open_database=Database.rolled_back)


def _committed(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return bool(node.get_closest_marker("committed")) or any(
        part in COMMITTED_FOLDERS for part in node.path.relative_to(ROOT / "tests").parts[:-1]
    )


@pytest.fixture
def app(request: pytest.FixtureRequest, rolled_back_app: FastAPI) -> FastAPI:
    if _committed(request):
        committed: FastAPI = request.getfixturevalue("committed_app")
        return committed
    return rolled_back_app


@pytest.fixture
def client(app: FastAPI, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    if _committed(request):
        yield request.getfixturevalue("committed_client")
        return
    # Each test starts with no patient data: what it wrote goes with the rollback.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def db_execute(client: TestClient, statement: Executable) -> list[Row[Any]]:
    """Run ``statement`` on the app's own database, as the app would (a test's set-up or check:
    inside a rolled-back test, the app's connection is the only one that sees its rows)."""

    async def run() -> list[Row[Any]]:
        async with client.app.state.db.write() as session:  # type: ignore[attr-defined]
            result = await (await session.connection()).execute(statement)
            return list(result.all()) if result.returns_rows else []

    return client.portal.call(run)  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def committed_app(database_url: str) -> FastAPI:
    """The app as it is deployed, committing: for a test that looks at the database from
    another connection or process, or needs requests truly side by side."""
    return create_app(make_settings(database_url))


@pytest.fixture
def committed_client(committed_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(committed_app, raise_server_exceptions=False) as test_client:
        yield test_client
    # Each test starts with no patient data; the catalog is left as migrations made it.
    with engine_of(committed_app).begin() as conn:
        for table in MUTABLE_TABLES:
            conn.execute(delete(table))


@pytest.fixture
def fresh_app(tmp_path: Path) -> Iterator[FastAPI]:
    """An app on its own new database, for tests that change the catalog."""
    with fresh_database(tmp_path) as url:
        upgrade(url)
        yield create_app(make_settings(url))
        engine = _ENGINES.pop(url, None)
        if engine is not None:
            engine.dispose()


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


def post_batch(
    client: TestClient, tokens: Tokens, patient_id: str, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The patient's app sends ``items`` as one batch; the per-item results."""
    response = client.post(
        f"/v1/patients/{patient_id}/reports/batch",
        json={"reports": items},
        headers=tokens.patient(patient_id),
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


@pytest.fixture
def world(client: TestClient, tokens: Tokens) -> World:
    return World(client, tokens)
