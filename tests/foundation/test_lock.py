"""The lock files pin every dependency pyproject.toml names, within its bounds, with hashes.

`make install` and the Dockerfile install from them; `make lock` regenerates them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", re.M)


def pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    found = {canonicalize_name(n): v for n, v in PIN.findall(text)}
    blocks = [b for b in re.split(r"\n(?=\S)", text) if PIN.match(b)]
    assert all("--hash=sha256:" in b for b in blocks), f"{name}: a pin without a hash"
    return found


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("requirements.lock", PROJECT["dependencies"]),
        (
            "requirements-dev.lock",
            PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"],
        ),
    ],
)
def test_every_dependency_is_pinned_within_its_bounds(lock: str, requirements: list[str]) -> None:
    pinned = pins(lock)
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {name}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock}: {name}=={pinned[name]} is outside {requirement.specifier}: run `make lock`"
        )


def test_the_runtime_lock_holds_no_test_tools() -> None:
    assert not {"pytest", "playwright", "ruff"} & set(pins("requirements.lock"))
