"""The documentation a new user reads stands on its own: every link leads to a file in this
repository, nothing points outside it or at a tracker the reader cannot see."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
