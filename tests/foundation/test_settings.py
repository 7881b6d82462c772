from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api import settings as settings_module
from api.main import create_app
from api.settings import Settings


def test_development_runs_without_a_secret() -> None:
    settings = Settings(_env_file=None, app_env="development")  # type: ignore[call-arg]
    assert settings.effective_jwt_secret


@pytest.mark.parametrize("secret", ["", "short", "changeme", "x" * 31])
def test_production_refuses_a_missing_or_weak_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(_env_file=None, app_env="production", jwt_secret=secret)  # type: ignore[call-arg]


def test_production_accepts_a_real_secret() -> None:
    settings = Settings(_env_file=None, app_env="production", jwt_secret="k" * 32)  # type: ignore[call-arg]
    assert settings.effective_jwt_secret == "k" * 32


def test_the_app_refuses_to_start_with_a_one_line_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.chdir("/")  # no .env file here
    settings_module.get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_info:
            create_app()
    finally:
        settings_module.get_settings.cache_clear()
    message = str(exit_info.value)
    assert "JWT_SECRET" in message
    assert "\n" not in message


def test_an_in_memory_sqlite_url_starts() -> None:
    # No job loop: an in-memory database has no tables for it (nothing ran the migrations).
    settings = Settings(_env_file=None, database_url="sqlite://", worker_mode="off")  # type: ignore[call-arg]
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        # It answers, and says that it has no tables.
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "alembic upgrade head" in response.json()["detail"]
