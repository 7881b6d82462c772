from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import Tokens, make_settings


def test_healthz_answers_without_a_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_runs_a_query(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


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
