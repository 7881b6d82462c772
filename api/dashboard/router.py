"""Serves the dashboard's static files under /dashboard/ with a strict Content-Security-Policy.

The page is plain HTML, CSS and ES modules that call the public /v1 API with the user's bearer
token; the server holds no page state and renders nothing. Everything it loads comes from here:
the policy allows this origin only, and no inline script or style ('unsafe-inline' is absent).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

STATIC = Path(__file__).parent / "static"


def content_security_policy(connect: str = "") -> str:
    """This origin only, no inline code; ``connect`` adds the identity provider's token origin."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self'{connect}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class OidcSettings(BaseSettings):
    """The identity provider the page signs in with (authorization code flow with PKCE).

    Only the page needs these: the API verifies the provider's tokens by its JWKS
    (JWT_JWKS_URL). Any of them unset: the page offers the development token only.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    jwt_jwks_url: str | None = None
    oidc_authorization_url: str | None = None
    oidc_token_url: str | None = None
    oidc_client_id: str | None = None
    oidc_scope: str = "openid"

    def page_config(self) -> dict[str, object]:
        ready = all(
            (
                self.jwt_jwks_url,
                self.oidc_authorization_url,
                self.oidc_token_url,
                self.oidc_client_id,
            )
        )
        if not ready:
            return {"oidc": None}
        return {
            "oidc": {
                "authorization_url": self.oidc_authorization_url,
                "token_url": self.oidc_token_url,
                "client_id": self.oidc_client_id,
                "scope": self.oidc_scope,
            }
        }


@cache
def page_config() -> dict[str, object]:
    """Read once per process, like the app's settings."""
    return OidcSettings().page_config()


def _headers() -> dict[str, str]:
    oidc = page_config()["oidc"]
    connect = ""
    if isinstance(oidc, dict):
        # The page exchanges the code at the provider's token endpoint.
        url = urlsplit(str(oidc["token_url"]))
        connect = f" {url.scheme}://{url.netloc}"
    return {
        "content-security-policy": content_security_policy(connect),
        # Revalidated on every load: a new release's files are used at once.
        "cache-control": "no-cache",
    }


class _Files(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_headers())
        return response


async def _config(request: Request) -> Response:
    return Response(
        json.dumps(page_config()),
        media_type="application/json",
        headers=_headers(),
    )


_router = Router(
    routes=[
        Route("/config.json", _config, methods=["GET"]),
        Mount("/", _Files(directory=STATIC, html=True)),
    ]
)
# The access log and the metrics label a request by its route's path: one label for the page's
# files (not "unmatched", and not one per file).
_LABEL = SimpleNamespace(path="/dashboard/{path}")


async def dashboard(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app mounted at /dashboard by api/main.py."""
    try:
        await _router(scope, receive, send)
    finally:
        scope["route"] = _LABEL
