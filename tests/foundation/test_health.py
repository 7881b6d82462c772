from __future__ import annotations

import gc
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import GC_YOUNG_THRESHOLD, create_app
from tests.conftest import Tokens, fresh_database, make_settings, upgrade


def test_healthz_answers_without_a_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_runs_a_query(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_readyz_is_503_until_the_database_has_its_schema(tmp_path: Path) -> None:
    # A server started before its migrations ran: the database answers, its tables are missing.
    with fresh_database(tmp_path) as url, TestClient(create_app(make_settings(url))) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) > 0
        assert "alembic upgrade head" in response.json()["detail"]
        # Requests meanwhile: 503 to retry later, not a 500.
        admin = Tokens(make_settings(url)).admin()
        for path in ("/v1/symptoms", "/v1/alerts"):
            response = client.get(path, headers=admin)
            assert response.status_code == 503, path
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) > 0
        upgrade(url)
        assert client.get("/readyz").json() == {"status": "ready"}
        assert client.get("/v1/symptoms", headers=admin).status_code == 200


def test_readyz_is_503_with_retry_after_when_the_database_does_not_answer() -> None:
    # A port where nothing listens: the connection is refused at once.
    app = create_app(
        make_settings("postgresql+psycopg://postgres@127.0.0.1:1/nothing", db_pool_timeout=2)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) > 0
        body = response.json()
        assert body["status"] == 503
        assert "psycopg" not in response.text and "Traceback" not in response.text
        # Data endpoints degrade the same way, after authentication.
        response = client.get("/v1/symptoms", headers=Tokens(make_settings("sqlite://")).admin())
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "retry-after" in response.headers


def test_a_serving_app_collects_rarely_and_unfreezes_what_it_froze(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_threshold()[0] >= GC_YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0  # the loaded app, out of the full collections
    # Stopped, it leaves nothing the collector could never reach (the suite makes many apps).
    assert gc.get_freeze_count() == 0
