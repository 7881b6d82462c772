"""The documentation a new user reads stands on its own: every link leads to a file in this
repository, nothing points outside it or at a tracker the reader cannot see."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI

from tests.auth.test_matrix import app_endpoints
from tests.conftest import ROOT

PAGES = sorted([ROOT / "README.md", ROOT / "SECURITY.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_a_page_points_only_at_files_of_the_repository(page: Path) -> None:
    text = page.read_text()
    assert "../" not in text, f"{page.name} points outside the repository"
    assert not re.search(r"\b[Ii]ssue\s*#?\d+|(?<![\w&])#\d+\b", text), (
        f"{page.name} cites an issue number"
    )
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{page.name}: {target} is missing"


def test_the_readme_leads_to_the_api_and_security_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/api.md)" in readme and "(SECURITY.md)" in readme


def test_the_api_guide_names_every_endpoint_and_only_real_ones(app: FastAPI) -> None:
    """docs/api.md is kept true: each route of the app is in it, and each path it names exists."""
    guide = (ROOT / "docs" / "api.md").read_text()
    routes = {path for _, path in app_endpoints(app)} - {"/healthz", "/readyz"}

    # The guide writes path parameters as {id}; the app names them.
    def generic(path: str) -> str:
        return re.sub(r"\{[a-z_]+\}", "{id}", path)

    named = {
        generic(p) for p in re.findall(r"`(?:GET |POST |PUT |DELETE )?(/[a-z0-9/_{}.-]+)", guide)
    }
    missing = sorted(p for p in routes if generic(p) not in named)
    assert not missing, f"docs/api.md does not mention {missing}"
    known = {generic(p) for p in routes} | {"/dashboard/", "/openapi.json", "/docs"}
    unknown = sorted(p for p in named if p.startswith(("/v1/", "/metrics")) and p not in known)
    assert not unknown, f"docs/api.md names paths the app does not have: {unknown}"


def test_every_setting_is_in_the_readme() -> None:
    from api.dashboard.router import OidcSettings
    from api.settings import Settings

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names = {*Settings.model_fields, *OidcSettings.model_fields, "prometheus_multiproc_dir"}
    missing = sorted(n.upper() for n in names if f"`{n.upper()}`" not in table)
    assert not missing, f"README's settings table lacks {missing}"
