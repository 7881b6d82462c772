"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a live
uvicorn on the test database. Nothing is downloaded: the system browser is launched by path
(CHROMIUM_PATH, default /usr/bin/chromium; .ci/run installs it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, Request, sync_playwright

from tests.conftest import ROOT, Tokens
from tests.live_server import live_server

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Screenshots kept as CI artefacts (bench/results/ is not in git).
SHOTS = ROOT / "bench" / "results" / "dashboard"


# Per module: Playwright's event loop does not outlive the browser tests.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (see .ci/run)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def server(client: TestClient, database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A live server on the test database (after ``client``, so this test's rows are removed
    after it stops). The feed polls fast on SQLite; streams end after 1 s (tests/conftest.py),
    so every test also exercises the page's resume with Last-Event-ID. Settings can be
    changed with ``@pytest.mark.parametrize("server", [{...}], indirect=True)``."""
    overrides = {"stream_poll_s": 0.2, "stream_heartbeat_s": 1.0, **getattr(request, "param", {})}
    with live_server(database_url, **overrides) as base:
        yield base


def raw(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@dataclass
class Browsing:
    """One user's browser tab on the dashboard, with every request it made."""

    base: str
    page: Page
    # Origins besides the service's that this tab may reach (a test's identity provider).
    allowed: tuple[str, ...] = ()
    requests: list[Request] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def open(self, token: str, path: str = "/dashboard/") -> Page:
        self.page.goto(f"{self.base}{path}#token={token}")
        return self.page

    def row(self, alert_id: str) -> Any:
        return self.page.locator(f'#alerts-body tr[data-alert-id="{alert_id}"]')

    def row_ids(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#alerts-body tr", "rows => rows.map(r => r.dataset.alertId)"
        )

    def stream_requests(self) -> list[Request]:
        return [r for r in self.requests if r.url.endswith("/v1/alerts/stream")]


@pytest.fixture
def tab(browser: Browser, server: str) -> Iterator[Callable[..., Browsing]]:
    """``tab()`` opens a new browser context (its own sessionStorage) at 1280 x 800."""
    contexts = []
    tabs: list[Browsing] = []

    def new(width: int = 1280, height: int = 800, allowed: tuple[str, ...] = ()) -> Browsing:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        browsing = Browsing(server, context.new_page(), allowed)
        context.on("request", lambda r: browsing.requests.append(r))
        browsing.page.on(
            "console",
            lambda m: browsing.console_errors.append(m.text) if m.type == "error" else None,
        )
        browsing.page.on("pageerror", lambda e: browsing.console_errors.append(str(e)))
        tabs.append(browsing)
        return browsing

    yield new
    for context in contexts:
        context.close()
    for browsing in tabs:
        # The page loads nothing from outside the service, and the policy refused nothing.
        ours = (server + "/", *(origin + "/" for origin in browsing.allowed))
        outside = [r.url for r in browsing.requests if not r.url.startswith(ours)]
        assert outside == [], f"requests outside the service: {outside}"
        refused = [e for e in browsing.console_errors if "Content Security Policy" in e]
        assert refused == [], refused


@pytest.fixture
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


__all__ = ["Browsing", "Tokens", "raw"]
