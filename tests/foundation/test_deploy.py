"""The deployment path as an operator runs it: the Dockerfile's own commands, in processes."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, TEST_SECRET, fresh_database

BIN = Path(sys.executable).parent


def _dockerfile_json(instruction: str) -> list[str]:
    """The exec-form argument list of a Dockerfile instruction (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{instruction}\b.*?(\[.*\])\s*$", text, re.MULTILINE)
    assert match, instruction
    return json.loads(match.group(1))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_migrate_then_serve_with_the_dockerfile_commands(tmp_path: Path) -> None:
    with fresh_database(tmp_path) as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "APP_ENV": "production",
            "JWT_SECRET": TEST_SECRET,
        }
        env.pop("TEST_DATABASE_URL", None)
        subprocess.run(
            [str(BIN / "alembic"), "upgrade", "head"], cwd=ROOT, env=env, check=True, timeout=120
        )

        port = _free_port()
        cmd = _dockerfile_json("CMD")
        assert cmd[:4] == ["python", "-m", "api", "serve"]
        cmd = [sys.executable, *cmd[1:]]
        cmd[cmd.index("--host") + 1] = "127.0.0.1"
        cmd[cmd.index("--port") + 1] = str(port)
        log = tmp_path / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "uvicorn did not come up"
                time.sleep(0.1)

            healthcheck = _dockerfile_json("HEALTHCHECK")
            healthcheck = [
                sys.executable if healthcheck[0] == "python" else healthcheck[0],
                *healthcheck[1:],
            ]
            healthcheck[-1] = healthcheck[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            assert subprocess.run(healthcheck, timeout=10).returncode == 0

            token = subprocess.run(
                [sys.executable, "-m", "api", "token", "--role", "clinician", "--team", "onc-a"],
                cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=30,
            ).stdout.strip()  # fmt: skip
            response = httpx.get(
                f"{base}/v1/drugs/aldesleukin", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200
            drug = response.json()
            assert drug["side_effects"] and {"cls-weight", "fever"} <= {
                r["id"] for r in drug["rules"]
            }
            assert "server" not in response.headers
            assert httpx.get(f"{base}/docs").status_code == 200
        finally:
            server.terminate()
            server.wait(timeout=30)


def _readme_docker_migration() -> list[str]:
    """The README's one-off migration: `docker run ... IMAGE <command>`, the command part."""
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "docker run --rm" in ln and "alembic" in ln)
    return line.split("#", 1)[0].split("symptom-tracker", 1)[1].split()


def test_the_readme_docker_migration_runs_in_production_without_the_jwt_secret(
    tmp_path: Path,
) -> None:
    # The image sets APP_ENV=production, the README passes only DATABASE_URL: migrations need
    # the database, not the token secret.
    command = _readme_docker_migration()
    assert command == ["alembic", "upgrade", "head"]
    with fresh_database(tmp_path) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "TEST_"))}
        env |= {"DATABASE_URL": url, "APP_ENV": "production"}
        done = subprocess.run(
            [str(BIN / command[0]), *command[1:]],
            cwd=ROOT,  # the image's WORKDIR holds the same files
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]


def test_dockerignore_keeps_local_files_out_of_the_image() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]

    def ignored(path: str) -> bool:
        # Docker's rule: the last pattern that matches decides; "!" re-includes.
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.removeprefix("!").removeprefix("**/").rstrip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, bare) for p in [*prefixes, parts[-1]]):
                verdict = not negated
        return verdict

    for local in (
        ".env",
        ".venv/bin/python",
        ".git/config",
        "symptoms.db",
        "symptoms.db-wal",
        "bench/results/x.md",
        "tests/conftest.py",
        "api/__pycache__/main.cpython-311.pyc",
    ):
        assert ignored(local), local
    # What the Dockerfile copies is still sent: every COPY source, files inside folders too.
    copied = [
        source
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert "requirements.lock" in copied
    for source in copied:
        path = ROOT / source
        files = [p for p in path.rglob("*") if p.is_file()][:20] if path.is_dir() else [path]
        assert files, source
        for file in files:
            if "__pycache__" not in file.parts:
                assert not ignored(str(file.relative_to(ROOT))), file
