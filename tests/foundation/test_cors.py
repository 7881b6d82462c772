"""CORS: off unless CORS_ORIGINS names the dashboards' origins; then only those get access."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import Tokens, make_settings

DASHBOARD = "https://dashboard.hospital.example"
PREFLIGHT = {
    "Origin": DASHBOARD,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_no_cors_by_default(client: TestClient, tokens: Tokens) -> None:
    response = client.get("/v1/symptoms", headers={**tokens.admin(), "Origin": DASHBOARD})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options("/v1/alerts/x/acknowledge", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers


def test_configured_origins_may_call_the_api(database_url: str, tokens: Tokens) -> None:
    settings = make_settings(database_url, cors_origins=f"{DASHBOARD}, https://other.example")
    app = create_app(settings)
    with TestClient(app) as client:
        preflight = client.options("/v1/alerts/x/acknowledge", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == DASHBOARD
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]
        # The browser may read the answer, errors included, and the headers a client acts on.
        response = client.get("/v1/symptoms", headers={"Origin": DASHBOARD})
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == DASHBOARD
        exposed = response.headers["access-control-expose-headers"].lower()
        assert {"retry-after", "x-request-id", "www-authenticate"} <= {
            h.strip() for h in exposed.split(",")
        }
        assert "access-control-allow-credentials" not in response.headers
        # Any other origin gets nothing.
        stranger = client.options(
            "/v1/symptoms", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in stranger.headers
        plain = client.get(
            "/v1/symptoms", headers={**tokens.admin(), "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in plain.headers
